#!/usr/bin/env python
"""Train a (class-conditional) pixel-space diffusion model with Accelerate.

    accelerate launch training/train.py --dataset_name fashion_mnist --resolution 28 --output_dir ddpm-fashion-mnist
    accelerate launch -m hf_ddpm.training.train --dataset_name digits --resolution 16 --model_config digits

One CPU, one GPU or many processes (`accelerate launch --multi_gpu --num_processes N ...`; on a machine without GPUs
the processes train on CPUs over gloo). The flags follow diffusers'
examples/unconditional_image_generation/train_unconditional.py where it has one. The run ends with `--output_dir`
holding a pipeline that `DDPMCFGPipeline.from_pretrained` and `DiffusionPipeline.from_pretrained(...,
trust_remote_code=True)` load, with a model card; on the way it writes checkpoints (`checkpoint-N`), sample previews
(`samples/`) and tensorboard logs, and with --eval_steps evaluations (`evaluation/`, `checkpoint-best`).

The script reads top to bottom: parse the flags and check them, load the data, build the model, train, save.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.checkpointing import load_custom_state
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import SchedulerMixin
from diffusers.optimization import SchedulerType, get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from hf_ddpm.data import ImageData, load_image_data, random_flip
from hf_ddpm.evaluation import METRICS, Evaluator, default_metrics, held_out_size, split_halves
from hf_ddpm.evaluation.registry import METRIC_KEYS, metric_keys
from hf_ddpm.hub import HubPusher, HubPushError, pipeline_ignore_patterns, resolve_hub_token, write_model_card
from hf_ddpm.models.unet_2d import DDPMUNet2DModel
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg import check_num_inference_steps, default_num_inference_steps
from hf_ddpm.previews import log_preview, write_preview
from hf_ddpm.sampling import SCHEDULERS, scheduler_from_name
from hf_ddpm.schedulers import DDIMScheduler, DDPMScheduler
from hf_ddpm.schedulers.scheduling_ddpm import BETA_SCHEDULES
from hf_ddpm.stopping import USAGE_EXIT_STATUS, Preempted, PreemptionSignals, StopRequested, TrainingStopped
from hf_ddpm.training_eval import BestValue, TrainingEvaluation, log_line, scalars
from hf_ddpm.training_utils import (
    DATA_ORDER,
    LOSS_TYPES,
    MICRO_BATCH,
    PREDICTION_TYPES,
    UNET_PRESETS,
    check_resolution,
    choose_torch_threads,
    cpu_bf16_support,
    diffusion_loss,
    drop_class_labels,
    min_snr_weights,
    read_model_config,
    seeded_generator,
    training_target,
    unet_config_from,
)

logger = get_logger(__name__, log_level="INFO")
LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
LOG_FILE = "train.log"


class ConsoleFilter(logging.Filter):
    """The console shows the run's own lines and every warning; the libraries' INFO lines (eight of Accelerate's per
    checkpoint, say) only with --verbose. The log file keeps them all."""

    OWN = ("__main__", "hf_ddpm")

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.levelno >= logging.WARNING or record.name.split(".")[0] in self.OWN


CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
BEST_CHECKPOINT = "checkpoint-best"  # --keep_best_checkpoint; never pruned, never the "latest"
PARTIAL_SUFFIX = ".partial"  # a checkpoint being written; renamed to checkpoint-N once complete
REPLACED_SUFFIX = ".replaced"  # the checkpoint a complete new one replaces, for the moment of the swap
ABANDONED_SUFFIX = ".abandoned"  # a checkpoint past the step a run resumed from: the course the run left
EVALUATION_DIR = "evaluation"  # the final evaluation: metrics.json and plots, shown in the model card
# The folders of a run's output besides the logs and checkpoints: the previews, the evaluation, the pipeline's parts.
RUN_FOLDERS = ("samples", EVALUATION_DIR, "unet", "scheduler")
MANIFEST = "manifest.json"  # in a checkpoint: the size and SHA-256 of each of its files, to tell a damaged one
UPLOAD_GRACE_S = 60.0  # how long a stopping run waits for its pending uploads
# What a failed write says, for the errors a full or limited disk gives.
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "a file hit the file-size limit",
}
# torch.save reports a failed write as a RuntimeError of its C++ stream, safetensors as a SafetensorError: with one
# of these in the message.
WRITE_FAILURE_SIGNS = ("iostream error", "file write failed", "PytorchStreamWriter failed", "I/O error")
DEFAULT_EVAL_SAMPLES = 500
# diffusers' schedules, but for piecewise_constant, which needs step rules of its own.
LR_SCHEDULES = [kind.value for kind in SchedulerType if kind != SchedulerType.PIECEWISE_CONSTANT]


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
        "--model_config",
        default=None,
        help=f"A UNet preset ({', '.join(UNET_PRESETS)}; default 'small') or a JSON file of "
        "DDPMUNet2DModel config keys (missing keys take the defaults). Sample size, channels and "
        "number of classes come from the data.",
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
        "call, on each process, of the --eval_steps evaluations.",
    )
    output.add_argument(
        "--scheduler",
        default="dpm",
        choices=sorted(SCHEDULERS),
        help="The sampler saved with the pipeline, on the training noise schedule, and used by the "
        "previews and evaluations (dpm: DPM-Solver++ (2M)); any other can be swapped in later.",
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
        f"of the real images (default {DEFAULT_EVAL_SAMPLES}, or that half if smaller).",
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
        "leaves out of training).",
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
    given = {word.split("=")[0] for word in (sys.argv[1:] if argv is None else argv) if word.startswith("--")}
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


def sampling_scheduler(args: argparse.Namespace) -> SchedulerMixin:
    """--scheduler on the training noise schedule: the sampler of the saved pipeline and of the previews.

    It is built from DDIM's config without clipping of the predicted x0, and that setting rides along in the saved
    config, so that DDIM or DDPM swapped in later (`from_config`) do not clip either. DDIM clips x0 but steps on with
    the unclipped noise estimate, and under guidance (which pushes x0 past [-1, 1]) the two disagree at every step, so
    backgrounds drift to gray: on digits at guidance 3 that takes the share of recognisable samples from ~100% to
    ~35% (epsilon prediction) or ~0% (v prediction). The output is clamped to [0, 1] at the end either way.
    """
    no_clipping = DDIMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
        clip_sample=False,
    )
    return scheduler_from_name(args.scheduler, no_clipping)


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


def main(argv: list[str] | None = None) -> str:
    """Runs the training that `argv` (the command-line flags) describes; returns the output folder.

    Raises:
        `ValueError`: a flag, the data or the output folder that cannot be used, before any training step.
        `TrainingStopped`: the run ended early (a signal, a non-finite loss, a failed write or upload), having said
            what happened and how to go on; `Preempted` when a signal stopped it after saving a checkpoint.
    """
    args = parse_args(argv)
    plan = RunPlan.check(args)
    accelerator = make_accelerator(args, plan)
    data = load_training_data(args)
    run = TrainingRun(args, accelerator, data, plan)
    try:
        with PreemptionSignals() as signals:
            run.train(signals)
            run.finish()
    finally:
        run.close()
    return args.output_dir


@dataclasses.dataclass
class RunPlan:
    """What can be decided before anything is loaded: the UNet keys, the checkpoint to resume, the Hub token, and
    what an earlier run left in --output_dir."""

    model_keys: dict
    resume_path: str | None
    hub_token: str | None
    previous_run: list[str]

    @classmethod
    def check(cls, args: argparse.Namespace) -> RunPlan:
        """Fails here, before any data or model, on everything that can be checked without loading anything."""
        model_keys = read_model_config(args.model_config)
        check_resolution(model_keys, args.resolution)
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


def make_accelerator(args: argparse.Namespace, plan: RunPlan) -> Accelerator:
    """The Accelerator of the run, with torch's threads set for a CPU and the logs set up."""
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        # `accelerate launch --multi_gpu` starts the processes with torchrun; on a machine without GPUs Accelerate
        # joins them into a (gloo) process group only when told that the processes run on CPUs.
        cpu=launched_distributed_without_gpus(),
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError(
            "Mixed precision fp16 (--mixed_precision or the accelerate config) needs a GPU: on CPU it would train in "
            "fp32 unannounced. Use bf16 or no."
        )
    if plan.resume_path is not None:
        check_checkpoint_matches(plan.resume_path, args)
    if not logging.getLogger().handlers:  # a program that embeds the training keeps its own console
        logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
        logging.getLogger().handlers[0].addFilter(ConsoleFilter(args.verbose))
    if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu":
        bf16_support = cpu_bf16_support()
        (logger.info if bf16_support.native else logger.warning)(bf16_support.message)
    # On a CPU each process takes its share of the idle cores, unless the user chose a count: a torch thread sharing
    # a core with another busy process stalls every parallel region, and accelerate launch's own default is 1.
    threads = choose_torch_threads(accelerator.device.type, args.dataloader_num_workers)
    torch.set_num_threads(threads.threads)
    logger.info(f"torch threads: {threads.threads} ({threads.reason})")
    return accelerator


