"""`hf-ddpm edit` and `hf-ddpm inpaint`: an image file and a saved pipeline to a row of source and results, with the
mask presets and every bad input refused by its flag before the model runs."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDPMScheduler as DiffusersDDPMScheduler

from helpers import tiny_conditional_unet
from hf_ddpm.cli import main
from hf_ddpm.editing import MASK_PRESETS, preset_mask, read_image
from hf_ddpm.pipelines import DDPMCFGImg2ImgPipeline, DDPMCFGInpaintPipeline, DDPMCFGPipeline

LABELS = {0: "T-shirt", 1: "Sneaker", 2: "Bag"}


@pytest.fixture
def model(tmp_path):
    unet = tiny_conditional_unet()
    scheduler = DiffusersDDPMScheduler(num_train_timesteps=20, beta_schedule="squaredcos_cap_v2")
    pipe = DDPMCFGPipeline(unet, scheduler, id2label=LABELS)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "model")
    return pipe, str(tmp_path / "model")


@pytest.fixture
def source(tmp_path):
    ramp = np.linspace(0, 255, 8).astype(np.uint8)
    path = tmp_path / "source.png"
    PIL.Image.fromarray(np.outer(ramp, np.ones(8, dtype=np.uint8)), mode="L").save(path)
    return str(path)


def cells(path, count, scale=4):
    """The images of a row written by the commands, back at the model's size."""
    with PIL.Image.open(path) as row:
        row = np.asarray(row.convert("L"))
    width, gap = 8 * scale, 2 * scale
    assert row.shape == (8 * scale, count * (width + gap) - gap)
    return [row[::scale, i * (width + gap) : i * (width + gap) + width : scale] for i in range(count)]


def test_edit_writes_the_source_then_each_strengths_edit(model, source, tmp_path):
    pipe, folder = model
    out = tmp_path / "row.png"
    main(
        [
            "edit",
            folder,
            "--image",
            source,
            "--class",
            "Bag",
            "--strength",
            "0.3",
            "1",
            "--steps",
            "10",
            "--guidance-scale",
            "2",
            "--seed",
            "3",
            "--out",
            str(out),
        ]
    )
    first, *edits = cells(out, 3)
    np.testing.assert_array_equal(first, np.asarray(PIL.Image.open(source)))
    edit = DDPMCFGImg2ImgPipeline.from_pipe(pipe)
    for strength, cell in zip((0.3, 1.0), edits):
        expected = edit(
            PIL.Image.open(source),
            "Bag",
            strength=strength,
            guidance_scale=2.0,
            num_inference_steps=10,
            generator=torch.Generator().manual_seed(3),
        ).images[0]
        np.testing.assert_array_equal(cell, np.asarray(expected))


@pytest.mark.parametrize("mask", ["right", "centre"])
def test_inpaint_keeps_what_the_mask_keeps(model, source, tmp_path, mask):
    pipe, folder = model
    out = tmp_path / "inpaint.png"
    main(
        [
            "inpaint",
            folder,
            "--image",
            source,
            "--mask",
            mask,
            "--class",
            "1",
            "--steps",
            "10",
            "--jump-length",
            "3",
            "--jump-n-sample",
            "2",
            "--out",
            str(out),
        ]
    )
    original, shown, result = cells(out, 3)
    fill = np.asarray(preset_mask(mask, 8, 8)) == 255
    np.testing.assert_array_equal(result[~fill], original[~fill])
    assert (shown[fill] == 128).all()
    expected = DDPMCFGInpaintPipeline.from_pipe(pipe)(
        PIL.Image.open(source),
        preset_mask(mask, 8, 8),
        1,
        guidance_scale=2.0,
        num_inference_steps=10,
        jump_length=3,
        jump_n_sample=2,
        generator=torch.Generator().manual_seed(0),
    )
    np.testing.assert_array_equal(result, np.asarray(expected.images[0]))


def test_mask_presets_fill_what_they_name():
    masks = {name: np.asarray(preset_mask(name, 8, 8)) == 255 for name in MASK_PRESETS}
    assert masks["left"][:, :4].all() and not masks["left"][:, 4:].any()
    assert masks["bottom"][4:].all() and not masks["bottom"][:4].any()
    assert masks["centre"][2:6, 2:6].all() and masks["centre"].sum() == 16


@pytest.mark.parametrize(
    "command, message",
    [
        (["edit", "--strength", "1.5"], "--strength must be a number in [0, 1], got 1.5"),
        (["edit", "--class", "Sandal"], "unknown label name 'Sandal'"),
        (
            ["edit", "--image", "{tmp}/big.png"],
            "--image is 16x16 with 1 channel; this model takes 8x8 images with 1 channel",
        ),
        (["edit", "--image", "{tmp}/notes.png"], "--image '{tmp}/notes.png' is not an image that can be read"),
        (["edit", "--image", "{tmp}/missing.png"], "--image '{tmp}/missing.png' is not a file"),
        (["inpaint", "--mask", "middle"], "--mask 'middle' is neither a preset (left, right, top, bottom, centre)"),
        (["inpaint", "--mask", "{tmp}/grey.png"], "--mask must hold only 0 and 1 (black and white: white is to fill"),
        (["inpaint", "--jump-length", "0"], "--jump-length must be an integer >= 1, got 0"),
        (["edit", "--out", "{tmp}/row.txt"], "--out '{tmp}/row.txt' must name an image file"),
    ],
)
def test_bad_input_exits_with_status_2_naming_the_flag(model, source, tmp_path, capsys, command, message):
    PIL.Image.new("L", (16, 16)).save(tmp_path / "big.png")
    PIL.Image.new("L", (8, 8), 100).save(tmp_path / "grey.png")
    (tmp_path / "notes.png").write_text("not an image")
    name, *flags = command
    defaults = {"--image": source, "--out": str(tmp_path / "out.png")}
    if name == "inpaint":
        defaults["--mask"] = "right"
    for flag, value in defaults.items():
        if flag not in flags:
            flags += [flag, value]
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    with pytest.raises(SystemExit) as exit_info:
        main([name, model[1], "--steps", "4", *flags])
    assert exit_info.value.code == 2
    assert message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_an_image_over_the_pixel_bound_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.png"
    PIL.Image.new("L", (300, 200)).save(path)
    with pytest.raises(ValueError, match=r"--image '.*huge.png' is 300x200 pixels, over the 50,000 this reads"):
        read_image(str(path), "--image", max_pixels=50_000)
