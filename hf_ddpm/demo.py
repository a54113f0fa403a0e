"""The whole journey in one command: train a class-conditional diffusion model, sample a grid of every class with
classifier-free guidance, and measure the samples against real images the model never saw.

    python -m hf_ddpm.demo                            # scikit-learn's 8x8 digits, a few minutes on a 2-core CPU
    python -m hf_ddpm.demo --dataset fashion_mnist    # Fashion-MNIST at 28x28, offline from its IDX files

Each dataset has its recipe (`RECIPES`; every value can be overridden by its flag). The demo trains, then draws
`--samples_per_class` samples of each class (DPM-Solver++ 15 steps) from the saved pipeline and writes them as a grid
(one named row per class) and as a GIF of the denoising. Last it measures samples at its guidance scale, and sweeps a
few scales into a trade-off plot: the share that a classifier of real images reads as the class asked for, beside that
classifier's own accuracy on real images, and the Fréchet distance to real images in an offline feature space beside
its real-vs-real floor (the same distance between two sets of real images, at the same sample count), with precision
and recall.

- digits: trains on the held-out half of the 1,797 digits and is measured against the other half (`--no-exclude_eval
  _reference` trains on all of them), judged by a classifier of real digits in the `fd_digits` space.
- fashion_mnist, and any other labelled dataset with a test split: trains on the training split (60,000 images) and is
  measured against the test split (10,000), judged in the space of a small CNN trained on the training split
  (`fd_domain`, `hf_ddpm.evaluation.domain`).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time
from dataclasses import dataclass, fields, replace

import torch

from hf_ddpm.cpu import cpu_threads_per_process, resolve_mixed_precision
from hf_ddpm.evaluation import EvaluationResult, evaluate, write_report
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg import check_guidance_interval
from hf_ddpm.sampling import SCHEDULERS, save_grid_and_gif
from hf_ddpm.scheduler_names import SCHEDULER_NAMES, TIMESTEP_SPACINGS
from hf_ddpm.training.train import main as train


@dataclass(frozen=True)
class Recipe:
    """How the demo trains and measures one dataset.

    Args:
        resolution, model_config, max_train_steps, train_batch_size, learning_rate: the training run (see the training
            script's flags of the same names).
        guidance_scale: of the grid and the headline evaluation; `sweep_guidance_scales` are measured besides it.
        eval_num_samples: samples per guidance scale; `max_eval_samples` the most there can be (the held-out real
            images, which the real-vs-real floor needs as many of).
        eval_split: the split measured against; `None`: the training split's reference half, left out of training
            (`exclude_eval_reference`).
        distance: the Fréchet metric, in whose space KID and precision/recall are measured too.
        target_agreement: the agreement to reach, or `None`: the judge's own accuracy on real held-out images.
        target_fd_ratio: the largest Fréchet distance to reach, as a multiple of its real-vs-real floor.
        class_noun: what one class is called in the summary ("digit"), `images_noun` its images ("digits").
        mixed_precision: the training's and the evaluation's sampling (`auto`: bf16 autocast where the CPU has bf16
            instructions); `None`: fp32.
        eval_batch_size: images per pipeline call in the evaluation: small enough that CFG's activations stay in
            the blocks the allocator keeps for reuse (`keep_freed_memory`), large enough to fill the cores.
        snr_gamma: min-SNR-gamma loss weighting (Hang et al. 2023) when set; `None` or 0: the plain loss.
        timestep_spacing: the saved sampler's spacing of steps (the training script's `--timestep_spacing`).
        num_inference_steps: the sampler's steps in the grid, the previews and the evaluation.
    """

    resolution: int
    model_config: str
    max_train_steps: int
    train_batch_size: int
    learning_rate: float
    guidance_scale: float
    sweep_guidance_scales: tuple[float, ...]
    eval_num_samples: int
    max_eval_samples: int | None
    eval_split: str | None
    distance: str
    target_agreement: float | None
    target_fd_ratio: float
    class_noun: str = "class"
    images_noun: str = "images"
    mixed_precision: str | None = None
    snr_gamma: float | None = None
    eval_batch_size: int = 64
    timestep_spacing: str = "trailing"
    num_inference_steps: int = 15


RECIPES = {
    # The real digits split into a reference half (899) and a held-out half (898); measuring as many samples as the
    # held-out half compares the model and the floor at the same sample count, and an evaluation can measure no more.
    "digits": Recipe(
        resolution=16,
        model_config="digits-narrow",
        max_train_steps=2400,
        train_batch_size=32,
        learning_rate=1e-3,
        guidance_scale=1.2,
        sweep_guidance_scales=(1.0, 1.5, 2.0),
        eval_num_samples=898,
        max_eval_samples=898,
        eval_split=None,
        distance="fd_digits",
        target_agreement=0.98,
        target_fd_ratio=1.5,
        class_noun="digit",
        images_noun="digits",
        mixed_precision="auto",
        # Measured at its guidance of 1.2 (docs/evaluation.md, "How few steps"): nearer the real digits from t = 930
        # ("leading") than from t = 999, and as near in 15 steps of DPM-Solver++ as in 50 of DDIM; fewer steps cost
        # agreement.
        timestep_spacing="leading",
        num_inference_steps=15,
    ),
    # The test split's 10,000 images split into a reference half and a held-out half of 5,000 each.
    "fashion_mnist": Recipe(
        resolution=28,
        model_config="small-narrow",
        max_train_steps=5700,
        train_batch_size=32,
        learning_rate=1e-3,
        guidance_scale=1.25,
        sweep_guidance_scales=(1.0, 1.5, 2.0),
        eval_num_samples=1000,
        max_eval_samples=5000,
        eval_split="test",
        distance="fd_domain",
        target_agreement=None,
        target_fd_ratio=2.0,
        mixed_precision="auto",
        # Measured on `small` at 3,600 steps (docs/fashion-mnist.md): closer to the real images in every
        # measure than the plain loss.
        snr_gamma=5.0,
        eval_batch_size=32,
        # From t = 999, as the training script saves it by default, and 25 steps: each nearer the real images than
        # "leading" spacing and 15 steps on the same models (docs/fashion-mnist.md).
        timestep_spacing="trailing",
        num_inference_steps=25,
    ),
}
# Datasets without a recipe of their own (a folder of IDX files, a Hub dataset with a test split) take this one.
DEFAULT_RECIPE = "fashion_mnist"
# For the benchmarks that size themselves by the digits demo.
EVAL_SAMPLES = RECIPES["digits"].eval_num_samples


@dataclass
class DemoResult:
    """What the demo measured: `row` is the evaluation at the demo's guidance scale (agreement, the distance with its
    floor, precision, recall, ...), `evaluation` the whole guidance sweep, `seconds` the time of each part, `recipe`
    the recipe it ran."""

    row: dict
    evaluation: EvaluationResult
    seconds: dict
    recipe: Recipe = RECIPES["digits"]

    @property
    def agreement(self) -> float:
        return self.row["agreement"]

    @property
    def fd_ratio(self) -> float:
        return self.row[self.recipe.distance] / self.row[f"{self.recipe.distance}_floor"]

    @property
    def target_agreement(self) -> float:
        """The recipe's target, or the judge's accuracy on real held-out images."""
        if self.recipe.target_agreement is not None:
            return self.recipe.target_agreement
        return self.row["agreement_floor"]

    @property
    def met_targets(self) -> bool:
        return self.agreement >= self.target_agreement and self.fd_ratio <= self.recipe.target_fd_ratio


def dataset_file_name(dataset: str) -> str:
    """The dataset's name as the demo's files are named: "digits", "fashion_mnist", a folder's own name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", os.path.basename(os.path.normpath(dataset))) or "data"