def load_training_data(args: argparse.Namespace) -> ImageData:
    """The training images, decoded once into memory (batches are then slices of one tensor)."""
    if args.exclude_eval_reference:
        data = held_out_half(read_split(args), args.max_train_samples, args.seed)
    else:
        data = read_split(args, max_samples=args.max_train_samples)
    if args.class_conditional and data.labels is None:
        raise ValueError(
            f"--class_conditional needs class labels, but {data.source} has none: give --label_column, or train "
            "with --unconditional."
        )
    return data


class TrainingRun:
    """One training run, set up and checked: the model, its noise schedule, optimizer, learning-rate schedule and
    EMA; the data loader in an order fixed by (seed, epoch); the evaluation; the output folder and the Hub. `train`
    runs the optimizer steps (and what each of them may trigger: logs, previews, evaluations, checkpoints), `finish`
    saves the pipeline."""

    def __init__(self, args: argparse.Namespace, accelerator: Accelerator, data: ImageData, plan: RunPlan):
        self.args, self.accelerator, self.data, self.plan = args, accelerator, data, plan
        self.conditional = data.labels is not None if args.class_conditional is None else args.class_conditional
        self.eval_metrics, self.eval_scale, self.final_scales = evaluation_settings(args, self.conditional)
        self._build_training(args, accelerator, data, plan)
        self._build_evaluation(args, plan)
        self._prepare_outputs(args, accelerator, plan)
        self._log_to_file(args, accelerator)

    # ----- set-up -----

    def _build_training(self, args, accelerator: Accelerator, data: ImageData, plan: RunPlan) -> None:
        tensors = (data.images, data.labels) if self.conditional else (data.images,)
        if len(data) < args.train_batch_size * accelerator.num_processes:
            raise ValueError(
                f"--train_batch_size {args.train_batch_size} x {accelerator.num_processes} processes is more than the "
                f"{len(data)} training images; use a smaller batch."
            )
        dataloader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(*tensors),
            batch_size=args.train_batch_size,
            sampler=EpochShuffleSampler(len(data), args.seed),
            drop_last=True,  # every step sees a full batch; each epoch leaves out a different random remainder
            num_workers=args.dataloader_num_workers,
            # Every new iterator draws a seed for its workers; from its own generator, not the global one that dropout
            # uses, so that a resumed run (which starts an iterator mid-epoch) keeps dropout in step.
            generator=torch.Generator().manual_seed(args.seed),
        )
        set_seed(args.seed)
        unet_config = unet_config_from(
            plan.model_keys,
            resolution=args.resolution,
            channels=data.images.shape[1],
            num_classes=data.num_classes if self.conditional else None,
        )
        model = DDPMUNet2DModel(**unet_config)
        full_config = as_json({key: value for key, value in model.config.items() if not key.startswith("_")})
        if plan.resume_path is not None:
            check_same_unet(plan.resume_path, full_config)
        self.null_class_id = model.null_class_id
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=args.num_train_timesteps,
            beta_schedule=args.beta_schedule,
            prediction_type=args.prediction_type,
        )
        self.ema = None
        if args.use_ema:
            self.ema = EMAModel(
                model.parameters(),
                decay=args.ema_max_decay,
                use_ema_warmup=True,
                inv_gamma=args.ema_inv_gamma,
                power=args.ema_power,
                foreach=True,
            )
        # The fused kernel updates every tensor in one pass: on CPU, where PyTorch otherwise loops over the tensors
        # one by one, the step is 4-5x faster.
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=args.learning_rate,
            betas=(args.adam_beta1, args.adam_beta2),
            weight_decay=args.adam_weight_decay,
            eps=args.adam_epsilon,
            fused=accelerator.device.type in ("cpu", "cuda"),
        )
        # Batches per process (Accelerate shards whole batches across processes); the last accumulation of an epoch
        # may be short, and still makes an optimizer step.
        self.batches_per_epoch = len(dataloader) // accelerator.num_processes
        self.updates_per_epoch = math.ceil(self.batches_per_epoch / args.gradient_accumulation_steps)
        batching = {
            "processes": accelerator.num_processes,
            "batch_size": args.train_batch_size,
            "accumulation": args.gradient_accumulation_steps,
            "images": len(data),
        }
        self.max_train_steps = args.max_train_steps or args.num_epochs * self.updates_per_epoch
        if plan.resume_path is not None:
            check_same_batching(plan.resume_path, batching, self.max_train_steps)
        self.num_epochs = math.ceil(self.max_train_steps / self.updates_per_epoch)
        # The prepared scheduler steps once per process at every optimizer step (and not at accumulation steps), so
        # the schedule is laid out in optimizer steps x processes.
        lr_scheduler = get_scheduler(
            args.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=self.max_train_steps * accelerator.num_processes,
        )
        self.model, self.optimizer, self.dataloader, self.lr_scheduler = accelerator.prepare(
            model, optimizer, dataloader, lr_scheduler
        )
        # Only the training forward runs compiled; the compiled wrapper shares the eager model's parameters, and
        # everything else (checkpoints, EMA, previews, the saved pipeline) sees the eager model and its own names.
        self.training_model = torch.compile(self.model) if args.torch_compile else self.model
        self.progress = TrainingProgress(args.seed, args.use_ema, full_config, batching, self.max_train_steps)
        accelerator.register_for_checkpointing(self.progress)
        if self.ema is not None:
            self.ema.to(accelerator.device)
            accelerator.register_for_checkpointing(self.ema)

    def _build_evaluation(self, args, plan: RunPlan) -> None:
        """Set up now (real features, floors, judge), so that a metric that cannot be computed fails here."""
        self.evaluation, self.best = None, None
        if args.eval_steps is not None:
            self.evaluation = TrainingEvaluation(
                self.accelerator,
                self._make_evaluator,
                seed=args.seed,
                batch_size=args.eval_batch_size,
                num_inference_steps=args.num_inference_steps,
            )
        if args.keep_best_checkpoint is not None:
            self.best = BestValue(args.keep_best_checkpoint)
            if plan.resume_path is not None:  # a resumed run competes with the best of the run it continues
                self.best = BestValue.read(os.path.join(args.output_dir, BEST_CHECKPOINT), args.keep_best_checkpoint)

    def _make_evaluator(self) -> Evaluator:
        args = self.args
        try:
            real = real_images(args, self.data)
            # The default fits any dataset: a distance's floor has no more held-out images than half the real ones.
            num_samples = args.eval_num_samples or min(DEFAULT_EVAL_SAMPLES, held_out_size(len(real.images)))
            return Evaluator(
                self.pipeline(),
                args.dataset_name or args.train_data_dir,
                metrics=self.eval_metrics,
                num_samples=num_samples,
                classifier=args.eval_classifier,
                split=args.eval_split or "train",
                data=real,
                dataset_config_name=args.dataset_config_name,
                image_column=args.image_column,
                label_column=args.label_column,
                center_crop=args.center_crop,
            )
        except ValueError as error:
            raise ValueError(f"Evaluation (--eval_steps) cannot be set up: {error}") from error

    def _log_to_file(self, args, accelerator: Accelerator) -> None:
        """Every log line, the libraries' included, also goes to --logging_dir/train.log (the main process's), until
        `close`."""
        self.log_file_handler = None
        if accelerator.is_main_process:
            folder = os.path.join(args.output_dir, args.logging_dir)
            os.makedirs(folder, exist_ok=True)
            self.log_file_handler = logging.FileHandler(os.path.join(folder, LOG_FILE), encoding="utf-8")
            self.log_file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
            self.log_file_handler.setLevel(logging.INFO)
            logging.getLogger().addHandler(self.log_file_handler)

    def close(self) -> None:
        """Stops writing the log file (a later run in the same process writes its own)."""
        if getattr(self, "log_file_handler", None) is not None:
            logging.getLogger().removeHandler(self.log_file_handler)
            self.log_file_handler.close()
            self.log_file_handler = None

    def _prepare_outputs(self, args, accelerator: Accelerator, plan: RunPlan) -> None:
        # Every check has passed: only now are the outputs of an earlier run that --overwrite_output_dir replaces
        # deleted.
        if accelerator.is_main_process:
            if plan.previous_run and args.overwrite_output_dir:
                delete_previous_run(plan.previous_run)
            os.makedirs(args.output_dir, exist_ok=True)
            if plan.resume_path is not None:
                set_aside_later_checkpoints(args.output_dir, saved_progress(plan.resume_path).global_step)
        accelerator.wait_for_everyone()
        accelerator.init_trackers("train_ddpm", config=loggable(vars(args)))
        self.pusher = None
        if args.push_to_hub and accelerator.is_main_process:
            repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
            self.pusher = HubPusher(
                repo_id,
                plan.hub_token,
                private=args.hub_private_repo,
                ignore_patterns=pipeline_ignore_patterns(args.logging_dir),
            )

    # ----- the model as a pipeline -----

    def pipeline(self) -> DDPMCFGPipeline:
        """The model as a sampling pipeline, with --scheduler (`sampling_scheduler`)."""
        pipe = DDPMCFGPipeline(
            unet=self.accelerator.unwrap_model(self.model),
            scheduler=sampling_scheduler(self.args),
            id2label=self.data.id2label if self.conditional else None,
            null_class_id=self.null_class_id,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def save_pipeline(self, sample_grid_path: str | None = None, evaluation_dir: str | None = None) -> None:
        """Writes the pipeline folder (EMA weights) into --output_dir, with its model card."""
        args = self.args
        with ema_weights(self.model, self.ema), writing("the pipeline", args.output_dir):
            save_pipeline_atomically(self.pipeline(), args.output_dir)
            write_model_card(
                args.output_dir,
                repo_id=self.pusher.repo_id if self.pusher is not None else None,
                dataset_name=args.dataset_name or args.train_data_dir,
                training_args={key: value for key, value in vars(args).items() if key != "hub_token"},
                sample_grid_path=sample_grid_path,
                id2label=self.data.id2label if self.conditional else None,
                evaluation_dir=evaluation_dir,
            )

    # ----- training -----

    def train(self, signals: PreemptionSignals) -> None:
        """The optimizer steps from where the run stands (step 0, or the resumed checkpoint's) to the last one."""
        args, accelerator = self.args, self.accelerator
        if self.plan.resume_path is not None:
            accelerator.load_state(self.plan.resume_path)
            self.progress.max_train_steps = (
                self.max_train_steps
            )  # this run's, which may go on longer than the saved one
            if self.ema is not None:  # Accelerate loads it onto the CPU, and EMAModel keeps what it is given
                self.ema.to(accelerator.device)
            logger.info(f"Resumed from {self.plan.resume_path} at step {self.progress.global_step}")
            for change in apply_optimizer_flags(self.optimizer, self.lr_scheduler.scheduler, args):
                logger.info(f"Resumed with {change}")
        self.signals = signals
        step = self.progress.global_step
        first_epoch = step // self.updates_per_epoch
        batches_done_in_epoch = (step % self.updates_per_epoch) * args.gradient_accumulation_steps
        logger.info(
            f"{len(self.data)} images from {self.data.source}; "
            f"{'class-conditional' if self.conditional else 'unconditional'} UNet of "
            f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters; {accelerator.num_processes} "
            f"process(es) x batch {args.train_batch_size} x {args.gradient_accumulation_steps} accumulation; "
            f"{self.max_train_steps} optimizer steps ({self.num_epochs} epochs); {torch.get_num_threads()} torch threads"
        )
        if step >= self.max_train_steps:
            logger.info(f"{self.plan.resume_path} is at step {step}: this run's {self.max_train_steps} steps are done.")
            return
        progress_bar = tqdm(
            total=self.max_train_steps, initial=step, unit="step", disable=not accelerator.is_local_main_process
        )
        self.model.train()
        for epoch in range(first_epoch, self.num_epochs):
            skip = batches_done_in_epoch if epoch == first_epoch else 0
            for logs in self._epoch(epoch, skip):
                progress_bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
                progress_bar.update(1)
                self._after_step(self.progress.global_step)
                if self.progress.global_step >= self.max_train_steps:
                    break
        progress_bar.close()

    def _epoch(self, epoch: int, skip: int):
        """The optimizer steps of one epoch, from its batch `skip` on; yields each step's logs once it is done."""
        args, accelerator = self.args, self.accelerator
        self.dataloader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(self.dataloader, skip) if skip else self.dataloader
        losses = []
        for batch_index, batch in enumerate(batches, start=skip):
            generator = seeded_generator(
                args.seed, MICRO_BATCH, accelerator.process_index, epoch * self.batches_per_epoch + batch_index
            )
            with accelerator.accumulate(self.model):
                loss = training_loss(
                    self.training_model, self.noise_scheduler, batch, generator, args, self.null_class_id
                )
                accelerator.backward(loss)
                losses.append(loss.detach())
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    # Before the optimizer step: weights that took a non-finite step are never saved.
                    check_finite(
                        losses,
                        grad_norm,
                        self.progress.global_step + 1,
                        args,
                        grad_scaler=accelerator.scaler is not None,
                    )
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            self.progress.global_step += 1
            if self.ema is not None:
                self.ema.step(self.model.parameters())
            mean_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
            losses = []
            logs = {"loss": mean_loss, "lr": self.lr_scheduler.get_last_lr()[0], "grad_norm": grad_norm.item()}
            if self.ema is not None:
                logs["ema_decay"] = self.ema.cur_decay_value
            accelerator.log(logs, step=self.progress.global_step)
            yield logs

    def _after_step(self, step: int) -> None:
        """What optimizer step `step` triggers, in this order: a preview, an evaluation, a checkpoint; then the stop
        check, which every process makes together."""
        args = self.args
        if step % args.save_images_steps == 0 and self.accelerator.is_main_process:
            self._preview(step)
        # Every process samples its share; the last step's evaluation is the final one, in `finish`.
        if self.evaluation is not None and step % args.eval_steps == 0 and step < self.max_train_steps:
            self._evaluate(step)
        if step % args.checkpointing_steps == 0:
            self._checkpoint(step)
        if self._stop_requested():
            self._stop(step)

    def _preview(self, step: int) -> None:
        def stop_if_signalled(pipe, index, timestep, callback_kwargs):
            self.signals.raise_if_received()
            return callback_kwargs

        samples_dir = os.path.join(self.args.output_dir, "samples")
        try:
            with (
                ema_weights(self.model, self.ema),
                evaluation_mode(self.model),
                writing("a preview", self.args.output_dir),
            ):
                preview = write_preview(
                    self.pipeline(),
                    samples_dir,
                    f"step-{step:06d}",
                    num_images=self.args.eval_batch_size,
                    guidance_scale=self.args.guidance_scale,
                    num_inference_steps=self.args.num_inference_steps,
                    seed=self.args.seed,
                    callback_on_step_end=stop_if_signalled,
                )
        except StopRequested:  # the checkpoint matters, not the preview: the stop check comes right after
            return
        if self.args.report_to == "tensorboard":
            log_preview(self.accelerator.get_tracker("tensorboard", unwrap=True), preview, step)

    def _evaluate(self, step: int) -> None:
        try:
            with ema_weights(self.model, self.ema), evaluation_mode(self.model):
                row = self.evaluation.measure(self.pipeline(), self.eval_scale, stop=self._signal_received)
        except StopRequested:
            return
        self.record_evaluation(row, step)

    def record_evaluation(self, row: dict, step: int) -> None:
        """Logs an evaluation at --guidance_scale; keeps its state as checkpoint-best when it is the best so far."""
        self.accelerator.log(scalars(row, self.eval_metrics), step=step)
        logger.info(f"Evaluation at step {step} ({row['num_samples']} samples): {log_line(row, self.eval_metrics)}")
        best = self.best
        if best is None or not best.improved_by(row[best.metric]):
            return
        best.value, best.step = row[best.metric], step

        def add_pipeline_and_value(checkpoint: str) -> None:
            with ema_weights(self.model, self.ema):
                self.pipeline().save_pretrained(os.path.join(checkpoint, "pipeline"))
            best.write(checkpoint)

        save_state_atomically(
            self.accelerator, os.path.join(self.args.output_dir, BEST_CHECKPOINT), add_pipeline_and_value
        )

    def _checkpoint(self, step: int) -> None:
        save_checkpoint(self.accelerator, self.args.output_dir, step, self.args.checkpoints_total_limit)
        if self.accelerator.is_main_process:
            self.save_pipeline()
            if self.pusher is not None:
                self.pusher.push_async(self.args.output_dir, f"Step {step}")

    def _signal_received(self) -> bool:
        return self.signals.received is not None

    def _stop_requested(self) -> bool:
        """Whether any process received a preemption signal; every process asks at the same step, and all agree."""
        if self._signal_received():
            self.accelerator.set_trigger()
        return self.accelerator.check_trigger()

    def _stop(self, step: int) -> None:
        """Saves a checkpoint of `step` (unless it was just saved), gives pending uploads a bounded time, and raises
        `Preempted` saying how to resume."""
        path = os.path.join(self.args.output_dir, f"checkpoint-{step}")
        if step % self.args.checkpointing_steps != 0:
            self._checkpoint(step)
        if self.pusher is not None:
            try:
                self.pusher.wait(timeout=UPLOAD_GRACE_S)
            except HubPushError as error:  # the checkpoint is what matters now; the upload can follow later
                logger.warning(str(error))
        self._end_processes()
        raise Preempted(
            f"Stopped by {self.signals.received or 'a signal to another process'} after step {step} of "
            f"{self.max_train_steps}: the training state is saved in {path}. Resume with the same flags and "
            "--resume_from_checkpoint latest."
        )

    # ----- the end -----

    def finish(self) -> None:
        """The final evaluation (all processes) at every --eval_guidance_scales; the pipeline (EMA weights), a final
        sample grid and the model card; the last push."""
        args, accelerator = self.args, self.accelerator
        accelerator.wait_for_everyone()
        evaluation_dir = None
        if self.evaluation is not None:
            evaluation_dir = os.path.join(args.output_dir, EVALUATION_DIR)
            with ema_weights(self.model, self.ema), evaluation_mode(self.model):
                info = {"step": self.progress.global_step, "seed": args.seed}
                rows = self.evaluation.sweep(self.pipeline(), self.final_scales, evaluation_dir, info=info)
            at_scale = next(row for row in rows if row["guidance_scale"] == self.eval_scale)
            self.record_evaluation(at_scale, self.progress.global_step)
        if accelerator.is_main_process:
            with (
                ema_weights(self.model, self.ema),
                evaluation_mode(self.model),
                writing("the samples", args.output_dir),
            ):
                # Beside the pipeline, not in samples/, so that it travels to the Hub with the model card.
                final = write_preview(
                    self.pipeline(),
                    args.output_dir,
                    "samples",
                    num_images=args.eval_batch_size,
                    guidance_scale=args.guidance_scale,
                    num_inference_steps=args.num_inference_steps,
                    seed=args.seed,
                )
            self.save_pipeline(sample_grid_path=final.grid_path, evaluation_dir=evaluation_dir)
            logger.info(f"Saved the pipeline to {args.output_dir}")
        push_error = None
        if self.pusher is not None:
            try:
                self.pusher.push_blocking(args.output_dir, "End of training")
            except HubPushError as error:  # raised once the run has ended: everything is saved locally
                push_error = error
        self._end_processes()
        if push_error is not None:
            raise push_error

    def _end_processes(self) -> None:
        """Ends the trackers and the process group. The DDP wrapper goes first, while the group is still registered:
        its gradient reducer holds the group, and when the reducer was the last to let go (at exit), the group's gloo
        threads were joined from its destructor under the GIL that one of them waited for, a hang seen once in about
        ten two-process runs. Released first, the reducer's last work ends while all processes meet."""
        self.model = self.training_model = self.accelerator.unwrap_model(self.model)
        self.accelerator.free_memory()
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def training_loss(
    model: torch.nn.Module,
    noise_scheduler: DDPMScheduler,
    batch: list[torch.Tensor],
    generator: torch.Generator,
    args: argparse.Namespace,
    null_class_id: int | None,
) -> torch.Tensor:
    """The loss of one batch: noise the images at random timesteps, predict, compare with the target."""
    clean = batch[0]
    if args.random_flip:
        clean = random_flip(clean, generator=generator)
    device = clean.device
    noise = torch.randn(clean.shape, generator=generator).to(device)
    timesteps = torch.randint(0, args.num_train_timesteps, (clean.shape[0],), generator=generator).to(device)
    labels = None
    if null_class_id is not None:
        labels = drop_class_labels(batch[1], args.cond_drop_prob, null_class_id, generator)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    prediction = model(noisy, timesteps, class_labels=labels).sample
    target = training_target(args.prediction_type, noise_scheduler, clean, noise, timesteps)
    weights = None
    if args.snr_gamma is not None:
        weights = min_snr_weights(noise_scheduler.alphas_cumprod, timesteps, args.snr_gamma, args.prediction_type)
    return diffusion_loss(prediction, target, args.loss_type, weights)


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A new random order of the whole dataset every epoch, drawn from (seed, epoch) alone: the same on every process
    (Accelerate then deals each process different batches of it) and the same in a resumed run."""

    def __init__(self, num_samples: int, seed: int):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        order = torch.randperm(self.num_samples, generator=seeded_generator(self.seed, DATA_ORDER, self.epoch))
        return iter(order.tolist())


class TrainingProgress:
    """What a checkpoint records besides weights, optimizer, schedule, EMA and RNG states: the optimizer steps done
    (which fix the data position), the seed of the run's random streams, whether it keeps an EMA (which decides
    what else the checkpoint holds), the UNet's config (which the weights must fit), how the steps were batched
    (processes, batch size, accumulation and images: the data position and the learning-rate schedule of a step hold
    only for those), and the run's optimizer steps in all."""

    def __init__(
        self,
        seed: int,
        use_ema: bool,
        unet_config: dict | None = None,
        batching: dict | None = None,
        max_train_steps: int | None = None,
    ):
        self.global_step = 0
        self.seed = seed
        self.use_ema = use_ema
        self.unet_config = unet_config
        self.batching = batching
        self.max_train_steps = max_train_steps

    def state_dict(self) -> dict:
        return {
            "global_step": self.global_step,
            "seed": self.seed,
            "use_ema": self.use_ema,
            "unet_config": self.unet_config,
            "batching": self.batching,
            "max_train_steps": self.max_train_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.global_step, self.seed, self.use_ema = state["global_step"], state["seed"], state["use_ema"]
        # Absent from checkpoints of older versions.
        self.unet_config, self.batching = state.get("unet_config"), state.get("batching")
        self.max_train_steps = state.get("max_train_steps")


def saved_progress(path: str) -> TrainingProgress:
    saved = TrainingProgress(seed=None, use_ema=None)
    load_custom_state(saved, path, index=0)  # the first object registered for checkpointing: the progress
    return saved


def check_checkpoint_matches(path: str, args: argparse.Namespace) -> None:
    """Raises a ValueError, before anything is loaded, when the flags cannot continue the run saved in `path`."""
    saved = saved_progress(path)
    if saved.seed != args.seed:
        raise ValueError(
            f"--seed {args.seed} differs from the seed of {path} ({saved.seed}); resume with --seed {saved.seed} to "
            "continue that run."
        )
    if saved.use_ema != args.use_ema:
        flag = "--use_ema" if saved.use_ema else "no --use_ema"
        raise ValueError(f"{path} was saved by a run with {flag}: resume it with {flag} as well.")


def as_json(config: dict) -> dict:
    """The config as JSON would give it back (tuples as lists), for comparing."""
    return json.loads(json.dumps(config))


def check_same_unet(path: str, unet_config: dict) -> None:
    """Raises a ValueError naming the keys of the UNet config (`unet_config`, as JSON gives it back; from
    --model_config, --resolution and the data) in which the run to resume differs from the one `path` saved: its
    weights would not fit."""
    saved = saved_progress(path).unet_config
    if saved is None:
        return
    wanted = unet_config
    differing = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
    if differing:
        details = "; ".join(f"{key}: saved {saved.get(key)!r}, now {wanted.get(key)!r}" for key in differing)
        raise ValueError(
            f"{path} holds a UNet of another configuration ({details}). Resume with the --model_config, --resolution "
            "and data of that run, or start a new run in another --output_dir."
        )


def check_same_batching(path: str, batching: dict, max_train_steps: int) -> None:
    """Raises a ValueError when the run to resume batches its steps (`batching`: processes, batch size, accumulation,
    images) otherwise than the run that saved `path`, and steps are left, by the saved run's count or by this run's
    `max_train_steps`: its step count would stand for another data position and another point of the learning-rate
    schedule. A finished run that this run takes no further may be evaluated and saved again on any batching."""
    progress = saved_progress(path)
    saved = progress.batching
    finished = progress.global_step >= max(progress.max_train_steps or math.inf, max_train_steps)
    if saved is None or saved == batching or finished:
        return

    def describe(layout: dict) -> str:
        return (
            f"{layout['processes']} process(es) x --train_batch_size {layout['batch_size']} x "
            f"--gradient_accumulation_steps {layout['accumulation']} on {layout['images']} images"
        )

    raise ValueError(
        f"{path} was saved by a run of {describe(saved)}; this run has {describe(batching)}. A checkpoint's step "
        "stands for a data position and a point of the learning-rate schedule only in the run that saved it: resume "
        "with that run's processes, batch, accumulation and data, or start a new run in another --output_dir."
    )


@contextlib.contextmanager
def ema_weights(model: torch.nn.Module, ema: EMAModel | None):
    """Puts the EMA weights into `model` for the duration, then the training weights back, bit for bit."""
    if ema is None:
        yield
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield
    finally:
        ema.restore(model.parameters())


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module):
    model.eval()
    try:
        yield
    finally:
        model.train()


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in `output_dir` as (step, path), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_NAME.fullmatch(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def find_checkpoint_to_resume(args: argparse.Namespace) -> str | None:
    """The checkpoint that --resume_from_checkpoint names; `None` for a fresh start. `latest` passes over damaged
    checkpoints (a file missing or truncated) with a warning naming each; a damaged one named explicitly is an
    error."""
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        for _, path in reversed(list_checkpoints(args.output_dir)):
            damage = checkpoint_damage(path)
            if damage is None:
                return path
            warnings.warn(f"Skipping the damaged checkpoint {path}: {damage}.", stacklevel=2)
        return None
    for candidate in (args.resume_from_checkpoint, os.path.join(args.output_dir, args.resume_from_checkpoint)):
        if os.path.isdir(candidate):
            damage = checkpoint_damage(candidate)
            if damage is not None:
                raise ValueError(
                    f"--resume_from_checkpoint {candidate!r} is damaged: {damage}. Give another checkpoint, or "
                    "'latest' to take the newest complete one."
                )
            return candidate
    raise ValueError(
        f"--resume_from_checkpoint {args.resume_from_checkpoint!r} does not exist (as a path, or as a checkpoint in "
        f"--output_dir {args.output_dir!r}); give 'latest' or an existing checkpoint-N folder."
    )


def previous_run_outputs(output_dir: str, logging_dir: str) -> list[str]:
    """The paths in `output_dir` that a training run writes and that exist: the pipeline (`model_index.json`, its code
    file and component folders, the model card), the final preview, samples, logs, the evaluation and checkpoints
    (the best one included). Anything else in the folder is not ours, and --overwrite_output_dir leaves it alone."""
    if not os.path.isdir(output_dir):
        return []
    names = ["samples", "samples.png", "samples.gif", logging_dir, EVALUATION_DIR]
    index_path = os.path.join(output_dir, "model_index.json")
    if os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as index_file:
            index = json.load(index_file)
        components = [key for key, value in index.items() if not key.startswith("_") and isinstance(value, list)]
        code = index.get("_class_name")
        code_files = [f"{code[0]}.py"] if isinstance(code, list) and code and isinstance(code[0], str) else []
        names += ["model_index.json", "README.md", *components, *code_files]
    checkpoints = [name for name in os.listdir(output_dir) if is_checkpoint_folder(name)]
    names += sorted(checkpoints)
    return [os.path.join(output_dir, name) for name in names if os.path.exists(os.path.join(output_dir, name))]


def is_checkpoint_folder(name: str) -> bool:
    """`checkpoint-N` or `checkpoint-best`, complete, being written, being replaced, or abandoned."""
    base = name.removesuffix(PARTIAL_SUFFIX).removesuffix(REPLACED_SUFFIX).removesuffix(ABANDONED_SUFFIX)
    return base == BEST_CHECKPOINT or CHECKPOINT_NAME.fullmatch(base) is not None


def describe_previous_run(paths: list[str]) -> str:
    names = [os.path.basename(path) for path in paths]
    return ", ".join(names[:6] + ([f"and {len(names) - 6} more"] if len(names) > 6 else []))


def delete_previous_run(paths: list[str]) -> None:
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def set_aside_later_checkpoints(output_dir: str, step: int) -> None:
    """Renames the checkpoints in `output_dir` past `step`, where the run resumes, to `checkpoint-N.abandoned`
    (replacing an older abandoned copy of the same step): they belong to the course the run left, which `latest`
    must not go back to, nor pruning count."""
    for saved_step, path in list_checkpoints(output_dir):
        if saved_step > step:
            shutil.rmtree(path + ABANDONED_SUFFIX, ignore_errors=True)
            os.rename(path, path + ABANDONED_SUFFIX)
            logger.warning(
                f"Set {path} aside as {path + ABANDONED_SUFFIX}: it is past step {step}, where this run resumes."
            )


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, total_limit: int | None) -> None:
    """`accelerator.save_state` into `output_dir/checkpoint-{step}`, all or nothing (`save_state_atomically`). Once
    it is complete, the oldest checkpoints go until at most `total_limit` remain: a crash while saving always leaves
    the previous checkpoint to resume from."""
    save_state_atomically(accelerator, os.path.join(output_dir, f"checkpoint-{step}"))
    if accelerator.is_main_process:
        if total_limit is not None:
            older = [path for saved_step, path in list_checkpoints(output_dir) if saved_step != step]
            for path in older[: max(0, len(older) - total_limit + 1)]:
                shutil.rmtree(path)
    accelerator.wait_for_everyone()


