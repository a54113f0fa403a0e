"""DDPMCFGPipeline: guidance, schedulers, reproducibility, outputs, the denoising GIF and argument checks."""

import inspect

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMScheduler as DiffusersDDIMScheduler,
    DDPMScheduler as DiffusersDDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

from hf_ddpm.models.unet_2d import DDPMUNet2DModel
from hf_ddpm.pipelines import DDPMCFGPipeline, DDPMCFGPipelineOutput
from hf_ddpm.pipelines.pipeline_ddpm_cfg import default_num_inference_steps, image_grid, variance_preserving
from hf_ddpm.sampling import scheduler_from_name
from hf_ddpm.schedulers.scheduling_ddim import DDIMScheduler
from hf_ddpm.schedulers.scheduling_ddpm import DDPMScheduler

LABELS = {0: "T-shirt", 1: "Sneaker", 2: "Bag"}
TRAIN_STEPS = 20


def tiny_unet(num_class_embeds=3, channels=1):
    torch.manual_seed(0)
    return DDPMUNet2DModel(
        sample_size=8,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(False, True),
        num_class_embeds=num_class_embeds,
        norm_num_groups=4,
    )


def tiny_diffusers_unet(num_class_embeds=4):
    """diffusers' UNet2DModel with a plain class embedding; its last row is the null label."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
        num_class_embeds=num_class_embeds,
    )


def tiny_pipeline(scheduler=None, unet=None, id2label=LABELS):
    pipe = DDPMCFGPipeline(
        unet if unet is not None else tiny_unet(),
        scheduler or DDIMScheduler(num_train_timesteps=TRAIN_STEPS),
        id2label=id2label,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class ForwardLog:
    """Records the batch size and labels of every UNet forward."""

    def __init__(self, unet):
        self.calls = []
        unet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        labels = kwargs.get("class_labels")
        self.calls.append((args[0].shape[0], None if labels is None else labels.tolist()))


def reference_sample(
    unet, scheduler, labels, null_label, guidance_scale, steps, seed, guidance_rescale=0.0, guidance_interval=(0, 1)
):
    """The sampling loop written out with two separate UNet forwards per step, as the CFG paper states it; outside
    `guidance_interval` (fractions of the training timesteps) the conditional output alone, as Kynkäänniemi et al."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    x = randn_tensor((len(labels), 1, 8, 8), generator=generator) * scheduler.init_noise_sigma
    labels = torch.tensor(labels)
    null = torch.full_like(labels, null_label)
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    low, high = guidance_interval
    with torch.no_grad():
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, t)
            cond = unet(x_in, t, class_labels=labels).sample
            guided = cond
            if low <= t / scheduler.config.num_train_timesteps <= high:
                uncond = unet(x_in, t, class_labels=null).sample
                guided = uncond + guidance_scale * (cond - uncond)
            if guidance_rescale:
                ratio = cond.std(dim=(1, 2, 3), keepdim=True) / guided.std(dim=(1, 2, 3), keepdim=True)
                guided = guidance_rescale * guided * ratio + (1 - guidance_rescale) * guided
            x = scheduler.step(guided, t, x, **extra).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DiffusersDDPMScheduler], ids=["ours", "diffusers"])
