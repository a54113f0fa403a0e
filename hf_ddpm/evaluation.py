"""How good are generated digits? The share that a classifier trained on real digits reads as the digit asked for.

A class-conditional model that draws a recognisable "3" whenever asked for a 3 scores near 100%; one that ignores its
label scores about 10%. The judge is a support-vector classifier (RBF kernel) on the pixels of scikit-learn's
handwritten digits, resized exactly as training resizes them, and its own accuracy on real digits it never saw is
reported next to the score so that the score can be trusted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .data import load_image_data

# Real digits held out from the classifier's training, to measure the classifier itself.
HELD_OUT_FRACTION = 0.25


@dataclass(frozen=True)
class DigitClassifier:
    """A classifier of `resolution` x `resolution` grayscale digits with pixels in [-1, 1].

    Args:
        model: the fitted scikit-learn estimator.
        resolution (`int`): the image side it was trained at.
        held_out_accuracy (`float`): its accuracy on real digits it was not trained on.
    """

    model: object
    resolution: int
    held_out_accuracy: float

    def predict(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Digit ids for `(N, 1, H, W)` images in [-1, 1]."""
        pixels = torch.as_tensor(images, dtype=torch.float32)
        if pixels.ndim != 4 or pixels.shape[1:] != (1, self.resolution, self.resolution):
            raise ValueError(
                f"`images` must have shape (N, 1, {self.resolution}, {self.resolution}), got {tuple(pixels.shape)}."
            )
        return self.model.predict(pixels.flatten(1).numpy())


@functools.lru_cache(maxsize=4)
def digit_classifier(resolution: int, seed: int = 0) -> DigitClassifier:
    """Trains (once per resolution) a classifier on real scikit-learn digits resized to `resolution`."""
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    digits = load_image_data(dataset_name="digits", resolution=resolution)
    pixels = digits.images.flatten(1).numpy()
    labels = digits.labels.numpy()
    train_x, test_x, train_y, test_y = train_test_split(
        pixels, labels, test_size=HELD_OUT_FRACTION, random_state=seed, stratify=labels
    )
    model = SVC(C=10.0, gamma="scale").fit(train_x, train_y)
    accuracy = float((model.predict(test_x) == test_y).mean())
    return DigitClassifier(model=model, resolution=resolution, held_out_accuracy=accuracy)


def label_accuracy(images: torch.Tensor | np.ndarray, requested_labels: list[int] | torch.Tensor | np.ndarray) -> float:
    """The share of generated digits that a classifier trained on real digits assigns to the requested digit.

    Args:
        images: the generated digits as the pipeline returns them with `output_type="pt"` (`(N, 1, H, W)` tensor in
            [0, 1]) or `"np"` (`(N, H, W, 1)` array in [0, 1]); square, any side.
        requested_labels: the digit (0-9) each image was asked to show, `N` of them.
    """
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"`images` as an array must have shape (N, H, W, 1), got {images.shape}.")
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[2] != images.shape[3]:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"`images` must be square (N, 1, H, W) images in [0, 1], got {shape}.")
    requested = np.asarray(requested_labels).reshape(-1)
    if requested.shape[0] != images.shape[0]:
        raise ValueError(
            f"`requested_labels` must give one label per image ({images.shape[0]}), got {requested.shape[0]}."
        )
    classifier = digit_classifier(int(images.shape[-1]))
    predicted = classifier.predict(images.float() * 2 - 1)
    return float((predicted == requested).mean())
