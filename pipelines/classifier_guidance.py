"""Classifier guidance (Dhariwal & Nichol 2021, https://huggingface.co/papers/2105.05233): the gradient of a noise-aware
classifier's `log p(y | x_t)` steers each denoising step towards class `y`.

Self-contained: this file imports only torch, diffusers and the standard library, so it travels beside the pipeline
files into a saved model folder.
"""

import math
import numbers

import torch
from diffusers import ModelMixin, SchedulerMixin

# Samplers whose step is DDPM's ancestral step: there the guidance shifts the step's mean (Dhariwal & Nichol's
# Algorithm 1). Every other sampler gets the score form (their Algorithm 2), which any sampler that reads the model's
# prediction can take.
ANCESTRAL_SCHEDULERS = ("DDPMScheduler",)


def check_classifier(classifier: ModelMixin, unet: ModelMixin, scheduler: SchedulerMixin, num_labels: int | None):
    """
    A `ValueError` unless `classifier` can guide this model: its classes are the model's labels (for a conditional
    UNet, the same number), it takes the UNet's sample size and channels, and it learned the noise of a schedule of
    the scheduler's length.
    """
    config = classifier.config
    if num_labels is not None and config.get("num_classes") != num_labels:
        raise ValueError(
            f"`classifier` has {config.get('num_classes')} classes but the model has {num_labels} labels: a "
            "classifier guides towards the model's own classes, so the two must be trained on the same labels."
        )
    unet_size, unet_channels = unet.config.sample_size, unet.config.in_channels
    size = (unet_size, unet_size) if isinstance(unet_size, int) else tuple(unet_size)
    if (config.get("sample_size"),) * 2 != size or config.get("in_channels") != unet_channels:
        raise ValueError(
            f"`classifier` takes {config.get('in_channels')}-channel images of {config.get('sample_size')} pixels a "
            f"side, but the UNet makes {unet_channels}-channel images of {size[0]}x{size[1]}."
        )
    steps = scheduler.config.num_train_timesteps
    if config.get("num_train_timesteps", steps) != steps:
        raise ValueError(
            f"`classifier` learned a noise schedule of {config.get('num_train_timesteps')} timesteps but the "
            f"scheduler has {steps}: it must see images noised as the diffusion model's are."
        )


def check_classifier_scale(classifier_scale, classifier: ModelMixin | None, label_ids: list[int] | None) -> None:
    """A `ValueError` for a scale that is not a finite number >= 0, or one > 0 without a classifier or labels."""
    if isinstance(classifier_scale, bool) or not isinstance(classifier_scale, numbers.Real):
        raise ValueError(f"`classifier_scale` must be a number >= 0, got {classifier_scale!r}.")
    if not 0 <= classifier_scale < math.inf:
        raise ValueError(f"`classifier_scale` must be a finite number >= 0, got {classifier_scale!r}.")
    if classifier_scale > 0 and classifier is None:
        raise ValueError(
            f"`classifier_scale`={classifier_scale} needs a classifier: pass `classifier=` to the pipeline (or load "
            "a folder that has one)."
        )
    if classifier_scale > 0 and label_ids is None:
        raise ValueError(
            f"`classifier_scale`={classifier_scale} needs `class_labels`: guidance moves samples towards a class."
        )


def alpha_bar_at(scheduler: SchedulerMixin, timestep: torch.Tensor) -> torch.Tensor:
    """`alpha_bar_t` of the scheduler's training schedule at `timestep`, interpolated between training steps for
    the fractional timesteps that some samplers (Euler's) use."""
    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    t = float(timestep)
    low = min(int(math.floor(t)), len(alphas_cumprod) - 1)
    high = min(low + 1, len(alphas_cumprod) - 1)
    weight = t - low
    return (1 - weight) * alphas_cumprod[low] + weight * alphas_cumprod[high]


