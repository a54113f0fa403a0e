"""Guidance in a limited interval (Kynkäänniemi et al. 2024): CFG on the steps whose noise level lies in the interval,
the conditional half alone elsewhere."""

import json

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

from hf_ddpm.cli import main as cli_main
from hf_ddpm.evaluation.results import best_guidance
from hf_ddpm.schedulers.scheduling_ddim import DDIMScheduler
from hf_ddpm.schedulers.scheduling_ddpm import DDPMScheduler
from test_evaluation import tiny_pipeline as evaluation_pipeline
from test_pipeline import TRAIN_STEPS, ForwardLog, reference_sample, tiny_pipeline

SCHEDULERS = {
    "ddim": lambda: DDIMScheduler(num_train_timesteps=TRAIN_STEPS, prediction_type="v_prediction"),
    "ddpm": lambda: DDPMScheduler(num_train_timesteps=TRAIN_STEPS),
    "dpm": lambda: DPMSolverMultistepScheduler(num_train_timesteps=TRAIN_STEPS),
    "euler": lambda: EulerDiscreteScheduler(num_train_timesteps=TRAIN_STEPS),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_guidance_interval_equals_a_loop_guiding_only_inside_it(name):
    pipe = tiny_pipeline(SCHEDULERS[name]())
    kwargs = dict(guidance_scale=3.0, num_inference_steps=5, output_type="pt")
    images = pipe([0, 2], guidance_interval=(0.2, 0.6), generator=torch.Generator().manual_seed(1), **kwargs).images
    expected = reference_sample(pipe.unet, SCHEDULERS[name](), [0, 2], 3, 3.0, 5, seed=1, guidance_interval=(0.2, 0.6))
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    guided_everywhere = pipe([0, 2], generator=torch.Generator().manual_seed(1), **kwargs).images
    assert (images - guided_everywhere).abs().max() > 1e-3  # the interval changed the images


def test_steps_outside_the_interval_run_only_the_conditional_half():
    pipe = tiny_pipeline()  # DDIM, 20 training steps: 4 steps at t = 15, 10, 5, 0, i.e. t/T = 0.75, 0.5, 0.25, 0
    log = ForwardLog(pipe.unet)
    pipe([0, 2], guidance_scale=3.0, num_inference_steps=4, guidance_interval=(0.25, 0.5))
    conditional, guided = (2, [0, 2]), (4, [0, 2, 3, 3])
    assert log.calls == [conditional, guided, guided, conditional]  # both ends of the interval are in it
    assert pipe.num_guided_steps == 2 and pipe.num_timesteps == 4


def test_the_whole_range_as_interval_is_plain_cfg():
    pipe = tiny_pipeline()
    kwargs = dict(class_labels=[1, 2], guidance_scale=2.0, num_inference_steps=4, output_type="pt")
    everywhere = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert pipe.num_guided_steps == 4
    whole_range = pipe(**kwargs, guidance_interval=(0.0, 1.0), generator=torch.Generator().manual_seed(0)).images
    assert pipe.num_guided_steps == 4
    assert torch.equal(everywhere, whole_range)


def test_an_interval_without_guidance_guides_no_step():
    pipe = tiny_pipeline()
    log = ForwardLog(pipe.unet)
    pipe([0], guidance_scale=1.0, num_inference_steps=3, guidance_interval=(0.0, 1.0))
    assert log.calls == [(1, [0])] * 3 and pipe.num_guided_steps == 0


@pytest.mark.parametrize(
    "interval",
    [
        (0.5, 0.5),
        (0.6, 0.2),
        (-0.1, 0.5),
        (0.2, 1.5),
        (0.1,),
        (0.1, 0.2, 0.3),
        0.5,
        "0.2 0.8",
        (True, 0.5),
        (float("nan"), 0.5),
        ("0.1", "0.5"),
    ],
)
def test_bad_guidance_intervals_raise_before_any_work(interval):
    pipe = tiny_pipeline()
    log = ForwardLog(pipe.unet)
    with pytest.raises(ValueError, match=r"`guidance_interval` must be None or a pair \(low, high\)"):
        pipe(0, guidance_scale=2.0, num_inference_steps=2, guidance_interval=interval)
    assert log.calls == []


def test_cli_evaluate_sweeps_intervals_and_counts_the_network_evaluations(tmp_path, capsys):
    evaluation_pipeline().save_pretrained(tmp_path / "model")  # DDIM, 50 training steps
    cli_main(
        [
            "evaluate",
            str(tmp_path / "model"),
            "--dataset",
            "digits",
            "--num-samples",
            "12",
            "--steps",
            "4",
            "--guidance-scale",
            "2",
            "--guidance-interval",
            "0",
            "1",
            "--guidance-interval",
            "0.3",
            "0.7",
            "--batch-size",
            "12",
            "--out",
            str(tmp_path / "eval"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--device",
            "cpu",
        ]
    )
    assert "interval" in capsys.readouterr().out
    rows = json.loads((tmp_path / "eval" / "metrics.json").read_text())["rows"]
    # 4 steps at t = 36, 24, 12, 0 (t/T = 0.72, 0.48, 0.24, 0): all four guided, or only t = 24.
    counts = [(row["guidance_interval"], row["unet_evals_per_image"], row["nfe_per_image"]) for row in rows]
    assert counts == [([0.0, 1.0], 4, 8), ([0.3, 0.7], 4, 5)]
    assert rows[0]["fd_digits"] != rows[1]["fd_digits"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["evaluate", str(tmp_path / "model"), "--dataset", "digits", "--guidance-interval", "0.7", "0.3"])
    assert exit_info.value.code == 2
    assert "--guidance-interval must be None or a pair (low, high)" in capsys.readouterr().err


def test_cli_evaluate_names_the_interval_of_each_best_guidance(tmp_path, capsys):
    evaluation_pipeline().save_pretrained(tmp_path / "model")
    cli_main(
        [
            "evaluate",
            str(tmp_path / "model"),
            "--dataset",
            "digits",
            "--num-samples",
            "12",
            "--steps",
            "3",
            "--guidance-scale",
            "1",
            "3",
            "--guidance-interval",
            "0",
            "1",
            "--guidance-interval",
            "0.2",
            "0.8",
            "--batch-size",
            "12",
            "--out",
            str(tmp_path / "eval"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path / "eval" / "metrics.json").read_text())["rows"]
    for interval, label in [([0.0, 1.0], "[0, 1]"), ([0.2, 0.8], "[0.2, 0.8]")]:
        best = best_guidance([row for row in rows if row["guidance_interval"] == interval], "fd_digits")
        assert f"best guidance for ddim, 3 steps, interval {label}: {best['guidance_scale']:g}\n" in printed
