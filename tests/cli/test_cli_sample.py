"""`hf-ddpm sample`: a saved pipeline (folder or Hub id) to a grid PNG and a denoising GIF."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDPMScheduler as DiffusersDDPMScheduler, EulerDiscreteScheduler

from helpers import tiny_classifier
from hf_ddpm.cli import main
from hf_ddpm.models.unet_2d import DDPMUNet2DModel
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg import image_grid
from hf_ddpm.sampling import load_pipeline, save_grid_and_gif
from hf_ddpm.scheduler_names import TIMESTEP_SPACINGS
from hf_ddpm.schedulers import scheduling_ddim, scheduling_ddpm
from hf_ddpm.schedulers.scheduling_ddim import DDIMScheduler

LABELS = {0: "T-shirt", 1: "Sneaker", 2: "Bag"}


def save_tiny_pipeline(folder, num_class_embeds=3):
    torch.manual_seed(0)
    unet = DDPMUNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(False, True),
        num_class_embeds=num_class_embeds,
        norm_num_groups=4,
    )
    scheduler = DiffusersDDPMScheduler(num_train_timesteps=20, beta_schedule="squaredcos_cap_v2")
    pipe = DDPMCFGPipeline(unet, scheduler, id2label=LABELS if num_class_embeds else None)
    pipe.save_pretrained(folder)
    return pipe


def pixels(path):
    with PIL.Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_sample_writes_the_grid_and_gif_of_the_requested_draws(tmp_path):
    pipe = save_tiny_pipeline(tmp_path / "model")
    grid, gif = tmp_path / "out" / "grid.png", tmp_path / "out" / "denoise.gif"
    main(
        [
            "sample",
            str(tmp_path / "model"),
            "--labels",
            "Sneaker",
            "bag",
            "--batch-size",
            "2",
            "--guidance-scale",
            "3",
            "--steps",
            "4",
            "--scheduler",
            "ddim",
            "--seed",
            "5",
            "--out",
            str(grid),
            "--gif",
            str(gif),
            "--device",
            "cpu",
        ]
    )
    # The same draws made directly: our DDIM on the saved schedule, image i from seed 5 + i.
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        [1, 2],
        batch_size=2,
        guidance_scale=3.0,
        num_inference_steps=4,
        generator=[torch.Generator().manual_seed(5 + i) for i in range(4)],
    ).images
    expected = image_grid(images, rows=2, names=["Sneaker", "Bag"])  # the labels' own names, one row each
    np.testing.assert_array_equal(pixels(grid), np.asarray(expected))
    with PIL.Image.open(gif) as animation:
        assert animation.n_frames == 4 and animation.size == expected.size


def test_sample_draws_num_images_from_an_unconditional_model(tmp_path):
    save_tiny_pipeline(tmp_path / "model", num_class_embeds=None)
    grid = tmp_path / "grid.png"
    main(["sample", str(tmp_path / "model"), "--num-images", "6", "--steps", "2", "--out", str(grid)])
    with PIL.Image.open(grid) as image:
        # 6 images, 2 rows of 3, no names: 8 px images enlarged 8x to 64 px, the 2 px gaps between them to 16 px.
        assert image.size == (3 * 64 + 2 * 16, 2 * 64 + 16)


@pytest.mark.parametrize(
    "name, scheduler_class",
    [
        ("ddim", DDIMScheduler),
        ("euler", EulerDiscreteScheduler),
    ],
)
def test_scheduler_swap_keeps_the_saved_noise_schedule(tmp_path, name, scheduler_class):
    save_tiny_pipeline(tmp_path)
    pipe = load_pipeline(str(tmp_path), scheduler=name, device="cpu")
    assert type(pipe.scheduler) is scheduler_class
    assert pipe.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert pipe.scheduler.config.num_train_timesteps == 20


def test_the_command_lines_timestep_spacings_are_the_schedulers():
    assert TIMESTEP_SPACINGS == scheduling_ddpm.TIMESTEP_SPACINGS == scheduling_ddim.TIMESTEP_SPACINGS


@pytest.mark.parametrize("name", [None, "ddim", "dpm"])
def test_timestep_spacing_replaces_the_saved_one_and_keeps_the_rest(tmp_path, name):
    save_tiny_pipeline(tmp_path)  # saved with DDPM's default "leading" spacing: 4 steps of 20 start below 19
    saved = load_pipeline(str(tmp_path), scheduler=name, device="cpu").scheduler
    trailing = load_pipeline(str(tmp_path), scheduler=name, device="cpu", timestep_spacing="trailing").scheduler
    for scheduler in saved, trailing:
        scheduler.set_timesteps(4)
    assert type(trailing) is type(saved) and trailing.config.beta_schedule == "squaredcos_cap_v2"
    assert saved.config.timestep_spacing == "leading" and int(saved.timesteps[0]) in (15, 16)  # DPM's: 20 // 5 * 4
    assert trailing.config.timestep_spacing == "trailing" and int(trailing.timesteps[0]) == 19


def test_sample_draws_with_the_timestep_spacing_asked_for(tmp_path):
    pipe = save_tiny_pipeline(tmp_path / "model")
    grid = tmp_path / "grid.png"
    flags = ["--labels", "Bag", "--steps", "3", "--out", str(grid), "--device", "cpu"]
    main(["sample", str(tmp_path / "model"), *flags, "--timestep-spacing", "trailing"])
    pipe.scheduler = DiffusersDDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)
    images = pipe([2], num_inference_steps=3, generator=[torch.Generator().manual_seed(0)]).images
    np.testing.assert_array_equal(pixels(grid), np.asarray(image_grid(images, rows=1, names=["Bag"])))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--timestep-spacing", "first"], "argument --timestep-spacing: invalid choice: 'first'"),
        (["--labels", "Hat"], "unknown label name 'Hat'; valid names: 'T-shirt', 'Sneaker', 'Bag'"),
        (["--labels", "7"], "label id 7 is out of range"),
        (["--labels", "1", "--num-images", "2"], "--num-images is for unconditional models"),
        (["--scheduler", "heun"], "argument --scheduler: invalid choice: 'heun'"),
        (["--labels", "1", "--guidance-scale", "-1"], "error: --guidance-scale must be a number >= 0"),
        (["--labels", "1", "--steps", "21"], "error: --steps must be an integer in [1, 20]"),
        (["--labels", "1", "--batch-size", "0"], "error: --batch-size must be an integer >= 1"),
        (["--num-images", "0"], "error: --num-images must be an integer >= 1, got 0"),
        (["--labels", "1", "--eta", "nan"], "error: --eta must be a finite number, got nan"),
        (["--device", "tpu:3"], "--device 'tpu:3' cannot be used here"),
        (
            ["--gif", "denoise.png"],
            "--gif 'denoise.png' must name an image file such as 'samples.gif' (got '.png', not one of",
        ),
        (["--seed", str(2**64)], "--seed must be in [0, 2**63), got 18446744073709551616"),
    ],
)
def test_bad_arguments_exit_with_status_2_and_the_reason(tmp_path, capsys, arguments, message):
    save_tiny_pipeline(tmp_path / "model")
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(tmp_path / "model"), "--out", str(tmp_path / "grid.png"), *arguments])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: hf-ddpm sample" in err  # the subcommand's usage, not the top level's
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize(
    "out, message",
    [
        ("grid.txt", "--out '{}' must name an image file such as 'samples.png'"),
        ("file.png/grid.png", "--out '{}' cannot be written: '{}' is not a writable folder"),
    ],
)
def test_bad_output_paths_are_refused_before_loading_the_model(tmp_path, capsys, out, message, monkeypatch):
    (tmp_path / "file.png").write_bytes(b"not a folder")
    monkeypatch.chdir(tmp_path)
    # A model that does not exist: the path check must come first.
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(tmp_path / "no-model"), "--out", out])
    assert exit_info.value.code == 2
    assert message.format(out, str(tmp_path / "file.png")) in capsys.readouterr().err


def test_labels_are_names_first_then_ids(tmp_path):
    """A class named "2" is that class, whatever its id; a number that names no class is an id."""
    torch.manual_seed(0)
    unet = DDPMUNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(False, True),
        num_class_embeds=3,
        norm_num_groups=4,
    )
    pipe = DDPMCFGPipeline(unet, DiffusersDDPMScheduler(num_train_timesteps=20), id2label={0: "2", 1: "0", 2: "Bag"})
    pipe.save_pretrained(tmp_path / "model")
    pipe.set_progress_bar_config(disable=True)
    main(
        [
            "sample",
            str(tmp_path / "model"),
            "--labels",
            "2",
            "1",
            "bag",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "g.png"),
        ]
    )
    images = pipe(
        [0, 1, 2], num_inference_steps=2, generator=[torch.Generator().manual_seed(i) for i in range(3)]
    ).images
    expected = image_grid(images, rows=3, names=["2", "0", "Bag"])  # ids 0, 1, 2 by their names
    np.testing.assert_array_equal(pixels(tmp_path / "g.png"), np.asarray(expected))


def test_save_grid_and_gif_returns_the_requested_output_type_and_writes_the_grid(tmp_path):
    pipe = save_tiny_pipeline(tmp_path / "model")
    pipe.set_progress_bar_config(disable=True)
    output = save_grid_and_gif(
        pipe,
        tmp_path / "grid.png",
        seed=0,
        class_labels=[0, 1, 2],
        batch_size=2,
        num_inference_steps=2,
        output_type="pt",
    )
    assert output.images.shape == (6, 1, 8, 8)
    with PIL.Image.open(tmp_path / "grid.png") as grid:
        assert grid.height == 3 * 64 + 2 * 16  # one row per label
        names = np.asarray(grid.convert("L"))[:, : grid.width - (2 * 64 + 16)]  # left of the 2 columns of images
        assert all((names[row * 80 : row * 80 + 64] < 128).any() for row in range(3))  # a name beside each row


def test_sample_loads_a_hub_repo_id(hub_server, tmp_path):
    pipe = save_tiny_pipeline(tmp_path / "model")
    repo_id = f"{hub_server.user}/tiny-cfg"
    pipe.push_to_hub(repo_id, token=hub_server.token)
    main(["sample", repo_id, "--labels", "0", "--steps", "3", "--seed", "1", "--out", str(tmp_path / "hub.png")])
    pipe.set_progress_bar_config(disable=True)
    image = pipe(0, num_inference_steps=3, generator=[torch.Generator().manual_seed(1)]).images[0]
    expected = image_grid([image], rows=1, names=["T-shirt"])
    np.testing.assert_array_equal(pixels(tmp_path / "hub.png"), np.asarray(expected))


def test_a_model_that_cannot_be_loaded_exits_with_status_2_saying_how_it_was_read(hub_server, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for model, message in [
        (str(tmp_path / "empty"), "is a folder without a saved pipeline in it"),
        (
            f"{hub_server.user}/no-such-model",
            "is not a local folder, and as a Hub repository id it could not be loaded",
        ),
        (str(tmp_path / "missing"), "is not an existing folder (nor a Hub repository id such as 'user/name')"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["sample", model, "--out", str(tmp_path / "grid.png")])
        assert exit_info.value.code == 2 and f"MODEL {model!r} {message}" in capsys.readouterr().err
    assert not (tmp_path / "grid.png").exists()


def test_sample_shows_a_progress_bar_and_the_files_written(tmp_path, capsys):
    save_tiny_pipeline(tmp_path / "model")
    main(["sample", str(tmp_path / "model"), "--labels", "Bag", "--steps", "3", "--out", str(tmp_path / "g.png")])
    captured = capsys.readouterr()
    assert "3/3" in captured.err and f"wrote {tmp_path / 'g.png'}" in captured.out


def test_a_conditional_model_without_labels_says_it_draws_unconditionally(tmp_path, capsys):
    save_tiny_pipeline(tmp_path / "model")
    main(["sample", str(tmp_path / "model"), "--steps", "2", "--out", str(tmp_path / "g.png")])
    err = capsys.readouterr().err
    assert "is class-conditional and no --labels were given" in err and "(T-shirt, Sneaker, Bag)" in err


def save_tiny_classifier(folder, num_classes=3, sample_size=8):
    names = ["Circle", "Square", "Star", "Moon"][:num_classes]
    classifier = tiny_classifier(num_classes, sample_size, id2label={str(i): name for i, name in enumerate(names)})
    classifier.save_pretrained(folder)
    return classifier


def test_sample_with_a_classifier_guides_towards_the_labels(tmp_path):
    pipe = save_tiny_pipeline(tmp_path / "model")
    classifier = save_tiny_classifier(tmp_path / "classifier")
    guided = ["--classifier", str(tmp_path / "classifier"), "--classifier-scale", "5"]
    common = ["sample", str(tmp_path / "model"), "--labels", "Bag", "T-shirt", "--batch-size", "2", "--steps", "4"]
    main([*common, *guided, "--out", str(tmp_path / "guided.png")])
    main([*common, "--out", str(tmp_path / "plain.png")])
    guided_pipe = DDPMCFGPipeline(pipe.unet, pipe.scheduler, id2label=pipe.config.id2label, classifier=classifier)
    guided_pipe.set_progress_bar_config(disable=True)
    expected = tmp_path / "expected.png"
    save_grid_and_gif(
        guided_pipe,
        expected,
        seed=0,
        class_labels=["Bag", "T-shirt"],
        batch_size=2,
        num_inference_steps=4,
        classifier_scale=5.0,
    )
    np.testing.assert_array_equal(pixels(tmp_path / "guided.png"), pixels(expected))
    assert not np.array_equal(pixels(tmp_path / "guided.png"), pixels(tmp_path / "plain.png"))


def test_an_unconditional_model_is_guided_towards_the_classifiers_classes(tmp_path):
    save_tiny_pipeline(tmp_path / "model", num_class_embeds=None)
    save_tiny_classifier(tmp_path / "classifier")
    main(
        [
            "sample",
            str(tmp_path / "model"),
            "--labels",
            "Star",
            "--steps",
            "3",
            "--classifier",
            str(tmp_path / "classifier"),
            "--classifier-scale",
            "2",
            "--out",
            str(tmp_path / "stars.png"),
        ]
    )
    assert (tmp_path / "stars.png").exists()


@pytest.mark.parametrize(
    "classifier, arguments, message",
    [
        (
            dict(num_classes=4),
            ["--classifier-scale", "1"],
            "--classifier '{}' cannot guide this model: --classifier has 4 classes",
        ),
        (dict(sample_size=16), [], "cannot guide this model: --classifier takes 1-channel images of 16 pixels"),
        (None, ["--classifier-scale", "1"], "--classifier '{}' could not be loaded as a classifier"),
        (dict(), ["--classifier-scale", "-1"], "--classifier-scale must be a finite number >= 0, got -1.0"),
    ],
)
def test_bad_classifiers_exit_with_status_2_naming_the_flag(tmp_path, capsys, classifier, arguments, message):
    save_tiny_pipeline(tmp_path / "model")
    if classifier is not None:
        save_tiny_classifier(tmp_path / "classifier", **classifier)
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "sample",
                str(tmp_path / "model"),
                "--labels",
                "Bag",
                "--classifier",
                str(tmp_path / "classifier"),
                *arguments,
                "--out",
                str(tmp_path / "g.png"),
            ]
        )
    assert exit_info.value.code == 2
    assert message.format(tmp_path / "classifier") in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_a_classifier_scale_without_a_classifier_is_refused(tmp_path, capsys):
    save_tiny_pipeline(tmp_path / "model")
    with pytest.raises(SystemExit):
        main(
            [
                "sample",
                str(tmp_path / "model"),
                "--labels",
                "Bag",
                "--classifier-scale",
                "2",
                "--out",
                str(tmp_path / "g.png"),
            ]
        )
    assert "--classifier-scale=2.0 needs a classifier" in capsys.readouterr().err
