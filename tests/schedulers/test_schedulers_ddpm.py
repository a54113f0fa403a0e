"""hf_ddpm.DDPMScheduler held against diffusers.DDPMScheduler, the oracle, and against the paper where they differ."""

import itertools

import diffusers
import numpy as np
import pytest
import torch

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
from hf_ddpm.schedulers import DDIMScheduler, DDPMScheduler, DDPMSchedulerOutput
from hf_ddpm.schedulers.scheduling_ddpm import spaced_timesteps

VARIANCE_TYPES = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]


def trajectory(scheduler, model, seed=0):
    """A whole sampling loop over `scheduler.timesteps`; every step's timestep, input and outputs."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 4, 4, generator=generator)
    steps = []
    for t in scheduler.timesteps:
        output = scheduler.step(model(x, t), t, x, generator=generator)
        steps.append({"t": int(t), "x": x, "prev": output.prev_sample, "x0": output.pred_original_sample})
        x = output.prev_sample
    return steps


def diffusers_twin(ours):
    # diffusers' "fixed_large_log" returns NaN (it takes the square root of log beta_t); its "fixed_large" gives the
    # sigma_t = sqrt(beta_t) that ours computes through the log.
    if ours.config.variance_type == "fixed_large_log":
        return diffusers.DDPMScheduler.from_config({**ours.config, "variance_type": "fixed_large"})
    return diffusers.DDPMScheduler.from_config(ours.config)


def assert_loop_matches_diffusers(ours, **set_timesteps_kwargs):
    theirs = diffusers_twin(ours)
    ours.set_timesteps(**set_timesteps_kwargs)
    theirs.set_timesteps(**set_timesteps_kwargs)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    learned = ours.config.variance_type.startswith("learned")
    model = gaussian_denoiser(theirs.alphas_cumprod, ours.config.prediction_type, learned)
    our_steps, their_steps = trajectory(ours, model), trajectory(theirs, model)
    for i, (a, b) in enumerate(zip(our_steps, their_steps)):
        where = f"step {i} (t={a['t']}) of {dict(ours.config)}"
        torch.testing.assert_close(a["x0"], b["x0"], **TOLERANCE, msg=lambda m: f"{where}: {m}")
        small_variance = ours.config.variance_type in ("fixed_small", "fixed_small_log")
        if i == len(our_steps) - 1 and a["t"] > 0 and not small_variance:
            # The step into x_0 adds no noise (Algorithm 2: z = 0 at the end); diffusers adds some when the schedule
            # ends above t = 0. With alpha_bar_prev = 1 the posterior mean is x_0 itself.
            assert torch.equal(a["prev"], a["x0"]), where
        else:
            torch.testing.assert_close(a["prev"], b["prev"], **TOLERANCE, msg=lambda m: f"{where}: {m}")


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("beta_schedule", SCHEDULES)
def test_sampling_loops_match_diffusers_at_every_step(beta_schedule, prediction_type, variance_type):
    for (num_train_timesteps, steps), spacing in itertools.product(STEP_COUNTS, SPACINGS):
        ours = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type=prediction_type,
            variance_type=variance_type,
            timestep_spacing=spacing,
        )
        assert_loop_matches_diffusers(ours, num_inference_steps=steps)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("beta_schedule", SCHEDULES)
def test_zero_terminal_snr_with_v_prediction_matches_diffusers(beta_schedule, variance_type):
    for (num_train_timesteps, steps), spacing in itertools.product(STEP_COUNTS, SPACINGS):
        ours = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type="v_prediction",
            variance_type=variance_type,
            timestep_spacing=spacing,
            rescale_betas_zero_snr=True,
        )
        assert ours.alphas_cumprod[-1] == 0
        assert_loop_matches_diffusers(ours, num_inference_steps=steps)


@pytest.mark.parametrize(
    "options",
    [
        dict(clip_sample=False),
        dict(clip_sample_range=0.5),
        dict(thresholding=True),
        dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5),
        dict(steps_offset=1),
        dict(trained_betas=np.linspace(1e-4, 0.02, 1000).tolist()),
    ],
)
@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_clipping_thresholding_offset_and_trained_betas_match_diffusers(beta_schedule, options):
    for variance_type in ["fixed_small", "fixed_large"]:
        ours = DDPMScheduler(beta_schedule=beta_schedule, variance_type=variance_type, **options)
        assert_loop_matches_diffusers(ours, num_inference_steps=20)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_every_training_step_loop_matches_diffusers(beta_schedule, variance_type):
    ours = DDPMScheduler(beta_schedule=beta_schedule, variance_type=variance_type)
    assert_loop_matches_diffusers(ours, num_inference_steps=1000)


def test_set_timesteps_without_a_count_uses_every_training_step():
    ours = DDPMScheduler(num_train_timesteps=200)
    before = ours.timesteps.tolist()
    ours.set_timesteps()
    assert before == ours.timesteps.tolist() == list(range(199, -1, -1))
    assert ours.num_inference_steps == 200


def test_step_works_before_set_timesteps_and_steps_one_training_step():
    ours = DDPMScheduler(num_train_timesteps=200)
    assert ours.previous_timestep(150) == 149 and ours.previous_timestep(0) == -1
    theirs = diffusers.DDPMScheduler(num_train_timesteps=200)
    model = gaussian_denoiser(theirs.alphas_cumprod, "epsilon")
    final_ours, final_theirs = trajectory(ours, model)[-1], trajectory(theirs, model)[-1]
    torch.testing.assert_close(final_ours["prev"], final_theirs["prev"], **TOLERANCE)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_custom_timesteps_match_diffusers(variance_type):
    ours = DDPMScheduler(variance_type=variance_type)
    assert_loop_matches_diffusers(ours, timesteps=[999, 800, 555, 301, 42, 7])
    assert ours.num_inference_steps == 6


@pytest.mark.parametrize("spacing", SPACINGS)
def test_previous_timestep_is_the_next_scheduled_timestep(spacing):
    ours = DDPMScheduler(timestep_spacing=spacing)
    ours.set_timesteps(30)
    timesteps = ours.timesteps.tolist()
    assert [ours.previous_timestep(t) for t in timesteps] == timesteps[1:] + [-1]
    assert ours.previous_timestep(torch.tensor(timesteps[3])) == timesteps[4]


def test_trailing_spacing_gives_exactly_the_requested_number_of_steps():
    # diffusers' np.arange over a float stride yields one extra timestep, -1, for some counts (61 of 1000 among them)
    config = DDPMScheduler(timestep_spacing="trailing").config
    for steps in range(1, 1001):
        timesteps = spaced_timesteps(config, steps)
        assert len(timesteps) == steps and timesteps[0] == 999 and timesteps[-1] >= 0
        assert np.all(np.diff(timesteps) < 0)


def test_last_step_into_x0_adds_no_noise_for_any_variance_type():
    for variance_type in VARIANCE_TYPES:
        ours = DDPMScheduler(variance_type=variance_type, timestep_spacing="trailing")
        ours.set_timesteps(10)
        t = int(ours.timesteps[-1])
        assert t > 0 and ours.previous_timestep(t) == -1
        x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        model_output = gaussian_denoiser(ours.alphas_cumprod, "epsilon", variance_type.startswith("learned"))(x, t)
        outputs = [ours.step(model_output, t, x, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
        assert torch.equal(outputs[0].prev_sample, outputs[1].prev_sample)
        assert torch.equal(outputs[0].prev_sample, outputs[0].pred_original_sample)


@pytest.mark.parametrize("log_type", ["fixed_small_log", "fixed_large_log"])
def test_log_variance_types_give_the_sigma_of_their_plain_twins(log_type):
    plain_type = log_type.removesuffix("_log")
    steps = {}
    for variance_type in (log_type, plain_type):
        scheduler = DDPMScheduler(variance_type=variance_type)
        scheduler.set_timesteps(25)
        steps[variance_type] = trajectory(scheduler, gaussian_denoiser(scheduler.alphas_cumprod, "epsilon"))
    for a, b in zip(steps[log_type], steps[plain_type]):
        torch.testing.assert_close(a["prev"], b["prev"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("beta_schedule", SCHEDULES)
def test_betas_equal_diffusers(beta_schedule):
    ours = DDPMScheduler(beta_schedule=beta_schedule)
    theirs = diffusers.DDPMScheduler.from_config(ours.config)
    torch.testing.assert_close(ours.betas, theirs.betas, atol=1e-7, rtol=0)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, atol=1e-7, rtol=0)


def test_cosine_is_an_alias_stored_under_the_diffusers_name():
    ours = DDPMScheduler(beta_schedule="cosine")
    assert ours.config.beta_schedule == "squaredcos_cap_v2"
    assert torch.equal(ours.betas, DDPMScheduler(beta_schedule="squaredcos_cap_v2").betas)
    # Nichol & Dhariwal: alpha_bar_t = f(t) / f(0) with f(t) = cos((t/T + s) / (1 + s) * pi / 2)^2
    t = np.arange(1, 1001) / 1000
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(ours.alphas_cumprod[:900].numpy(), (f(t) / f(0))[:900], atol=1e-5)


# In float16 diffusers takes the square roots in float16, ours in float32: the terms, of size up to 4, may differ by a
# float16 step (0.002 to 0.004).
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-6), (torch.float16, 4e-3)])
@pytest.mark.parametrize("zero_snr", [False, True])
def test_add_noise_and_velocity_match_diffusers(dtype, tolerance, zero_snr):
    ours = DDPMScheduler(beta_schedule="cosine", rescale_betas_zero_snr=zero_snr)
    theirs = diffusers.DDPMScheduler.from_config(ours.config)
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 8, 1, 6, 6, generator=generator).to(dtype)
    timesteps = torch.randint(0, 1000, (8,), generator=generator)
    for method in ("add_noise", "get_velocity"):
        expected = getattr(theirs, method)(x0, noise, timesteps)
        actual = getattr(ours, method)(x0, noise, timesteps)
        assert actual.dtype == dtype
        torch.testing.assert_close(actual, expected, atol=tolerance, rtol=0)


def test_add_noise_takes_a_single_timestep_for_the_whole_batch():
    ours = DDPMScheduler()
    x0, noise = torch.randn(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    expected = ours.add_noise(x0, noise, torch.full((3,), 500))
    assert torch.equal(ours.add_noise(x0, noise, 500), expected)
    assert torch.equal(ours.add_noise(x0, noise, torch.tensor(500)), expected)


def test_velocity_is_the_v_that_v_prediction_inverts():
    ours = DDPMScheduler(prediction_type="v_prediction", clip_sample=False)
    x0, noise = torch.randn(2, 4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([999, 500, 10, 0])
    x_t, v = ours.add_noise(x0, noise, timesteps), ours.get_velocity(x0, noise, timesteps)
    for i, t in enumerate(timesteps):
        recovered = ours.step(v[i : i + 1], t, x_t[i : i + 1]).pred_original_sample
        torch.testing.assert_close(recovered, x0[i : i + 1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("beta_schedule", SCHEDULES)
def test_snr_falls_with_t_and_is_alpha_bar_over_one_minus_alpha_bar(beta_schedule):
    ours = DDPMScheduler(beta_schedule=beta_schedule)
    snr = ours.snr()
    assert snr.shape == (1000,) and torch.all(snr[1:] < snr[:-1])
    torch.testing.assert_close(snr, ours.alphas_cumprod / (1 - ours.alphas_cumprod))
    assert torch.equal(ours.snr([999, 0]), snr[[999, 0]])
    assert torch.equal(ours.snr(torch.tensor(10)), snr[10])
    assert DDPMScheduler(beta_schedule=beta_schedule, rescale_betas_zero_snr=True).snr(999) == 0


def test_config_keys_and_defaults_equal_diffusers():
    assert public_config(DDPMScheduler().config) == public_config(diffusers.DDPMScheduler().config)


def test_config_round_trips_through_diffusers(tmp_path):
    ours = DDPMScheduler(
        num_train_timesteps=200,
        beta_schedule="cosine",
        variance_type="fixed_large",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        steps_offset=1,
        thresholding=True,
        rescale_betas_zero_snr=True,
    )
    ours.save_pretrained(tmp_path / "ours")
    theirs = diffusers.DDPMScheduler.from_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    back = DDPMScheduler.from_pretrained(tmp_path / "theirs")
    assert public_config(back.config) == public_config(theirs.config) == public_config(ours.config)
    assert torch.equal(back.alphas_cumprod, ours.alphas_cumprod)


def test_swaps_into_a_diffusers_pipeline_with_from_config():
    unet = tiny_diffusers_unet()
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=8, output_type="np").images
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    assert isinstance(pipe.scheduler, DDPMScheduler)
    images = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=8, output_type="np").images
    np.testing.assert_allclose(images, expected, atol=1e-5)


def test_class_attributes_and_trivial_methods_follow_diffusers():
    ours = DDPMScheduler(num_train_timesteps=200)
    assert ours.order == 1 and ours.init_noise_sigma == 1.0 and len(ours) == 200
    compatible = {cls.__name__ for cls in ours.compatibles}
    assert {"DDIMScheduler", "DDPMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler"} <= compatible
    x = torch.randn(1, 1, 4, 4)
    assert ours.scale_model_input(x, 10) is x
    as_tuple = ours.step(x, 10, x, generator=torch.Generator().manual_seed(0), return_dict=False)
    as_output = ours.step(x, 10, x, generator=torch.Generator().manual_seed(0))
    assert isinstance(as_output, DDPMSchedulerOutput)
    assert torch.equal(as_tuple[0], as_output.prev_sample) and torch.equal(as_tuple[1], as_output.pred_original_sample)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(beta_schedule="quadratic"), r"`beta_schedule` must be one of .*squaredcos_cap_v2"),
        (dict(prediction_type="x0"), r"`prediction_type` must be one of .*v_prediction"),
        (dict(variance_type="fixed"), r"`variance_type` must be one of .*fixed_large_log"),
        (dict(timestep_spacing="uniform"), r"`timestep_spacing` must be one of .*trailing"),
        (dict(trained_betas=[0.01] * 10), r"`trained_betas` must hold num_train_timesteps=1000"),
    ],
)
def test_bad_configuration_raises_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DDPMScheduler(**kwargs)


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
        (dict(timesteps=[5, -1]), r"`timesteps` must be strictly descending"),
        (dict(timesteps=[]), r"`timesteps` must be strictly descending"),
        (dict(num_inference_steps=10, timesteps=[5, 1]), r"either `num_inference_steps` or `timesteps`"),
    ],
)
def test_bad_set_timesteps_raises_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DDPMScheduler().set_timesteps(**kwargs)


def test_steps_offset_past_the_last_training_step_raises_and_the_default_steps_stay_within():
    with pytest.raises(ValueError, match=r"`steps_offset`=1 pushes timestep 1000 past 999"):
        DDPMScheduler(steps_offset=1).set_timesteps(1000)
    scheduler = DDPMScheduler(steps_offset=1)
    scheduler.set_timesteps()  # every training step would start at 1000: one fewer, from 999 down to 1
    assert scheduler.timesteps.tolist() == list(range(999, 0, -1))


def test_step_at_a_timestep_outside_the_schedule_raises():
    ours = DDPMScheduler()
    ours.set_timesteps(10)
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"`timestep` 5 is not in this scheduler's timesteps \(10 steps from 900"):
        ours.step(x, 5, x)
    with pytest.raises(ValueError, match=r"`timestep` 899.6 is not in"):  # not rounded to a neighbour
        ours.step(x, 899.6, x)
    as_int, *others = (
        ours.step(x, t, x, generator=torch.Generator().manual_seed(0)).prev_sample
        for t in (900, 900.0, torch.tensor(900), np.array(900), np.int64(900))
    )
    assert all(torch.equal(as_int, other) for other in others)


@pytest.mark.parametrize("variance_type, output_channels", [("fixed_small", 2), ("learned", 1), ("learned_range", 3)])
def test_step_with_a_model_output_of_the_wrong_shape_raises(variance_type, output_channels):
    ours = DDPMScheduler(variance_type=variance_type)
    sample = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"`model_output` must have shape \(2, [12], 4, 4\)"):
        ours.step(torch.zeros(2, output_channels, 4, 4), 999, sample)


@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("timesteps", [-1, 1000, [3, -2], 2.5])
def test_timesteps_outside_training_are_refused_not_wrapped(scheduler_class, timesteps):
    scheduler = scheduler_class(num_train_timesteps=1000)
    x0 = torch.zeros(len(timesteps) if isinstance(timesteps, list) else 1, 1, 2, 2)
    for call in (scheduler.add_noise, scheduler.get_velocity):
        with pytest.raises(ValueError, match=r"`timesteps` must be integers in \[0, 999\]"):
            call(x0, torch.zeros_like(x0), torch.tensor(timesteps))
    with pytest.raises(ValueError, match=r"`timesteps` must be integers in \[0, 999\]"):
        scheduler.snr(timesteps)


@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize(
    "config, message",
    [
        (dict(num_train_timesteps=0), "`num_train_timesteps` must be an integer >= 1; got 0"),
        (dict(num_train_timesteps=10.5), "`num_train_timesteps` must be an integer >= 1; got 10.5"),
        (dict(beta_end=1.5), r"Every beta must lie in \(0, 1\); `beta_start`=0.0001, `beta_end`=1.5"),
        (dict(beta_start=-0.1), r"Every beta must lie in \(0, 1\)"),
        (dict(beta_start=0.0), r"Every beta must lie in \(0, 1\); `beta_start`=0.0"),  # x_0 would come out as 0 / 0
        (dict(num_train_timesteps=2, trained_betas=[0.0, 0.5]), r"`trained_betas` gives betas in \[0, 0.5\]"),
        (dict(num_train_timesteps=2, trained_betas=[0.5, 1.2]), r"`trained_betas` gives betas in \[0.5, 1.2\]"),
        (dict(clip_sample_range=0.0), "`clip_sample_range` must be a positive number; got 0.0"),
        (dict(steps_offset=-1), "`steps_offset` must be an integer >= 0; got -1"),
        (dict(thresholding=True, dynamic_thresholding_ratio=2.0), r"`dynamic_thresholding_ratio` must be in \(0, 1\]"),
        (dict(sample_max_value=0.0), "`sample_max_value` must be a positive number; got 0.0"),
        (dict(clip_sample_range=None), "`clip_sample_range` must be a positive number; got None"),
        (dict(sample_max_value="1"), "`sample_max_value` must be a positive number; got '1'"),
        (dict(dynamic_thresholding_ratio=None), r"`dynamic_thresholding_ratio` must be in \(0, 1\]; got None"),
    ],
)
def test_configs_that_give_no_valid_noise_schedule_are_refused(scheduler_class, config, message):
    with pytest.raises(ValueError, match=message):
        scheduler_class(**config)


@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("beta_schedule", ["squaredcos_cap_v2", "cosine"])
def test_the_cosine_schedule_ignores_beta_start_and_end(scheduler_class, beta_schedule):
    # squaredcos_cap_v2 has no use for the linear range: an unused pair in any order is no error (as in diffusers).
    scheduler_class(beta_schedule=beta_schedule, beta_start=0.02, beta_end=0.0001)


@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_inference_steps=2.5), r"`num_inference_steps` must be an integer between 1 and .*; got 2.5"),
        (dict(num_inference_steps=True), r"`num_inference_steps` must be an integer between 1 and .*; got True"),
        (dict(timesteps=[999.5, 500.2]), r"`timesteps` must be strictly descending integers .*; got \[999.5, 500.2"),
    ],
)
def test_a_step_count_or_timesteps_that_are_not_integers_are_refused(scheduler_class, kwargs, message):
    with pytest.raises(ValueError, match=message):
        scheduler_class().set_timesteps(**kwargs)


def test_integral_float_timesteps_index_like_integers():
    scheduler = DDPMScheduler()
    x0, noise = torch.ones(2, 1, 2, 2), torch.randn(2, 1, 2, 2)
    torch.testing.assert_close(
        scheduler.add_noise(x0, noise, torch.tensor([10.0, 999.0])),
        scheduler.add_noise(x0, noise, torch.tensor([10, 999])),
    )


def test_previous_timestep_returns_what_diffusers_returns_and_of_its_type():
    ours, theirs = DDPMScheduler(num_train_timesteps=100), diffusers.DDPMScheduler(num_train_timesteps=100)
    for t in (57, torch.tensor(57)):  # before set_timesteps: t - 1, of the type given
        mine, reference = ours.previous_timestep(t), theirs.previous_timestep(t)
        assert type(mine) is type(reference) and int(mine) == int(reference) == 56
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    for t in theirs.timesteps:  # after it: the next scheduled timestep as a 0-d tensor, tensor(-1) past the last
        mine, reference = ours.previous_timestep(t), theirs.previous_timestep(t)
        assert isinstance(mine, torch.Tensor) and mine.ndim == 0 and int(mine) == int(reference)
    assert int(ours.previous_timestep(0)) == -1
