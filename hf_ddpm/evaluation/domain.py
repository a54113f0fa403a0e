"""An offline judge and feature space for any labelled image dataset: a small CNN trained on the dataset's own
training images.

FID's Inception-V3 and DINOv2 need downloaded weights and were trained on photographs; a model of 28x28 garments or
8x8 digits is better judged by a network that knows those images. `domain_classifier` trains one (seeded, a minute or
two on a CPU for Fashion-MNIST) and caches it by the data's fingerprint and the recipe, so that every later
evaluation of the same data reuses it. It serves twice:
- as the judge of `agreement` (`DomainClassifier.classify`), with its accuracy on real images it never saw
  (`test_accuracy`) reported beside every agreement: a judge that reads 90% of real images right caps what an
  agreement of 90% means;
- as the feature space of `fd_domain` (`DomainFeatures`: its last hidden layer), in which the Fréchet distance, KID and
  precision/recall compare generated images with real ones.

The classifier learns from the training split and is tested on the split that the samples are measured against (a
dataset's `test` split). A dataset of one split (the built-in digits, an image folder) is split in the two halves of
`reference.split_halves`: it learns from the held-out half and is tested on the reference half.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .features import FeatureExtractor, weights_fingerprint
from .reference import default_cache_dir, pixels_fingerprint, written_whole

logger = logging.getLogger(__name__)

# How the classifier is trained; part of the cache key, so a change of recipe trains a new one.
RECIPE = {
    "version": 1,
    "widths": [16, 32],
    "hidden": 128,
    "dropout": 0.25,
    "optimizer": "adam",
    "learning_rate": 2e-3,
    "batch_size": 128,
    "min_epochs": 3,
    "min_steps": 500,
    "seed": 0,
}


class DomainClassifierNetwork(nn.Module):
    """Two convolution blocks (3x3 convolution, ReLU, 2x2 max-pooling), a hidden layer of `hidden` ReLU features (the
    feature space of `fd_domain`) and a linear classifier."""

    def __init__(self, in_channels: int, resolution: int, num_classes: int, widths=(32, 64), hidden=128, dropout=0.25):
        super().__init__()
        layers, channels = [], in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.convolutions = nn.Sequential(*layers)
        side = resolution // 2 ** len(widths)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The hidden layer for pixels in [-1, 1]."""
        return self.hidden(self.convolutions(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))


