"""One optimizer step's maths: the regression target of each prediction type, the loss and its min-SNR weighting, the
timesteps it trains on (uniform, or the noise levels and loss weight of Karras et al. 2022), classifier-free-guidance
label dropout, the seeded random streams that let a resumed run repeat an uninterrupted one,
the data order of an epoch, and `training_loss`, which puts them together for a batch."""

from __future__ import annotations

import argparse
import contextlib
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel

from hf_ddpm.data import random_flip
from hf_ddpm.schedulers import DDPMScheduler
from hf_ddpm.stopping import TrainingStopped

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


LOSS_TYPES = ("l2", "l1", "huber")
TIMESTEP_DISTRIBUTIONS = ("uniform", "edm")
# Karras et al. 2022 (EDM, https://huggingface.co/papers/2206.00364), Table 1: training noise levels with
# ln(sigma) ~ N(P_mean, P_std^2), and the data's standard deviation in their loss weight.
EDM_P_MEAN, EDM_P_STD, EDM_SIGMA_DATA = -1.2, 1.2, 0.5


def training_target(
    prediction_type: str, scheduler: Any, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the network regresses on for `prediction_type`: the noise, the clean image, or the velocity
    v = sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x0 (Salimans & Ho 2022, https://huggingface.co/papers/2202.00512).
    """
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return clean
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    raise ValueError(f"--prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")


def min_snr_weights(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, snr_gamma: float, prediction_type: str
) -> torch.Tensor:
    """Per-sample loss weights of min-SNR-gamma (Hang et al. 2023, https://huggingface.co/papers/2303.09556).

    The paper weights the loss on x0 by min(SNR, gamma). The same weighting, written on the network's own target:
    epsilon errors are x0 errors scaled by SNR, so their weight is min(SNR, gamma) / SNR; v errors are x0 errors
    scaled by SNR + 1, so their weight is min(SNR, gamma) / (SNR + 1).
    """
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alpha_bar / (1.0 - alpha_bar)
    clipped = snr.clamp(max=snr_gamma)
    if prediction_type == "sample":
        return clipped
    if prediction_type == "epsilon":
        # gamma / SNR capped at 1 equals min(SNR, gamma) / SNR, and stays finite where SNR is 0 (zero terminal SNR).
        return (snr_gamma / snr).clamp(max=1.0)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    raise ValueError(f"--prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")


def edm_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Each timestep's noise level as EDM writes it: x_t / sqrt(alpha_bar) = x0 + sigma * eps, so that
    sigma = sqrt((1 - alpha_bar) / alpha_bar) = 1 / sqrt(SNR)."""
    alpha_bar = alphas_cumprod.double()
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def draw_timesteps(
    alphas_cumprod: torch.Tensor, batch_size: int, distribution: str, generator: torch.Generator
) -> torch.Tensor:
    """The timesteps of a batch: uniform over the schedule (Ho et al. 2020), or "edm": a noise level drawn from EDM's
    log-normal, taken to the schedule's timestep whose sigma is nearest in log. EDM spends the steps around
    sigma = e^-1.2 ~ 0.3, where denoising decides the most, rather than as many on images all noise or all signal."""
    if distribution == "uniform":
        return torch.randint(0, len(alphas_cumprod), (batch_size,), generator=generator)
    if distribution != "edm":
        raise ValueError(f"--timestep_distribution must be one of {TIMESTEP_DISTRIBUTIONS}, got {distribution!r}.")
    log_sigma = EDM_P_MEAN + EDM_P_STD * torch.randn(batch_size, generator=generator, dtype=torch.float64)
    schedule = edm_sigmas(alphas_cumprod.cpu()).log()
    return (schedule[None, :] - log_sigma[:, None]).abs().argmin(dim=1)


def edm_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights of EDM: lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 on the x0
    error, which is SNR + 1 / sigma_data^2, carried over to each target as `min_snr_weights` does. With a v target
    this is (SNR + 4) / (SNR + 1): v-prediction is EDM's preconditioning for sigma_data = 1 (its weight would be 1),
    and the weight restores the data's own spread of 0.5."""
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alpha_bar / (1.0 - alpha_bar)
    x0_weight = snr + 1.0 / EDM_SIGMA_DATA**2
    if prediction_type == "sample":
        return x0_weight
    if prediction_type == "epsilon":
        return x0_weight / snr
    if prediction_type == "v_prediction":
        return x0_weight / (snr + 1.0)
    raise ValueError(f"--prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")


def diffusion_loss(
    prediction: torch.Tensor, target: torch.Tensor, loss_type: str, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of the per-pixel loss, each sample weighted by `weights` (min-SNR) when given.

    "huber" is the smooth L1 loss (delta 1) that lucidrains' denoising-diffusion-pytorch offers: L2 for small errors,
    L1 for large ones.
    """
    prediction, target = prediction.float(), target.float()
    if loss_type == "l2":
        per_pixel = F.mse_loss(prediction, target, reduction="none")
    elif loss_type == "l1":
        per_pixel = F.l1_loss(prediction, target, reduction="none")
    elif loss_type == "huber":
        per_pixel = F.huber_loss(prediction, target, reduction="none", delta=1.0)
    else:
        raise ValueError(f"--loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")
    per_sample = per_pixel.flatten(1).mean(dim=1)
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean()


def drop_class_labels(
    labels: torch.Tensor, drop_prob: float, null_class_id: int, generator: torch.Generator
) -> torch.Tensor:
    """Replaces each label by the null label with probability `drop_prob`, so one network also learns the
    unconditional model that classifier-free guidance needs (Ho & Salimans 2022,
    https://huggingface.co/papers/2207.12598).
    """
    dropped = torch.rand(labels.shape, generator=generator) < drop_prob
    return torch.where(dropped.to(labels.device), torch.full_like(labels, null_class_id), labels)


def seeded_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator that is a function of `(seed, *keys)` alone.

    Training draws each random stream from such a generator keyed by where it is, rather than carrying one generator
    along: the data order of an epoch by `(DATA_ORDER, epoch)`, the noise, timesteps, label dropout and flips of a
    micro-batch by `(MICRO_BATCH, process_index, micro_batch_index)`. There is then no generator state to save, a run
    resumed at any step draws exactly what an uninterrupted run draws there, and every process draws differently.
    """
    entropy = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))


# The random streams of `seeded_generator`, as its first key.
DATA_ORDER, MICRO_BATCH = 0, 1


def training_loss(
    model: torch.nn.Module,
    noise_scheduler: DDPMScheduler,
    batch: list[torch.Tensor],
    generator: torch.Generator,
    args: argparse.Namespace,
    null_class_id: int | None,
) -> torch.Tensor:
    """The loss of one batch: noise the images at random timesteps, predict, compare with the target."""
    clean = batch[0]
    if args.random_flip:
        clean = random_flip(clean, generator=generator)
    device = clean.device
    noise = torch.randn(clean.shape, generator=generator).to(device)
    distribution = args.timestep_distribution
    timesteps = draw_timesteps(noise_scheduler.alphas_cumprod, clean.shape[0], distribution, generator).to(device)
    labels = None
    if null_class_id is not None:
        labels = drop_class_labels(batch[1], args.cond_drop_prob, null_class_id, generator)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    prediction = model(noisy, timesteps, class_labels=labels).sample
    target = training_target(args.prediction_type, noise_scheduler, clean, noise, timesteps)
    weights = None
    if args.snr_gamma is not None:
        weights = min_snr_weights(noise_scheduler.alphas_cumprod, timesteps, args.snr_gamma, args.prediction_type)
    elif distribution == "edm":
        weights = edm_weights(noise_scheduler.alphas_cumprod, timesteps, args.prediction_type)
    return diffusion_loss(prediction, target, args.loss_type, weights)


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A new random order of the whole dataset every epoch, drawn from (seed, epoch) alone: the same on every process
    (Accelerate then deals each process different batches of it) and the same in a resumed run."""

    def __init__(self, num_samples: int, seed: int):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        order = torch.randperm(self.num_samples, generator=seeded_generator(self.seed, DATA_ORDER, self.epoch))
        return iter(order.tolist())


def apply_optimizer_flags(
    optimizer: torch.optim.Optimizer, lr_scheduler: torch.optim.lr_scheduler.LambdaLR, args: argparse.Namespace
) -> list[str]:
    """Puts this run's --learning_rate and AdamW flags into an optimizer and learning-rate schedule loaded from a
    checkpoint, which hold the values of the run that saved them: a run resumed with a lower learning rate (after a
    non-finite loss, say) trains with it, at the same point of the schedule. Returns what changed, "flag: saved ->
    now", for the log; nothing when the flags are those of the saved run."""
    wanted = {
        "lr": args.learning_rate,
        "betas": (args.adam_beta1, args.adam_beta2),
        "eps": args.adam_epsilon,
        "weight_decay": args.adam_weight_decay,
    }
    flags = {
        "lr": "--learning_rate",
        "betas": "--adam_beta1/--adam_beta2",
        "eps": "--adam_epsilon",
        "weight_decay": "--adam_weight_decay",
    }
    changes = set()
    for index, group in enumerate(optimizer.param_groups):
        saved = {
            "lr": group["initial_lr"],
            "betas": tuple(group["betas"]),
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
        }
        for key in [key for key in wanted if saved[key] != wanted[key]]:
            changes.add(f"{flags[key]}: saved {saved[key]} -> now {wanted[key]}")
            if key != "lr":
                group[key] = wanted[key]
                continue
            # Every diffusers schedule is a LambdaLR: the base rate times a factor of the step.
            group["initial_lr"] = lr_scheduler.base_lrs[index] = wanted["lr"]
            group["lr"] = wanted["lr"] * lr_scheduler.lr_lambdas[index](lr_scheduler.last_epoch)
    return sorted(changes)


def check_finite(
    losses: list[torch.Tensor], grad_norm: torch.Tensor, step: int, args: argparse.Namespace, grad_scaler: bool = False
) -> None:
    """Raises `TrainingStopped` when optimizer step `step` would be taken on a non-finite loss or gradient. With
    fp16's `grad_scaler`, a non-finite gradient is the scaler's overflow signal: it skips that step and lowers its
    scale, as it does every time its scale has grown too large."""
    loss = torch.stack(losses)
    if bool(torch.isfinite(loss).all()) and (grad_scaler or math.isfinite(float(grad_norm))):
        return
    what = f"loss {loss.tolist()}" if not bool(torch.isfinite(loss).all()) else f"gradient norm {float(grad_norm)}"
    raise TrainingStopped(
        f"Step {step} has a non-finite {what}: the step was not taken and no checkpoint of these weights written. "
        f"Usual causes: a learning rate too high (--learning_rate {args.learning_rate:g}: try a tenth), no warm-up "
        f"(--lr_warmup_steps {args.lr_warmup_steps}), or fp16 overflow (--mixed_precision fp16: try bf16). Resume from "
        "the last checkpoint with --resume_from_checkpoint latest after changing them."
    )


@contextlib.contextmanager
def ema_weights(model: torch.nn.Module, ema: EMAModel | None):
    """Puts the EMA weights into `model` for the duration, then the training weights back, bit for bit."""
    if ema is None:
        yield
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield
    finally:
        ema.restore(model.parameters())


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module):
    model.eval()
    try:
        yield
    finally:
        model.train()
