"""The training script: exact resume, checkpoints, logs, the saved pipeline, the Hub, and errors before training.

Runs are tiny (8x8 digits, a UNet of a few thousand parameters, a handful of steps) and run in this process through
`main(argv)`, except where the launcher itself is the point.
"""

import json
import os
import re

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from diffusers import DDPMScheduler as DiffusersDDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import compute_snr
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import tiny_flags
from hf_ddpm import demo
from hf_ddpm.cpu import cpu_threads_per_process
from hf_ddpm.models.presets import read_model_config, unet_config_from
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.sampling import SCHEDULERS
from hf_ddpm.training import inputs as train_inputs, step as train_step, train as train_script
from hf_ddpm.training.checkpoints import find_checkpoint_to_resume
from hf_ddpm.training.flags import sampling_scheduler
from hf_ddpm.training.step import drop_class_labels, min_snr_weights, seeded_generator, training_target

TINY_WITH_DROPOUT = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "attention_levels": [False, True],
    "norm_num_groups": 4,
    "dropout": 0.1,
}


def run_demo(argv: list[str]) -> float:
    try:
        return demo.main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def train(argv: list[str]) -> str:
    """One training run in this process; Accelerate's process-wide state is cleared afterwards, as a new process
    would start."""
    try:
        return train_script.main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


class SimulatedCrash(Exception):
    pass


def resume_flags(output_dir, model_config) -> list[str]:
    """A run with everything that could make a resumed run drift: dropout, EMA, random flips, label dropout,
    gradient accumulation with a short last accumulation per epoch, warm-up and decay of the learning rate, and
    checkpoints in the middle of epochs. 64 images / batch 8 = 8 batches per epoch = 3 + 3 + 2 accumulations."""
    return tiny_flags(
        output_dir,
        "--model_config",
        str(model_config),
        "--use_ema",
        "--random_flip",
        "--gradient_accumulation_steps",
        "3",
        "--max_train_steps",
        "6",
        "--lr_scheduler",
        "linear",
        "--lr_warmup_steps",
        "2",
        "--checkpointing_steps",
        "2",
        "--checkpoints_total_limit",
        "2",
        "--save_images_steps",
        "3",
        "--report_to",
        "tensorboard",
    )


@pytest.fixture(scope="module")
def model_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny_dropout.json"
    path.write_text(json.dumps(TINY_WITH_DROPOUT))
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, model_config):
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(resume_flags(output_dir, model_config))
    return output_dir


def final_weights(output_dir) -> dict:
    """The training weights of the last checkpoint and the EMA weights of the saved pipeline."""
    return {
        "training": load_file(os.path.join(output_dir, "checkpoint-6", "model.safetensors")),
        "ema": load_file(os.path.join(output_dir, "unet", "diffusion_pytorch_model.safetensors")),
    }


def assert_bitwise_equal(first: dict, second: dict) -> None:
    for kind in first:
        assert first[kind].keys() == second[kind].keys()
        for name, tensor in first[kind].items():
            assert torch.equal(tensor, second[kind][name]), f"{kind} weight {name} differs"


# ----- checkpoints and exact resume -----
@pytest.mark.slow
@pytest.mark.parametrize("resume_from", ["latest", "checkpoint-2"])
def test_run_stopped_after_a_checkpoint_and_resumed_ends_bitwise_equal_to_an_uninterrupted_run(
    resume_from, uninterrupted, model_config, tmp_path, monkeypatch, caplog
):
    output_dir = tmp_path / "run"
    save_checkpoint = train_script.save_checkpoint

    def crash_after_checkpoint_4(accelerator, directory, step, total_limit):
        save_checkpoint(accelerator, directory, step, total_limit)
        if step == 4:
            raise SimulatedCrash

    with monkeypatch.context() as patched:
        patched.setattr(train_script, "save_checkpoint", crash_after_checkpoint_4)
        with pytest.raises(SimulatedCrash):
            train(resume_flags(output_dir, model_config))
    assert not (output_dir / "checkpoint-6").exists()

    # "latest" takes checkpoint-4; a path takes the checkpoint it names, here the older one (redoing steps 3-4).
    resume_path = resume_from if resume_from == "latest" else str(output_dir / resume_from)
    with caplog.at_level("INFO"):
        train(resume_flags(output_dir, model_config) + ["--resume_from_checkpoint", resume_path])
    resumed_step = 4 if resume_from == "latest" else 2
    assert f"checkpoint-{resumed_step} at step {resumed_step}" in caplog.text
    assert_bitwise_equal(final_weights(output_dir), final_weights(uninterrupted))


