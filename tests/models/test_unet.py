import os

import pytest
import torch
import torch.nn.functional as F
from diffusers import (
    DDIMPipeline,
    DDIMScheduler as DiffusersDDIMScheduler,
    DDPMPipeline,
    DDPMScheduler as DiffusersDDPMScheduler,
    UNet2DModel,
)

from hf_ddpm.models import DDPMUNet2DModel, DDPMUNet2DOutput, unet_2d
from hf_ddpm.models.unet_2d import Upsample

NUM_CLASSES = 3


def tiny_unet(**overrides) -> DDPMUNet2DModel:
    """Two levels (8x8 -> 4x4), attention at the coarse one: 48k parameters."""
    config = dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(False, True),
        norm_num_groups=4,
    )
    config.update(overrides)
    torch.manual_seed(0)
    return DDPMUNet2DModel(**config).eval()


def noisy(model: DDPMUNet2DModel, batch: int = 2, seed: int = 1) -> torch.Tensor:
    size = model.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, model.config.in_channels, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "config",
    [
        # Fashion-MNIST sized: three levels, 28 -> 14 -> 7.
        dict(
            sample_size=28,
            in_channels=1,
            out_channels=1,
            block_out_channels=(8, 16, 16),
            attention_levels=(False, False, True),
        ),
        # CIFAR-10 sized.
        dict(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16, 16, 16),
            attention_levels=(False, True, False, False),
        ),
        # Non-square, and more output channels than input (e.g. a learned variance).
        dict(
            sample_size=(16, 24),
            in_channels=3,
            out_channels=6,
            block_out_channels=(8, 16),
            attention_levels=(True, True),
        ),
    ],
)
def test_output_has_the_input_resolution_and_out_channels(config):
    model = tiny_unet(**config)
    sample = noisy(model)
    output = model(sample, 10)
    assert isinstance(output, DDPMUNet2DOutput)
    assert output.sample.shape == (2, config["out_channels"], *sample.shape[2:])
    assert torch.isfinite(output.sample).all()


def diffusers_twin(model: DDPMUNet2DModel) -> UNet2DModel:
    """diffusers' UNet2DModel with the architecture of `model`: FiLM conditioning, GroupNorm in every attention."""
    config = model.config
    return UNet2DModel(
        sample_size=config.sample_size,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=["AttnDownBlock2D" if flag else "DownBlock2D" for flag in config.attention_levels],
        up_block_types=["AttnUpBlock2D" if flag else "UpBlock2D" for flag in reversed(config.attention_levels)],
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups,
        attn_norm_num_groups=config.norm_num_groups,
        resnet_time_scale_shift="scale_shift",
        num_class_embeds=config.num_class_embeds + 1,
    )


DIFFUSERS_RENAMES = {
    "time_embedding.linear_1": "time_mlp.0",
    "time_embedding.linear_2": "time_mlp.2",
    "conv_norm_out": "norm_out",
    "mid_block.resnets.0": "mid_resnet1",
    "mid_block.resnets.1": "mid_resnet2",
    "mid_block.attentions.0": "mid_attention",
    "time_emb_proj": "embedding_proj",
    "conv_shortcut": "shortcut",
    "group_norm": "norm",
    "to_out.0": "to_out",
}


def our_name(diffusers_name: str, per_level: int) -> str:
    parts = diffusers_name.split(".")
    if parts[:1] == ["down_blocks"] and parts[2] == "downsamplers":  # down_blocks.L.downsamplers.0.conv.weight
        parts = ["downsamplers", parts[1], *parts[5:]]
    elif parts[:1] == ["up_blocks"] and parts[2] == "upsamplers":  # up_blocks.L.upsamplers.0.conv.weight
        parts = ["upsamplers", parts[1], *parts[4:]]
    elif parts[0] in ("down_blocks", "up_blocks"):  # {down,up}_blocks.L.{resnets,attentions}.j.*
        direction = parts[0].removesuffix("_blocks")
        blocks = per_level if direction == "down" else per_level + 1
        parts = [f"{direction}_{parts[2]}", str(int(parts[1]) * blocks + int(parts[3])), *parts[4:]]
    name = ".".join(parts)
    for old, new in DIFFUSERS_RENAMES.items():
        name = name.replace(old, new)
    return name


