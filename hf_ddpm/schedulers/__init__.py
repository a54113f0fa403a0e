"""Noise schedulers, one self-contained file each."""

from .scheduling_ddim import DDIMScheduler, DDIMSchedulerOutput
from .scheduling_ddpm import DDPMScheduler, DDPMSchedulerOutput

__all__ = ["DDIMScheduler", "DDIMSchedulerOutput", "DDPMScheduler", "DDPMSchedulerOutput"]
