"""Noise-prediction networks, and the noise-aware classifier of classifier guidance."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Imported on first use: the classifier is built from diffusers' UNet blocks, whose import a UNet user need not pay.
_EXPORTS = {
    "DDPMClassifier2DModel": ".classifier_2d",
    "DDPMClassifier2DOutput": ".classifier_2d",
    "DDPMUNet2DModel": ".unet_2d",
    "DDPMUNet2DOutput": ".unet_2d",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .classifier_2d import DDPMClassifier2DModel, DDPMClassifier2DOutput
    from .unet_2d import DDPMUNet2DModel, DDPMUNet2DOutput

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules=True)