def save_state_atomically(accelerator: Accelerator, final: str, add_files: Callable[[str], None] | None = None) -> None:
    """`accelerator.save_state` into the folder `final`, all or nothing: the state is written under a temporary name
    (with whatever `add_files(folder)` adds on the main process, and a manifest of every file) and renamed when
    complete, so a crash never leaves a checkpoint that looks whole but is not. A folder already at `final` (a stale
    one from a run resumed from an earlier step, or the previous best) is set aside until the new one is in place.
    A write that fails (a full disk, a quota, a file-size limit) removes the partial folder and raises
    `TrainingStopped`; the earlier checkpoints stay."""
    partial, replaced = final + PARTIAL_SUFFIX, final + REPLACED_SUFFIX
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        with writing(os.path.basename(final), os.path.dirname(final)):
            accelerator.save_state(partial)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                if add_files is not None:
                    add_files(partial)
                write_manifest(partial)
    except TrainingStopped:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if accelerator.is_main_process:
        shutil.rmtree(replaced, ignore_errors=True)
        if os.path.exists(final):
            os.rename(final, replaced)
        os.rename(partial, final)
        shutil.rmtree(replaced, ignore_errors=True)
        logger.info(f"Saved {final}")
    accelerator.wait_for_everyone()


@contextlib.contextmanager
def writing(what: str, output_dir: str):
    """Turns a failed write of `what` into `TrainingStopped` saying why (a full disk, a quota, a file-size limit) and
    which checkpoint is there to resume from."""
    try:
        yield
    except Exception as error:
        reason = write_failure(error)
        if reason is None:
            raise  # a bug, not the disk
        kept = list_checkpoints(output_dir)
        newest = f"the newest complete checkpoint is {kept[-1][1]}" if kept else "no checkpoint was complete yet"
        raise TrainingStopped(
            f"Could not write {what} in {output_dir}: {reason} ({error}). Nothing half-written is left in its place; "
            f"{newest}. Free space (or raise the limit) and resume with --resume_from_checkpoint latest."
        ) from error


