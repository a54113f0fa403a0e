"""The diffusion maths of a training step, pinned: the loss against a hand-written reference for every prediction
type, loss type and min-SNR weighting; the loop feeding the UNet what that loss says (noised inputs, the sampled
timesteps, labels dropped at the asked rate); gradient clipping; the EMA shadowing every parameter; and a tiny model
that measurably learns. A broken line of the maths fails one of these."""

import argparse
import math

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.training_utils import EMAModel
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import tiny_flags
from hf_ddpm.data import load_image_data
from hf_ddpm.models.unet_2d import DDPMUNet2DModel
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.schedulers import DDPMScheduler
from hf_ddpm.training import train as train_script
from hf_ddpm.training.step import draw_timesteps, edm_sigmas
from test_train import train

T = 1000
NULL = 10


class LinearStandIn(torch.nn.Module):
    """A network whose output is a known function of (x_t, t, label), so that a loss can be computed by hand."""

    def forward(self, sample, timestep, class_labels=None):
        labels = torch.zeros(sample.shape[0]) if class_labels is None else class_labels.float()
        shift = (timestep.float() / T + labels / NULL).view(-1, 1, 1, 1)
        return argparse.Namespace(sample=0.5 * sample + shift)


def flags(**overrides):
    values = dict(
        random_flip=False,
        num_train_timesteps=T,
        cond_drop_prob=0.3,
        prediction_type="epsilon",
        snr_gamma=None,
        loss_type="l2",
        timestep_distribution="uniform",
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def reference_loss(x0, labels, seed, args):
    """The loss written out from the papers, drawing noise, timesteps and dropout in the order the step draws them."""
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=generator)
    alphas_cumprod = DDPMScheduler(num_train_timesteps=T).alphas_cumprod
    if args.timestep_distribution == "uniform":
        t = torch.randint(0, T, (x0.shape[0],), generator=generator)
    else:  # Karras et al. 2022: ln(sigma) ~ N(-1.2, 1.2^2), at the timestep whose sigma is nearest in log
        log_sigma = -1.2 + 1.2 * torch.randn(x0.shape[0], generator=generator, dtype=torch.float64)
        schedule = (0.5 * ((1 - alphas_cumprod.double()) / alphas_cumprod.double()).log()).tolist()
        t = torch.tensor([min(range(T), key=lambda i: abs(schedule[i] - value)) for value in log_sigma.tolist()])
    dropped = torch.rand(labels.shape, generator=generator) < args.cond_drop_prob
    labels = torch.where(dropped, torch.full_like(labels, NULL), labels)
    alpha_bar = alphas_cumprod[t].view(-1, 1, 1, 1).double()
    x0, eps = x0.double(), eps.double()
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps  # eq. (4) of Ho et al. 2020
    prediction = 0.5 * x_t + (t.double() / T + labels.double() / NULL).view(-1, 1, 1, 1)
    target = {
        "epsilon": eps,
        "sample": x0,
        "v_prediction": alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0,  # Salimans & Ho 2022
    }[args.prediction_type]
    error = prediction - target
    per_pixel = {
        "l2": error**2,
        "l1": error.abs(),
        "huber": torch.where(error.abs() < 1, 0.5 * error**2, error.abs() - 0.5),
    }[args.loss_type]
    per_sample = per_pixel.flatten(1).mean(1)
    if args.snr_gamma is not None:  # Hang et al. 2023: min(SNR, gamma) on x0, carried over to each target
        snr = (alpha_bar / (1 - alpha_bar)).flatten()
        clipped = snr.clamp(max=args.snr_gamma)
        weight = {"epsilon": clipped / snr, "sample": clipped, "v_prediction": clipped / (snr + 1)}
        per_sample = per_sample * weight[args.prediction_type]
    if args.timestep_distribution == "edm":  # lambda(sigma) = (sigma^2 + 0.5^2) / (0.5 sigma)^2 on the x0 error
        sigma2 = ((1 - alpha_bar) / alpha_bar).flatten()
        x0_weight = (sigma2 + 0.25) / (0.25 * sigma2)
        # A target error of e is an x0 error of e times: 1 (x0), sigma (epsilon), sigma * sqrt(alpha_bar) (v).
        x0_error_scale2 = {"sample": 1, "epsilon": sigma2, "v_prediction": sigma2 * alpha_bar.flatten()}
        per_sample = per_sample * x0_weight * x0_error_scale2[args.prediction_type]
    return per_sample.mean()


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("loss_type", ["l2", "l1", "huber"])
@pytest.mark.parametrize("snr_gamma, timestep_distribution", [(None, "uniform"), (5.0, "uniform"), (None, "edm")])
def test_training_loss_is_the_papers_loss(prediction_type, loss_type, snr_gamma, timestep_distribution):
    # 64 draws of t: low-noise ones (SNR above gamma, where the min-SNR weights bite) among them.
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(64, 1, 4, 4, generator=generator) * 2 - 1
    labels = torch.arange(64) % NULL
    args = flags(
        prediction_type=prediction_type,
        loss_type=loss_type,
        snr_gamma=snr_gamma,
        timestep_distribution=timestep_distribution,
    )
    loss = train_script.training_loss(
        LinearStandIn(),
        DDPMScheduler(num_train_timesteps=T, prediction_type=prediction_type),
        [x0, labels],
        torch.Generator().manual_seed(7),
        args,
        NULL,
    )
    expected = reference_loss(x0, labels, 7, args)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)