def load_diffusers_weights(model: DDPMUNet2DModel, twin: UNet2DModel) -> None:
    renamed = {our_name(name, model.config.layers_per_block): tensor for name, tensor in twin.state_dict().items()}
    for name in [name for name in renamed if ".to_q." in name]:
        prefix, suffix = name.split(".to_q.")
        projections = [renamed.pop(f"{prefix}.to_{part}.{suffix}") for part in "qkv"]
        renamed[f"{prefix}.to_qkv.{suffix}"] = torch.cat(projections)
    model.load_state_dict(renamed, strict=True)


@pytest.mark.parametrize("attention_head_dim", [None, 4])
def test_computes_the_same_function_as_diffusers_unet2dmodel_with_the_same_weights(attention_head_dim):
    model = tiny_unet(
        block_out_channels=(8, 16, 16),
        attention_levels=(False, True, False),
        layers_per_block=2,
        num_class_embeds=NUM_CLASSES,
        attention_head_dim=attention_head_dim,
    )
    twin = diffusers_twin(model).eval()
    assert model.num_parameters() == twin.num_parameters()
    load_diffusers_weights(model, twin)
    sample, timesteps, labels = noisy(model, batch=3), torch.tensor([0, 250, 999]), torch.tensor([0, 2, NUM_CLASSES])
    expected = twin(sample, timesteps, class_labels=labels).sample.detach()
    torch.testing.assert_close(model(sample, timesteps, class_labels=labels).sample.detach(), expected)
    with torch.no_grad():
        torch.testing.assert_close(model(sample, timesteps, class_labels=labels).sample, expected)


def test_return_dict_false_gives_a_tuple_with_the_same_prediction():
    model, sample = tiny_unet(), noisy(tiny_unet())
    with torch.no_grad():
        (prediction,) = model(sample, 3, return_dict=False)
        assert torch.equal(prediction, model(sample, 3).sample)


def test_timestep_as_int_float_0d_and_1d_tensor_give_the_same_output():
    model = tiny_unet()
    sample = noisy(model, batch=3)
    with torch.no_grad():
        reference = model(sample, 7).sample
        for timestep in [7.0, torch.tensor(7), torch.tensor([7]), torch.tensor([7, 7, 7]), torch.tensor(7.0)]:
            torch.testing.assert_close(model(sample, timestep).sample, reference, rtol=0, atol=0)


def test_per_image_timesteps_match_single_image_calls():
    model = tiny_unet()
    sample = noisy(model, batch=2)
    with torch.no_grad():
        batched = model(sample, torch.tensor([3, 900])).sample
        torch.testing.assert_close(batched[:1], model(sample[:1], 3).sample)
        torch.testing.assert_close(batched[1:], model(sample[1:], 900).sample)
        assert not torch.allclose(batched[0], model(sample[:1], 900).sample[0])


def test_null_class_id_is_num_class_embeds_or_none():
    assert tiny_unet(num_class_embeds=NUM_CLASSES).null_class_id == NUM_CLASSES
    assert tiny_unet().null_class_id is None
    assert tiny_unet(num_class_embeds=NUM_CLASSES).class_embedding.num_embeddings == NUM_CLASSES + 1


def test_class_labels_none_means_the_null_label():
    model = tiny_unet(num_class_embeds=NUM_CLASSES)
    sample = noisy(model)
    with torch.no_grad():
        torch.testing.assert_close(
            model(sample, 5).sample, model(sample, 5, class_labels=torch.tensor([NUM_CLASSES] * 2)).sample
        )


def test_different_labels_give_different_outputs():
    model = tiny_unet(num_class_embeds=NUM_CLASSES)
    sample = noisy(model)
    with torch.no_grad():
        outputs = [model(sample, 5, class_labels=label).sample for label in range(NUM_CLASSES + 1)]
    for first in range(len(outputs)):
        for second in range(first + 1, len(outputs)):
            assert (outputs[first] - outputs[second]).abs().max() > 1e-4


def test_class_labels_as_int_list_and_tensor_agree_and_broadcast():
    model = tiny_unet(num_class_embeds=NUM_CLASSES)
    sample = noisy(model)
    with torch.no_grad():
        reference = model(sample, 5, class_labels=torch.tensor([1, 1])).sample
        for labels in [1, [1, 1], torch.tensor(1), torch.tensor([1]), torch.tensor([1, 1], dtype=torch.int32)]:
            torch.testing.assert_close(model(sample, 5, class_labels=labels).sample, reference, rtol=0, atol=0)


