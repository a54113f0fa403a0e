"""Hand-made mutants of the diffusion maths: each breaks one core line, and the tests named beside it must fail.

A mutant is (name, file, the original text, the broken text, the tests that must catch it). The original text must
occur exactly once in its file, so that a refactor that moves a line makes the check fail loudly instead of testing
nothing. `run.py` applies them one at a time in a temporary copy of the package and runs their tests; the suite runs those
marked `in_ci` (one per idea: noising, targets, min-SNR, label dropout, CFG, the null label, the DDPM and DDIM
updates, EMA) to stay within its time.
"""

from typing import NamedTuple


class Mutant(NamedTuple):
    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    in_ci: bool = True  # one mutant per idea runs in the suite (tests/test_mutation.py); all run here


# The tests that pin each part: the fast ones, so that the whole check fits in the suite's time.
LOSS = "tests/training/test_training_step.py::test_training_loss_is_the_papers_loss"
LOOP = "tests/training/test_training_step.py::test_the_loop_feeds_the_unet_noised_images_at_the_drawn_timesteps"
DROP = "tests/training/test_training_step.py::test_the_share_of_labels_dropped_to_the_null_label_is_cond_drop_prob"
EMA = "tests/training/test_training_step.py::test_the_ema_is_the_warmed_up_moving_average_of_the_weights"
DDPM_LOOP = "tests/schedulers/test_schedulers_ddpm.py::test_sampling_loops_match_diffusers_at_every_step"
NOISING = "tests/schedulers/test_schedulers_ddpm.py::test_add_noise_and_velocity_match_diffusers"
DDIM_LOOP = "tests/schedulers/test_schedulers_ddim.py::test_sampling_loops_match_diffusers_or_the_formula_at_every_step"
CFG = "tests/pipelines/test_pipeline.py::test_cfg_equals_formula"
NULL_LABEL = "tests/pipelines/test_pipeline.py::test_guided_step_is_one_batched_forward_of_cond_and_null_labels"

MUTANTS = (
    Mutant(
        "the UNet gets the clean images",
        "training/step.py",
        "noisy = noise_scheduler.add_noise(clean, noise, timesteps)",
        "noisy = clean",
        (LOSS, LOOP),
    ),
    Mutant(
        "forward process without its noise scale",
        "hf_ddpm/schedulers/scheduling_ddpm.py",
        "return sqrt_alpha_bar * original_samples + sqrt_one_minus_alpha_bar * noise",
        "return sqrt_alpha_bar * original_samples + noise",
        (NOISING, LOSS),
        in_ci=False,
    ),
    Mutant(
        "epsilon target is the image",
        "training/step.py",
        'if prediction_type == "epsilon":\n        return noise',
        'if prediction_type == "epsilon":\n        return clean',
        (LOSS,),
    ),
    Mutant(
        "v target with x0 and eps swapped",
        "training/step.py",
        "return scheduler.get_velocity(clean, noise, timesteps)",
        "return scheduler.get_velocity(noise, clean, timesteps)",
        (LOSS,),
        in_ci=False,
    ),
    Mutant(
        "min-SNR weights all 1 (epsilon)",
        "training/step.py",
        "return (snr_gamma / snr).clamp(max=1.0)",
        "return torch.ones_like(snr)",
        (LOSS,),
    ),
    Mutant(
        "min-SNR weight of v divided by SNR",
        "training/step.py",
        "return clipped / (snr + 1.0)",
        "return clipped / snr",
        (LOSS,),
        in_ci=False,
    ),
    Mutant(
        "labels dropped with probability 1 - p",
        "training/step.py",
        "dropped = torch.rand(labels.shape, generator=generator) < drop_prob",
        "dropped = torch.rand(labels.shape, generator=generator) > drop_prob",
        (DROP,),
    ),
    Mutant(
        "CFG extrapolates from the conditional output",
        "pipelines/pipeline_ddpm_cfg.py",
        "guided = unconditional + guidance_scale * (conditional - unconditional)",
        "guided = conditional + guidance_scale * (conditional - unconditional)",
        (CFG,),
    ),
    Mutant(
        "the null label is class 0",
        "pipelines/pipeline_ddpm_cfg.py",
        "null_labels = torch.full((num_images,), self.config.null_class_id, device=device)",
        "null_labels = torch.full((num_images,), 0, device=device)",
        (NULL_LABEL,),
    ),
    Mutant(
        "DDPM posterior mean without x_t",
        "hf_ddpm/schedulers/scheduling_ddpm.py",
        "mean = c.x0_coef * x0 + c.xt_coef * sample",
        "mean = c.x0_coef * x0",
        (DDPM_LOOP,),
    ),
    Mutant(
        "DDPM adds no noise",
        "hf_ddpm/schedulers/scheduling_ddpm.py",
        "prev_sample = mean + self._sigma(c, predicted_variance) * z",
        "prev_sample = mean",
        (DDPM_LOOP,),
        in_ci=False,
    ),
    Mutant(
        "DDIM x0 from epsilon without 1/sqrt(alpha_bar)",
        "hf_ddpm/schedulers/scheduling_ddim.py",
        "x0 = (sample - c.sqrt_one_minus_alpha_bar * eps) / c.sqrt_alpha_bar",
        "x0 = sample - c.sqrt_one_minus_alpha_bar * eps",
        (DDIM_LOOP,),
        in_ci=False,
    ),
    Mutant(
        "DDIM step drops the direction to x_t",
        "hf_ddpm/schedulers/scheduling_ddim.py",
        "prev_sample = c.sqrt_alpha_bar_prev * x0 + direction",
        "prev_sample = c.sqrt_alpha_bar_prev * x0",
        (DDIM_LOOP,),
    ),
    Mutant("EMA never updated", "training/train.py", "self.ema.step(self.model.parameters())", "pass", (EMA,)),
)
