"""DDPMCFGInpaintPipeline: RePaint's schedule against diffusers', the known region given back to the byte, the jumps'
forward process, the number of network calls, bad masks, and loading from a text-to-image folder."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDPMScheduler as DiffusersDDPMScheduler, DPMSolverMultistepScheduler, RePaintScheduler

from helpers import tiny_conditional_unet
from hf_ddpm.pipelines import DDPMCFGInpaintPipeline, DDPMCFGPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg_inpaint import noise_up, repaint_schedule
from hf_ddpm.schedulers.scheduling_ddpm import DDPMScheduler
from without_hf_ddpm import loads_without_hf_ddpm

LABELS = {0: "T-shirt", 1: "Sneaker", 2: "Bag"}
TRAIN_STEPS = 40


def tiny_pipeline(scheduler=None, cls=DDPMCFGInpaintPipeline):
    unet = tiny_conditional_unet()
    pipe = cls(unet, scheduler or DDPMScheduler(num_train_timesteps=TRAIN_STEPS), id2label=LABELS)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pil_images(count=2):
    ramp = np.linspace(0, 255, 8)
    return [
        PIL.Image.fromarray((np.outer(ramp, ramp) / 255 * (k + 1) / count).astype(np.uint8), mode="L")
        for k in range(count)
    ]


def half_mask(side="right"):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, 4:] = 255
    return PIL.Image.fromarray(mask if side == "right" else mask[:, ::-1].copy(), mode="L")


@pytest.mark.parametrize("steps, jump_length, jump_n_sample", [(10, 3, 3), (20, 10, 10), (25, 5, 1), (8, 10, 4)])
def test_the_schedule_is_repaints_as_diffusers_has_it(steps, jump_length, jump_n_sample):
    reference = RePaintScheduler(num_train_timesteps=1000)
    reference.set_timesteps(steps, jump_length=jump_length, jump_n_sample=jump_n_sample)
    indices = repaint_schedule(steps, jump_length, jump_n_sample)
    assert [index * (1000 // steps) for index in indices] == reference.timesteps.tolist()


@pytest.mark.parametrize("scheduler", [DDPMScheduler, DPMSolverMultistepScheduler])
def test_the_known_region_comes_back_to_the_byte_and_the_rest_is_drawn(scheduler):
    pipe = tiny_pipeline(scheduler(num_train_timesteps=TRAIN_STEPS))
    images, mask = pil_images(), half_mask()
    out = pipe(
        images,
        mask,
        ["Sneaker", "Bag"],
        guidance_scale=2.0,
        num_inference_steps=10,
        jump_length=3,
        jump_n_sample=2,
        generator=[torch.Generator().manual_seed(i) for i in range(2)],
    ).images
    keep = np.asarray(mask) == 0
    for result, image in zip(out, images):
        result, image = np.asarray(result), np.asarray(image)
        np.testing.assert_array_equal(result[keep], image[keep])
        assert np.abs(result[~keep].astype(int) - image[~keep]).mean() > 5


def test_the_unet_runs_once_per_denoising_step_of_the_schedule_batched_with_guidance():
    pipe = tiny_pipeline()
    batches = []
    pipe.unet.register_forward_hook(lambda module, args, output: batches.append(args[0].shape[0]))
    pipe(
        pil_images(2),
        half_mask(),
        "Bag",
        guidance_scale=3.0,
        num_inference_steps=10,
        jump_length=3,
        jump_n_sample=3,
        output_type="np",
    )
    schedule = repaint_schedule(10, 3, 3)
    downs = sum(1 for before, t in zip([schedule[0] + 1] + schedule, schedule) if t < before)
    assert len(batches) == downs == pipe.num_guided_steps and set(batches) == {4}
    assert pipe.num_timesteps == len(schedule)

    batches.clear()
    pipe(pil_images(2), half_mask(), "Bag", num_inference_steps=10, jump_n_sample=1, output_type="np")
    assert batches == [2] * 10  # no jumps, no guidance: one call of the batch per step


def test_a_jump_is_the_forward_process_between_the_two_noise_levels():
    ddpm = DiffusersDDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    start = torch.full((20000, 1, 1, 1), 0.7)
    generator = torch.Generator().manual_seed(0)
    end = noise_up(ddpm, start, 399, 599, generator)
    ratio = ddpm.alphas_cumprod[599] / ddpm.alphas_cumprod[399]
    assert abs(end.mean().item() - 0.7 * ratio.sqrt().item()) < 0.01
    assert abs(end.var().item() - (1 - ratio).item()) < 0.01
    from_clean = noise_up(ddpm, start, -1, 0, generator)  # level -1 is the clean image
    assert abs(from_clean.var().item() - (1 - ddpm.alphas_cumprod[0]).item()) < 1e-4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mask_image=PIL.Image.new("L", (8, 8), 128)), "must hold only 0 and 1 (black and white: white is to fill"),
        (dict(mask_image=PIL.Image.new("L", (4, 4), 255)), "`mask_image` is 4x4 with 1 channel; this model takes 8x8"),
        (dict(mask_image=[half_mask()] * 3), "`mask_image` has 3 masks for 2 images"),
        (dict(image=torch.rand(2, 1, 8, 6)), "`image` is 8x6 with 1 channel; this model takes 8x8 images"),
        (dict(jump_length=0), "`jump_length` must be an integer >= 1, got 0"),
        (dict(jump_n_sample=2.5), "`jump_n_sample` must be an integer >= 1, got 2.5"),
        (dict(num_inference_steps=0), "`num_inference_steps` must be an integer in [1, 40]"),
        (dict(class_labels=7), "label id 7 is out of range"),
    ],
)
def test_bad_input_is_refused_before_any_step(kwargs, message):
    pipe = tiny_pipeline()
    calls = []
    pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    arguments = dict(image=pil_images(2), mask_image=half_mask(), class_labels="Bag", num_inference_steps=10)
    with pytest.raises(ValueError) as error:
        pipe(**{**arguments, **kwargs})
    assert message in str(error.value)
    assert not calls


def test_masks_of_every_kind_read_the_same():
    pipe = tiny_pipeline()
    mask = np.asarray(half_mask()) // 255
    call = dict(
        image=pil_images(2), class_labels="Bag", num_inference_steps=6, jump_n_sample=2, jump_length=2, output_type="np"
    )
    reference = pipe(mask_image=half_mask(), generator=torch.Generator().manual_seed(0), **call).images
    for other in (
        mask.astype(bool),
        torch.from_numpy(mask)[None].float(),
        [half_mask(), half_mask()],
        half_mask().convert("1"),
        half_mask().convert("RGB"),
    ):
        if isinstance(other, np.ndarray):
            other = other[..., None]
        again = pipe(mask_image=other, generator=torch.Generator().manual_seed(0), **call).images
        np.testing.assert_array_equal(again, reference)


INPAINT_WITHOUT_HF_DDPM = """
import sys
import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline

