"""Sampling from a saved pipeline: load it (folder or Hub id), pick a scheduler, draw images, write a grid and a GIF.

Backs `hf-ddpm sample`; `save_grid_and_gif` also serves any script that wants sample images of a pipeline.
"""

import os

import numpy as np
import PIL.Image
import torch
from diffusers import (
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    SchedulerMixin,
    UniPCMultistepScheduler,
)

from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg import count_labels
from hf_ddpm.scheduler_names import SCHEDULER_NAMES, TIMESTEP_SPACINGS
from hf_ddpm.schedulers.scheduling_ddim import DDIMScheduler
from hf_ddpm.schedulers.scheduling_ddpm import DDPMScheduler, make_betas

SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}
assert set(SCHEDULERS) == set(SCHEDULER_NAMES), "every sampler has a name for people (scheduler_names.py)"
# The beta schedules that every diffusers scheduler implements by name.
DIFFUSERS_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(
    model: str,
    scheduler: str | None = None,
    device: str | None = None,
    torch_compile: bool = False,
    timestep_spacing: str | None = None,
) -> DDPMCFGPipeline:
    """
    Loads a saved [`DDPMCFGPipeline`] from a folder or a Hub id, optionally swaps its scheduler for one of
    `SCHEDULERS` (built from the saved scheduler's config, so the noise schedule is kept) and its `timestep_spacing`
    for one of `TIMESTEP_SPACINGS` (a model saved with "leading" spacing starts sampling below its last training
    timestep: "trailing" starts at it), and moves it to `device`.
    `torch_compile` compiles the UNet's forward in place (`torch.compile`; the first call waits for the compiler):
    the module, its weights and their names stay the eager ones, so the pipeline saves as it loaded.
    A model that cannot be loaded raises a ValueError saying whether it was read as a folder or as a Hub id.
    """
    if timestep_spacing is not None and timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"`timestep_spacing` must be one of {list(TIMESTEP_SPACINGS)}, got {timestep_spacing!r}.")
    if not os.path.isdir(model) and not _is_hub_repo_id(model):
        raise ValueError(f"MODEL {model!r} is not an existing folder (nor a Hub repository id such as 'user/name').")
    try:
        pipe = DDPMCFGPipeline.from_pretrained(model)
    except OSError as error:  # missing files and every Hub error (not found, offline, gated) are OSErrors
        if os.path.isdir(model):
            raise ValueError(f"MODEL {model!r} is a folder without a saved pipeline in it: {error}") from error
        raise ValueError(
            f"MODEL {model!r} is not a local folder, and as a Hub repository id it could not be loaded: {error}"
        ) from error
    if scheduler is not None:
        pipe.scheduler = scheduler_from_name(scheduler, pipe.scheduler)
    if timestep_spacing is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(
            {**saved_config(pipe.scheduler), "timestep_spacing": timestep_spacing}
        )
    pipe = pipe.to(device or default_device())
    if torch_compile:
        pipe.unet.compile()
    return pipe


def with_classifier(pipe: DDPMCFGPipeline, classifier: str) -> DDPMCFGPipeline:
    """`pipe` with the noise-aware classifier saved in `classifier` (a folder or Hub id) for classifier guidance: the
    same UNet, scheduler and labels (an unconditional UNet takes the classifier's class names). A classifier that
    cannot be loaded, or cannot guide this model, raises a ValueError naming `--classifier`."""
    from hf_ddpm.models import DDPMClassifier2DModel

    try:
        model = DDPMClassifier2DModel.from_pretrained(classifier)
    except (OSError, ValueError) as error:
        raise ValueError(f"--classifier {classifier!r} could not be loaded as a classifier: {error}") from error
    try:
        return DDPMCFGPipeline(
            pipe.unet,
            pipe.scheduler,
            id2label=pipe.config.id2label,
            null_class_id=pipe.config.null_class_id,
            classifier=model.to(pipe.device),
        )
    except ValueError as error:
        raise ValueError(f"--classifier {classifier!r} cannot guide this model: {error}") from error