class ClassifierGuidance:
    """
    The guidance of one call: `gradient` gives `grad log p(y | x_t)` of the classifier for each image's class, and
    it is applied either to the model output (`guide_model_output`, the score form) or to the ancestral step's result
    (`shift_mean`). The gradient runs through the classifier only; the UNet's output is left out of the graph.

    Args:
        classifier ([`ModelMixin`]): called as `classifier(x_t, t).logits`.
        scheduler ([`SchedulerMixin`]): the sampler; its training schedule gives `alpha_bar_t`.
        label_ids (`torch.Tensor`): the class of each image of the batch.
        scale (`float`): the guidance scale `s`.
    """

    def __init__(self, classifier: ModelMixin, scheduler: SchedulerMixin, label_ids: torch.Tensor, scale: float):
        self.classifier, self.scheduler, self.label_ids, self.scale = classifier, scheduler, label_ids, scale
        self.ancestral = type(scheduler).__name__ in ANCESTRAL_SCHEDULERS
        self.num_gradients = 0  # classifier forward-and-backward passes of the batch, for the cost of guidance

    def gradient(self, model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """`grad_x log p(y | x)` at `x = model_input` (the variance-preserving `x_t` the UNet sees), in its dtype."""
        with torch.enable_grad():
            x = model_input.detach().to(self.classifier.dtype).requires_grad_(True)
            logits = self.classifier(x, timestep).logits.float()
            chosen = logits.log_softmax(dim=1).gather(1, self.label_ids.to(logits.device)[:, None])
            (gradient,) = torch.autograd.grad(chosen.sum(), x)  # images are independent: the sum's gradient is each's
        self.num_gradients += 1
        return gradient.to(model_input.dtype)

    def guide_model_output(
        self, model_output: torch.Tensor, model_input: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        """
        The score form: `eps - sqrt(1 - alpha_bar_t) * s * grad log p(y | x_t)`, written in the model's prediction
        type (the same change of `x_0` whether it predicts the noise, the sample or v). Channels after the sample's
        (a learned variance) are kept.
        """
        channels = model_input.shape[1]
        alpha_bar = alpha_bar_at(self.scheduler, timestep)
        noise_shift = -math.sqrt(1 - alpha_bar) * self.scale * self.gradient(model_input, timestep)
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type == "epsilon":
            shift = noise_shift
        elif prediction_type == "v_prediction":  # v = (eps - sqrt(1 - abar) x_t) / sqrt(abar)
            shift = noise_shift / math.sqrt(alpha_bar)
        elif prediction_type == "sample":  # x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
            shift = -math.sqrt((1 - alpha_bar) / alpha_bar) * noise_shift
        else:
            raise ValueError(f"Classifier guidance does not know the prediction type {prediction_type!r}.")
        guided = model_output[:, :channels] + shift.to(model_output.dtype)
        return torch.cat([guided, model_output[:, channels:]], dim=1) if model_output.shape[1] > channels else guided

    def shift_mean(self, prev_sample: torch.Tensor, gradient: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """
        Dhariwal & Nichol's Algorithm 1: the ancestral step's mean moves by `s * Sigma_t * grad log p(y | x_t)`, with
        `Sigma_t` the step's variance (the posterior variance, or beta_t for `variance_type="fixed_large"`). Adding it
        to the step's result is the same as adding it to the mean before the step's noise.
        """
        t = int(timestep)
        alphas_cumprod = self.scheduler.alphas_cumprod.to(torch.float64)
        previous = int(self.scheduler.previous_timestep(t))
        alpha_bar, alpha_bar_prev = alphas_cumprod[t], alphas_cumprod[previous] if previous >= 0 else 1.0
        beta = 1 - alpha_bar / alpha_bar_prev
        variance = (
            beta
            if self.scheduler.config.get("variance_type") == "fixed_large"
            else ((1 - alpha_bar_prev) / (1 - alpha_bar) * beta)
        )
        return prev_sample + (self.scale * float(variance)) * gradient