def recipe_for(dataset: str) -> Recipe:
    return RECIPES.get(dataset, RECIPES[DEFAULT_RECIPE])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits (default), fashion_mnist, or another labelled dataset as the training script "
        "reads it (a folder of IDX files, a Hub dataset id with a test split).",
    )
    parser.add_argument(
        "--output_dir", default=None, help="Where the pipeline, grid, GIF and evaluation go (default: DATASET-demo)."
    )
    parser.add_argument("--resolution", type=int, help="Training (and sample) image side.")
    parser.add_argument("--model_config", help="UNet preset or JSON file (see the training script).")
    parser.add_argument("--max_train_steps", type=int, help="Optimizer steps.")
    parser.add_argument("--train_batch_size", type=int)
    parser.add_argument("--learning_rate", type=float)
    parser.add_argument(
        "--mixed_precision",
        choices=["no", "bf16", "auto"],
        help="bf16 autocast; auto: where the CPU has bf16 instructions (or on a GPU).",
    )
    parser.add_argument(
        "--snr_gamma", type=float, help="Min-SNR-gamma loss weighting (Hang et al. 2023); 0: the plain loss."
    )
    parser.add_argument(
        "--samples_per_class",
        "--samples_per_digit",
        dest="samples_per_class",
        type=int,
        default=10,
        help="Images per class in the grid.",
    )
    parser.add_argument(
        "--guidance_scale", type=float, help="Classifier-free guidance of the grid and of the headline evaluation."
    )
    parser.add_argument(
        "--scheduler",
        default="dpm",
        choices=sorted(SCHEDULERS),
        help="The pipeline's sampler, of the grid and the evaluation (dpm: DPM-Solver++ 2M).",
    )
    parser.add_argument(
        "--timestep_spacing",
        choices=TIMESTEP_SPACINGS,
        help="Where the sampler's steps fall among the training timesteps (trailing: the first at the last).",
    )
    parser.add_argument("--num_inference_steps", type=int, help="Sampling steps.")
    parser.add_argument(
        "--guidance_interval",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="Guide only the steps with LOW <= t / training steps <= HIGH, in the grid and the "
        "evaluation (default: every step).",
    )
    parser.add_argument(
        "--eval_num_samples", type=int, help="Images per guidance scale in the evaluation (at least one per class)."
    )
    parser.add_argument(
        "--sweep_guidance_scales",
        type=float,
        nargs="*",
        default=None,
        help="Guidance scales that the evaluation sweeps besides --guidance_scale (none: just that).",
    )
    parser.add_argument(
        "--exclude_eval_reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="On a dataset measured against its training split (the digits): train on the held-out "
        "half only, so that the evaluation compares samples with real images the model never "
        "saw. --no-exclude_eval_reference trains on all of them, the evaluation's reference half "
        "included: its distances then flatter the model.",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    recipe = recipe_for(args.dataset)
    for field in fields(Recipe):
        if hasattr(args, field.name) and getattr(args, field.name) is None:
            setattr(args, field.name, getattr(recipe, field.name))
    args.sweep_guidance_scales = list(args.sweep_guidance_scales)
    if args.output_dir is None:
        args.output_dir = dataset_file_name(args.dataset).replace("_", "-") + "-demo"
    for name in ["resolution", "max_train_steps", "train_batch_size", "samples_per_class", "num_inference_steps"]:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}.")
    most = recipe.max_eval_samples
    noun, images = recipe.class_noun, recipe.images_noun
    if args.eval_num_samples < 10 or (most is not None and args.eval_num_samples > most):
        parser.error(
            f"--eval_num_samples must be at least 10 (one per {noun}) and at most {most} (the held-out real "
            f"{images}), got {args.eval_num_samples}."
        )
    if not args.learning_rate > 0:
        parser.error(f"--learning_rate must be positive, got {args.learning_rate}.")
    if args.snr_gamma is not None and not 0 <= args.snr_gamma < math.inf:
        parser.error(f"--snr_gamma must be a number >= 0 (0: the plain loss), got {args.snr_gamma}.")
    if args.guidance_interval is not None:
        args.guidance_interval = tuple(args.guidance_interval)
        try:
            check_guidance_interval(args.guidance_interval)
        except ValueError:
            parser.error(
                f"--guidance_interval must be LOW HIGH with 0 <= LOW < HIGH <= 1, got {args.guidance_interval}."
            )
    scales_by_flag = {"--guidance_scale": [args.guidance_scale], "--sweep_guidance_scales": args.sweep_guidance_scales}
    for flag, scales in scales_by_flag.items():
        for scale in scales:
            if not 0 <= scale < math.inf:
                parser.error(f"{flag} must be finite numbers >= 0, got {scale}.")
    args.recipe = replace(
        recipe, **{field.name: getattr(args, field.name) for field in fields(Recipe) if hasattr(args, field.name)}
    )
    return args


