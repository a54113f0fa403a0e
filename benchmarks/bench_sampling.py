"""How few UNet evaluations a trained digits model needs: quality against steps per scheduler, and guidance in a
limited interval, all measured with `evaluate` (same seeds and labels in every row).

1. Schedulers x steps at the demo's guidance scale: fd_digits beside its real-vs-real floor and beside DDIM with 50
   steps (the reference), agreement, UNet forwards per image (CFG's two halves in one batched forward) and network
   evaluations per image (nfe: the halves counted apart). Then the recommendation: the setting with the fewest UNet
   forwards whose fd_digits is within 5% of DDIM 50's, among those of at most 15 forwards.
2. Guidance scales with and without `guidance_interval`, at one scheduler and step count: the best (fd_digits,
   agreement) pair of each sweep (`best_guidance`: the lowest distance among the scales within a point of the top
   agreement) and its network evaluations per image.

Quality figures do not depend on how busy the machine is; the seconds do. Fréchet distances shrink as samples grow
(each row and the floor use the same count): compare rows of one run, and use as many samples as the held-out real
digits (898) for figures to publish.

    python -m hf_ddpm.demo                                            # trains digits-demo/
    python benchmarks/bench_sampling.py digits-demo --out sampling-eval   # the full sweep, 898 samples
    python benchmarks/bench_sampling.py digits-demo --num-samples 100 --schedulers ddim dpm --steps 5 --parts steps
    python benchmarks/bench_sampling.py digits-demo --parts steps --schedulers dpm --steps 8 15 --timestep-spacing trailing
"""

import argparse
import os
import time
from pathlib import Path

import torch
from bench_evaluation import cpu_description

from hf_ddpm.demo import EVAL_SAMPLES, parse_args as demo_defaults
from hf_ddpm.evaluation import evaluate
from hf_ddpm.evaluation.report import plot_quality_vs_steps, write_metrics
from hf_ddpm.evaluation.results import best_guidance
from hf_ddpm.sampling import SCHEDULERS, load_pipeline
from hf_ddpm.scheduler_names import TIMESTEP_SPACINGS

REFERENCE = ("ddim", 50)  # the quality to keep: DDIM with 50 steps
FD_TOLERANCE = 0.05  # within 5% of the reference's fd_digits
MAX_UNET_EVALS = 15


def main() -> None:
    demo = demo_defaults([])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a digits pipeline folder (what `python -m hf_ddpm.demo` writes)")
    parser.add_argument("--num-samples", type=int, default=EVAL_SAMPLES)
    parser.add_argument("--batch-size", type=int, default=300)
    parser.add_argument("--schedulers", nargs="+", choices=sorted(SCHEDULERS), default=list(SCHEDULERS))
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[5, 8, 10, 15, 20, 50],
        help="step counts of every scheduler (DDIM 50, the reference, is added when missing)",
    )
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=demo.guidance_scale,
        help=f"guidance of the steps sweep (default: the demo's, {demo.guidance_scale:g})",
    )
    parser.add_argument("--interval-scheduler", default=demo.scheduler, choices=sorted(SCHEDULERS))
    parser.add_argument("--interval-steps", type=int, default=demo.num_inference_steps)
    parser.add_argument(
        "--guidance-scales",
        type=float,
        nargs="+",
        default=sorted({1.0, demo.guidance_scale, 1.5, 2.0, 3.0, 4.0}),
        help="the guidance sweep, with and without the interval (default: the demo's scale among them)",
    )
    parser.add_argument(
        "--guidance-interval",
        type=float,
        nargs=2,
        default=[0.17, 0.88],
        metavar=("LOW", "HIGH"),
        help="fractions of the training timesteps (default 0.17 0.88: sigma 0.28 to 5.42 on the "
        "cosine schedule, the interval Kynkäänniemi et al. found for EDM2)",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["steps", "interval"],
        default=["steps", "interval"],
        help="steps: part 1, interval: part 2 (default: both)",
    )
    parser.add_argument(
        "--timestep-spacing",
        choices=TIMESTEP_SPACINGS,
        help="sample every scheduler with this spacing of the timesteps (default: the saved one)",
    )
    parser.add_argument("--out", help="folder for each part's metrics.json and plots (quality_vs_steps.png, ...)")
    parser.add_argument("--cache-dir", help="the real-feature cache (default: in the HF cache)")
    args = parser.parse_args()

    # The schedulers of the sweep are built from the (respaced) saved one, so they keep its spacing.
    pipe = load_pipeline(args.model, device="cpu", timestep_spacing=args.timestep_spacing)
    pipe.set_progress_bar_config(disable=True)
    print(f"{cpu_description()}, {torch.get_num_threads()} torch threads; {args.num_samples} samples per row")
    common = dict(num_samples=args.num_samples, batch_size=args.batch_size, cache_dir=args.cache_dir, progress=False)

    if "steps" in args.parts:
        quality_against_steps(pipe, args, common)
    if "interval" in args.parts:
        guidance_with_and_without_interval(pipe, args, common)


