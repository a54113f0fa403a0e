"""The forward-process figure, the `hf-ddpm noising` command, and `image_grid`, which lays out every grid of images."""

import runpy
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hf_ddpm import cli
from hf_ddpm.pipelines.pipeline_ddpm_cfg import image_grid
from hf_ddpm.visualization import (
    CELL_GAP,
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
    # Each panel: 3 columns of CELL_SIZE with 2 gaps between them; 3 rows with 2 gaps under the header.
    assert grid.size == (2 * (3 * CELL_SIZE + 2 * CELL_GAP) + PANEL_GAP, HEADER_HEIGHT + 3 * CELL_SIZE + 2 * CELL_GAP)
    default = forward_process_grid(generator=torch.Generator().manual_seed(0))
    panel_width = 5 * CELL_SIZE + 4 * CELL_GAP
    assert default.size == (2 * panel_width + PANEL_GAP, HEADER_HEIGHT + 4 * CELL_SIZE + 3 * CELL_GAP)


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
    panel_width = 3 * CELL_SIZE + 2 * CELL_GAP
    assert Image.open(out).size == (2 * panel_width + PANEL_GAP, HEADER_HEIGHT + 2 * CELL_SIZE + CELL_GAP)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--fractions", "1.5"], "--fractions must lie in (0, 1]"),
        (["--num-images", "0"], "--num-images must be a positive integer; got 0"),
        (["--num-images", "1800"], "--num-images must be at most 1797, the number of digits; got 1800"),
    ],
)
def test_noising_command_rejects_bad_values_naming_the_flag_with_usage_exit_status(
    tmp_path, capsys, arguments, message
):
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


# ----- image_grid: every grid of samples (the CLI's, the previews', the GIFs', the web page's, the evaluation's) -----
WHITE = 255  # the grid's background


def gray_squares(count, side=8):
    """`count` uniform gray squares, each a different shade, none of them the background."""
    return [Image.new("L", (side, side), 20 + 30 * i) for i in range(count)]


def test_image_grid_enlarges_small_images_by_a_whole_factor_and_keeps_background_gaps_between_them():
    grid = np.asarray(image_grid(gray_squares(6), rows=2))
    # 8 px images: the smallest whole factor reaching 64 px is 8, and the 2 px gap is enlarged with them to 16.
    assert grid.shape == (2 * 64 + 16, 3 * 64 + 2 * 16, 3)  # RGB
    for index in range(6):
        row, col = divmod(index, 3)
        cell = grid[row * 80 : row * 80 + 64, col * 80 : col * 80 + 64]
        assert (cell == 20 + 30 * index).all()  # the whole cell is its image: no background inside, none outside
    assert (grid[:, 64:80] == WHITE).all() and (grid[:, 144:160] == WHITE).all()  # between the columns
    assert (grid[64:80] == WHITE).all()  # between the rows


@pytest.mark.parametrize("side, cell", [(8, 64), (28, 84), (32, 64), (64, 64), (100, 100)])
def test_image_grid_cells_are_a_whole_multiple_of_the_image_and_at_least_the_minimum(side, cell):
    grid = image_grid(gray_squares(2, side), rows=1)
    gap = 2 * cell // side
    assert grid.size == (2 * cell + gap, cell)
    assert cell % side == 0 and cell >= 64


def test_image_grid_keeps_pixels_sharp():
    checkerboard = (np.indices((8, 8)).sum(axis=0) % 2 * 255).astype(np.uint8)
    grid = np.asarray(image_grid([Image.fromarray(checkerboard)], rows=1).convert("L"))
    np.testing.assert_array_equal(grid, np.kron(checkerboard, np.ones((8, 8), np.uint8)))  # nearest neighbour


def test_named_rows_are_written_in_a_column_left_of_the_images():
    images = gray_squares(4)
    plain = np.asarray(image_grid(images, rows=2))
    named = np.asarray(image_grid(images, rows=2, names=["Sneaker", "Bag"]))
    name_column = named.shape[1] - plain.shape[1]
    assert named.shape[0] == plain.shape[0] and name_column > 0
    np.testing.assert_array_equal(named[:, name_column:], plain)  # the images, moved right and otherwise the same
    for row in range(2):
        assert (named[row * 80 : row * 80 + 64, :name_column] < 128).any(), f"no name beside row {row}"
    assert (named[64:80, :name_column] == WHITE).all()  # each name stays beside its own row


def test_a_short_last_row_leaves_background_where_images_are_missing():
    grid = np.asarray(image_grid(gray_squares(5), rows=2))
    assert grid.shape[:2] == (2 * 64 + 16, 3 * 64 + 2 * 16)
    assert (grid[80:, 160:] == WHITE).all() and (grid[80:, 80:144] == 20 + 30 * 4).all()


def test_image_grid_refuses_rows_it_cannot_lay_out_and_names_that_do_not_match_them():
    with pytest.raises(ValueError, match=r"`rows` must be an integer in \[1, 4\]"):
        image_grid(gray_squares(4), rows=5)
    with pytest.raises(ValueError, match=r"`names` must hold one name per row \(2\), got 3"):
        image_grid(gray_squares(4), rows=2, names=["a", "b", "c"])
