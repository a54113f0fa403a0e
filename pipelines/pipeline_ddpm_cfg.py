"""Class-conditional pixel-space diffusion sampling with classifier-free guidance (CFG).

Self-contained: this file imports only torch, numpy, PIL, diffusers (and huggingface_hub, which diffusers is built
on) and the standard library, so `save_pretrained` can copy it into a model repository that
`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` loads without hf-ddpm installed.
"""

import inspect
import json
import math
import numbers
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
from diffusers import DiffusionPipeline, ModelMixin, SchedulerMixin
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from diffusers.utils.hub_utils import load_or_create_model_card, populate_model_card
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import create_repo, hf_hub_download, snapshot_download, upload_folder

from .classifier_guidance import ClassifierGuidance, check_classifier, check_classifier_scale

# The package this file was imported as part of: `hf_ddpm` when installed. `load_config` looks up the classes of
# code-file components there by name (a copy loaded from a model folder has no such package).
_HOME_PACKAGE = __name__.split(".")[0]


@dataclass
class DDPMCFGPipelineOutput(BaseOutput):
    """
    Output of [`DDPMCFGPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The generated images: PIL images (mode "L" for one channel, "RGB" for three), a numpy array of shape
            `(N, H, W, C)` or a tensor of shape `(N, C, H, W)`, with values in [0, 1] for the last two.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


def rescale_guided_output(guided: torch.Tensor, conditional: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """
    Guidance rescale of Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps Are Flawed", Sec. 3.4
    (https://huggingface.co/papers/2305.08891): a large guidance scale inflates the standard deviation of the guided
    prediction, which over-exposes images. Scale it back to the conditional prediction's standard deviation, per
    image, and blend: `guidance_rescale` 0 keeps plain CFG, 1 rescales fully (the paper uses 0.7).
    """
    dims = list(range(1, guided.ndim))
    rescaled = guided * (conditional.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return guidance_rescale * rescaled + (1.0 - guidance_rescale) * guided


def guide(
    model_output: torch.Tensor, sample_channels: int, guidance_scale: float, guidance_rescale: float
) -> torch.Tensor:
    """
    Classifier-free guidance of the UNet output of a batch whose first half is conditional and second half
    unconditional: `uncond + s * (cond - uncond)`, then `rescale_guided_output` when `guidance_rescale` > 0. A UNet that
    learned its variance (a scheduler `variance_type` "learned" or "learned_range") outputs it in the channels after
    the sample's: only the prediction is guided, and the variance stays the conditional one, as in GLIDE and DiT
    (extrapolated, it could leave the range its scheduler reads it in, or turn negative).
    """
    conditional, unconditional = model_output[:, :sample_channels].chunk(2)
    guided = unconditional + guidance_scale * (conditional - unconditional)
    if guidance_rescale > 0:
        guided = rescale_guided_output(guided, conditional, guidance_rescale)
    if model_output.shape[1] == sample_channels:
        return guided
    conditional_variance = model_output[: len(guided), sample_channels:]
    return torch.cat([guided, conditional_variance], dim=1)


def grid_rows(num_images: int, num_labels: int | None = None) -> int:
    """Rows of the grid that shows `num_images` images: one row per label, else the most square layout."""
    if num_labels:
        return num_labels
    return max(rows for rows in range(1, math.isqrt(num_images) + 1) if num_images % rows == 0)


def image_grid(
    images: list[PIL.Image.Image],
    rows: int,
    names: list[str] | None = None,
    gap: int = 2,
    min_cell_size: int = 64,
) -> PIL.Image.Image:
    """
    Lays `images` out in `rows` rows, left to right and top to bottom, for people to look at. Unlike diffusers'
    `make_image_grid`, small images are enlarged and kept apart, and each row can carry a name.

    Args:
        images (`list[PIL.Image.Image]`):
            Images of one size, of any mode. The last row may be short.
        rows (`int`):
            The number of rows, in [1, `len(images)`].
        names (`list[str]`, *optional*):
            One name per row (the class the row was drawn for), written in a column left of the images. `None`
            leaves the column out.
        gap (`int`, *optional*, defaults to 2):
            Pixels of background between two neighbouring images, at the images' own size: they are enlarged with
            the images.
        min_cell_size (`int`, *optional*, defaults to 64):
            The smallest side of an image in the grid. Smaller images are enlarged by the smallest whole factor that
            reaches it, with nearest-neighbour resampling so that their pixels stay sharp; larger ones keep their
            size.

    Returns:
        `PIL.Image.Image`: An RGB image: the images on a white background, the names in black.
    """
    if not isinstance(rows, numbers.Integral) or not 1 <= rows <= len(images):
        raise ValueError(f"`rows` must be an integer in [1, {len(images)}] (the number of images), got {rows!r}.")
    if names is not None and len(names) != rows:
        raise ValueError(f"`names` must hold one name per row ({rows}), got {len(names)}.")
    width, height = images[0].size
    scale = max(1, math.ceil(min_cell_size / min(width, height)))
    cell_width, cell_height, gap = width * scale, height * scale, gap * scale
    cols = math.ceil(len(images) / rows)
    font = PIL.ImageFont.load_default()
    margin = max(gap, 4)  # around the names, so that they never touch the images
    left = 0  # the width of the names' column
    if names is not None:
        measure = PIL.ImageDraw.Draw(PIL.Image.new("RGB", (1, 1)))
        left = max(measure.textbbox((0, 0), str(name), font=font)[2] for name in names) + 2 * margin
    grid = PIL.Image.new(
        "RGB", (left + cols * cell_width + (cols - 1) * gap, rows * cell_height + (rows - 1) * gap), "white"
    )
    for index, image in enumerate(images):
        row, col = divmod(index, cols)
        cell = image.convert("RGB").resize((cell_width, cell_height), PIL.Image.NEAREST)
        grid.paste(cell, (left + col * (cell_width + gap), row * (cell_height + gap)))
    draw = PIL.ImageDraw.Draw(grid)
    for row, name in enumerate(names or []):
        _, top, _, bottom = draw.textbbox((0, 0), str(name), font=font)
        y = row * (cell_height + gap) + (cell_height - (bottom - top)) / 2 - top  # centred on the row
        draw.text((margin, y), str(name), fill="black", font=font)
    return grid


def count_images(label_ids: list[int] | None, batch_size: int) -> int:
    """The images of a call: `batch_size` per requested label, or `batch_size` in all without labels."""
    return batch_size * (len(label_ids) if label_ids else 1)


def count_labels(class_labels) -> int | None:
    """How many labels `class_labels` lists (a list, tuple, array or 1-d tensor), or `None` for one label or none."""
    if isinstance(class_labels, (list, tuple)):
        return len(class_labels)
    if isinstance(class_labels, (torch.Tensor, np.ndarray)) and class_labels.ndim > 0:
        return int(class_labels.shape[0])
    return None


def variance_preserving(scheduler: SchedulerMixin, latents: torch.Tensor) -> torch.Tensor:
    """The samples on the scale of the data: schedulers of the Euler family keep x_t = x_0 + sigma * eps (their
    `init_noise_sigma` is the largest sigma, not 1), which shows as a white-out until the last steps; dividing by
    sqrt(sigma^2 + 1) gives the variance-preserving x_t of DDPM, where every frame is an image."""
    if scheduler.init_noise_sigma == 1 or getattr(scheduler, "step_index", None) is None:
        return latents
    sigma = scheduler.sigmas[scheduler.step_index].to(latents.device)  # the noise level the step went to
    return latents / (sigma**2 + 1) ** 0.5


def default_num_inference_steps(scheduler: SchedulerMixin) -> int:
    """
    The denoising steps of a call that leaves out `num_inference_steps`, by the kind of sampler: every training step
    for ancestral DDPM; 15 for multistep solvers of second order or higher (DPM-Solver++ (2M), UniPC, ...: a
    `solver_order` of at least 2), which reach DDIM's 50-step quality in 10 to 20 steps (Lu et al. 2022,
    https://huggingface.co/papers/2211.01095; measured for hf-ddpm in docs/evaluation.md, "How few steps"); 50 for the
    first-order others (DDIM, Euler, ...). Never more than the scheduler's training steps, nor so many that its
    timestep spacing repeats a timestep (a multistep solver divides by the step between two equal timesteps) or,
    shifted by a `steps_offset`, starts past the last training step.
    """
    num_train_timesteps = scheduler.config.num_train_timesteps
    if any(cls.__name__ == "DDPMScheduler" for cls in type(scheduler).__mro__):  # ours, diffusers' or a subclass
        steps = num_train_timesteps
    else:
        # The class's own parameter, not a key that rode along in a config converted from another scheduler's.
        takes_order = "solver_order" in inspect.signature(type(scheduler).__init__).parameters
        higher_order = takes_order and scheduler.config.solver_order >= 2
        steps = min(15 if higher_order else 50, num_train_timesteps)
    while steps > 1 and _spacing_problem(scheduler, steps) is not None:
        steps -= 1
    return steps


def _spacing_problem(scheduler: SchedulerMixin, num_inference_steps: int) -> str | None:
    """Why `scheduler`'s spacing cannot take `num_inference_steps` steps, or `None` when it can."""
    probe = scheduler.__class__.from_config(scheduler.config)  # leaves the caller's scheduler as it is
    try:
        probe.set_timesteps(num_inference_steps)
    except ValueError as error:  # hf-ddpm's schedulers refuse a spacing that leaves the training steps
        return str(error)
    last_train_step = scheduler.config.num_train_timesteps - 1
    if float(probe.timesteps.max()) > last_train_step:  # diffusers' DDPM would fail at its first step
        return f"puts timestep {float(probe.timesteps.max()):g} past the last training step ({last_train_step})"
    # Fewer distinct timesteps than steps: Heun's list has each one twice by design (a predictor and a corrector call),
    # so a longer list alone says nothing.
    if len(torch.unique(probe.timesteps)) < num_inference_steps:
        return "repeats a timestep, which a multistep solver turns into NaN"
    return None


def check_num_inference_steps(scheduler: SchedulerMixin, num_inference_steps) -> None:
    """A step count given by a caller: an integer within `scheduler`'s training steps that its spacing can take
    (`_spacing_problem`). Raises a `ValueError` saying what is allowed."""
    num_train_timesteps = scheduler.config.num_train_timesteps
    if (
        not isinstance(num_inference_steps, numbers.Integral)
        or isinstance(num_inference_steps, bool)
        or not 1 <= num_inference_steps <= num_train_timesteps
    ):
        raise ValueError(
            f"`num_inference_steps` must be an integer in [1, {num_train_timesteps}] (the scheduler's training "
            f"steps), got {num_inference_steps!r}."
        )
    problem = _spacing_problem(scheduler, num_inference_steps)
    if problem is not None:
        spacing = scheduler.config.get("timestep_spacing")
        raise ValueError(
            f"`num_inference_steps`={num_inference_steps} does not fit {type(scheduler).__name__}'s "
            f"{f'{spacing!r} ' if spacing else ''}spacing of {num_train_timesteps} training steps ({problem}): use "
            f"fewer steps (the default here is {default_num_inference_steps(scheduler)})."
        )


class DDPMCFGPipeline(DiffusionPipeline):
    r"""
    Pipeline for unconditional or class-conditional image generation with classifier-free guidance
    (Ho & Salimans 2022, https://huggingface.co/papers/2207.12598).

    This pipeline inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    Parameters:
        unet ([`ModelMixin`]):
            The noise-prediction network, called as `unet(sample, timestep, class_labels=...)` and returning an
            output with `.sample`: hf-ddpm's `DDPMUNet2DModel` or diffusers' `UNet2DModel` (with `num_class_embeds`
            and no `class_embed_type` for a conditional model).
        scheduler ([`SchedulerMixin`]):
            Any diffusers-compatible scheduler: hf-ddpm's or diffusers' DDPM and DDIM, `DPMSolverMultistepScheduler`,
            `EulerDiscreteScheduler`, ...
        id2label (`dict[int, str]`, *optional*):
            Class names by label id, so that labels can be given by name. Stored in `model_index.json` (where the
            keys become strings; they are turned back into ints on loading).
        null_class_id (`int`, *optional*):
            The label id the UNet learned as "no class", used for the unconditional half of CFG. The real labels are
            the ids below it. Defaults to the UNet's `null_class_id` (hf-ddpm's `DDPMUNet2DModel`: its extra
            embedding row, `num_class_embeds`); a UNet without that attribute but with `num_class_embeds` set (a
            diffusers `UNet2DModel`) is taken to have been trained with its last embedding row as the null label,
            `num_class_embeds - 1`. `None` on an unconditional UNet.
        classifier ([`ModelMixin`], *optional*):
            A noise-aware classifier of `x_t` (hf-ddpm's `DDPMClassifier2DModel`, called as `classifier(x_t,
            t).logits`) for classifier guidance (`classifier_scale`). It must have the model's classes (for an
            unconditional UNet, its classes are the labels that the pipeline takes), sample size and channels, and
            have learned the noise of the scheduler's training schedule.
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["classifier"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        unet: ModelMixin,
        scheduler: SchedulerMixin,
        id2label: dict | None = None,
        null_class_id: int | None = None,
        classifier: ModelMixin | None = None,
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, classifier=classifier)
        class_embeds = unet.config.get("num_class_embeds")
        embed_type = unet.config.get("class_embed_type")
        if class_embeds is not None and embed_type not in (None, "embedding"):
            raise ValueError(
                f"The UNet's class_embed_type is {embed_type!r}: its class input is a vector, not a label id; this "
                "pipeline needs a label embedding table (class_embed_type None or 'embedding')."
            )
        # Our UNet has a row for the null label after its num_class_embeds classes; diffusers' UNet2DModel has
        # num_class_embeds rows in all, so its null label must be one of them.
        last_row = getattr(unet, "null_class_id", None) or (class_embeds - 1 if class_embeds else None)
        if null_class_id is None:
            null_class_id = last_row
        if null_class_id is not None and (last_row is None or not 0 < null_class_id <= last_row):
            raise ValueError(
                f"`null_class_id` must be an embedding row after the real labels, in [1, {last_row}], for this "
                f"UNet (num_class_embeds={class_embeds}, rows 0..{last_row}); got {null_class_id}."
            )
        num_labels = null_class_id or (classifier.config.get("num_classes") if classifier is not None else None)
        if classifier is not None:
            check_classifier(classifier, unet, scheduler, null_class_id)
        if not id2label and null_class_id is None and classifier is not None:
            id2label = classifier.config.get("id2label")  # the classes of an unconditional UNet are the classifier's
        id2label = {int(label_id): str(name) for label_id, name in (id2label or {}).items()}
        out_of_range = [label_id for label_id in id2label if not 0 <= label_id < (num_labels or 0)]
        if out_of_range:
            raise ValueError(
                f"`id2label` has ids {out_of_range} outside the model's labels, which are "
                + (f"0..{num_labels - 1}." if num_labels else "none: the UNet is unconditional.")
            )
        self.register_to_config(id2label=id2label, null_class_id=null_class_id)

    @property
    def num_labels(self) -> int | None:
        """How many classes the pipeline draws: the conditional UNet's labels, else the classifier's classes (an
        unconditional UNet guided by a classifier), else `None`."""
        if self.config.null_class_id is not None:
            return self.config.null_class_id
        classifier = getattr(self, "classifier", None)
        return classifier.config.get("num_classes") if classifier is not None else None

    @property
    def num_timesteps(self) -> int:
        """The number of denoising steps of the current (or last) call."""
        return self._num_timesteps

    @property
    def num_guided_steps(self) -> int:
        """How many steps of the current (or last) call ran both CFG halves through the UNet; the others ran one.
        A step of a guided call outside `guidance_interval` is not guided."""
        return self._num_guided_steps

    # ----------------------------------------------------------------------------------------------------------
    # Sampling
    # ----------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | None = None,
        batch_size: int = 1,
        guidance_scale: float = 1.0,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        guidance_rescale: float = 0.0,
        guidance_interval: tuple[float, float] | None = None,
        classifier_scale: float = 0.0,
    ) -> DDPMCFGPipelineOutput | tuple:
        r"""
        Generates images. Every argument is checked before any work starts; a bad one raises a `ValueError` that
        names it and says what is allowed.

        Args:
            class_labels (`int`, `str` or a list of them, *optional*):
                The classes to draw, by id or by name (case-insensitive, through `id2label`). One label gives
                `batch_size` images of it; a list gives `batch_size` images per label, label after label
                (`[a, b]` with `batch_size=2` gives `a, a, b, b`). `None` draws unconditionally (with the null label
                on a conditional model).
            batch_size (`int`, *optional*, defaults to 1):
                Images per label, or images in all when `class_labels` is `None`.
            guidance_scale (`float`, *optional*, defaults to 1.0):
                CFG scale `s`: the model output is `uncond + s * (cond - uncond)` (its prediction channels, for a UNet
                that learned its variance: see `guide`). 1 uses the conditional output
                alone (one forward of the batch per step); any other value runs the conditional and unconditional
                halves through the UNet in one batched forward (0 samples unconditionally). The weights sum to one,
                so guiding the model output is the same whether it predicts epsilon, the sample or v.
            num_inference_steps (`int`, *optional*):
                Denoising steps. `None` takes the scheduler's natural default (`default_num_inference_steps`):
                every training step for DDPM, 15 for second-order multistep solvers (DPM-Solver++ (2M), the sampler
                that hf-ddpm's training saves, and UniPC), 50 for the others (DDIM, Euler, ...); never more than the
                training steps, nor so many that the scheduler's spacing repeats a timestep (a count that would is
                refused: a multistep solver turns a repeated timestep into NaN).
            eta (`float`, *optional*, defaults to 0.0):
                DDIM's eta, in [0, 1] (0: deterministic DDIM, 1: DDPM-like noise); only for schedulers whose `step`
                takes it.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                One generator for the batch, or one per image: then each image is the same whatever else is in the
                batch.
            latents (`torch.Tensor`, *optional*):
                The starting noise, `(N, C, H, W)` for the N images of the call, in place of noise drawn from
                `generator` (it is scaled by the scheduler's `init_noise_sigma`, as diffusers' pipelines do): for
                example the noise that `DDPMCFGImg2ImgPipeline.invert` gives for a real image.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` (`(N, H, W, C)` in [0, 1]) or `"pt"` (`(N, C, H, W)` in [0, 1]).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMCFGPipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, [`PipelineCallback`] or [`MultiPipelineCallbacks`], *optional*):
                Called after each step as `callback_on_step_end(pipe, step, timestep, callback_kwargs)`; the tensors
                named in `callback_on_step_end_tensor_inputs` are in `callback_kwargs`, and the ones it returns
                replace them.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*, defaults to `["latents"]`):
                Tensors passed to the callback; allowed: `_callback_tensor_inputs`.
            guidance_rescale (`float`, *optional*, defaults to 0.0):
                Guidance rescale of Lin et al. 2024 (https://huggingface.co/papers/2305.08891), in [0, 1], applied to
                the guided model output.
            guidance_interval (`tuple[float, float]`, *optional*):
                Guidance in a limited interval (Kynkäänniemi et al. 2024, https://huggingface.co/papers/2404.07724):
                `(low, high)`, with `0 <= low < high <= 1`, guides only the steps whose timestep `t` has
                `low <= t / num_train_timesteps <= high` (the scheduler's training steps), so the interval names
                noise levels of the model's training schedule whatever the sampler and its number of steps. The
                other steps run the conditional half alone: one UNet forward of the batch, not of twice the batch.
                Guidance at high noise spends diversity (every sample drifts to the same typical image of its class)
                and at low noise does little. `None` (the default) guides every step. `num_guided_steps` tells how
                many steps of the last call were guided.
            classifier_scale (`float`, *optional*, defaults to 0.0):
                Classifier guidance scale `s` (Dhariwal & Nichol 2021, https://huggingface.co/papers/2105.05233),
                >= 0, with the pipeline's `classifier`: each step moves towards `class_labels` by the gradient of the
                classifier's `log p(y | x_t)` (through the classifier only, never the UNet). With DDPM's ancestral
                step it shifts the step's mean by `s * Sigma_t * grad`; with every other sampler it takes the score
                form, `eps - sqrt(1 - alpha_bar_t) * s * grad` (in the model's prediction type). It combines with CFG
                on a conditional UNet and guides an unconditional one alone (then `class_labels` are the
                classifier's classes). 0 (the default) does not run the classifier.

        Returns:
            [`DDPMCFGPipelineOutput`] or `tuple`: the images, in a `DDPMCFGPipelineOutput` if `return_dict`, else
            as the only element of a tuple.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 1. Check every argument before any work.
        label_ids = self._label_ids(class_labels)
        num_inference_steps = self.check_inputs(
            label_ids,
            batch_size,
            guidance_scale,
            num_inference_steps,
            eta,
            generator,
            output_type,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            guidance_rescale,
            guidance_interval,
        )
        self.check_classifier_guidance(classifier_scale, label_ids)
        num_images = count_images(label_ids, batch_size)
        self.check_latents(latents, num_images)
        guided = label_ids is not None and guidance_scale != 1.0
        device = self._execution_device

        # 2. Labels: the requested classes, and the null label for the unconditional half of CFG.
        labels = self.prepare_class_labels(label_ids, batch_size, guided, device)

        # 3. Timesteps, and pure noise at the scheduler's starting scale.
        timesteps, num_inference_steps = self.get_timesteps(num_inference_steps, strength=1.0, device=device)
        latents = self.prepare_latents(num_images, generator, device, latents=latents)

        # 4. Denoise: one UNet forward per step, CFG halves batched together on the guided steps.
        latents = self.denoise(
            latents,
            timesteps,
            labels,
            self._guided_steps(timesteps, guided, guidance_interval),
            guidance_scale,
            guidance_rescale,
            self._step_kwargs(eta, generator),
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            classifier_guidance=self.prepare_classifier_guidance(classifier_scale, label_ids, batch_size, device),
        )

        # 5. Images.
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return DDPMCFGPipelineOutput(images=images)

    # ----------------------------------------------------------------------------------------------------------
    # The stages of a call: an image-to-image or inpainting pipeline reuses each of them
    # ----------------------------------------------------------------------------------------------------------

    def prepare_class_labels(
        self, label_ids: list[int] | None, batch_size: int, guided: bool, device: torch.device
    ) -> torch.Tensor | None:
        """
        The class label of each image, `batch_size` per requested label (the null label when none is requested), and
        for a guided call the null labels of the unconditional half after them; `None` for an unconditional model.
        """
        if self.config.null_class_id is None:
            return None
        num_images = count_images(label_ids, batch_size)
        null_labels = torch.full((num_images,), self.config.null_class_id, device=device)
        labels = torch.tensor(label_ids, device=device).repeat_interleave(batch_size) if label_ids else null_labels
        return torch.cat([labels, null_labels]) if guided else labels

    def get_timesteps(
        self, num_inference_steps: int, strength: float = 1.0, device: torch.device | None = None
    ) -> tuple[torch.Tensor, int]:
        """
        Sets the scheduler's `num_inference_steps` timesteps and returns the last `strength` of them, with their
        number (as diffusers' image-to-image pipelines do): `strength=1` denoises from pure noise, a smaller one from
        an image noised part of the way (`prepare_latents(..., image=...)`).
        """
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
        t_start = max(num_inference_steps - init_timestep, 0)
        timesteps = self.scheduler.timesteps[t_start * self.scheduler.order :]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * self.scheduler.order)
        self._num_timesteps = len(timesteps)
        return timesteps, num_inference_steps - t_start

    def prepare_latents(
        self,
        num_images: int,
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
        image: torch.Tensor | None = None,
        timestep: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        The starting sample: noise at the scheduler's starting scale or, given `image` (`(num_images, C, H, W)` in
        [-1, 1]), the image noised by the forward process to `timestep`. The noise is `latents` when given, else drawn
        from `generator` (one per image: each image then starts the same whatever else is in the batch).
        """
        if latents is None:
            latents = randn_tensor(
                self.sample_shape(num_images), generator=generator, device=device, dtype=self.unet.dtype
            )
        noise = latents.to(device=device, dtype=self.unet.dtype)
        if image is None:
            return noise * self.scheduler.init_noise_sigma
        timesteps = torch.as_tensor(timestep, device=device).reshape(-1).expand(num_images)
        return self.scheduler.add_noise(image.to(device=device, dtype=self.unet.dtype), noise, timesteps)

    def sample_shape(self, num_images: int) -> tuple[int, int, int, int]:
        """`(num_images, C, H, W)`: the shape of `num_images` samples of the UNet."""
        sample_size = self.unet.config.sample_size
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
        return (num_images, self.unet.config.in_channels, height, width)

    def check_latents(self, latents: torch.Tensor | None, num_images: int) -> None:
        """A `ValueError` unless `latents` is `None` or a finite tensor of the call's `sample_shape`."""
        if latents is None:
            return
        shape = self.sample_shape(num_images)
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"`latents` must be a tensor of shape {shape} (the call's images), got {got}.")
        if not torch.isfinite(latents).all():
            raise ValueError("`latents` holds NaN or infinite values.")

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        labels: torch.Tensor | None,
        guided_steps: list[bool],
        guidance_scale: float,
        guidance_rescale: float,
        step_kwargs: dict,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        classifier_guidance: ClassifierGuidance | None = None,
    ) -> torch.Tensor:
        """
        Runs the reverse process over `timesteps` from `latents`: one UNet forward per step, the CFG halves batched
        together on the steps that `guided_steps` marks, then the classifier's guidance when given;
        `callback_on_step_end` after each step. Returns the last sample.
        """
        num_images = latents.shape[0]
        self._num_guided_steps = sum(guided_steps)
        for step, t in enumerate(self.progress_bar(timesteps)):
            guide_step = guided_steps[step]
            model_input = torch.cat([latents, latents]) if guide_step else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            step_labels = labels if guide_step or labels is None else labels[:num_images]
            model_output = self.unet(model_input, t, class_labels=step_labels).sample
            if guide_step:
                model_output = guide(model_output, latents.shape[1], guidance_scale, guidance_rescale)
            if classifier_guidance is not None and not classifier_guidance.ancestral:
                model_output = classifier_guidance.guide_model_output(model_output, model_input[:num_images], t)
            gradient = None
            if classifier_guidance is not None and classifier_guidance.ancestral:
                gradient = classifier_guidance.gradient(model_input[:num_images], t)  # at x_t, before the step
            latents = self.scheduler.step(model_output, t, latents, **step_kwargs).prev_sample
            if gradient is not None:
                latents = classifier_guidance.shift_mean(latents, gradient, t)

            if callback_on_step_end is not None:
                latents = self.run_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, step, t, latents)
        return latents

    def prepare_classifier_guidance(
        self, classifier_scale: float, label_ids: list[int] | None, batch_size: int, device: torch.device
    ) -> ClassifierGuidance | None:
        """The classifier guidance of a call towards each image's class, or `None` at `classifier_scale` 0."""
        if not classifier_scale:
            return None
        labels = torch.tensor(label_ids, device=device).repeat_interleave(batch_size)
        return ClassifierGuidance(self.classifier, self.scheduler, labels, float(classifier_scale))

    def check_classifier_guidance(self, classifier_scale, label_ids: list[int] | None) -> None:
        """A `ValueError` for a bad `classifier_scale`, or a classifier that cannot guide this UNet and scheduler."""
        classifier = getattr(self, "classifier", None)
        check_classifier_scale(classifier_scale, classifier, label_ids)
        if classifier_scale > 0:  # the scheduler may have been swapped since the pipeline was built
            check_classifier(classifier, self.unet, self.scheduler, self.config.null_class_id)

    def run_callback(self, callback_on_step_end, tensor_inputs, step: int, t, latents: torch.Tensor) -> torch.Tensor:
        """Calls `callback_on_step_end(pipe, step, timestep, callback_kwargs)` with the tensors named in
        `tensor_inputs`; returns the latents it hands back (or the same ones)."""
        tensors = {"latents": latents}
        callback_outputs = callback_on_step_end(self, step, t, {name: tensors[name] for name in tensor_inputs})
        if not isinstance(callback_outputs, dict):
            raise ValueError(
                "`callback_on_step_end` must return a dict (the `callback_kwargs` it was given, changed or "
                f"not), got {type(callback_outputs).__name__}."
            )
        return callback_outputs.pop("latents", latents)

    def postprocess(
        self, sample: torch.Tensor, output_type: str = "pil"
    ) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
        """Maps a batch of samples in [-1, 1] to images in [0, 1] of the given `output_type` ("pil", "np", "pt")."""
        return _images_as((sample / 2 + 0.5).clamp(0, 1), output_type)

    def sample_grid(self, images: list[PIL.Image.Image], class_labels=None) -> PIL.Image.Image:
        """
        The grid ([`image_grid`]) of `images` drawn by `__call__(class_labels, ...)`: for a list of labels, one row per
        label, named by its class (its `id2label` name, else its id); for one label or none, the most square layout,
        unnamed.
        """
        num_labels = count_labels(class_labels)
        names = None
        if num_labels:
            id2label = self.config.id2label or {}
            names = [id2label.get(label_id, str(label_id)) for label_id in self._label_ids(class_labels)]
        return image_grid(images, grid_rows(len(images), num_labels), names)

    def denoising_gif(
        self,
        gif_path: str | os.PathLike,
        grid_path: str | os.PathLike | None = None,
        num_frames: int = 25,
        frame_duration_ms: int = 100,
        final_frame_duration_ms: int = 1500,
        **call_kwargs,
    ) -> DDPMCFGPipelineOutput:
        """
        Samples as `__call__(**call_kwargs)` does and writes the denoising as an animated GIF: each frame is the
        grid of the current samples (`sample_grid`: one row per label, named), taken about `num_frames` times along
        the way, the last being the final images (shown for `final_frame_duration_ms`). The grid of the final images
        is written to `grid_path` too when it is given.

        Returns:
            [`DDPMCFGPipelineOutput`] with the images as `call_kwargs["output_type"]` asks (PIL by default).
        """
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"`num_frames` must be an integer >= 1, got {num_frames!r}.")
        class_labels = call_kwargs.get("class_labels")
        user_callback = call_kwargs.pop("callback_on_step_end", None)
        tensor_inputs = list(call_kwargs.pop("callback_on_step_end_tensor_inputs", None) or ["latents"])
        if isinstance(user_callback, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = list(user_callback.tensor_inputs)
        frames = []

        def grid_of(sample: torch.Tensor) -> PIL.Image.Image:
            return self.sample_grid(self.postprocess(sample, "pil"), class_labels)

        def record_frame(pipe, step, timestep, callback_kwargs):
            if user_callback is not None:
                callback_kwargs = {**callback_kwargs, **user_callback(pipe, step, timestep, callback_kwargs)}
            every = math.ceil(pipe.num_timesteps / num_frames)
            if step % every == 0 or step == pipe.num_timesteps - 1:
                frames.append(grid_of(variance_preserving(pipe.scheduler, callback_kwargs["latents"])))
            return callback_kwargs

        output_type = call_kwargs.pop("output_type", "pil")
        return_dict = call_kwargs.pop("return_dict", True)
        images = self(
            **call_kwargs,
            output_type="pt",
            callback_on_step_end=record_frame,
            callback_on_step_end_tensor_inputs=sorted(set(tensor_inputs) | {"latents"}),
        ).images
        # The last frame holds the final samples, so it is also the grid of the final images.
        durations = [frame_duration_ms] * (len(frames) - 1) + [final_frame_duration_ms]
        frames[0].save(gif_path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
        if grid_path is not None:
            frames[-1].save(grid_path)
        images = _images_as(images, output_type)
        return DDPMCFGPipelineOutput(images=images) if return_dict else (images,)

    def _label_ids(self, class_labels) -> list[int] | None:
        """Turns `class_labels` (ids or names, one or a list) into a list of valid ids, or `None`."""
        if class_labels is None:
            return None
        num_labels = self.num_labels
        if num_labels is None:
            raise ValueError(
                f"`class_labels` was given ({class_labels!r}) but the UNet is unconditional (no class embedding) "
                "and the pipeline has no classifier to guide it: leave `class_labels=None`."
            )
        if isinstance(class_labels, (torch.Tensor, np.ndarray)):
            class_labels = class_labels.tolist()
        labels = list(class_labels) if isinstance(class_labels, (list, tuple)) else [class_labels]
        if not labels:
            raise ValueError("`class_labels` is an empty list: give at least one label, or `None`.")
        ids = []
        for label in labels:
            if isinstance(label, str):
                ids.append(self._label_id_by_name(label))
            elif isinstance(label, numbers.Integral) and not isinstance(label, bool):
                if not 0 <= label < num_labels:
                    raise ValueError(
                        f"`class_labels`: label id {label} is out of range; valid ids are 0..{num_labels - 1}."
                    )
                ids.append(int(label))
            else:
                raise ValueError(f"`class_labels` must hold ints or names (str), got {label!r}.")
        return ids

    def _label_id_by_name(self, name: str) -> int:
        """The id of class `name`: its exact name first, else a case-insensitive match when only one class has it."""
        id2label = self.config.id2label or {}
        exact = [int(label_id) for label_id, label in id2label.items() if label == name]
        folded = [int(label_id) for label_id, label in id2label.items() if label.casefold() == name.casefold()]
        if exact or len(folded) == 1:
            return (exact or folded)[0]
        if folded:
            matches = ", ".join(repr(id2label[label_id]) for label_id in folded)
            raise ValueError(
                f"`class_labels`: the label name {name!r} is ambiguous: it matches {matches} ignoring "
                "case; give the exact name or the id."
            )
        names = ", ".join(repr(label) for label in id2label.values()) or "none (no id2label)"
        raise ValueError(f"`class_labels`: unknown label name {name!r}; valid names: {names}.")

    def check_inputs(
        self,
        label_ids,
        batch_size,
        guidance_scale,
        num_inference_steps,
        eta,
        generator,
        output_type,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs,
        guidance_rescale,
        guidance_interval,
    ) -> int:
        """Raises a `ValueError` for a bad argument, before any work; returns the number of inference steps to run."""
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise ValueError(f"`callback_on_step_end` must be callable, got {callback_on_step_end!r}.")
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
        for name, value in [("guidance_scale", guidance_scale), ("eta", eta), ("guidance_rescale", guidance_rescale)]:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        if guidance_scale < 0:
            raise ValueError(f"`guidance_scale` must be a number >= 0, got {guidance_scale!r}.")
        if guidance_scale != 1.0 and label_ids is None:
            raise ValueError(
                f"`guidance_scale`={guidance_scale} needs `class_labels`: guidance moves samples towards a class."
            )
        if guidance_scale != 1.0 and self.config.null_class_id is None:
            raise ValueError(
                f"`guidance_scale`={guidance_scale}: classifier-free guidance needs a class-conditional UNet; this one "
                "is unconditional (guide it with `classifier_scale` instead)."
            )
        if not 0.0 <= guidance_rescale <= 1.0:
            raise ValueError(f"`guidance_rescale` must be in [0, 1], got {guidance_rescale!r}.")
        check_guidance_interval(guidance_interval)
        if num_inference_steps is None:
            num_inference_steps = default_num_inference_steps(self.scheduler)  # valid by construction
        else:
            check_num_inference_steps(self.scheduler, num_inference_steps)
        step_parameters = inspect.signature(self.scheduler.step).parameters
        if eta != 0 and "eta" not in step_parameters:
            raise ValueError(
                f"`eta`={eta} is only used by schedulers whose step takes it (such as DDIM); "
                f"{type(self.scheduler).__name__} does not."
            )
        if not 0 <= eta <= 1:  # beyond 1, DDIM's noise outweighs what the step has to give: sqrt of a negative
            raise ValueError(f"`eta` must be in [0, 1], got {eta!r}.")
        generators = generator if isinstance(generator, list) else [generator]
        if generator is not None and not all(isinstance(g, torch.Generator) for g in generators):
            raise ValueError(f"`generator` must be a torch.Generator or a list of them, got {generator!r}.")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")
        unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has {unknown}; allowed: {self._callback_tensor_inputs}."
            )
        num_images = count_images(label_ids, batch_size)
        if isinstance(generator, list) and len(generator) != num_images:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators, but the batch has {num_images} images "
                f"({batch_size} per label): pass one generator per image, or a single generator."
            )
        return int(num_inference_steps)

    def _guided_steps(self, timesteps: torch.Tensor, guided: bool, guidance_interval) -> list[bool]:
        """Whether each step runs CFG: every step of a guided call, or those in `guidance_interval` (fractions of
        the training timesteps)."""
        if not guided or guidance_interval is None:
            return [guided] * len(timesteps)
        low, high = guidance_interval
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        return [low <= t / num_train_timesteps <= high for t in timesteps.tolist()]

    def _step_kwargs(self, eta: float, generator) -> dict:
        """`eta` and `generator` for the schedulers whose `step` takes them."""
        step_parameters = inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"eta": eta} if "eta" in step_parameters else {}
        if "generator" in step_parameters:
            step_kwargs["generator"] = generator
        return step_kwargs

    # ----------------------------------------------------------------------------------------------------------
    # Saving and loading: code travels with the weights
    # ----------------------------------------------------------------------------------------------------------

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ):
        """
        Saves the pipeline as [`DiffusionPipeline.save_pretrained`] does, plus the code it needs, in diffusers'
        custom pipeline layout: this file at the top with `_class_name` = `[file, class]` in `model_index.json`, and
        the file defining each component class that is not diffusers' own (hf-ddpm's UNet and schedulers) in that
        component's folder, referenced as `[file, class]`. So the folder loads with
        `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` where hf-ddpm is not installed, and with
        `DDPMCFGPipeline.from_pretrained(folder)` where it is. Components from diffusers stay
        `["diffusers", class]`. `push_to_hub` (here or as a method) uploads exactly this folder.
        """
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            hub_kwargs = {k: kwargs.pop(k) for k in ("commit_message", "private", "token", "create_pr") if k in kwargs}
        kwargs.pop("push_to_hub", None)
        super().save_pretrained(
            save_directory,
            safe_serialization=safe_serialization,
            variant=variant,
            max_shard_size=max_shard_size,
            **kwargs,
        )
        index_path = os.path.join(save_directory, self.config_name)
        with open(index_path, encoding="utf-8") as index_file:
            index = json.load(index_file)
        index.pop("_name_or_path", None)  # where this process loaded the pipeline from: meaningless elsewhere
        index["_class_name"] = [_copy_source_file(type(self), save_directory), type(self).__name__]
        _copy_pipeline_family(save_directory, origin=self.name_or_path)
        for name in ("unet", "scheduler", "classifier"):
            if getattr(self, name, None) is None:
                continue
            component_class = type(getattr(getattr(self, name), "_orig_mod", getattr(self, name)))
            if component_class.__module__.split(".")[0] != "diffusers":
                file_stem = _copy_source_file(component_class, os.path.join(save_directory, name))
                index[name] = [file_stem, component_class.__name__]
        with open(index_path, "w", encoding="utf-8") as index_file:
            index_file.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
        if push_to_hub:
            _upload_pipeline_folder(save_directory, index, repo_id, **hub_kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        **save_kwargs,
    ):
        """Saves the pipeline (as `save_pretrained(**save_kwargs)`) into a temporary folder and uploads exactly that
        folder, with a model card, in one commit through `HfApi.upload_folder`. Returns the commit info."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, **save_kwargs)
            with open(os.path.join(folder, self.config_name), encoding="utf-8") as index_file:
                index = json.load(index_file)
            return _upload_pipeline_folder(folder, index, repo_id, commit_message, private, token, create_pr)

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs):
        """
        [`DiffusionPipeline.from_pipe`]: a pipeline of this class from the components and config of `pipeline`,
        without loading the weights again (`DDPMCFGImg2ImgPipeline.from_pipe(pipe)`). diffusers carries a model over
        only when its class is the one the signature names; these pipelines take any UNet, so it is passed on.
        """
        if "unet" not in kwargs and getattr(pipeline, "unet", None) is not None:
            kwargs["unet"] = pipeline.unet
        return super().from_pipe(pipeline, **kwargs)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """
        Reads `model_index.json` as [`ConfigMixin.load_config`] does, then points the code files it names at the
        classes of the package this pipeline was imported from, when that package has them: loading a saved
        folder with `DDPMCFGPipeline.from_pretrained` then runs the installed hf-ddpm code, not the copies in the
        folder, and needs no `trust_remote_code`. References the package lacks are left for diffusers to resolve.
        """
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        home = sys.modules.get(_HOME_PACKAGE)
        class_name = config.get("_class_name")
        own_files = {(_module_stem(c), c.__name__) for c in cls.__mro__}
        if isinstance(class_name, (list, tuple)) and tuple(class_name) in own_files:
            config["_class_name"] = cls.__name__
        for name, value in config.items():
            if name.startswith("_") or not isinstance(value, (list, tuple)) or len(value) != 2:
                continue
            installed = getattr(home, str(value[1]), None)
            if inspect.isclass(installed) and _module_stem(installed) == value[0]:
                config[name] = [installed.__module__, installed.__name__]
        return loaded

    @classmethod
    def download(cls, pretrained_model_name: str, **kwargs) -> str:
        """
        Downloads the pipeline's files from a Hub repository (`model_index.json`, the code files and every
        component folder it names; nothing else the repository holds) and returns the local folder. Unlike
        [`DiffusionPipeline.download`] it does not import the repository's pipeline file to choose what to fetch,
        so it needs no `trust_remote_code`: `load_config` decides what code runs.
        """
        hub_options = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision")
        hub_kwargs = {k: kwargs[k] for k in hub_options if k in kwargs}
        with open(hf_hub_download(pretrained_model_name, cls.config_name, **hub_kwargs), encoding="utf-8") as index:
            folders = [name for name, value in json.load(index).items() if isinstance(value, list)]
        patterns = [cls.config_name, "*.py"] + [f"{folder}/*" for folder in folders if not folder.startswith("_")]
        return snapshot_download(pretrained_model_name, allow_patterns=patterns, **hub_kwargs)


def check_guidance_interval(guidance_interval) -> None:
    """A `ValueError` unless `guidance_interval` is `None` or a pair `(low, high)` with `0 <= low < high <= 1`."""
    if guidance_interval is None:
        return
    message = (
        "`guidance_interval` must be None or a pair (low, high) of fractions of the training timesteps with "
        f"0 <= low < high <= 1, got {guidance_interval!r}."
    )
    if not isinstance(guidance_interval, (tuple, list)) or len(guidance_interval) != 2:
        raise ValueError(message)
    low, high = guidance_interval
    numbers_given = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high))
    if not numbers_given or not 0.0 <= low < high <= 1.0:
        raise ValueError(message)


def _images_as(images: torch.Tensor, output_type: str) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
    """Converts a `(N, C, H, W)` batch in [0, 1] to the given `output_type`."""
    if output_type == "pt":
        return images
    images = images.cpu().permute(0, 2, 3, 1).float().numpy()
    return images if output_type == "np" else DiffusionPipeline.numpy_to_pil(images)


def _module_stem(cls: type) -> str:
    return cls.__module__.rsplit(".", 1)[-1]


def _upload_pipeline_folder(
    folder: str | os.PathLike,
    index: dict,
    repo_id: str,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
):
    """Uploads the pipeline saved in `folder` (its `model_index.json` is `index`): the index, the pipeline's code file,
    every component folder and the model card (`README.md`; diffusers' default card when the folder has none), and
    nothing else that the folder may hold."""
    repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if not os.path.isfile(os.path.join(folder, "README.md")):
        populate_model_card(load_or_create_model_card(repo_id, token=token)).save(os.path.join(folder, "README.md"))
    components = [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)]
    code = [name for name in os.listdir(folder) if name.endswith(".py")]  # the pipeline files
    allow = ["model_index.json", "README.md", *code, *(f"{name}/*" for name in components)]
    return upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        allow_patterns=allow,
        token=token,
        create_pr=create_pr,
        commit_message=commit_message or "Upload pipeline",
    )


# The pipelines of one saved folder: each file beside this one travels with every pipeline saved, so the folder loads as
# any of them (`DiffusionPipeline.from_pretrained(folder, custom_pipeline=<file name>, trust_remote_code=True)`).
PIPELINE_FAMILY = ("pipeline_ddpm_cfg", "pipeline_ddpm_cfg_img2img", "pipeline_ddpm_cfg_inpaint", "classifier_guidance")


def _copy_pipeline_family(folder: str | os.PathLike, origin: str | None = None) -> None:
    """Copies the files of `PIPELINE_FAMILY` into `folder`, from beside this file or, for those not there (a copy
    loaded as remote code has only the files it imports beside it), from `origin`, the local folder the pipeline was
    loaded from."""
    here = os.path.dirname(os.path.abspath(__file__))
    for stem in PIPELINE_FAMILY:
        sources = [os.path.join(place, f"{stem}.py") for place in (here, origin) if place and os.path.isdir(place)]
        source = next((path for path in sources if os.path.isfile(path)), None)
        target = os.path.join(folder, f"{stem}.py")
        if source is not None and not (os.path.isfile(target) and os.path.samefile(source, target)):
            shutil.copyfile(source, target)


def _copy_source_file(cls: type, folder: str | os.PathLike) -> str:
    """Copies the file that defines `cls` into `folder`; returns its name without `.py`."""
    source = inspect.getsourcefile(cls)
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(source, os.path.join(folder, os.path.basename(source)))
    return os.path.splitext(os.path.basename(source))[0]
