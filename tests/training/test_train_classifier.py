"""--task classifier: the noise-aware classifier trained by the training script, saved as a model folder that loads
with and without hf-ddpm, its accuracy per noise quarter, exact resume, the clean-image baseline, and the flags and
data it refuses.

Runs are tiny (64 digits at 8x8, the tiny classifier preset, a handful of steps) and run in this process.
"""

import inspect
import json
import re
from pathlib import Path

import PIL.Image
import pytest
import torch
from diffusers import AutoModel
from safetensors.torch import load_file

from hf_ddpm.models.classifier_2d import DDPMClassifier2DModel
from hf_ddpm.models.presets import CLASSIFIER_PRESETS, classifier_config_from, read_model_config
from hf_ddpm.schedulers import DDPMScheduler
from hf_ddpm.training.classifier import (
    ClassifierTrainingRun,
    classifier_inputs,
    correct_by_quarter,
    quarter_bounds,
)
from test_train import SimulatedCrash, assert_bitwise_equal, assert_nothing_trained, read_events, train, train_script

QUARTERS = ["q1", "q2", "q3", "q4"]


def classifier_flags(output_dir, *extra: str) -> list[str]:
    """A few-second classifier run: 64 digits at 8x8, the tiny classifier, no checkpoints."""
    return [
        "--task",
        "classifier",
        "--dataset_name",
        "digits",
        "--max_train_samples",
        "64",
        "--resolution",
        "8",
        "--model_config",
        "tiny",
        "--train_batch_size",
        "8",
        "--output_dir",
        str(output_dir),
        "--checkpointing_steps",
        "1000",
        "--report_to",
        "none",
        "--learning_rate",
        "1e-3",
        "--lr_warmup_steps",
        "0",
        *extra,
    ]


def resume_flags(output_dir, model_config) -> list[str]:
    """What could make a resumed run drift: dropout, EMA, random flips, gradient accumulation, checkpoints in the
    middle of an epoch and a run that crosses into the next. 64 images / batch 8 / accumulation 2 = 4 steps an
    epoch; 6 steps."""
    flags = classifier_flags(
        output_dir,
        "--use_ema",
        "--random_flip",
        "--gradient_accumulation_steps",
        "2",
        "--max_train_steps",
        "6",
        "--checkpointing_steps",
        "2",
        "--report_to",
        "tensorboard",
    )
    flags[flags.index("--model_config") + 1] = str(model_config)
    return flags


@pytest.fixture(scope="module")
def model_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny_classifier_dropout.json"
    path.write_text(json.dumps({**CLASSIFIER_PRESETS["tiny"], "dropout": 0.1}))
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, model_config):
    """The run, and the classifier's EMA and training weights as they were in memory at its end."""
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    in_memory = {}
    save_final = ClassifierTrainingRun._save_final

    def save_final_and_keep_weights(run):
        save_final(run)
        model = run.accelerator.unwrap_model(run.model)
        names = [name for name, _ in model.named_parameters()]
        in_memory["ema"] = dict(zip(names, [tensor.clone() for tensor in run.ema.shadow_params]))
        in_memory["training"] = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(ClassifierTrainingRun, "_save_final", save_final_and_keep_weights)
        train(resume_flags(output_dir, model_config))
    return output_dir, in_memory


def saved_weights(output_dir) -> dict:
    return {
        "training": load_file(output_dir / "checkpoint-6" / "model.safetensors"),
        "ema": load_file(output_dir / "diffusion_pytorch_model.safetensors"),
    }


# ----- what a run saves -----
def test_saved_classifier_loads_with_the_ema_weights_it_had_in_memory_and_its_class_names(uninterrupted):
    output_dir, in_memory = uninterrupted
    loaded = DDPMClassifier2DModel.from_pretrained(output_dir)
    for name, tensor in loaded.named_parameters():
        assert torch.equal(tensor, in_memory["ema"][name]), name
    assert any(not torch.equal(in_memory["ema"][name], in_memory["training"][name]) for name in in_memory["ema"])
    assert loaded.config.num_classes == 10 and loaded.config.num_train_timesteps == 1000
    assert loaded.config.sample_size == 8 and loaded.config.dropout == 0.1
    assert loaded.config.id2label == {str(digit): str(digit) for digit in range(10)}


