"""`evaluate` (and its `Evaluator`): sample a pipeline at every combination of guidance scale, steps and scheduler, and measure the samples
against real images of the dataset it was trained on. Backs `hf-ddpm evaluate` and evaluation during training.

Every combination draws the same images: image i is asked for class `i % num_classes` and starts from the noise of
seed `seed + i` (one generator per image), so the rows of a sweep differ only in what the sweep changes. Each image's
features are computed once per feature space and shared by the Fréchet distance, KID and precision/recall; the real
features come from the cache (`reference.py`).
"""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cpu import MIXED_PRECISION_CHOICES, resolve_mixed_precision
from ..data import DIGITS, ImageData, load_image_data
from ..pipelines.pipeline_ddpm_cfg import check_guidance_interval, check_num_inference_steps
from ..sampling import SCHEDULERS, scheduler_from_name
from . import metrics as metric_functions
from .domain import DomainClassifier, DomainFeatures, domain_classifier
from .features import DEFAULT_DINOV2_MODEL, DigitsFeatures, DinoV2Features, FeatureExtractor, InceptionFeatures
from .judges import (
    DigitClassifier,
    ImageClassifierJudge,
    class_agreement,
    classify_in_batches,
    digit_classifier,
    match_labels,
)
from .metrics import MIN_SAMPLES, frechet_distance
from .reference import FEATURE_BATCH_SIZE, extract_features, held_out_size, real_features, split_halves
from .registry import FRECHET_METRICS, METRICS, REGISTRY
from .results import EvaluationResult

SPACE_METRICS = {space: metric for metric, space in FRECHET_METRICS.items()}
DEFAULT_NUM_SAMPLES = 1000  # or as many as the held-out half holds, if fewer
GRID_IMAGES_PER_CLASS = 4  # kept per combination for the side-by-side sample grids


def default_metrics(dataset: str | None, conditional: bool) -> list[str]:
    """Offline digits metrics for the built-in digits. Elsewhere, for a class-conditional model (so labelled data),
    the offline metrics of a classifier trained on the dataset itself (`fd_domain`, agreement); for an unconditional
    one FID. KID and precision/recall always, in the first distance's feature space."""
    if dataset == DIGITS:
        return ["fd_digits", "kid", "precision_recall"] + (["agreement"] if conditional else [])
    if conditional:
        return ["fd_domain", "kid", "precision_recall", "agreement"]
    return ["fid", "kid", "precision_recall"]


def check_metrics(metrics: Sequence[str]) -> list[str]:
    metrics = list(metrics)
    unknown = [name for name in metrics if name not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"`metrics`: unknown {unknown or 'empty list'}; choose from {list(METRICS)}.")
    return list(dict.fromkeys(metrics))


def check_sweep(
    guidance_scales: Sequence[float],
    steps: Sequence[int | None],
    schedulers: Sequence[str | None],
    guidance_intervals: Sequence[tuple[float, float] | None] = (None,),
    scheduler=None,
) -> None:
    """ValueErrors, before any sampling, for values that no pipeline call would take. Given `scheduler` (the
    pipeline's, which each swept one is built from), every step count is checked against each swept scheduler too:
    otherwise a count that one refuses stops the sweep after the rows before it were sampled."""
    for scale in guidance_scales:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 <= scale < math.inf:
            raise ValueError(f"`guidance_scale` values must be finite numbers >= 0, got {scale!r}.")
    for count in steps:
        if count is not None and (isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1):
            raise ValueError(f"`steps` values must be integers >= 1, got {count!r}.")
    for name in schedulers:
        if name is not None and name not in SCHEDULERS:
            raise ValueError(f"`scheduler`: unknown {name!r}; choose from {sorted(SCHEDULERS)}.")
    for interval in guidance_intervals:
        check_guidance_interval(interval)
    sweep = {
        "guidance_scale": guidance_scales,
        "steps": steps,
        "scheduler": schedulers,
        "guidance_interval": guidance_intervals,
    }
    for name, values in sweep.items():
        if len(values) == 0:
            raise ValueError(f"`{name}` needs at least one value.")
    if scheduler is not None:
        for name in schedulers:
            swept = scheduler if name is None else scheduler_from_name(name, scheduler)
            for count in steps:
                if count is not None:
                    check_num_inference_steps(swept, count)


