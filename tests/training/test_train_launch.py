"""The training script under `accelerate launch`: as a module pushing to the Hub, and as a script on two processes."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import BLOCK_HF_DDPM, launch_with_free_port, tiny_flags
from hf_ddpm.pipelines import DDPMCFGPipeline

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACCELERATE = os.path.join(os.path.dirname(sys.executable), "accelerate")

SAMPLE_FROM_THE_HUB = """
import sys

import numpy as np
import torch
from diffusers import DiffusionPipeline

try:
    import hf_ddpm
    raise SystemExit("hf_ddpm should not be importable here")
except ImportError:
    pass
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
generators = [torch.Generator().manual_seed(i) for i in range(2)]
images = pipe(class_labels=[1, 7], guidance_scale=3.0, num_inference_steps=5, generator=generators, output_type="np")
np.save(sys.argv[2], images.images)
"""


def launch(arguments: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [ACCELERATE, "launch", *arguments],
        env=env or dict(os.environ),
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return run


def test_push_to_hub_uploads_the_pipeline_and_diffusers_alone_samples_the_same_images_from_it(hub_server, tmp_path):
    output_dir, repo_id = tmp_path / "run", f"{hub_server.user}/digits-tiny"
    # Our DDIM as the sampler, so that the scheduler's code file travels too (the default, DPM-Solver++, is diffusers').
    flags = tiny_flags(
        output_dir,
        "--max_train_steps",
        "3",
        "--checkpointing_steps",
        "2",
        "--push_to_hub",
        "--hub_model_id",
        repo_id,
        "--hub_private_repo",
        "--report_to",
        "tensorboard",
        "--scheduler",
        "ddim",
    )
    env = dict(os.environ, HF_TOKEN=hub_server.token)
    run = launch(["--num_processes", "1", "-m", "hf_ddpm.training.train", *flags], env=env)
    assert hub_server.token not in run.stdout + run.stderr  # the whole run's output, logs and progress included

    files = hub_server.repo_files(repo_id)
    assert {
        "model_index.json",
        "pipeline_ddpm_cfg.py",
        "README.md",
        "samples.png",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/unet_2d.py",
        "scheduler/scheduler_config.json",
        "scheduler/scheduling_ddim.py",
    } <= set(files)
    assert not [path for path in files if path.startswith(("checkpoint-", "logs/", "samples/"))]
    assert hub_server.repo_is_private(repo_id)
    assert hub_server.commit_messages(repo_id)[1:] == ["Step 2", "End of training"]
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert files[weights] == (output_dir / weights).read_bytes()
    for path in output_dir.rglob("*"):  # the token is never written anywhere
        assert not path.is_file() or hub_server.token.encode() not in path.read_bytes(), path

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_HF_DDPM)
    (tmp_path / "sample.py").write_text(SAMPLE_FROM_THE_HUB)
    env = dict(os.environ, PYTHONPATH=str(site), HF_HOME=str(tmp_path / "fresh_hf_home"), HF_TOKEN=hub_server.token)
    run = subprocess.run(
        [sys.executable, str(tmp_path / "sample.py"), repo_id, str(tmp_path / "hub.npy")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]

    local = DDPMCFGPipeline.from_pretrained(output_dir)
    local.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    expected = local(
        class_labels=[1, 7], guidance_scale=3.0, num_inference_steps=5, generator=generators, output_type="np"
    ).images
    np.testing.assert_array_equal(np.load(tmp_path / "hub.npy"), expected)


def test_two_cpu_processes_share_out_the_data_and_log_and_save_once(tmp_path):
    output_dir = tmp_path / "run"
    # 64 images in batches of 8 are 8 batches an epoch; two processes take 4 each, so one epoch is 4 steps.
    flags = tiny_flags(
        output_dir,
        "--num_epochs",
        "1",
        "--checkpointing_steps",
        "4",
        "--save_images_steps",
        "2",
        "--report_to",
        "tensorboard",
    )
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
                os.path.join("training", "train.py"),
                *flags,
            ]
        ],
        cwd=REPOSITORY,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]

    assert "2 process(es) x batch 8" in run.stderr and "4 optimizer steps (1 epochs)" in run.stderr
    checkpoint = output_dir / "checkpoint-4"
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= set(os.listdir(checkpoint))
    assert torch.load(checkpoint / "custom_checkpoint_0.pkl", weights_only=False)["global_step"] == 4
    assert sorted(os.listdir(output_dir / "samples")) == [
        "step-000002.gif",
        "step-000002.png",
        "step-000004.gif",
        "step-000004.png",
    ]
    events = EventAccumulator(str(output_dir / "logs" / "train_ddpm"))
    events.Reload()
    assert [event.step for event in events.Scalars("loss")] == [1, 2, 3, 4]
    assert len([name for name in os.listdir(output_dir / "logs" / "train_ddpm") if name.startswith("events")]) == 1

    pipe = DDPMCFGPipeline.from_pretrained(output_dir)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(class_labels=[0, 9], guidance_scale=2.0, num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
