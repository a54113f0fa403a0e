"""The diffusion pipelines, one self-contained file each."""

from .pipeline_ddpm_cfg import DDPMCFGPipeline, DDPMCFGPipelineOutput

__all__ = ["DDPMCFGPipeline", "DDPMCFGPipelineOutput"]
