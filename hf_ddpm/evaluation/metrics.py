"""Distances between a set of generated images and a set of real ones, on features (see `features.py`).

- `frechet_distance`: the Fréchet distance between Gaussians fitted to the two sets (FID when the features are
  Inception's; Heusel et al. 2017, https://huggingface.co/papers/1706.08500), computed by torchmetrics in float64.
- `kernel_distance`: the Kernel Inception Distance (Bińkowski et al. 2018, https://huggingface.co/papers/1801.01401),
  the unbiased MMD with a cubic polynomial kernel averaged over random subsets, by torchmetrics: usable with a few
  hundred samples, where the Fréchet distance is biased.
- `precision_recall`: improved precision and recall (Kynkäänniemi et al. 2019,
  https://huggingface.co/papers/1904.06991): the share of generated samples inside the real manifold (quality) and
  of real samples inside the generated one (coverage, diversity), each manifold the union of k-NN balls.
"""

from __future__ import annotations

import warnings

import torch

MIN_SAMPLES = 2  # a covariance needs two samples
PRECISION_RECALL_K = 3  # the neighbours of Kynkäänniemi et al.
DENSITY_COVERAGE_K = 5  # the neighbours of Naeem et al.


class _Precomputed(torch.nn.Module):
    """A torchmetrics "feature extractor" for features computed (and cached) beforehand: the identity."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def check_feature_sets(real: torch.Tensor, fake: torch.Tensor) -> None:
    """Raises a ValueError unless both are `(N, D)` with the same D and at least two rows."""
    for name, features in (("real", real), ("generated", fake)):
        if features.ndim != 2:
            raise ValueError(f"The {name} features must be an (N, D) matrix, got shape {tuple(features.shape)}.")
        if features.shape[0] < MIN_SAMPLES:
            raise ValueError(f"A distance needs at least {MIN_SAMPLES} {name} samples, got {features.shape[0]}.")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"Real and generated features differ in dimension: {real.shape[1]} vs {fake.shape[1]}.")


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to `(N, D)` real and `(M, D)` generated features.

    With no more samples than feature dimensions the covariance estimate is singular (N samples span at most N - 1
    dimensions) and the distance is biased upwards (it is biased for any finite N: compare figures at the same N, beside the real-vs-real floor).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    check_feature_sets(real, fake)
    if min(real.shape[0], fake.shape[0]) <= real.shape[1]:
        warnings.warn(
            f"Fréchet distance on {min(real.shape[0], fake.shape[0])} samples of {real.shape[1]}-d features: with "
            "no more samples than dimensions the covariance is singular and the distance biased upwards.",
            stacklevel=2,
        )
    # Whole sets on this process: in a process group (training measures on the main process only) compute() would
    # otherwise wait for the states of processes that never measure.
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), sync_on_compute=False)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(
    real: torch.Tensor, fake: torch.Tensor, subset_size: int = 1000, subsets: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and standard deviation over `subsets` random subsets of `min(subset_size, N, M)` samples each."""
    from torchmetrics.image.kid import KernelInceptionDistance

    check_feature_sets(real, fake)
    for name, value, least in (("subset_size", subset_size, MIN_SAMPLES), ("subsets", subsets, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}.")
    size = min(subset_size, real.shape[0], fake.shape[0])
    with warnings.catch_warnings():
        # Its warning that it keeps every feature in memory: these are the features, already held.
        warnings.filterwarnings("ignore", message="Metric `Kernel Inception Distance` will save all extracted")
        metric = KernelInceptionDistance(  # no sync on compute, as in `frechet_distance`
            feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size, sync_on_compute=False
        )
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws the subsets from the global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = PRECISION_RECALL_K) -> tuple[float, float]:
    """Improved precision and recall of generated `fake` against `real` features, with k-NN manifolds.

    Precision: the share of generated samples within the k-NN radius of at least one real sample. Recall: the share
    of real samples within the k-NN radius of at least one generated sample.
    """
    check_feature_sets(real, fake)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"`k` must be a positive integer, got {k!r}.")
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"Precision/recall with k={k} needs more than {k} samples in each set.")
    real, fake = real.double(), fake.double()
    precision = _inside_manifold(real, _knn_radii(real, k), fake).mean()
    recall = _inside_manifold(fake, _knn_radii(fake, k), real).mean()
    return float(precision), float(recall)


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = DENSITY_COVERAGE_K) -> tuple[float, float]:
    """Density and coverage of generated `fake` against `real` features (Naeem et al. 2020,
    https://arxiv.org/abs/2002.09797), with the k-NN balls of the real samples alone, so that outliers among the
    generated ones cannot inflate them.

    Density: how many real balls hold each generated sample, over k (1 on average for samples like the real ones; above
    1 where they crowd the dense regions). Coverage: the share of real samples whose ball holds a generated sample.
    """
    check_feature_sets(real, fake)
    if real.shape[0] <= k:
        raise ValueError(f"Density/coverage with k={k} needs more than {k} real samples.")
    real, fake = real.double(), fake.double()
    radii = _knn_radii(real, k)
    holders = torch.cat([(torch.cdist(chunk, real) <= radii).double().sum(dim=1) for chunk in fake.split(CHUNK)])
    covered = torch.zeros(real.shape[0], dtype=torch.bool)
    for chunk in fake.split(CHUNK):
        covered |= (torch.cdist(chunk, real) <= radii).any(dim=0)
    return float(holders.sum() / (k * fake.shape[0])), float(covered.double().mean())


CHUNK = 1024  # rows of a distance matrix computed at a time


def _knn_radii(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour among the others."""
    radii = []
    for chunk in points.split(CHUNK):
        distances = torch.cdist(chunk, points)
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # the smallest is the point itself, at 0
    return torch.cat(radii)


def _inside_manifold(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """For each query, 1.0 when it lies within `radii[i]` of some `manifold[i]`, else 0.0."""
    inside = [(torch.cdist(chunk, manifold) <= radii).any(dim=1) for chunk in queries.split(CHUNK)]
    return torch.cat(inside).double()
