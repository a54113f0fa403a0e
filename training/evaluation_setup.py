"""The evaluation that a run's flags ask for, set up before its first step: with --eval_steps, the samples of the
model being trained measured against real images of its data set (an `Evaluator`, built now so that a metric that
cannot be computed stops the run before any training); with --keep_best_checkpoint, the best value so far, which a
resumed run reads back from checkpoint-best so that it competes with the best of the run it continues."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from accelerate import Accelerator

from hf_ddpm.data import ImageData
from hf_ddpm.evaluation import Evaluator, held_out_size
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.training.checkpoints import BEST_CHECKPOINT
from hf_ddpm.training.flags import DEFAULT_EVAL_SAMPLES
from hf_ddpm.training.inputs import real_images
from hf_ddpm.training_eval import BestValue, TrainingEvaluation


def training_evaluation(
    args: argparse.Namespace, accelerator: Accelerator, make_evaluator: Callable[[], Evaluator]
) -> TrainingEvaluation | None:
    """With --eval_steps, the run's evaluations, all against the evaluator that `make_evaluator` builds (on the main
    process, now); `None` without."""
    if args.eval_steps is None:
        return None
    return TrainingEvaluation(
        accelerator,
        make_evaluator,
        seed=args.seed,
        batch_size=args.eval_batch_size,
        num_inference_steps=args.num_inference_steps,
    )


def make_evaluator(
    args: argparse.Namespace, data: ImageData, pipeline: Callable[[], DDPMCFGPipeline], metrics: list[str]
) -> Evaluator:
    """The evaluator of --eval_steps: the samples of `pipeline()` measured by `metrics` against the real images of the
    training data's split (`real_images`). A setting that cannot be measured raises a `ValueError` naming
    --eval_steps."""
    try:
        real = real_images(args, data)
        # The default fits any dataset: a distance's floor has no more held-out images than half the real ones.
        num_samples = args.eval_num_samples or min(DEFAULT_EVAL_SAMPLES, held_out_size(len(real.images)))
        return Evaluator(
            pipeline(),
            args.dataset_name or args.train_data_dir,
            metrics=metrics,
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


def best_so_far(args: argparse.Namespace, resume_path: str | None) -> BestValue | None:
    """With --keep_best_checkpoint, the best value to beat: none yet, or when resuming the one checkpoint-best
    records; `None` without."""
    if args.keep_best_checkpoint is None:
        return None
    if resume_path is not None:
        return BestValue.read(os.path.join(args.output_dir, BEST_CHECKPOINT), args.keep_best_checkpoint)
    return BestValue(args.keep_best_checkpoint)