def quality_against_steps(pipe, args: argparse.Namespace, common: dict) -> None:
    started = time.perf_counter()
    result = evaluate(
        pipe, "digits", schedulers=args.schedulers, steps=args.steps, guidance_scales=[args.guidance_scale], **common
    )
    if not any((row["scheduler"], row["steps"]) == REFERENCE for row in result.rows):
        result.rows += evaluate(
            pipe,
            "digits",
            schedulers=[REFERENCE[0]],
            steps=[REFERENCE[1]],
            guidance_scales=[args.guidance_scale],
            **common,
        ).rows
    print(f"\n1. Quality against steps, guidance {args.guidance_scale:g} ({time.perf_counter() - started:.0f} s)")
    print(steps_table(result.rows))
    if args.out:
        os.makedirs(f"{args.out}/steps", exist_ok=True)
        write_metrics(result, Path(f"{args.out}/steps/metrics.json"))
        plot_quality_vs_steps(result, "fd_digits", Path(f"{args.out}/steps/quality_vs_steps.png"))


def guidance_with_and_without_interval(pipe, args: argparse.Namespace, common: dict) -> None:
    started = time.perf_counter()
    interval = tuple(args.guidance_interval)
    result = evaluate(
        pipe,
        "digits",
        schedulers=[args.interval_scheduler],
        steps=[args.interval_steps],
        guidance_scales=args.guidance_scales,
        guidance_intervals=[None, interval],
        out_dir=args.out and f"{args.out}/interval",
        **common,
    )
    print(
        f"\n2. Guidance with and without the interval t/T in [{interval[0]:g}, {interval[1]:g}], "
        f"{args.interval_scheduler} {args.interval_steps} steps ({time.perf_counter() - started:.0f} s)"
    )
    print(interval_table(result.rows))


def steps_table(rows: list[dict]) -> str:
    """Part 1's rows with fd_digits against the floor and the reference, and the recommendation."""
    reference = next((r for r in rows if (r["scheduler"], r["steps"]) == REFERENCE), None)
    lines = [
        f"{'scheduler':>9} {'steps':>5} {'unet':>4} {'nfe':>4} {'fd_digits':>9} {'x floor':>7} "
        f"{'x ddim50':>8} {'agreement':>9} {'sampling s':>10}"
    ]
    for row in rows:
        versus = f"{row['fd_digits'] / reference['fd_digits']:8.3f}" if reference else f"{'-':>8}"
        lines.append(
            f"{row['scheduler']:>9} {row['steps']:>5} {row['unet_evals_per_image']:>4} {row['nfe_per_image']:>4} "
            f"{row['fd_digits']:>9.3f} {row['fd_digits'] / row['fd_digits_floor']:>7.2f} {versus} "
            f"{row['agreement']:>9.1%} {row['seconds_sampling']:>10.1f}"
        )
    lines.append(f"real-vs-real floor: fd_digits {rows[0]['fd_digits_floor']:.3f}")
    if reference is None:
        return "\n".join(lines)
    target = (1 + FD_TOLERANCE) * reference["fd_digits"]
    good = [r for r in rows if r["fd_digits"] <= target and r["unet_evals_per_image"] <= MAX_UNET_EVALS]
    if good:
        best = min(good, key=lambda r: (r["unet_evals_per_image"], r["fd_digits"]))
        lines.append(
            f"recommended: {best['scheduler']} {best['steps']} steps, fd_digits {best['fd_digits']:.3f} <= "
            f"{target:.3f} (DDIM 50 + {FD_TOLERANCE:.0%}) in {best['unet_evals_per_image']} UNet forwards"
        )
    else:
        lines.append(f"no setting of at most {MAX_UNET_EVALS} UNet forwards reaches fd_digits {target:.3f}")
    return "\n".join(lines)


def interval_table(rows: list[dict]) -> str:
    """Part 2's rows, then the best (fd_digits, agreement) pair of each guidance sweep."""
    lines = [
        f"{'interval':>12} {'guidance':>8} {'nfe':>4} {'fd_digits':>9} {'x floor':>7} {'agreement':>9} "
        f"{'precision':>9} {'recall':>6}"
    ]
    for row in rows:
        lines.append(
            f"{interval_name(row):>12} {row['guidance_scale']:>8g} {row['nfe_per_image']:>4} {row['fd_digits']:>9.3f} "
            f"{row['fd_digits'] / row['fd_digits_floor']:>7.2f} {row['agreement']:>9.1%} {row['precision']:>9.2f} "
            f"{row['recall']:>6.2f}"
        )
    for name in dict.fromkeys(interval_name(row) for row in rows):
        best = best_guidance([row for row in rows if interval_name(row) == name], "fd_digits")
        lines.append(
            f"best {name}: guidance {best['guidance_scale']:g}, fd_digits {best['fd_digits']:.3f} "
            f"({best['fd_digits'] / best['fd_digits_floor']:.2f}x floor), agreement {best['agreement']:.1%}, "
            f"{best['nfe_per_image']} network evaluations per image"
        )
    return "\n".join(lines)


def interval_name(row: dict) -> str:
    interval = row["guidance_interval"]
    return "every step" if interval is None else f"[{interval[0]:g}, {interval[1]:g}]"


if __name__ == "__main__":
    main()
