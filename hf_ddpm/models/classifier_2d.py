# Copyright 2026 The hf-ddpm authors. Licensed under the Apache License, Version 2.0.
"""The noise-aware classifier of classifier guidance (Dhariwal & Nichol 2021, https://huggingface.co/papers/2105.05233).

Self-contained: this file imports only torch, diffusers and the standard library, so it can be copied next to a saved
model and loaded with `trust_remote_code=True`.
"""

import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import AttnDownBlock2D, DownBlock2D, UNetMidBlock2D
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class DDPMClassifier2DOutput(BaseOutput):
    """
    The output of [`DDPMClassifier2DModel`].

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_classes)`):
            Unnormalised log-probabilities of each class given the noisy image and its timestep.
    """

    logits: torch.Tensor


class AttentionPool2d(nn.Module):
    """
    Attention pooling (CLIP's, as Dhariwal & Nichol's classifier uses it): the mean of the feature map, as one more
    token, attends over every pixel (all tokens with a learned position embedding); its output is projected to the
    logits. Unlike average pooling, it can weigh where in the image the evidence is.
    """

    def __init__(self, num_pixels: int, channels: int, head_dim: int | None, out_dim: int):
        super().__init__()
        self.num_heads = 1 if head_dim is None else channels // head_dim
        self.position_embedding = nn.Parameter(torch.randn(num_pixels + 1, channels) / channels**0.5)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = nn.Linear(channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (batch, pixels, channels)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1) + self.position_embedding.to(x.dtype)
        qkv = self.to_qkv(tokens).unflatten(-1, (3, self.num_heads, -1))  # (batch, tokens, 3, heads, head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, tokens, head_dim)
        # Only the mean token's output is read: it alone asks the question.
        pooled = F.scaled_dot_product_attention(query[:, :, :1], key, value)  # (batch, heads, 1, head_dim)
        return self.to_out(pooled.transpose(1, 2).flatten(1))