def test_saved_classifier_loads_with_diffusers_automodel_from_its_own_code_file(uninterrupted):
    output_dir, in_memory = uninterrupted
    assert (output_dir / "classifier_2d.py").read_text() == Path(
        inspect.getsourcefile(DDPMClassifier2DModel)
    ).read_text()
    remote = AutoModel.from_pretrained(str(output_dir), trust_remote_code=True)
    assert type(remote).__module__.endswith("classifier_2d") and not type(remote).__module__.startswith("hf_ddpm")
    remote_weights = dict(remote.named_parameters())
    assert all(torch.equal(remote_weights[name], tensor) for name, tensor in in_memory["ema"].items())


def test_model_card_says_what_the_classifier_is_for_and_its_accuracy(uninterrupted):
    card = (uninterrupted[0] / "README.md").read_text()
    assert "noise-aware classifier for classifier guidance" in card
    assert "`linear` schedule of 1000 steps" in card and "## Accuracy" in card
    assert "| q4 | 750 to 999 |" in card and "| clean | 0 |" in card
    assert "prediction_type" not in card  # the diffusion model's flags, which a classifier run refuses


def test_accuracy_is_measured_clean_and_in_each_noise_quarter(uninterrupted):
    report = json.loads((uninterrupted[0] / "evaluation" / "classifier_accuracy.json").read_text())
    assert list(report["accuracy"]) == ["clean", *QUARTERS]
    assert all(0.0 <= value <= 1.0 for value in report["accuracy"].values())
    assert report["timesteps"] == {
        "clean": [0, 1],
        "q1": [0, 250],
        "q2": [250, 500],
        "q3": [500, 750],
        "q4": [750, 1000],
    }
    assert report["step"] == 6 and report["num_images"] == 64 and report["classifier_noise"] == "uniform"


def test_tensorboard_gets_the_loss_and_the_accuracy_of_each_noise_quarter_every_step(uninterrupted):
    events = read_events(uninterrupted[0])
    assert [event.step for event in events.Scalars("loss")] == [1, 2, 3, 4, 5, 6]
    for quarter in QUARTERS:  # a quarter that none of a step's 16 images fell in is left out of that step
        steps = [event.step for event in events.Scalars(f"accuracy_{quarter}")]
        assert steps and set(steps) <= {1, 2, 3, 4, 5, 6}
    assert [event.step for event in events.Scalars("final/accuracy_clean")] == [6]


# ----- exact resume -----
def test_classifier_run_stopped_after_a_checkpoint_and_resumed_ends_bitwise_equal_to_an_uninterrupted_run(
    uninterrupted, model_config, tmp_path, monkeypatch
):
    output_dir = tmp_path / "run"
    save_checkpoint = train_script.save_checkpoint

    def crash_after_checkpoint_2(accelerator, directory, step, total_limit):
        save_checkpoint(accelerator, directory, step, total_limit)
        if step == 2:
            raise SimulatedCrash

    with monkeypatch.context() as patched:
        patched.setattr(train_script, "save_checkpoint", crash_after_checkpoint_2)
        with pytest.raises(SimulatedCrash):
            train(resume_flags(output_dir, model_config))
    assert not (output_dir / "checkpoint-4").exists()
    train(resume_flags(output_dir, model_config) + ["--resume_from_checkpoint", "latest"])
    assert_bitwise_equal(saved_weights(output_dir), saved_weights(uninterrupted[0]))
    accuracy = [
        json.loads((run / "evaluation" / "classifier_accuracy.json").read_text())
        for run in (output_dir, uninterrupted[0])
    ]
    assert accuracy[0] == accuracy[1]


