"""The web demo of a trained pipeline: a Gradio page that draws images of the chosen classes and shows the grid while
it is being denoised, compares guidance scales on the same seeds, and edits a real image (class-swap or inpainting).

`hf-ddpm serve MODEL` runs it; a Space's `app.py` is `build_demo(MODEL)` and `launch`. Every value a page sends is
checked here, on the server and before any work, in hf-ddpm's own code: the events take the values as sent (not as
Gradio's components would convert them), so a message always names the control. One request's work is bounded
(images x steps), so that one visitor cannot hold the queue for long, and a run stops at its next step when its
visitor cancels it or goes away.
"""

import atexit
import contextlib
import logging
import math
import numbers
import os
import queue
import re
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gradio as gr
import numpy as np
import PIL.Image
from huggingface_hub import ModelCard

from hf_ddpm.editing import MASK_PRESETS, preset_mask, read_image, side_by_side, with_mask_shown
from hf_ddpm.messages import with_flag_names
from hf_ddpm.pipelines import DDPMCFGImg2ImgPipeline, DDPMCFGInpaintPipeline, DDPMCFGPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg import default_num_inference_steps, variance_preserving
from hf_ddpm.pipelines.pipeline_ddpm_cfg_img2img import check_strength
from hf_ddpm.pipelines.pipeline_ddpm_cfg_inpaint import masks_as_tensor
from hf_ddpm.sampling import (
    SCHEDULER_NAMES,
    SCHEDULERS,
    as_pil_images,
    load_pipeline,
    per_image_generators,
    scheduler_from_name,
)

logger = logging.getLogger(__name__)

# The controls, by the pipeline argument they set: the pipeline's messages name its arguments in backquotes.
CONTROL_NAMES = {
    "class_labels": "Class",
    "batch_size": "Images per class",
    "guidance_scale": "Guidance scale",
    "num_inference_steps": "Steps",
    "guidance_rescale": "Guidance rescale",
    "guidance_interval": "Guidance interval",
    "generator": "Seed",
    "scheduler": "Scheduler",
    "image": "Image",
    "mask_image": "Mask",
    "strength": "Strength",
    "jump_length": "Jump length",
    "jump_n_sample": "Jump samples",
}
SEED_LIMIT = 2**63  # image i starts from the noise of seed + i, and a torch generator takes at most 64 bits
PREVIEWS_PER_RUN = 10  # intermediate grids sent to the page during one run
# While a run samples, its event hands control back to Gradio at least this often, with no change to the page: Gradio
# can end an event only between two of its updates, and a client's cancel or disconnect then stops the run at its next
# step instead of at its next preview (or, for Compare guidance, at the end of a scale).
HEARTBEAT_SECONDS = 0.1
DISPLAY_SIDE = 768  # the live grid is enlarged (pixels kept sharp) to about this many pixels a side
COMPARE_SCALES = (1.0, 2.0, 4.0)
START_CLASSES, START_IMAGES_PER_CLASS = 2, 4  # what the page asks for at first, where the server allows that much
# Small images enlarged by the page stay sharp; the edited image, at the model's few pixels a side, fills its box.
CSS = "img { image-rendering: pixelated; } #edit-result img { width: 100%; height: 100%; object-fit: contain; }"

EDIT_MODES = {"class-swap": "Class-swap", "inpaint": "Inpaint"}  # the values the page sends, and their labels
MASK_CHOICES = {
    "brushed": "brushed on the image",
    "left": "left half",
    "right": "right half",
    "top": "top half",
    "bottom": "bottom half",
    "centre": "centre square",
}
EDIT_STRENGTH = 0.8  # the image-to-image pipeline's and `hf-ddpm edit`'s default
INPAINT_STEPS, JUMP_LENGTH, JUMP_N_SAMPLE = 100, 10, 10  # `hf-ddpm inpaint`'s defaults
EDITOR_SIDE = 320  # the editor shows the image enlarged by a whole factor to about this many pixels a side
MASK_COLOUR = "#ff00ff"  # the brush: a colour no grey image has, so that the mask stands out
# What one visitor may leave on the server: uploads of at most this size (an image of the models' few dozen pixels a
# side takes a few kilobytes, the editor's canvas a few hundred), and Gradio's file cache pruned every 10 minutes of
# the files older than an hour (about ten images a run; they would otherwise last as long as the server).
MAX_UPLOAD_SIZE = "4mb"
CACHE_CLEAN_UP = (600, 3600)


class SamplingCancelled(Exception):
    """Raised from the step callback when the visitor pressed Cancel: the pipeline stops at that step."""


def refused(message: str) -> gr.Error:
    """The error the page shows for a value it cannot take, logged as one line: a visitor's mistake is no traceback
    in the server's log."""
    logger.warning("refused a request: %s", message)
    return gr.Error(message, print_exception=False)


@dataclass(frozen=True)
class ModelDefaults:
    """What the page starts with, taken from the model: its resolution, and the guidance scale, steps and scheduler it
    was shown with (its card's training settings, else its saved scheduler and the pipeline's own defaults)."""

    resolution: int
    guidance_scale: float
    num_inference_steps: int
    scheduler: str


def model_defaults(pipe: DDPMCFGPipeline, model: str | None = None) -> ModelDefaults:
    """The page's starting values for `pipe`, loaded from `model` (a folder or Hub id, where its card is read)."""
    settings = card_settings(model) if model is not None else {}
    conditional = pipe.config.null_class_id is not None
    num_train_timesteps = pipe.scheduler.config.num_train_timesteps
    saved = [name for name, cls in SCHEDULERS.items() if cls.__name__ == type(pipe.scheduler).__name__]
    sample_size = pipe.unet.config.sample_size
    steps = _number(settings.get("num_inference_steps"), int, default_num_inference_steps(pipe.scheduler))
    return ModelDefaults(
        resolution=sample_size if isinstance(sample_size, int) else max(sample_size),
        guidance_scale=_number(settings.get("guidance_scale"), float, 3.0) if conditional else 1.0,
        num_inference_steps=min(steps, num_train_timesteps),
        scheduler=saved[0] if saved else "ddim",
    )


