"""DDIM sampling: Song et al. 2021, "Denoising Diffusion Implicit Models", https://arxiv.org/abs/2010.02502.

Config- and output-compatible with `diffusers.DDIMScheduler`, with two differences. Every step goes to the next
timestep of the schedule, whatever the spacing (diffusers steps back by the fixed stride T // N, which misses the
schedule with "linspace" spacing or when T / N is not an integer). And the "sigmoid" beta schedule is available here
too; diffusers' DDIMScheduler lacks it, so a config saved with it loads only into this class (or diffusers'
DDPMScheduler).
"""

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.schedulers.scheduling_ddpm import betas_for_alpha_bar, rescale_zero_terminal_snr
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

# ---------------------------------------------------------------------------------------------------------------
# Shared maths. An identical copy lives in scheduling_ddpm.py (each scheduler file stands alone); keep them equal.
# ---------------------------------------------------------------------------------------------------------------

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine", "sigmoid")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """beta_1..beta_T in float32, the precision diffusers uses, so that both give the same alphas_cumprod."""
    T = num_train_timesteps
    if beta_schedule == "linear":  # Ho et al. 2020, section 4
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if beta_schedule == "scaled_linear":  # linear in sqrt(beta), as in latent diffusion (Rombach et al. 2022)
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    if beta_schedule in ("squaredcos_cap_v2", "cosine"):
        # eq. (17) of Nichol & Dhariwal 2021, https://arxiv.org/abs/2102.09672, beta capped at 0.999
        return betas_for_alpha_bar(T)
    if beta_schedule == "sigmoid":  # GeoDiff, Xu et al. 2022, https://arxiv.org/abs/2203.02923
        return torch.sigmoid(torch.linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start
    raise ValueError(f"`beta_schedule` must be one of {BETA_SCHEDULES}; got {beta_schedule!r}")


def spaced_timesteps(config, num_inference_steps: int) -> np.ndarray:
    """Descending timesteps for a spacing of Table 2 of Lin et al. 2024, https://arxiv.org/abs/2305.08891."""
    T, N = config.num_train_timesteps, num_inference_steps
    if not _is_integer(N) or not 1 <= N <= T:
        raise ValueError(f"`num_inference_steps` must be an integer between 1 and num_train_timesteps={T}; got {N!r}")
    if config.timestep_spacing == "linspace":  # evenly from T - 1 down to 0, both ends included
        timesteps = np.linspace(0, T - 1, N).round()[::-1]
    elif config.timestep_spacing == "leading":  # multiples of T // N counted up from 0, then shifted
        timesteps = np.arange(N)[::-1] * (T // N) + config.steps_offset
    else:  # "trailing": multiples of T / N counted down from T, minus one; always exactly N of them
        timesteps = np.round(T - np.arange(N) * (T / N)) - 1
    if timesteps[0] >= T:
        raise ValueError(f"`steps_offset`={config.steps_offset} pushes timestep {int(timesteps[0])} past {T - 1}")
    return timesteps.astype(np.int64)


def default_num_steps(config, preferred: int | None) -> int:
    """`preferred` steps (every training step for `None`), at most the training steps, and fewer where "leading"
    spacing shifted by `steps_offset` would put the first timestep past the last training step (every training step
    with an offset of 1 would start at T)."""
    T = config.num_train_timesteps
    N = min(preferred or T, T)
    while N > 1 and config.timestep_spacing == "leading" and (N - 1) * (T // N) + config.steps_offset >= T:
        N -= 1
    return N


def checked_timesteps(config, timesteps) -> np.ndarray:
    """User-given timesteps, validated: a non-empty, strictly descending sequence of training timesteps."""
    given = torch.as_tensor(timesteps).cpu().numpy().reshape(-1)
    timesteps = given.astype(np.int64)
    T = config.num_train_timesteps
    if (
        len(timesteps) == 0
        or np.any(timesteps != given)
        or np.any(np.diff(timesteps) >= 0)
        or timesteps[0] >= T
        or timesteps[-1] < 0
    ):
        raise ValueError(f"`timesteps` must be strictly descending integers in [0, {T - 1}]; got {given.tolist()}")
    return timesteps


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding of Imagen (Saharia et al. 2022, section 2.3, https://arxiv.org/abs/2205.11487): per sample,
    s = the `ratio` quantile of |x_0| kept in [1, max_value]; x_0 is clamped to [-s, s] and divided by s."""
    flat = x0.reshape(x0.shape[0], -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # quantile (and clamp on CPU) need full precision
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)
    return (flat.clamp(-s, s) / s).reshape(x0.shape).to(x0.dtype)


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}")


class _NoiseScheduleMixin:
    """What both schedulers share: the betas, the choice of timesteps and the forward process q(x_t | x_0). A scheduler
    sets `_default_inference_steps` and builds its per-timestep coefficients in `_use_timesteps`."""

    def _init_noise_schedule(
        self, num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr
    ) -> None:
        if beta_schedule == "cosine":  # diffusers knows only the original name; store that so saved configs load there
            beta_schedule = "squaredcos_cap_v2"
            self.register_to_config(beta_schedule=beta_schedule)
        if not _is_integer(num_train_timesteps) or num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be an integer >= 1; got {num_train_timesteps!r}")
        self._check_sampling_bounds()
        if trained_betas is not None:
            self.betas = torch.tensor(trained_betas, dtype=torch.float32)
            if len(self.betas) != num_train_timesteps:
                raise ValueError(f"`trained_betas` must hold num_train_timesteps={num_train_timesteps} values")
        else:
            self.betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
        # Else alpha_t = 1 - beta_t leaves (0, 1), and a first beta of 0 leaves no noise to remove at t = 0 (0 / 0).
        if not bool(((self.betas > 0) & (self.betas < 1)).all()):
            source = (
                "`trained_betas`" if trained_betas is not None else f"`beta_start`={beta_start}, `beta_end`={beta_end}"
            )
            raise ValueError(
                f"Every beta must lie in (0, 1); {source} gives betas in "
                f"[{float(self.betas.min()):g}, {float(self.betas.max()):g}]"
            )
        if rescale_betas_zero_snr:  # Algorithm 1 of Lin et al. 2024, https://arxiv.org/abs/2305.08891
            self.betas = rescale_zero_terminal_snr(self.betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self._noise_level_tables = {}
        self.num_inference_steps = None
        self.custom_timesteps = False

    def _check_sampling_bounds(self) -> None:
        """The config values that bound x_0 or shift the timesteps, which would otherwise fail silently (a range of 0
        clips every image to grey)."""
        config = self.config
        if not _is_integer(config.steps_offset) or config.steps_offset < 0:
            raise ValueError(f"`steps_offset` must be an integer >= 0; got {config.steps_offset!r}")
        if not _is_number(config.clip_sample_range) or not 0 < config.clip_sample_range < math.inf:
            raise ValueError(f"`clip_sample_range` must be a positive number; got {config.clip_sample_range!r}")
        if not _is_number(config.dynamic_thresholding_ratio) or not 0 < config.dynamic_thresholding_ratio <= 1:
            raise ValueError(
                f"`dynamic_thresholding_ratio` must be in (0, 1]; got {config.dynamic_thresholding_ratio!r}"
            )
        if not _is_number(config.sample_max_value) or not 0 < config.sample_max_value < math.inf:
            raise ValueError(f"`sample_max_value` must be a positive number; got {config.sample_max_value!r}")

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """
        Choose the timesteps of the reverse process (run before sampling).

        Args:
            num_inference_steps (`int`, *optional*): how many steps, spaced by `config.timestep_spacing`. When neither
                this nor `timesteps` is given: every training step for DDPM; 50 (or every training step, if fewer)
                for DDIM; fewer where a `steps_offset` of "leading" spacing would push the first past the last
                training step.
            device (`str` or `torch.device`, *optional*): where `self.timesteps` is placed.
            timesteps (`list[int]`, *optional*): strictly descending custom timesteps, instead of a count.
        """
        if timesteps is not None and num_inference_steps is not None:
            raise ValueError("Pass either `num_inference_steps` or `timesteps`, not both")
        self.custom_timesteps = timesteps is not None
        if timesteps is not None:
            timesteps = checked_timesteps(self.config, timesteps)
        else:
            if num_inference_steps is None:
                num_inference_steps = default_num_steps(self.config, self._default_inference_steps)
            timesteps = spaced_timesteps(self.config, num_inference_steps)
        self.num_inference_steps = len(timesteps)
        self._use_timesteps(timesteps, device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The timestep that `step` moves to from `timestep`; negative past the last (the clean sample)."""
        return self._coefficients_at(timestep).prev_t

    def _coefficients_at(self, timestep: int | torch.Tensor):
        value = timestep.item() if isinstance(timestep, (torch.Tensor, np.ndarray)) else timestep
        coefficients = self._coefficients.get(value)  # 980.0 finds timestep 980; 980.7 finds none, not a neighbour
        if coefficients is None:
            raise ValueError(
                f"`timestep` {value} is not in this scheduler's timesteps ({len(self.timesteps)} steps from "
                f"{int(self.timesteps[0])} down to {int(self.timesteps[-1])}); use the values of `scheduler.timesteps`"
            )
        return coefficients

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """The model sees x_t unscaled; present for interchangeability with schedulers that scale it."""
        return sample

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps: eq. (4) of Ho et al. 2020."""
        sqrt_alpha_bar, sqrt_one_minus_alpha_bar = self._noise_levels(timesteps, original_samples)
        return sqrt_alpha_bar * original_samples + sqrt_one_minus_alpha_bar * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0, the v-prediction target of Salimans & Ho 2022
        (https://arxiv.org/abs/2202.00512)."""
        sqrt_alpha_bar, sqrt_one_minus_alpha_bar = self._noise_levels(timesteps, sample)
        return sqrt_alpha_bar * noise - sqrt_one_minus_alpha_bar * sample

    def snr(self, timesteps: torch.Tensor | list[int] | int | None = None) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) of x_t (Kingma et al. 2021,
        https://arxiv.org/abs/2107.00630); at every training timestep when `timesteps` is None."""
        snr = self.alphas_cumprod / (1 - self.alphas_cumprod)
        if timesteps is None:
            return snr
        timesteps = self._train_timesteps(timesteps, snr.device)
        return snr[timesteps]

    def _noise_levels(self, timesteps, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # One gather from a table kept per device and dtype: no per-call host-to-device copy of alphas_cumprod.
        key = (like.device, like.dtype)
        if key not in self._noise_level_tables:
            table = torch.stack([self.alphas_cumprod.sqrt(), (1 - self.alphas_cumprod).sqrt()])
            self._noise_level_tables[key] = table.to(device=like.device, dtype=like.dtype)
        timesteps = self._train_timesteps(timesteps, like.device).reshape(-1)
        levels = self._noise_level_tables[key][:, timesteps].view(2, -1, *([1] * (like.ndim - 1)))
        return levels[0], levels[1]

    def _train_timesteps(self, timesteps, device) -> torch.Tensor:
        """`timesteps` as an integer tensor on `device`; a ValueError unless each is a training timestep 0..T-1 (an
        index of -1 would otherwise silently mean T - 1)."""
        timesteps = torch.as_tensor(timesteps, device=device)
        T = self.config.num_train_timesteps
        if timesteps.is_floating_point():
            if not bool((timesteps == timesteps.round()).all()):
                raise ValueError(f"`timesteps` must be integers in [0, {T - 1}]; got {timesteps.tolist()}")
            timesteps = timesteps.long()
        if bool(((timesteps < 0) | (timesteps >= T)).any()):
            raise ValueError(f"`timesteps` must be integers in [0, {T - 1}]; got {timesteps.tolist()}")
        return timesteps

    def __len__(self) -> int:
        return self.config.num_train_timesteps


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DDIMSchedulerOutput(BaseOutput):
    """
    Output of [`DDIMScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            x_{t_prev}, the sample at the next timestep of the schedule; the input of the next denoising step.
        pred_original_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The model's estimate of x_0 at this step (after clipping or thresholding), for previews or guidance.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class _StepCoefficients(NamedTuple):
    """Everything `step` needs at one timestep t, computed once per schedule (float32, as diffusers computes)."""

    t: int
    prev_t: int  # where the step goes; negative past the last timestep (the clean sample)
    sqrt_alpha_bar: float
    sqrt_one_minus_alpha_bar: float
    sqrt_alpha_bar_prev: float


class DDIMScheduler(_NoiseScheduleMixin, SchedulerMixin, ConfigMixin):
    """
    The generalised reverse process of Song et al. 2021, eq. (12): deterministic at eta = 0 (DDIM), the DDPM posterior
    at eta = 1. Notation: alpha_bar_t here is the paper's alpha_t.

    This class inherits from [`SchedulerMixin`] and [`ConfigMixin`] (saving, loading, `from_config`).

    Args:
        num_train_timesteps (`int`, defaults to 1000): T, the number of diffusion steps the model was trained with.
        beta_start (`float`, defaults to 0.0001): beta_1 of the "linear", "scaled_linear" and "sigmoid" schedules.
        beta_end (`float`, defaults to 0.02): beta_T of those schedules.
        beta_schedule (`str`, defaults to `"linear"`): `"linear"`, `"scaled_linear"`, `"squaredcos_cap_v2"` (the
            cosine schedule of Nichol & Dhariwal; `"cosine"` is accepted and stored as `"squaredcos_cap_v2"` so that
            saved configs load in diffusers) or `"sigmoid"` (which diffusers' DDIMScheduler cannot load).
        trained_betas (`np.ndarray` or `list[float]`, *optional*): betas to use as they are, instead of a schedule.
        clip_sample (`bool`, defaults to `True`): clamp the predicted x_0 to [-clip_sample_range, clip_sample_range].
        set_alpha_to_one (`bool`, defaults to `True`): the alpha_bar that the last step moves to: 1 (a clean x_0),
            or alpha_bar of training timestep 0.
        steps_offset (`int`, defaults to 0): added to every timestep of the `"leading"` spacing.
        prediction_type (`str`, defaults to `"epsilon"`): what the model predicts: `"epsilon"` (the noise),
            `"sample"` (x_0) or `"v_prediction"` (v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0).
        thresholding (`bool`, defaults to `False`): dynamic thresholding of x_0 (Imagen); replaces clipping.
        dynamic_thresholding_ratio (`float`, defaults to 0.995): the quantile of |x_0| used by thresholding.
        clip_sample_range (`float`, defaults to 1.0): the bound used when `clip_sample` is on.
        sample_max_value (`float`, defaults to 1.0): the largest threshold that thresholding may use.
        timestep_spacing (`str`, defaults to `"leading"`): `"linspace"`, `"leading"` or `"trailing"` (Table 2 of
            Lin et al. 2024).
        rescale_betas_zero_snr (`bool`, defaults to `False`): rescale betas to zero terminal SNR (Lin et al. 2024).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1
    init_noise_sigma = 1.0
    _default_inference_steps = 50

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
    ):
        check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self._init_noise_schedule(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr
        )
        # The last step has no alpha_bar to move to: Song et al. define alpha_0 = 1, a clean x_0
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self._use_timesteps(np.arange(num_train_timesteps)[::-1].copy())

    def _use_timesteps(self, timesteps: np.ndarray, device: str | torch.device | None = None) -> None:
        self.timesteps = torch.from_numpy(timesteps).to(device)
        t = torch.from_numpy(timesteps)
        if self.custom_timesteps:
            prev_t = torch.from_numpy(np.append(timesteps[1:], -1))
        else:  # diffusers' rule, whatever the spacing: t - T // num_inference_steps
            prev_t = t - self.config.num_train_timesteps // len(timesteps)
        self._coefficients, self._variance_terms, self._noise_weights_by_eta = {}, {}, {}
        self._add_coefficients(t, prev_t)

    def _add_coefficients(self, t: torch.Tensor, prev_t: torch.Tensor) -> None:
        """Caches what `step` needs at each timestep of `t`, which steps to the same place of `prev_t`."""
        alpha_bar = self.alphas_cumprod[t]
        alpha_bar_prev = torch.where(prev_t >= 0, self.alphas_cumprod[prev_t.clamp(min=0)], self.final_alpha_cumprod)
        columns = [t, prev_t, alpha_bar.sqrt(), (1 - alpha_bar).sqrt(), alpha_bar_prev.sqrt()]
        # Python floats: step() then multiplies tensors by plain scalars, with no indexing or device copies.
        self._coefficients.update({row[0]: _StepCoefficients(*row) for row in zip(*(c.tolist() for c in columns))})
        # sigma_t(eta = 1)^2 = (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev), eq. (16)
        ddpm_std = ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
        self._variance_terms.update(zip(t.tolist(), zip(ddpm_std, alpha_bar_prev)))

    def _coefficients_at(self, timestep: int | torch.Tensor) -> _StepCoefficients:
        """The coefficients of a step from `timestep`: any training timestep, as diffusers' DDIM steps anywhere (to
        t - T // num_inference_steps); with custom timesteps, one of them."""
        value = timestep.item() if isinstance(timestep, (torch.Tensor, np.ndarray)) else timestep
        coefficients = self._coefficients.get(value)  # 980.0 finds timestep 980; 980.7 finds none
        if coefficients is not None:
            return coefficients
        T = self.config.num_train_timesteps
        if self.custom_timesteps:
            raise ValueError(
                f"`timestep` {value} is not one of the custom timesteps this scheduler was set to "
                f"({self.timesteps.tolist()}): with custom timesteps, each step goes to the next of them."
            )
        if not (_is_number(value) and float(value).is_integer() and 0 <= value < T):
            raise ValueError(f"`timestep` must be an integer in [0, {T - 1}], got {value!r}.")
        t = torch.tensor([int(value)])
        self._add_coefficients(t, t - T // self.num_inference_steps)
        return self._coefficients[int(value)]

    def _noise_weights(self, eta: float, timestep: int) -> tuple[float, float]:
        """sigma_t(eta) of eq. (16) and the weight sqrt(1 - alpha_bar_prev - sigma_t^2) of eq. (12)'s "direction
        pointing to x_t", in float32 as diffusers computes them: the weight cancels badly near alpha_bar_t = 0, and
        computing it the same way keeps the outputs the same. Cached per eta and timestep."""
        weights = self._noise_weights_by_eta.setdefault(eta, {})
        if timestep not in weights:
            ddpm_std, alpha_bar_prev = self._variance_terms[timestep]
            sigma = eta * ddpm_std
            weight = (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt()  # clamp: rounding can dip below zero
            weights[timestep] = (sigma.item(), weight.item())
        return weights[timestep]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DDIMSchedulerOutput | tuple:
        """
        One reverse step x_t -> x_{t_prev}, eq. (12) of Song et al. 2021.

        Args:
            model_output (`torch.Tensor`): the network's output at (x_t, t), same shape as `sample`.
            timestep (`int` or `torch.Tensor`): t, one of `self.timesteps`.
            sample (`torch.Tensor`): x_t.
            eta (`float`, defaults to 0.0): eta in [0, 1] of eq. (16): 0 is deterministic DDIM, 1 is DDPM's posterior.
            use_clipped_model_output (`bool`, defaults to `False`): recompute eps from the clipped x_0 (as GLIDE does),
                so that the direction term agrees with the clipped prediction.
            generator (`torch.Generator`, *optional*): source of the noise z when eta > 0.
            variance_noise (`torch.Tensor`, *optional*): z itself, instead of drawing it with `generator`.
            return_dict (`bool`, defaults to `True`): return a [`DDIMSchedulerOutput`] rather than a tuple.

        Returns:
            [`DDIMSchedulerOutput`] or `tuple`: (prev_sample, pred_original_sample).
        """
        eta = float(eta)
        if not 0 <= eta <= 1:
            raise ValueError(f"`eta` must be in [0, 1]; got {eta}")
        if variance_noise is not None and generator is not None:
            raise ValueError("Pass either `generator` or `variance_noise`, not both")
        if model_output.shape != sample.shape:
            shapes = f"{tuple(sample.shape)}, that of `sample`; got {tuple(model_output.shape)}"
            raise ValueError(f"`model_output` must have shape {shapes}")
        c = self._coefficients_at(timestep)
        prediction = self.config.prediction_type

        # 1. predicted x_0 and eps, the "predicted x_0" of eq. (12); v-prediction from Salimans & Ho 2022
        if prediction == "epsilon":
            eps = model_output
            x0 = (sample - c.sqrt_one_minus_alpha_bar * eps) / c.sqrt_alpha_bar
        elif prediction == "sample":
            x0 = model_output
            eps = (sample - c.sqrt_alpha_bar * x0) / c.sqrt_one_minus_alpha_bar
        else:
            x0 = c.sqrt_alpha_bar * sample - c.sqrt_one_minus_alpha_bar * model_output
            eps = c.sqrt_alpha_bar * model_output + c.sqrt_one_minus_alpha_bar * sample

        # 2. keep x_0 in the data range: dynamic thresholding (Imagen) or plain clipping
        if self.config.thresholding:
            x0 = dynamic_threshold(x0, self.config.dynamic_thresholding_ratio, self.config.sample_max_value)
        elif self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        if use_clipped_model_output:  # eps consistent with the clipped x_0, as GLIDE does
            eps = (sample - c.sqrt_alpha_bar * x0) / c.sqrt_one_minus_alpha_bar

        # 3. sigma_t(eta), eq. (16), and the "direction pointing to x_t" of eq. (12)
        sigma, direction_weight = self._noise_weights(eta, c.t)
        direction = direction_weight * eps

        # 4. x_{t_prev} = sqrt(alpha_bar_prev) x_0 + direction + sigma_t z, eq. (12)
        prev_sample = c.sqrt_alpha_bar_prev * x0 + direction
        if eta > 0:
            if variance_noise is None:
                variance_noise = randn_tensor(
                    sample.shape, generator=generator, device=sample.device, dtype=sample.dtype
                )
            prev_sample = prev_sample + sigma * variance_noise

        if not return_dict:
            return prev_sample, x0
        return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)