def write_failure(error: Exception) -> str | None:
    """Why a write failed, when `error` is a failed write (by the OS, torch.save or safetensors); else `None`."""
    if isinstance(error, OSError):
        return DISK_ERRORS.get(error.errno, error.strerror or str(error))
    if any(sign in str(error) for sign in WRITE_FAILURE_SIGNS):
        codes = {f"os error {number}": reason for number, reason in DISK_ERRORS.items()}
        generic = "a file could not be written (a full disk, a quota or a file-size limit)"
        return next((reason for code, reason in codes.items() if code in str(error)), generic)
    return None


def write_manifest(folder: str) -> None:
    """Records the size and SHA-256 of every file in `folder` (a checkpoint being written) in `MANIFEST`."""
    files = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as file:
        json.dump(files, file, indent=1)


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_damage(folder: str) -> str | None:
    """What is wrong with the checkpoint `folder` (a file missing, truncated or changed, against its manifest), or
    `None` when it is whole. Checkpoints written before manifests existed are taken as they are."""
    manifest_path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest_path):
        return None
    try:
        with open(manifest_path, encoding="utf-8") as file:
            manifest = json.load(file)
    except (OSError, ValueError) as error:
        return f"its {MANIFEST} cannot be read ({error})"
    for name, expected in manifest.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if os.path.getsize(path) != expected["size"]:
            return f"{name} has {os.path.getsize(path)} bytes instead of {expected['size']}"
        if file_sha256(path) != expected["sha256"]:
            return f"{name} does not hold what was saved (SHA-256 differs)"
    return None


