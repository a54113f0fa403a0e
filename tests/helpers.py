"""What several test files share: the scheduler test grid and its stand-in model, a tiny training run, a way to
hide hf_ddpm from a subprocess, and distributed launches on a free port."""

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import diffusers
import torch

SCHEDULES = ["linear", "scaled_linear", "cosine", "sigmoid"]
PREDICTION_TYPES = ["epsilon", "sample", "v_prediction"]
SPACINGS = ["linspace", "leading", "trailing"]
# (num_train_timesteps, num_inference_steps)
STEP_COUNTS = [(1000, 50), (1000, 7), (1000, 1), (200, 13), (200, 3)]
TOLERANCE = dict(atol=2e-5, rtol=0)

DATA_MEAN = torch.linspace(-0.8, 0.8, 16).reshape(1, 1, 4, 4)


def gaussian_denoiser(alphas_cumprod, prediction_type, learned_variance=False):
    """A stand-in for a trained network: the ideal denoiser of data x_0 ~ N(DATA_MEAN, 0.25 I) plus a small non-linear
    term, answering in the requested parameterisation. Smooth and well conditioned like a real model, so samplers that
    agree step by step also agree over a whole loop."""

    def model(x, t):
        alpha_bar = alphas_cumprod[int(t)]
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        x0 = DATA_MEAN + a * 0.25 / (0.25 * alpha_bar + 1 - alpha_bar) * (x - a * DATA_MEAN) + 0.05 * torch.tanh(x)
        eps = (x - a * x0) / s
        output = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0}[prediction_type]
        if learned_variance:  # extra channels in (0.1, 0.9): a variance for "learned", v for "learned_range"
            output = torch.cat([output, 0.5 + 0.4 * torch.tanh(x)], dim=1)
        return output

    return model


def public_config(config) -> dict:
    """A config without its private keys ("_class_name", "_diffusers_version", ...): what two classes can share."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


def tiny_diffusers_unet() -> diffusers.UNet2DModel:
    """diffusers' own UNet at 8x8x1, small enough to run a whole diffusers pipeline in a test."""
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


# Written as sitecustomize.py into a folder on a subprocess's PYTHONPATH: `import hf_ddpm` then fails there, as in
# an environment where only diffusers is installed.
BLOCK_HF_DDPM = """
import sys

class BlockHfDdpm:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_ddpm" or name.startswith("hf_ddpm."):
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, BlockHfDdpm())
"""


def tiny_flags(output_dir, *extra: str) -> list[str]:
    """Training flags for a few-second run: 64 digits at 8x8, the tiny UNet, no previews or checkpoints."""
    return [
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
        "--num_inference_steps",
        "2",
        "--eval_batch_size",
        "10",
        "--save_images_steps",
        "1000",
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


# What a launcher or torch.distributed prints when another process took its port first.
ADDRESS_IN_USE = re.compile(r"address already in use|EADDRINUSE|another process is utilizing it", re.IGNORECASE)


def free_port() -> int:
    """A port that nothing listens on now, drawn below Linux's ephemeral range (32768-60999), where the kernel would
    hand it to outgoing connections meanwhile. Another process may still take it: `launch_with_free_port` retries."""
    while True:
        port = random.randrange(20000, 32768)
        with socket.socket() as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return port


def launch_with_free_port(
    commands: Callable[[int], list[list[str]]],
    *,
    env: dict | None = None,
    cwd: str | None = None,
    timeout: float = 600,
    attempts: int = 5,
) -> list[subprocess.CompletedProcess]:
    """Runs the command lines `commands(port)` at once (one `accelerate launch` per machine, say) on a free port and
    returns their results, in order, with stdout and stderr as text.

    A port free when drawn can be taken before the launcher binds it; then the launch fails with "address already
    in use", every command is stopped (a machine left waiting for the missing one would wait long) and all run again
    on another port. A command that fails otherwise stops the others after a minute's grace; one still running after
    `timeout` seconds is stopped, with returncode -9 and a line saying so at the end of its stderr. Each command runs
    in a session of its own, so that stopping it also stops the processes it started.
    """
    for attempt in range(attempts):
        with tempfile.TemporaryDirectory() as logs:
            runs = []
            for index, command in enumerate(commands(free_port())):
                out, err = Path(logs, f"{index}.out"), Path(logs, f"{index}.err")
                with open(out, "w") as stdout, open(err, "w") as stderr:
                    process = subprocess.Popen(
                        command, env=env, cwd=cwd, stdout=stdout, stderr=stderr, start_new_session=True
                    )
                runs.append((process, out, err))
            timed_out = _wait_for_all(runs, timeout)
            results = []
            for process, out, err in runs:
                stopped = process.poll() is None
                with contextlib.suppress(ProcessLookupError):  # also what it started and left behind, if anything
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                note = f"\n[stopped after {timeout} s]" if stopped and timed_out else "\n[stopped]" if stopped else ""
                stderr = err.read_text() + note
                results.append(subprocess.CompletedProcess(process.args, process.returncode, out.read_text(), stderr))
        port_taken = any(run.returncode != 0 and ADDRESS_IN_USE.search(run.stdout + run.stderr) for run in results)
        if not port_taken or attempt == attempts - 1:
            return results


REPOSITORY = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))


def train_on_two_processes(flags: list[str], env: dict | None = None, timeout: float = 600):
    """`accelerate launch --multi_gpu --num_processes 2 training/train.py FLAGS` (CPU processes over gloo) on a free
    port; the completed run."""
    [run] = launch_with_free_port(
        lambda port: [
            [
                ACCELERATE,
                "launch",
                "--multi_gpu",
                "--num_processes",
                "2",
                "--main_process_port",
                str(port),
                str(REPOSITORY / "training" / "train.py"),
                *flags,
            ]
        ],
        env=env,
        cwd=str(REPOSITORY),
        timeout=timeout,
    )
    return run


def _wait_for_all(runs: list[tuple], timeout: float, grace: float = 60) -> bool:
    """Waits until every process has ended, or one has failed and the others had `grace` seconds to end (none when
    it failed for its port); returns whether `timeout` seconds passed first."""
    deadline, failed_at = time.monotonic() + timeout, None
    while any(process.poll() is None for process, _, _ in runs):
        now = time.monotonic()
        if now > deadline:
            return True
        failed = [err for process, _, err in runs if process.poll() not in (None, 0)]
        if failed and any(ADDRESS_IN_USE.search(err.read_text()) for err in failed):
            return False
        if failed and failed_at is None:
            failed_at = now
        if failed_at is not None and now - failed_at > grace:
            return False
        time.sleep(0.2)
    return False
