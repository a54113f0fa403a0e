# Copyright 2026 The hf-ddpm authors. Licensed under the Apache License, Version 2.0.
"""The noise-prediction UNet of DDPM (Ho et al. 2020, https://huggingface.co/papers/2006.11239).

Self-contained: this file imports only torch, diffusers and the standard library, so it can be copied
next to a saved model and loaded with `trust_remote_code=True`.
"""

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

# Batch x height x width from which CPU inference keeps the activations channels-last: below it the layout changes
# cost more than they save (docs/speed.md; see `DDPMUNet2DModel._activation_layout`).
CHANNELS_LAST_MIN_PIXELS = 8192


@dataclass
class DDPMUNet2DOutput(BaseOutput):
    """
    The output of [`DDPMUNet2DModel`].

    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, height, width)`):
            The network's prediction (noise, sample or velocity, as the model was trained).
    """

    sample: torch.Tensor


def sinusoidal_timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style position encoding of (possibly fractional) timesteps: `[cos | sin]`, shape `(batch, dim)`."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    angles = timesteps.float()[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def pixels_last(x: torch.Tensor) -> torch.Tensor:
    """`(batch, channels, height, width)` as `(batch, pixels, channels)`; a view when `x` is channels-last."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def from_pixels_last(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pixels_last`: a channels-last `(batch, channels, height, width)` view of `tokens`."""
    return tokens.unflatten(1, (height, width)).permute(0, 3, 1, 2)