def test_guidance_leaves_a_learned_variance_conditional(variance_type, scheduler_class):
    # The UNet's second channel is the variance ("learned") or the interpolation v ("learned_range").
    unet = DDPMUNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(False, True),
        num_class_embeds=3,
        norm_num_groups=4,
    )
    with torch.no_grad():  # a variance that depends on the label and stays positive, around 0.05
        unet.conv_out.weight[1:] *= 0.02
        unet.conv_out.bias[1:] = 0.05
    scheduler = scheduler_class(num_train_timesteps=TRAIN_STEPS, variance_type=variance_type)
    pipe = tiny_pipeline(scheduler, unet)
    images = pipe([0, 2], guidance_scale=3.0, generator=torch.Generator().manual_seed(0), output_type="pt").images

    generator = torch.Generator().manual_seed(0)
    scheduler.set_timesteps(TRAIN_STEPS)
    x = randn_tensor((2, 1, 8, 8), generator=generator)
    labels, null = torch.tensor([0, 2]), torch.tensor([3, 3])
    with torch.no_grad():
        for t in scheduler.timesteps:
            cond, uncond = unet(x, t, class_labels=labels).sample, unet(x, t, class_labels=null).sample
            guided_eps = uncond[:, :1] + 3.0 * (cond[:, :1] - uncond[:, :1])
            x = scheduler.step(torch.cat([guided_eps, cond[:, 1:]], dim=1), t, x, generator=generator).prev_sample
    assert torch.isfinite(images).all()
    torch.testing.assert_close(images, (x / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("guidance_rescale", [0.0, 0.7])
def test_cfg_equals_formula(prediction_type, guidance_rescale):
    scheduler = DDIMScheduler(num_train_timesteps=TRAIN_STEPS, prediction_type=prediction_type)
    pipe = tiny_pipeline(scheduler)
    images = pipe(
        [0, 2],
        guidance_scale=3.0,
        guidance_rescale=guidance_rescale,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    expected = reference_sample(pipe.unet, scheduler, [0, 2], 3, 3.0, 4, seed=0, guidance_rescale=guidance_rescale)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    unguided = pipe([0, 2], num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert (images - unguided.images).abs().max() > 1e-3  # guidance changed the images


def test_cfg_works_with_diffusers_unet_and_its_last_embedding_row_as_null_label():
    pipe = tiny_pipeline(unet=tiny_diffusers_unet(num_class_embeds=4))
    assert pipe.config.null_class_id == 3
    images = pipe(
        [1, 2], guidance_scale=2.0, num_inference_steps=3, generator=torch.Generator().manual_seed(1), output_type="pt"
    ).images
    expected = reference_sample(pipe.unet, pipe.scheduler, [1, 2], 3, 2.0, 3, seed=1)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)


def test_guided_step_is_one_batched_forward_of_cond_and_null_labels():
    pipe = tiny_pipeline()
    log = ForwardLog(pipe.unet)
    pipe(["Sneaker", "Bag"], batch_size=2, guidance_scale=3.0, num_inference_steps=3)
    assert log.calls == [(8, [1, 1, 2, 2, 3, 3, 3, 3])] * 3


def test_scale_one_runs_only_the_conditional_batch():
    pipe = tiny_pipeline()
    log = ForwardLog(pipe.unet)
    pipe([2, 0], batch_size=2, num_inference_steps=2)
    assert log.calls == [(4, [2, 2, 0, 0])] * 2


def test_no_labels_on_conditional_model_uses_null_label():
    pipe = tiny_pipeline()
    log = ForwardLog(pipe.unet)
    output = pipe(batch_size=3, num_inference_steps=2)
    assert log.calls == [(3, [3, 3, 3])] * 2
    assert len(output.images) == 3


def test_labels_by_name_are_case_insensitive_and_equal_labels_by_id():
    pipe = tiny_pipeline()
    by_name = pipe(
        ["sneaker", "BAG"],
        guidance_scale=2.0,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    by_id = pipe(
        [1, 2], guidance_scale=2.0, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    np.testing.assert_array_equal(by_name, by_id)


def test_single_label_gives_batch_size_images_of_it():
    pipe = tiny_pipeline()
    log = ForwardLog(pipe.unet)
    output = pipe("Bag", batch_size=3, num_inference_steps=1)
    assert len(output.images) == 3 and log.calls == [(3, [2, 2, 2])]


SCHEDULERS = {
    "ours-ddpm": lambda: DDPMScheduler(num_train_timesteps=TRAIN_STEPS),
    "ours-ddim": lambda: DDIMScheduler(num_train_timesteps=TRAIN_STEPS),
    "diffusers-ddpm": lambda: DiffusersDDPMScheduler(num_train_timesteps=TRAIN_STEPS),
    "diffusers-ddim": lambda: DiffusersDDIMScheduler(num_train_timesteps=TRAIN_STEPS),
    "dpm-solver": lambda: DPMSolverMultistepScheduler(num_train_timesteps=TRAIN_STEPS),
    "euler": lambda: EulerDiscreteScheduler(num_train_timesteps=TRAIN_STEPS),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_any_scheduler_matches_reference_loop(name):
    """Covers init_noise_sigma and scale_model_input (Euler scales both) and generators passed to stochastic steps."""
    pipe = tiny_pipeline(SCHEDULERS[name]())
    images = pipe(
        [0, 1], guidance_scale=2.5, num_inference_steps=5, generator=torch.Generator().manual_seed(3), output_type="pt"
    ).images
    expected = reference_sample(pipe.unet, SCHEDULERS[name](), [0, 1], 3, 2.5, 5, seed=3)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_our_ddim_and_diffusers_ddim_give_the_same_images(spacing):
    config = dict(num_train_timesteps=TRAIN_STEPS, timestep_spacing=spacing, beta_schedule="squaredcos_cap_v2")
    ours = tiny_pipeline(DDIMScheduler(**config))
    theirs = tiny_pipeline(DiffusersDDIMScheduler(**config))
    kwargs = dict(class_labels=[0, 1, 2], guidance_scale=3.0, num_inference_steps=5, output_type="pt")
    ours_images = ours(**kwargs, generator=torch.Generator().manual_seed(0)).images
    theirs_images = theirs(**kwargs, generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(ours_images, theirs_images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scheduler", [DDPMScheduler, DDIMScheduler])
def test_per_image_generators_give_each_image_the_same_result_whatever_the_batch(scheduler):
    pipe = tiny_pipeline(scheduler(num_train_timesteps=TRAIN_STEPS))
    kwargs = dict(
        guidance_scale=2.0, num_inference_steps=4, eta=1.0 if scheduler is DDIMScheduler else 0.0, output_type="pt"
    )
    alone = pipe([1], generator=[torch.Generator().manual_seed(7)], **kwargs).images
    seeds = [3, 7, 11, 5]
    in_batch = pipe([0, 1, 2, 2], generator=[torch.Generator().manual_seed(s) for s in seeds], **kwargs).images
    torch.testing.assert_close(in_batch[1:2], alone, atol=1e-5, rtol=0)
    assert (in_batch[2] - in_batch[3]).abs().max() > 1e-3  # the same label with other seeds differs


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_output_types_agree_and_have_documented_layout(channels, mode):
    pipe = tiny_pipeline(unet=tiny_unet(channels=channels))

    def run(output_type):
        return pipe(
            [0, 1], num_inference_steps=2, output_type=output_type, generator=torch.Generator().manual_seed(0)
        ).images

    pt, np_images, pil = run("pt"), run("np"), run("pil")
    assert pt.shape == (2, channels, 8, 8) and 0 <= pt.min() and pt.max() <= 1
    assert np_images.shape == (2, 8, 8, channels) and np_images.dtype == np.float32
    np.testing.assert_array_equal(np_images, pt.permute(0, 2, 3, 1).numpy())
    assert [image.mode for image in pil] == [mode, mode] and pil[0].size == (8, 8)
    pixels = np.asarray(pil[1]).reshape(8, 8, channels)
    np.testing.assert_array_equal(pixels, (np_images[1] * 255).round().astype(np.uint8))


def test_return_dict_false_gives_a_tuple():
    output = tiny_pipeline()(0, num_inference_steps=1, return_dict=False, output_type="np")
    assert isinstance(output, tuple) and output[0].shape == (1, 8, 8, 1)


@pytest.mark.parametrize(
    "make_scheduler, expected_steps",
    [
        (lambda: DDPMScheduler(num_train_timesteps=TRAIN_STEPS), TRAIN_STEPS),  # DDPM: every training step
        (lambda: DiffusersDDPMScheduler(num_train_timesteps=TRAIN_STEPS), TRAIN_STEPS),
        (lambda: DDIMScheduler(num_train_timesteps=100), 50),  # first order: 50 ...
        (lambda: DiffusersDDIMScheduler(num_train_timesteps=100), 50),
        (lambda: EulerDiscreteScheduler(num_train_timesteps=100), 50),
        (lambda: EulerDiscreteScheduler(num_train_timesteps=TRAIN_STEPS), TRAIN_STEPS),  # ... or the training steps
        (lambda: DPMSolverMultistepScheduler(num_train_timesteps=100), 15),  # second-order multistep solvers: 15
        (lambda: UniPCMultistepScheduler(num_train_timesteps=100), 15),
        # 10 of 10 training steps would repeat timestep 4 in DPM-Solver's "linspace" spacing, and the samples turn NaN.
        (lambda: DPMSolverMultistepScheduler(num_train_timesteps=10), 9),
        (lambda: DPMSolverMultistepScheduler(num_train_timesteps=10, timestep_spacing="leading"), 9),
        (lambda: DPMSolverMultistepScheduler(num_train_timesteps=100, solver_order=1), 50),  # first order: DDIM
        # A DDIM made from a DPM-Solver config (as saved) carries its solver_order along, and is still first order.
        (lambda: scheduler_from_name("ddim", DPMSolverMultistepScheduler(num_train_timesteps=100)), 50),
    ],
)
def test_default_steps_are_the_schedulers_natural_default(make_scheduler, expected_steps):
    scheduler = make_scheduler()
    pipe = tiny_pipeline(scheduler)
    log = ForwardLog(pipe.unet)
    images = pipe(1, output_type="np").images
    assert len(log.calls) == expected_steps == pipe.num_timesteps == default_num_inference_steps(scheduler)
    assert np.isfinite(images).all()


def test_default_steps_of_heun_count_steps_not_its_repeated_timesteps():
    # Heun lists each timestep twice (predictor, corrector): by design, not a spacing that ran out of timesteps.
    pipe = tiny_pipeline(HeunDiscreteScheduler(num_train_timesteps=100))
    images = pipe(1, output_type="np").images
    assert default_num_inference_steps(pipe.scheduler) == 50 == len(torch.unique(pipe.scheduler.timesteps))
    assert np.isfinite(images).all()


def test_callback_sees_every_step_and_can_replace_latents():
    pipe = tiny_pipeline()
    seen = []

    def zero_at_last_step(pipeline, step, timestep, callback_kwargs):
        seen.append((step, int(timestep), tuple(callback_kwargs["latents"].shape)))
        return {"latents": torch.zeros_like(callback_kwargs["latents"])} if step == 3 else callback_kwargs

    images = pipe([0, 1], num_inference_steps=4, callback_on_step_end=zero_at_last_step, output_type="np").images
    assert [(step, shape) for step, _, shape in seen] == [(i, (2, 1, 8, 8)) for i in range(4)]
    assert [t for _, t, _ in seen] == pipe.scheduler.timesteps.tolist()
    np.testing.assert_array_equal(images, np.full((2, 8, 8, 1), 0.5, dtype=np.float32))


def test_denoising_gif_writes_frames_and_final_grid(tmp_path):
    pipe = tiny_pipeline()
    gif_path, grid_path = tmp_path / "denoise.gif", tmp_path / "grid.png"
    output = pipe.denoising_gif(
        gif_path,
        grid_path=grid_path,
        num_frames=5,
        class_labels=["Sneaker", "Bag"],
        batch_size=3,
        guidance_scale=2.0,
        num_inference_steps=10,
        generator=torch.Generator().manual_seed(0),
    )
    assert isinstance(output, DDPMCFGPipelineOutput) and len(output.images) == 6
    expected_grid = image_grid(output.images, rows=2, names=["Sneaker", "Bag"])
    name_column = expected_grid.width - (3 * 64 + 2 * 16)  # 8 px images enlarged 8x, 2 px gaps with them
    with PIL.Image.open(grid_path) as grid:
        np.testing.assert_array_equal(np.asarray(grid.convert("RGB")), np.asarray(expected_grid))
    with PIL.Image.open(gif_path) as gif:
        assert gif.size == expected_grid.size == (name_column + 3 * 64 + 2 * 16, 2 * 64 + 16)
        assert gif.n_frames == 6  # steps 0, 2, 4, 6, 8 and the last one
        for frame in range(gif.n_frames):  # every frame names its rows, as the final grid does
            gif.seek(frame)
            names = np.asarray(gif.convert("L"))[:, :name_column]
            assert (names[:64] < 128).any() and (names[80:] < 128).any()
        assert gif.info["duration"] == 1500
        np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), np.asarray(expected_grid))


def test_denoising_gif_images_equal_a_plain_call(tmp_path):
    pipe = tiny_pipeline()
    kwargs = dict(class_labels=[2], guidance_scale=2.0, num_inference_steps=3, output_type="np")
    plain = pipe(**kwargs, generator=torch.Generator().manual_seed(4)).images
    recorded = pipe.denoising_gif(tmp_path / "d.gif", **kwargs, generator=torch.Generator().manual_seed(4)).images
    np.testing.assert_array_equal(plain, recorded)


def test_gif_frames_of_euler_schedulers_are_on_the_data_scale():
    """Euler keeps x_t = x_0 + sigma * eps (sigma up to ~14): a frame shows it divided by sqrt(sigma^2 + 1)."""
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(6)
    generator = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(2, 1, 8, 8, generator=generator) * 2 - 1, torch.randn(2, 1, 8, 8, generator=generator)
    sigma0, sigma1 = scheduler.sigmas[0], scheduler.sigmas[1]
    # One step with the true noise as the prediction lands exactly on x_0 + sigma_1 * eps.
    x1 = scheduler.step(eps, scheduler.timesteps[0], x0 + sigma0 * eps).prev_sample
    torch.testing.assert_close(x1, x0 + sigma1 * eps)
    torch.testing.assert_close(variance_preserving(scheduler, x1), (x0 + sigma1 * eps) / (sigma1**2 + 1) ** 0.5)
    assert sigma1 > 3  # a frame that would otherwise be clipped to black and white
    ddim = DDIMScheduler(num_train_timesteps=1000)
    assert variance_preserving(ddim, x1) is x1  # DDPM and DDIM samples are variance-preserving already


def test_denoising_gif_takes_a_callback_return_dict_and_tensor_labels(tmp_path):
    pipe = tiny_pipeline()
    seen = []

    def callback(pipe, step, timestep, callback_kwargs):
        seen.append(step)
        return {"latents": callback_kwargs["latents"] * 0} if step == 2 else callback_kwargs

    output = pipe.denoising_gif(
        tmp_path / "c.gif",
        grid_path=tmp_path / "c.png",
        class_labels=torch.tensor([0, 2]),
        batch_size=2,
        num_inference_steps=3,
        callback_on_step_end=callback,
        return_dict=False,
        output_type="np",
    )
    assert seen == [0, 1, 2] and isinstance(output, tuple)
    np.testing.assert_array_equal(output[0], np.full((4, 8, 8, 1), 0.5, np.float32))  # the callback's last word
    with PIL.Image.open(tmp_path / "c.png") as grid:
        # One row per label of the tensor, named by its class.
        expected = image_grid(pipe.numpy_to_pil(output[0]), rows=2, names=["T-shirt", "Bag"])
        np.testing.assert_array_equal(np.asarray(grid.convert("RGB")), np.asarray(expected))


@pytest.mark.parametrize(
    "class_labels, rows, names",
    [
        (["Bag", 0], 2, ["Bag", "T-shirt"]),  # a list: one row per label, named by its class
        (torch.tensor([2, 1]), 2, ["Bag", "Sneaker"]),
        ([1], 1, ["Sneaker"]),
        (1, 2, None),  # one label, not a list: the most square layout, unnamed
        (None, 2, None),
    ],
)
def test_sample_grid_has_a_row_per_label_named_by_its_class(class_labels, rows, names):
    pipe = tiny_pipeline()
    images = [PIL.Image.new("L", (8, 8), 40 * i) for i in range(4)]
    grid = pipe.sample_grid(images, class_labels)
    np.testing.assert_array_equal(np.asarray(grid), np.asarray(image_grid(images, rows, names)))


def test_sample_grid_names_classes_without_a_name_by_their_id_and_an_unconditional_grid_not_at_all():
    images = [PIL.Image.new("L", (8, 8), 40 * i) for i in range(6)]
    unnamed = tiny_pipeline(id2label={0: "T-shirt"})
    np.testing.assert_array_equal(
        np.asarray(unnamed.sample_grid(images, [0, 2])), np.asarray(image_grid(images, 2, ["T-shirt", "2"]))
    )
    unconditional = tiny_pipeline(unet=tiny_unet(num_class_embeds=None), id2label=None)
    grid = unconditional.sample_grid(images)
    assert grid.size == (3 * 64 + 2 * 16, 2 * 64 + 16)  # 2 rows of 3, no name column


def test_id2label_keys_from_json_become_ints():
    pipe = tiny_pipeline(id2label={"0": "T-shirt", "2": "Bag"})
    assert pipe.config.id2label == {0: "T-shirt", 2: "Bag"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(id2label={3: "null"}), "id2label"),
        (dict(id2label={-1: "x"}), "id2label"),
        (dict(null_class_id=9), "null_class_id"),
        (dict(null_class_id=0), "null_class_id"),
    ],
)
def test_bad_construction_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DDPMCFGPipeline(tiny_unet(), DDIMScheduler(num_train_timesteps=TRAIN_STEPS), **kwargs)


def test_a_diffusers_unet_keeps_its_null_label_inside_its_embedding_table():
    scheduler = DDIMScheduler(num_train_timesteps=TRAIN_STEPS)
    assert DDPMCFGPipeline(tiny_diffusers_unet(num_class_embeds=4), scheduler).config.null_class_id == 3
    # num_class_embeds=4 has rows 0..3: a null label at 4 would index past the table.
    with pytest.raises(ValueError, match=r"`null_class_id` must be an embedding row .* in \[1, 3\].*got 4"):
        DDPMCFGPipeline(tiny_diffusers_unet(num_class_embeds=4), scheduler, null_class_id=4)
    for embed_type in ("timestep", "identity"):
        unet = tiny_diffusers_unet(num_class_embeds=4)
        unet.register_to_config(class_embed_type=embed_type)
        with pytest.raises(ValueError, match=f"class_embed_type is '{embed_type}'"):
            DDPMCFGPipeline(unet, scheduler)


def test_unconditional_model_samples_batch_size_images_and_rejects_labels():
    pipe = tiny_pipeline(unet=tiny_unet(num_class_embeds=None), id2label=None)
    assert pipe.config.null_class_id is None
    log = ForwardLog(pipe.unet)
    assert len(pipe(batch_size=2, num_inference_steps=2).images) == 2
    assert log.calls == [(2, None)] * 2
    with pytest.raises(ValueError, match="class_labels.*unconditional"):
        pipe(class_labels=0, num_inference_steps=2)
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe(guidance_scale=3.0, num_inference_steps=2)
    assert len(log.calls) == 2  # the rejected calls did no work


BAD_CALLS = [
    (dict(class_labels=3), "class_labels.*out of range.*0..2"),  # the null label is not a class
    (dict(class_labels=[0, -1]), "class_labels.*out of range"),
    (dict(class_labels=["Bag", "Hat"]), "class_labels.*'Hat'.*'T-shirt', 'Sneaker', 'Bag'"),
    (dict(class_labels=[]), "class_labels"),
    (dict(class_labels=[1.5]), "class_labels"),
    (dict(class_labels=0, guidance_scale=-0.5), "guidance_scale.*>= 0"),
    (dict(class_labels=0, num_inference_steps=0), r"num_inference_steps.*\[1, 20\]"),
    (dict(class_labels=0, num_inference_steps=TRAIN_STEPS + 1), r"num_inference_steps.*\[1, 20\]"),
    (dict(class_labels=0, output_type="latent"), "output_type.*'pil', 'np' or 'pt'"),
    (dict(class_labels=[0, 1], batch_size=2, generator=[torch.Generator()] * 3), "generator.*3.*4 images"),
    (dict(class_labels=0, batch_size=0), "batch_size.*>= 1"),
    (dict(class_labels=0, guidance_scale=3.0, guidance_rescale=1.5), r"guidance_rescale.*\[0, 1\]"),
    (dict(class_labels=0, eta=-1.0), r"`eta` must be in \[0, 1\], got -1.0"),
    (dict(class_labels=0, eta=1.5), r"`eta` must be in \[0, 1\], got 1.5"),
    (dict(class_labels=0, generator=0), "`generator` must be a torch.Generator or a list of them, got 0"),
    (dict(class_labels=0, callback_on_step_end=5), "`callback_on_step_end` must be callable, got 5"),
    (dict(class_labels=0, guidance_scale=float("nan")), "`guidance_scale` must be a finite number, got nan"),
    (dict(class_labels=0, guidance_scale=float("inf")), "`guidance_scale` must be a finite number, got inf"),
    (dict(class_labels=0, guidance_scale=True), "`guidance_scale` must be a finite number, got True"),
    (dict(class_labels=0, eta="0.5"), "`eta` must be a finite number, got '0.5'"),
    (dict(class_labels=0, guidance_scale=2.0, guidance_rescale=None), "`guidance_rescale` must be a finite number"),
    (dict(class_labels=0, callback_on_step_end_tensor_inputs=["noise"]), "callback_on_step_end_tensor_inputs"),
]


@pytest.mark.parametrize("kwargs, message", BAD_CALLS)
def test_bad_arguments_raise_before_any_work(kwargs, message):
    pipe = tiny_pipeline()
    log = ForwardLog(pipe.unet)
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)
    assert log.calls == []


def test_steps_that_would_repeat_a_timestep_raise_before_any_work():
    pipe = tiny_pipeline(DPMSolverMultistepScheduler(num_train_timesteps=10))
    log = ForwardLog(pipe.unet)
    message = r"`num_inference_steps`=10 does not fit DPMSolverMultistepScheduler's 'linspace' spacing of 10 training"
    with pytest.raises(ValueError, match=message + r" steps \(repeats a timestep.*the default here is 9"):
        pipe(class_labels=0, num_inference_steps=10)
    assert log.calls == []


@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DDIMScheduler, DiffusersDDPMScheduler])
def test_the_default_steps_start_within_the_training_steps_under_a_steps_offset(scheduler_class):
    # "leading" spacing shifted by steps_offset=1 (as in configs converted from Stable Diffusion's): every one of 20
    # training steps would start at timestep 20, which does not exist.
    scheduler = scheduler_class(num_train_timesteps=20, steps_offset=1, timestep_spacing="leading")
    pipe = tiny_pipeline(scheduler)
    pipe(class_labels=0, guidance_scale=2.0, output_type="pt")
    assert pipe.num_timesteps == 19 and int(pipe.scheduler.timesteps[0]) == 19
    with pytest.raises(
        ValueError, match=r"`num_inference_steps`=20 does not fit .*timestep 20 past .*default here is 19"
    ):
        pipe(class_labels=0, num_inference_steps=20)


def test_a_callback_that_returns_no_dict_is_named_at_its_first_step():
    pipe = tiny_pipeline()
    log = ForwardLog(pipe.unet)
    with pytest.raises(ValueError, match="`callback_on_step_end` must return a dict .* got NoneType"):
        pipe(class_labels=0, num_inference_steps=3, callback_on_step_end=lambda pipe, step, t, kwargs: None)
    assert len(log.calls) == 1


def test_eta_on_a_scheduler_without_eta_raises():
    pipe = tiny_pipeline(DPMSolverMultistepScheduler(num_train_timesteps=TRAIN_STEPS))
    with pytest.raises(ValueError, match="eta.*DPMSolverMultistepScheduler"):
        pipe(0, eta=0.5, num_inference_steps=2)


def test_label_names_match_exactly_first_then_case_insensitively_when_unique():
    pipe = tiny_pipeline(id2label={0: "shirt", 1: "Shirt", 2: "Bag"})
    log = ForwardLog(pipe.unet)
    pipe(["Shirt", "shirt", "BAG"], num_inference_steps=1)
    assert log.calls[0] == (3, [1, 0, 2])
    with pytest.raises(ValueError, match="'SHIRT' is ambiguous: it matches 'shirt', 'Shirt'"):
        pipe("SHIRT", num_inference_steps=1)


def test_labels_as_a_numpy_array_work_like_a_list():
    pipe = tiny_pipeline()
    log = ForwardLog(pipe.unet)
    pipe(np.array([2, 0]), num_inference_steps=1)
    pipe([2, 0], num_inference_steps=1)
    assert log.calls[0] == log.calls[1] == (2, [2, 0])


# ----- the stages of a call, which an image-to-image or inpainting pipeline reuses -----


@pytest.mark.parametrize("strength, expected", [(1.0, 10), (0.3, 3), (0.55, 5), (0.0, 0)])
def test_get_timesteps_keeps_the_last_strength_of_the_schedule(strength, expected):
    pipe = tiny_pipeline()
    timesteps, count = pipe.get_timesteps(10, strength=strength)
    assert count == expected and len(timesteps) == expected
    assert timesteps.tolist() == pipe.scheduler.timesteps.tolist()[10 - expected :]


def test_get_timesteps_starts_a_multistep_solver_where_the_kept_steps_begin():
    """diffusers' solvers find their place by `begin_index`: a partial schedule steps as the tail of the whole one."""
    pipe = tiny_pipeline(scheduler=DPMSolverMultistepScheduler(num_train_timesteps=TRAIN_STEPS))
    timesteps, _ = pipe.get_timesteps(8, strength=0.5)
    assert pipe.scheduler.begin_index == 4 and timesteps.tolist() == pipe.scheduler.timesteps.tolist()[4:]


def test_prepare_latents_is_scaled_noise_or_the_image_noised_to_the_timestep():
    pipe = tiny_pipeline()
    pipe.get_timesteps(10)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    pure = pipe.prepare_latents(2, torch.Generator().manual_seed(3), torch.device("cpu"))
    torch.testing.assert_close(pure, noise * pipe.scheduler.init_noise_sigma)
    image = torch.linspace(-1, 1, 128).reshape(2, 1, 8, 8)
    t = pipe.scheduler.timesteps[6]
    noised = pipe.prepare_latents(2, torch.Generator().manual_seed(3), torch.device("cpu"), image=image, timestep=t)
    alpha_bar = pipe.scheduler.alphas_cumprod[int(t)]
    torch.testing.assert_close(noised, alpha_bar.sqrt() * image + (1 - alpha_bar).sqrt() * noise)


def test_a_call_is_its_stages_run_in_order():
    """`__call__` = labels, timesteps, latents, denoise, postprocess: running the stages by hand gives its images."""
    pipe = tiny_pipeline()
    called = pipe(
        [0, 2], guidance_scale=2.0, num_inference_steps=4, generator=torch.Generator().manual_seed(1), output_type="pt"
    ).images
    labels = pipe.prepare_class_labels([0, 2], 1, guided=True, device=torch.device("cpu"))
    timesteps, _ = pipe.get_timesteps(4)
    latents = pipe.prepare_latents(2, torch.Generator().manual_seed(1), torch.device("cpu"))
    latents = pipe.denoise(latents, timesteps, labels, [True] * 4, 2.0, 0.0, {})
    torch.testing.assert_close(pipe.postprocess(latents, "pt"), called)
