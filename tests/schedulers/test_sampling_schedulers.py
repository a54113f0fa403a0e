"""Every scheduler that `hf-ddpm sample --scheduler` and the evaluation sweeps offer (`SCHEDULERS`) samples a
v-prediction model with guidance and a guidance interval: the images are finite, repeat with the same seed, and
equal the sampling loop written out; our DDPM and DDIM give diffusers' images."""

import pytest
import torch
from diffusers import DDIMScheduler as DiffusersDDIMScheduler, DDPMScheduler as DiffusersDDPMScheduler

from helpers import public_config
from hf_ddpm.sampling import SCHEDULERS, scheduler_from_name
from hf_ddpm.schedulers.scheduling_ddim import DDIMScheduler
from hf_ddpm.schedulers.scheduling_ddpm import DDPMScheduler
from test_pipeline import TRAIN_STEPS, reference_sample, tiny_pipeline

# A v-prediction model on the cosine schedule, as the demo trains; the saved scheduler is the training one.
TRAINED_WITH = dict(num_train_timesteps=TRAIN_STEPS, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
CALL = dict(class_labels=[0, 1, 2], guidance_scale=2.0, guidance_interval=(0.2, 0.8), num_inference_steps=5)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_samples_a_v_prediction_model_with_guidance_in_an_interval(name):
    saved = DDPMScheduler(**TRAINED_WITH)
    pipe = tiny_pipeline(scheduler_from_name(name, saved))
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    images = pipe(**CALL, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert torch.isfinite(images).all() and 0 < pipe.num_guided_steps < pipe.num_timesteps
    again = pipe(**CALL, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert torch.equal(images, again)
    expected = reference_sample(
        pipe.unet, scheduler_from_name(name, saved), [0, 1, 2], 3, 2.0, 5, seed=0, guidance_interval=(0.2, 0.8)
    )
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "ours, theirs", [(DDPMScheduler, DiffusersDDPMScheduler), (DDIMScheduler, DiffusersDDIMScheduler)]
)
def test_our_ddpm_and_ddim_give_diffusers_images_with_guidance_in_an_interval(ours, theirs):
    images = [
        tiny_pipeline(scheduler(**TRAINED_WITH))(**CALL, generator=torch.Generator().manual_seed(4), output_type="pt")
        for scheduler in (ours, theirs)
    ]
    torch.testing.assert_close(images[0].images, images[1].images, atol=1e-5, rtol=0)


def saved_and_loaded(scheduler, folder):
    scheduler.save_pretrained(folder)
    return type(scheduler).from_pretrained(folder)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_a_scheduler_made_by_name_is_the_same_before_and_after_the_pipeline_is_saved(name, tmp_path):
    # The trainer's sampler: DPM-Solver++ from DDIM's config without x0 clipping.
    saved = scheduler_from_name("dpm", DDIMScheduler(**TRAINED_WITH, clip_sample=False))
    fresh, loaded = scheduler_from_name(name, saved), scheduler_from_name(name, saved_and_loaded(saved, tmp_path))
    assert public_config(fresh.config) == public_config(loaded.config)
    for scheduler in (fresh, loaded):
        scheduler.set_timesteps(7)
    assert torch.equal(fresh.timesteps, loaded.timesteps)
    if name in ("ddpm", "ddim"):  # the setting rode along in the saved DPM-Solver config
        assert loaded.config.clip_sample is False


def test_our_ddpm_made_from_a_dpm_solver_config_steps_as_diffusers_ddpm_does(tmp_path):
    saved = saved_and_loaded(scheduler_from_name("dpm", DDIMScheduler(**TRAINED_WITH)), tmp_path)
    ours = scheduler_from_name("ddpm", saved)
    assert ours.config.variance_type == "fixed_small"  # DPM-Solver's variance_type is None: no learned variance
    images = [
        tiny_pipeline(scheduler)(**CALL, generator=torch.Generator().manual_seed(1), output_type="pt").images
        for scheduler in (ours, DiffusersDDPMScheduler.from_config(saved.config))
    ]
    torch.testing.assert_close(images[0], images[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("rescale_betas_zero_snr", [False, True])
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_takes_a_schedule_that_diffusers_lacks_as_its_betas(name, rescale_betas_zero_snr):
    saved = DDPMScheduler(
        **{**TRAINED_WITH, "beta_schedule": "sigmoid", "rescale_betas_zero_snr": rescale_betas_zero_snr}
    )
    scheduler = scheduler_from_name(name, saved)
    torch.testing.assert_close(scheduler.alphas_cumprod.float(), saved.alphas_cumprod, atol=1e-6, rtol=0)
    images = tiny_pipeline(scheduler)(**CALL, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert torch.isfinite(images).all()