def card_settings(model: str) -> dict[str, str]:
    """The training settings table of the model's card (hf_ddpm.hub writes it), or nothing when it has none: a folder's
    card is its README.md, a Hub id's the repository's."""
    local = os.path.isdir(model)
    source = os.path.join(model, "README.md") if local else model
    if local and not os.path.isfile(source):  # `ModelCard.load` would take that path for a Hub id, and ask the Hub
        return {}
    try:
        card = ModelCard.load(source)
    except Exception:  # no card, or a Hub that cannot be reached: the page falls back to the pipeline's defaults
        return {}
    return dict(re.findall(r"^\| `(\w+)` \| (.*?) \|$", card.text, flags=re.MULTILINE))


def _number(text: str | None, kind: type, default):
    try:
        return kind(text)
    except (TypeError, ValueError):
        return default


class DemoApp:
    """The functions behind the page's controls, callable without a browser.

    Args:
        pipe ([`DDPMCFGPipeline`]): the loaded pipeline; its UNet is shared by all requests, its scheduler copied for
            each (so that concurrent runs never share a scheduler's state).
        model_name (`str`): the model's folder or Hub id, shown on the page.
        defaults ([`ModelDefaults`]): the controls' starting values.
        max_image_steps (`int`): the most images x steps one request may ask for (guidance comparisons count every
            scale, inpainting every step of its resampling schedule).
        examples (`list[str]`, *optional*): image files in the model's size that the Edit tab offers to edit.

    Raises:
        `ValueError`: an example is not an image in the model's size.
    """

    def __init__(
        self,
        pipe: DDPMCFGPipeline,
        model_name: str,
        defaults: ModelDefaults,
        max_image_steps: int = 4000,
        examples: list[str] | None = None,
    ):
        self.pipe, self.model_name, self.defaults, self.max_image_steps = pipe, model_name, defaults, max_image_steps
        self.pipe.set_progress_bar_config(disable=True)
        self.class_names = list((pipe.config.id2label or {}).values())
        if pipe.config.null_class_id is not None and not self.class_names:
            self.class_names = [str(label_id) for label_id in range(pipe.config.null_class_id)]
        _, self.channels, self.height, self.width = pipe.sample_shape(1)
        self.editor_scale = max(1, EDITOR_SIDE // max(self.height, self.width))
        self.examples = [(self._example(path), os.path.splitext(os.path.basename(path))[0]) for path in examples or []]
        self._cancel_events: dict[str, threading.Event] = {}  # the run of each visitor, by session
        self._runs: dict[threading.Thread, threading.Event] = {}  # every sampling thread, and its cancel flag
        atexit.register(self.stop_runs)  # a sampling thread still running when Python exits would abort it

    @property
    def conditional(self) -> bool:
        return self.pipe.config.null_class_id is not None

    def starting_request(self) -> tuple[list[str], int, int]:
        """The classes, images per class and steps that the page starts with, always within `max_image_steps` for
        Generate and for Compare guidance at its starting scales (it draws each): the first classes and images at the
        model's steps, fewer images where that is too much work (its sampler at the steps it was shown with matters
        more than how many images it draws), and fewer steps only where one image of each class is."""
        budget = max(1, self.max_image_steps // (len(COMPARE_SCALES) if self.conditional else 1))
        classes = self.class_names[: min(START_CLASSES, budget)]  # at least one image-step each
        count, steps = len(classes) or 1, self.defaults.num_inference_steps
        images_per_class = min(START_IMAGES_PER_CLASS, max(1, budget // (count * steps)))
        return classes, images_per_class, min(steps, budget // (count * images_per_class))

    def starting_edit_steps(self, mode: str) -> int:
        """The Edit tab's steps for `mode`, within `max_image_steps`: the model's steps for a class-swap (of which
        `strength` run), `hf-ddpm inpaint`'s 100 DDPM steps for inpainting (at most the training steps), fewer where
        RePaint's resampling schedule would be too long."""
        if mode == "class-swap":
            return min(self.defaults.num_inference_steps, self.max_image_steps)
        steps = min(INPAINT_STEPS, self.pipe.scheduler.config.num_train_timesteps)
        while steps > 1 and repaint_length(steps, JUMP_LENGTH, JUMP_N_SAMPLE) > self.max_image_steps:
            steps -= 1
        return steps

    # ----- the page's events -----
    def generate(
        self,
        classes,
        images_per_class,
        guidance_scale,
        steps,
        scheduler,
        seed,
        guidance_rescale=0.0,
        interval_low=0.0,
        interval_high=1.0,
        request: gr.Request | None = None,
    ) -> Iterator[tuple]:
        """Draws `images_per_class` images of each class: yields (the grid being denoised, no final images yet, a
        status line) every few steps, then (the final grid, the final images, a status line); in between, unchanged
        updates (`gr.skip()`) while nothing new is ready."""
        labels = self._labels(classes)
        num_images, steps, seed = self._check_request(labels, images_per_class, steps, seed, runs=1)
        call = dict(
            class_labels=labels,
            batch_size=int(images_per_class),
            guidance_scale=guidance_scale,
            num_inference_steps=steps,
            guidance_rescale=guidance_rescale,
            guidance_interval=_interval(interval_low, interval_high),
            generator=per_image_generators(seed, num_images),
        )
        pipe = self._pipeline_with(scheduler)
        with contextlib.closing(self._stream(pipe, call, request, steps, self._grid_of(pipe, labels))) as frames:
            for frame in frames:
                if frame is None:
                    yield _unchanged(3)
                elif frame[2] is None:
                    yield frame[1], None, f"Denoising: step {frame[0]} of {steps}"
                else:
                    sampler = SCHEDULER_NAMES[scheduler]
                    status = f"{len(frame[2])} images, {steps} steps of {sampler}, guidance {guidance_scale:g}"
                    yield frame[1], frame[2], status

    def compare_guidance(
        self, classes, images_per_class, scales_text, steps, scheduler, seed, request: gr.Request | None = None
    ) -> Iterator[tuple]:
        """The same seeds at each guidance scale of `scales_text` ("1, 2, 4"), side by side: yields the gallery of
        grids (one per scale, captioned) as each scale is done, and a status line; in between, unchanged updates
        while a scale samples."""
        scales = self._scales(scales_text)
        labels = self._labels(classes)
        if labels is None and any(scale != 1 for scale in scales):
            raise refused("Class: choose at least one class: a guidance scale other than 1 moves samples towards one.")
        num_images, steps, seed = self._check_request(labels, images_per_class, steps, seed, runs=len(scales))
        pipe = self._pipeline_with(scheduler)
        grids = []
        for scale in scales:
            call = dict(
                class_labels=labels,
                batch_size=int(images_per_class),
                guidance_scale=scale,
                num_inference_steps=steps,
                generator=per_image_generators(seed, num_images),
            )
            with contextlib.closing(self._stream(pipe, call, request, steps, self._grid_of(pipe, labels))) as frames:
                for frame in frames:
                    if frame is None or frame[2] is None:  # the gallery shows whole scales only
                        yield _unchanged(2)
                    else:
                        grids.append((frame[1], f"guidance {scale:g}"))
            done = ", ".join(f"{done_scale:g}" for done_scale in scales[: len(grids)])
            yield grids, f"Guidance {done}: {len(grids)} of {len(scales)} scales done"

    def edit(
        self,
        mode,
        image,
        mask,
        target,
        strength,
        guidance_scale,
        steps,
        seed,
        jump_length=JUMP_LENGTH,
        jump_n_sample=JUMP_N_SAMPLE,
        request: gr.Request | None = None,
    ) -> Iterator[tuple]:
        """
        Edits the editor's image towards the class `target`: a class-swap (`mode` "class-swap", SDEdit at `strength`)
        or an inpainting (`mode` "inpaint", RePaint) of the region the `mask` names: "brushed" (what was painted over
        the image) or a preset of `MASK_PRESETS`. Yields (the source, [what is kept of it,] and the edit being
        denoised, in a row; no result yet; a status line) every few steps, then (the row, the edited image at the
        model's size, a status line); in between, unchanged updates while nothing new is ready.

        `image` is the editor's value: a dict with the "background" image and the brushed "layers" (PIL images, or
        the files Gradio received), the background the model's size or a whole multiple of it (as the page shows it).
        """
        if mode not in EDIT_MODES:
            raise refused(f"Edit must be one of {list(EDIT_MODES)}, got {mode!r}.")
        source, brushed = self._edit_source(image)
        label = self._target(target)
        steps, seed = _whole_number("Steps", steps), self._seed(seed, 1)
        if mode == "class-swap":
            call, work, pipe = self._class_swap(source, strength, steps)
            done = f" at strength {strength:g}: {work} of {steps} steps of {SCHEDULER_NAMES[self.defaults.scheduler]}"
            shown = [source]
        else:
            mask_image = self._inpaint_mask(mask, brushed)
            call, work, pipe = self._inpainting(source, mask_image, steps, jump_length, jump_n_sample)
            done = (
                f": {steps} DDPM steps, each stretch of {call['jump_length']} sampled {call['jump_n_sample']} times "
                f"({work} steps)"
            )
            shown = [source, with_mask_shown(source.convert("RGB"), mask_image)]
        call.update(class_labels=label, guidance_scale=guidance_scale, generator=per_image_generators(seed, 1))

        def row(images: list[PIL.Image.Image]) -> PIL.Image.Image:
            scale = max(1, DISPLAY_SIDE // ((len(shown) + 1) * self.width))
            return side_by_side([*shown, images[0]], scale=scale)

        towards = f" towards {label}" if label is not None else ""
        with contextlib.closing(self._stream(pipe, call, request, work, row)) as frames:
            for frame in frames:
                if frame is None:
                    yield _unchanged(3)
                elif frame[2] is None:
                    yield frame[1], None, f"Denoising: step {frame[0]} of {work}"
                else:
                    action = "Edited" if mode == "class-swap" else "Filled"
                    yield frame[1], frame[2][0], f"{action}{towards}{done}, guidance {guidance_scale:g}"

    def cancel(self, request: gr.Request | None = None) -> str:
        """Stops this visitor's run at its next step."""
        event = self._cancel_events.get(_session(request))
        if event is not None:
            event.set()
        return "Cancelled."

    def stop_runs(self) -> None:
        """Cancels every run and waits for its thread to end (at its next step)."""
        for worker, cancel in list(self._runs.items()):
            cancel.set()
            worker.join()

    # ----- the Edit tab's image and mask -----
    def load_image(self, path) -> tuple[dict, str]:
        """The editor's value for an uploaded image file, and a status line: the file checked (an image, its pixels
        bounded before they are decoded, the model's size), in the model's mode, enlarged for brushing on."""
        source = self._picture(path, "Image")
        if source is None:
            raise refused("Image: no file was uploaded.")
        if problem := self._size_problem(source):
            raise refused(f"Image {problem}.")
        return self.editor_value(self._in_model_mode(source)), f"Loaded {_file_name(path)!r}."

    def load_mask(self, path, image) -> tuple[dict, str]:
        """The editor's value with an uploaded mask file painted over its image (then brushed on like any other
        stroke), and a status line: the mask an image in the model's size holding black (kept) and white (filled)
        only."""
        source, _ = self._edit_source(image)
        mask = self._picture(path, "Mask")
        if mask is None:
            raise refused("Mask: no file was uploaded.")
        try:
            masks = masks_as_tensor(mask, 1, self.height, self.width)
        except ValueError as error:
            raise refused(with_flag_names(str(error), CONTROL_NAMES)) from None
        mask = PIL.Image.fromarray(masks[0, 0].numpy().astype(np.uint8) * 255, "L")
        return self.editor_value(source, mask), f"Painted the mask {_file_name(path)!r} over the image."

    def example(self, index) -> tuple[dict, str]:
        """The editor's value for the example at `index` (the examples' order), and a status line."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.examples):
            raise refused(f"Example must be an index in [0, {len(self.examples) - 1}], got {index!r}.")
        image, name = self.examples[index]
        return self.editor_value(image), f"Loaded the example {name!r}."

    def editor_value(self, source: PIL.Image.Image, mask: PIL.Image.Image | None = None) -> dict:
        """The editor's value for `source` at the model's size: the image enlarged by `editor_scale` (pixels kept
        sharp) and, where `mask` is white, a layer painted with the brush's colour."""
        size = (self.width * self.editor_scale, self.height * self.editor_scale)
        background = source.convert("RGBA").resize(size, PIL.Image.NEAREST)
        layers = []
        if mask is not None:
            layers.append(PIL.Image.new("RGBA", size, (0, 0, 0, 0)))
            layers[0].paste(
                PIL.Image.new("RGBA", size, MASK_COLOUR), mask=mask.convert("L").resize(size, PIL.Image.NEAREST)
            )
        # Neither an empty layer nor a composite: the editor makes its own, and Gradio would write each to the same
        # cached file as an identical one (every empty layer; the background) while the page may be reading it.
        return {"background": background, "layers": layers, "composite": None}

    def _edit_source(self, value) -> tuple[PIL.Image.Image, PIL.Image.Image | None]:
        """The image of the editor's `value` at the model's size, and its brushed mask (white where any of a model
        pixel's enlarged pixels was painted; `None` where nothing was)."""
        value = value if isinstance(value, dict) else {"background": value}
        background = self._picture(value.get("background"), "Image")
        if background is None:
            raise refused("Image: upload an image or pick an example first.")
        scale = background.width // self.width
        if scale < 1 or background.size != (self.width * scale, self.height * scale):
            raise refused(f"Image {self._size_problem(background)} (or a whole multiple, as the page shows them).")
        source = self._in_model_mode(background)
        source = source.reduce(scale) if scale > 1 else source
        painted = np.zeros((self.height, self.width), dtype=bool)
        for layer in value.get("layers") or []:
            layer = self._picture(layer, "Mask")
            if layer is None:
                continue
            if layer.size != background.size:
                raise refused(
                    f"Mask: the brushed layer is {layer.width}x{layer.height}, the image {background.width}x"
                    f"{background.height}; they must be the same size."
                )
            alpha = np.asarray(layer.convert("RGBA"))[..., 3] > 0
            painted |= alpha.reshape(self.height, scale, self.width, scale).any(axis=(1, 3))
        mask = PIL.Image.fromarray(painted.astype(np.uint8) * 255, "L") if painted.any() else None
        return source, mask

    def _picture(self, item, name: str) -> PIL.Image.Image | None:
        """An image the page sent: a PIL image (a direct call), or a file that Gradio received (its path, or its file
        data), read with its pixels bounded before they are decoded and named by its own file name."""
        if item is None or isinstance(item, PIL.Image.Image):
            return item
        path = item.get("path") if isinstance(item, dict) else item
        if not isinstance(path, str):
            raise refused(f"{name} must be an image file, got {type(item).__name__}.")
        try:
            return read_image(path, name, shown_as=os.path.basename(path))
        except ValueError as error:
            raise refused(str(error)) from None

    def _example(self, path: str) -> PIL.Image.Image:
        image = read_image(path, "`examples`")
        if problem := self._size_problem(image):
            raise ValueError(f"`examples`: {os.path.basename(path)!r} {problem}.")
        return self._in_model_mode(image)

    def _in_model_mode(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """`image` as the pipelines read it: grey for a model of one channel, RGB for three."""
        mode = {1: "L", 3: "RGB"}.get(self.channels)
        return image.convert(mode) if mode else image

    def _size_problem(self, image: PIL.Image.Image) -> str | None:
        if image.size == (self.width, self.height):
            return None
        return f"is {image.width}x{image.height}; this model takes {self.width}x{self.height} images"

    def _target(self, target) -> str | None:
        """The class to edit towards, as the pipeline takes it (a name; it refuses unknown ones), `None` for none."""
        if not self.conditional or target is None or target == "":
            return None
        if not isinstance(target, str):
            raise refused(f"Class must be a class name, got {target!r}.")
        return target

    def _inpaint_mask(self, mask, brushed: PIL.Image.Image | None) -> PIL.Image.Image:
        if mask == "brushed":
            if brushed is None:
                raise refused("Mask: nothing is brushed: paint over what to fill, or choose a preset.")
            return brushed
        if mask not in MASK_PRESETS:
            raise refused(f"Mask must be one of {list(MASK_CHOICES)}, got {mask!r}.")
        return preset_mask(mask, self.height, self.width)

    def _class_swap(self, source, strength, steps: int) -> tuple[dict, int, DDPMCFGImg2ImgPipeline]:
        """The image-to-image call of a class-swap, its steps (the last `strength` of `steps`) and its pipeline."""
        try:
            check_strength(strength)
        except ValueError as error:
            raise refused(with_flag_names(str(error), CONTROL_NAMES)) from None
        work = min(int(steps * strength), steps)
        self._check_work(work, f"1 image x {work} steps ({strength:g} of {steps})", "a lower strength or fewer steps")
        pipe = self._pipeline_with(self.defaults.scheduler, DDPMCFGImg2ImgPipeline)
        return dict(image=source, strength=strength, num_inference_steps=steps), work, pipe

    def _inpainting(self, source, mask_image, steps: int, jump_length, jump_n_sample):
        """The inpainting call, its steps (RePaint's schedule, resampling included) and its pipeline."""
        jump_length, jump_n_sample = (
            _whole_number("Jump length", jump_length),
            _whole_number("Jump samples", jump_n_sample),
        )
        for name, value in (("Steps", steps), ("Jump length", jump_length), ("Jump samples", jump_n_sample)):
            if value < 1:
                raise refused(f"{name} must be an integer >= 1, got {value}.")
        work = repaint_length(steps, jump_length, jump_n_sample)
        self._check_work(
            work,
            f"1 image x {work} steps ({steps}, each stretch of {jump_length} sampled {jump_n_sample} times)",
            "fewer steps or jump samples",
        )
        pipe = self._pipeline_with(self.defaults.scheduler, DDPMCFGInpaintPipeline)
        call = dict(
            image=source,
            mask_image=mask_image,
            num_inference_steps=steps,
            jump_length=jump_length,
            jump_n_sample=jump_n_sample,
        )
        return call, work, pipe

    # ----- checks -----
    def _labels(self, classes) -> list[str] | None:
        """The chosen classes as the pipeline takes them (names; it refuses unknown ones), `None` for none."""
        if not self.conditional or classes is None or (isinstance(classes, (str, list, tuple)) and not classes):
            return None
        if isinstance(classes, str):
            return [classes]
        if not isinstance(classes, (list, tuple)):
            raise refused(f"Class must be a list of class names, got {classes!r}.")
        return list(classes)

    def _check_request(self, labels, images_per_class, steps, seed, runs: int) -> tuple[int, int, int]:
        """The number of images, the steps and the seed of one run, as integers; a `gr.Error` for a seed out of
        range or too much work."""
        images_per_class, steps = _whole_number("Images per class", images_per_class), _whole_number("Steps", steps)
        num_images = max(images_per_class, 1) * (len(labels) if labels else 1)
        seed = self._seed(seed, num_images)
        per = f" x {runs} guidance scales" if runs > 1 else ""
        self._check_work(
            num_images * steps * runs,
            f"{num_images} images x {steps} steps{per}",
            "fewer classes, images or steps",
        )
        return num_images, steps, seed

    def _seed(self, seed, num_images: int) -> int:
        seed = _whole_number("Seed", seed)
        if not 0 <= seed <= SEED_LIMIT - num_images:
            raise refused(f"Seed must be in [0, {SEED_LIMIT - num_images}] for {num_images} images, got {seed}.")
        return seed

    def _check_work(self, work: int, what: str, advice: str) -> None:
        if work > self.max_image_steps:
            raise refused(
                f"Too much work for one request: {what} = {work} image-steps; this server allows at most "
                f"{self.max_image_steps}. Choose {advice}."
            )

    def _scales(self, text) -> list[float]:
        try:
            scales = [float(part) for part in re.split(r"[,\s]+", str(text).strip()) if part]
        except ValueError:
            raise refused(f"Guidance scales must be numbers separated by commas, such as '1, 2, 4'; got {text!r}.")
        if not 1 <= len(scales) <= 6:
            raise refused(f"Guidance scales: give 1 to 6 scales, got {len(scales)}.")
        if not all(math.isfinite(scale) and scale >= 0 for scale in scales):
            raise refused(f"Guidance scales must be numbers >= 0, got {text!r}.")
        return scales

    def _pipeline_with(self, scheduler, kind: type[DDPMCFGPipeline] = DDPMCFGPipeline) -> DDPMCFGPipeline:
        """A pipeline of class `kind` on the loaded UNet, with its own scheduler of kind `scheduler` (the saved noise
        schedule), for one run."""
        if not isinstance(scheduler, str) or scheduler not in SCHEDULERS:
            raise refused(f"Scheduler must be one of {', '.join(sorted(SCHEDULERS))}, got {scheduler!r}.")
        new_scheduler = scheduler_from_name(scheduler, self.pipe.scheduler)
        pipe = kind(
            self.pipe.unet,
            new_scheduler,
            id2label=self.pipe.config.id2label,
            null_class_id=self.pipe.config.null_class_id,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # ----- sampling on a worker thread, seen step by step -----
    def _stream(
        self, pipe: DDPMCFGPipeline, call: dict, request, steps: int, picture: Callable[[list], PIL.Image.Image]
    ) -> Iterator[tuple | None]:
        """
        Runs `pipe(**call)` on a thread; yields (step, picture, None) every few of its `steps` steps, then (steps,
        final picture, final images), each picture made by `picture` from the images so far; and `None` whenever
        nothing new came for `HEARTBEAT_SECONDS`. The pipeline's `ValueError`s become `gr.Error`s naming the control,
        and Cancel a "Cancelled." one. Closing the generator (Gradio does, when the client cancels or goes) stops the
        run at its next step.
        """
        frames: queue.Queue = queue.Queue()
        session = _session(request)
        cancel = self._cancel_events[session] = threading.Event()
        every = max(1, math.ceil(steps / PREVIEWS_PER_RUN))

        def on_step(pipe, step, timestep, callback_kwargs):
            if cancel.is_set():
                raise SamplingCancelled
            if (step + 1) % every == 0 and step + 1 < steps:
                latents = variance_preserving(pipe.scheduler, callback_kwargs["latents"])
                frames.put((step + 1, picture(pipe.postprocess(latents, "pil"))))
            return callback_kwargs

        def run():
            try:
                images = pipe(**call, output_type="pt", callback_on_step_end=on_step).images
                frames.put((steps, as_pil_images(images)))
            except BaseException as error:  # the worker's error is raised where the page waits for it
                frames.put(error)
            frames.put(None)

        worker = threading.Thread(target=run, name="sampling", daemon=True)
        self._runs[worker] = cancel
        worker.start()
        try:
            while True:
                try:
                    item = frames.get(timeout=HEARTBEAT_SECONDS)
                except queue.Empty:
                    yield None
                    continue
                if item is None:
                    break
                if isinstance(item, SamplingCancelled):
                    raise gr.Error("Cancelled.", print_exception=False)
                if isinstance(item, ValueError):
                    raise refused(with_flag_names(str(item), CONTROL_NAMES))
                if isinstance(item, BaseException):
                    raise item
                step, content = item
                if isinstance(content, list):
                    yield step, picture(content), content
                else:
                    yield step, content, None
        finally:
            cancel.set()  # a page that went away stops its run, at its next step
            worker.join()
            self._runs.pop(worker, None)
            if self._cancel_events.get(session) is cancel:
                del self._cancel_events[session]

    def _grid_of(self, pipe: DDPMCFGPipeline, labels) -> Callable[[list], PIL.Image.Image]:
        """The page's grid of images drawn for `labels`: the pipeline's named grid, enlarged by a whole factor (pixels
        kept sharp), its names with it, so that they stay readable where the browser shrinks a large grid to fit."""

        def grid_of(images: list[PIL.Image.Image]) -> PIL.Image.Image:
            grid = pipe.sample_grid(images, labels)
            factor = max(1, DISPLAY_SIDE // max(grid.size))
            return grid.resize((grid.width * factor, grid.height * factor), PIL.Image.NEAREST)

        return grid_of


def repaint_length(num_inference_steps: int, jump_length: int, jump_n_sample: int) -> int:
    """The number of steps of RePaint's schedule (`repaint_schedule` of the inpainting pipeline), without building it
    (a request may ask for billions): the steps down, and `jump_length` up and down again `jump_n_sample - 1` times at
    every `jump_length`-th step below the first `jump_length`."""
    jumps = len(range(0, num_inference_steps - jump_length, jump_length))
    return num_inference_steps + 2 * jump_length * (jump_n_sample - 1) * jumps


def _file_name(item) -> str:
    """The name of a file the page sent (a path, or Gradio's file data), as its visitor named it."""
    path = item.get("orig_name") or item.get("path") if isinstance(item, dict) else item
    return os.path.basename(str(path))


def _whole_number(name: str, value) -> int:
    """`value` as an int; a `gr.Error` naming the control `name` unless it is a finite whole number."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise refused(f"{name} must be a whole number, got {value!r}.")
    return int(value)


def _unchanged(count: int) -> tuple:
    """An update that leaves `count` outputs as they are."""
    return tuple(gr.skip() for _ in range(count))


def _display_name(model: str) -> str:
    """A Hub id as it is; a folder by its own name (where it lies on this machine is nobody's business)."""
    return os.path.basename(os.path.normpath(model)) if os.path.isdir(model) else model


def _interval(low: float, high: float) -> tuple[float, float] | None:
    return None if (low, high) == (0.0, 1.0) else (low, high)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "direct"


def example_files(examples: str | list[str] | None) -> list[str]:
    """The example images of `examples`: a folder's image files (by name), or a list of files as it is."""
    if examples is None or isinstance(examples, list):
        return examples or []
    if not os.path.isdir(examples):
        raise ValueError(f"`examples` {examples!r} is not a folder of images.")
    extensions = PIL.Image.registered_extensions()
    names = sorted(name for name in os.listdir(examples) if os.path.splitext(name)[1].lower() in extensions)
    if not names:
        raise ValueError(f"`examples` {examples!r} holds no image files.")
    return [os.path.join(examples, name) for name in names]


def build_demo(
    model: str | DDPMCFGPipeline,
    model_name: str | None = None,
    device: str | None = None,
    max_image_steps: int = 4000,
    concurrency_limit: int = 1,
    max_queue_size: int = 16,
    examples: str | list[str] | None = None,
) -> gr.Blocks:
    """
    The Gradio page of a pipeline, queued: `concurrency_limit` sampling runs at a time (one per CPU device is what
    a CPU serves well), whichever tab they come from, at most `max_queue_size` requests waiting, each shown its place.

    Args:
        model (`str` or [`DDPMCFGPipeline`]): a folder written by `save_pretrained`, a Hub id, or a loaded pipeline.
        model_name (`str`, *optional*): the name shown on the page (default: the Hub id, or the folder's name).
        device (`str`, *optional*): torch device (default: cuda if available, else cpu).
        max_image_steps (`int`): the most images x steps one request may ask for.
        examples (`str` or `list[str]`, *optional*): real images in the model's size for the Edit tab: a folder of
            them or a list of files.

    Raises:
        `ValueError`: the model cannot be loaded, a setting is out of range, or an example is not an image of the
        model's size.
    """
    for name, value in (
        ("max_image_steps", max_image_steps),
        ("concurrency_limit", concurrency_limit),
        ("max_queue_size", max_queue_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    example_paths = example_files(examples)
    pipe = load_pipeline(model, device=device) if isinstance(model, str) else model
    model_name = model_name or (_display_name(model) if isinstance(model, str) else "the pipeline")
    defaults = model_defaults(pipe, model if isinstance(model, str) else None)
    app = DemoApp(pipe, model_name, defaults, max_image_steps=max_image_steps, examples=example_paths)
    with gr.Blocks(title=f"hf-ddpm: {model_name}", analytics_enabled=False, delete_cache=CACHE_CLEAN_UP) as demo:
        _page(app)
    return demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue_size)


def _page(app: DemoApp) -> None:
    defaults = app.defaults
    kind = "class-conditional" if app.conditional else "unconditional"
    gr.Markdown(
        f"# {app.model_name}\nA {kind} pixel-space diffusion model ({defaults.resolution}x"
        f"{defaults.resolution}), sampled with hf-ddpm. The pictures update while they are denoised."
    )
    with gr.Tabs():
        with gr.Tab("Generate", elem_id="generate-tab"):
            _generate_tab(app)
        with gr.Tab("Edit", elem_id="edit-tab"):
            _edit_tab(app)


# Every event has a name that Gradio's API shows, takes the values as the client sent them (checked by DemoApp, whose
# messages name the controls), and the sampling events share one queue: `concurrency_limit` runs at a time in all.
SAMPLING = dict(preprocess=False, concurrency_id="sampling")


def _generate_tab(app: DemoApp) -> None:
    defaults, steps_limit = app.defaults, app.pipe.scheduler.config.num_train_timesteps
    start_classes, start_images, start_steps = app.starting_request()
    steps_note = None
    if (start_images, start_steps) != (START_IMAGES_PER_CLASS, defaults.num_inference_steps):
        compared = f" (Compare guidance counts each of its {len(COMPARE_SCALES)} scales)" if app.conditional else ""
        steps_note = (
            f"The model's default is {defaults.num_inference_steps} steps; this server allows at most "
            f"{app.max_image_steps} image-steps (images x steps) a request{compared}, so the page starts "
            f"with {start_images * (len(start_classes) or 1)} images at {start_steps} steps."
        )
    with gr.Row():
        with gr.Column(scale=1):
            classes = gr.Dropdown(
                app.class_names,
                value=start_classes,
                multiselect=True,
                label="Class",
                visible=app.conditional,
                elem_id="classes",
            )
            images_per_class = gr.Slider(1, 16, value=start_images, step=1, label="Images per class", elem_id="images")
            guidance = gr.Slider(
                0,
                10,
                value=defaults.guidance_scale,
                step=0.1,
                label="Guidance scale",
                visible=app.conditional,
                elem_id="guidance",
            )
            steps = gr.Slider(
                1, steps_limit, value=start_steps, step=1, label="Steps", info=steps_note, elem_id="steps"
            )
            scheduler = gr.Dropdown(
                [(SCHEDULER_NAMES[key], key) for key in SCHEDULERS],
                value=defaults.scheduler,
                label="Scheduler",
                elem_id="scheduler",
            )
            seed, random_seed = _seed_controls("seed")
            with gr.Accordion("Advanced", open=False, visible=app.conditional):
                rescale = gr.Slider(0, 1, value=0, step=0.05, label="Guidance rescale", elem_id="rescale")
                interval_low = gr.Slider(0, 1, value=0, step=0.05, label="Guide from noise level", elem_id="low")
                interval_high = gr.Slider(0, 1, value=1, step=0.05, label="Guide up to noise level", elem_id="high")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
        with gr.Column(scale=2):
            live = gr.Image(label="Denoising", type="pil", format="png", interactive=False, elem_id="live")
            status = gr.Markdown(elem_id="status")
            final = gr.Gallery(
                label="Images (click one to download it)",
                format="png",
                columns=8,
                buttons=["download", "download_all"],
                elem_id="final",
            )
    with gr.Accordion(
        "Compare guidance: the same seeds at several guidance scales", open=False, visible=app.conditional
    ):
        scales = gr.Textbox(", ".join(f"{s:g}" for s in COMPARE_SCALES), label="Guidance scales", elem_id="scales")
        compare = gr.Button("Compare", elem_id="compare")
        compared = gr.Gallery(
            label="Side by side", format="png", columns=len(COMPARE_SCALES), object_fit="contain", elem_id="compared"
        )

    random_seed.click(_random_seed, outputs=seed, queue=False, api_name="random_seed")
    run = generate.click(
        app.generate,
        [classes, images_per_class, guidance, steps, scheduler, seed, rescale, interval_low, interval_high],
        [live, final, status],
        api_name="generate",
        **SAMPLING,
    )
    compare_run = compare.click(
        app.compare_guidance,
        [classes, images_per_class, scales, steps, scheduler, seed],
        [compared, status],
        api_name="compare_guidance",
        **SAMPLING,
    )
    cancel.click(app.cancel, outputs=status, cancels=[run, compare_run], queue=False, api_name="cancel")


def _edit_tab(app: DemoApp) -> None:
    defaults, steps_limit = app.defaults, app.pipe.scheduler.config.num_train_timesteps
    side = (app.width * app.editor_scale, app.height * app.editor_scale)
    gr.Markdown(
        "Upload an image in the model's size or pick an example, then redraw it towards a class (**Class-swap**) or "
        "fill a region (**Inpaint**): brush over what to fill, or choose a preset mask."
    )
    with gr.Row():
        with gr.Column(scale=1):
            editor = gr.ImageEditor(
                value=app.example(0)[0] if app.examples else None,
                label="Image (brush over what to fill)",
                type="pil",
                image_mode="RGBA",
                format="png",  # the image comes back to the byte, as the model is to keep it
                sources=(),  # images come through the upload button, which checks them before they are decoded
                transforms=(),
                layers=False,
                brush=gr.Brush(colors=[MASK_COLOUR], color_mode="fixed", default_size=app.editor_scale),
                canvas_size=side,
                elem_id="editor",
            )
            upload = gr.UploadButton("Upload an image", file_types=["image"], elem_id="edit-upload")
            examples = gr.Gallery(
                [image for image, _ in app.examples],
                label="Examples: click one to edit it",
                format="png",
                columns=6,
                height=160,
                allow_preview=False,
                visible=bool(app.examples),
                elem_id="edit-examples",
            )
        with gr.Column(scale=1):
            mode = gr.Radio(_choices(EDIT_MODES), value="class-swap", label="Edit", elem_id="edit-mode")
            target = gr.Dropdown(
                app.class_names,
                value=app.class_names[0] if app.class_names else None,
                label="Class",
                info="the class to edit towards",
                visible=app.conditional,
                elem_id="edit-class",
            )
            strength = gr.Slider(
                0,
                1,
                value=EDIT_STRENGTH,
                step=0.05,
                label="Strength",
                info="how far into the noise the image goes: 0 keeps it, 1 draws anew",
                elem_id="strength",
            )
            with gr.Column(visible=False) as inpaint_controls:
                mask = gr.Dropdown(_choices(MASK_CHOICES), value="brushed", label="Mask", elem_id="mask")
                mask_upload = gr.UploadButton(
                    "Upload a mask (white fills)", file_types=["image"], elem_id="mask-upload"
                )
                jump_length = gr.Slider(1, 50, value=JUMP_LENGTH, step=1, label="Jump length", elem_id="jump-length")
                jump_n_sample = gr.Slider(
                    1,
                    20,
                    value=JUMP_N_SAMPLE,
                    step=1,
                    label="Jump samples",
                    info="RePaint's resampling: each stretch of Jump length steps is sampled this many times",
                    elem_id="jump-samples",
                )
            guidance = gr.Slider(
                0,
                10,
                value=defaults.guidance_scale,
                step=0.1,
                label="Guidance scale",
                visible=app.conditional,
                elem_id="edit-guidance",
            )
            steps = gr.Slider(
                1, steps_limit, value=app.starting_edit_steps("class-swap"), step=1, label="Steps", elem_id="edit-steps"
            )
            seed, random_seed = _seed_controls("edit-seed")
            with gr.Row():
                edit = gr.Button("Edit", variant="primary", elem_id="edit")
                cancel = gr.Button("Cancel", variant="stop", elem_id="edit-cancel")
        with gr.Column(scale=2):
            live = gr.Image(label="Denoising", type="pil", format="png", interactive=False, elem_id="edit-live")
            status = gr.Markdown(elem_id="edit-status")
            result = gr.Image(
                label="Result (download it with the button)",
                height=DISPLAY_SIDE // 3,
                type="pil",
                format="png",
                interactive=False,
                buttons=["download"],
                elem_id="edit-result",
            )

    def choose_mode(chosen: str):
        swap = chosen == "class-swap"
        return gr.update(visible=swap), gr.update(visible=not swap), gr.update(value=app.starting_edit_steps(chosen))

    def pick_example(selected: gr.SelectData):
        return app.example(selected.index)

    mode.change(choose_mode, mode, [strength, inpaint_controls, steps], queue=False, api_name="choose_edit_mode")
    # Queued (a refusal shows its message only there), but never behind a sampling run: they take no time.
    upload.upload(app.load_image, upload, [editor, status], api_name="load_image", concurrency_limit=None)
    mask_upload.upload(
        app.load_mask,
        [mask_upload, editor],
        [editor, status],
        preprocess=False,
        api_name="load_mask",
        concurrency_limit=None,
    )
    examples.select(pick_example, outputs=[editor, status], api_name="pick_example", concurrency_limit=None)
    random_seed.click(_random_seed, outputs=seed, queue=False, api_name="random_edit_seed")
    run = edit.click(
        app.edit,
        [mode, editor, mask, target, strength, guidance, steps, seed, jump_length, jump_n_sample],
        [live, result, status],
        api_name="edit",
        **SAMPLING,
    )
    cancel.click(app.cancel, outputs=status, cancels=[run], queue=False, api_name="cancel_edit")


def _seed_controls(elem_id: str) -> tuple[gr.Number, gr.Button]:
    with gr.Row():
        seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id=elem_id)
        random_seed = gr.Button("Random", elem_id=f"random-{elem_id}")
    return seed, random_seed


def _choices(labels: dict[str, str]) -> list[tuple[str, str]]:
    """A dropdown's or radio's (label, value) pairs."""
    return [(label, value) for value, label in labels.items()]


def _random_seed() -> int:
    return secrets.randbelow(2**31)


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    prevent_thread_lock: bool = False,
    **kwargs,
) -> str:
    """Serves `demo` and returns its local address: at once with `prevent_thread_lock=True` (the server runs in the
    background), else once SIGINT (Ctrl+C) or SIGTERM has stopped it and the server is closed. An upload may be at
    most `MAX_UPLOAD_SIZE` (Gradio's `max_file_size`, which `kwargs` may set otherwise).

    Until then those signals only set a flag that this function waits for. Gradio's own wait takes Ctrl+C as a
    KeyboardInterrupt, which strikes wherever the main thread is, its start-up included (a traceback instead of a
    clean stop, or a process that never exits), and it leaves SIGTERM to kill the process.

    Raises:
        `ValueError`: the port is in use.
    """
    if prevent_thread_lock:
        return _start(demo, host, port, share, **kwargs)
    with _stop_on_signals() as stop:
        try:
            url = _start(demo, host, port, share, **kwargs)
            while not stop.wait(timeout=0.5):
                pass
            print("Stopping: closing the server.", flush=True)
        finally:
            demo.close()
    return url


def _start(demo: gr.Blocks, host: str, port: int | None, share: bool, **kwargs) -> str:
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            css=CSS,
            show_error=True,
            prevent_thread_lock=True,
            **{"max_file_size": MAX_UPLOAD_SIZE, **kwargs},
        )
    except OSError as error:
        if "Cannot find empty port" not in str(error):
            raise
        raise ValueError(
            f"--port {port} on {host} is in use by another program: stop it, or choose another --port."
        ) from None
    return demo.local_url


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set, in place of their handlers, until the block ends."""
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
