"""Image-to-image with classifier-free guidance: class-swap edits (SDEdit) and DDIM inversion of real images.

Self-contained beside `pipeline_ddpm_cfg.py`, whose pipeline it extends: both files travel in every saved folder, so
`DiffusionPipeline.from_pretrained(folder, custom_pipeline="pipeline_ddpm_cfg_img2img", trust_remote_code=True)`
loads this pipeline from a text-to-image folder where hf-ddpm is not installed.
"""

import numbers

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler

# diffusers copies beside a remote-code file only the files that it imports itself, not what those import in turn:
# the text-to-image pipeline's own import is repeated here so that its file finds it.
from .classifier_guidance import ClassifierGuidance  # noqa: F401
from .pipeline_ddpm_cfg import DDPMCFGPipeline as _TextToImagePipeline, DDPMCFGPipelineOutput, count_labels


def images_as_tensor(image, name: str, channels: int, height: int, width: int) -> torch.Tensor:
    """
    `image` as a `(N, C, H, W)` float tensor in [-1, 1], the model's range. Takes what the pipelines return: a PIL
    image or a list of them (converted to the model's mode, "L" for one channel and "RGB" for three), a numpy array
    `(H, W)`, `(H, W, C)` or `(N, H, W, C)` in [0, 1] (or uint8 in [0, 255]), a tensor `(C, H, W)` or `(N, C, H, W)` in
    [0, 1], or a list of arrays or tensors. Raises a `ValueError` naming `name` and saying what the model takes when
    the size or the channels differ, or values leave [0, 1].
    """
    takes = f"this model takes {height}x{width} images with {channels} channel{'s' if channels > 1 else ''}"
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError(f"`{name}` is an empty list: give at least one image.")
        parts = [images_as_tensor(one, name, channels, height, width) for one in image]
        return torch.cat(parts)
    if isinstance(image, PIL.Image.Image):
        mode = {1: "L", 3: "RGB"}.get(channels)
        if mode is None:
            raise ValueError(f"`{name}`: a PIL image cannot feed a model of {channels} channels; give an array.")
        image = np.asarray(image.convert(mode))
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4:
            raise ValueError(f"`{name}`: a numpy image must be (H, W), (H, W, C) or (N, H, W, C), got {image.shape}.")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(0, 3, 1, 2)
    if not isinstance(image, torch.Tensor):
        raise ValueError(
            f"`{name}` must be a PIL image, a numpy array, a torch tensor or a list of them, got {type(image).__name__}."
        )
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4:
        raise ValueError(f"`{name}`: a tensor image must be (C, H, W) or (N, C, H, W), got {tuple(image.shape)}.")
    if tuple(image.shape[1:]) != (channels, height, width):
        size = f"{image.shape[2]}x{image.shape[3]} with {image.shape[1]} channel{'s' if image.shape[1] > 1 else ''}"
        raise ValueError(f"`{name}` is {size}; {takes}.")
    image = image.float()
    if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"`{name}` must hold values in [0, 1] (as the pipelines return them; uint8 arrays in [0, 255]), got "
            f"[{image.min().item():g}, {image.max().item():g}]."
        )
    return image * 2 - 1


def labels_per_image(class_labels, num_images: int) -> tuple[object, int]:
    """`class_labels` and the `batch_size` that give one label per image: one label (or none) for every image, or a
    list of exactly `num_images` labels, one each."""
    count = count_labels(class_labels)
    if count is None or count == 1:
        return class_labels, num_images
    if count != num_images:
        raise ValueError(
            f"`class_labels` lists {count} labels for {num_images} images: give one label for all of them or one per "
            "image."
        )
    return class_labels, 1


