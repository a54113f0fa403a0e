"""The whole journey in one command: train a class-conditional diffusion model on handwritten digits, sample a grid
of every digit with classifier-free guidance, and measure the samples against real digits.

    python -m hf_ddpm.demo

It trains on scikit-learn's 8x8 digits (no download), shown at 16x16, in a few minutes on a 2-core CPU; then draws 10
samples of each digit (DPM-Solver++ 15 steps, guidance 1.2) from the saved pipeline and writes them as a grid (one row
per digit) and as a GIF of the denoising. Last it measures 898 samples at that guidance scale, as many as the held-out
half of the real digits: the share that a classifier trained on real digits reads as the digit asked for, and the
Fréchet distance to real digits in an offline digits feature space beside its real-vs-real floor (the same distance
between the two halves of the real digits), with precision and recall; and it sweeps a few guidance scales into a
trade-off plot. It trains on the held-out half only, so that the samples are measured against real digits the model
never saw; `--no-exclude_eval_reference` trains on all 1,797, the reference half included.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass

import torch

from hf_ddpm.evaluation import EvaluationResult, evaluate, write_report
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg import check_guidance_interval
from hf_ddpm.sampling import SCHEDULER_NAMES, SCHEDULERS, save_grid_and_gif
from hf_ddpm.training.train import main as train
from hf_ddpm.training_utils import cpu_threads_per_process

DIGITS = list(range(10))
# What the demo aims for at its guidance scale: samples read as the digit asked for, and a Fréchet distance to the
# real digits within this factor of the distance between two halves of the real digits.
TARGET_AGREEMENT = 0.98
TARGET_FD_RATIO = 1.5
# The real digits split into a reference half (899) and a held-out half (898); measuring as many samples as the
# held-out half compares the model and the floor at the same sample count, and an evaluation can measure no more.
EVAL_SAMPLES = 898
SWEEP_GUIDANCE_SCALES = (1.0, 1.5, 2.0)


@dataclass
class DemoResult:
    """What the demo measured: `row` is the evaluation at the demo's guidance scale (agreement, fd_digits with
    fd_digits_floor, precision, recall, ...), `evaluation` the whole guidance sweep, `seconds` the time of each part."""

    row: dict
    evaluation: EvaluationResult
    seconds: dict

    @property
    def agreement(self) -> float:
        return self.row["agreement"]

    @property
    def fd_ratio(self) -> float:
        return self.row["fd_digits"] / self.row["fd_digits_floor"]

    @property
    def met_targets(self) -> bool:
        return self.agreement >= TARGET_AGREEMENT and self.fd_ratio <= TARGET_FD_RATIO


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="digits-demo", help="Where the pipeline, grid, GIF and evaluation go.")
    parser.add_argument("--resolution", type=int, default=16, help="Training (and sample) image side.")
    parser.add_argument("--model_config", default="digits", help="UNet preset or JSON file (see the training script).")
    parser.add_argument("--max_train_steps", type=int, default=3000, help="Optimizer steps.")
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--samples_per_digit", type=int, default=10, help="Images per digit in the grid.")
    parser.add_argument("--guidance_scale", type=float, default=1.2,
                        help="Classifier-free guidance of the grid and of the headline evaluation.")
    parser.add_argument("--scheduler", default="dpm", choices=sorted(SCHEDULERS),
                        help="The pipeline's sampler, of the grid and the evaluation (dpm: DPM-Solver++ 2M).")
    # DPM-Solver++ reaches DDIM 50's Fréchet distance (within 5%) from 8 steps on this model, and at 15 is within 2%
    # of 20 steps (README, "How few steps"); fewer steps cost agreement at the demo's low guidance.
    parser.add_argument("--num_inference_steps", type=int, default=15, help="Sampling steps.")
    parser.add_argument("--guidance_interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="Guide only the steps with LOW <= t / training steps <= HIGH, in the grid and the "
                             "evaluation (default: every step).")
    parser.add_argument("--eval_num_samples", type=int, default=EVAL_SAMPLES,
                        help="Images per guidance scale in the evaluation (at least 10: one per digit).")
    parser.add_argument("--sweep_guidance_scales", type=float, nargs="*", default=list(SWEEP_GUIDANCE_SCALES),
                        help="Guidance scales that the evaluation sweeps besides --guidance_scale (none: just that).")
    parser.add_argument("--exclude_eval_reference", action=argparse.BooleanOptionalAction, default=True,
                        help="Train on the held-out half of the digits only (898), so that the evaluation compares "
                             "samples with real digits the model never saw. --no-exclude_eval_reference trains on all "
                             "1,797, the evaluation's reference half included: its distances then flatter the model.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)  # fmt: skip
    for name in ["resolution", "max_train_steps", "train_batch_size", "samples_per_digit", "num_inference_steps"]:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if not len(DIGITS) <= args.eval_num_samples <= EVAL_SAMPLES:
        parser.error(f"--eval_num_samples must be at least {len(DIGITS)} (one per digit) and at most "
                     f"{EVAL_SAMPLES} (the held-out real digits), got {args.eval_num_samples}.")  # fmt: skip
    if not args.learning_rate > 0:
        parser.error(f"--learning_rate must be positive, got {args.learning_rate}.")
    if args.guidance_interval is not None:
        args.guidance_interval = tuple(args.guidance_interval)
        try:
            check_guidance_interval(args.guidance_interval)
        except ValueError:
            parser.error(f"--guidance_interval must be LOW HIGH with 0 <= LOW < HIGH <= 1, got "
                         f"{args.guidance_interval}.")  # fmt: skip
    scales_by_flag = {"--guidance_scale": [args.guidance_scale], "--sweep_guidance_scales": args.sweep_guidance_scales}
    for flag, scales in scales_by_flag.items():
        for scale in scales:
            if not 0 <= scale < math.inf:
                parser.error(f"{flag} must be finite numbers >= 0, got {scale}.")
    return args


def training_flags(args: argparse.Namespace) -> list[str]:
    """The training run of the demo, as `accelerate launch training/train.py` flags."""
    steps = args.max_train_steps
    return [
        "--dataset_name", "digits",
        "--resolution", str(args.resolution),
        "--model_config", args.model_config,
        "--output_dir", args.output_dir,
        "--overwrite_output_dir",
        "--seed", str(args.seed),
        "--train_batch_size", str(args.train_batch_size),
        "--max_train_steps", str(steps),
        "--learning_rate", str(args.learning_rate),
        "--lr_scheduler", "cosine",
        "--lr_warmup_steps", str(max(1, steps // 24)),
        # The cosine schedule of Nichol & Dhariwal 2021: the linear one leaves under 8% of the signal (alpha_bar)
        # from step 500 of 1000 on, the cosine one 49%, so fewer steps are spent on images already drowned in noise.
        # At the same training steps and guidance it lowers the Fréchet distance of the samples by about 30%.
        "--beta_schedule", "squaredcos_cap_v2",
        # v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 keeps the x0 estimates of the first, noisiest steps in
        # range, where epsilon prediction divides its error by sqrt(alpha_bar) ~ 0.007: with epsilon prediction a
        # few samples in ten end up speckled with noise.
        "--prediction_type", "v_prediction",
        "--use_ema",
        "--checkpointing_steps", str(steps),
        "--save_images_steps", str(max(1, steps // 2)),
        "--eval_batch_size", "20",
        # The pipeline's sampler, and the training previews at the demo's guidance scale and step count.
        "--scheduler", args.scheduler,
        "--guidance_scale", str(args.guidance_scale),
        "--num_inference_steps", str(args.num_inference_steps),
    ] + (["--exclude_eval_reference"] if args.exclude_eval_reference else [])  # fmt: skip


def main(argv: list[str] | None = None) -> DemoResult:
    """Runs the demo; returns what it measured at its guidance scale, the sweep, and the time of each part."""
    args = parse_args(argv)
    started = time.perf_counter()
    train(training_flags(args))
    trained = time.perf_counter()

    # Training picked its torch threads from the cores idle when it started; sampling picks again, as busy as the
    # machine is now (a thread that shares its core with another busy process slows every step down).
    torch.set_num_threads(cpu_threads_per_process(1, 0))
    pipe = DDPMCFGPipeline.from_pretrained(args.output_dir)
    pipe.set_progress_bar_config(disable=True)
    sampler = f"{SCHEDULER_NAMES[args.scheduler]} {args.num_inference_steps} steps"
    if args.guidance_interval is not None:
        sampler += f", guided at t/T in [{args.guidance_interval[0]:g}, {args.guidance_interval[1]:g}]"
    grid_path = os.path.join(args.output_dir, "digits_grid.png")
    gif_path = os.path.join(args.output_dir, "digits_denoising.gif")
    save_grid_and_gif(
        pipe, grid_path, gif_path, seed=args.seed, class_labels=DIGITS, batch_size=args.samples_per_digit,
        guidance_scale=args.guidance_scale, num_inference_steps=args.num_inference_steps,
        guidance_interval=args.guidance_interval,
    )  # fmt: skip
    sampled = time.perf_counter()

    # One sweep, with the same seeds at every scale; the demo's own scale is one of its rows. The report writes the
    # plots that the sweep has the axes for (no trade-off plot of one scale): the summary names those it wrote.
    evaluation_dir = os.path.join(args.output_dir, "evaluation")
    scales = sorted({args.guidance_scale, *args.sweep_guidance_scales})
    evaluation = evaluate(
        pipe, "digits", num_samples=args.eval_num_samples, guidance_scales=scales, steps=[args.num_inference_steps],
        schedulers=[args.scheduler], guidance_intervals=[args.guidance_interval], batch_size=300, seed=args.seed,
    )  # fmt: skip
    report = write_report(evaluation, evaluation_dir)
    finished = time.perf_counter()
    row = next(row for row in evaluation.rows if row["guidance_scale"] == args.guidance_scale)
    seconds = {
        "training": trained - started, "grid_and_gif": sampled - trained, "evaluation": finished - sampled,
        "total": finished - started,
    }  # fmt: skip
    result = DemoResult(row=row, evaluation=evaluation, seconds=seconds)
    print("\n" + summary(args, result, sampler, grid_path, gif_path, evaluation_dir, list(report.values())))
    return result


def summary(
    args, result: DemoResult, sampler: str, grid_path: str, gif_path: str, evaluation_dir: str, report: list[str]
) -> str:
    """What the demo wrote where, and what it measured; `report` is the paths of the evaluation's files."""
    row, seconds, n = result.row, result.seconds, result.row["num_samples"]
    floor_n = result.evaluation.floors.get("floor_num_samples", n)
    lines = [
        f"Trained in {seconds['training']:.0f} s ({args.max_train_steps} steps, "
        f"{args.max_train_steps / seconds['training']:.1f} steps/s); grid and GIF in {seconds['grid_and_gif']:.0f} s; "
        f"evaluation in {seconds['evaluation']:.0f} s; {seconds['total']:.0f} s in all.",
        f"Pipeline:   {args.output_dir}",
        f"Grid:       {grid_path}  (one row per digit, {sampler}, guidance {args.guidance_scale:g})",
        f"Denoising:  {gif_path}",
        f"Evaluation: {evaluation_dir}  ({', '.join(os.path.basename(path) for path in report)})",
        "",
        f"At guidance {args.guidance_scale:g}, {n} samples ({sampler}), against real digits that the model "
        + ("never saw:" if args.exclude_eval_reference else "was trained on (--no-exclude_eval_reference):"),
        f"  label accuracy  {row['agreement']:.1%} read as the digit asked for (target {TARGET_AGREEMENT:.0%})",
        f"  fd_digits       {row['fd_digits']:.2f} = {result.fd_ratio:.2f}x the real-vs-real floor "
        f"{row['fd_digits_floor']:.2f} ({floor_n} held-out real digits; target at most {TARGET_FD_RATIO:g}x)",
        f"  precision       {row['precision']:.2f} (real-vs-real {row['precision_floor']:.2f}), recall "
        f"{row['recall']:.2f} (real-vs-real {row['recall_floor']:.2f})",
        f"  targets         {'met' if result.met_targets else 'NOT met'}",
        "",
        "Guidance sweep (same seeds; label accuracy, fd_digits and its ratio to the floor, precision, recall):",
    ]
    for other in result.evaluation.rows:
        mark = "  <- the demo's" if other is row else ""
        lines.append(
            f"  guidance {other['guidance_scale']:<4g} {other['agreement']:6.1%}  fd {other['fd_digits']:6.2f} "
            f"({other['fd_digits'] / other['fd_digits_floor']:4.2f}x)  P {other['precision']:.2f}  "
            f"R {other['recall']:.2f}{mark}"
        )
    lines.append(f"Label accuracy is judged by a {result.evaluation.info['judge']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
