"""hf_ddpm.DDIMScheduler held against diffusers.DDIMScheduler, the oracle, and against eq. (12) of Song et al.
written out wherever diffusers' fixed stride T // N misses the schedule."""

import itertools
import re
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch

import hf_ddpm.schedulers.scheduling_ddim as scheduling_ddim
import hf_ddpm.schedulers.scheduling_ddpm as scheduling_ddpm
from helpers import (
    PREDICTION_TYPES,
    SCHEDULES,
    SPACINGS,
    STEP_COUNTS,
    TOLERANCE,
    gaussian_denoiser,
    public_config,
    tiny_diffusers_unet,
)
from hf_ddpm.schedulers import DDIMScheduler, DDIMSchedulerOutput, DDPMScheduler


def trajectory(scheduler, model, seed=0, with_variance_noise=False, **step_kwargs):
    """A whole sampling loop over `scheduler.timesteps`; every step's timestep, input, noise and outputs."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 4, 4, generator=generator)
    steps = []
    for t in scheduler.timesteps:
        z = torch.randn(x.shape, generator=generator) if with_variance_noise else None
        noise = dict(variance_noise=z) if with_variance_noise else dict(generator=generator)
        output = scheduler.step(model(x, t), t, x, **noise, **step_kwargs)
        steps.append({"t": int(t), "x": x, "z": z, "prev": output.prev_sample, "x0": output.pred_original_sample})
        x = output.prev_sample
    return steps


def diffusers_twin(ours):
    """diffusers' DDIMScheduler with our config; for "sigmoid", which it lacks, the same betas passed as trained_betas
    (taken from diffusers' DDPMScheduler, which has the schedule)."""
    if ours.config.beta_schedule != "sigmoid":
        return diffusers.DDIMScheduler.from_config(ours.config)
    config = public_config(ours.config)  # "_use_default_values" would reset
    betas = diffusers.DDPMScheduler.from_config({**config, "rescale_betas_zero_snr": False}).betas
    return diffusers.DDIMScheduler.from_config({**config, "beta_schedule": "linear", "trained_betas": betas.tolist()})


def diffusers_steps_like_ours(ours, theirs):
    """diffusers steps from t to t - T // N, whatever the spacing; ours too, on the same timesteps."""
    stride = ours.config.num_train_timesteps // ours.num_inference_steps
    same_steps = all(t - stride == ours.previous_timestep(t) for t in ours.timesteps.tolist())
    return ours.timesteps.tolist() == theirs.timesteps.tolist() and same_steps


def ddim_step_by_formula(scheduler, t, prev_t, x, model_output, eta, z):
    """Eq. (12) of Song et al. with sigma_t of eq. (16), written out; alpha below is the paper's alpha (our alpha_bar).
    Float32 scalars, as in diffusers, so that a correct implementation agrees to rounding."""
    alpha = scheduler.alphas_cumprod[t]
    alpha_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
    if scheduler.config.prediction_type == "epsilon":
        eps = model_output
        x0 = (x - (1 - alpha).sqrt() * eps) / alpha.sqrt()
    elif scheduler.config.prediction_type == "sample":
        x0 = model_output
        eps = (x - alpha.sqrt() * x0) / (1 - alpha).sqrt()
    else:
        x0 = alpha.sqrt() * x - (1 - alpha).sqrt() * model_output
        eps = alpha.sqrt() * model_output + (1 - alpha).sqrt() * x
    x0 = x0.clamp(-1, 1)  # clip_sample, on by default
    sigma = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).sqrt()
    direction = (1 - alpha_prev - sigma**2).clamp(min=0).sqrt() * eps
    return alpha_prev.sqrt() * x0 + direction + sigma * z, x0