class Evaluator:
    """The real side of an evaluation, set up once for a pipeline: the checked metrics, the real images' features
    (cached) with their real-vs-real floors, and the judge of agreement. `measure(images)` then scores any set of
    `num_samples` generated images drawn for `class_ids` (see `sample_images`). `evaluate` runs one per sweep, and
    the training script one per run. `num_samples` is resolved here: `None` becomes `DEFAULT_NUM_SAMPLES` or the
    held-out half's size, whichever is smaller.

    Args: as `evaluate`'s; `data` (`ImageData`, *optional*) gives the real images already loaded (as training loaded
    them) instead of loading `dataset`.

    Raises:
        `ValueError`, before any sampling, as listed in `evaluate`.
    """

    def __init__(
        self,
        pipe,
        dataset: str = DIGITS,
        *,
        metrics: Sequence[str] | None = None,
        num_samples: int | None = None,
        split: str = "train",
        dataset_config_name: str | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        center_crop: bool = False,
        classifier: str | None = None,
        dinov2_model: str = DEFAULT_DINOV2_MODEL,
        feature_extractors: dict[str, FeatureExtractor] | None = None,
        cache_dir: str | None = None,
        data: ImageData | None = None,
    ):
        # 1. Arguments: everything that can be checked without loading anything.
        conditional = pipe.config.null_class_id is not None
        metrics = check_metrics(metrics if metrics is not None else default_metrics(dataset, conditional))
        if num_samples is not None:
            _check_num_samples(num_samples, metrics)
        if "agreement" in metrics and not conditional:
            raise ValueError("`agreement` needs a class-conditional model; this one is unconditional.")
        self.metrics, self.conditional = metrics, conditional

        # 2. The real images, as the model saw them in training.
        unet_config = pipe.unet.config
        resolution = unet_config.sample_size
        if isinstance(resolution, (list, tuple)) and len(set(resolution)) == 1:
            resolution = resolution[0]  # a square (height, width) pair
        if not isinstance(resolution, int):
            raise ValueError(f"Evaluation needs a square model; its sample_size is {unet_config.sample_size!r}.")
        if data is None:
            data = load_image_data(
                dataset_name=dataset,
                dataset_config_name=dataset_config_name,
                image_column=image_column,
                label_column=label_column,
                resolution=resolution,
                center_crop=center_crop,
                split=split,
            )
        if data.images.shape[1] != unet_config.in_channels or data.images.shape[-1] != resolution:
            raise ValueError(
                f"The dataset {data.source} gives {data.images.shape[1]}-channel images of {data.images.shape[-1]}px "
                f"but the model makes {unet_config.in_channels}-channel images of {resolution}px: evaluate against "
                "the dataset it was trained on."
            )
        real_images = data.images / 2 + 0.5  # [-1, 1] -> [0, 1], as the pipeline outputs
        # Each distance and its floor at the same sample count: no more samples than the held-out half holds.
        most = held_out_size(real_images.shape[0])
        if num_samples is None:
            num_samples = min(DEFAULT_NUM_SAMPLES, most)
            _check_num_samples(num_samples, metrics)  # a tiny dataset's half can be too few
        elif num_samples > most:
            raise ValueError(
                f"`num_samples` must be at most {most}, the held-out half of the {real_images.shape[0]} real images "
                f"of {data.source}, got {num_samples}: the real-vs-real floor beside each distance is measured with "
                "as many held-out images as there are samples."
            )
        self.num_samples = int(num_samples)

        # 3. The judge of agreement, matched to the pipeline's classes; the classifier of the dataset's own images
        # (the default judge of datasets other than the digits, and the feature space of `fd_domain`).
        self.judge, self.label_map, domain = None, None, None
        if "agreement" in metrics and data.labels is None:
            raise ValueError(f"`agreement` needs a dataset with class labels; {data.source} has none.")
        wants_domain_judge = "agreement" in metrics and classifier is None and dataset != DIGITS
        if "fd_domain" in metrics or wants_domain_judge:
            load = {
                "dataset_name": dataset,
                "dataset_config_name": dataset_config_name,
                "image_column": image_column,
                "label_column": label_column,
                "resolution": resolution,
                "center_crop": center_crop,
            }
            domain = _domain_classifier(data, split, load, cache_dir)
        if "agreement" in metrics:
            if wants_domain_judge:
                self.judge = domain[0]
            else:
                self.judge = _judge(classifier, resolution, unet_config.in_channels, pipe.device)
            id2label = pipe.config.id2label or {i: str(i) for i in range(pipe.config.null_class_id)}
            self.label_map = match_labels(
                {int(k): v for k, v in id2label.items()}, self.judge.labels, self.judge.describe()
            )
        self.class_ids = np.arange(num_samples) % pipe.config.null_class_id if conditional else None

        # 4. Feature spaces and the real features (cached), with the real-vs-real floors.
        self.extractors = _feature_extractors(
            metrics, dataset, resolution, dinov2_model, feature_extractors or {}, domain
        )
        for extractor in self.extractors.values():
            extractor.to(pipe.device)
        dataset_identity = {
            "dataset": dataset,
            "config": dataset_config_name,
            "split": split,
            "resolution": resolution,
            "center_crop": center_crop,
            "image_column": image_column,
        }
        self.reals = {
            space: real_features(real_images, extractor, dataset_identity, cache_dir=cache_dir)
            for space, extractor in self.extractors.items()
        }
        self.shared_space = next(iter(self.extractors), None)  # KID and precision/recall live in the first space
        held_out = {space: real.held_out[:num_samples] for space, real in self.reals.items()}
        self.floors = self._distances(held_out, suffix="_floor")
        if isinstance(self.judge, DomainClassifier):  # agreement's real-vs-real value: the judge on real images
            self.floors["agreement_floor"] = self.judge.test_accuracy
        if self.floors:
            self.floors["floor_num_samples"] = self.num_samples
        self.info = {
            "dataset": dataset,
            "split": split,
            "source": data.source,
            "feature_spaces": {space: extractor.identity() for space, extractor in self.extractors.items()},
            "real_reference_samples": {space: int(r.reference.shape[0]) for space, r in self.reals.items()},
            "judge": self.judge.describe() if self.judge is not None else None,
            "num_classes": pipe.config.null_class_id,  # None: unconditional
            "id2label": pipe.config.id2label if conditional else None,
        }

    def measure(self, images: torch.Tensor) -> dict:
        """Every metric of `num_samples` generated `(N, C, H, W)` images in [0, 1] (image i drawn for class
        `class_ids[i]`), each distance with its real-vs-real floor beside it."""
        if images.shape[0] != self.num_samples:
            raise ValueError(f"`images` must hold the {self.num_samples} evaluation samples, got {images.shape[0]}.")
        started = time.perf_counter()
        fakes = {
            space: extract_features(extractor, images, FEATURE_BATCH_SIZE)
            for space, extractor in self.extractors.items()
        }
        predicted = None if self.judge is None else classify_in_batches(self.judge, images, FEATURE_BATCH_SIZE)
        featured = time.perf_counter()
        values = self._distances(fakes)
        for key in list(values):
            if f"{key}_floor" in self.floors:
                values[f"{key}_floor"] = self.floors[f"{key}_floor"]
        if predicted is not None:
            values["agreement"] = class_agreement(predicted, self.class_ids, self.label_map)
            if "agreement_floor" in self.floors:
                values["agreement_floor"] = self.floors["agreement_floor"]
        values["seconds_features"] = round(featured - started, 3)
        values["seconds_metrics"] = round(time.perf_counter() - featured, 3)
        return values

    def _distances(self, fakes: dict[str, torch.Tensor], suffix: str = "") -> dict:
        values = {}
        for space in self.extractors:  # as listed: the first distance is in the space that KID and precision/recall use
            metric = SPACE_METRICS[space]
            if metric in self.metrics:
                values[metric + suffix] = frechet_distance(self.reals[space].reference, fakes[space])
        if self.shared_space is None:
            return values
        reference, fake = self.reals[self.shared_space].reference, fakes[self.shared_space]
        for name in self.metrics:
            metric = REGISTRY[name]
            if metric.kind == "features":
                # The reference half holds at least as many as the held-out half, and so at least `num_samples`.
                compared = reference[: fake.shape[0]] if metric.same_count else reference
                computed = getattr(metric_functions, metric.compute)(compared, fake)
                values.update({key + suffix: value for key, value in zip(metric.values, computed)})
                if name == "kid" and not suffix:
                    values["kid_std"] = computed[1]
        return values


