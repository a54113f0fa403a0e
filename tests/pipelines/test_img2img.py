"""DDPMCFGImg2ImgPipeline: class-swap edits (SDEdit) against a loop written out by hand, its ends (strength 0 and 1),
its inputs, loading from a text-to-image folder, and DDIM inversion."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMInverseScheduler,
    DDIMScheduler as DiffusersDDIMScheduler,
    DPMSolverMultistepScheduler,
    ModelMixin,
)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.utils.torch_utils import randn_tensor

from helpers import DATA_MEAN, gaussian_denoiser, tiny_conditional_unet
from hf_ddpm.pipelines import DDPMCFGImg2ImgPipeline, DDPMCFGPipeline
from hf_ddpm.schedulers.scheduling_ddim import DDIMScheduler
from hf_ddpm.schedulers.scheduling_ddpm import DDPMScheduler
from without_hf_ddpm import loads_without_hf_ddpm

LABELS = {0: "T-shirt", 1: "Sneaker", 2: "Bag"}
TRAIN_STEPS = 20


def tiny_pipeline(scheduler=None, cls=DDPMCFGImg2ImgPipeline):
    unet = tiny_conditional_unet()
    pipe = cls(unet, scheduler or DDIMScheduler(num_train_timesteps=TRAIN_STEPS), id2label=LABELS)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def real_images(count=2, size=8):
    """Images in [0, 1], `(count, 1, size, size)`: smooth ramps, different for each image."""
    ramp = torch.linspace(0, 1, size)
    return torch.stack([(ramp[None, :] * ramp[:, None]) ** (k + 1) for k in range(count)])[:, None]


def generators(count, offset=0):
    return [torch.Generator().manual_seed(offset + i) for i in range(count)]


def test_edit_matches_the_sdedit_loop_written_out():
    pipe = tiny_pipeline()
    images = real_images()
    out = pipe(
        images,
        ["Sneaker", "Bag"],
        strength=0.5,
        guidance_scale=2.0,
        num_inference_steps=10,
        generator=generators(2),
        output_type="pt",
    ).images

    # By hand: noise the images to the first of the last half of the timesteps, then guided DDIM steps to the end.
    scheduler = DDIMScheduler(num_train_timesteps=TRAIN_STEPS)
    scheduler.set_timesteps(10)
    timesteps = scheduler.timesteps[5:]
    noise = torch.cat([randn_tensor((1, 1, 8, 8), generator=g) for g in generators(2)])
    sample = scheduler.add_noise(images * 2 - 1, noise, timesteps[:1].expand(2))
    labels = torch.tensor([1, 2, 3, 3])
    for t in timesteps:
        conditional, unconditional = pipe.unet(torch.cat([sample, sample]), t, class_labels=labels).sample.chunk(2)
        sample = scheduler.step(unconditional + 2.0 * (conditional - unconditional), t, sample).prev_sample
    torch.testing.assert_close(out, (sample / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)
    assert pipe.num_timesteps == 5


@pytest.mark.parametrize("scheduler", [DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler])
def test_strength_one_is_plain_sampling_and_strength_zero_returns_the_image(scheduler):
    pipe = tiny_pipeline(scheduler(num_train_timesteps=TRAIN_STEPS))
    text_to_image = DDPMCFGPipeline.from_pipe(pipe)
    images = real_images()
    call = dict(guidance_scale=2.0, num_inference_steps=6, output_type="np")
    edited = pipe(images, "Bag", strength=1.0, generator=generators(2), **call).images
    drawn = text_to_image("Bag", batch_size=2, generator=generators(2), **call).images
    np.testing.assert_array_equal(edited, drawn)

    # Strength 0 runs no step and gives the image back; a PIL image comes back the same to the byte.
    pil = PIL.Image.fromarray((images[0, 0].numpy() * 255).round().astype(np.uint8), mode="L")
    returned = pipe(pil, "Bag", strength=0.0, **dict(call, output_type="pil")).images[0]
    assert pipe.num_timesteps == 0
    np.testing.assert_array_equal(np.asarray(returned), np.asarray(pil))


def test_strength_decides_how_far_the_edit_goes():
    pipe = tiny_pipeline()
    images = real_images()
    distances = []
    for strength in (0.2, 0.5, 1.0):
        out = pipe(images, "Bag", strength=strength, num_inference_steps=10, generator=generators(2), output_type="pt")
        distances.append((out.images - images).abs().mean().item())
        assert pipe.num_timesteps == int(10 * strength)
    assert distances[0] < distances[1] < distances[2]


def test_each_image_is_edited_the_same_whatever_else_is_in_the_batch():
    pipe = tiny_pipeline(DDPMScheduler(num_train_timesteps=TRAIN_STEPS))
    images = real_images(3)
    call = dict(strength=0.7, guidance_scale=1.5, output_type="np")
    batch = pipe(images, ["T-shirt", "Sneaker", "Bag"], generator=generators(3), **call).images
    alone = pipe(images[1:2], "Sneaker", generator=generators(1, offset=1), **call).images
    np.testing.assert_allclose(batch[1:2], alone, atol=1e-5, rtol=0)  # batched convolutions round differently


def test_pil_numpy_and_torch_images_give_the_same_edit():
    pipe = tiny_pipeline()
    as_uint8 = (real_images(2) * 255).round().to(torch.uint8)
    as_float = as_uint8.float() / 255
    pils = [PIL.Image.fromarray(image[0].numpy(), mode="L") for image in as_uint8]
    call = dict(class_labels=1, strength=0.6, num_inference_steps=5, output_type="np")
    reference = pipe(as_float, generator=generators(2), **call).images
    for image in (pils, as_float.permute(0, 2, 3, 1).numpy(), as_uint8.permute(0, 2, 3, 1).numpy(), list(as_float)):
        np.testing.assert_array_equal(pipe(image, generator=generators(2), **call).images, reference)
    # An RGB picture is read in the model's mode.
    rgb = [pil.convert("RGB") for pil in pils]
    np.testing.assert_array_equal(pipe(rgb, generator=generators(2), **call).images, reference)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image=torch.rand(1, 1, 16, 16)), "is 16x16 with 1 channel; this model takes 8x8 images with 1 channel"),
        (dict(image=torch.rand(1, 3, 8, 8)), "is 8x8 with 3 channels; this model takes 8x8 images with 1 channel"),
        (dict(image=torch.rand(1, 1, 8, 8) * 2 - 1), "values in [0, 1]"),
        (dict(image="a sneaker.png"), "`image` must be a PIL image"),
        (dict(image=[]), "`image` is an empty list"),
        (dict(strength=1.5), "`strength` must be a number in [0, 1], got 1.5"),
        (dict(strength=-0.1), "`strength` must be a number in [0, 1]"),
        (dict(strength=0.05, num_inference_steps=10), "`strength`=0.05 runs no step of 10"),
        (dict(class_labels=[0, 1, 2]), "`class_labels` lists 3 labels for 2 images"),
        (dict(class_labels="Sandal"), "unknown label name 'Sandal'"),
        (dict(guidance_scale=-1.0), "`guidance_scale` must be a number >= 0"),
    ],
)
def test_bad_input_is_refused_before_any_step(kwargs, message):
    pipe = tiny_pipeline()
    calls = []
    pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    arguments = dict(image=real_images(2), class_labels="Bag", strength=0.5)
    with pytest.raises(ValueError) as error:
        pipe(**{**arguments, **kwargs})
    assert message in str(error.value)
    assert not calls


def test_from_pipe_shares_the_weights_and_the_labels():
    text_to_image = tiny_pipeline(cls=DDPMCFGPipeline)
    pipe = DDPMCFGImg2ImgPipeline.from_pipe(text_to_image)
    assert type(pipe) is DDPMCFGImg2ImgPipeline
    assert pipe.unet is text_to_image.unet and pipe.scheduler is not None
    assert pipe.config.id2label == LABELS and pipe.config.null_class_id == 3


def test_loads_from_a_text_to_image_folder_which_carries_its_file(tmp_path):
    text_to_image = tiny_pipeline(cls=DDPMCFGPipeline)
    text_to_image.save_pretrained(tmp_path)
    assert (tmp_path / "pipeline_ddpm_cfg_img2img.py").is_file()
    loaded = DDPMCFGImg2ImgPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is DDPMCFGImg2ImgPipeline and loaded.config.id2label == LABELS
    edit = dict(image=real_images(2), class_labels="Bag", strength=0.5, output_type="np")
    np.testing.assert_array_equal(
        loaded(**edit, generator=generators(2)).images,
        DDPMCFGImg2ImgPipeline.from_pipe(text_to_image)(**edit, generator=generators(2)).images,
    )


EDIT_WITHOUT_HF_DDPM = """
import sys
import numpy as np
import torch
from diffusers import DiffusionPipeline

