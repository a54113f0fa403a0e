"""Long runs that survive: a signal at any moment ends with a complete checkpoint and resumes to bitwise the same
weights; a full disk leaves nothing half-written; a damaged checkpoint is passed over; a non-finite loss stops the
run before its weights are saved; usage errors end with a message, not a traceback.

Signals and file-size limits are real (a subprocess gets them), not mocked."""

import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from helpers import ACCELERATE, free_port, tiny_flags, train_on_two_processes
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.stopping import PREEMPTED_EXIT_STATUS, TrainingStopped
from hf_ddpm.training import train as train_script
from hf_ddpm.training.checkpoints import checkpoint_damage
from test_train import train

pytestmark = [pytest.mark.slow]

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPT = REPOSITORY / "training" / "train.py"
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def start(flags, **popen_kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *flags],
        env=env,
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen_kwargs,
    )


def wait_for(process: subprocess.Popen, text: str, timeout: float = 300) -> str:
    """Reads the process's output until `text` appears; returns what was read."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    process.kill()
    raise AssertionError(f"{text!r} never came:\n{''.join(seen)[-3000:]}")


def same_weights(a, b) -> bool:
    first, second = load_file(Path(a) / WEIGHTS), load_file(Path(b) / WEIGHTS)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


LONG = ("--max_train_steps", "120", "--use_ema")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train(tiny_flags(tmp_path_factory.mktemp("whole") / "run", *LONG))


@pytest.mark.parametrize(
    "moment, extra, delay, signal_name",
    [
        ("during the steps", (), 1.0, "SIGTERM"),
        (
            "during a preview",
            ("--save_images_steps", "3", "--num_inference_steps", "40", "--eval_batch_size", "40"),
            2.0,
            "SIGUSR1",
        ),
        ("during a checkpoint save", ("--checkpointing_steps", "1"), 1.5, "SIGINT"),
    ],
)
def test_a_signal_at_any_moment_saves_a_checkpoint_and_resuming_ends_bitwise_equal(
    uninterrupted, tmp_path, moment, extra, delay, signal_name
):
    output_dir = tmp_path / "run"
    flags = tiny_flags(output_dir, *LONG, *extra)
    process = start(flags)
    wait_for(process, "optimizer steps")
    time.sleep(random.Random(f"{moment}{signal_name}").uniform(0.2, delay))  # a seeded "random" moment
    process.send_signal(getattr(signal, signal_name))
    output, _ = process.communicate(timeout=300)
    assert process.returncode == PREEMPTED_EXIT_STATUS, output[-3000:]
    assert f"Stopped by {signal_name} after step" in output
    assert "Resume with the same flags and --resume_from_checkpoint latest" in output
    checkpoints = sorted(output_dir.glob("checkpoint-*"))
    assert checkpoints and not list(output_dir.glob("*.partial"))
    assert checkpoint_damage(str(checkpoints[-1])) is None
    step = int(output.split("after step ")[1].split()[0])
    assert step < 120 and (output_dir / f"checkpoint-{step}").is_dir()

    # Previews and checkpoints do not touch the weights: the rest of the run goes without them, to be quick.
    train(
        flags + ["--resume_from_checkpoint", "latest", "--save_images_steps", "1000", "--checkpointing_steps", "1000"]
    )
    assert same_weights(output_dir, uninterrupted)


def test_two_processes_stop_at_the_same_step_when_one_is_signalled(tmp_path):
    """SIGTERM to one worker: the trigger is reduced over the processes, both save one checkpoint of one step, and the
    run resumes from it to the end (two steps on, for the time)."""
    output_dir = tmp_path / "run"
    flags = tiny_flags(output_dir, "--max_train_steps", "200", "--train_batch_size", "4")
    launcher = subprocess.Popen(
        launch_command(flags),
        cwd=REPOSITORY,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(launcher, "optimizer steps")
    time.sleep(1.0)
    workers = [p for p in psutil.Process(launcher.pid).children(recursive=True) if "train.py" in " ".join(p.cmdline())]
    assert len(workers) == 2
    workers[1].send_signal(signal.SIGTERM)
    output, _ = launcher.communicate(timeout=300)
    assert "Stopped by SIGTERM after step" in output or "Stopped by a signal to another process" in output, output
    steps = {line.split("after step ")[1].split()[0] for line in output.splitlines() if "after step " in line}
    assert len(steps) == 1, output  # both processes stopped at the same step
    step = int(steps.pop())
    checkpoint = output_dir / f"checkpoint-{step}"
    assert {"random_states_0.pkl", "random_states_1.pkl", "manifest.json"} <= set(os.listdir(checkpoint))
    assert checkpoint_damage(str(checkpoint)) is None

    resumed = train_on_two_processes(flags + ["--resume_from_checkpoint", "latest", "--max_train_steps", str(step + 2)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {checkpoint} at step {step}" in resumed.stderr
    assert (output_dir / "model_index.json").exists()


def launch_command(flags) -> list[str]:
    """Two CPU processes over gloo, as `accelerate launch --multi_gpu --num_processes 2` starts them."""
    return [
        ACCELERATE,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
        str(SCRIPT),
        *flags,
    ]


def limit_file_size(limit: int):
    def preexec():  # in the child: writes past `limit` bytes fail with EFBIG instead of killing it (SIGXFSZ)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_a_checkpoint_that_cannot_be_written_leaves_nothing_half_written_and_keeps_the_earlier_ones(tmp_path):
    output_dir = tmp_path / "run"
    flags = tiny_flags(output_dir, "--max_train_steps", "2", "--checkpointing_steps", "2")
    train(flags)
    biggest = max(path.stat().st_size for path in (output_dir / "checkpoint-2").iterdir())
    process = start(
        flags + ["--max_train_steps", "4", "--resume_from_checkpoint", "latest"],
        preexec_fn=limit_file_size(biggest - 1),
    )
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output[-3000:]
    assert "Could not write checkpoint-4" in output and "file-size limit" in output  # EFBIG, or torch's words
    assert f"the newest complete checkpoint is {output_dir / 'checkpoint-2'}" in output
    assert "Traceback" not in output
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    assert checkpoint_damage(str(output_dir / "checkpoint-2")) is None


def test_a_pipeline_that_cannot_be_written_leaves_the_previous_one_whole(tmp_path):
    output_dir = tmp_path / "run"
    train(tiny_flags(output_dir, "--max_train_steps", "2"))
    before = (output_dir / WEIGHTS).read_bytes()
    weights_size = len(before)
    process = start(
        tiny_flags(output_dir, "--max_train_steps", "3", "--overwrite_output_dir"),
        preexec_fn=limit_file_size(weights_size - 1),
    )
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1 and "Could not write the pipeline" in output, output[-3000:]
    assert not list(output_dir.glob(".pipeline*")) and not list(output_dir.rglob("*.replaced"))


def test_a_pipeline_save_killed_between_its_two_renames_does_not_block_the_next_save(tmp_path):
    output_dir = tmp_path / "run"
    train(tiny_flags(output_dir, "--max_train_steps", "1"))
    # What a save killed after moving the new unet into place, before deleting the old one, leaves behind.
    shutil.copytree(output_dir / "unet", output_dir / "unet.replaced")
    pipe = DDPMCFGPipeline.from_pretrained(output_dir)
    train_script.save_pipeline_atomically(pipe, str(output_dir))
    assert not list(output_dir.rglob("*.replaced"))
    assert DDPMCFGPipeline.from_pretrained(output_dir).unet.config == pipe.unet.config


def test_latest_passes_over_a_damaged_checkpoint_and_an_explicit_one_is_refused(tmp_path):
    output_dir = tmp_path / "run"
    flags = tiny_flags(output_dir, "--max_train_steps", "6", "--checkpointing_steps", "2")
    train(flags)
    weights = output_dir / "checkpoint-6" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    (output_dir / "checkpoint-4" / "optimizer.bin").unlink()  # a file missing
    with pytest.raises(ValueError, match=r"checkpoint-6' is damaged: model.safetensors has \d+ bytes instead of"):
        train(flags + ["--resume_from_checkpoint", str(output_dir / "checkpoint-6")])
    with pytest.warns(UserWarning) as warned:
        train(flags + ["--resume_from_checkpoint", "latest"])
    messages = [str(warning.message) for warning in warned]
    assert any("Skipping the damaged checkpoint" in m and "checkpoint-6: model.safetensors has" in m for m in messages)
    assert any("checkpoint-4: optimizer.bin is missing" in m for m in messages)
    # It resumed from checkpoint-2 and trained on: checkpoints 4 and 6 are whole again.
    assert checkpoint_damage(str(output_dir / "checkpoint-6")) is None
    assert checkpoint_damage(str(output_dir / "checkpoint-4")) is None


def test_a_non_finite_loss_stops_before_the_step_and_a_run_resumed_with_a_lower_learning_rate_trains_with_it(
    tmp_path, monkeypatch, caplog
):
    output_dir = tmp_path / "run"
    real_loss = train_script.training_loss
    calls = []

    def nan_at_the_third(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    flags = tiny_flags(output_dir, "--max_train_steps", "5", "--checkpointing_steps", "1")
    with monkeypatch.context() as patched:
        patched.setattr(train_script, "training_loss", nan_at_the_third)
        with pytest.raises(TrainingStopped, match=r"Step 3 has a non-finite loss \[nan\].*--learning_rate 0\.001: try"):
            train(flags)
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    # The advice holds: resumed with a tenth of the learning rate, the run trains with it, not the checkpoint's.
    with caplog.at_level("INFO"):
        train(flags + ["--resume_from_checkpoint", "latest", "--learning_rate", "1e-4", "--adam_beta1", "0.9"])
    assert "Resumed with --learning_rate: saved 0.001 -> now 0.0001" in caplog.text
    assert "Resumed with --adam_beta1/--adam_beta2: saved (0.95, 0.999) -> now (0.9, 0.999)" in caplog.text
    [group] = torch.load(output_dir / "checkpoint-4" / "optimizer.bin", weights_only=False)["param_groups"]
    assert (group["initial_lr"], tuple(group["betas"])) == (1e-4, (0.9, 0.999))
    assert group["lr"] == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi * 4 / 5)))  # the cosine schedule, at 4/5


def test_a_non_finite_gradient_is_left_to_fp16_grad_scaling_but_a_non_finite_loss_stops_the_run():
    # fp16's grad scaler doubles its scale until the gradients overflow, then skips that step and halves it.
    args = train_script.parse_args(tiny_flags("run"))
    finite_loss, infinite_norm = [torch.tensor(0.5)], torch.tensor(float("inf"))
    train_script.check_finite(finite_loss, infinite_norm, 3, args, grad_scaler=True)
    with pytest.raises(TrainingStopped, match="Step 3 has a non-finite gradient norm inf"):
        train_script.check_finite(finite_loss, infinite_norm, 3, args)
    with pytest.raises(TrainingStopped, match=r"Step 3 has a non-finite loss \[nan\]"):
        train_script.check_finite([torch.tensor(float("nan"))], torch.tensor(1.0), 3, args, grad_scaler=True)


def test_usage_errors_end_with_the_message_alone_and_status_2():
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset_name", "digits", "--resolution", "30", "--model_config", "small"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: --resolution 30 cannot be taken by this model")
