"""Inpainting with classifier-free guidance by RePaint's resampling schedule (Lugmayr et al. 2022).

Self-contained beside `pipeline_ddpm_cfg.py` and `pipeline_ddpm_cfg_img2img.py`, which travel with it in every saved
folder: `DiffusionPipeline.from_pretrained(folder, custom_pipeline="pipeline_ddpm_cfg_inpaint",
trust_remote_code=True)` loads it from a text-to-image folder where hf-ddpm is not installed.
"""

import numbers

import torch
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

# diffusers copies beside a remote-code file only the files that it imports itself, not what those import in turn:
# the text-to-image pipeline's own import is repeated here so that its file finds it.
from .classifier_guidance import ClassifierGuidance  # noqa: F401
from .pipeline_ddpm_cfg import DDPMCFGPipeline as _TextToImagePipeline, DDPMCFGPipelineOutput, guide
from .pipeline_ddpm_cfg_img2img import images_as_tensor, labels_per_image


def repaint_schedule(num_inference_steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """
    RePaint's schedule (Lugmayr et al. 2022, Alg. 1 and App. B), as indices into the `num_inference_steps` timesteps
    from the cleanest (0) to the noisiest: from the noisiest down to 0, and after every `jump_length` steps (below the
    first `jump_length`) back up `jump_length` steps and down again, `jump_n_sample - 1` times. An index below the one
    before it is a denoising step; one above it, a step of the forward process. `jump_n_sample=1` has no jumps: plain
    ancestral sampling that replaces the known region.
    """
    jumps = {j: jump_n_sample - 1 for j in range(0, num_inference_steps - jump_length, jump_length)}
    schedule, t = [], num_inference_steps
    while t >= 1:
        t -= 1
        schedule.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                schedule.append(t)
    return schedule


def masks_as_tensor(mask_image, num_images: int, height: int, width: int) -> torch.Tensor:
    """
    `mask_image` as a `(num_images, 1, H, W)` float tensor of 0 (keep) and 1 (fill): a PIL image or a list of them
    (white fills), a numpy array `(H, W)` or `(N, H, W, 1)`, a tensor `(1, H, W)` or `(N, 1, H, W)`, with values in
    {0, 1} (uint8 in {0, 255}). One mask for every image, or one per image.
    """
    masks = (images_as_tensor(mask_image, "mask_image", 1, height, width) + 1) / 2
    grey = masks[(masks != 0) & (masks != 1)]
    if len(grey):
        raise ValueError(
            "`mask_image` must hold only 0 and 1 (black and white: white is to fill, black is kept); read as values in "
            f"[0, 1], {len(grey)} of its pixels are in between, such as {grey[0].item():.3g}. Threshold it first, for "
            "example `mask > 0.5`."
        )
    if len(masks) not in (1, num_images):
        raise ValueError(f"`mask_image` has {len(masks)} masks for {num_images} images: give one, or one per image.")
    return masks.expand(num_images, -1, -1, -1)


class DDPMCFGInpaintPipeline(_TextToImagePipeline):
    r"""
    Pipeline for inpainting with a class-conditional (or unconditional) pixel-space model and classifier-free
    guidance, by RePaint (Lugmayr et al. 2022, https://huggingface.co/papers/2201.09865): at every step the region to
    fill comes from the model, with CFG, and the known region from the forward process of the image at that noise
    level; every `jump_length` steps the sample goes back up `jump_length` steps of the forward process and down
    again, `jump_n_sample - 1` times, which lets the filled region and the known one agree.

    RePaint's steps are ancestral DDPM steps, and its jumps need a sampler that keeps no history between steps: the
    pipeline samples with diffusers' `DDPMScheduler` on the noise schedule and prediction type of the pipeline's
    scheduler, whichever scheduler that is (DDIM, DPM-Solver, ...), so `num_inference_steps` counts DDPM steps.

    It takes the components of [`DDPMCFGPipeline`] and loads from the same saved folder or Hub repository, or from a
    loaded pipeline without loading the weights again: `DDPMCFGInpaintPipeline.from_pipe(pipe)`.
    """

    @torch.no_grad()
    def __call__(
        self,
        image,
        mask_image,
        class_labels: int | str | list[int | str] | None = None,
        guidance_scale: float = 1.0,
        num_inference_steps: int = 100,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        guidance_rescale: float = 0.0,
    ) -> DDPMCFGPipelineOutput | tuple:
        r"""
        Fills the masked region of each image. Every argument is checked before any work starts; a bad one raises a
        `ValueError` that names it and says what is allowed.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The images, in the model's size and channels, as for [`DDPMCFGImg2ImgPipeline`]: PIL images, numpy
                arrays `(N, H, W, C)` or tensors `(N, C, H, W)` with values in [0, 1].
            mask_image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                What to fill: white (1) is filled, black (0) is kept; one mask for every image or one per image, in
                the images' size, a single channel, values 0 and 1 only (uint8 masks 0 and 255).
            class_labels (`int`, `str` or a list of them, *optional*):
                The class to fill each image towards, by id or by name: one for all images or one per image.
            guidance_scale (`float`, *optional*, defaults to 1.0):
                CFG scale, as for [`DDPMCFGPipeline`].
            num_inference_steps (`int`, *optional*, defaults to 100):
                DDPM steps from noise to image, before the jumps (the paper uses 250 for 256x256 images).
            jump_length (`int`, *optional*, defaults to 10):
                How many steps each jump goes back up (the paper's j).
            jump_n_sample (`int`, *optional*, defaults to 10):
                How many times each stretch is sampled (the paper's r): `jump_n_sample - 1` jumps back at each point;
                1 samples once, without jumps. The UNet runs about `num_inference_steps * (1 + (jump_n_sample - 1)
                * 2)` times.
            generator, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs,
            guidance_rescale:
                As for [`DDPMCFGPipeline`]. The callback is called after every step of the schedule, jumps included.

        Returns:
            [`DDPMCFGPipelineOutput`] or `tuple`: the images, whose known region is the input's (to 8 bits).
        """
        _, channels, height, width = self.sample_shape(1)
        images = images_as_tensor(image, "image", channels, height, width)
        masks = masks_as_tensor(mask_image, len(images), height, width)
        class_labels, batch_size = labels_per_image(class_labels, len(images))
        label_ids = self._label_ids(class_labels)
        self.check_inputs(
            label_ids,
            batch_size,
            guidance_scale,
            num_inference_steps,
            0.0,
            generator,
            output_type,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            guidance_rescale,
            None,
        )
        for name, value in [("jump_length", jump_length), ("jump_n_sample", jump_n_sample)]:
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")

        device = self._execution_device
        guided = label_ids is not None and guidance_scale != 1.0
        labels = self.prepare_class_labels(label_ids, batch_size, guided, device)
        ddpm = DDPMScheduler.from_config(self.scheduler.config)
        ddpm.set_timesteps(num_inference_steps, device=device)
        # The sampler's own timesteps (with its spacing and offset), visited in RePaint's order.
        ascending = ddpm.timesteps.flip(0).tolist()
        schedule = [ascending[index] for index in repaint_schedule(num_inference_steps, jump_length, jump_n_sample)]
        known = images.to(device=device, dtype=self.unet.dtype)
        masks = masks.to(device=device, dtype=self.unet.dtype)
        latents = self.prepare_latents(len(images), generator, device)
        self._num_timesteps, self._num_guided_steps = len(schedule), 0
        # A denoising entry t takes the sample from level t down to the level below (DDPM's previous timestep); a jump
        # entry t, after it, takes the sample back up to the level below t, where the entry after the jumps starts.
        previous, level = schedule[0] + 1, schedule[0]
        for step, t in enumerate(self.progress_bar(schedule)):
            if t < previous:
                latents = self._repaint_step(
                    ddpm, latents, t, known, masks, labels, guided, guidance_scale, guidance_rescale, generator
                )
            else:
                latents = noise_up(ddpm, latents, level, ddpm.previous_timestep(t), generator)
            previous, level = t, ddpm.previous_timestep(t)
            if callback_on_step_end is not None:
                latents = self.run_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, step, t, latents)
        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        return DDPMCFGPipelineOutput(images=images) if return_dict else (images,)

    def _repaint_step(
        self, ddpm, latents, t, known, masks, labels, guided, guidance_scale, guidance_rescale, generator
    ):
        """One RePaint step down from `t`: the model's ancestral DDPM step in the region to fill, the forward process
        of the known image at the level reached elsewhere."""
        model_input = torch.cat([latents, latents]) if guided else latents
        model_output = self.unet(model_input, t, class_labels=labels).sample
        if guided:
            model_output = guide(model_output, latents.shape[1], guidance_scale, guidance_rescale)
            self._num_guided_steps += 1
        filled = ddpm.step(model_output, t, latents, generator=generator).prev_sample
        previous_t = ddpm.previous_timestep(t)
        if previous_t < 0:
            noised_known = known
        else:
            noise = randn_tensor(known.shape, generator=generator, device=known.device, dtype=known.dtype)
            noised_known = ddpm.add_noise(known, noise, torch.as_tensor(previous_t, device=known.device))
        return masks * filled + (1 - masks) * noised_known


def noise_up(ddpm: DDPMScheduler, latents: torch.Tensor, start: int, end: int, generator) -> torch.Tensor:
    """The forward process from the noise level of training timestep `start` (-1: the clean image) up to that of `end`,
    one training step at a time: x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) noise (RePaint's jump back)."""
    for s in range(start + 1, end + 1):
        beta = ddpm.betas[s].to(latents.device, latents.dtype)
        noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        latents = (1 - beta) ** 0.5 * latents + beta**0.5 * noise
    return latents


# diffusers loads a custom pipeline file by looking for the one DiffusionPipeline subclass in it: the text-to-image
# pipeline, imported as the base class, must not stay a name of this module.
del _TextToImagePipeline
