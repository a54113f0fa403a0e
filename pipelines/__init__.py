"""The diffusion pipelines, one self-contained file each."""

from .pipeline_ddpm_cfg import DDPMCFGPipeline, DDPMCFGPipelineOutput
from .pipeline_ddpm_cfg_img2img import DDPMCFGImg2ImgPipeline
from .pipeline_ddpm_cfg_inpaint import DDPMCFGInpaintPipeline

__all__ = ["DDPMCFGImg2ImgPipeline", "DDPMCFGInpaintPipeline", "DDPMCFGPipeline", "DDPMCFGPipelineOutput"]