# ----- the clean-image baseline -----
def test_uniform_noise_is_the_forward_process_at_a_uniform_timestep_and_none_is_the_clean_image_at_zero():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    clean = torch.rand(4096, 1, 2, 2) * 2 - 1
    noisy, timesteps = classifier_inputs(clean, scheduler, torch.Generator().manual_seed(3), "uniform")
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(clean.shape, generator=generator)
    assert torch.equal(timesteps, torch.randint(0, 1000, (4096,), generator=generator))
    assert torch.equal(noisy, scheduler.add_noise(clean, noise, timesteps))
    assert timesteps.min() < 10 and timesteps.max() > 990  # the whole schedule, not a part of it
    counts = torch.bincount(timesteps * 4 // 1000, minlength=4)
    assert (counts > 4096 / 4 * 0.9).all()

    noisy, timesteps = classifier_inputs(clean, scheduler, torch.Generator().manual_seed(3), "none")
    assert torch.equal(noisy, clean) and torch.equal(timesteps, torch.zeros(4096, dtype=torch.long))


def test_a_classifier_noise_none_run_trains_on_clean_images_at_t0_and_is_measured_on_noisy_ones(tmp_path, monkeypatch):
    seen = []
    forward = DDPMClassifier2DModel.forward

    def forward_spy(model, sample, timestep, return_dict=True):
        if model.training:
            seen.append(timestep.clone())
        return forward(model, sample, timestep, return_dict)

    monkeypatch.setattr(DDPMClassifier2DModel, "forward", forward_spy)
    train(classifier_flags(tmp_path / "run", "--classifier_noise", "none", "--max_train_steps", "3"))
    assert len(seen) == 3 and all(torch.equal(t, torch.zeros(8, dtype=torch.long)) for t in seen)
    report = json.loads((tmp_path / "run" / "evaluation" / "classifier_accuracy.json").read_text())
    assert report["classifier_noise"] == "none" and list(report["accuracy"]) == ["clean", *QUARTERS]
    assert "clean images only" in (tmp_path / "run" / "README.md").read_text()


def test_accuracy_counts_fall_in_the_quarter_of_their_timestep():
    assert [quarter_bounds(q, 1000) for q in range(4)] == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert [quarter_bounds(q, 10) for q in range(4)] == [(0, 3), (3, 5), (5, 8), (8, 10)]
    timesteps = torch.tensor([0, 249, 250, 999, 998])
    logits = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1])] * 5
    labels = torch.tensor([0, 0, 2, 0, 0])
    counts = correct_by_quarter(logits, labels, timesteps, 1000)
    assert counts.tolist() == [[1, 1, 0, 1], [2, 1, 0, 2]]


# ----- presets -----
def test_classifier_presets_build_at_their_sizes_and_take_the_data_and_schedule_from_the_run():
    keys = read_model_config(None, task="classifier")
    assert keys == CLASSIFIER_PRESETS["small"]
    config = classifier_config_from(keys, resolution=28, channels=1, num_classes=10, num_train_timesteps=1000)
    DDPMClassifier2DModel(**config)
    with pytest.raises(ValueError, match="--model_config sets num_train_timesteps=500 but the data gives 1000"):
        classifier_config_from(
            {"num_train_timesteps": 500}, resolution=8, channels=1, num_classes=10, num_train_timesteps=1000
        )
    with pytest.raises(ValueError, match=r"presets \['small', 'tiny'\] or a JSON file of DDPMClassifier2DModel"):
        read_model_config("digits", task="classifier")


