"""Samples to watch while a model trains: a labelled grid and a GIF of the denoising, on disk and in tensorboard."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .sampling import save_grid_and_gif


@dataclass
class Preview:
    """The files of one preview. `grid_path`: the final images, one row per class, each row named on its left;
    `gif_path`: the grid being denoised."""

    grid_path: str
    gif_path: str


def write_preview(
    pipe,
    samples_dir: str,
    name: str,
    *,
    num_images: int,
    guidance_scale: float,
    num_inference_steps: int | None,
    seed: int,
    callback_on_step_end=None,
) -> Preview:
    """Draws about `num_images` images with `pipe` (a `DDPMCFGPipeline`) and writes `samples_dir/{name}.png` and
    `samples_dir/{name}.gif`.

    A class-conditional pipeline draws `ceil(num_images / classes)` images of every class, one row per class, with
    classifier-free guidance `guidance_scale`; an unconditional one draws `num_images`. Image i always starts from
    the noise of seed `seed + i`, so previews taken at different steps show the same draws getting better.
    `callback_on_step_end` is the pipeline's (the training script stops a preview with it when the run must stop).
    """
    conditional = pipe.config.null_class_id is not None
    class_ids = list(range(pipe.config.null_class_id or 0))
    call = {"num_inference_steps": num_inference_steps, "seed": seed, "callback_on_step_end": callback_on_step_end}
    if conditional:
        call.update(class_labels=class_ids, batch_size=math.ceil(num_images / len(class_ids)))
        call.update(guidance_scale=guidance_scale)
    else:
        call.update(batch_size=num_images)
    grid_path = os.path.join(samples_dir, f"{name}.png")
    gif_path = os.path.join(samples_dir, f"{name}.gif")
    save_grid_and_gif(pipe, grid_path, gif_path, **call)
    return Preview(grid_path=grid_path, gif_path=gif_path)


def log_preview(writer, preview: Preview, step: int) -> None:
    """Adds the preview to a tensorboard `SummaryWriter`: the grid as an image, the GIF as an animated image."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    grid = np.asarray(Image.open(preview.grid_path).convert("RGB"))
    writer.add_image("samples/grid", grid, step, dataformats="HWC")
    # Tensorboard's image dashboard plays GIFs; SummaryWriter only writes one through moviepy (add_video), so the
    # encoded GIF goes into an image summary directly.
    with Image.open(preview.gif_path) as gif:
        width, height = gif.size
    with open(preview.gif_path, "rb") as gif_file:
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif_file.read())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag="samples/denoising", image=image)]), step)
    writer.flush()