def test_checkpoint_interrupted_while_being_written_is_never_taken_for_a_checkpoint(
    model_config, tmp_path, monkeypatch
):
    output_dir = tmp_path / "run"
    save_state = train_script.Accelerator.save_state

    def crash_while_writing_checkpoint_4(accelerator, directory, *args, **kwargs):
        save_state(accelerator, directory, *args, **kwargs)
        if "checkpoint-4" in str(directory):
            raise SimulatedCrash

    monkeypatch.setattr(train_script.Accelerator, "save_state", crash_while_writing_checkpoint_4)
    # Keeping a single checkpoint, the old one goes only once the new one is complete.
    flags = resume_flags(output_dir, model_config) + ["--checkpoints_total_limit", "1"]
    with pytest.raises(SimulatedCrash):
        train(flags)
    assert sorted(os.listdir(output_dir / "checkpoint-4.partial"))  # the state was written, but not renamed
    assert not (output_dir / "checkpoint-4").exists()
    args = train_script.parse_args(flags + ["--resume_from_checkpoint", "latest"])
    assert find_checkpoint_to_resume(args) == str(output_dir / "checkpoint-2")


def test_checkpoints_total_limit_keeps_the_newest_and_each_holds_ema_and_rng_state(uninterrupted):
    checkpoints = sorted(name for name in os.listdir(uninterrupted) if name.startswith("checkpoint"))
    assert checkpoints == ["checkpoint-4", "checkpoint-6"]
    files = set(os.listdir(uninterrupted / "checkpoint-6"))
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"} <= files
    progress = torch.load(uninterrupted / "checkpoint-6" / "custom_checkpoint_0.pkl", weights_only=False)
    ema = torch.load(uninterrupted / "checkpoint-6" / "custom_checkpoint_1.pkl", weights_only=False)
    unet_config = DDPMCFGPipeline.from_pretrained(uninterrupted).unet.config
    assert {key: progress.pop(key) for key in ("global_step", "seed", "use_ema")} == {
        "global_step": 6,
        "seed": 0,
        "use_ema": True,
    }
    assert progress["unet_config"]["block_out_channels"] == list(unet_config.block_out_channels)
    assert progress["unet_config"]["num_class_embeds"] == unet_config.num_class_embeds == 10
    assert ema["optimization_step"] == 6 and len(ema["shadow_params"]) > 0


