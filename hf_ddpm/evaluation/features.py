"""Feature spaces in which generated and real images are compared.

Every Fréchet distance, KID and precision/recall is computed on features, never on pixels. Each extractor maps a batch
of `(N, C, H, W)` images in [0, 1] (what the pipeline returns with `output_type="pt"`) to `(N, D)` float features and
states its `identity`: what the real-data feature cache keys on, so that features of another network (or other
weights) are never mistaken for these.

- `InceptionFeatures`: the 2048-d pool features of the TF-ported Inception-V3 that FID is defined with (Heusel et al.
  2017), loaded through torchmetrics / torch-fidelity.
- `DinoV2Features`: the CLS features of DINOv2 (Oquab et al. 2023) through transformers' `Dinov2Model`; their Fréchet
  distance, FD-DINOv2, tracks human judgement better than FID (Stein et al. 2023,
  https://huggingface.co/papers/2306.04675).
- `DigitsFeatures`: the hidden layer of a small classifier trained on the real built-in digits, so that every metric
  on `digits` works offline.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import os

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_DINOV2_MODEL = "facebook/dinov2-base"
# ImageNet normalisation, as DINOv2 was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_RESOLUTION = 224


class FeatureExtractor(torch.nn.Module):
    """Base class: images in [0, 1] -> features. Subclasses set `name` (the feature space, as metric names use it),
    `num_features`, and implement `forward` and `identity`."""

    name: str
    num_features: int

    def identity(self) -> dict:
        """What makes these features what they are (network, weights, pre-processing), as plain JSON values."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where it computes: that of its first parameter or, for an extractor of buffers alone, its first buffer."""
        return next(itertools.chain(self.parameters(), self.buffers()), torch.empty(0)).device

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """`(N, D)` float32 features of `(N, C, H, W)` images in [0, 1], on the CPU."""
        return self(images.to(self.device).float().clamp(0, 1)).float().cpu()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A SHA-256 of every parameter and buffer: two modules with this fingerprint compute the same features."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grayscale images repeated to three channels (as FID and DINOv2 expect); RGB images as they are."""
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"Images must have 1 or 3 channels, got {images.shape[1]}.")
    return images


