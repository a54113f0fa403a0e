"""The forward process made visible: images noised part of the way to T, one schedule beside another."""

import os
from pathlib import Path
from typing import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageDraw

from hf_ddpm.data import load_image_data
from hf_ddpm.pipelines.pipeline_ddpm_cfg import image_grid
from hf_ddpm.schedulers import DDPMScheduler

CELL_SIZE = 56  # pixels per image in the grid: 28x28 digits shown at twice their size
CELL_GAP = 4  # pixels between two images: 2 at the digits' own size, enlarged with them
HEADER_HEIGHT = 30  # a line for the schedule's name, a line for the column labels
PANEL_GAP = 8  # pixels between the schedules' panels


def load_digit_images(num_images: int = 4, size: int = 28) -> torch.Tensor:
    """
    The first `num_images` handwritten digits of the built-in dataset (scikit-learn's `load_digits`: 0, 1, 2, ...),
    upscaled from 8x8 as training sees them.

    Returns:
        `torch.Tensor` of shape `(num_images, 1, size, size)` with values in [-1, 1], as diffusion models see data.
    """
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"`num_images` must be a positive integer; got {num_images!r}")
    images = load_image_data(dataset_name="digits", resolution=size).images[:num_images]
    if len(images) < num_images:
        raise ValueError(f"`num_images` must be at most {len(images)}, the number of digits; got {num_images}")
    return images


def fraction_timesteps(fractions: Sequence[float], num_train_timesteps: int) -> list[int]:
    """The training timestep a fraction f in (0, 1] of the way to T stands for: round(f T) - 1, so 1.0 is T - 1."""
    if not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"`fractions` must lie in (0, 1]; got {list(fractions)}")
    return [max(round(f * num_train_timesteps) - 1, 0) for f in fractions]


def forward_process(
    images: torch.Tensor,
    noise: torch.Tensor,
    fractions: Sequence[float],
    beta_schedule: str,
    num_train_timesteps: int = 1000,
) -> torch.Tensor:
    """
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps for each fraction of the way to T.

    Returns:
        `torch.Tensor` of shape `(len(fractions), *images.shape)`.
    """
    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)
    timesteps = fraction_timesteps(fractions, num_train_timesteps)
    return torch.stack([scheduler.add_noise(images, noise, torch.full((len(images),), t)) for t in timesteps])


def forward_process_grid(
    images: torch.Tensor | None = None,
    fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    schedules: Sequence[str] = ("linear", "cosine"),
    num_train_timesteps: int = 1000,
    generator: torch.Generator | None = None,
) -> Image.Image:
    """
    A panel per beta schedule, side by side: one row per image, the clean image then the image noised at each fraction
    of the way to T. Every panel uses the same noise, so only the schedule differs.

    Args:
        images (`torch.Tensor`, *optional*): `(N, C, H, W)` in [-1, 1]; four handwritten digits when omitted.
        fractions (`Sequence[float]`): fractions of the way to T, each in (0, 1].
        schedules (`Sequence[str]`): beta schedules of [`DDPMScheduler`], such as `"linear"` and `"cosine"`.
        num_train_timesteps (`int`): T.
        generator (`torch.Generator`, *optional*): source of the noise.

    Returns:
        `PIL.Image.Image` of width `len(schedules) * ((len(fractions) + 1) * CELL_SIZE + len(fractions) * CELL_GAP) +
        (len(schedules) - 1) * PANEL_GAP` and height `HEADER_HEIGHT + N * CELL_SIZE + (N - 1) * CELL_GAP`.
    """
    images = load_digit_images() if images is None else images
    if images.ndim != 4:
        raise ValueError(f"`images` must have shape (N, C, H, W); got {tuple(images.shape)}")
    noise = randn_tensor(images.shape, generator=generator, dtype=images.dtype)
    labels = ["x_0"] + [f"t={t}" for t in fraction_timesteps(fractions, num_train_timesteps)]
    panels = []
    for schedule in schedules:
        noised = forward_process(images, noise, fractions, schedule, num_train_timesteps)
        columns = torch.cat([images.unsqueeze(0), noised])  # (columns, N, C, H, W)
        cells = [_to_pil(columns[col, row]) for row in range(len(images)) for col in range(len(columns))]
        grid = image_grid(cells, rows=len(images), gap=CELL_GAP, min_cell_size=CELL_SIZE)
        panels.append(_with_header(grid, schedule, labels))
    width = sum(panel.width for panel in panels) + PANEL_GAP * (len(panels) - 1)
    figure = Image.new("RGB", (width, panels[0].height), "white")
    for i, panel in enumerate(panels):
        figure.paste(panel, (i * (panel.width + PANEL_GAP), 0))
    return figure


def save_forward_process_grid(path: str | os.PathLike, **grid_kwargs) -> Path:
    """Write [`forward_process_grid`] to `path` (format from its suffix) and return the path. The file is written
    next to its destination and moved into place, so an interrupted run never leaves half an image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = forward_process_grid(**grid_kwargs)
    file_format = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    partial = path.with_name(f".{path.name}.partial")
    figure.save(partial, format=file_format)
    os.replace(partial, path)
    return path


def _to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) in [-1, 1] -> an RGB image of CELL_SIZE pixels a side (pixels kept sharp)."""
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.expand(3, -1, -1) if pixels.shape[0] == 1 else pixels
    return Image.fromarray(pixels.permute(1, 2, 0).numpy()).resize((CELL_SIZE, CELL_SIZE), Image.NEAREST)


def _with_header(grid: Image.Image, title: str, column_labels: list[str]) -> Image.Image:
    panel = Image.new("RGB", (grid.width, grid.height + HEADER_HEIGHT), "white")
    panel.paste(grid, (0, HEADER_HEIGHT))
    draw = ImageDraw.Draw(panel)
    draw.text((2, 2), title, fill="black")
    for col, label in enumerate(column_labels):
        draw.text((col * (CELL_SIZE + CELL_GAP) + 2, HEADER_HEIGHT // 2), label, fill="black")
    return panel