def training_flags(args: argparse.Namespace) -> list[str]:
    """The training run of the demo, as `accelerate launch training/train.py` flags."""
    steps, recipe = args.max_train_steps, args.recipe
    return (
        [
            "--dataset_name",
            args.dataset,
            "--resolution",
            str(args.resolution),
            "--model_config",
            args.model_config,
            "--output_dir",
            args.output_dir,
            "--overwrite_output_dir",
            "--seed",
            str(args.seed),
            "--train_batch_size",
            str(args.train_batch_size),
            "--max_train_steps",
            str(steps),
            "--learning_rate",
            str(args.learning_rate),
            "--lr_scheduler",
            "cosine",
            "--lr_warmup_steps",
            str(max(1, steps // 24)),
            # The cosine schedule of Nichol & Dhariwal 2021: the linear one leaves under 8% of the signal (alpha_bar)
            # from step 500 of 1000 on, the cosine one 49%, so fewer steps are spent on images already drowned in noise.
            "--beta_schedule",
            "squaredcos_cap_v2",
            # v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 keeps the x0 estimates of the first, noisiest steps in
            # range, where epsilon prediction divides its error by sqrt(alpha_bar) ~ 0.007: with epsilon prediction a
            # few samples in ten end up speckled with noise.
            "--prediction_type",
            "v_prediction",
            "--use_ema",
            "--checkpointing_steps",
            str(steps),
            "--save_images_steps",
            str(max(1, steps // 2)),
            "--eval_batch_size",
            "20",
            # The pipeline's sampler, and the training previews at the demo's guidance scale and step count.
            "--scheduler",
            args.scheduler,
            "--guidance_scale",
            str(args.guidance_scale),
            "--num_inference_steps",
            str(args.num_inference_steps),
            "--timestep_spacing",
            args.timestep_spacing,
        ]
        + (["--exclude_eval_reference"] if args.exclude_eval_reference and recipe.eval_split is None else [])
        + (["--mixed_precision", mixed_precision(args.mixed_precision)] if args.mixed_precision else [])
        + (["--snr_gamma", str(args.snr_gamma)] if args.snr_gamma else [])
    )


def mixed_precision(choice: str) -> str:
    """`auto`: bf16 where it pays, on a GPU or on a CPU with bf16 instructions (AVX512-BF16, AMX); fp32 elsewhere."""
    return resolve_mixed_precision(choice, "cuda" if torch.cuda.is_available() else "cpu")


def main(argv: list[str] | None = None) -> DemoResult:
    """Runs the demo; returns what it measured at its guidance scale, the sweep, and the time of each part."""
    args = parse_args(argv)
    recipe = args.recipe
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
    name = dataset_file_name(args.dataset)
    grid_path = os.path.join(args.output_dir, f"{name}_grid.png")
    gif_path = os.path.join(args.output_dir, f"{name}_denoising.gif")
    save_grid_and_gif(
        pipe,
        grid_path,
        gif_path,
        seed=args.seed,
        class_labels=list(range(pipe.config.null_class_id)),
        batch_size=args.samples_per_class,
        guidance_scale=args.guidance_scale,
        num_inference_steps=args.num_inference_steps,
        guidance_interval=args.guidance_interval,
    )
    sampled = time.perf_counter()

    # One sweep, with the same seeds at every scale; the demo's own scale is one of its rows. The report writes the
    # plots that the sweep has the axes for (no trade-off plot of one scale): the summary names those it wrote.
    evaluation_dir = os.path.join(args.output_dir, "evaluation")
    evaluation = measure(pipe, args)
    report = write_report(evaluation, evaluation_dir)
    finished = time.perf_counter()
    row = next(row for row in evaluation.rows if row["guidance_scale"] == args.guidance_scale)
    seconds = {
        "training": trained - started,
        "grid_and_gif": sampled - trained,
        "evaluation": finished - sampled,
        "total": finished - started,
    }
    result = DemoResult(row=row, evaluation=evaluation, seconds=seconds, recipe=recipe)
    print("\n" + summary(args, result, sampler, grid_path, gif_path, evaluation_dir, list(report.values())))
    return result


def measure(pipe: DDPMCFGPipeline, args, **overrides) -> EvaluationResult:
    """The demo's evaluation of `pipe`: the guidance sweep with the same seeds at every scale, its own scale among
    them, against the recipe's held-out real images. `overrides` replace `evaluate`'s arguments (the benchmarks
    measure other batch sizes and precisions)."""
    recipe = args.recipe
    settings = dict(
        num_samples=args.eval_num_samples,
        guidance_scales=sorted({args.guidance_scale, *args.sweep_guidance_scales}),
        steps=[args.num_inference_steps],
        schedulers=[args.scheduler],
        guidance_intervals=[args.guidance_interval],
        batch_size=recipe.eval_batch_size,
        seed=args.seed,
        mixed_precision=args.mixed_precision or "no",
        split=recipe.eval_split or "train",
        metrics=[recipe.distance, "kid", "precision_recall", "agreement"],
    )
    return evaluate(pipe, args.dataset, **{**settings, **overrides})


def summary(
    args, result: DemoResult, sampler: str, grid_path: str, gif_path: str, evaluation_dir: str, report: list[str]
) -> str:
    """What the demo wrote where, and what it measured; `report` is the paths of the evaluation's files."""
    row, seconds, n, recipe = result.row, result.seconds, result.row["num_samples"], result.recipe
    noun, images, distance = recipe.class_noun, recipe.images_noun, recipe.distance
    floor_n = result.evaluation.floors.get("floor_num_samples", n)
    if recipe.eval_split is not None:
        against = f"against real {images} of the {recipe.eval_split} split, which the model never saw:"
    elif args.exclude_eval_reference:
        against = f"against real {images} that the model never saw:"
    else:
        against = f"against real {images} that the model was trained on (--no-exclude_eval_reference):"
    if recipe.target_agreement is None:
        agreement_target = f"target: the judge's own {result.target_agreement:.1%} on real held-out {images}"
    else:
        agreement_target = f"target {recipe.target_agreement:.0%}"
    lines = [
        f"Trained in {seconds['training']:.0f} s ({args.max_train_steps} steps, "
        f"{args.max_train_steps / seconds['training']:.1f} steps/s); grid and GIF in {seconds['grid_and_gif']:.0f} s; "
        f"evaluation in {seconds['evaluation']:.0f} s; {seconds['total']:.0f} s in all.",
        f"Pipeline:   {args.output_dir}",
        f"Grid:       {grid_path}  (one row per {noun}, {sampler}, guidance {args.guidance_scale:g})",
        f"Denoising:  {gif_path}",
        f"Evaluation: {evaluation_dir}  ({', '.join(os.path.basename(path) for path in report)})",
        "",
        f"At guidance {args.guidance_scale:g}, {n} samples ({sampler}), {against}",
        f"  label accuracy  {row['agreement']:.1%} read as the {noun} asked for ({agreement_target})",
        f"  {distance:<15} {row[distance]:.2f} = {result.fd_ratio:.2f}x the real-vs-real floor "
        f"{row[distance + '_floor']:.2f} ({floor_n} held-out real {images}; target at most {recipe.target_fd_ratio:g}x)",
        f"  precision       {row['precision']:.2f} (real-vs-real {row['precision_floor']:.2f}), recall "
        f"{row['recall']:.2f} (real-vs-real {row['recall_floor']:.2f})",
        f"  targets         {'met' if result.met_targets else 'NOT met'}",
        "",
        f"Guidance sweep (same seeds; label accuracy, {distance} and its ratio to the floor, precision, recall):",
    ]
    for other in result.evaluation.rows:
        mark = "  <- the demo's" if other is row else ""
        lines.append(
            f"  guidance {other['guidance_scale']:<4g} {other['agreement']:6.1%}  fd {other[distance]:6.2f} "
            f"({other[distance] / other[distance + '_floor']:4.2f}x)  P {other['precision']:.2f}  "
            f"R {other['recall']:.2f}{mark}"
        )
    lines.append(f"Label accuracy is judged by a {result.evaluation.info['judge']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