def _is_hub_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def saved_config(scheduler: SchedulerMixin) -> dict:
    """`scheduler`'s config as saved, for `from_config`: without the list of keys it took by default, which would
    otherwise give a class built from it that class's own defaults for them (until it is saved and loaded)."""
    return {key: value for key, value in scheduler.config.items() if key != "_use_default_values"}


def scheduler_from_name(name: str, current: SchedulerMixin) -> SchedulerMixin:
    """
    A scheduler of kind `name` (a key of `SCHEDULERS`) with the noise schedule of `current`, built from its config as
    saved: a value that `current` took by default counts as set (diffusers' `from_config` would give the new class its
    own default instead, but only until the pipeline is saved and loaded), so the result is the same before and after.
    A schedule that diffusers' own schedulers do not implement ("sigmoid") reaches them as its betas, before any
    zero-terminal-SNR rescaling, which the new scheduler applies itself (`rescale_betas_zero_snr` rides along).
    """
    if name not in SCHEDULERS:
        raise ValueError(f"`scheduler` must be one of {sorted(SCHEDULERS)}, got {name!r}.")
    config = saved_config(current)
    if config.get("trained_betas") is None and config["beta_schedule"] not in DIFFUSERS_BETA_SCHEDULES:
        betas = make_betas(
            config["beta_schedule"], config["num_train_timesteps"], config["beta_start"], config["beta_end"]
        )
        config["trained_betas"] = betas.tolist()
    return SCHEDULERS[name].from_config(config)


def label_arguments(pipe: DDPMCFGPipeline, labels: list[str] | None) -> list[int | str] | None:
    """Command-line labels as the pipeline takes them: a class name first (exact, or case-insensitive when unique), so
    that a class named "3" is that class; otherwise a number is an id. Anything else stays a name, for the pipeline
    to refuse with the valid names."""
    if labels is None:
        return None
    names = {name.casefold() for name in (pipe.config.id2label or {}).values()}
    return [int(text) if text.casefold() not in names and text.isdigit() else text for text in labels]


def per_image_generators(seed: int, num_images: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded `seed`, `seed + 1`, ...: image i is the same on any device and in any
    batch that gives it the same seed."""
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)]


def save_grid_and_gif(
    pipe: DDPMCFGPipeline,
    grid_path: str | os.PathLike,
    gif_path: str | os.PathLike | None = None,
    seed: int | None = None,
    **call_kwargs,
):
    """
    Draws images with `pipe(**call_kwargs)` and saves their grid (`pipe.sample_grid`: one row per label, named by
    its class) to `grid_path`, and, when `gif_path` is given, the GIF of the grid being denoised. `seed` gives each
    image its own generator (see `per_image_generators`). Returns the pipeline output (images of
    `call_kwargs["output_type"]`, PIL by default).
    """
    for path in (grid_path, gif_path):
        if path is not None and os.path.dirname(os.fspath(path)):
            os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
    num_labels = count_labels(call_kwargs.get("class_labels"))
    if seed is not None:
        call_kwargs["generator"] = per_image_generators(seed, call_kwargs.get("batch_size", 1) * (num_labels or 1))
    if gif_path is not None:
        return pipe.denoising_gif(gif_path, grid_path=grid_path, **call_kwargs)
    output = pipe(**call_kwargs)
    pipe.sample_grid(as_pil_images(output.images), call_kwargs.get("class_labels")).save(grid_path)
    return output


def as_pil_images(images: list[PIL.Image.Image] | np.ndarray | torch.Tensor) -> list[PIL.Image.Image]:
    """The images of a pipeline output of any `output_type` ("pil", "np" or "pt") as PIL images."""
    if isinstance(images, torch.Tensor):
        images = images.permute(0, 2, 3, 1).float().cpu().numpy()
    return DiffusionPipeline.numpy_to_pil(images) if isinstance(images, np.ndarray) else images
