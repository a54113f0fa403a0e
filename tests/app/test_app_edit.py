"""The web demo's Edit tab, called as the page calls it (no browser): class-swap and inpainting against the pipelines
called directly, the editor's image and brushed mask, the uploads and examples, every bad value named before any
denoising, and cancelling."""

import gradio as gr
import numpy as np
import PIL.Image
import pytest
import torch

from hf_ddpm.app import DemoApp, model_defaults, repaint_length
from hf_ddpm.cli import main
from hf_ddpm.editing import preset_mask
from hf_ddpm.pipelines import DDPMCFGImg2ImgPipeline, DDPMCFGInpaintPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg_inpaint import repaint_schedule
from hf_ddpm.sampling import load_pipeline
from test_app import assert_same_images, shown, unchanged

STEPS = 20  # every training step of the tiny model
SOURCE = PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, (8, 8), dtype=np.uint8), "L")
RIGHT_HALF = preset_mask("right", 8, 8)


def edit(app, mode="class-swap", image=None, mask="brushed", target="Bag", strength=0.6, guidance=2.0, **settings):
    """The page's updates for one Edit click, the editor holding `image` (default: SOURCE, nothing brushed)."""
    image = app.editor_value(SOURCE) if image is None else image
    steps, seed = settings.pop("steps", STEPS), settings.pop("seed", 3)
    jumps = settings.pop("jump_length", 2), settings.pop("jump_n_sample", 2)
    return shown(app.edit(mode, image, mask, target, strength, guidance, steps, seed, *jumps))


def direct(model, pipeline_class, *args, seed=3, **call):
    """The image that `pipeline_class` gives when called directly, from the seed the page uses."""
    pipe = pipeline_class.from_pipe(load_pipeline(model, device="cpu"))
    pipe.set_progress_bar_config(disable=True)
    return pipe(*args, generator=[torch.Generator().manual_seed(seed)], **call).images[0]


def write_png(path, pixels: np.ndarray) -> str:
    PIL.Image.fromarray(pixels).save(path)
    return str(path)


def test_class_swap_streams_the_edit_then_gives_the_pipelines_image(app, model):
    *previews, (row, result, status) = edit(app)
    # The last 0.6 of 20 steps run: a preview every 2 of those 12.
    assert [text for *_, text in previews] == [f"Denoising: step {step} of 12" for step in (2, 4, 6, 8, 10)]
    assert all(image is None for _, image, _ in previews) and previews[0][0].size == row.size
    assert status == "Edited towards Bag at strength 0.6: 12 of 20 steps of DDPM, guidance 2"
    expected = direct(
        model, DDPMCFGImg2ImgPipeline, SOURCE, "Bag", strength=0.6, guidance_scale=2.0, num_inference_steps=20
    )
    assert_same_images([result], [expected])


def test_the_same_seed_edits_the_same_and_another_seed_otherwise(app):
    first, again, other = (edit(app, seed=seed)[-1][1] for seed in (5, 5, 6))
    assert_same_images([first], [again])
    assert not np.array_equal(np.asarray(first), np.asarray(other))


@pytest.mark.parametrize("how", ["brushed", "preset", "uploaded"])
def test_inpainting_keeps_the_known_region_and_fills_the_rest_as_the_pipeline(app, model, tmp_path, how):
    mask, image = "brushed", app.editor_value(SOURCE, RIGHT_HALF)  # the mask painted, enlarged as the page shows it
    if how == "preset":
        mask, image = "right", app.editor_value(SOURCE)
    elif how == "uploaded":
        image, status = app.load_mask(
            write_png(tmp_path / "mask.png", np.asarray(RIGHT_HALF)), app.editor_value(SOURCE)
        )
        assert status == "Painted the mask 'mask.png' over the image."
    *previews, (row, result, status) = edit(app, mode="inpaint", image=image, mask=mask)
    assert len(previews) >= 5 and status == (
        "Filled towards Bag: 20 DDPM steps, each stretch of 2 sampled 2 times (56 steps), guidance 2"
    )
    known = np.asarray(RIGHT_HALF) == 0
    np.testing.assert_array_equal(np.asarray(result)[known], np.asarray(SOURCE)[known])
    expected = direct(
        model,
        DDPMCFGInpaintPipeline,
        SOURCE,
        RIGHT_HALF,
        "Bag",
        guidance_scale=2.0,
        num_inference_steps=20,
        jump_length=2,
        jump_n_sample=2,
    )
    assert_same_images([result], [expected])


def test_an_uploaded_image_and_an_example_come_to_the_editor_enlarged_and_back_to_the_byte(model, tmp_path):
    example = write_png(tmp_path / "bag.png", np.asarray(SOURCE))
    pipe = load_pipeline(model, device="cpu")
    app = DemoApp(pipe, model, model_defaults(pipe, model), examples=[example])
    (uploaded, loaded), (picked, example_loaded) = app.load_image(example), app.example(0)
    assert (loaded, example_loaded) == ("Loaded 'bag.png'.", "Loaded the example 'bag'.")
    for value in (uploaded, picked):
        assert value["background"].size == (8 * app.editor_scale,) * 2 and app.editor_scale > 1
        source, mask = app._edit_source(value)
        assert_same_images([source], [SOURCE])
        assert mask is None
    assert app.examples[0][1] == "bag"


