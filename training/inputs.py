"""What a run reads: its training images (all of a split, a random subset, or the held-out half that leaves
evaluation's reference half out) and the loader that deals them in batches, the real images its evaluation measures
against, and the labelled images that measure a classifier's accuracy (--task classifier)."""

from __future__ import annotations

import argparse

import torch
from accelerate.logging import get_logger

from hf_ddpm.data import ImageData, load_image_data
from hf_ddpm.evaluation import split_halves
from hf_ddpm.training.step import EpochShuffleSampler

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


def accuracy_images(args: argparse.Namespace, data: ImageData, max_images: int) -> ImageData:
    """The labelled images that measure a classifier's accuracy at the end of its training (`data` being its training
    images): --eval_split's, else the 'test' split, else the reference half that --exclude_eval_reference left out of
    training; a dataset of one split trained whole leaves only the training images, which flatter the classifier (a
    warning says so). At most `max_images` of them, drawn with --seed."""
    if args.eval_split is not None:
        return read_split(args, max_samples=max_images, split=args.eval_split)
    try:
        return read_split(args, max_samples=max_images, split="test")
    except ValueError as error:
        no_test_split = str(error)
    if args.exclude_eval_reference:
        every = read_split(args)
        images = split_halves(len(every))[1]
        kept = f"the reference half of the training split, left out of training ({no_test_split})"
    else:
        every, images = data, torch.arange(len(data))
        kept = "the training images: there is no test split to measure on"
        logger.warning(
            f"The classifier's accuracy is measured on {kept} ({no_test_split}); it flatters the classifier. Give "
            "--eval_split, or train with --exclude_eval_reference to measure on images it never saw."
        )
    if max_images < len(images):
        images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:max_images]]
    return every.select(images.sort().values, source=f"{every.source}: {kept}")


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
    if args.task == "classifier" and (data.labels is None or data.num_classes < 2):
        found = "none" if data.labels is None else f"{data.num_classes} class"
        raise ValueError(
            f"--task classifier needs class labels of at least 2 classes, but {data.source} has {found}: give "
            "--label_column, or a labelled dataset."
        )
    return data


def training_dataloader(
    args: argparse.Namespace, data: ImageData, conditional: bool, num_processes: int
) -> torch.utils.data.DataLoader:
    """The training images (with their labels when `conditional`) in full batches of --train_batch_size, in an order
    drawn from (--seed, epoch) alone (`EpochShuffleSampler`), before Accelerate deals the batches to the processes."""
    tensors = (data.images, data.labels) if conditional else (data.images,)
    if len(data) < args.train_batch_size * num_processes:
        raise ValueError(
            f"--train_batch_size {args.train_batch_size} x {num_processes} processes is more than the "
            f"{len(data)} training images; use a smaller batch."
        )
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*tensors),
        batch_size=args.train_batch_size,
        sampler=EpochShuffleSampler(len(data), args.seed),
        drop_last=True,  # every step sees a full batch; each epoch leaves out a different random remainder
        num_workers=args.dataloader_num_workers,
        # Every new iterator draws a seed for its workers; from its own generator, not the global one that dropout
        # uses, so that a resumed run (which starts an iterator mid-epoch) keeps dropout in step.
        generator=torch.Generator().manual_seed(args.seed),
    )