def assert_loop_matches_reference(ours, eta, use_clipped_model_output=False, **set_timesteps_kwargs):
    """Against diffusers for spaced timesteps; against the formula for custom ones (diffusers' DDIM takes none)."""
    theirs = diffusers_twin(ours)
    ours.set_timesteps(**set_timesteps_kwargs)
    theirs.set_timesteps(ours.num_inference_steps)
    model = gaussian_denoiser(ours.alphas_cumprod, ours.config.prediction_type)
    step_kwargs = dict(eta=eta, use_clipped_model_output=use_clipped_model_output)
    if "timesteps" not in set_timesteps_kwargs and diffusers_steps_like_ours(ours, theirs):
        pairs = zip(trajectory(ours, model, **step_kwargs), trajectory(theirs, model, **step_kwargs))
        for i, (a, b) in enumerate(pairs):
            where = f"step {i} (t={a['t']}) of {dict(ours.config)}, eta={eta}"
            if not torch.isfinite(b["prev"]).all():
                # diffusers takes the square root of 1 - alpha_bar_prev - sigma^2 where rounding has made it negative
                # (eta 1 next to a zero terminal SNR): NaN. Ours clamps it at zero, as the formula above does.
                assert torch.isfinite(a["prev"]).all(), where
                break
            torch.testing.assert_close(a["x0"], b["x0"], **TOLERANCE, msg=lambda m: f"{where}: {m}")
            torch.testing.assert_close(a["prev"], b["prev"], **TOLERANCE, msg=lambda m: f"{where}: {m}")
        return "diffusers"
    assert not use_clipped_model_output and ours.config.clip_sample and not ours.config.thresholding
    timesteps = ours.timesteps.tolist()
    for i, step in enumerate(trajectory(ours, model, with_variance_noise=True, **step_kwargs)):
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        model_output = model(step["x"], step["t"])
        expected = ddim_step_by_formula(ours, step["t"], prev_t, step["x"], model_output, eta, step["z"])
        where = f"step {i} (t={step['t']} -> {prev_t}) of {dict(ours.config)}, eta={eta}"
        torch.testing.assert_close(step["prev"], expected[0], **TOLERANCE, msg=lambda m: f"{where}: {m}")
        torch.testing.assert_close(step["x0"], expected[1], **TOLERANCE, msg=lambda m: f"{where}: {m}")
    return "formula"


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("beta_schedule", SCHEDULES)
def test_sampling_loops_match_diffusers_or_the_formula_at_every_step(beta_schedule, prediction_type, eta):
    references = set()
    for (num_train_timesteps, steps), spacing in itertools.product(STEP_COUNTS, SPACINGS):
        ours = DDIMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type=prediction_type,
            timestep_spacing=spacing,
        )
        references.add(assert_loop_matches_reference(ours, eta, num_inference_steps=steps))
    assert references == {"diffusers"}


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("beta_schedule", SCHEDULES)
def test_zero_terminal_snr_with_v_prediction_matches_diffusers_or_the_formula(beta_schedule, eta):
    for (num_train_timesteps, steps), spacing in itertools.product(STEP_COUNTS, SPACINGS):
        ours = DDIMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type="v_prediction",
            timestep_spacing=spacing,
            rescale_betas_zero_snr=True,
        )
        assert ours.alphas_cumprod[-1] == 0
        assert_loop_matches_reference(ours, eta, num_inference_steps=steps)


@pytest.mark.parametrize(
    "options, use_clipped_model_output",
    [
        (dict(clip_sample=False), False),
        (dict(clip_sample_range=0.5), True),
        (dict(thresholding=True), False),
        (dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5), True),
        (dict(set_alpha_to_one=False), False),
        (dict(steps_offset=1), False),
        (dict(trained_betas=np.linspace(1e-4, 0.02, 1000).tolist()), False),
    ],
)
@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_clipping_thresholding_and_offsets_match_diffusers(beta_schedule, options, use_clipped_model_output):
    for eta in (0.0, 1.0):
        ours = DDIMScheduler(beta_schedule=beta_schedule, **options)
        reference = assert_loop_matches_reference(ours, eta, use_clipped_model_output, num_inference_steps=20)
        assert reference == "diffusers"


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_custom_timesteps_step_as_the_formula_says(eta):
    assert assert_loop_matches_reference(DDIMScheduler(), eta, timesteps=[999, 800, 555, 301, 42, 7]) == "formula"


