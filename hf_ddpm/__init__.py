"""hf-ddpm: pixel-space diffusion (DDPM, DDIM, classifier-free guidance) for diffusers."""

from .models import DDPMUNet2DModel, DDPMUNet2DOutput
from .pipelines import DDPMCFGPipeline, DDPMCFGPipelineOutput
from .schedulers import DDIMScheduler, DDIMSchedulerOutput, DDPMScheduler, DDPMSchedulerOutput

__version__ = "0.1.0"

__all__ = [
    "DDIMScheduler",
    "DDIMSchedulerOutput",
    "DDPMCFGPipeline",
    "DDPMCFGPipelineOutput",
    "DDPMScheduler",
    "DDPMSchedulerOutput",
    "DDPMUNet2DModel",
    "DDPMUNet2DOutput",
]
