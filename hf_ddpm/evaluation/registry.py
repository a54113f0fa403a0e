"""Every metric that hf-ddpm measures, in one list: what `evaluate`, training's evaluation, the report, the model card
and the command line know about each.

This module imports nothing heavy (no torch), so that the command line can offer the metrics' names at once. Adding a
metric: an entry here, its function (a Fréchet metric: a `FeatureExtractor` in `features.py`; a metric computed in
the first distance's feature space: a function of the reference and generated features in `metrics.py`, named in
`compute`) and a test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric.

    Args:
        name (`str`): what `metrics=` and `--metrics` call it.
        values (`tuple[str, ...]`): the keys it adds to a measurement (each with `<key>_floor`, its real-vs-real
            value, beside it where that is measured).
        lower_is_better (`bool`): the direction of its values.
        kind (`str`): `"frechet"`: a Fréchet distance in its own feature space `space`; `"features"`: computed in the
            feature space of the first Fréchet metric listed, by `compute`; `"judge"`: read off a classifier.
        space (`str`, *optional*): a Fréchet metric's feature space (`FeatureExtractor.name`).
        compute (`str`, *optional*): a `"features"` metric's function in `metrics.py`, of the reference and the
            generated features, returning its `values` in order.
        same_count (`bool`): compared with as many reference features as there are generated ones (k-NN radii
            shrink as a set grows, so precision and recall compare sets of equal size).
        min_samples (`int`): the fewest samples it can be measured on; `fewest` says it in the metric's own terms.
        description (`str`): one line for people.
    """

    name: str
    values: tuple[str, ...]
    lower_is_better: bool
    kind: str
    space: str | None = None
    compute: str | None = None
    same_count: bool = False
    min_samples: int = 2
    fewest: str | None = None
    description: str = ""


REGISTRY: dict[str, Metric] = {
    metric.name: metric
    for metric in [
        Metric(
            "fid",
            ("fid",),
            True,
            "frechet",
            space="inception",
            description="Fréchet distance in Inception-V3's pool features (Heusel et al. 2017); downloads them",
        ),
        Metric(
            "fd_dinov2",
            ("fd_dinov2",),
            True,
            "frechet",
            space="dinov2",
            description="Fréchet distance in DINOv2's features (Stein et al. 2023); downloads them",
        ),
        Metric(
            "fd_digits",
            ("fd_digits",),
            True,
            "frechet",
            space="digits",
            description="Fréchet distance in an MLP trained on the built-in digits; offline",
        ),
        Metric(
            "fd_domain",
            ("fd_domain",),
            True,
            "frechet",
            space="domain",
            description="Fréchet distance in a CNN trained on the dataset's training split; offline",
        ),
        Metric(
            "kid",
            ("kid",),
            True,
            "features",
            compute="kernel_distance",
            description="kernel inception distance (Binkowski et al. 2018), unbiased at any sample count",
        ),
        Metric(
            "precision_recall",
            ("precision", "recall"),
            False,
            "features",
            compute="precision_recall",
            same_count=True,
            min_samples=4,
            fewest="more than k=3",
            description="k-NN precision and recall (Kynkäänniemi et al. 2019), k = 3",
        ),
        Metric(
            "density_coverage",
            ("density", "coverage"),
            False,
            "features",
            compute="density_coverage",
            same_count=True,
            min_samples=6,
            fewest="more than k=5",
            description="k-NN density and coverage (Naeem et al. 2020), k = 5, robust to outliers",
        ),
        Metric(
            "agreement",
            ("agreement",),
            False,
            "judge",
            description="the share of samples a classifier reads as the class asked for",
        ),
    ]
}

METRICS = tuple(REGISTRY)
# Each Fréchet metric names its feature space.
FRECHET_METRICS = {metric.name: metric.space for metric in REGISTRY.values() if metric.kind == "frechet"}
# Every value a measurement can hold, in the order of the metrics.
METRIC_KEYS = tuple(value for metric in REGISTRY.values() for value in metric.values)
LOWER_IS_BETTER = tuple(value for metric in REGISTRY.values() if metric.lower_is_better for value in metric.values)


def metric_keys(metrics) -> list[str]:
    """The values that measuring `metrics` gives (`precision_recall` gives `precision` and `recall`)."""
    return [value for name in metrics for value in REGISTRY[name].values]
