"""hf-ddpm: pixel-space diffusion (DDPM, DDIM, classifier-free guidance) for diffusers."""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Each public name and the submodule that defines it, imported on first use (PEP 562), as diffusers does: importing
# the schedulers, the training helpers or the CLI does not pay for diffusers' pipeline machinery (seconds).
_EXPORTS = {
    "DDIMScheduler": ".schedulers",
    "DDIMSchedulerOutput": ".schedulers",
    "DDPMCFGPipeline": ".pipelines",
    "DDPMCFGPipelineOutput": ".pipelines",
    "DDPMScheduler": ".schedulers",
    "DDPMSchedulerOutput": ".schedulers",
    "DDPMUNet2DModel": ".models",
    "DDPMUNet2DOutput": ".models",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .models import DDPMUNet2DModel, DDPMUNet2DOutput
    from .pipelines import DDPMCFGPipeline, DDPMCFGPipelineOutput
    from .schedulers import DDIMScheduler, DDIMSchedulerOutput, DDPMScheduler, DDPMSchedulerOutput


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    try:  # a submodule, as `import hf_ddpm.name` would give it
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":  # the submodule exists, and something it imports is missing
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