class DDPMClassifier2DModel(ModelMixin, ConfigMixin):
    r"""
    A classifier of noisy images: it takes `x_t` and its timestep `t` and returns the logits of `p(y | x_t)`, whose
    gradient with respect to `x_t` guides a diffusion model towards class `y` (classifier guidance). It is the
    encoder half of the UNet (ResNet blocks with the time embedding as FiLM scale and shift, self-attention at the
    levels asked for, a middle block of ResNet, attention, ResNet) followed by GroupNorm, SiLU and attention pooling,
    as in Dhariwal & Nichol 2021. It must see images noised with the noise schedule of the diffusion model it guides:
    `num_train_timesteps` records the schedule's length, and the pipeline checks it.

    Built from diffusers' down and middle blocks, so that this file ships as code beside a saved model.

    This model inherits from [`ModelMixin`]; check its documentation for the generic methods (saving, loading,
    `torch_dtype`, gradient checkpointing).

    Parameters:
        sample_size (`int`, *optional*, defaults to 32):
            Height and width of the images; divisible by `2 ** (len(block_out_channels) - 1)`. The attention pooling's
            position embedding is learned for this size, so the classifier takes no other.
        in_channels (`int`, *optional*, defaults to 3): Channels of the input image.
        num_classes (`int`, *optional*, defaults to 10): Number of classes (logits).
        block_out_channels (`tuple[int, ...]`, *optional*, defaults to `(64, 128, 256)`):
            Width of each resolution level, from the finest to the coarsest; each level after the first halves the
            resolution.
        layers_per_block (`int`, *optional*, defaults to 2): ResNet blocks per level.
        attention_levels (`tuple[bool, ...]`, *optional*, defaults to `None`):
            One flag per level: whether its ResNet blocks are followed by self-attention. `None`: attention at the
            coarsest level only. The middle block always has self-attention.
        attention_head_dim (`int`, *optional*, defaults to `None`):
            Channels per attention head, for the self-attention and the pooling; `None` means one head spanning all
            channels.
        norm_num_groups (`int`, *optional*, defaults to 32): Groups of every GroupNorm; divides every width.
        norm_eps (`float`, *optional*, defaults to 1e-5): Epsilon of every GroupNorm.
        dropout (`float`, *optional*, defaults to 0.0): Dropout inside the ResNet blocks.
        num_train_timesteps (`int`, *optional*, defaults to 1000):
            The number of timesteps of the noise schedule the classifier was trained on.
        id2label (`dict[int, str]`, *optional*):
            Class names by id, so that they travel with the classifier (a pipeline guiding an unconditional UNet
            takes its class names from here).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        *,
        sample_size: int = 32,
        in_channels: int = 3,
        num_classes: int = 10,
        block_out_channels: tuple[int, ...] = (64, 128, 256),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] | None = None,
        attention_head_dim: int | None = None,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
        num_train_timesteps: int = 1000,
        id2label: dict | None = None,
    ):
        super().__init__()
        widths = list(block_out_channels) if isinstance(block_out_channels, (list, tuple)) else []
        if attention_levels is None:
            attention_levels = tuple(level == len(widths) - 1 for level in range(len(widths)))
        _check_config(
            sample_size,
            in_channels,
            num_classes,
            widths,
            layers_per_block,
            attention_levels,
            attention_head_dim,
            norm_num_groups,
            norm_eps,
            dropout,
            num_train_timesteps,
        )
        embedding_dim = 4 * widths[0]
        self.time_proj = Timesteps(widths[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(widths[0], embedding_dim)
        self.conv_in = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1)

        common = dict(
            temb_channels=embedding_dim,
            dropout=dropout,
            resnet_eps=norm_eps,
            resnet_time_scale_shift="scale_shift",
            resnet_groups=norm_num_groups,
        )
        self.down_blocks = nn.ModuleList()
        channels = widths[0]
        for level, width in enumerate(widths):
            last = level == len(widths) - 1
            if attention_levels[level]:
                head_dim = attention_head_dim or width
                block = AttnDownBlock2D(
                    in_channels=channels,
                    out_channels=width,
                    num_layers=layers_per_block,
                    attention_head_dim=head_dim,
                    downsample_type=None if last else "conv",
                    **common,
                )
            else:
                block = DownBlock2D(
                    in_channels=channels,
                    out_channels=width,
                    num_layers=layers_per_block,
                    add_downsample=not last,
                    **common,
                )
            self.down_blocks.append(block)
            channels = width
        self.mid_block = UNetMidBlock2D(
            in_channels=channels,
            attention_head_dim=attention_head_dim or channels,
            attn_groups=norm_num_groups,
            **common,
        )
        self.norm_out = nn.GroupNorm(norm_num_groups, channels, eps=norm_eps)
        side = sample_size // 2 ** (len(widths) - 1)
        self.pool = AttentionPool2d(side * side, channels, attention_head_dim, num_classes)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, return_dict: bool = True
    ) -> DDPMClassifier2DOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, sample_size, sample_size)`):
                The noisy images `x_t`, at the variance-preserving scale of the training schedule.
            timestep (`torch.Tensor`, `float` or `int`):
                The diffusion timestep: a number, a 0-d tensor, or a 1-d tensor of length 1 or `batch_size`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMClassifier2DOutput`] instead of a plain tuple.

        Returns:
            [`DDPMClassifier2DOutput`] or `tuple`: the logits, of shape `(batch_size, num_classes)`.
        """
        self.check_sample(sample)
        timesteps = self._timesteps_for_batch(timestep, sample.shape[0], sample.device)
        embedding = self.time_embedding(self.time_proj(timesteps).to(self.conv_in.weight.dtype))
        h = self.conv_in(sample)
        for block in self.down_blocks:
            h, _ = block(h, embedding)
        h = self.mid_block(h, embedding)
        logits = self.pool(F.silu(self.norm_out(h)))
        if not return_dict:
            return (logits,)
        return DDPMClassifier2DOutput(logits=logits)

    # Copied from hf_ddpm.models.unet_2d.DDPMUNet2DModel._timesteps_for_batch
    @staticmethod
    def _timesteps_for_batch(timestep: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
        if torch.is_tensor(timestep):
            if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] != 1 and timestep.shape[0] != batch):
                raise ValueError(
                    f"`timestep` must be a number, a 0-d tensor, or a 1-d tensor of length 1 or {batch} (the batch "
                    f"size), got shape {tuple(timestep.shape)}."
                )
        elif isinstance(timestep, bool) or not isinstance(timestep, numbers.Real):
            raise ValueError(f"`timestep` must be a number or a tensor, got {type(timestep).__name__}.")
        return torch.as_tensor(timestep, dtype=torch.float32, device=device).reshape(-1).expand(batch)

    def check_sample(self, sample: torch.Tensor) -> None:
        """A `ValueError` unless `sample` is a `(batch, in_channels, sample_size, sample_size)` tensor."""
        size, channels = self.config.sample_size, self.config.in_channels
        expected = f"(batch, {channels}, {size}, {size})"
        if not torch.is_tensor(sample) or sample.ndim != 4 or tuple(sample.shape[1:]) != (channels, size, size):
            got = tuple(sample.shape) if torch.is_tensor(sample) else type(sample).__name__
            raise ValueError(
                f"`sample` must be a tensor of shape {expected} (the classifier's `in_channels` and `sample_size`), "
                f"got {got}."
            )