def evaluate(
    pipe,
    dataset: str = DIGITS,
    *,
    metrics: Sequence[str] | None = None,
    num_samples: int | None = None,
    guidance_scales: Sequence[float] = (1.0,),
    steps: Sequence[int | None] = (None,),
    schedulers: Sequence[str | None] = (None,),
    guidance_intervals: Sequence[tuple[float, float] | None] = (None,),
    batch_size: int = 100,
    seed: int = 0,
    mixed_precision: str = "no",
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **evaluator_kwargs,
) -> EvaluationResult:
    """Measures a [`DDPMCFGPipeline`] against real images, at every combination of the swept values.

    Args:
        pipe: the pipeline; sampled where it is (`pipe.to(device)` first).
        dataset (`str`): the real images, as the training script reads them: a Hub dataset id, a local dataset path,
            or `"digits"`. They are loaded at the model's resolution and channels, as training loaded them.
        metrics (`list[str]`, *optional*): any of `METRICS`. `fid` (Inception-V3), `fd_dinov2` and `fd_digits` are
            Fréchet distances in their feature spaces; `kid` and `precision_recall` use the space of the first
            Fréchet metric listed (or the dataset's default); `agreement` needs a class-conditional model and a judge.
            Default: `default_metrics(dataset, conditional)`.
        num_samples (`int`, *optional*): images per combination, at least 2 and at most the held-out half of the real
            images (each distance's floor is measured with as many); default `DEFAULT_NUM_SAMPLES` or that half,
            whichever is smaller. A few thousand for figures to publish.
        guidance_scales, steps, schedulers: the values to sweep (`None` steps: the scheduler's default; `None`
            scheduler: the pipeline's own; names: `SCHEDULERS`).
        guidance_intervals: the `guidance_interval`s to sweep (`None`: guidance at every step; `(0, 1)` is the same).
        batch_size (`int`): images per pipeline call (CFG doubles the UNet batch).
        seed (`int`): image i starts from the noise of seed `seed + i` in every combination.
        mixed_precision (`str`): `"no"` samples in the pipeline's dtype; `"bf16"` samples under bf16 autocast (the
            UNet's convolutions and matmuls in bfloat16, the scheduler's arithmetic in float32), about as a model
            trained with `--mixed_precision bf16` ran; `"auto"`: bf16 where it pays (a GPU, or a CPU with bf16
            instructions), otherwise `"no"`. The images differ from fp32's in their last bits, not in what they show
            (docs/speed.md); the metrics' `info` records which was used.
        out_dir (`str`, *optional*): when given, `metrics.json` and the plots are written there (`report.py`).
        progress (`bool`): show progress bars.
        evaluator_kwargs: how to read the dataset and measure, passed to [`Evaluator`]: `split`,
            `dataset_config_name`, `image_column`, `label_column`, `center_crop`; `classifier` (a transformers image
            classifier, Hub id or folder, for `agreement`; the digits judge is the default on `digits`);
            `dinov2_model` (Hub id or folder); `feature_extractors` (a `FeatureExtractor` per Fréchet metric,
            replacing the default one); `cache_dir` (the real-feature cache; `""`: none).

    Returns:
        [`EvaluationResult`]

    Raises:
        `ValueError`, before any sampling: an unknown metric or scheduler, a value out of range, `agreement` on an
        unconditional model or a dataset without labels, more samples than the held-out half holds, a classifier
        that does not know the pipeline's classes, a dataset whose channels differ from the model's, weights that
        cannot be loaded.
    """
    check_sweep(guidance_scales, steps, schedulers, guidance_intervals, scheduler=pipe.scheduler)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
    if pipe.config.null_class_id is None and any(scale != 1.0 for scale in guidance_scales):
        raise ValueError("`guidance_scale` other than 1 needs a class-conditional model; this one is unconditional.")
    if mixed_precision not in MIXED_PRECISION_CHOICES:
        raise ValueError(
            f"`mixed_precision` must be one of {', '.join(MIXED_PRECISION_CHOICES)}; got {mixed_precision!r}."
        )
    precision = resolve_mixed_precision(mixed_precision, pipe.device.type)
    evaluator = Evaluator(pipe, dataset, metrics=metrics, num_samples=num_samples, **evaluator_kwargs)

    # Sample every combination with the same seeds and labels; measure.
    base_scheduler = pipe.scheduler
    combinations = [
        (name, count, scale, interval)
        for name in schedulers
        for count in steps
        for interval in guidance_intervals
        for scale in guidance_scales
    ]
    rows, grids = [], {}
    num_samples = evaluator.num_samples
    bar = tqdm(total=len(combinations) * num_samples, unit="image", desc="sampling", disable=not progress)
    try:
        for index, (name, count, scale, interval) in enumerate(combinations):
            pipe.scheduler = base_scheduler if name is None else scheduler_from_name(name, base_scheduler)
            started = time.perf_counter()
            with torch.autocast(pipe.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                images = sample_images(
                    pipe,
                    range(num_samples),
                    evaluator.class_ids,
                    batch_size,
                    seed,
                    bar,
                    guidance_scale=scale,
                    num_inference_steps=count,
                    guidance_interval=interval,
                )
            row = settings_row(pipe, scale, interval, num_samples, time.perf_counter() - started)
            row.update(evaluator.measure(images))
            rows.append(row)
            grids[index] = grid_images(images, evaluator.class_ids)
    finally:
        pipe.scheduler = base_scheduler
        bar.close()

    model = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path")
    spacing = base_scheduler.config.get("timestep_spacing")  # every swept scheduler keeps it
    info = {"model": model, "seed": seed, "mixed_precision": precision, "timestep_spacing": spacing, **evaluator.info}
    result = EvaluationResult(rows=rows, floors=evaluator.floors, info=info, grids=grids)
    if out_dir is not None:
        from .report import write_report

        write_report(result, out_dir)
    return result


def settings_row(
    pipe, guidance_scale: float, guidance_interval: Sequence[float] | None, num_samples: int, seconds_sampling: float
) -> dict:
    """How a measurement's images were drawn, as its row begins (see `EvaluationResult`): read from `pipe` right after
    its last call drew them."""
    steps = len(pipe.scheduler.timesteps)
    return {
        "scheduler": _scheduler_name(pipe.scheduler),
        "steps": steps,
        "guidance_scale": float(guidance_scale),
        "guidance_interval": None if guidance_interval is None else tuple(float(v) for v in guidance_interval),
        "num_samples": num_samples,
        "unet_evals_per_image": steps,
        "nfe_per_image": steps + pipe.num_guided_steps,
        "seconds_sampling": round(seconds_sampling, 3),
    }


def _check_num_samples(num_samples, metrics: list[str]) -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < MIN_SAMPLES:
        raise ValueError(
            f"`num_samples` must be an integer >= {MIN_SAMPLES} (a covariance needs 2), got {num_samples!r}."
        )
    for name in metrics:
        metric = REGISTRY[name]
        if num_samples < metric.min_samples:
            fewest = metric.fewest or f"at least {metric.min_samples}"
            raise ValueError(f"`{name}` needs {fewest} samples; `num_samples` is {num_samples}.")


def sample_images(
    pipe, indices: Sequence[int], class_ids: np.ndarray | None, batch_size: int, seed: int, bar=None, **call_kwargs
) -> torch.Tensor:
    """Images number `indices` of an evaluation: image i of class `class_ids[i]` from the noise of seed `seed + i`,
    `batch_size` per pipeline call; `(len(indices), C, H, W)` in [0, 1] on the CPU. Any split of the indices (over
    processes, over batches) gives the same images up to float rounding (a convolution's last bits depend on the
    batch size); bit for bit when every image is drawn in a batch of the same images."""
    indices = list(indices)
    batches = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in chunk]  # as `per_image_generators`
        labels = None if class_ids is None else [int(class_ids[i]) for i in chunk]
        output = pipe(
            class_labels=labels,
            batch_size=1 if labels else len(chunk),
            generator=generators,
            output_type="pt",
            **call_kwargs,
        )
        batches.append(output.images.float().cpu())
        if bar is not None:
            bar.update(len(chunk))
    return torch.cat(batches) if batches else torch.empty(0)