def group_norm(
    x: torch.Tensor, norm: nn.GroupNorm, gain: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`norm` applied to `x`; `gain` and `bias` of shape `(batch, channels)`, when given, replace its affine."""
    if not torch.is_grad_enabled() and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        if gain is None:
            gain, bias = norm.weight[None], norm.bias[None]
        return channels_last_group_norm(x, norm.num_groups, gain, bias, norm.eps)
    if gain is None:
        return norm(x)
    # With the batch folded into the channels, GroupNorm's per-channel affine is a per-image affine (each image
    # keeps its own groups): one GroupNorm kernel instead of a GroupNorm and a multiply-add over x.
    batch, channels = x.shape[:2]
    folded = x.reshape(1, batch * channels, *x.shape[2:])
    return F.group_norm(folded, batch * norm.num_groups, gain.flatten(), bias.flatten(), norm.eps).view(x.shape)


def channels_last_group_norm(
    x: torch.Tensor, num_groups: int, gain: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """
    GroupNorm of a channels-last `x` with a per-image affine (`gain` and `bias` of shape `(batch or 1, channels)`),
    for inference. PyTorch's own GroupNorm is an order of magnitude slower on channels-last input; here the
    statistics are reductions over the pixels, which are contiguous per channel, and the normalization and affine
    are one multiply-add per element. Each channel's variance is taken around its own mean and the channels are
    then pooled into groups exactly (Chan et al.'s parallel formula): an offset large against the spread costs
    only the fp32 rounding of `x * scale + offset`, which PyTorch's GroupNorm pays as well.
    """
    batch, channels = x.shape[:2]
    grouped = (batch, num_groups, channels // num_groups)
    tokens = pixels_last(x).to(torch.promote_types(x.dtype, torch.float32))
    channel_mean = tokens.mean(1, keepdim=True)
    channel_variance = (tokens - channel_mean).square_().mean(1).view(grouped)
    channel_mean = channel_mean.view(grouped)
    mean = channel_mean.mean(2, keepdim=True)
    variance = channel_variance.add_((channel_mean - mean).square_()).mean(2, keepdim=True)
    scale = gain.view(-1, *grouped[1:]) * variance.add_(eps).rsqrt_()
    offset = torch.addcmul(bias.view(-1, *grouped[1:]), mean, scale, value=-1)
    per_image_and_channel = (batch, channels, 1, 1)
    return torch.addcmul(
        offset.view(per_image_and_channel).to(x.dtype), x, scale.view(per_image_and_channel).to(x.dtype)
    )


class ResnetBlock(nn.Module):
    """
    GroupNorm -> SiLU -> conv, twice, with a residual connection. The time (and class) embedding enters as a FiLM
    scale and shift after the second GroupNorm (Dhariwal & Nichol 2021, https://huggingface.co/papers/2105.05233).
    """

    def __init__(
        self, in_channels: int, out_channels: int, embedding_dim: int, groups: int, eps: float, dropout: float
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.embedding_proj = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        # `embedding` already went through SiLU once for all blocks. Without autograd, activations are computed in
        # place (fewer fresh buffers); with it, autograd would copy them anyway.
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(group_norm(x, self.norm1), inplace=inplace))
        h = self.conv2(self.dropout(F.silu(self._norm_and_modulate(h, embedding), inplace=inplace)))
        # conv2's output is not needed by its backward, so the residual can be added in place.
        return h.add_(x if self.shortcut is None else self.shortcut(x))

    def _norm_and_modulate(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """norm2, then FiLM, in one normalization."""
        scale, shift = self.embedding_proj(embedding).chunk(2, dim=1)  # each (batch, channels)
        # GroupNorm's affine and FiLM make one affine per image and channel: (n * w + b) * (1 + s) + t.
        gain = self.norm2.weight * (1 + scale)
        bias = torch.addcmul(shift, self.norm2.bias, 1 + scale)
        return group_norm(h, self.norm2, gain, bias)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all pixels, with a residual connection."""

    def __init__(self, channels: int, head_dim: int | None, groups: int, eps: float):
        super().__init__()
        self.num_heads = 1 if head_dim is None else channels // head_dim
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        # One projection for query, key and value: one matrix multiply instead of three.
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tokens = pixels_last(group_norm(x, self.norm))  # (batch, pixels, channels)
        qkv = self.to_qkv(tokens).unflatten(-1, (3, self.num_heads, -1))  # (batch, pixels, 3, heads, head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, pixels, head_dim), no copy
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = attended.transpose(1, 2).reshape(batch, height * width, channels)
        return x + from_pixels_last(self.to_out(attended), height, width)


class Upsample(nn.Module):
    """
    Doubles height and width: nearest-neighbour repeat, then a 3x3 convolution.

    After a nearest-neighbour repeat each output pixel sees only a 2x2 patch of input pixels, so the pair is one
    stride-2 transposed convolution whose 4x4 kernel sums taps of the 3x3 one: the same function with 16/36 of the
    multiply-adds and no upsampled copy. The parameters stay those of the 3x3 convolution.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    @staticmethod
    def _fold_taps(weight: torch.Tensor, dim: int) -> torch.Tensor:
        # Along one axis, output pixel 2i sees inputs (i-1, i, i) and 2i+1 sees (i, i, i+1) through taps (0, 1, 2);
        # in the transposed convolution those land on taps (3, 1, 1) and (2, 2, 0).
        first, middle, last = weight.unbind(dim)
        return torch.stack([last, middle + last, first + middle, first], dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Folding the transposed weight leaves the (in, out, 4, 4) kernel contiguous (a strided one costs a copy).
        weight = self._fold_taps(self._fold_taps(self.conv.weight.transpose(0, 1), 2), 3)
        return F.conv_transpose2d(x, weight, self.conv.bias, stride=2, padding=1)


class DDPMUNet2DModel(ModelMixin, ConfigMixin):
    r"""
    The UNet of DDPM: it takes a noisy image and a timestep (and optionally a class label) and predicts the noise
    (or the clean image, or the velocity, depending on how it is trained).

    Each level has `layers_per_block` ResNet blocks on the way down and `layers_per_block + 1` on the way up (the
    extra one takes the skip connection from the downsampler, or from the input convolution at the top level), as
    in diffusers' `UNet2DModel`: one with FiLM (`resnet_time_scale_shift="scale_shift"`) and GroupNorm before every
    attention computes the same function from the same weights. The middle block is ResNet -> attention -> ResNet. The default configuration is the DDPM CIFAR-10 network: 38.3M parameters,
    the paper's 35.7M plus 2.6M because FiLM projects the time embedding to a scale and a shift, not a shift alone.

    This model inherits from [`ModelMixin`]; check its documentation for the generic methods (saving, loading,
    `torch_dtype`, variants, gradient checkpointing).

    Parameters:
        sample_size (`int` or `tuple[int, int]`, *optional*, defaults to 32):
            Height and width of the images. Each must be divisible by `2 ** (len(block_out_channels) - 1)`.
        in_channels (`int`, *optional*, defaults to 3): Channels of the input image.
        out_channels (`int`, *optional*, defaults to 3): Channels of the prediction.
        block_out_channels (`tuple[int, ...]`, *optional*, defaults to `(128, 256, 256, 256)`):
            Width of each resolution level, from the finest to the coarsest. Each level after the first halves
            the resolution.
        layers_per_block (`int`, *optional*, defaults to 2): ResNet blocks per level on the way down.
        attention_levels (`tuple[bool, ...]`, *optional*, defaults to `None`):
            One flag per level: whether its ResNet blocks are followed by self-attention. `None` puts attention at
            the second level (16x16 of a 32x32 image, as DDPM does), whatever the number of levels; none with a
            single level. The middle block always has self-attention.
        attention_head_dim (`int`, *optional*, defaults to `None`):
            Channels per attention head. `None` means one head spanning all channels (as in DDPM); wide heads are
            also the fastest choice on CPUs.
        num_class_embeds (`int`, *optional*, defaults to `None`):
            Number of classes for class conditioning; `None` builds an unconditional model. A conditional model
            learns one extra "null" label, id `num_class_embeds` (see `null_class_id`), for classifier-free
            guidance (Ho & Salimans 2022, https://huggingface.co/papers/2207.12598).
        time_embedding_dim (`int`, *optional*, defaults to `None`):
            Width of the time (and class) embedding; `None` means `4 * block_out_channels[0]`.
        norm_num_groups (`int`, *optional*, defaults to 32): Groups of every GroupNorm; divides every width.
        norm_eps (`float`, *optional*, defaults to 1e-5): Epsilon of every GroupNorm.
        dropout (`float`, *optional*, defaults to 0.0): Dropout inside the ResNet blocks (DDPM used 0.1 on CIFAR-10).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        *,
        sample_size: int | tuple[int, int] = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 256, 256, 256),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] | None = None,
        attention_head_dim: int | None = None,
        num_class_embeds: int | None = None,
        time_embedding_dim: int | None = None,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        dropout: float = 0.0,
    ):
        super().__init__()
        if attention_levels is None:
            attention_levels = tuple(level == 1 for level in range(len(block_out_channels)))
        _check_config(
            sample_size,
            in_channels,
            out_channels,
            block_out_channels,
            layers_per_block,
            attention_levels,
            attention_head_dim,
            num_class_embeds,
            time_embedding_dim,
            norm_num_groups,
            norm_eps,
            dropout,
        )
        self.gradient_checkpointing = False
        widths = list(block_out_channels)
        embedding_dim = time_embedding_dim or 4 * widths[0]

        def resnet(in_ch: int, out_ch: int) -> ResnetBlock:
            return ResnetBlock(in_ch, out_ch, embedding_dim, norm_num_groups, norm_eps, dropout)

        def attention(channels: int) -> SelfAttention:
            return SelfAttention(channels, attention_head_dim, norm_num_groups, norm_eps)

        self.time_mlp = nn.Sequential(
            nn.Linear(widths[0], embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )
        self.class_embedding = None if num_class_embeds is None else nn.Embedding(num_class_embeds + 1, embedding_dim)
        self.conv_in = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1)

        # Every module on the way down, in order, leaves one skip connection for the way up.
        self.down_resnets, self.down_attentions, self.downsamplers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        skip_channels = [widths[0]]
        channels = widths[0]
        for level, width in enumerate(widths):
            for _ in range(layers_per_block):
                self.down_resnets.append(resnet(channels, width))
                self.down_attentions.append(attention(width) if attention_levels[level] else nn.Identity())
                channels = width
                skip_channels.append(channels)
            if level < len(widths) - 1:
                self.downsamplers.append(nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1))
                skip_channels.append(channels)

        self.mid_resnet1 = resnet(channels, channels)
        self.mid_attention = attention(channels)
        self.mid_resnet2 = resnet(channels, channels)

        self.up_resnets, self.up_attentions, self.upsamplers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(widths))):
            for _ in range(layers_per_block + 1):
                self.up_resnets.append(resnet(channels + skip_channels.pop(), widths[level]))
                self.up_attentions.append(attention(widths[level]) if attention_levels[level] else nn.Identity())
                channels = widths[level]
            if level > 0:
                self.upsamplers.append(Upsample(channels))

        self.norm_out = nn.GroupNorm(norm_num_groups, channels, eps=norm_eps)
        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    @property
    def null_class_id(self) -> int | None:
        """The label id that means "no class" (used for the unconditional half of CFG); `None` if unconditional."""
        return self.config.num_class_embeds

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | int | list[int] | None = None,
        return_dict: bool = True,
    ) -> DDPMUNet2DOutput | tuple[torch.Tensor]:
        r"""
        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, height, width)`):
                The noisy images. Height and width must be divisible by `2 ** (len(block_out_channels) - 1)`.
            timestep (`torch.Tensor`, `float` or `int`):
                The diffusion timestep: a number, a 0-d tensor, or a 1-d tensor of length 1 or `batch_size`.
            class_labels (`torch.Tensor`, `int` or `list[int]`, *optional*):
                Class ids in `[0, num_class_embeds]` for a conditional model (`num_class_embeds` is the null label);
                one id or one per image. `None` on a conditional model means the null label.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`DDPMUNet2DOutput`] instead of a plain tuple.

        Returns:
            [`DDPMUNet2DOutput`] or `tuple`: the prediction, of shape `(batch_size, out_channels, height, width)`.
        """
        self._check_sample(sample)
        batch = sample.shape[0]
        timesteps = self._timesteps_for_batch(timestep, batch, sample.device)
        frequencies = sinusoidal_timestep_embedding(timesteps, self.config.block_out_channels[0])
        embedding = self.time_mlp(frequencies.to(self.conv_in.weight.dtype))
        if self.class_embedding is not None:
            embedding = embedding + self.class_embedding(self._labels_for_batch(class_labels, batch, sample.device))
        elif class_labels is not None:
            raise ValueError("`class_labels` must be None: this model is unconditional (`num_class_embeds` is None).")
        # Every ResNet block applies SiLU to the embedding before projecting it; do it once here.
        embedding = F.silu(embedding)

        h = self.conv_in(sample).contiguous(memory_format=self._activation_layout(sample))
        skips = [h]
        per_level = self.config.layers_per_block
        for index, (resnet, attention) in enumerate(zip(self.down_resnets, self.down_attentions)):
            h = self._run(attention, self._run(resnet, h, embedding))
            skips.append(h)
            level, position = divmod(index, per_level)
            if position == per_level - 1 and level < len(self.downsamplers):
                h = self.downsamplers[level](h)
                skips.append(h)

        h = self._run(self.mid_resnet1, h, embedding)
        h = self._run(self.mid_attention, h)
        h = self._run(self.mid_resnet2, h, embedding)

        for index, (resnet, attention) in enumerate(zip(self.up_resnets, self.up_attentions)):
            h = self._run(resnet, torch.cat([h, skips.pop()], dim=1), embedding)
            h = self._run(attention, h)
            level, position = divmod(index, per_level + 1)
            if position == per_level and level < len(self.upsamplers):
                h = self.upsamplers[level](h)

        prediction = self.conv_out(F.silu(group_norm(h, self.norm_out))).contiguous()
        if not return_dict:
            return (prediction,)
        return DDPMUNet2DOutput(sample=prediction)

    @staticmethod
    def _activation_layout(sample: torch.Tensor) -> torch.memory_format:
        """
        Channels-last for large inference batches on CPU: oneDNN's convolutions then read and write the activations
        without layout reorders, which take a sixth of an NCHW forward pass. Small batches stay NCHW, where the
        reorders cost less than the extra small operations of the channels-last GroupNorm; so does training, where
        PyTorch's GroupNorm and its backward beat anything written in torch operations, and so do GPUs.
        """
        pixels = sample.shape[0] * sample.shape[2] * sample.shape[3]
        if torch.is_grad_enabled() or sample.device.type != "cpu" or pixels < CHANNELS_LAST_MIN_PIXELS:
            return torch.contiguous_format
        return torch.channels_last

    def _run(self, block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        """Calls a block, recomputing its activations in the backward pass when gradient checkpointing is on."""
        if isinstance(block, nn.Identity):
            return args[0]
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(block, *args)
        return block(*args)

    def _check_sample(self, sample: torch.Tensor) -> None:
        if not torch.is_tensor(sample) or sample.ndim != 4:
            shape = tuple(sample.shape) if torch.is_tensor(sample) else type(sample).__name__
            raise ValueError(f"`sample` must be a 4-d tensor (batch, channels, height, width), got {shape}.")
        if sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"`sample` must have {self.config.in_channels} channels (`in_channels`), "
                f"got shape {tuple(sample.shape)}."
            )
        factor = 2 ** (len(self.config.block_out_channels) - 1)
        if sample.shape[2] % factor or sample.shape[3] % factor:
            raise ValueError(
                f"`sample` height and width must be divisible by {factor} (this model has "
                f"{len(self.config.block_out_channels)} levels), got shape {tuple(sample.shape)}."
            )

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

    def _labels_for_batch(
        self, class_labels: torch.Tensor | int | list[int] | None, batch: int, device: torch.device
    ) -> torch.Tensor:
        allowed = f"ids in [0, {self.null_class_id}] ({self.null_class_id} is the null label)"
        if class_labels is None:
            return torch.full((batch,), self.null_class_id, dtype=torch.long, device=device)
        if isinstance(class_labels, bool) or not isinstance(class_labels, (int, list, tuple, torch.Tensor)):
            raise ValueError(f"`class_labels` must be an int, a list of ints or a tensor of {allowed}.")
        labels = torch.as_tensor(class_labels, device=device)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"`class_labels` must hold integer {allowed}, got dtype {labels.dtype}.")
        if labels.ndim > 1 or (labels.ndim == 1 and labels.shape[0] != 1 and labels.shape[0] != batch):
            raise ValueError(
                f"`class_labels` must be one id or a 1-d sequence of length {batch} (the batch size), "
                f"got shape {tuple(labels.shape)}."
            )
        # The range check reads the values; a compiled graph skips it rather than break on it.
        if not torch.compiler.is_compiling() and labels.numel():
            if labels.min() < 0 or labels.max() > self.null_class_id:
                raise ValueError(f"`class_labels` must be {allowed}, got {labels.tolist()}.")
        return labels.long().reshape(-1).expand(batch)