def test_a_colour_upload_for_a_grey_model_is_shown_and_edited_as_grey(app, tmp_path):
    colour = np.random.RandomState(1).randint(0, 256, (8, 8, 3), dtype=np.uint8)
    value, _ = app.load_image(write_png(tmp_path / "colour.png", colour))
    shown_pixels = np.asarray(value["background"].convert("RGB"))
    assert (shown_pixels[..., 0] == shown_pixels[..., 1]).all() and (shown_pixels[..., 1] == shown_pixels[..., 2]).all()
    source, _ = app._edit_source(value)
    assert_same_images([source], [PIL.Image.fromarray(colour).convert("L")])


@pytest.mark.parametrize("steps, jump_length, jump_n_sample", [(100, 10, 10), (20, 2, 2), (7, 3, 4), (4, 10, 10)])
def test_the_work_of_an_inpainting_counts_every_step_of_its_resampling_schedule(steps, jump_length, jump_n_sample):
    assert repaint_length(steps, jump_length, jump_n_sample) == len(repaint_schedule(steps, jump_length, jump_n_sample))


def bad_file(tmp_path, kind: str) -> str:
    if kind == "text":
        (tmp_path / "notes.png").write_text("not an image")
        return str(tmp_path / "notes.png")
    if kind == "huge":  # more pixels than the bound, in a few kilobytes
        PIL.Image.new("1", (5000, 4000)).save(tmp_path / "huge.png")
        return str(tmp_path / "huge.png")
    if kind == "grey mask":
        return write_png(tmp_path / "grey.png", np.full((8, 8), 128, dtype=np.uint8))
    return write_png(tmp_path / "big.png", np.zeros((16, 16), dtype=np.uint8))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"strength": 1.5}, "Strength must be a number in [0, 1], got 1.5."),
        ({"strength": "0.5"}, "Strength must be a number in [0, 1], got '0.5'."),
        ({"steps": float("nan")}, "Steps must be a whole number, got nan."),
        ({"seed": None}, "Seed must be a whole number, got None."),
        ({"guidance": float("nan")}, "Guidance scale must be a finite number, got nan."),
        ({"target": "Hat"}, "Class: unknown label name 'Hat'; valid names: 'T-shirt', 'Sneaker', 'Bag'."),
        ({"mode": "sketch"}, "Edit must be one of ['class-swap', 'inpaint'], got 'sketch'."),
        ({"image": {"background": None}}, "Image: upload an image or pick an example first."),
        (
            {"image": {"background": PIL.Image.new("L", (10, 10))}},
            "Image is 10x10; this model takes 8x8 images (or a whole multiple, as the page shows them).",
        ),
        (
            {
                "mode": "inpaint",
                "image": {"background": SOURCE.resize((32, 32)), "layers": [PIL.Image.new("RGBA", (9, 9))]},
            },
            "Mask: the brushed layer is 9x9, the image 32x32; they must be the same size.",
        ),
        ({"mode": "inpaint"}, "Mask: nothing is brushed: paint over what to fill, or choose a preset."),
        ({"mode": "inpaint", "mask": "middle"}, "Mask must be one of ['brushed', 'left', 'right', 'top', 'bottom'"),
        ({"mode": "inpaint", "mask": "left", "jump_length": 0}, "Jump length must be an integer >= 1, got 0."),
        (
            {"mode": "inpaint", "mask": "left", "jump_n_sample": 100},
            "Too much work for one request: 1 image x 3584 steps (20, each stretch of 2 sampled 100 times) = 3584 "
            "image-steps; this server allows at most 500.",
        ),
    ],
)
def test_bad_edits_are_refused_naming_the_control_before_any_denoising(app, unet_calls, settings, message):
    with pytest.raises(gr.Error) as error:
        edit(app, **settings)
    assert message in error.value.message and not unet_calls


@pytest.mark.parametrize(
    "upload, kind, message",
    [
        (
            "image",
            "text",
            "Image 'notes.png' is not an image that can be read (cannot identify image file 'notes.png')",
        ),
        ("image", "huge", "Image 'huge.png' is 5000x4000 pixels, over the 16,777,216 this reads"),
        ("image", "big", "Image is 16x16; this model takes 8x8 images."),
        ("mask", "grey mask", "Mask must hold only 0 and 1 (black and white: white is to fill, black is kept)"),
        ("mask", "big", "Mask is 16x16 with 1 channel; this model takes 8x8 images with 1 channel."),
    ],
)
def test_bad_uploads_are_refused_naming_the_control_and_the_file_not_where_the_server_keeps_it(
    app, tmp_path, upload, kind, message
):
    path = bad_file(tmp_path, kind)
    with pytest.raises(gr.Error) as error:
        app.load_image(path) if upload == "image" else app.load_mask(path, app.editor_value(SOURCE))
    assert message in error.value.message and str(tmp_path) not in error.value.message


def test_cancel_stops_the_edit_at_its_next_step(app):
    updates = app.edit("inpaint", app.editor_value(SOURCE), "left", "Bag", 0.8, 2.0, STEPS, 0, 2, 5)
    first = next(update for update in updates if not unchanged(update))
    assert first[2].startswith("Denoising")  # 164 steps, a preview every 17
    app.cancel()
    with pytest.raises(gr.Error, match="Cancelled"):
        shown(updates)


def test_serve_refuses_examples_that_are_not_images_of_the_models_size(model, tmp_path, capsys):
    write_png(tmp_path / "big.png", np.zeros((16, 16), dtype=np.uint8))
    for folder, message in [
        (tmp_path / "missing", f"--examples {str(tmp_path / 'missing')!r} is not a folder of images."),
        (tmp_path, "--examples: 'big.png' is 16x16; this model takes 8x8 images."),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", model, "--examples", str(folder), "--device", "cpu"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