# ----- what is refused, before any work -----
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--task", "classifier", "--eval_steps", "5"], "--task classifier .* no use for --eval_steps"),
        (["--task", "classifier", "--unconditional"], "no use for --unconditional"),
        (["--task", "classifier", "--class_conditional"], "no use for --class_conditional"),
        (["--task", "classifier", "--prediction_type", "v_prediction"], "no use for --prediction_type"),
        (["--task", "classifier", "--snr_gamma", "5"], "no use for --snr_gamma"),
        (["--task", "classifier", "--guidance_scale", "2", "--cond_drop_prob=0"], "--cond_drop_prob, --guidance_scale"),
        (["--task", "classifier", "--save_images_steps", "5"], "no use for --save_images_steps"),
        (["--task", "classifier", "--keep_best_checkpoint", "fid"], "no use for --keep_best_checkpoint"),
        (["--task", "classifier", "--eval_metrics", "fid"], "no use for --eval_metrics"),
        (["--task", "classifier", "--eval_num_samples", "0"], "--eval_num_samples must be at least 1"),
        (["--classifier_noise", "none"], "--classifier_noise is for --task classifier"),
        (["--task", "classifier", "--classifier_noise", "some"], "--classifier_noise: invalid choice"),
    ],
)
def test_flags_a_classifier_run_cannot_use_are_refused_naming_them(flags, message, capsys):
    with pytest.raises(SystemExit):
        train_script.parse_args(["--dataset_name", "digits", *flags])
    assert re.search(message, capsys.readouterr().err)


def test_unlabelled_data_is_refused_for_the_classifier_before_training(tmp_path):
    (tmp_path / "flat").mkdir()
    for index in range(4):
        PIL.Image.new("L", (8, 8), color=index * 60).save(tmp_path / "flat" / f"{index}.png")
    flags = classifier_flags(tmp_path / "run")
    flags[flags.index("--dataset_name") : flags.index("--dataset_name") + 2] = [
        "--train_data_dir",
        str(tmp_path / "flat"),
    ]
    flags[flags.index("--max_train_samples") + 1] = "4"
    flags[flags.index("--train_batch_size") + 1] = "2"
    with pytest.raises(ValueError, match="--task classifier needs class labels of at least 2 classes, but .* has none"):
        train(flags)
    assert_nothing_trained(tmp_path / "run")


def test_a_classifier_run_is_refused_where_another_run_saved_its_classifier_or_a_unet(uninterrupted, tmp_path):
    with pytest.raises(ValueError, match=r"holds another run \(.*config\.json.*classifier_2d\.py"):
        train(classifier_flags(uninterrupted[0]))
    diffusion = tmp_path / "diffusion"
    train(
        ["--dataset_name", "digits", "--max_train_samples", "64", "--resolution", "8", "--model_config", "tiny"]
        + ["--train_batch_size", "8", "--output_dir", str(diffusion), "--report_to", "none", "--max_train_steps", "1"]
        + ["--checkpointing_steps", "1", "--save_images_steps", "1000", "--num_inference_steps", "2"]
    )
    with pytest.raises(
        ValueError, match="holds a classifier of another configuration .*num_classes: saved None, now 10"
    ):
        train(classifier_flags(diffusion, "--resume_from_checkpoint", "latest"))


def test_push_to_hub_uploads_the_classifier_and_it_loads_from_the_repository(hub_server, tmp_path, monkeypatch):
    output_dir, repo_id = tmp_path / "run", f"{hub_server.user}/classifier-tiny"
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    train(classifier_flags(output_dir, "--max_train_steps", "2", "--push_to_hub", "--hub_model_id", repo_id))
    files = hub_server.repo_files(repo_id)
    assert {"config.json", "diffusion_pytorch_model.safetensors", "classifier_2d.py", "README.md"} <= set(files)
    assert not [path for path in files if path.startswith(("checkpoint-", "logs/"))]
    weights = "diffusion_pytorch_model.safetensors"
    assert files[weights] == (output_dir / weights).read_bytes()
    loaded = DDPMClassifier2DModel.from_pretrained(repo_id)
    local = DDPMClassifier2DModel.from_pretrained(output_dir)
    for (name, tensor), (_, expected) in zip(loaded.named_parameters(), local.named_parameters()):
        assert torch.equal(tensor, expected), name
    for path in output_dir.rglob("*"):  # the token is never written anywhere
        assert not path.is_file() or hub_server.token.encode() not in path.read_bytes(), path