def save_pipeline_atomically(pipe: DDPMCFGPipeline, output_dir: str) -> None:
    """`pipe.save_pretrained(output_dir)`, written first into a folder beside it and then moved into place entry by
    entry (renames, which need no space): a write that fails leaves the previous pipeline as it was."""
    staging = os.path.join(output_dir, ".pipeline" + PARTIAL_SUFFIX)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        pipe.save_pretrained(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in os.listdir(staging):
        target, replaced = os.path.join(output_dir, name), os.path.join(output_dir, name + REPLACED_SUFFIX)
        if os.path.isdir(target):
            shutil.rmtree(replaced, ignore_errors=True)  # left by a save killed between the two renames
            os.rename(target, replaced)
        os.replace(os.path.join(staging, name), target)
        shutil.rmtree(replaced, ignore_errors=True)
    os.rmdir(staging)


def apply_optimizer_flags(
    optimizer: torch.optim.Optimizer, lr_scheduler: torch.optim.lr_scheduler.LambdaLR, args: argparse.Namespace
) -> list[str]:
    """Puts this run's --learning_rate and AdamW flags into an optimizer and learning-rate schedule loaded from a
    checkpoint, which hold the values of the run that saved them: a run resumed with a lower learning rate (after a
    non-finite loss, say) trains with it, at the same point of the schedule. Returns what changed, "flag: saved ->
    now", for the log; nothing when the flags are those of the saved run."""
    wanted = {
        "lr": args.learning_rate,
        "betas": (args.adam_beta1, args.adam_beta2),
        "eps": args.adam_epsilon,
        "weight_decay": args.adam_weight_decay,
    }
    flags = {
        "lr": "--learning_rate",
        "betas": "--adam_beta1/--adam_beta2",
        "eps": "--adam_epsilon",
        "weight_decay": "--adam_weight_decay",
    }
    changes = set()
    for index, group in enumerate(optimizer.param_groups):
        saved = {
            "lr": group["initial_lr"],
            "betas": tuple(group["betas"]),
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
        }
        for key in [key for key in wanted if saved[key] != wanted[key]]:
            changes.add(f"{flags[key]}: saved {saved[key]} -> now {wanted[key]}")
            if key != "lr":
                group[key] = wanted[key]
                continue
            # Every diffusers schedule is a LambdaLR: the base rate times a factor of the step.
            group["initial_lr"] = lr_scheduler.base_lrs[index] = wanted["lr"]
            group["lr"] = wanted["lr"] * lr_scheduler.lr_lambdas[index](lr_scheduler.last_epoch)
    return sorted(changes)


def check_finite(
    losses: list[torch.Tensor], grad_norm: torch.Tensor, step: int, args: argparse.Namespace, grad_scaler: bool = False
) -> None:
    """Raises `TrainingStopped` when optimizer step `step` would be taken on a non-finite loss or gradient. With
    fp16's `grad_scaler`, a non-finite gradient is the scaler's overflow signal: it skips that step and lowers its
    scale, as it does every time its scale has grown too large."""
    loss = torch.stack(losses)
    if bool(torch.isfinite(loss).all()) and (grad_scaler or math.isfinite(float(grad_norm))):
        return
    what = f"loss {loss.tolist()}" if not bool(torch.isfinite(loss).all()) else f"gradient norm {float(grad_norm)}"
    raise TrainingStopped(
        f"Step {step} has a non-finite {what}: the step was not taken and no checkpoint of these weights written. "
        f"Usual causes: a learning rate too high (--learning_rate {args.learning_rate:g}: try a tenth), no warm-up "
        f"(--lr_warmup_steps {args.lr_warmup_steps}), or fp16 overflow (--mixed_precision fp16: try bf16). Resume from "
        "the last checkpoint with --resume_from_checkpoint latest after changing them."
    )


def launched_distributed_without_gpus() -> bool:
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return launched and not torch.cuda.is_available()


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


def read_split(args: argparse.Namespace, max_samples: int | None = None, split: str = "train") -> ImageData:
    """The dataset's `split` at the training resolution (a random subset of `max_samples`, if given)."""
    return load_image_data(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        image_column=args.image_column,
        label_column=args.label_column,
        resolution=args.resolution,
        center_crop=args.center_crop,
        cache_dir=args.cache_dir,
        max_samples=max_samples,
        seed=args.seed,
        skip_corrupt_images=args.skip_corrupt_images,
        split=split,
    )


def held_out_half(data: ImageData, max_samples: int | None, seed: int) -> ImageData:
    """The images of `data` outside evaluation's reference half (a random subset of `max_samples` of them, drawn with
    `seed`, if given), in their order in the dataset."""
    if len(data) < 2:
        raise ValueError(f"--exclude_eval_reference needs at least 2 images to halve; {data.source} has {len(data)}.")
    held_out, _ = split_halves(len(data))
    if max_samples is not None and max_samples < len(held_out):
        held_out = held_out[torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed))[:max_samples]]
    held_out = held_out.sort().values
    kept = f"the held-out half, {len(held_out)} of {len(data)} images (evaluation's reference half left out)"
    return data.select(held_out, source=f"{data.source}: {kept}")


