"""The web demo's Edit tab: a real image, uploaded or an example, redrawn towards a class (a class-swap, SDEdit) or
filled where a mask says (inpainting, RePaint), shown while it is denoised.

`EditingApp` holds the tab's events and the checks of its image and mask files, for `hf_ddpm.app.DemoApp` to inherit
(they run on its pipeline, checks and sampling thread); `_edit_tab` lays the tab out.
"""

import contextlib
import os
from collections.abc import Iterator

import gradio as gr
import numpy as np
import PIL.Image

from hf_ddpm.app_common import (
    CONTROL_NAMES,
    DISPLAY_SIDE,
    SAMPLING,
    _guidance_slider,
    _random_seed,
    _seed_controls,
    _unchanged,
    _whole_number,
    refused,
)
from hf_ddpm.editing import MASK_PRESETS, preset_mask, read_image, side_by_side, with_mask_shown
from hf_ddpm.messages import with_flag_names
from hf_ddpm.pipelines import DDPMCFGImg2ImgPipeline, DDPMCFGInpaintPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg_img2img import check_strength
from hf_ddpm.pipelines.pipeline_ddpm_cfg_inpaint import masks_as_tensor
from hf_ddpm.sampling import SCHEDULER_NAMES, per_image_generators

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


class EditingApp:
    """The Edit tab's events, for `DemoApp` (`hf_ddpm.app`) to inherit: they use its pipeline, `defaults`,
    `max_image_steps`, the model's `channels`, `height` and `width`, `editor_scale` and `examples` (which its
    `__init__` sets), its checks (`_seed`, `_check_work`, `_pipeline_with`) and its sampling thread (`_stream`)."""

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


def _choices(labels: dict[str, str]) -> list[tuple[str, str]]:
    """A dropdown's or radio's (label, value) pairs."""
    return [(label, value) for value, label in labels.items()]


def _edit_tab(app: EditingApp) -> None:
    """The Edit tab of the page of `app`, a `DemoApp`."""
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
            guidance = _guidance_slider(defaults.guidance_scale, app.conditional, "edit-guidance")
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