def _check_config(
    sample_size,
    in_channels,
    out_channels,
    block_out_channels,
    layers_per_block,
    attention_levels,
    attention_head_dim,
    num_class_embeds,
    time_embedding_dim,
    norm_num_groups,
    norm_eps,
    dropout,
) -> None:
    """Raises a ValueError naming the first configuration argument that cannot build a working network."""

    def positive_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    def real(value) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    # Lists as a config.json gives them, tuples as code does.
    sequence = (list, tuple)
    widths = list(block_out_channels) if isinstance(block_out_channels, sequence) else []
    if not widths or not all(positive_int(width) for width in widths):
        raise ValueError(f"`block_out_channels` must be a non-empty list of positive ints, got {block_out_channels}.")
    sizes = [sample_size, sample_size] if not isinstance(sample_size, sequence) else list(sample_size)
    factor = 2 ** (len(widths) - 1)
    if len(sizes) != 2 or not all(positive_int(size) for size in sizes) or any(size % factor for size in sizes):
        raise ValueError(
            f"`sample_size` must be a positive int (or a (height, width) pair) divisible by {factor}, because "
            f"`block_out_channels` {tuple(widths)} has {len(widths)} levels and each level after the first halves "
            f"the resolution; got {sample_size}. Use fewer levels or a sample_size that is a multiple of {factor}."
        )
    for name, value in [("in_channels", in_channels), ("out_channels", out_channels)]:
        if not positive_int(value):
            raise ValueError(f"`{name}` must be a positive int, got {value}.")
    if not positive_int(layers_per_block):
        raise ValueError(f"`layers_per_block` must be a positive int, got {layers_per_block}.")
    levels_ok = isinstance(attention_levels, sequence) and len(attention_levels) == len(widths)
    if not levels_ok or not all(isinstance(flag, bool) for flag in attention_levels):
        raise ValueError(
            f"`attention_levels` must hold one bool per level of `block_out_channels` ({len(widths)}), "
            f"got {attention_levels}."
        )
    if not positive_int(norm_num_groups) or any(width % norm_num_groups for width in widths):
        raise ValueError(
            f"`norm_num_groups` must be a positive int dividing every width in `block_out_channels` {tuple(widths)}, "
            f"got {norm_num_groups}."
        )
    if attention_head_dim is not None:
        attended = [width for width, flag in zip(widths, attention_levels) if flag] + [widths[-1]]
        if not positive_int(attention_head_dim) or any(width % attention_head_dim for width in attended):
            raise ValueError(
                f"`attention_head_dim` must be None (one head) or a positive int dividing the width of every level "
                f"with attention {tuple(attended)} (the middle block included), got {attention_head_dim}."
            )
    if num_class_embeds is not None and not positive_int(num_class_embeds):
        raise ValueError(f"`num_class_embeds` must be None (unconditional) or a positive int, got {num_class_embeds}.")
    if time_embedding_dim is not None and not positive_int(time_embedding_dim):
        raise ValueError(f"`time_embedding_dim` must be None or a positive int, got {time_embedding_dim}.")
    if not real(norm_eps) or not 0.0 < norm_eps < math.inf:
        raise ValueError(f"`norm_eps` must be a finite number > 0, got {norm_eps!r}.")
    if not real(dropout) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be a number in [0, 1), got {dropout!r}.")