def _feature_extractors(
    metrics: list[str],
    dataset: str,
    resolution: int,
    dinov2_model: str,
    given: dict[str, FeatureExtractor],
    domain: tuple[DomainClassifier, str] | None = None,
) -> dict[str, FeatureExtractor]:
    """One extractor per feature space needed: the Fréchet metrics' spaces, in the order listed, or the dataset's
    default space when only KID or precision/recall are asked for."""
    unknown = sorted(set(given) - set(FRECHET_METRICS))
    if unknown:
        raise ValueError(f"`feature_extractors` keys must be Fréchet metrics {list(FRECHET_METRICS)}, got {unknown}.")
    wanted = [metric for metric in FRECHET_METRICS if metric in metrics]
    wanted.sort(key=metrics.index)
    if not wanted and ({"kid", "precision_recall"} & set(metrics)):
        wanted = ["fd_digits" if dataset == DIGITS else "fid"]
    builders = {
        "fid": InceptionFeatures,
        "fd_dinov2": lambda: DinoV2Features(dinov2_model),
        "fd_digits": lambda: _digits_features(dataset, resolution),
        "fd_domain": lambda: DomainFeatures(*domain),
    }
    return {FRECHET_METRICS[metric]: given.get(metric) or builders[metric]() for metric in wanted}