try:
    import hf_ddpm
    raise SystemExit("hf_ddpm should not be importable here")
except ImportError:
    pass
folder, images = sys.argv[1], np.load(sys.argv[2])
pipe = DiffusionPipeline.from_pretrained(folder, custom_pipeline="pipeline_ddpm_cfg_img2img", trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
generator = [torch.Generator().manual_seed(i) for i in range(len(images))]
edited = pipe(torch.from_numpy(images), "Bag", strength=0.5, generator=generator, output_type="np").images
np.save(sys.argv[3], edited)
print(type(pipe).__name__, type(pipe).__module__)
"""


def save_model_and_images(tmp_path):
    """A text-to-image folder and two images; the script's arguments, and `(pipe, images)`."""
    pipe = tiny_pipeline(cls=DDPMCFGPipeline)
    pipe.save_pretrained(tmp_path / "model")
    images = real_images(2)
    np.save(tmp_path / "images.npy", images.numpy())
    return [str(tmp_path / name) for name in ("model", "images.npy", "edited.npy")], (pipe, images)


@pytest.mark.slow
@loads_without_hf_ddpm(EDIT_WITHOUT_HF_DDPM, save_model_and_images)
def test_diffusers_loads_the_edit_pipeline_from_the_folder_where_hf_ddpm_is_not_importable(loaded_without_hf_ddpm):
    run = loaded_without_hf_ddpm
    (pipe, images), tmp_path = run.prepared, run.folder
    assert run.returncode == 0, run.stderr[-3000:]
    name, module = run.stdout.split()[-2:]
    assert name == "DDPMCFGImg2ImgPipeline" and module.startswith("diffusers_modules.")
    expected = DDPMCFGImg2ImgPipeline.from_pipe(pipe)(
        images, "Bag", strength=0.5, generator=generators(2), output_type="np"
    ).images
    # Another process, whose threads may sum in another order.
    np.testing.assert_allclose(np.load(tmp_path / "edited.npy"), expected, atol=1e-5, rtol=0)


class GaussianDenoiserUNet(ModelMixin, ConfigMixin):
    """The ideal denoiser of `helpers.gaussian_denoiser` behind the UNet's interface: a smooth stand-in for a trained
    model, on which DDIM inversion is as exact as its approximation allows."""

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, prediction_type: str = "epsilon"):
        super().__init__()
        self.sample_size, self.in_channels = DATA_MEAN.shape[-1], 1
        self.register_to_config(sample_size=self.sample_size, in_channels=1, out_channels=1, num_class_embeds=None)
        self.scheduler = DiffusersDDIMScheduler(
            num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2"
        )
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a dtype and a device

    def forward(self, sample, timestep, class_labels=None):
        model = gaussian_denoiser(self.scheduler.alphas_cumprod, self.config.prediction_type)
        return type("Output", (), {"sample": model(sample, timestep)})()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_inversion_gives_noise_that_draws_the_image_back(prediction_type):
    unet = GaussianDenoiserUNet(prediction_type=prediction_type)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type
    )
    pipe = DDPMCFGImg2ImgPipeline(unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    sampler = DDPMCFGPipeline.from_pipe(pipe)
    image = (DATA_MEAN + 0.3 * torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    image = image / 2 + 0.5
    errors = {}
    for steps in (5, 20, 100):
        noise = pipe.invert(image, num_inference_steps=steps)
        assert noise.shape == image.shape
        back = sampler(batch_size=2, latents=noise, num_inference_steps=steps, output_type="pt").images
        errors[steps] = (back - image).abs().max().item()
    assert errors[100] < errors[20] < errors[5] and errors[100] < 0.03, errors

    # Step by step, the inversion is diffusers' DDIMInverseScheduler on the same schedule.
    inverse = DDIMInverseScheduler.from_config(scheduler.config)
    inverse.set_timesteps(20)
    sample = image * 2 - 1
    for t in inverse.timesteps:
        sample = inverse.step(unet(sample, t).sample, t, sample).prev_sample
    torch.testing.assert_close(pipe.invert(image, num_inference_steps=20), sample, atol=1e-5, rtol=1e-5)


def test_latents_of_the_wrong_shape_are_refused():
    pipe = tiny_pipeline(cls=DDPMCFGPipeline)
    with pytest.raises(ValueError, match=r"`latents` must be a tensor of shape \(2, 1, 8, 8\)"):
        pipe("Bag", batch_size=2, latents=torch.zeros(1, 1, 8, 8))
