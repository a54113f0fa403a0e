"""The training script's flags, with every check that needs no data: `parse_args` fails at once, naming the flag,
before anything is loaded; `RunPlan.check` then decides what needs no data either (the model's config keys, the
checkpoint to resume, the Hub token, what an earlier run left)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

from accelerate.logging import get_logger
from diffusers import SchedulerMixin
from diffusers.optimization import SchedulerType

from hf_ddpm.evaluation import METRICS, default_metrics
from hf_ddpm.evaluation.registry import METRIC_KEYS, metric_keys
from hf_ddpm.hub import resolve_hub_token
from hf_ddpm.models.presets import CLASSIFIER_PRESETS, UNET_PRESETS, check_resolution, read_model_config
from hf_ddpm.pipelines.pipeline_ddpm_cfg import check_num_inference_steps, default_num_inference_steps
from hf_ddpm.sampling import SCHEDULERS, scheduler_from_name
from hf_ddpm.scheduler_names import TIMESTEP_SPACINGS
from hf_ddpm.schedulers import DDIMScheduler
from hf_ddpm.schedulers.scheduling_ddpm import BETA_SCHEDULES
from hf_ddpm.training.checkpoints import (
    BEST_CHECKPOINT,
    RUN_FOLDERS,
    describe_previous_run,
    find_checkpoint_to_resume,
    is_checkpoint_folder,
    previous_run_outputs,
)
from hf_ddpm.training.launch import LOG_FILE
from hf_ddpm.training.step import LOSS_TYPES, PREDICTION_TYPES, TIMESTEP_DISTRIBUTIONS

logger = get_logger(__name__, log_level="INFO")


# diffusers' schedules, but for piecewise_constant, which needs step rules of its own.
LR_SCHEDULES = [kind.value for kind in SchedulerType if kind != SchedulerType.PIECEWISE_CONSTANT]


DEFAULT_EVAL_SAMPLES = 500


TASKS = ("diffusion", "classifier")


CLASSIFIER_NOISE = ("uniform", "none")


DEFAULT_ACCURACY_IMAGES = 2000  # --task classifier: at most this many held-out images measure the final accuracy


# Flags of the diffusion model that a classifier run has no use for: given with --task classifier, they are refused
# rather than parsed and ignored.
DIFFUSION_ONLY_FLAGS = (
    "--class_conditional",
    "--unconditional",
    "--cond_drop_prob",
    "--prediction_type",
    "--loss_type",
    "--snr_gamma",
    "--timestep_distribution",
    "--save_images_steps",
    "--scheduler",
    "--timestep_spacing",
    "--num_inference_steps",
    "--guidance_scale",
    "--eval_steps",
    "--eval_metrics",
    "--eval_guidance_scales",
    "--eval_classifier",
    "--keep_best_checkpoint",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # No abbreviated flags: the checks below read which flags were given by their full spelling.
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        default=None,
        help="A Hub dataset id (fashion_mnist, cifar10, ...), a local dataset path that `datasets` "
        "reads, or 'digits' (scikit-learn's 8x8 handwritten digits, no download).",
    )
    data.add_argument("--dataset_config_name", default=None, help="The dataset's configuration, if it has several.")
    data.add_argument(
        "--train_data_dir",
        default=None,
        help="A folder of images, one sub-folder per class (instead of --dataset_name).",
    )
    data.add_argument("--image_column", default=None, help="Column of the images (default: found automatically).")
    data.add_argument(
        "--label_column",
        default=None,
        help="Column of the class ids (default: the ClassLabel column, if there is one).",
    )
    data.add_argument("--cache_dir", default=None, help="Where `datasets` keeps downloaded and converted data.")
    data.add_argument(
        "--max_train_samples",
        type=int,
        default=None,
        help="Train on a random subset of N examples (drawn with --seed).",
    )
    data.add_argument(
        "--exclude_eval_reference",
        action="store_true",
        help="Train only on the held-out half of the data: leave out the reference half, the real "
        "images that evaluation (--eval_steps, hf-ddpm evaluate) compares samples with, so that "
        "its distances measure generalisation, not memory. With --max_train_samples the subset "
        "is drawn from the held-out half.",
    )
    data.add_argument("--resolution", type=int, default=32, help="Side of the square training images.")
    data.add_argument(
        "--center_crop",
        action="store_true",
        help="Resize the shorter side and cut the centre square (default: resize the whole image).",
    )
    data.add_argument("--random_flip", action="store_true", help="Flip each training image left-right at random.")
    data.add_argument(
        "--skip_corrupt_images",
        action="store_true",
        help="Leave out the images that cannot be read (truncated, corrupt, empty or missing files), "
        "logging how many and the first few, instead of stopping at the first one.",
    )
    data.add_argument(
        "--dataloader_num_workers",
        type=int,
        default=0,
        help="Worker processes that batch the data. 0 (default) batches in the training process: the "
        "data is decoded once into memory, so workers would only compete with torch for cores.",
    )

    model = parser.add_argument_group("model and diffusion")
    model.add_argument(
        "--task",
        default="diffusion",
        choices=TASKS,
        help="What to train: the diffusion model (a pipeline), or the noise-aware classifier that guides it "
        "(classifier guidance, Dhariwal & Nichol 2021): a DDPMClassifier2DModel trained to name the class of "
        "images noised with --beta_schedule and --num_train_timesteps, those of the diffusion model it will guide.",
    )
    model.add_argument(
        "--classifier_noise",
        default=None,
        choices=CLASSIFIER_NOISE,
        help="--task classifier: 'uniform' (default) trains on x_t at a timestep t drawn uniformly from "
        "[0, --num_train_timesteps); 'none' on the clean images at t = 0, the classifier of clean images that "
        "the tutorials say cannot guide.",
    )
    model.add_argument(
        "--model_config",
        default=None,
        help=f"A UNet preset ({', '.join(UNET_PRESETS)}; default 'small') or a JSON file of "
        "DDPMUNet2DModel config keys (missing keys take the defaults); with --task classifier a classifier "
        f"preset ({', '.join(CLASSIFIER_PRESETS)}; default 'small') or a JSON file of DDPMClassifier2DModel "
        "config keys. Sample size, channels and number of classes come from the data.",
    )
    conditioning = model.add_mutually_exclusive_group()
    conditioning.add_argument(
        "--class_conditional",
        dest="class_conditional",
        action="store_true",
        default=None,
        help="Condition on the class labels (default when the data has labels).",
    )
    conditioning.add_argument(
        "--unconditional",
        dest="class_conditional",
        action="store_false",
        help="Ignore the labels and train an unconditional model.",
    )
    model.add_argument(
        "--cond_drop_prob",
        type=float,
        default=0.1,
        help="Probability that a training example's label is replaced by the null label, so the model "
        "also learns the unconditional prediction that classifier-free guidance needs.",
    )
    model.add_argument("--num_train_timesteps", type=int, default=1000, help="Diffusion steps T.")
    model.add_argument("--beta_schedule", default="linear", choices=BETA_SCHEDULES, help="The noise schedule.")
    model.add_argument(
        "--prediction_type",
        default="epsilon",
        choices=PREDICTION_TYPES,
        help="What the network predicts: the noise, the clean image, or the velocity v.",
    )
    model.add_argument("--loss_type", default="l2", choices=LOSS_TYPES, help="Loss on the prediction.")
    model.add_argument(
        "--snr_gamma",
        type=float,
        default=None,
        help="Min-SNR-gamma loss weighting (Hang et al. 2023); 5.0 is the paper's choice. Default: unweighted.",
    )
    model.add_argument(
        "--timestep_distribution",
        default="uniform",
        choices=TIMESTEP_DISTRIBUTIONS,
        help="The timesteps trained on: uniform (Ho et al. 2020), or edm: the noise levels of Karras et al. 2022 "
        "(log-normal, P_mean -1.2, P_std 1.2) with their loss weight (sigma_data 0.5).",
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of the weights, the data order and every random draw; a run is reproducible.",
    )
    optim.add_argument("--train_batch_size", type=int, default=16, help="Batch size per process.")
    optim.add_argument("--num_epochs", type=int, default=100, help="Epochs to train (unless --max_train_steps).")
    optim.add_argument(
        "--max_train_steps", type=int, default=None, help="Optimizer steps to train; overrides --num_epochs."
    )
    optim.add_argument(
        "--gradient_accumulation_steps",
        type=int,
        default=1,
        help="Batches whose gradients add up to one optimizer step.",
    )
    optim.add_argument("--learning_rate", type=float, default=1e-4, help="Peak learning rate.")
    optim.add_argument(
        "--lr_scheduler",
        default="cosine",
        choices=LR_SCHEDULES,
        help="Learning-rate schedule (diffusers' get_scheduler).",
    )
    optim.add_argument("--lr_warmup_steps", type=int, default=500, help="Optimizer steps of linear warm-up.")
    optim.add_argument("--adam_beta1", type=float, default=0.95)
    optim.add_argument("--adam_beta2", type=float, default=0.999)
    optim.add_argument("--adam_weight_decay", type=float, default=1e-6)
    optim.add_argument("--adam_epsilon", type=float, default=1e-8)
    optim.add_argument(
        "--max_grad_norm",
        type=float,
        default=1.0,
        help="Clip the gradient norm to this (inf: measure it, clip nothing).",
    )
    optim.add_argument(
        "--mixed_precision",
        default=None,
        choices=["no", "fp16", "bf16"],
        help="Autocast precision (default: what `accelerate launch` or its config says). bf16 on a "
        "CPU pays only where the CPU has bf16 instructions (AVX512-BF16, AMX): the log says.",
    )
    optim.add_argument(
        "--torch_compile",
        action="store_true",
        help="Compile the UNet's training forward with torch.compile (inductor; on CPU it needs a C "
        "compiler). Checkpoints and the saved pipeline are the eager model's, interchangeable "
        "with runs without it.",
    )
    optim.add_argument(
        "--use_ema",
        action="store_true",
        help="Keep an exponential moving average of the weights; previews and the saved pipeline use it.",
    )
    optim.add_argument("--ema_inv_gamma", type=float, default=1.0, help="EMA warm-up: inverse multiplicative factor.")
    optim.add_argument("--ema_power", type=float, default=3 / 4, help="EMA warm-up: power.")
    optim.add_argument("--ema_max_decay", type=float, default=0.9999, help="EMA decay once warmed up.")

    output = parser.add_argument_group("outputs")
    output.add_argument(
        "--output_dir", default="ddpm-model", help="Where the pipeline, checkpoints, samples and logs go."
    )
    output.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Delete what an earlier run wrote in --output_dir (pipeline, model card, samples, logs, "
        "checkpoints; nothing else) and start afresh there.",
    )
    output.add_argument(
        "--checkpointing_steps",
        type=int,
        default=500,
        help="Save the training state (and the pipeline) every N optimizer steps.",
    )
    output.add_argument(
        "--checkpoints_total_limit",
        type=int,
        default=None,
        help="Keep at most this many checkpoints, deleting the oldest.",
    )
    output.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest' (the newest checkpoint in --output_dir, or a fresh start if there is none) or "
        "the path or name of a checkpoint.",
    )
    output.add_argument(
        "--save_images_steps",
        type=int,
        default=500,
        help="Every N optimizer steps write a sample grid and a denoising GIF to samples/ and logs.",
    )
    output.add_argument(
        "--eval_batch_size",
        type=int,
        default=16,
        help="Images per preview (rounded up to a whole number per class); also images per pipeline "
        "call, on each process, of the --eval_steps evaluations, and per forward of the final accuracy "
        "measurement of --task classifier.",
    )
    output.add_argument(
        "--scheduler",
        default="dpm",
        choices=sorted(SCHEDULERS),
        help="The sampler saved with the pipeline, on the training noise schedule, and used by the "
        "previews and evaluations (dpm: DPM-Solver++ (2M)); any other can be swapped in later.",
    )
    output.add_argument(
        "--timestep_spacing",
        default="trailing",
        choices=TIMESTEP_SPACINGS,
        help="Where the sampler's steps fall among the training timesteps (Lin et al. 2023, Table 2). trailing: "
        "the first step is the last training timestep, where the model learned that its input is pure noise; "
        "leading (the default of DDPM's and DDIM's schedulers) starts lower, at a timestep whose inputs still "
        "hold some of the image, from noise that holds none.",
    )
    output.add_argument(
        "--num_inference_steps",
        type=int,
        default=None,
        help="Sampling steps of the previews and evaluations, and the model card's (default: the "
        "pipeline's for --scheduler: 15 for dpm and unipc, 50 for ddim and euler, "
        "--num_train_timesteps for ddpm).",
    )
    output.add_argument(
        "--guidance_scale",
        type=float,
        default=3.0,
        help="Classifier-free guidance of the previews and of the periodic evaluations.",
    )
    output.add_argument(
        "--report_to",
        default="tensorboard",
        choices=["tensorboard", "none"],
        help="Where scalars and previews are logged.",
    )
    output.add_argument("--logging_dir", default="logs", help="Log folder, inside --output_dir.")
    output.add_argument(
        "--verbose",
        action="store_true",
        help=f"Show the libraries' INFO lines (Accelerate's checkpointing, ...) on the console too; "
        f"they always go to --logging_dir/{LOG_FILE}.",
    )

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--eval_steps",
        type=int,
        default=None,
        help="Measure the weights (EMA ones with --use_ema) against the real images every N "
        "optimizer steps and at the end: tensorboard scalars eval/<metric>, and a final "
        "table and guidance trade-off plot in evaluation/ and the model card. Default: no "
        "evaluation; N larger than the run evaluates at the end only.",
    )
    evaluation.add_argument(
        "--eval_num_samples",
        type=int,
        default=None,
        help=f"Images per evaluation, shared out over the processes: at most the held-out half "
        f"of the real images (default {DEFAULT_EVAL_SAMPLES}, or that half if smaller). With --task "
        f"classifier: the held-out images whose accuracy is measured at the end (default "
        f"{DEFAULT_ACCURACY_IMAGES}, or all if fewer).",
    )
    evaluation.add_argument(
        "--eval_metrics",
        nargs="+",
        choices=METRICS,
        default=None,
        help="What to measure (hf_ddpm.evaluation). Default: fd_digits, kid, precision_recall "
        "(and agreement, class-conditional) on digits; fid, kid, precision_recall elsewhere.",
    )
    evaluation.add_argument(
        "--eval_guidance_scales",
        nargs="+",
        type=float,
        default=None,
        help="Guidance scales that the final evaluation sweeps, besides --guidance_scale (the "
        "scale of the periodic ones); the trade-off plot needs two or more.",
    )
    evaluation.add_argument(
        "--eval_classifier",
        default=None,
        help="A transformers image classifier (Hub id or folder) that judges `agreement` on a "
        "dataset other than digits (default there: a small CNN trained on the dataset's "
        "own training images, hf_ddpm.evaluation.domain).",
    )
    evaluation.add_argument(
        "--eval_split",
        default=None,
        help="The split of real images that evaluation measures against, such as 'test' "
        "(default: the training split, whose reference half --exclude_eval_reference "
        "leaves out of training). With --task classifier, the split of the final accuracy (default: "
        "'test', else the reference half that --exclude_eval_reference leaves out, else the training images).",
    )
    evaluation.add_argument(
        "--keep_best_checkpoint",
        default=None,
        choices=METRIC_KEYS,
        metavar="METRIC",
        help=f"After an evaluation that beats every earlier one by METRIC (one of "
        f"{', '.join(METRIC_KEYS)}; among the evaluated ones), save the training state and "
        f"the pipeline as {BEST_CHECKPOINT}, with best.json (metric, value, step). It is "
        "never pruned and never the 'latest' to resume.",
    )

    hub = parser.add_argument_group("hub")
    hub.add_argument(
        "--push_to_hub",
        action="store_true",
        help="Push the pipeline to the Hub at every checkpoint (in the background) and at the end.",
    )
    hub.add_argument("--hub_model_id", default=None, help="Repository to push to (default: --output_dir's name).")
    hub.add_argument("--hub_token", default=None, help="Hub token (default: HF_TOKEN or the saved login).")
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the repository private.")

    args = parser.parse_args(argv)
    positive = [
        "resolution",
        "train_batch_size",
        "num_epochs",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "save_images_steps",
        "eval_batch_size",
        "num_inference_steps",
        "num_train_timesteps",
    ]
    for name in positive + ["max_train_steps", "max_train_samples", "checkpoints_total_limit", "eval_steps"]:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}.")
    for name in ["lr_warmup_steps", "dataloader_num_workers"]:
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be at least 0, got {getattr(args, name)}.")
    if not 0.0 <= args.cond_drop_prob <= 1.0:
        parser.error(f"--cond_drop_prob must be in [0, 1], got {args.cond_drop_prob}.")
    for name in ["learning_rate", "ema_inv_gamma", "ema_power"] + (["snr_gamma"] if args.snr_gamma is not None else []):
        if not 0 < getattr(args, name) < math.inf:
            parser.error(f"--{name} must be a positive number, got {getattr(args, name)}.")
    for name in ["adam_beta1", "adam_beta2"]:
        if not 0.0 <= getattr(args, name) < 1.0:
            parser.error(f"--{name} must be in [0, 1), got {getattr(args, name)}.")
    for name in ["adam_epsilon", "adam_weight_decay"]:
        if not 0.0 <= getattr(args, name) < math.inf:
            parser.error(f"--{name} must be at least 0, got {getattr(args, name)}.")
    if not 0 <= args.guidance_scale < math.inf:
        parser.error(f"--guidance_scale must be a finite number >= 0, got {args.guidance_scale}.")
    if not 0 <= args.seed < 2**32:  # numpy's seed, which accelerate's set_seed sets too, takes 32 bits
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}.")
    if args.snr_gamma is not None and args.timestep_distribution == "edm":
        parser.error(
            "--snr_gamma and --timestep_distribution edm both weight the loss (min-SNR, EDM's lambda): choose one."
        )
    given = {word.split("=")[0] for word in (sys.argv[1:] if argv is None else argv) if word.startswith("--")}
    check_task_flags(parser, args, given)
    if args.class_conditional is False and given & {"--guidance_scale", "--cond_drop_prob"}:
        parser.error(
            f"{' and '.join(sorted(given & {'--guidance_scale', '--cond_drop_prob'}))} are for class-conditional "
            "training; --unconditional has no labels to drop or guide towards: leave them out."
        )
    for flags, needed in [
        (["--hub_model_id", "--hub_token", "--hub_private_repo"], "--push_to_hub"),
        (["--ema_max_decay", "--ema_inv_gamma", "--ema_power"], "--use_ema"),
    ]:
        unused = sorted(given & set(flags))
        if unused and needed not in given:
            verb = "takes" if len(unused) == 1 else "take"
            parser.error(f"{' and '.join(unused)} {verb} effect only with {needed}: add it, or leave them out.")
    check_logging_dir(parser, args.logging_dir)
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        parser.error(f"--output_dir {args.output_dir!r} is a file, not a folder.")
    if not args.max_grad_norm > 0:
        parser.error(f"--max_grad_norm must be positive (inf: no clipping), got {args.max_grad_norm}.")
    if not 0.0 <= args.ema_max_decay <= 1.0:
        parser.error(f"--ema_max_decay must be in [0, 1], got {args.ema_max_decay}.")
    if args.overwrite_output_dir and args.resume_from_checkpoint is not None:
        parser.error(
            "--overwrite_output_dir deletes the checkpoints that --resume_from_checkpoint would resume: give one."
        )
    if args.num_inference_steps is None:
        args.num_inference_steps = default_num_inference_steps(sampling_scheduler(args))
    else:  # checked now, not at the first preview hundreds of steps in
        try:
            check_num_inference_steps(sampling_scheduler(args), args.num_inference_steps)
        except ValueError as error:
            message = str(error).replace("`num_inference_steps`", "--num_inference_steps")
            parser.error(f"--scheduler {args.scheduler}: {message}")
    check_evaluation_flags(parser, args)
    return args


def check_task_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, given: set[str]) -> None:
    """--task classifier refuses the flags of the diffusion model (`DIFFUSION_ONLY_FLAGS`), naming them;
    --classifier_noise is for the classifier alone."""
    if args.task == "diffusion":
        if args.classifier_noise is not None:
            parser.error("--classifier_noise is for --task classifier; the diffusion model is always trained on x_t.")
        return
    args.classifier_noise = args.classifier_noise or "uniform"
    refused = sorted(given & set(DIFFUSION_ONLY_FLAGS))
    if refused:
        parser.error(
            f"--task classifier trains a classifier of noisy images, which has no use for {', '.join(refused)} "
            "(flags of the diffusion model, its previews and its evaluation): leave them out."
        )


def check_logging_dir(parser: argparse.ArgumentParser, logging_dir: str) -> None:
    """--logging_dir names a folder of the run inside --output_dir, which --overwrite_output_dir deletes with the run:
    it may not lead outside, be the output folder itself, or be another part of the run."""
    parts = os.path.normpath(logging_dir).split(os.sep) if logging_dir else []
    if not parts or os.path.isabs(logging_dir) or parts[0] in (".", "..") or ".." in parts:
        parser.error(
            f"--logging_dir must be a folder inside --output_dir (a relative path, no '..'), got {logging_dir!r}."
        )
    if parts[0] in RUN_FOLDERS or is_checkpoint_folder(parts[0]):
        parser.error(
            f"--logging_dir {logging_dir!r} would mix the logs into the run's own {parts[0]!r}: choose another name."
        )


def check_evaluation_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The evaluation flags that can be checked before the data is loaded; `main` checks the rest against it."""
    evaluation_flags = [
        "eval_num_samples",
        "eval_metrics",
        "eval_guidance_scales",
        "eval_classifier",
        "eval_split",
        "keep_best_checkpoint",
    ]
    if args.task == "classifier":  # the final accuracy reads these two
        if args.eval_num_samples is not None and args.eval_num_samples < 1:
            parser.error(f"--eval_num_samples must be at least 1, got {args.eval_num_samples}.")
        evaluation_flags = [name for name in evaluation_flags if name not in ("eval_num_samples", "eval_split")]
    if args.eval_steps is None:
        given = [f"--{name}" for name in evaluation_flags if getattr(args, name) is not None]
        if given:
            parser.error(f"{', '.join(given)} given without --eval_steps: evaluation is off unless --eval_steps N.")
        return
    if args.eval_num_samples is not None and args.eval_num_samples < 2:
        parser.error(f"--eval_num_samples must be at least 2 (a covariance needs two), got {args.eval_num_samples}.")
    for scale in args.eval_guidance_scales or []:
        if not 0 <= scale < math.inf:
            parser.error(f"--eval_guidance_scales must be finite numbers >= 0, got {scale}.")
    evaluated = metric_keys(args.eval_metrics or [])
    if args.keep_best_checkpoint and args.eval_metrics and args.keep_best_checkpoint not in evaluated:
        parser.error(
            f"--keep_best_checkpoint {args.keep_best_checkpoint} is not among the evaluated values "
            f"{evaluated} (--eval_metrics)."
        )


