"""What a run reads: its training images (all of a split, a random subset, or the held-out half that leaves
evaluation's reference half out), and the real images its evaluation measures against."""

from __future__ import annotations

import argparse

import torch
from accelerate.logging import get_logger

from hf_ddpm.data import ImageData, load_image_data
from hf_ddpm.evaluation import split_halves

logger = get_logger(__name__, log_level="INFO")


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