@pytest.mark.parametrize("spacing", SPACINGS)
def test_each_step_goes_where_diffusers_goes_whatever_the_spacing(spacing):
    ours = DDIMScheduler(timestep_spacing=spacing)
    ours.set_timesteps(30)
    assert [ours.previous_timestep(t) for t in ours.timesteps.tolist()] == [t - 1000 // 30 for t in ours.timesteps]


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_a_step_from_any_training_timestep_is_diffusers_step(prediction_type):
    ours = DDIMScheduler(prediction_type=prediction_type, beta_schedule="squaredcos_cap_v2")
    theirs = diffusers_twin(ours)
    ours.set_timesteps(25)
    theirs.set_timesteps(25)
    model = gaussian_denoiser(ours.alphas_cumprod, prediction_type)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in (537, 3, 999, torch.tensor(121)):  # none of them a scheduled timestep
        assert int(t) not in ours.timesteps.tolist()
        for eta in (0.0, 1.0):
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
            a = ours.step(model(x, t), t, x, eta=eta, variance_noise=noise)
            b = theirs.step(model(x, t), t, x, eta=eta, variance_noise=noise)
            torch.testing.assert_close(a.prev_sample, b.prev_sample, **TOLERANCE)
            torch.testing.assert_close(a.pred_original_sample, b.pred_original_sample, **TOLERANCE)
    assert ours.previous_timestep(537) == 537 - 40


def test_timesteps_diffusers_cannot_step_from_are_refused_clearly():
    ours = DDIMScheduler()
    ours.set_timesteps(10)
    model_output = sample = torch.zeros(1, 1, 2, 2)
    for t in (1000, -1, 500.5):
        with pytest.raises(ValueError, match=r"`timestep` must be an integer in \[0, 999\]"):
            ours.step(model_output, t, sample)
    ours.set_timesteps(timesteps=[900, 500, 100])
    with pytest.raises(ValueError, match="is not one of the custom timesteps"):
        ours.step(model_output, 700, sample)


def test_eta0_is_deterministic():
    ours = DDIMScheduler()
    ours.set_timesteps(20)
    model = gaussian_denoiser(ours.alphas_cumprod, "epsilon")
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    finals = []
    for seed in (1, 2):
        generator, sample = torch.Generator().manual_seed(seed), x
        for t in ours.timesteps:
            sample = ours.step(model(sample, t), t, sample, eta=0.0, generator=generator).prev_sample
        assert torch.equal(generator.get_state(), torch.Generator().manual_seed(seed).get_state())  # never drawn
        finals.append(sample)
    assert torch.equal(finals[0], finals[1])


def test_variance_noise_stands_in_for_the_generator():
    ours = DDIMScheduler()
    ours.set_timesteps(10)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = int(ours.timesteps[2])
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    from_noise = ours.step(x, t, x, eta=0.7, variance_noise=z).prev_sample
    from_generator = ours.step(x, t, x, eta=0.7, generator=torch.Generator().manual_seed(5)).prev_sample
    assert torch.equal(from_noise, from_generator)


def test_eta1_step_is_the_ddpm_posterior_step():
    # At eta = 1, eq. (12) with sigma_t of eq. (16) is the DDPM posterior: mean mu_tilde_t, variance beta_tilde_t.
    ddim, ddpm = DDIMScheduler(clip_sample=False), DDPMScheduler(clip_sample=False)
    ddim.set_timesteps(10)
    ddpm.set_timesteps(10)
    model = gaussian_denoiser(ddim.alphas_cumprod, "epsilon")
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in ddim.timesteps:
        by_ddim = ddim.step(model(x, t), t, x, eta=1.0, generator=torch.Generator().manual_seed(int(t))).prev_sample
        by_ddpm = ddpm.step(model(x, t), t, x, generator=torch.Generator().manual_seed(int(t))).prev_sample
        torch.testing.assert_close(by_ddim, by_ddpm, atol=1e-5, rtol=0)
        x = by_ddpm


def test_default_number_of_steps_is_50_or_every_training_step_if_fewer():
    ours = DDIMScheduler()
    ours.set_timesteps()
    assert ours.num_inference_steps == len(ours.timesteps) == 50
    few = DDIMScheduler(num_train_timesteps=20)
    few.set_timesteps()
    assert few.timesteps.tolist() == list(range(19, -1, -1))


def test_sigmoid_schedule_equals_diffusers_ddpm_sigmoid_and_round_trips_through_ours(tmp_path):
    ours = DDIMScheduler(beta_schedule="sigmoid", beta_end=0.03)
    theirs = diffusers.DDPMScheduler(beta_schedule="sigmoid", beta_end=0.03)
    torch.testing.assert_close(ours.betas, theirs.betas, atol=0, rtol=0)
    ours.save_pretrained(tmp_path)
    back = DDIMScheduler.from_pretrained(tmp_path)
    assert back.config.beta_schedule == "sigmoid" and torch.equal(back.betas, ours.betas)
    # diffusers' DDIMScheduler has no sigmoid schedule, so it cannot load this config
    with pytest.raises(NotImplementedError, match="sigmoid"):
        diffusers.DDIMScheduler.from_pretrained(tmp_path)


def test_cosine_is_an_alias_stored_under_the_diffusers_name():
    ours = DDIMScheduler(beta_schedule="cosine")
    assert ours.config.beta_schedule == "squaredcos_cap_v2"
    torch.testing.assert_close(ours.betas, diffusers.DDIMScheduler.from_config(ours.config).betas, atol=1e-7, rtol=0)


def test_add_noise_velocity_and_snr_match_ddpm_and_diffusers():
    ours, ddpm = DDIMScheduler(beta_schedule="cosine"), DDPMScheduler(beta_schedule="cosine")
    theirs = diffusers.DDIMScheduler.from_config(ours.config)
    x0, noise = torch.randn(2, 8, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    timesteps = torch.randint(0, 1000, (8,), generator=torch.Generator().manual_seed(1))
    for method in ("add_noise", "get_velocity"):
        expected = getattr(theirs, method)(x0, noise, timesteps)
        torch.testing.assert_close(getattr(ours, method)(x0, noise, timesteps), expected, atol=1e-6, rtol=0)
    assert torch.equal(ours.snr(), ddpm.snr()) and torch.all(ours.snr()[1:] < ours.snr()[:-1])


def test_config_keys_and_defaults_equal_diffusers():
    assert public_config(DDIMScheduler().config) == public_config(diffusers.DDIMScheduler().config)


def test_config_round_trips_through_diffusers(tmp_path):
    ours = DDIMScheduler(
        num_train_timesteps=200,
        beta_schedule="cosine",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        set_alpha_to_one=False,
        steps_offset=1,
        clip_sample=False,
        rescale_betas_zero_snr=True,
    )
    ours.save_pretrained(tmp_path / "ours")
    theirs = diffusers.DDIMScheduler.from_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    back = DDIMScheduler.from_pretrained(tmp_path / "theirs")
    assert public_config(back.config) == public_config(theirs.config) == public_config(ours.config)
    assert torch.equal(back.final_alpha_cumprod, ours.final_alpha_cumprod)


def test_swaps_into_a_diffusers_pipeline_with_from_config_and_gives_diffusers_images():
    unet = tiny_diffusers_unet()
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    ddpm_config = pipe.scheduler.config
    images = {}
    for scheduler_class in (diffusers.DDIMScheduler, DDIMScheduler):
        pipe.scheduler = scheduler_class.from_config(ddpm_config)
        generator = torch.Generator().manual_seed(0)
        images[scheduler_class] = pipe(generator=generator, num_inference_steps=10, output_type="np").images
    np.testing.assert_allclose(images[DDIMScheduler], images[diffusers.DDIMScheduler], atol=1e-5)


def test_class_attributes_and_trivial_methods_follow_diffusers():
    ours = DDIMScheduler(num_train_timesteps=200)
    assert ours.order == 1 and ours.init_noise_sigma == 1.0 and len(ours) == 200
    assert {"DDPMScheduler", "EulerDiscreteScheduler"} <= {cls.__name__ for cls in ours.compatibles}
    x = torch.randn(1, 1, 4, 4)
    assert ours.scale_model_input(x, 10) is x
    as_tuple = ours.step(x, 10, x, return_dict=False)
    as_output = ours.step(x, 10, x)
    assert isinstance(as_output, DDIMSchedulerOutput)
    assert torch.equal(as_tuple[0], as_output.prev_sample) and torch.equal(as_tuple[1], as_output.pred_original_sample)


def test_shared_maths_is_identical_in_both_scheduler_files():
    def shared_section(module):
        source = Path(module.__file__).read_text()
        section = re.search(r"# Shared maths\..*?\n(.*?)\n# -{20,}", source, re.DOTALL)
        return section.group(1)

    assert shared_section(scheduling_ddim) == shared_section(scheduling_ddpm)
    assert "def make_betas" in shared_section(scheduling_ddim)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beta_schedule="quadratic"), r"`beta_schedule` must be one of .*sigmoid"),
        (dict(prediction_type="x0"), r"`prediction_type` must be one of .*epsilon"),
        (dict(timestep_spacing="uniform"), r"`timestep_spacing` must be one of .*linspace"),
        (dict(trained_betas=[0.01] * 10), r"`trained_betas` must hold num_train_timesteps=1000"),
    ],
)
def test_bad_configuration_raises_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DDIMScheduler(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(num_inference_steps=0),
            r"`num_inference_steps` must be an integer between 1 and num_train_timesteps=1000",
        ),
        (
            dict(num_inference_steps=1001),
            r"`num_inference_steps` must be an integer between 1 and num_train_timesteps=1000",
        ),
        (dict(timesteps=[5, 10]), r"`timesteps` must be strictly descending integers in \[0, 999\]"),
        (dict(timesteps=[1000, 5]), r"`timesteps` must be strictly descending integers in \[0, 999\]"),
        (dict(num_inference_steps=10, timesteps=[5, 1]), r"either `num_inference_steps` or `timesteps`"),
    ],
)
def test_bad_set_timesteps_raises_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DDIMScheduler().set_timesteps(**kwargs)