def _domain_classifier(data: ImageData, split: str, load: dict, cache_dir: str | None):
    """The classifier of the dataset's own images (`domain.py`) and the fingerprint of its training data: trained on
    the training split and tested on `data` (the split measured against); for a dataset evaluated on its training
    split, trained on the held-out half of `data` and tested on its reference half."""
    if data.labels is None:
        raise ValueError(
            f"`fd_domain` and the default judge of `agreement` learn the dataset's classes; {data.source} "
            "has no labels."
        )
    if split != "train":
        train = load_image_data(split="train", **load)
        if train.labels is None or train.id2label != data.id2label:
            raise ValueError(f"The training split of {data.source} has other classes than split {split!r}.")
        test, description = data, f"{split} split, {len(data)} images"
    else:
        held_out, reference = split_halves(len(data))
        train, test = data.select(held_out, "held-out half"), data.select(reference, "reference half")
        description = f"reference half of the {split} split, {len(test)} images"
    return domain_classifier(
        train.images, train.labels, test.images, test.labels, data.id2label, description, cache_dir=cache_dir
    )


def _digits_features(dataset: str, resolution: int) -> DigitsFeatures:
    if dataset != DIGITS:
        raise ValueError(f"`fd_digits` compares with the built-in digits only; the dataset is {dataset!r}.")
    return DigitsFeatures(resolution)


def _judge(classifier: str | None, resolution: int, channels: int, device):
    if classifier is not None:
        return ImageClassifierJudge(classifier, device=device)
    if channels != 1:
        raise ValueError(f"The digits judge reads grayscale images; the model makes {channels}-channel ones.")
    judge: DigitClassifier = digit_classifier(resolution)
    return judge


def _scheduler_name(scheduler) -> str:
    for name, cls in SCHEDULERS.items():
        if type(scheduler) is cls:
            return name
    return type(scheduler).__name__


def grid_images(images: torch.Tensor, class_ids: np.ndarray | None) -> torch.Tensor:
    """The first `GRID_IMAGES_PER_CLASS` images of each class, class by class (or the first few, unconditional)."""
    if class_ids is None:
        return images[: GRID_IMAGES_PER_CLASS * 4].clone()
    picked = [np.flatnonzero(class_ids == c)[:GRID_IMAGES_PER_CLASS] for c in np.unique(class_ids)]
    return images[np.concatenate(picked)].clone()