def _check_config(
    sample_size,
    in_channels,
    num_classes,
    widths,
    layers_per_block,
    attention_levels,
    attention_head_dim,
    norm_num_groups,
    norm_eps,
    dropout,
    num_train_timesteps,
) -> None:
    """Raises a ValueError naming the first configuration argument that cannot build a working network."""

    def positive_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if not widths or not all(positive_int(width) for width in widths):
        raise ValueError(f"`block_out_channels` must be a non-empty list of positive ints, got {widths}.")
    factor = 2 ** (len(widths) - 1)
    if not positive_int(sample_size) or sample_size % factor:
        raise ValueError(
            f"`sample_size` must be a positive int divisible by {factor} ({len(widths)} levels in "
            f"`block_out_channels`), got {sample_size!r}."
        )
    for name, value in (
        ("in_channels", in_channels),
        ("layers_per_block", layers_per_block),
        ("num_train_timesteps", num_train_timesteps),
    ):
        if not positive_int(value):
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    if not positive_int(num_classes) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an int >= 2, got {num_classes!r}.")
    levels_ok = isinstance(attention_levels, (list, tuple)) and len(attention_levels) == len(widths)
    if not levels_ok or not all(isinstance(flag, bool) for flag in attention_levels):
        raise ValueError(
            f"`attention_levels` must hold one bool per level of `block_out_channels` ({len(widths)}), "
            f"got {attention_levels}."
        )
    if not positive_int(norm_num_groups) or any(width % norm_num_groups for width in widths):
        raise ValueError(
            f"`norm_num_groups` must be a positive int dividing every width in `block_out_channels` {tuple(widths)}, "
            f"got {norm_num_groups!r}."
        )
    if attention_head_dim is not None and (
        not positive_int(attention_head_dim) or any(width % attention_head_dim for width in widths)
    ):
        raise ValueError(
            f"`attention_head_dim` must be None (one head) or a positive int dividing every width {tuple(widths)}, "
            f"got {attention_head_dim!r}."
        )
    if not isinstance(norm_eps, numbers.Real) or isinstance(norm_eps, bool) or not 0 < norm_eps < float("inf"):
        raise ValueError(f"`norm_eps` must be a finite number > 0, got {norm_eps!r}.")
    if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be a number in [0, 1), got {dropout!r}.")
