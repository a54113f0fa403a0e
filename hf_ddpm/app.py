"""The web demo of a trained pipeline: a Gradio page that draws images of the chosen classes and shows the grid while
it is being denoised, compares guidance scales on the same seeds, and edits a real image (class-swap or inpainting).

`hf-ddpm serve MODEL` runs it; a Space's `app.py` is `build_demo(MODEL)` and `launch`. Every value a page sends is
checked here, on the server and before any work, in hf-ddpm's own code: the events take the values as sent (not as
Gradio's components would convert them), so a message always names the control. One request's work is bounded
(images x steps), so that one visitor cannot hold the queue for long, and a run stops at its next step when its
visitor cancels it or goes away.

This module is the demo's entry point, and every public name it offered before the demo was split is still importable
from here: `build_demo` lays the page out, `DemoApp` holds the Generate tab's events, the checks of a request and the
sampling thread that both tabs run on. The Edit tab is `hf_ddpm.app_edit`'s, what both tabs share
`hf_ddpm.app_common`'s, and `launch` `hf_ddpm.app_serve`'s.
"""

import atexit
import contextlib
import math
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gradio as gr
import PIL.Image
from huggingface_hub import ModelCard

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

# `name as name`: the public names of the Edit tab and the server, offered here as before the demo was split.
from hf_ddpm.app_edit import (
    EDIT_MODES as EDIT_MODES,
    EDIT_STRENGTH as EDIT_STRENGTH,
    EDITOR_SIDE,
    INPAINT_STEPS as INPAINT_STEPS,
    JUMP_LENGTH as JUMP_LENGTH,
    JUMP_N_SAMPLE as JUMP_N_SAMPLE,
    MASK_CHOICES as MASK_CHOICES,
    MASK_COLOUR as MASK_COLOUR,
    EditingApp as EditingApp,
    _edit_tab,
    repaint_length as repaint_length,
)
from hf_ddpm.app_serve import CSS as CSS, MAX_UPLOAD_SIZE as MAX_UPLOAD_SIZE, launch as launch
from hf_ddpm.messages import with_flag_names
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg import default_num_inference_steps, variance_preserving
from hf_ddpm.sampling import (
    SCHEDULER_NAMES,
    SCHEDULERS,
    as_pil_images,
    load_pipeline,
    per_image_generators,
    scheduler_from_name,
)

SEED_LIMIT = 2**63  # image i starts from the noise of seed + i, and a torch generator takes at most 64 bits
PREVIEWS_PER_RUN = 10  # intermediate grids sent to the page during one run
# While a run samples, its event hands control back to Gradio at least this often, with no change to the page: Gradio
# can end an event only between two of its updates, and a client's cancel or disconnect then stops the run at its next
# step instead of at its next preview (or, for Compare guidance, at the end of a scale).
HEARTBEAT_SECONDS = 0.1
COMPARE_SCALES = (1.0, 2.0, 4.0)
START_CLASSES, START_IMAGES_PER_CLASS = 2, 4  # what the page asks for at first, where the server allows that much
# What one visitor may leave on the server (`launch` bounds each upload): Gradio's file cache pruned every 10 minutes of
# the files older than an hour (about ten images a run; they would otherwise last as long as the server).
CACHE_CLEAN_UP = (600, 3600)


class SamplingCancelled(Exception):
    """Raised from the step callback when the visitor pressed Cancel: the pipeline stops at that step."""


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


class DemoApp(EditingApp):
    """The functions behind the page's controls, callable without a browser: the Generate tab's here, with the checks
    and the sampling thread that both tabs use, the Edit tab's inherited from `EditingApp` (`hf_ddpm.app_edit`).

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
            guidance = _guidance_slider(defaults.guidance_scale, app.conditional, "guidance")
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
