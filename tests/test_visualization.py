"""The forward-process figure and the `hf-ddpm noising` command."""

import runpy
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hf_ddpm import cli
from hf_ddpm.visualization import (
    CELL_SIZE,
    HEADER_HEIGHT,
    PANEL_GAP,
    forward_process,
    forward_process_grid,
    fraction_timesteps,
    load_digit_images,
    save_forward_process_grid,
)


def correlations_with_clean(images, noised):
    clean = images.flatten()
    return [float(np.corrcoef(clean, x.flatten())[0, 1]) for x in noised]


def test_digit_images_are_distinct_28x28_digits_in_minus_one_to_one():
    images = load_digit_images(3)
    assert images.shape == (3, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1 and images.max() > 0.5
    assert not torch.equal(images[0], images[1])


def test_fractions_map_to_training_timesteps_and_one_means_the_last():
    assert fraction_timesteps([0.25, 0.5, 0.75, 1.0], 1000) == [249, 499, 749, 999]
    with pytest.raises(ValueError, match=r"`fractions` must lie in \(0, 1\]"):
        fraction_timesteps([0.0, 0.5], 1000)


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_the_clean_image_fades_as_the_fraction_grows(beta_schedule):
    images = load_digit_images(4)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    noised = forward_process(images, noise, [0.1, 0.25, 0.5, 0.75, 1.0], beta_schedule)
    correlations = correlations_with_clean(images, noised)
    assert all(later < earlier for earlier, later in zip(correlations, correlations[1:]))
    assert correlations[0] > 0.5 and abs(correlations[-1]) < 0.1


def test_cosine_schedule_keeps_more_of_the_image_half_way_than_linear():
    # The point of Nichol & Dhariwal's schedule: the linear one destroys information too early
    images = load_digit_images(4)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    linear, cosine = (forward_process(images, noise, [0.5], schedule) for schedule in ("linear", "cosine"))
    assert correlations_with_clean(images, cosine)[0] > correlations_with_clean(images, linear)[0] + 0.2


def test_grid_has_a_panel_per_schedule_a_row_per_image_and_a_column_per_fraction_plus_the_clean_image():
    images = load_digit_images(3)
    grid = forward_process_grid(images, fractions=(0.5, 1.0), generator=torch.Generator().manual_seed(0))
    assert grid.size == (2 * 3 * CELL_SIZE + PANEL_GAP, HEADER_HEIGHT + 3 * CELL_SIZE)
    default = forward_process_grid(generator=torch.Generator().manual_seed(0))
    assert default.size == (2 * 5 * CELL_SIZE + PANEL_GAP, HEADER_HEIGHT + 4 * CELL_SIZE)


def test_grid_shows_the_clean_images_in_its_first_column():
    images = load_digit_images(2)
    grid = np.asarray(forward_process_grid(images, fractions=(1.0,), schedules=("linear",)).convert("L"))
    first_cell = grid[HEADER_HEIGHT : HEADER_HEIGHT + CELL_SIZE, :CELL_SIZE].astype(np.float32)
    expected = ((images[0, 0] + 1) * 127.5).round().numpy()
    np.testing.assert_allclose(first_cell[::2, ::2], expected, atol=1)


def test_saved_grid_is_a_png_and_the_same_seed_gives_the_same_image(tmp_path):
    seeded = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    paths = [save_forward_process_grid(tmp_path / "sub" / name, generator=seeded()) for name in ("1.png", "2.png")]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert Image.open(paths[0]).format == "PNG"
    assert sorted(p.name for p in paths[0].parent.iterdir()) == ["1.png", "2.png"]  # no temporary files left


def test_noising_command_writes_the_png_and_says_where(tmp_path, capsys):
    out = tmp_path / "noising.png"
    assert cli.main(["noising", "--out", str(out), "--num-images", "2", "--fractions", "0.5", "1.0"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert Image.open(out).size == (2 * 3 * CELL_SIZE + PANEL_GAP, HEADER_HEIGHT + 2 * CELL_SIZE)


@pytest.mark.parametrize("arguments, message", [
    (["--fractions", "1.5"], "--fractions must lie in (0, 1]"),
    (["--num-images", "0"], "--num-images must be a positive integer; got 0"),
    (["--num-images", "1800"], "--num-images must be at most 1797, the number of digits; got 1800"),
])  # fmt: skip
def test_noising_command_rejects_bad_values_naming_the_flag_with_usage_exit_status(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["noising", "--out", str(tmp_path / "x.png"), *arguments])
    assert exit_info.value.code == 2
    assert f"hf-ddpm noising: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_python_dash_m_hf_ddpm_runs_the_command_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "noising.png"
    monkeypatch.setattr(sys, "argv", ["hf_ddpm", "noising", "--out", str(out), "--num-images", "1", "--seed", "1"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("hf_ddpm", run_name="__main__")  # what `python -m hf_ddpm` does
    assert exit_info.value.code == 0
    assert out.exists() and str(out) in capsys.readouterr().out


def test_noising_command_refuses_an_out_under_a_file_before_drawing(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "n.png"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["noising", "--out", str(out)])
    assert exit_info.value.code == 2
    expected = f"--out '{out}' cannot be written: '{tmp_path / 'afile'}' is not a writable folder"
    assert f"hf-ddpm noising: error: {expected}" in capsys.readouterr().err
