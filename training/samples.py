"""The sample grids a run writes, drawn with the EMA weights by --scheduler at --guidance_scale from --seed, so that
the same images compare across steps: a preview (a grid and a denoising GIF) every --save_images_steps in samples/,
and the final grid beside the pipeline, where it travels to the Hub with the model card."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from diffusers.training_utils import EMAModel

from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.previews import Preview, write_preview
from hf_ddpm.training.checkpoints import writing
from hf_ddpm.training.step import ema_weights, evaluation_mode


def write_samples(
    pipeline: Callable[[], DDPMCFGPipeline],
    model: torch.nn.Module,
    ema: EMAModel | None,
    args: argparse.Namespace,
    folder: str,
    name: str,
    what: str,
    callback_on_step_end: Callable | None = None,
) -> Preview:
    """Writes `folder`/`name`.png and `.gif` (`write_preview`), sampled by `pipeline()` with the EMA weights in
    `model`, in evaluation mode; a write that fails stops the run saying that it was writing `what`."""
    with ema_weights(model, ema), evaluation_mode(model), writing(what, args.output_dir):
        return write_preview(
            pipeline(),
            folder,
            name,
            num_images=args.eval_batch_size,
            guidance_scale=args.guidance_scale,
            num_inference_steps=args.num_inference_steps,
            seed=args.seed,
            callback_on_step_end=callback_on_step_end,
        )
