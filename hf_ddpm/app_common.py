"""What the web demo's two tabs share (the Generate tab of `hf_ddpm.app`, the Edit tab of `hf_ddpm.app_edit`): the
refusal of a value the page sent, its message naming the control (in the demo's one log, `hf_ddpm.app`); the check of
a whole number; an update that changes nothing; the seed controls; and the queue that the sampling events share."""

import logging
import math
import numbers
import secrets

import gradio as gr

# One log for the whole demo, under the name of its entry point, whichever tab refuses a request.
logger = logging.getLogger("hf_ddpm.app")

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
DISPLAY_SIDE = 768  # the live grid is enlarged (pixels kept sharp) to about this many pixels a side

# Every event has a name that Gradio's API shows, takes the values as the client sent them (checked by DemoApp, whose
# messages name the controls), and the sampling events share one queue: `concurrency_limit` runs at a time in all.
SAMPLING = dict(preprocess=False, concurrency_id="sampling")


def refused(message: str) -> gr.Error:
    """The error the page shows for a value it cannot take, logged as one line: a visitor's mistake is no traceback
    in the server's log."""
    logger.warning("refused a request: %s", message)
    return gr.Error(message, print_exception=False)


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


def _guidance_slider(value: float, visible: bool, elem_id: str) -> gr.Slider:
    """The guidance scale of either tab: hidden for an unconditional model, which has nothing to guide towards."""
    return gr.Slider(0, 10, value=value, step=0.1, label="Guidance scale", visible=visible, elem_id=elem_id)


def _seed_controls(elem_id: str) -> tuple[gr.Number, gr.Button]:
    with gr.Row():
        seed = gr.Number(0, precision=0, minimum=0, label="Seed", elem_id=elem_id)
        random_seed = gr.Button("Random", elem_id=f"random-{elem_id}")
    return seed, random_seed


def _random_seed() -> int:
    return secrets.randbelow(2**31)