def evaluation_settings(args: argparse.Namespace, conditional: bool) -> tuple[list[str], float, list[float]]:
    """The metrics, the guidance scale of the periodic evaluations and the scales of the final sweep (which holds
    the periodic scale, so that the end of training continues the series). Raises a ValueError for the evaluation
    flags that only the data decides."""
    if args.eval_steps is None:
        return [], 1.0, []
    metrics = args.eval_metrics or default_metrics(args.dataset_name, conditional)
    if args.keep_best_checkpoint is not None and args.keep_best_checkpoint not in metric_keys(metrics):
        raise ValueError(
            f"--keep_best_checkpoint {args.keep_best_checkpoint} is not among the evaluated values "
            f"{metric_keys(metrics)}; add its metric to --eval_metrics."
        )
    if not conditional:  # guidance needs labels; an unconditional model is sampled as it is
        if any(scale != 1.0 for scale in args.eval_guidance_scales or []):
            raise ValueError("--eval_guidance_scales other than 1 need a class-conditional model; this one is not.")
        return metrics, 1.0, [1.0]
    return metrics, args.guidance_scale, sorted({args.guidance_scale, *(args.eval_guidance_scales or [])})


def sampling_scheduler(args: argparse.Namespace) -> SchedulerMixin:
    """--scheduler on the training noise schedule: the sampler of the saved pipeline and of the previews.

    It is built from DDIM's config without clipping of the predicted x0, and that setting rides along in the saved
    config, so that DDIM or DDPM swapped in later (`from_config`) do not clip either. DDIM clips x0 but steps on with
    the unclipped noise estimate, and under guidance (which pushes x0 past [-1, 1]) the two disagree at every step, so
    backgrounds drift to gray and strongly guided samples stop being recognisable (docs/sampling.md). The output is
    clamped to [0, 1] at the end either way. Its steps are spaced by --timestep_spacing, which rides along too.
    """
    no_clipping = DDIMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
        clip_sample=False,
        timestep_spacing=args.timestep_spacing,
    )
    return scheduler_from_name(args.scheduler, no_clipping)


@dataclasses.dataclass
class RunPlan:
    """What can be decided before anything is loaded: the model's config keys, the checkpoint to resume, the Hub
    token, and what an earlier run left in --output_dir."""

    model_keys: dict
    resume_path: str | None
    hub_token: str | None
    previous_run: list[str]

    @classmethod
    def check(cls, args: argparse.Namespace) -> RunPlan:
        """Fails here, before any data or model, on everything that can be checked without loading anything."""
        model_keys = read_model_config(args.model_config, args.task)
        check_resolution(model_keys, args.resolution, args.task)
        resume_path = find_checkpoint_to_resume(args)
        hub_token = resolve_hub_token(args.hub_token) if args.push_to_hub else None
        previous_run = previous_run_outputs(args.output_dir, args.logging_dir)
        if previous_run and args.resume_from_checkpoint is None and not args.overwrite_output_dir:
            raise ValueError(
                f"--output_dir {args.output_dir!r} holds another run ({describe_previous_run(previous_run)}). "
                "Continue it with --resume_from_checkpoint latest, replace it with --overwrite_output_dir, or choose "
                "another --output_dir."
            )
        return cls(model_keys, resume_path, hub_token, previous_run)
