"""The real side of every comparison: features of a dataset's real images, computed once and cached.

The real images are split, once and for all (a fixed permutation), into two halves. The *reference* half is what
generated images are compared with; the *held-out* half, compared with the reference the same way, gives the
real-vs-real floor: the distance that a perfect generator, drawing fresh samples from the data distribution itself,
would score. A Fréchet distance means little without its floor (it is biased by the sample count and by the feature
space), so the floor is computed with as many samples as the generated set has: an evaluation draws at most as many
samples as the held-out half holds (`held_out_size`).

The features of both halves are cached in `cache_dir` under a name derived from their identity: the dataset (name,
configuration, split, resolution, cropping, and a SHA-256 of the decoded pixels) and the feature extractor (its
network and a SHA-256 of its weights). A cached file whose stored identity differs is recomputed, never reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .features import FeatureExtractor

logger = logging.getLogger(__name__)

SPLIT_SEED = 0  # the permutation that splits the real images into the held-out and reference halves
CACHE_VERSION = 1
FEATURE_BATCH_SIZE = 256  # images per forward of a feature network


def default_cache_dir() -> str:
    """`$HF_DDPM_CACHE`, else `hf_ddpm/real_features` in the Hugging Face cache (`$HF_HOME`, ~/.cache/huggingface)."""
    if "HF_DDPM_CACHE" in os.environ:
        return os.environ["HF_DDPM_CACHE"]
    from huggingface_hub.constants import HF_HOME

    return os.path.join(HF_HOME, "hf_ddpm", "real_features")


@dataclass
class RealFeatures:
    """Features of a dataset's real images, split in two.

    Args:
        reference (`torch.Tensor`): `(N_ref, D)` features that generated images are compared with.
        held_out (`torch.Tensor`): `(N_held, D)` features of the other real images, for the real-vs-real floor.
        identity (`dict`): what they are the features of (dataset and extractor).
        cache_path (`str`, *optional*): the file they were read from or written to.
    """

    reference: torch.Tensor
    held_out: torch.Tensor
    identity: dict
    cache_path: str | None = None


def held_out_size(num_images: int) -> int:
    """How many of `num_images` real images the held-out half holds (the reference half holds the rest, as many or
    one more): the most samples that a distance and its real-vs-real floor can both be measured with."""
    return num_images // 2


def split_halves(num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices of the held-out half (the first `held_out_size(num_images)` of a fixed permutation) and of the
    reference half (the rest) of `num_images` real images. Training with `--exclude_eval_reference` keeps to the
    held-out half, so that generated images are compared with real ones the model never saw."""
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(SPLIT_SEED))
    half = held_out_size(num_images)
    return order[:half], order[half:]


def pixels_fingerprint(images: torch.Tensor) -> str:
    return hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def extract_features(
    extractor: FeatureExtractor, images: torch.Tensor, batch_size: int, description: str | None = None
) -> torch.Tensor:
    """Features of `(N, C, H, W)` images in [0, 1], `batch_size` at a time."""
    batches = images.split(batch_size)
    progress = tqdm(batches, desc=description, unit="batch", disable=description is None, leave=False)
    return torch.cat([extractor.features(batch) for batch in progress])


def real_features(
    images: torch.Tensor,
    extractor: FeatureExtractor,
    dataset_identity: dict,
    cache_dir: str | None = None,
    batch_size: int = FEATURE_BATCH_SIZE,
) -> RealFeatures:
    """The features of real `images` (`(N, C, H, W)` in [0, 1]), split into reference and held-out halves; read from
    the cache when it holds exactly these, otherwise computed and cached.

    Args:
        images: the real images, as the model's training saw them (same resolution, channels, cropping), in [0, 1].
        extractor: the feature space.
        dataset_identity: what the images are (name, split, resolution, ...); the pixels' SHA-256 is added.
        cache_dir: where to cache (default: `default_cache_dir()`); `""` disables the cache.
        batch_size: images per feature batch.
    """
    if images.shape[0] < 2 * 2:
        raise ValueError(f"The real data needs at least 4 images (two halves of two), got {images.shape[0]}.")
    identity = {
        "version": CACHE_VERSION,
        "dataset": {
            **dataset_identity,
            "num_images": int(images.shape[0]),
            "pixels_sha256": pixels_fingerprint(images),
        },
        "features": extractor.identity(),
        "split_seed": SPLIT_SEED,
    }
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    path = None
    if cache_dir:
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        path = os.path.join(cache_dir, f"{extractor.name}-{key}.npz")
        cached = _read_cache(path, identity)
        if cached is not None:
            return cached
    held_out, reference = split_halves(images.shape[0])
    features = extract_features(
        extractor, images[torch.cat([held_out, reference])], batch_size, f"real features ({extractor.name})"
    )
    result = RealFeatures(
        reference=features[len(held_out) :], held_out=features[: len(held_out)], identity=identity, cache_path=path
    )
    if path is not None:
        _write_cache(path, result)
    return result


def _read_cache(path: str, identity: dict) -> RealFeatures | None:
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path) as saved:
            stored = json.loads(str(saved["identity"]))
            if stored != identity:
                logger.warning(f"{path} holds features of something else; computing them again.")
                return None
            reference, held_out = torch.from_numpy(saved["reference"]), torch.from_numpy(saved["held_out"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # truncated or not ours
        logger.warning(f"{path} could not be read ({error}); computing the real features again.")
        return None
    return RealFeatures(reference=reference, held_out=held_out, identity=identity, cache_path=path)


def _write_cache(path: str, features: RealFeatures) -> None:
    with written_whole(path) as partial, open(partial, "wb") as file:
        np.savez(
            file,
            identity=np.array(json.dumps(features.identity, sort_keys=True)),
            reference=features.reference.numpy(),
            held_out=features.held_out.numpy(),
        )


@contextlib.contextmanager
def written_whole(path: str):
    """Yields a temporary path beside `path` to write to, and renames it to `path` once the block ends without an
    error (else removes it): a reader of a cache never sees a half-written file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".partial")
    os.close(handle)
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