def real_images(args: argparse.Namespace, data: ImageData) -> ImageData:
    """The real side of evaluation: the dataset's whole split at the training resolution, as `evaluate` (and
    `hf-ddpm evaluate`) read it, so that the numbers and the cached real features are theirs. That is the training
    data, unless --max_train_samples or --exclude_eval_reference trained on part of it: then the split is read
    again, whole, because the model is meant to learn the distribution, not the subset, the real-vs-real floor needs
    more images than a small subset has, and the reference half is the one left out of training.
    Never flipped: --random_flip augments training; it does not change the data the model is measured against.
    With --eval_split, that split, whole."""
    if args.eval_split not in (None, "train"):
        return read_split(args, split=args.eval_split)
    if args.max_train_samples is None and not args.exclude_eval_reference:
        return data
    return read_split(args)


def loggable(config: dict) -> dict:
    """The flags as tensorboard hyperparameters: plain values only, and never the Hub token."""
    return {
        key: value for key, value in config.items() if key != "hub_token" and isinstance(value, (int, float, str, bool))
    }


def command_line(argv: list[str] | None = None) -> int:
    """`main` as a command: a usage or data error, or a run that stopped early, ends with its message on stderr and
    an exit status (2 for bad flags or data, `PREEMPTED_EXIT_STATUS` when preempted, 1 otherwise); tracebacks are
    for bugs only."""
    try:
        main(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_EXIT_STATUS
    except TrainingStopped as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return stopped.exit_status
    except HubPushError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(command_line())