class InceptionFeatures(FeatureExtractor):
    """FID's feature space: the 2048-d pool3 features of the Inception-V3 that the TensorFlow FID code used, through
    torchmetrics (which takes it from torch-fidelity). The weights download on first use into torch's hub cache."""

    name = "inception"
    num_features = 2048

    def __init__(self):
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as error:  # torchmetrics itself is missing
            raise ValueError(f"`fid` needs torchmetrics: pip install 'hf-ddpm[fid]' ({error}).") from error
        # torchmetrics' `antialias` (default True where it exists) resizes otherwise than the reference FID code.
        reference_resize = (
            {"antialias": False} if "antialias" in inspect.signature(NoTrainInceptionV3).parameters else {}
        )
        try:
            self.inception = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=[str(self.num_features)], **reference_resize
            )
        except ModuleNotFoundError as error:
            raise ValueError(
                "`fid` needs torch-fidelity's Inception-V3: pip install 'hf-ddpm[fid]'. Offline, use `fd_dinov2` with "
                f"a local folder, or `fd_digits` on the built-in digits. ({error})"
            ) from error
        except OSError as error:  # URLError and every other failed download
            raise ValueError(
                "`fid` needs the Inception-V3 weights (pt_inception-2015-12-05-6726825d.pth), which torch-fidelity "
                f"downloads into {torch.hub.get_dir()}/checkpoints on first use; they are not there and could not be "
                f"downloaded ({error}). Copy the file there from a machine that has it, or use another metric."
            ) from error
        self.inception.eval()

    def identity(self) -> dict:
        return {"extractor": "inception-v3-compat", "features": self.num_features, "resize": "tf1-bilinear"}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The TF Inception takes uint8 pixels and resizes them to 299x299 itself (TensorFlow 1's bilinear resize, as
        # in the reference FID code and torch-fidelity).
        return self.inception((as_rgb(images) * 255).round().to(torch.uint8))


class DinoV2Features(FeatureExtractor):
    """FD-DINOv2's feature space: the layer-normed CLS token (`pooler_output`) of a transformers `Dinov2Model`, on
    images resized (bicubic) to 224x224 and normalised as ImageNet.

    Args:
        model (`str`): a Hub id (default `facebook/dinov2-base`; `facebook/dinov2-large` for final figures, as Stein
            et al. report) or a local folder written by `Dinov2Model.save_pretrained`.
    """

    name = "dinov2"

    def __init__(self, model: str = DEFAULT_DINOV2_MODEL):
        super().__init__()
        from transformers import Dinov2Model

        try:
            self.model = Dinov2Model.from_pretrained(model)
        except OSError as error:  # not found, offline, gated: transformers raises OSError for each
            raise ValueError(
                f"`fd_dinov2` could not load the DINOv2 weights {model!r}: {error}. Offline, pass a local folder "
                "written by `Dinov2Model.save_pretrained` (`--dinov2-model PATH`)."
            ) from error
        self.model.eval()
        self.model_name = model
        self.num_features = self.model.config.hidden_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def identity(self) -> dict:
        return {
            "extractor": "dinov2",
            "model": os.path.basename(os.path.normpath(self.model_name)),
            "weights_sha256": weights_fingerprint(self.model),
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = F.interpolate(
            as_rgb(images), size=(DINOV2_RESOLUTION, DINOV2_RESOLUTION), mode="bicubic", antialias=True
        )
        pixels = (pixels.clamp(0, 1) - self.mean) / self.std
        return self.model(pixel_values=pixels).pooler_output


class DigitsFeatures(FeatureExtractor):
    """A feature space for the built-in digits that needs no download: the ReLU hidden layer of a multi-layer
    perceptron trained (deterministically, seed 0) to classify the real scikit-learn digits at `resolution`. Two sets
    of digits that differ in shape, thickness or in how often each digit occurs land far apart in it.

    Args:
        resolution (`int`): the side of the images, as the digits were loaded for training.
    """

    name = "digits"
    HIDDEN = 64

    def __init__(self, resolution: int):
        super().__init__()
        weight, bias, held_out_accuracy = _train_digits_mlp(resolution, self.HIDDEN)
        self.resolution = resolution
        self.num_features = self.HIDDEN
        self.held_out_accuracy = held_out_accuracy
        self.register_buffer("weight", torch.from_numpy(weight))
        self.register_buffer("bias", torch.from_numpy(bias))

    def identity(self) -> dict:
        return {"extractor": "digits-mlp", "resolution": self.resolution, "weights_sha256": weights_fingerprint(self)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1:] != (1, self.resolution, self.resolution):
            raise ValueError(
                f"The digits feature space takes (N, 1, {self.resolution}, {self.resolution}) images, got "
                f"{tuple(images.shape)}."
            )
        pixels = images.flatten(1) * 2 - 1  # the training data's range
        return torch.relu(pixels @ self.weight + self.bias)


@functools.lru_cache(maxsize=4)
def _train_digits_mlp(resolution: int, hidden: int) -> tuple[np.ndarray, np.ndarray, float]:
    """First-layer weights, biases and held-out accuracy of an MLP trained on the real digits (a few seconds)."""
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    from ..data import load_image_data

    digits = load_image_data(dataset_name="digits", resolution=resolution)
    pixels, labels = digits.images.flatten(1).numpy().astype(np.float64), digits.labels.numpy()
    train_x, test_x, train_y, test_y = train_test_split(pixels, labels, test_size=0.25, random_state=0, stratify=labels)
    mlp = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-2, max_iter=400, random_state=0)
    mlp.fit(train_x, train_y)
    accuracy = float(mlp.score(test_x, test_y))
    return mlp.coefs_[0].astype(np.float32), mlp.intercepts_[0].astype(np.float32), accuracy