try:
    import hf_ddpm
    raise SystemExit("hf_ddpm should not be importable here")
except ImportError:
    pass
folder = sys.argv[1]
pipe = DiffusionPipeline.from_pretrained(folder, custom_pipeline="pipeline_ddpm_cfg_inpaint", trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
image = torch.from_numpy(np.load(sys.argv[2]))
mask = torch.zeros(1, 1, 8, 8)
mask[..., 4:] = 1
out = pipe(image, mask, "Bag", num_inference_steps=6, jump_length=2, jump_n_sample=2,
           generator=torch.Generator().manual_seed(0), output_type="np").images
np.save(sys.argv[3], out)
print(type(pipe).__name__, type(pipe).__module__)
"""


def save_model_and_image(tmp_path):
    """A text-to-image folder and an image; the script's arguments, and `(pipe, image)`."""
    pipe = tiny_pipeline(cls=DDPMCFGPipeline)
    pipe.save_pretrained(tmp_path / "model")
    image = torch.from_numpy(np.stack([np.asarray(im) for im in pil_images(1)])[:, None] / 255).float()
    np.save(tmp_path / "image.npy", image.numpy())
    return [str(tmp_path / name) for name in ("model", "image.npy", "out.npy")], (pipe, image)


@pytest.mark.slow
@loads_without_hf_ddpm(INPAINT_WITHOUT_HF_DDPM, save_model_and_image)
def test_diffusers_loads_the_inpaint_pipeline_from_the_folder_where_hf_ddpm_is_not_importable(loaded_without_hf_ddpm):
    run = loaded_without_hf_ddpm
    (pipe, image), tmp_path = run.prepared, run.folder
    assert run.returncode == 0, run.stderr[-3000:]
    name, module = run.stdout.split()[-2:]
    assert name == "DDPMCFGInpaintPipeline" and module.startswith("diffusers_modules.")
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1
    expected = DDPMCFGInpaintPipeline.from_pipe(pipe)(
        image,
        mask,
        "Bag",
        num_inference_steps=6,
        jump_length=2,
        jump_n_sample=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    # Another process, whose threads may sum in another order.
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "config", [dict(steps_offset=1), dict(timestep_spacing="trailing"), dict(timestep_spacing="linspace")]
)
def test_repaint_visits_the_samplers_own_timesteps_whatever_their_spacing(config):
    pipe = tiny_pipeline(DDPMScheduler(num_train_timesteps=TRAIN_STEPS, **config))
    seen = []
    pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(int(args[1])))
    out = pipe(
        pil_images(1), half_mask(), "Bag", num_inference_steps=10, jump_length=3, jump_n_sample=2, output_type="np"
    ).images
    reference = DiffusersDDPMScheduler(num_train_timesteps=TRAIN_STEPS, **config)
    reference.set_timesteps(10)
    assert set(seen) <= set(reference.timesteps.tolist()) and np.isfinite(out).all()
