"""Noise-prediction networks, and the noise-aware classifier of classifier guidance."""

from .classifier_2d import DDPMClassifier2DModel, DDPMClassifier2DOutput
from .unet_2d import DDPMUNet2DModel, DDPMUNet2DOutput

__all__ = ["DDPMClassifier2DModel", "DDPMClassifier2DOutput", "DDPMUNet2DModel", "DDPMUNet2DOutput"]
