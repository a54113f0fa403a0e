"""Noise-prediction networks."""

from .unet_2d import DDPMUNet2DModel, DDPMUNet2DOutput

__all__ = ["DDPMUNet2DModel", "DDPMUNet2DOutput"]