class DomainClassifier:
    """A trained [`DomainClassifierNetwork`] as a judge of class agreement (the interface of the other judges).

    Args:
        network: the trained network (in eval mode).
        labels (`dict[int, str]`): class id -> name, as the dataset names its classes.
        test_accuracy (`float`): its accuracy on the real images it was tested on.
        test_description (`str`): what those were ("the test split, 10000 images").
        resolution (`int`), channels (`int`): the images it takes.
    """

    def __init__(self, network, labels, test_accuracy, test_description, resolution, channels):
        self.network, self.labels = network.eval(), labels
        self.test_accuracy, self.test_description = test_accuracy, test_description
        self.resolution, self.channels = resolution, channels

    def _check(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or tuple(images.shape[1:]) != (self.channels, self.resolution, self.resolution):
            raise ValueError(
                f"The domain classifier takes (N, {self.channels}, {self.resolution}, {self.resolution}) images, got "
                f"{tuple(images.shape)}."
            )

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> np.ndarray:
        """Class indices (into `labels`) for `(N, C, H, W)` images in [0, 1]."""
        self._check(images)
        device = next(self.network.parameters()).device
        logits = self.network(images.to(device).float().clamp(0, 1) * 2 - 1)
        return logits.argmax(dim=-1).cpu().numpy()

    def describe(self) -> str:
        return f"domain CNN ({self.test_accuracy:.1%} on real {self.test_description})"


class DomainFeatures(FeatureExtractor):
    """The feature space of `fd_domain`: the hidden layer of a [`DomainClassifier`].

    Args:
        classifier ([`DomainClassifier`]): the trained classifier.
        data_fingerprint (`str`): what it was trained on (in the cache's identity of the real features).
    """

    name = "domain"

    def __init__(self, classifier: DomainClassifier, data_fingerprint: str):
        super().__init__()
        self.classifier = classifier
        self.network = classifier.network
        self.num_features = RECIPE["hidden"]
        self.data_fingerprint = data_fingerprint

    def identity(self) -> dict:
        return {
            "extractor": "domain-cnn",
            "trained_on": self.data_fingerprint,
            "weights_sha256": weights_fingerprint(self.network),
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.classifier._check(images)
        return self.network.features(images * 2 - 1)


def domain_classifier(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    labels: dict[int, str],
    test_description: str,
    cache_dir: str | None = None,
) -> tuple[DomainClassifier, str]:
    """A classifier of the dataset's classes, trained on `train_images` and tested on `test_images` (both `(N, C, H,
    W)` in [-1, 1], with their class ids), read from the cache when one was trained on exactly these images with this
    recipe. Returns it and the fingerprint of its training data.

    Args:
        labels: class id -> name, for every class.
        test_description: what the test images are, for `describe()`.
        cache_dir: where trained classifiers are kept (default: beside the real features, `default_cache_dir()`);
            `""`: none kept.

    Raises:
        `ValueError`: fewer than two classes, or test and training images of other sizes.
    """
    if len(labels) < 2:
        raise ValueError(f"A domain classifier needs at least two classes; the dataset has {len(labels)}.")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            f"Training images {tuple(train_images.shape[1:])} and test images "
            f"{tuple(test_images.shape[1:])} differ in size."
        )
    channels, resolution = int(train_images.shape[1]), int(train_images.shape[-1])
    identity = {
        "recipe": RECIPE,
        "labels": {str(k): v for k, v in sorted(labels.items())},
        "train": [pixels_fingerprint(train_images), pixels_fingerprint(train_labels)],
        "test": [pixels_fingerprint(test_images), pixels_fingerprint(test_labels)],
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    network = DomainClassifierNetwork(
        channels, resolution, len(labels), RECIPE["widths"], RECIPE["hidden"], RECIPE["dropout"]
    )
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    path = os.path.join(cache_dir, f"domain-classifier-{key}.safetensors") if cache_dir else None
    accuracy = _read_cached(path, network, identity) if path else None
    if accuracy is None:
        logger.info(f"Training the domain classifier on {len(train_images)} real images (cached for later runs).")
        _train(network, train_images, train_labels)
        accuracy = _accuracy(network, test_images, test_labels)
        if path is not None:
            _write_cached(path, network, identity, accuracy)
    judge = DomainClassifier(network.eval(), labels, accuracy, test_description, resolution, channels)
    return judge, key


def _train(network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(RECIPE["seed"])
    with torch.random.fork_rng(devices=[]):  # seeded initialisation and dropout, leaving the caller's RNG alone
        torch.manual_seed(RECIPE["seed"])
        for module in network.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        optimizer = torch.optim.Adam(network.parameters(), lr=RECIPE["learning_rate"])
        batch_size = RECIPE["batch_size"]
        steps_per_epoch = max(1, math.ceil(len(images) / batch_size))
        epochs = max(RECIPE["min_epochs"], math.ceil(RECIPE["min_steps"] / steps_per_epoch))
        network.train()
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            for batch in order.split(batch_size):
                loss = nn.functional.cross_entropy(network(images[batch].float()), labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    network.eval()


@torch.no_grad()
def _accuracy(network: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    network.eval()
    predicted = torch.cat([network(batch.float()).argmax(dim=-1) for batch in images.split(batch_size)])
    return float((predicted == labels).float().mean())


def _read_cached(path: str, network: nn.Module, identity: dict) -> float | None:
    if not os.path.isfile(path):
        return None
    try:
        from safetensors import safe_open

        with safe_open(path, "pt") as file:
            metadata = file.metadata() or {}
        if json.loads(metadata.get("identity", "null")) != json.loads(json.dumps(identity)):
            return None
        network.load_state_dict(load_file(path))
        return float(metadata["test_accuracy"])
    except Exception as error:  # a truncated or foreign file: train again
        logger.warning(f"{path} could not be read ({type(error).__name__}: {error}); training the classifier again.")
        return None


def _write_cached(path: str, network: nn.Module, identity: dict, accuracy: float) -> None:
    state = {name: tensor.contiguous() for name, tensor in network.state_dict().items()}
    with written_whole(path) as partial:
        save_file(state, partial, metadata={"identity": json.dumps(identity), "test_accuracy": repr(accuracy)})
