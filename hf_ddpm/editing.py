"""Editing real images with a saved model, as `hf-ddpm edit` and `hf-ddpm inpaint` do: reading an image file safely,
the mask presets, and one call that writes the source beside its edits.

The work itself is the pipelines' (`DDPMCFGImg2ImgPipeline`, `DDPMCFGInpaintPipeline`); this module turns files and
names into their arguments.
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image

# An upload larger than this is refused from its header, before its pixels are decoded: the models here take images
# of a few dozen pixels a side, and a decompression bomb would otherwise take the memory of the machine.
MAX_IMAGE_PIXELS = 4096 * 4096

# Masks by name: white (255) is filled, black (0) kept.
MASK_PRESETS = ("left", "right", "top", "bottom", "centre")


def read_image(
    path: str, name: str, max_pixels: int = MAX_IMAGE_PIXELS, shown_as: str | None = None
) -> PIL.Image.Image:
    """
    The image in file `path`, decoded. Raises a `ValueError` naming `name` (the flag or the control it came from)
    when the file is missing, is not an image PIL can read, or has more than `max_pixels` pixels: that bound is
    checked from the header, before the pixels are decoded. The messages call the file `shown_as` (default: `path`):
    a web page names an upload by its own name, not by where the server keeps it.
    """
    shown = path if shown_as is None else shown_as
    if not os.path.isfile(path):
        raise ValueError(f"{name} {shown!r} is not a file.")
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(
                    f"{name} {shown!r} is {width}x{height} pixels, over the {max_pixels:,} this reads; give a smaller "
                    "image (the model's own size is enough)."
                )
            image.load()
            return image.copy()
    except (PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, OSError, SyntaxError) as error:
        detail = str(error).replace(path, shown)
        raise ValueError(f"{name} {shown!r} is not an image that can be read ({detail}).") from None


def preset_mask(name: str, height: int, width: int) -> PIL.Image.Image:
    """A mask of `MASK_PRESETS` at `height` x `width`, white where it fills: a half ("left", "right", "top",
    "bottom") or the centre square of half the side ("centre")."""
    if name not in MASK_PRESETS:
        raise ValueError(f"mask preset must be one of {list(MASK_PRESETS)}, got {name!r}.")
    mask = np.zeros((height, width), dtype=np.uint8)
    regions = {
        "left": (slice(None), slice(0, width // 2)),
        "right": (slice(None), slice(width // 2, None)),
        "top": (slice(0, height // 2), slice(None)),
        "bottom": (slice(height // 2, None), slice(None)),
        "centre": (slice(height // 4, height - height // 4), slice(width // 4, width - width // 4)),
    }
    mask[regions[name]] = 255
    return PIL.Image.fromarray(mask, mode="L")


def read_mask(mask: str, name: str, height: int, width: int) -> PIL.Image.Image:
    """`mask` as a mask image: a preset name (`MASK_PRESETS`) or the path of an image file (white fills)."""
    if mask in MASK_PRESETS:
        return preset_mask(mask, height, width)
    if not os.path.isfile(mask):
        raise ValueError(f"{name} {mask!r} is neither a preset ({', '.join(MASK_PRESETS)}) nor an image file.")
    return read_image(mask, name)


def side_by_side(images: list[PIL.Image.Image], scale: int = 4) -> PIL.Image.Image:
    """The images in one row, each enlarged `scale` times by nearest neighbour (the models' images are small), with a
    white gap between them."""
    width, height = images[0].size
    gap = 2 * scale
    row = PIL.Image.new("RGB", (len(images) * (width * scale + gap) - gap, height * scale), "white")
    for index, image in enumerate(images):
        big = image.convert("RGB").resize((width * scale, height * scale), PIL.Image.NEAREST)
        row.paste(big, (index * (width * scale + gap), 0))
    return row


def save_image(image: PIL.Image.Image, path: str) -> None:
    """Writes `image` to `path` (the format from its extension) whole or not at all: through a temporary file beside
    it, renamed into place."""
    from hf_ddpm.evaluation.reference import written_whole

    file_format = PIL.Image.registered_extensions().get(os.path.splitext(path)[1].lower(), "PNG")
    with written_whole(path) as partial:
        image.save(partial, format=file_format)


def with_mask_shown(image: PIL.Image.Image, mask: PIL.Image.Image) -> PIL.Image.Image:
    """`image` with the region that `mask` fills painted mid-grey: what the model is given to start from."""
    shown = np.asarray(image.convert("RGB")).copy()
    shown[np.asarray(mask.convert("L")) > 127] = 128
    return PIL.Image.fromarray(shown)