def test_edm_timesteps_have_the_papers_log_normal_noise_levels():
    alphas_cumprod = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    timesteps = draw_timesteps(alphas_cumprod, 20_000, "edm", torch.Generator().manual_seed(0))
    log_sigma = edm_sigmas(alphas_cumprod)[timesteps].log()
    # ln(sigma) ~ N(-1.2, 1.2^2) (Karras et al. 2022, Table 1): the schedule's levels lie close enough to keep both.
    assert abs(log_sigma.mean().item() + 1.2) < 0.03 and abs(log_sigma.std().item() - 1.2) < 0.03
    uniform = draw_timesteps(alphas_cumprod, 20_000, "uniform", torch.Generator().manual_seed(0))
    assert abs(uniform.float().mean().item() - 499.5) < 10


class Recorder:
    """Spies on a training run: what each `training_loss` call got (batch, generator state) and what the UNet got."""

    def __init__(self, monkeypatch):
        self.losses, self.forwards = [], []
        real_loss, real_forward = train_script.training_loss, DDPMUNet2DModel.forward

        def loss_spy(model, scheduler, batch, generator, args, null_class_id):
            self.losses.append(([b.clone() for b in batch], generator.get_state(), null_class_id))
            return real_loss(model, scheduler, batch, generator, args, null_class_id)

        def forward_spy(unet, sample, timestep, class_labels=None, return_dict=True):
            if unet.training:
                labels = None if class_labels is None else class_labels.clone()
                self.forwards.append((sample.detach().clone(), timestep.clone(), labels))
            return real_forward(unet, sample, timestep, class_labels=class_labels, return_dict=return_dict)

        monkeypatch.setattr(train_script, "training_loss", loss_spy)
        monkeypatch.setattr(DDPMUNet2DModel, "forward", forward_spy)


def test_the_loop_feeds_the_unet_noised_images_at_the_drawn_timesteps(monkeypatch, tmp_path):
    spy = Recorder(monkeypatch)
    train(tiny_flags(tmp_path / "run", "--max_train_steps", "6", "--cond_drop_prob", "0.3"))
    assert len(spy.losses) == len(spy.forwards) == 6
    scheduler = DDPMScheduler(num_train_timesteps=T)
    for (batch, state, _), (sample, timesteps, labels) in zip(spy.losses, spy.forwards):
        generator = torch.Generator()
        generator.set_state(state)
        eps = torch.randn(batch[0].shape, generator=generator)
        t = torch.randint(0, T, (batch[0].shape[0],), generator=generator)
        alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        torch.testing.assert_close(timesteps, t)
        torch.testing.assert_close(sample, alpha_bar.sqrt() * batch[0] + (1 - alpha_bar).sqrt() * eps)
        kept = labels != NULL
        assert torch.equal(labels[kept], batch[1][kept])


@pytest.mark.slow
@pytest.mark.parametrize("drop_prob", [0.0, 0.3])
def test_the_share_of_labels_dropped_to_the_null_label_is_cond_drop_prob(monkeypatch, tmp_path, drop_prob):
    spy = Recorder(monkeypatch)
    train(
        tiny_flags(
            tmp_path / "run", "--max_train_steps", "40", "--train_batch_size", "16", "--cond_drop_prob", str(drop_prob)
        )
    )
    labels = torch.cat([labels for _, _, labels in spy.forwards])
    dropped = (labels == NULL).float().mean().item()
    # 640 Bernoulli(p) draws: within 4.5 standard deviations of p (and exactly none at p = 0).
    assert abs(dropped - drop_prob) <= 4.5 * math.sqrt(drop_prob * (1 - drop_prob) / len(labels))


@pytest.mark.slow
def test_max_grad_norm_clips_every_step(monkeypatch, tmp_path):
    norms = []

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, closure=None):
            grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    train(tiny_flags(tmp_path / "clipped", "--max_train_steps", "5", "--max_grad_norm", "0.01"))
    assert len(norms) == 5 and max(norms) <= 0.01 * (1 + 1e-5)
    norms.clear()
    train(tiny_flags(tmp_path / "free", "--max_train_steps", "5", "--max_grad_norm", "inf"))
    assert min(norms) > 0.01  # so the bound above was a real clip


