"""hf-ddpm: pixel-space diffusion (DDPM, DDIM, classifier-free and classifier guidance) for diffusers."""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# Each public name and the submodule that defines it, imported on first use (PEP 562), as diffusers does: importing
# the schedulers, the training helpers or the CLI does not pay for diffusers' pipeline machinery (seconds).
_EXPORTS = {
    "DDIMScheduler": ".schedulers",
    "DDPMClassifier2DModel": ".models",
    "DDPMClassifier2DOutput": ".models",
    "DDIMSchedulerOutput": ".schedulers",
    "DDPMCFGImg2ImgPipeline": ".pipelines",
    "DDPMCFGInpaintPipeline": ".pipelines",
    "DDPMCFGPipeline": ".pipelines",
    "DDPMCFGPipelineOutput": ".pipelines",
    "DDPMScheduler": ".schedulers",
    "DDPMSchedulerOutput": ".schedulers",
    "DDPMUNet2DModel": ".models",
    "DDPMUNet2DOutput": ".models",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .models import DDPMClassifier2DModel, DDPMClassifier2DOutput, DDPMUNet2DModel, DDPMUNet2DOutput
    from .pipelines import DDPMCFGImg2ImgPipeline, DDPMCFGInpaintPipeline, DDPMCFGPipeline, DDPMCFGPipelineOutput
    from .schedulers import DDIMScheduler, DDIMSchedulerOutput, DDPMScheduler, DDPMSchedulerOutput


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules=True)