@pytest.mark.slow
def test_resuming_a_finished_run_trains_no_further_and_a_mismatched_run_is_refused_before_loading(tmp_path):
    output_dir = tmp_path / "run"
    flags = tiny_flags(output_dir, "--max_train_steps", "3", "--checkpointing_steps", "3")  # 8 batches per epoch
    train(flags)
    saved = load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")
    train(flags + ["--resume_from_checkpoint", "latest"])
    assert_bitwise_equal(
        {"unet": load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")}, {"unet": saved}
    )
    assert sorted(name for name in os.listdir(output_dir) if name.startswith("checkpoint")) == ["checkpoint-3"]

    saved_batching = "1 process\\(es\\) x --train_batch_size 8 x --gradient_accumulation_steps 1 on 64 images"
    for extra, message in [
        (["--use_ema"], "saved by a run with no --use_ema: resume it with no --use_ema"),
        (["--seed", "1"], "--seed 1 differs from the seed of .*checkpoint-3 \\(0\\)"),
        # Steps left to train in another batching (a finished run may be evaluated again on any): refused.
        (
            ["--train_batch_size", "4", "--max_train_steps", "6"],
            f"saved by a run of {saved_batching}; this run has .* --train_batch_size 4 ",
        ),
        (
            ["--gradient_accumulation_steps", "2", "--max_train_steps", "6"],
            f"{saved_batching}; .* --gradient_accumulation_steps 2 on 64",
        ),
        (["--max_train_samples", "80", "--max_train_steps", "6"], f"{saved_batching}; .* on 80 images"),
    ]:
        with pytest.raises(ValueError, match=message):
            train(flags + ["--resume_from_checkpoint", "latest", *extra])


def test_an_unfinished_run_resumed_in_another_batching_is_refused_even_where_that_batching_counts_it_done(
    tmp_path, monkeypatch
):
    # One epoch of 64 images: 8 steps at batch 8, stopped after 2; at batch 32 the epoch would be those 2 steps.
    flags = tiny_flags(tmp_path / "run", "--num_epochs", "1", "--checkpointing_steps", "2")
    save_checkpoint = train_script.save_checkpoint

    def crash_after_checkpoint_2(accelerator, directory, step, total_limit):
        save_checkpoint(accelerator, directory, step, total_limit)
        raise SimulatedCrash

    with monkeypatch.context() as patched:
        patched.setattr(train_script, "save_checkpoint", crash_after_checkpoint_2)
        with pytest.raises(SimulatedCrash):
            train(flags)
    with pytest.raises(ValueError, match="--train_batch_size 8 .*; this run has .* --train_batch_size 32"):
        train(flags + ["--resume_from_checkpoint", "latest", "--train_batch_size", "32"])
    progress = torch.load(tmp_path / "run" / "checkpoint-2" / "custom_checkpoint_0.pkl", weights_only=False)
    assert (progress["global_step"], progress["max_train_steps"]) == (2, 8)


@pytest.mark.slow
def test_resuming_from_an_earlier_checkpoint_sets_the_later_ones_aside_so_that_latest_follows_the_new_course(
    tmp_path, monkeypatch, caplog
):
    output_dir = tmp_path / "run"
    flags = tiny_flags(output_dir, "--max_train_steps", "6", "--checkpointing_steps", "2", "--loss_type", "l1")
    train(flags)
    save_checkpoint = train_script.save_checkpoint

    def crash_after_checkpoint_4(accelerator, directory, step, total_limit):
        save_checkpoint(accelerator, directory, step, total_limit)
        if step == 4:
            raise SimulatedCrash

    # Back to step 2 with another loss, stopped at step 4: "latest" is the new checkpoint-4, not the old 6.
    flags[flags.index("l1")] = "l2"
    with monkeypatch.context() as patched, caplog.at_level("INFO"):
        patched.setattr(train_script, "save_checkpoint", crash_after_checkpoint_4)
        with pytest.raises(SimulatedCrash):
            train(flags + ["--resume_from_checkpoint", "checkpoint-2"])
    checkpoints = sorted(name for name in os.listdir(output_dir) if name.startswith("checkpoint"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4", "checkpoint-4.abandoned", "checkpoint-6.abandoned"]
    assert "checkpoint-6.abandoned: it is past step 2, where this run resumes" in caplog.text
    args = train_script.parse_args(flags + ["--resume_from_checkpoint", "latest"])
    assert find_checkpoint_to_resume(args) == str(output_dir / "checkpoint-4")
    new, old = (
        load_file(output_dir / name / "model.safetensors") for name in ("checkpoint-4", "checkpoint-4.abandoned")
    )
    assert any(not torch.equal(new[name], old[name]) for name in new)  # trained on another loss from step 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: Accelerate loads a checkpoint onto the CPU")
def test_a_run_with_ema_resumes_on_a_gpu(tmp_path):
    flags = tiny_flags(tmp_path / "run", "--use_ema", "--max_train_steps", "2", "--checkpointing_steps", "1")
    train(flags)
    train(flags + ["--resume_from_checkpoint", "checkpoint-1"])  # the EMA steps on the GPU's weights again
    ema = torch.load(tmp_path / "run" / "checkpoint-2" / "custom_checkpoint_1.pkl", weights_only=False)
    assert ema["optimization_step"] == 2


# ----- logs and previews -----
def read_events(output_dir) -> EventAccumulator:
    events = EventAccumulator(str(output_dir / "logs" / "train_ddpm"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_tensorboard_gets_loss_lr_grad_norm_every_step_and_previews_on_schedule(uninterrupted):
    events = read_events(uninterrupted)
    for scalar in ("loss", "lr", "grad_norm"):
        assert [event.step for event in events.Scalars(scalar)] == [1, 2, 3, 4, 5, 6]
    assert [event.step for event in events.Images("samples/grid")] == [3, 6]
    gif = events.Images("samples/denoising")[0].encoded_image_string
    assert gif.startswith(b"GIF8")
    samples = sorted(os.listdir(uninterrupted / "samples"))
    assert samples == ["step-000003.gif", "step-000003.png", "step-000006.gif", "step-000006.png"]
    grid = PIL.Image.open(uninterrupted / "samples" / "step-000003.png")
    # One row of one 8x8 image per digit (enlarged 8x to 64 px, 16 px apart), the digit's name written left of it.
    assert grid.height == 10 * 64 + 9 * 16 and grid.width > 64
    names = np.asarray(grid.convert("L"))[:, : grid.width - 64]
    assert all((names[row * 80 : row * 80 + 64] < 128).any() for row in range(10))


def test_learning_rate_schedule_is_laid_out_in_optimizer_steps_under_gradient_accumulation(uninterrupted):
    logged = [event.value for event in read_events(uninterrupted).Scalars("lr")]
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = get_scheduler("linear", optimizer, num_warmup_steps=2, num_training_steps=6)
    expected = []
    for _ in range(6):
        optimizer.step()
        schedule.step()
        expected.append(schedule.get_last_lr()[0])
    np.testing.assert_allclose(logged, expected, rtol=1e-6)
    assert expected[1] == pytest.approx(1e-3) and expected[-1] == 0.0


# ----- the saved pipeline -----
def test_output_dir_is_a_pipeline_with_ema_weights_and_a_model_card(uninterrupted):
    pipe = DDPMCFGPipeline.from_pretrained(uninterrupted)
    assert pipe.config.id2label == {i: str(i) for i in range(10)} and pipe.config.null_class_id == 10
    # The sampler chosen by the steps sweep, on the training noise schedule, without x0 clipping for DDIM and DDPM.
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++" and pipe.scheduler.config.solver_order == 2
    assert pipe.scheduler.config.beta_schedule == "linear" and pipe.scheduler.config.clip_sample is False
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    ema = torch.load(uninterrupted / "checkpoint-6" / "custom_checkpoint_1.pkl", weights_only=False)
    for parameter, shadow in zip(pipe.unet.parameters(), ema["shadow_params"]):
        assert torch.equal(parameter, shadow)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(class_labels=[3, 7], guidance_scale=3.0, num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
    card = (uninterrupted / "README.md").read_text()
    assert "![Samples](samples.png)" in card and "| `use_ema` | True |" in card
    assert "guidance_scale=3.0, num_inference_steps=2)" in card  # the previews' settings, in the usage snippet
    assert (uninterrupted / "samples.png").exists() and (uninterrupted / "samples.gif").exists()


def test_unconditional_v_prediction_run_saves_what_the_flags_asked_for(tmp_path, monkeypatch):
    calls = []
    real_loss = train_step.diffusion_loss

    def recording_loss(prediction, target, loss_type, weights=None):
        calls.append((loss_type, weights))
        return real_loss(prediction, target, loss_type, weights)

    monkeypatch.setattr(train_step, "diffusion_loss", recording_loss)
    output_dir = tmp_path / "run"
    train(
        tiny_flags(
            output_dir,
            "--unconditional",
            "--prediction_type",
            "v_prediction",
            "--loss_type",
            "huber",
            "--snr_gamma",
            "5",
            "--beta_schedule",
            "squaredcos_cap_v2",
            "--num_train_timesteps",
            "100",
            "--max_train_steps",
            "2",
        )
    )
    unet = json.loads((output_dir / "unet" / "config.json").read_text())
    scheduler = json.loads((output_dir / "scheduler" / "scheduler_config.json").read_text())
    assert unet["num_class_embeds"] is None
    assert scheduler["prediction_type"] == "v_prediction" and scheduler["beta_schedule"] == "squaredcos_cap_v2"
    assert scheduler["num_train_timesteps"] == 100
    assert len(calls) == 2 and all(loss_type == "huber" and weights is not None for loss_type, weights in calls)
    assert json.loads((output_dir / "model_index.json").read_text())["null_class_id"] is None


def test_cifar10_schema_dataset_trains_an_rgb_class_conditional_model_named_by_its_classes(tmp_path):
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    pixels = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 3), dtype=np.uint8)
    images = [PIL.Image.fromarray(array, mode="RGB") for array in pixels]
    dataset = datasets.Dataset.from_dict({"img": images, "label": [i % 10 for i in range(16)]}, features=features)
    dataset.save_to_disk(str(tmp_path / "cifar"))
    flags = tiny_flags(tmp_path / "run", "--max_train_steps", "1", "--cache_dir", str(tmp_path / "cache"))
    flags[flags.index("digits")] = str(tmp_path / "cifar")
    flags[flags.index("--max_train_samples") + 1] = "16"
    train(flags)
    pipe = DDPMCFGPipeline.from_pretrained(tmp_path / "run")
    assert pipe.unet.config.in_channels == 3 and pipe.unet.config.num_class_embeds == 10
    assert pipe.config.id2label[3] == "cat"


def test_dataset_config_and_center_crop_reach_the_training_data(tmp_path, monkeypatch):
    """A local dataset with two configurations (declared in its README, as on the Hub): the run trains on the one
    --dataset_config_name names, its images cut to the centre square by --center_crop."""
    wide = np.zeros((16, 32), dtype=np.uint8)
    wide[:, :8] = 255  # a white band on the left quarter: outside the centre square
    for config, names in {"shapes": ["disc", "ring"], "marks": ["tick", "cross", "dot"]}.items():
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        subset = datasets.Dataset.from_dict(
            {"image": [PIL.Image.fromarray(wide)] * 8, "label": [i % len(names) for i in range(8)]}, features=features
        )
        subset.to_parquet(str(tmp_path / "data" / config / "train.parquet"))
    (tmp_path / "data" / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: shapes\n  data_files:\n  - split: train\n    path: shapes/*.parquet\n"
        "- config_name: marks\n  data_files:\n  - split: train\n    path: marks/*.parquet\n---\n"
    )
    loaded = []
    load_image_data = train_inputs.load_image_data
    monkeypatch.setattr(
        train_inputs, "load_image_data", lambda **kwargs: loaded.append(load_image_data(**kwargs)) or loaded[-1]
    )
    flags = tiny_flags(
        tmp_path / "run",
        "--max_train_steps",
        "1",
        "--cache_dir",
        str(tmp_path / "cache"),
        "--dataset_config_name",
        "marks",
        "--center_crop",
    )
    flags[flags.index("digits")] = str(tmp_path / "data")
    flags[flags.index("--max_train_samples") + 1] = "8"
    train(flags)
    [data] = loaded
    assert data.images.shape == (8, 1, 8, 8) and data.images[..., 1:].max() == -1  # the band was cut away
    pipe = DDPMCFGPipeline.from_pretrained(tmp_path / "run")
    assert pipe.config.id2label == {0: "tick", 1: "cross", 2: "dot"} and pipe.unet.config.num_class_embeds == 3


@pytest.mark.slow
def test_a_short_demo_learns_the_digits_and_measures_its_samples(tmp_path, capsys):
    """The demo's recipe at a small scale (the tiny UNet at 8x8, 500 steps, ~15 s): most samples already read as the
    digit asked for, at a distance from the real digits that a collapsed or untrained model does not reach (an
    untrained one reads ~10% and sits at >10x the floor)."""
    result = run_demo(
        [
            "--output_dir",
            str(tmp_path / "demo"),
            "--resolution",
            "8",
            "--model_config",
            "tiny",
            "--max_train_steps",
            "500",
            "--samples_per_digit",
            "2",
            "--num_inference_steps",
            "10",
            "--guidance_scale",
            "2",
            "--eval_num_samples",
            "200",
            "--sweep_guidance_scales",
            "1",
            "2",
        ]
    )
    grid = PIL.Image.open(tmp_path / "demo" / "digits_grid.png")
    # Two images of each digit in its row, named: 8 px images enlarged 8x to 64 px, 16 px apart.
    assert grid.height == 10 * 64 + 9 * 16 and grid.width > 2 * 64 + 16
    assert PIL.Image.open(tmp_path / "demo" / "digits_denoising.gif").n_frames > 1
    # One sweep of two scales (the demo's own listed once), each row measured against its real-vs-real floor.
    assert [row["guidance_scale"] for row in result.evaluation.rows] == [1.0, 2.0]
    assert result.row["guidance_scale"] == 2.0 and result.row["num_samples"] == 200
    assert result.row["scheduler"] == "dpm" and result.row["steps"] == 10
    assert result.agreement >= 0.9 and result.fd_ratio < 4  # measured: 97.5%, 2.3x
    assert result.row["fd_digits_floor"] > 0
    assert result.fd_ratio == result.row["fd_digits"] / result.row["fd_digits_floor"]
    assert set(result.seconds) == {"training", "grid_and_gif", "evaluation", "total"}
    evaluation = tmp_path / "demo" / "evaluation"
    assert {"metrics.json", "cfg_tradeoff.png", "samples_by_guidance.png"} <= set(os.listdir(evaluation))
    out = capsys.readouterr().out
    assert f"label accuracy  {result.agreement:.1%} read as the digit asked for" in out
    assert f"{result.fd_ratio:.2f}x the real-vs-real floor" in out and "Guidance sweep" in out
    assert "against real digits that the model never saw:" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_train_steps", "0"], "--max_train_steps must be at least 1"),
        (["--samples_per_digit", "0"], "--samples_per_class must be at least 1"),
        (["--learning_rate", "0"], "--learning_rate must be positive"),
        (["--eval_num_samples", "9"], "--eval_num_samples must be at least 10"),
        (["--eval_num_samples", "899"], "at most 898 (the held-out real digits)"),
        (["--sweep_guidance_scales", "1", "-1"], "--sweep_guidance_scales must be finite numbers >= 0"),
        (["--sweep_guidance_scales", "1", "inf"], "--sweep_guidance_scales must be finite numbers >= 0"),
        (["--guidance_scale", "nan"], "--guidance_scale must be finite numbers >= 0"),
        (["--guidance_interval", "0.9", "0.1"], "--guidance_interval must be LOW HIGH with 0 <= LOW < HIGH <= 1"),
        (["--snr_gamma", "-1"], "--snr_gamma must be a number >= 0 (0: the plain loss), got -1.0"),
    ],
)
def test_demo_rejects_bad_values_naming_its_own_flags(flags, message, capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(flags)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, snr_gamma",
    [(["--dataset", "fashion_mnist"], 5.0), (["--dataset", "fashion_mnist", "--snr_gamma", "0"], None), ([], None)],
)
def test_the_fashion_recipe_trains_with_min_snr_weighting_unless_told_otherwise(flags, snr_gamma):
    assert train_script.parse_args(demo.training_flags(demo.parse_args(flags))).snr_gamma == snr_gamma


@pytest.mark.parametrize(
    "flags, spacing",
    [
        ([], "leading"),  # the digits recipe, measured both ways
        (["--dataset", "fashion_mnist"], "trailing"),
        (["--dataset", "fashion_mnist", "--timestep_spacing", "linspace"], "linspace"),
    ],
)
def test_each_demo_recipe_saves_the_sampler_spacing_it_was_measured_with(flags, spacing):
    assert train_script.parse_args(demo.training_flags(demo.parse_args(flags))).timestep_spacing == spacing


@pytest.mark.parametrize("flags, excluded", [([], True), (["--no-exclude_eval_reference"], False)])
def test_demo_trains_without_the_evaluation_reference_unless_told_otherwise(flags, excluded):
    trained = train_script.parse_args(demo.training_flags(demo.parse_args(flags)))
    assert trained.exclude_eval_reference is excluded and trained.dataset_name == "digits"


# ----- bad input: errors before any training -----
def assert_nothing_trained(output_dir) -> None:
    assert not os.path.exists(output_dir) or not any(
        name.startswith("checkpoint") or name == "model_index.json" for name in os.listdir(output_dir)
    )


def test_unknown_dataset_fails_before_training_saying_what_was_tried(hub_server, tmp_path):
    flags = tiny_flags(tmp_path / "run")
    flags[flags.index("digits")] = "no-such-dataset-anywhere"
    with pytest.raises(ValueError, match="not a local path, not the built-in 'digits', and loading it from the Hub"):
        train(flags)
    assert_nothing_trained(tmp_path / "run")


@pytest.mark.parametrize(
    "flag, message",
    [("--image_column", r"--image_column 'picture'.*columns"), ("--label_column", r"--label_column 'kind'.*columns")],
)
def test_missing_image_or_label_column_fails_before_training_listing_the_columns(flag, message, tmp_path):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    images = [PIL.Image.new("L", (8, 8), color=i * 40) for i in range(4)]
    datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}, features=features).save_to_disk(
        str(tmp_path / "data")
    )
    flags = tiny_flags(tmp_path / "run", flag, "picture" if flag == "--image_column" else "kind")
    flags[flags.index("digits")] = str(tmp_path / "data")
    with pytest.raises(ValueError, match=message):
        train(flags)
    assert_nothing_trained(tmp_path / "run")


def test_columns_of_the_builtin_digits_fail_before_training_naming_the_flags(tmp_path):
    with pytest.raises(
        ValueError,
        match="'digits' dataset has no configurations or columns to choose: leave out "
        "--dataset_config_name and --label_column",
    ):
        train(tiny_flags(tmp_path / "run", "--label_column", "target", "--dataset_config_name", "mnist"))
    assert_nothing_trained(tmp_path / "run")


def test_resolution_the_model_cannot_take_fails_naming_the_flag(tmp_path):
    flags = tiny_flags(tmp_path / "run", "--model_config", "small", "--resolution", "30")
    with pytest.raises(ValueError, match=r"--resolution 30 cannot be taken .* multiple of 4"):
        train(flags)
    assert not os.path.exists(tmp_path / "run")


def test_fp16_on_cpu_fails_before_training_instead_of_training_in_fp32(tmp_path):
    with pytest.raises(ValueError, match=r"fp16 .* needs a GPU"):
        train(tiny_flags(tmp_path / "run", "--mixed_precision", "fp16"))
    assert not os.path.exists(tmp_path / "run")


def test_missing_resume_path_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"--resume_from_checkpoint .*checkpoint-7.* does not exist"):
        train(tiny_flags(tmp_path / "run", "--resume_from_checkpoint", str(tmp_path / "checkpoint-7")))
    assert not os.path.exists(tmp_path / "run")


def test_push_to_hub_without_a_usable_token_fails_before_training(hub_server, tmp_path):
    with pytest.raises(ValueError, match="Pushing to the Hub needs a token"):
        train(tiny_flags(tmp_path / "run", "--push_to_hub"))
    with pytest.raises(ValueError, match="was rejected"):
        train(tiny_flags(tmp_path / "run", "--push_to_hub", "--hub_token", "hf_not_a_real_token"))
    with pytest.raises(ValueError, match="read-only"):
        train(tiny_flags(tmp_path / "run", "--push_to_hub", "--hub_token", hub_server.read_token))
    assert not os.path.exists(tmp_path / "run")


def test_output_dir_of_another_run_is_refused_unless_resuming_or_overwriting(tmp_path):
    output_dir = tmp_path / "run"
    (output_dir / "checkpoint-5").mkdir(parents=True)
    (output_dir / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds another run \(model_index.json, checkpoint-5\)"):
        train(tiny_flags(output_dir, "--max_train_steps", "1"))
    assert os.listdir(output_dir / "checkpoint-5") == []

    train(tiny_flags(output_dir, "--max_train_steps", "1", "--overwrite_output_dir"))
    assert not (output_dir / "checkpoint-5").exists()
    assert json.loads((output_dir / "model_index.json").read_text())["_class_name"][1] == "DDPMCFGPipeline"


@pytest.mark.slow
def test_overwrite_output_dir_deletes_what_the_earlier_run_wrote_and_nothing_else(tmp_path):
    output_dir = tmp_path / "project"
    train(
        tiny_flags(
            output_dir,
            "--max_train_steps",
            "2",
            "--checkpointing_steps",
            "2",
            "--save_images_steps",
            "1",
            "--report_to",
            "tensorboard",
        )
    )
    (output_dir / "src").mkdir()
    (output_dir / "src" / "main.py").write_text("print('mine')")
    (output_dir / "thesis.tex").write_text("mine")
    (output_dir / "unet" / "notes.txt").write_text("left in a folder the run writes")
    ours = sorted(os.listdir(output_dir))
    train(tiny_flags(output_dir, "--max_train_steps", "1", "--overwrite_output_dir"))
    assert (output_dir / "src" / "main.py").read_text() == "print('mine')"
    assert (output_dir / "thesis.tex").read_text() == "mine"
    assert not (output_dir / "unet" / "notes.txt").exists()
    assert {"checkpoint-2", "logs"} <= set(ours) and "checkpoint-2" not in os.listdir(output_dir)
    assert os.listdir(output_dir / "logs") == ["train.log"]  # the new run's log alone: the old tensorboard logs went
    assert not (output_dir / "samples").exists()  # this run writes no previews during training


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cond_drop_prob", "1.5"], "--cond_drop_prob must be in"),
        (["--prediction_type", "noise"], "--prediction_type: invalid choice"),
        (["--train_batch_size", "0"], "--train_batch_size must be at least 1"),
        (["--class_conditional", "--unconditional"], "not allowed with argument"),
        (["--num_inference_steps", "2000"], r"--num_inference_steps must be an integer in \[1, 1000\]"),
        # DPM-Solver++'s "leading" spacing repeats timestep 0: refused now, not at the first preview of the run
        (
            ["--timestep_spacing", "leading", "--num_inference_steps", "1000"],
            "--scheduler dpm: --num_inference_steps=1000 does not fit .*repeats a timestep",
        ),
        (
            ["--timestep_spacing", "leading", "--num_train_timesteps", "10", "--num_inference_steps", "10"],
            "--num_inference_steps=10 does not fit .*repeats a timestep",
        ),
        (
            ["--push", "--hub_model_id", "me/model"],
            "unrecognized arguments: --push",
        ),  # no abbreviation bypasses a check
        (["--unconditional", "--guidance", "2"], "unrecognized arguments: --guidance"),
        (["--overwrite_output_dir", "--resume_from_checkpoint", "latest"], "--overwrite_output_dir deletes"),
        (["--learning_rate", "-1"], "--learning_rate must be a positive number"),
        (["--ema_inv_gamma", "0"], "--ema_inv_gamma must be a positive number"),
        (["--ema_power", "-1"], "--ema_power must be a positive number"),
        (["--snr_gamma", "nan"], "--snr_gamma must be a positive number"),
        (["--snr_gamma", "5", "--timestep_distribution", "edm"], "--snr_gamma and --timestep_distribution edm"),
        (["--timestep_distribution", "lognormal"], "--timestep_distribution: invalid choice"),
        (["--adam_beta1", "1.5"], "--adam_beta1 must be in \\[0, 1\\)"),
        (["--adam_epsilon", "-1"], "--adam_epsilon must be at least 0"),
        (["--lr_scheduler", "piecewise_constant"], "--lr_scheduler: invalid choice"),
        (["--seed", str(2**40)], r"--seed must be in \[0, 2\*\*32\), got 1099511627776"),
        (["--unconditional", "--guidance_scale", "2"], "--guidance_scale are for class-conditional training"),
        (["--unconditional", "--cond_drop_prob=0.2"], "--cond_drop_prob are for class-conditional training"),
        (["--guidance_scale", "inf"], "--guidance_scale must be a finite number >= 0, got inf"),
        (["--hub_model_id", "me/model"], "--hub_model_id takes effect only with --push_to_hub"),
        (
            ["--hub_private_repo", "--hub_token=x"],
            "--hub_private_repo and --hub_token take effect only with --push_to_hub",
        ),
        (["--ema_max_decay", "0.99"], "--ema_max_decay takes effect only with --use_ema"),
        (["--logging_dir", ""], "--logging_dir must be a folder inside --output_dir"),
        (["--logging_dir", "../logs"], "--logging_dir must be a folder inside --output_dir"),
        (["--logging_dir", "."], "--logging_dir must be a folder inside --output_dir"),
        (["--logging_dir", "/var/log/run"], "--logging_dir must be a folder inside --output_dir"),
        (["--logging_dir", "checkpoint-5/tb"], "--logging_dir 'checkpoint-5/tb' would mix the logs into the run's own"),
        (["--logging_dir", "unet"], "--logging_dir 'unet' would mix the logs into the run's own 'unet'"),
    ],
)
def test_bad_flag_values_are_rejected_by_the_parser_naming_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit):
        train_script.parse_args(["--dataset_name", "digits", *flags])
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(
    "flags, steps",
    [
        ([], 15),  # DPM-Solver++ (2M), the default sampler
        (["--scheduler", "unipc"], 15),
        (["--scheduler", "ddim"], 50),
        (["--scheduler", "euler", "--num_train_timesteps", "40"], 40),
        (["--scheduler", "ddpm", "--num_train_timesteps", "200"], 200),
        (["--scheduler", "ddim", "--num_inference_steps", "7"], 7),
    ],
)
def test_preview_steps_default_to_the_pipelines_default_for_the_scheduler(flags, steps):
    assert train_script.parse_args(["--dataset_name", "digits", *flags]).num_inference_steps == steps


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_the_sampler_starts_at_the_last_training_timestep_unless_leading_spacing_is_asked_for(scheduler):
    # Sampling starts from pure noise; "leading" spacing would hand it to the model at timestep 930 of 1000, where the
    # cosine schedule's inputs still hold a tenth of the image.
    flags = ["--dataset_name", "digits", "--beta_schedule", "squaredcos_cap_v2", "--scheduler", scheduler]
    trailing = sampling_scheduler(train_script.parse_args(flags))
    leading = sampling_scheduler(train_script.parse_args(flags + ["--timestep_spacing", "leading"]))
    for sampler in trailing, leading:
        sampler.set_timesteps(15)
    assert trailing.config.timestep_spacing == "trailing" and int(trailing.timesteps[0]) == 999
    assert leading.config.timestep_spacing == "leading" and int(leading.timesteps[0]) < 950


def test_an_output_dir_that_is_a_file_is_refused_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "model").write_text("not a folder")
    with pytest.raises(SystemExit):
        train_script.parse_args(["--dataset_name", "digits", "--output_dir", str(tmp_path / "model")])
    assert "is a file, not a folder" in capsys.readouterr().err and (tmp_path / "model").read_text() == "not a folder"


@pytest.mark.slow
def test_logs_in_a_nested_folder_are_accepted_and_overwritten_with_the_run(tmp_path):
    output_dir = tmp_path / "run"
    flags = tiny_flags(output_dir, "--max_train_steps", "1", "--report_to", "tensorboard", "--logging_dir", "tb/run")
    train(flags)
    assert os.listdir(output_dir / "tb" / "run")
    (output_dir / "keep.txt").write_text("mine")
    train(flags + ["--overwrite_output_dir"])
    assert (output_dir / "keep.txt").read_text() == "mine" and (output_dir / "model_index.json").exists()


# ----- the pieces of the loss -----
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_min_snr_weights_are_min_snr_gamma_on_x0_expressed_for_each_target(prediction_type):
    scheduler = DiffusersDDPMScheduler(num_train_timesteps=1000)
    timesteps = torch.tensor([0, 10, 100, 400, 999])
    snr = compute_snr(scheduler, timesteps)
    x0_weight = torch.minimum(snr, torch.full_like(snr, 5.0))
    # A target error of e in epsilon is an x0 error of e / sqrt(SNR); in v, of e / sqrt(SNR + 1).
    scale = {"epsilon": snr, "sample": torch.ones_like(snr), "v_prediction": snr + 1}[prediction_type]
    expected = x0_weight / scale
    torch.testing.assert_close(min_snr_weights(scheduler.alphas_cumprod, timesteps, 5.0, prediction_type), expected)


def test_velocity_target_matches_diffusers():
    scheduler = DiffusersDDPMScheduler(num_train_timesteps=1000)
    clean, noise = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    timesteps = torch.tensor([1, 50, 500, 999])
    expected = scheduler.get_velocity(clean, noise, timesteps)
    torch.testing.assert_close(training_target("v_prediction", scheduler, clean, noise, timesteps), expected)
    assert training_target("epsilon", scheduler, clean, noise, timesteps) is noise


def test_label_dropout_replaces_labels_by_the_null_label_at_the_given_rate():
    labels = torch.arange(10).repeat(1000)
    dropped = drop_class_labels(labels, 0.1, 10, torch.Generator().manual_seed(0))
    replaced = dropped != labels
    assert torch.all(dropped[replaced] == 10) and 0.09 < replaced.float().mean() < 0.11
    assert torch.equal(drop_class_labels(labels, 0.0, 10, torch.Generator()), labels)


def test_seeded_generators_depend_on_every_key_and_nothing_else():
    draw = lambda *keys: torch.rand(3, generator=seeded_generator(*keys))  # noqa: E731
    assert torch.equal(draw(0, 1, 0, 5), draw(0, 1, 0, 5))
    assert not torch.equal(draw(0, 1, 0, 5), draw(0, 1, 1, 5))
    assert not torch.equal(draw(0, 1, 0, 5), draw(1, 1, 0, 5))


def test_model_config_file_takes_defaults_for_missing_keys_and_rejects_unknown_or_conflicting_keys(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"_class_name": "DDPMUNet2DModel", "block_out_channels": [16, 32], "dropout": 0.1}))
    keys = read_model_config(str(path))
    assert keys == {"block_out_channels": (16, 32), "dropout": 0.1}
    config = unet_config_from(keys, resolution=8, channels=1, num_classes=10)
    assert config["sample_size"] == 8 and config["num_class_embeds"] == 10
    path.write_text(json.dumps({"widths": [16, 32]}))
    with pytest.raises(ValueError, match=r"unknown keys \['widths'\]"):
        read_model_config(str(path))
    with pytest.raises(ValueError, match="--model_config sets sample_size=32 but the data gives 8"):
        unet_config_from({"sample_size": 32}, resolution=8, channels=1, num_classes=None)
    with pytest.raises(ValueError, match="must be one of the presets"):
        read_model_config("huge")


def test_cpu_threads_use_only_idle_cores_less_one_per_data_loading_worker():
    assert cpu_threads_per_process(1, 0, idle_cores=4) == 4
    assert cpu_threads_per_process(2, 0, idle_cores=4) == 2
    assert cpu_threads_per_process(1, 2, idle_cores=4) == 2
    assert cpu_threads_per_process(2, 2, idle_cores=4) == 1
    assert cpu_threads_per_process(1, 0, idle_cores=1) == 1  # a 2-core machine with one other busy process
    assert cpu_threads_per_process(1, 0, idle_cores=0) == 1


def test_resuming_with_another_model_config_names_the_keys_that_differ(tmp_path):
    train(tiny_flags(tmp_path / "run", "--max_train_steps", "2", "--checkpointing_steps", "2"))
    other = tmp_path / "wider.json"
    other.write_text(json.dumps({**TINY_WITH_DROPOUT, "block_out_channels": [16, 16], "dropout": 0.0}))
    flags = tiny_flags(tmp_path / "run", "--max_train_steps", "4", "--resume_from_checkpoint", "latest")
    flags[flags.index("--model_config") + 1] = str(other)
    with pytest.raises(
        ValueError, match=r"another configuration \(block_out_channels: saved \[8, 16\], now \[16, 16\]\)"
    ):
        train(flags)