def test_default_steps_stay_within_the_training_steps_under_a_steps_offset():
    scheduler = DDIMScheduler(num_train_timesteps=50, steps_offset=1)  # 50 "leading" steps would start at 50
    scheduler.set_timesteps()
    assert scheduler.timesteps.tolist() == list(range(49, 0, -1))


@pytest.mark.parametrize(
    "step_kwargs, message",
    [
        (dict(timestep=1000), r"`timestep` must be an integer in \[0, 999\], got 1000"),
        (dict(timestep=900.5), r"`timestep` must be an integer in \[0, 999\], got 900.5"),  # not rounded
        (dict(timestep=torch.tensor(-0.5)), r"`timestep` must be an integer in \[0, 999\], got -0.5"),
        (dict(eta=-0.1), r"`eta` must be in \[0, 1\]; got -0.1"),
        (dict(eta=1.5), r"`eta` must be in \[0, 1\]; got 1.5"),
        (
            dict(eta=0.5, generator=torch.Generator(), variance_noise=torch.zeros(2, 1, 4, 4)),
            r"either `generator` or `variance_noise`",
        ),
        (dict(model_output=torch.zeros(2, 2, 4, 4)), r"`model_output` must have shape \(2, 1, 4, 4\), that of"),
    ],
)
def test_bad_step_arguments_raise_naming_the_argument(step_kwargs, message):
    ours = DDIMScheduler()
    ours.set_timesteps(10)
    arguments = dict(model_output=torch.zeros(2, 1, 4, 4), timestep=900, sample=torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match=message):
        ours.step(**{**arguments, **step_kwargs})
