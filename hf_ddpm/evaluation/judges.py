"""Class agreement: the share of generated images that a classifier reads as the class they were asked for.

A class-conditional model that draws a recognisable "3" whenever asked for a 3 scores near 100%; one that ignores its
label scores about 1 / classes. Agreement cannot see diversity (a model that draws one perfect "3" every time scores
100%): report it beside a Fréchet distance and precision/recall, never alone.

Two judges:
- `DigitClassifier`, for the built-in digits, offline: a support-vector classifier (RBF kernel) on the pixels of
  scikit-learn's handwritten digits, resized exactly as training resizes them; its own accuracy on real digits it
  never saw is reported beside the score so that the score can be trusted.
- `ImageClassifierJudge`: any transformers image classifier (`AutoModelForImageClassification`, a Hub id or a folder),
  its labels matched to the pipeline's class names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..data import load_image_data

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

    @property
    def labels(self) -> dict[int, str]:
        return {digit: str(digit) for digit in range(10)}

    def classify(self, images: torch.Tensor) -> np.ndarray:
        """Class indices (into `labels`) for `(N, 1, H, W)` images in [0, 1]."""
        return self.predict(images.float() * 2 - 1)

    def describe(self) -> str:
        return f"digits SVC ({self.held_out_accuracy:.1%} on held-out real digits)"


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
    predicted = digit_classifier(int(images.shape[-1])).classify(images)
    return float((predicted == requested).mean())


class ImageClassifierJudge:
    """A transformers image classifier as a judge of class agreement.

    Args:
        model (`str`): a Hub id or a local folder of an `AutoModelForImageClassification` with its image processor.
        device (`str`, *optional*): where it runs (default: the CPU).
    """

    def __init__(self, model: str, device: str | None = None):
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        try:
            self.model = AutoModelForImageClassification.from_pretrained(model).to(device or "cpu").eval()
            self.processor = AutoImageProcessor.from_pretrained(model)
        except OSError as error:  # not found, offline, gated, no processor config
            raise ValueError(
                f"The classifier {model!r} (`--classifier`) could not be loaded: {error}. Give a Hub id of an image "
                "classifier or, offline, a local folder with its weights and image processor (save_pretrained)."
            ) from error
        self.name = model
        self.labels = {int(index): str(name) for index, name in self.model.config.id2label.items()}

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> np.ndarray:
        """Class indices (into `labels`) for `(N, C, H, W)` images in [0, 1]."""
        channels = getattr(self.model.config, "num_channels", 3)
        if channels == 3 and images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        elif channels == 1 and images.shape[1] == 3:
            images = images.mean(dim=1, keepdim=True)
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        inputs = self.processor(images=list(pixels), return_tensors="pt").to(self.model.device)
        return self.model(**inputs).logits.argmax(dim=-1).cpu().numpy()

    def describe(self) -> str:
        return f"classifier {self.name}"


def classify_in_batches(judge, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """`judge.classify` of `(N, C, H, W)` images in [0, 1], `batch_size` at a time: a network judge on an accelerator
    holds one batch's activations, not the whole evaluation's."""
    return np.concatenate([judge.classify(batch) for batch in images.split(batch_size)])


def match_labels(id2label: dict[int, str], judge_labels: dict[int, str], judge_name: str) -> dict[int, int]:
    """Maps each of the pipeline's class ids to the judge's class index of the same name: an exact match first, else
    a case-insensitive one when it is unique. Raises a ValueError naming every class the judge does not know."""
    exact = {name: index for index, name in judge_labels.items()}
    folded: dict[str, list[int]] = {}
    for index, name in judge_labels.items():
        folded.setdefault(name.casefold(), []).append(index)
    mapping, missing = {}, []
    for class_id, name in id2label.items():
        if name in exact:
            mapping[int(class_id)] = exact[name]
        elif len(folded.get(name.casefold(), [])) == 1:
            mapping[int(class_id)] = folded[name.casefold()][0]
        else:
            missing.append(name)
    if missing:
        known = sorted(judge_labels.values())
        raise ValueError(
            f"The {judge_name}'s labels do not cover the pipeline's classes {missing} (its labels: "
            f"{known[:20]}{' ...' if len(known) > 20 else ''}). Agreement needs a classifier of the same classes."
        )
    return mapping


def class_agreement(predicted: np.ndarray, requested_ids: np.ndarray, mapping: dict[int, int]) -> float:
    """The share of images whose judge class (`predicted`) is the one their requested pipeline class maps to."""
    expected = np.array([mapping[int(class_id)] for class_id in np.asarray(requested_ids).reshape(-1)])
    return float((np.asarray(predicted).reshape(-1) == expected).mean())