class DDPMCFGImg2ImgPipeline(_TextToImagePipeline):
    r"""
    Pipeline for image-to-image editing with a class-conditional pixel-space model and classifier-free guidance: each
    image is noised part of the way by the forward process and denoised towards the class asked for (SDEdit, Meng et
    al. 2021, https://huggingface.co/papers/2108.01073). A class-swap keeps the image's layout and pose where the
    noise leaves them, and redraws what the class changes. `invert` gives the noise from which deterministic DDIM
    sampling draws a given image back.

    It takes the components of [`DDPMCFGPipeline`] (a UNet, any diffusers-compatible scheduler, `id2label`,
    `null_class_id`) and loads from the same saved folder or Hub repository, or from a loaded pipeline without loading
    the weights again: `DDPMCFGImg2ImgPipeline.from_pipe(pipe)`.
    """

    @torch.no_grad()
    def __call__(
        self,
        image,
        class_labels: int | str | list[int | str] | None = None,
        strength: float = 0.8,
        guidance_scale: float = 1.0,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        guidance_rescale: float = 0.0,
        guidance_interval: tuple[float, float] | None = None,
    ) -> DDPMCFGPipelineOutput | tuple:
        r"""
        Edits images. Every argument is checked before any work starts; a bad one raises a `ValueError` that names it
        and says what is allowed.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The images to edit, in the model's size and channels, as the pipelines return them: PIL images (turned
                into the model's mode), numpy arrays `(N, H, W, C)` or tensors `(N, C, H, W)` with values in [0, 1].
            class_labels (`int`, `str` or a list of them, *optional*):
                The class to draw each image towards, by id or by name: one for every image, or one per image.
                `None` edits unconditionally (the null label on a conditional model).
            strength (`float`, *optional*, defaults to 0.8):
                How far into the noise the image goes, in [0, 1]: the last `strength` of the `num_inference_steps`
                timesteps run. 0 returns the image; 1 is plain sampling from pure noise (the image is not used), the
                same images as [`DDPMCFGPipeline`] draws with the same generator; in between, the larger it is, the
                more of the image is redrawn.
            guidance_scale, num_inference_steps, eta, generator, output_type, return_dict, callback_on_step_end,
            callback_on_step_end_tensor_inputs, guidance_rescale, guidance_interval:
                As for [`DDPMCFGPipeline`]; `num_inference_steps` counts the steps of a whole schedule, of which
                `strength` of them run. `generator` draws the forward-process noise (one per image: each image is
                then edited the same whatever else is in the batch).

        Returns:
            [`DDPMCFGPipelineOutput`] or `tuple`: the edited images.
        """
        images = self.prepare_image(image)
        check_strength(strength)
        class_labels, batch_size = labels_per_image(class_labels, len(images))
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
        if 0 < strength and int(num_inference_steps * strength) < 1:
            raise ValueError(
                f"`strength`={strength} runs no step of {num_inference_steps}: use a strength of at least "
                f"{1 / num_inference_steps:g}, more steps, or strength 0 to return the image unchanged."
            )
        guided = label_ids is not None and guidance_scale != 1.0
        device = self._execution_device
        if strength == 0:
            self._num_timesteps = self._num_guided_steps = 0
            return self._output(images, output_type, return_dict)

        labels = self.prepare_class_labels(label_ids, batch_size, guided, device)
        timesteps, _ = self.get_timesteps(num_inference_steps, strength, device)
        start = None if strength == 1 else images  # strength 1 starts from pure noise, as text-to-image does
        latents = self.prepare_latents(len(images), generator, device, image=start, timestep=timesteps[:1])
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
        )
        return self._output(latents, output_type, return_dict)

    def prepare_image(self, image) -> torch.Tensor:
        """`image` as a `(N, C, H, W)` batch in [-1, 1], checked against the UNet's size and channels."""
        return images_as_tensor(image, "image", *self.sample_shape(1)[1:])

    def _output(self, sample: torch.Tensor, output_type: str, return_dict: bool):
        images = self.postprocess(sample, output_type)
        self.maybe_free_model_hooks()
        return DDPMCFGPipelineOutput(images=images) if return_dict else (images,)

    @torch.no_grad()
    def invert(
        self,
        image,
        class_labels: int | str | list[int | str] | None = None,
        num_inference_steps: int = 50,
    ) -> torch.Tensor:
        r"""
        Deterministic DDIM inversion (Song et al. 2021, https://huggingface.co/papers/2010.02502, Sec. 4.3; Dhariwal &
        Nichol 2021, App. F): runs the DDIM update backwards, from the image to noise, with the conditional model
        alone (guidance 1). [`DDPMCFGPipeline`] with a `DDIMScheduler`, `eta=0`, the same `num_inference_steps` and
        the same label draws the image back from this noise, up to the error of the inversion's approximation (each
        step predicts the noise at the level it leaves, not the one it goes to), which shrinks as the steps grow.
        Drawn with another class or guidance, the same noise gives an edit that keeps the image's layout.

        Args:
            image: The images, as for `__call__`.
            class_labels: The class of each image (one for all or one per image), by id or by name; `None` for an
                unconditional model or to invert with the null label.
            num_inference_steps (`int`, *optional*, defaults to 50):
                DDIM steps, in [1, the training steps].

        Returns:
            `torch.Tensor`: the noise, `(N, C, H, W)`, to pass as `latents` to [`DDPMCFGPipeline`].
        """
        latents = self.prepare_image(image)
        class_labels, batch_size = labels_per_image(class_labels, len(latents))
        label_ids = self._label_ids(class_labels)
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        if (
            not isinstance(num_inference_steps, numbers.Integral)
            or isinstance(num_inference_steps, bool)
            or not 1 <= num_inference_steps <= num_train_timesteps
        ):
            raise ValueError(
                f"`num_inference_steps` must be an integer in [1, {num_train_timesteps}], got {num_inference_steps!r}."
            )
        device = self._execution_device
        ddim = DDIMScheduler.from_config(self.scheduler.config)  # the timesteps DDIM sampling will retrace
        ddim.set_timesteps(num_inference_steps, device=device)
        labels = self.prepare_class_labels(label_ids, batch_size, False, device)
        latents = latents.to(device=device, dtype=self.unet.dtype)
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        alpha_bar = ddim.final_alpha_cumprod  # where DDIM's last step lands: the clean image
        self._num_timesteps = len(ddim.timesteps)
        for t in self.progress_bar(ddim.timesteps.flip(0)):
            # The DDIM step at t draws the sample at the level below from the model's prediction at t; run backwards,
            # the same prediction takes the sample up to t's level.
            model_output = self.unet(latents, t, class_labels=labels).sample[:, : latents.shape[1]]
            noise, clean = noise_and_clean(model_output, latents, alpha_bar, prediction_type)
            alpha_bar = ddim.alphas_cumprod[int(t)]
            latents = alpha_bar**0.5 * clean + (1 - alpha_bar) ** 0.5 * noise
        return latents


def noise_and_clean(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise and the clean image that `model_output` predicts for `sample` at the noise level `alpha_bar`, for a
    model of `prediction_type` "epsilon", "v_prediction" or "sample" (as diffusers' DDIM step reads them)."""
    alpha_bar = torch.as_tensor(alpha_bar, dtype=sample.dtype, device=sample.device)
    signal, sigma = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    if prediction_type == "epsilon":
        return model_output, (sample - sigma * model_output) / signal
    if prediction_type == "v_prediction":
        return signal * model_output + sigma * sample, signal * sample - sigma * model_output
    if prediction_type == "sample":
        return (sample - signal * model_output) / sigma, model_output
    raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}.")


def check_strength(strength) -> None:
    """A `ValueError` unless `strength` is a number in [0, 1]."""
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 <= strength <= 1:
        raise ValueError(f"`strength` must be a number in [0, 1], got {strength!r}.")


# diffusers loads a custom pipeline file by looking for the one DiffusionPipeline subclass in it: the text-to-image
# pipeline, imported as the base class, must not stay a name of this module.
del _TextToImagePipeline