def test_upsample_equals_nearest_neighbour_then_convolution():
    torch.manual_seed(0)
    upsample = Upsample(6)
    x = torch.randn(2, 6, 5, 7)
    expected = upsample.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    torch.testing.assert_close(upsample(x), expected, rtol=1e-5, atol=1e-5)


def test_save_load_roundtrip_is_exact_and_uses_safetensors(tmp_path):
    model = tiny_unet(num_class_embeds=NUM_CLASSES, attention_head_dim=4, dropout=0.1, time_embedding_dim=24)
    model.save_pretrained(tmp_path)
    assert os.path.isfile(tmp_path / "diffusion_pytorch_model.safetensors")
    loaded = DDPMUNet2DModel.from_pretrained(tmp_path).eval()
    for key, value in model.config.items():  # JSON turns the tuples into lists
        if not key.startswith("_"):
            assert loaded.config[key] == (list(value) if isinstance(value, tuple) else value), key
    sample = noisy(model)
    with torch.no_grad():
        expected = model(sample, 11, class_labels=[0, 2]).sample
        torch.testing.assert_close(loaded(sample, 11, class_labels=[0, 2]).sample, expected, rtol=0, atol=0)


def test_fp16_variant_saves_and_loads_in_half_precision(tmp_path):
    model = tiny_unet()
    model.to(torch.float16).save_pretrained(tmp_path, variant="fp16")
    assert os.path.isfile(tmp_path / "diffusion_pytorch_model.fp16.safetensors")
    loaded = DDPMUNet2DModel.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.float16)
    assert loaded.dtype == torch.float16
    for (name, parameter), original in zip(loaded.named_parameters(), model.parameters()):
        assert parameter.dtype == torch.float16 and torch.equal(parameter, original), name
    sample = noisy(model)
    with torch.no_grad():
        half = loaded.eval()(sample.half(), 40).sample
        full = model.float()(sample, 40).sample
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=0.01, atol=0.01)