def test_the_ema_shadows_every_parameter_and_is_what_the_pipeline_saves(monkeypatch, tmp_path):
    emas = []

    class RecordingEMA(EMAModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            emas.append(self)

    monkeypatch.setattr(train_script, "EMAModel", RecordingEMA)
    output = train(tiny_flags(tmp_path / "run", "--max_train_steps", "4", "--use_ema"))
    unet = DDPMCFGPipeline.from_pretrained(output).unet
    parameters = list(unet.parameters())
    assert len(emas) == 1 and len(emas[0].shadow_params) == len(parameters)
    for shadow, parameter in zip(emas[0].shadow_params, parameters, strict=True):
        assert shadow.shape == parameter.shape and torch.equal(shadow, parameter)


@pytest.mark.slow
def test_a_tiny_model_learns_two_digits(tmp_path):
    """300 steps on 360 real 8x8 digits of two classes: the loss falls by more than a third, and the model's one-step
    estimate of x_0 at a middle noise level lands closer to the data than the untrained model's, by a wide margin."""
    digits = load_image_data(dataset_name="digits", resolution=8)
    keep = (digits.labels == 0) | (digits.labels == 1)
    folder = tmp_path / "two-digits"
    images = [
        PIL.Image.fromarray(((image[0].numpy() + 1) * 127.5).round().astype(np.uint8)) for image in digits.images[keep]
    ]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["0", "1"])})
    datasets.Dataset.from_dict(
        {"image": images, "label": digits.labels[keep].tolist()}, features=features
    ).save_to_disk(str(folder))
    run = tmp_path / "run"
    flags_ = tiny_flags(
        run,
        "--max_train_steps",
        "300",
        "--train_batch_size",
        "32",
        "--learning_rate",
        "3e-3",
        "--prediction_type",
        "epsilon",
        "--report_to",
        "tensorboard",
    )
    flags_[flags_.index("digits")] = str(folder)
    flags_[flags_.index("--max_train_samples") + 1] = "360"
    train(flags_)

    logs = EventAccumulator(str(run / "logs" / "train_ddpm"), size_guidance={"scalars": 0}).Reload()
    losses = [event.value for event in logs.Scalars("loss")]
    assert np.mean(losses[-50:]) < 0.65 * np.mean(losses[:20])

    trained = DDPMCFGPipeline.from_pretrained(run).unet.eval()
    untrained = DDPMUNet2DModel(**{k: v for k, v in trained.config.items() if not k.startswith("_")}).eval()
    x0 = digits.images[keep][:64]
    labels = digits.labels[keep][:64]
    generator = torch.Generator().manual_seed(0)
    eps = torch.randn(x0.shape, generator=generator)
    t = torch.full((64,), 400)
    alpha_bar = DDPMScheduler(num_train_timesteps=T).alphas_cumprod[400]
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps

    def x0_error(unet):
        with torch.no_grad():
            eps_hat = unet(x_t, t, class_labels=labels).sample
        return ((x_t - (1 - alpha_bar).sqrt() * eps_hat) / alpha_bar.sqrt() - x0).pow(2).mean().item()

    assert x0_error(trained) < 0.5 * x0_error(untrained)


def test_the_ema_is_the_warmed_up_moving_average_of_the_weights(monkeypatch, tmp_path):
    """shadow <- shadow - (1 - decay_k) (shadow - weights) after optimizer step k, with the warm-up decay of
    `--ema_inv_gamma` / `--ema_power`: decay_k = min(max_decay, 1 - (1 + (k - 1) / inv_gamma) ** -power), 0 at k = 1."""
    trajectory = []

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, closure=None):
            result = super().step(closure)
            trajectory.append([p.detach().clone() for group in self.param_groups for p in group["params"]])
            return result

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    output = train(
        tiny_flags(
            tmp_path / "run",
            "--max_train_steps",
            "5",
            "--use_ema",
            "--ema_inv_gamma",
            "2",
            "--ema_power",
            "0.5",
            "--ema_max_decay",
            "0.6",
        )
    )
    shadow = [p.clone() for p in trajectory[0]]
    for k, weights in enumerate(trajectory, start=1):
        decay = 0.0 if k == 1 else min(0.6, 1 - (1 + (k - 1) / 2) ** -0.5)
        shadow = [s - (1 - decay) * (s - w) for s, w in zip(shadow, weights, strict=True)]
    saved = list(DDPMCFGPipeline.from_pretrained(output).unet.parameters())
    assert len(saved) == len(shadow)
    for expected, parameter in zip(shadow, saved, strict=True):
        torch.testing.assert_close(parameter, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(saved[0], trajectory[-1][0])  # an average that lags, not the last weights
