"""The diffusion pipelines, one self-contained file each."""

from .pipeline_ddpm_cfg import DDPMCFGPipeline, DDPMCFGPipelineOutput
from .pipeline_ddpm_cfg_img2img import DDPMCFGImg2ImgPipeline

__all__ = ["DDPMCFGImg2ImgPipeline", "DDPMCFGPipeline", "DDPMCFGPipelineOutput"]