def test_torch_dtype_bfloat16_runs_and_stays_close_to_float32(tmp_path):
    model = tiny_unet(num_class_embeds=NUM_CLASSES)
    model.save_pretrained(tmp_path)
    loaded = DDPMUNet2DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    assert all(parameter.dtype == torch.bfloat16 for parameter in loaded.parameters())
    sample = noisy(model)
    with torch.no_grad():
        low = loaded(sample.bfloat16(), 40, class_labels=[1, 2]).sample
        full = model(sample, 40, class_labels=[1, 2]).sample
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), full, rtol=0.05, atol=0.05)


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameter gradients of a fixed loss; `model` may be a compiled wrapper of a DDPMUNet2DModel."""
    model.train().zero_grad()
    sample = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    loss = model(sample, torch.tensor([1, 50, 999]), class_labels=[0, 1, NUM_CLASSES]).sample.square().mean()
    loss.backward()
    return {name.removeprefix("_orig_mod."): parameter.grad.clone() for name, parameter in model.named_parameters()}


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_unet(num_class_embeds=NUM_CLASSES, layers_per_block=2)
    plain = gradients(model)
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    checkpointed = gradients(model)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_checkpointing_recomputes_blocks_in_backward():
    model = tiny_unet()
    model.enable_gradient_checkpointing()
    calls = []
    model.mid_attention.register_forward_pre_hook(lambda *_: calls.append("attention"))
    model.train()
    model(noisy(model), 1).sample.sum().backward()
    assert calls == ["attention", "attention"]  # forward, then again in backward
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing


@pytest.mark.parametrize("large_batch", [True, False])
def test_inference_without_grad_matches_the_autograd_path(large_batch, monkeypatch):
    # Without autograd, activations are computed in place, and a batch with enough pixels runs channels-last (with
    # its own GroupNorm); with autograd everything stays NCHW. The numbers must not change, and the output is an
    # ordinary contiguous tensor either way.
    model = tiny_unet(num_class_embeds=NUM_CLASSES, layers_per_block=2, in_channels=3, out_channels=3)
    sample = noisy(model)
    monkeypatch.setattr(unet_2d, "CHANNELS_LAST_MIN_PIXELS", sample.shape[0] * 8 * 8 + (0 if large_batch else 1))
    channels_last_inputs = []
    model.down_resnets[1].conv2.register_forward_pre_hook(
        lambda module, args: channels_last_inputs.append(not args[0].is_contiguous())
    )
    with torch.no_grad():
        fast = model(sample, 9, class_labels=[2, 0]).sample
    reference = model(sample, 9, class_labels=[2, 0]).sample.detach()
    assert channels_last_inputs == [large_batch, False]
    assert fast.is_contiguous()
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("offset", [0.0, 1000.0])
@pytest.mark.parametrize("per_image_affine", [True, False])
def test_channels_last_group_norm_keeps_group_norm_precision_even_far_from_zero(offset, per_image_affine):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 12, 5, 7, generator=generator) * 2 + offset
    gain = torch.randn(3 if per_image_affine else 1, 12, generator=generator)
    bias = torch.randn(3 if per_image_affine else 1, 12, generator=generator)
    exact = F.group_norm(x.double(), 4) * gain[..., None, None] + bias[..., None, None]
    pytorch = F.group_norm(x, 4) * gain[..., None, None] + bias[..., None, None]
    output = unet_2d.channels_last_group_norm(x.contiguous(memory_format=torch.channels_last), 4, gain, bias, 1e-5)
    assert output.is_contiguous(memory_format=torch.channels_last)
    error, pytorch_error = (output - exact).abs().max(), (pytorch - exact).abs().max()
    # Both compute x * scale + offset in fp32, whose rounding grows with the offset; E[x^2] - E[x]^2 would be 1000x off.
    assert error <= 4 * pytorch_error + 1e-6, (error, pytorch_error)


def test_channels_last_gives_the_same_output():
    model = tiny_unet(num_class_embeds=NUM_CLASSES, in_channels=3, out_channels=3)
    sample = noisy(model)
    with torch.no_grad():
        reference = model(sample, 20, class_labels=[0, 1]).sample
        model.to(memory_format=torch.channels_last)
        output = model(sample.to(memory_format=torch.channels_last), 20, class_labels=[0, 1]).sample
    torch.testing.assert_close(output, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_captures_one_graph_with_eager_numbers_and_gradients():
    # "aot_eager" traces forward and backward exactly as inductor would, without its minutes of C++ compilation.
    model = tiny_unet(num_class_embeds=NUM_CLASSES)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    eager_gradients = gradients(model)
    compiled_gradients = gradients(compiled)
    for name in eager_gradients:
        torch.testing.assert_close(compiled_gradients[name], eager_gradients[name], rtol=1e-5, atol=1e-6, msg=name)
    model.eval()
    sample = noisy(model)
    with torch.no_grad():
        expected = model(sample, 30, class_labels=[1, 0]).sample
        torch.testing.assert_close(compiled(sample, 30, class_labels=[1, 0]).sample, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="inductor compiles C++ for ~1 min on 2 cores; RUN_SLOW=1")
def test_torch_compile_inductor_matches_eager():
    model = tiny_unet(num_class_embeds=NUM_CLASSES)
    sample = noisy(model)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        expected = model(sample, 30, class_labels=[1, 0]).sample
        torch.testing.assert_close(compiled(sample, 30, class_labels=[1, 0]).sample, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, argument",
    [
        (dict(sample_size=28, block_out_channels=(8, 16, 16, 16), attention_levels=(False,) * 4), "sample_size"),
        (dict(sample_size=30, block_out_channels=(8, 16, 16), attention_levels=(False,) * 3), "block_out_channels"),
        (dict(sample_size=(8, 7)), "sample_size"),
        (dict(sample_size=0), "sample_size"),
        (dict(block_out_channels=()), "block_out_channels"),
        (dict(attention_levels=(True,)), "attention_levels"),
        (dict(norm_num_groups=3), "norm_num_groups"),
        (dict(attention_head_dim=5), "attention_head_dim"),
        (dict(num_class_embeds=0), "num_class_embeds"),
        (dict(layers_per_block=0), "layers_per_block"),
        (dict(in_channels=0), "in_channels"),
        (dict(out_channels=-1), "out_channels"),
        (dict(time_embedding_dim=0), "time_embedding_dim"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout="0.1"), "dropout"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(norm_eps=float("nan")), "norm_eps"),
        (dict(block_out_channels=8), "block_out_channels"),
        (dict(sample_size=None), "sample_size"),
        (dict(attention_levels=1), "attention_levels"),
    ],
)
def test_construction_rejects_unusable_configs(overrides, argument):
    with pytest.raises(ValueError, match=argument):
        tiny_unet(**overrides)


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_default_attention_levels_fit_any_number_of_levels(levels):
    widths = (8, 16, 16, 16)[:levels]
    model = DDPMUNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=widths, norm_num_groups=4)
    attended = [not isinstance(module, torch.nn.Identity) for module in model.down_attentions]
    # One entry per ResNet block on the way down (layers_per_block=2): attention at the second level only.
    assert attended == [level == 1 for level in range(levels) for _ in range(2)]
    assert model.config.attention_levels is None  # the default stays a default: nothing derived in the config
    assert model(noisy(model), 3).sample.shape == (2, 1, 8, 8)


def test_indivisible_sample_size_error_says_what_is_allowed():
    with pytest.raises(ValueError, match="divisible by 4") as error:
        tiny_unet(sample_size=30, block_out_channels=(8, 16, 16), attention_levels=(False,) * 3)
    assert "sample_size" in str(error.value) and "block_out_channels" in str(error.value)


@pytest.mark.parametrize(
    "sample, timestep, class_labels, argument",
    [
        (torch.randn(1, 8, 8), 1, None, "sample"),  # no batch dimension
        (torch.randn(2, 3, 8, 8), 1, None, "in_channels"),  # wrong channel count
        (torch.randn(2, 1, 7, 8), 1, None, "divisible by 2"),  # two levels: the height must halve evenly
        (torch.randn(2, 1, 8, 8), torch.zeros(2, 1), None, "timestep"),
        (torch.randn(2, 1, 8, 8), torch.zeros(3), None, "timestep"),
        (torch.randn(2, 1, 8, 8), "5", None, "timestep"),
        (torch.randn(2, 1, 8, 8), 1, [0, NUM_CLASSES + 1], "class_labels"),
        (torch.randn(2, 1, 8, 8), 1, -1, "class_labels"),
        (torch.randn(2, 1, 8, 8), 1, torch.tensor([0.5, 1.0]), "class_labels"),
        (torch.randn(2, 1, 8, 8), 1, [0, 1, 2], "class_labels"),
    ],
)
def test_forward_rejects_bad_inputs_naming_the_argument(sample, timestep, class_labels, argument):
    model = tiny_unet(num_class_embeds=NUM_CLASSES)
    with pytest.raises(ValueError, match=argument):
        model(sample, timestep, class_labels=class_labels)


def test_labels_given_to_an_unconditional_model_are_rejected():
    model = tiny_unet()
    with pytest.raises(ValueError, match="class_labels.*unconditional"):
        model(noisy(model), 1, class_labels=[0, 1])


@pytest.mark.parametrize(
    "pipeline_class, scheduler_class", [(DDIMPipeline, DiffusersDDIMScheduler), (DDPMPipeline, DiffusersDDPMScheduler)]
)
def test_drops_into_diffusers_unconditional_pipelines(pipeline_class, scheduler_class):
    unet = tiny_unet(in_channels=3, out_channels=3)
    pipe = pipeline_class(unet=unet, scheduler=scheduler_class(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0))
    assert images.images.shape == (2, 8, 8, 3)
    again = pipe(batch_size=2, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0))
    assert (images.images == again.images).all() and images.images.std() > 0


def test_ddpm_cifar10_preset_is_ho_et_al_with_film_scale_shift():
    """Ho et al.'s CIFAR-10 network (diffusers' UNet2DModel of google/ddpm-cifar10-32) has 35.7M parameters; the
    preset's is the same network with FiLM scale-shift time conditioning: 38.3M."""
    from hf_ddpm.models.presets import UNET_PRESETS

    def count(model):
        return sum(p.numel() for p in model.parameters())

    ours = DDPMUNet2DModel(sample_size=32, in_channels=3, out_channels=3, **UNET_PRESETS["ddpm-cifar10"])
    ho = dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )
    assert count(UNet2DModel(**ho)) == 35_746_307 and count(ours) == 38_307_203
    # The difference is the scale half of every ResNet block's time projection (its weights and biases).
    projections = [module.embedding_proj for module in ours.modules() if hasattr(module, "embedding_proj")]
    scale_halves = sum(p.out_features // 2 * (p.in_features + 1) for p in projections)
    assert count(ours) - count(UNet2DModel(**ho)) == scale_halves
