"""Named configurations for `--model_config`: of the UNet (`UNET_PRESETS`) and of the noise-aware classifier that
`--task classifier` trains (`CLASSIFIER_PRESETS`); and how a run's model config is made from a preset or a JSON file of
config keys and from the data (sample size, channels, number of classes) and the noise schedule."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

# Named UNet configurations for `--model_config`. Sample size, channels and the number of classes are not here:
# they always come from the data.
UNET_PRESETS: dict[str, dict[str, Any]] = {
    # A few thousand parameters: for tests and for checking that a set-up runs end to end.
    "tiny": {
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "attention_levels": (False, True),
        "norm_num_groups": 4,
    },
    # 0.8M parameters; learns scikit-learn's 8x8 digits (shown at 16x16) in a few minutes on a 2-core CPU.
    "digits": {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "attention_levels": (False, True),
        "norm_num_groups": 8,
    },
    # 0.43M parameters: `digits` at three quarters of the width, the digits demo's model. It learns almost as much per
    # step at 0.82x the cost, so that it reaches the demo's targets sooner (docs/digits-demo.md, "Time to quality").
    "digits-narrow": {
        "block_out_channels": (24, 48),
        "layers_per_block": 1,
        "attention_levels": (False, True),
        "norm_num_groups": 8,
    },
    # 28x28 or 32x32 grayscale sets such as fashion_mnist: three levels, attention at the coarsest.
    "small": {
        "block_out_channels": (32, 64, 128),
        "layers_per_block": 2,
        "attention_levels": (False, False, True),
        "norm_num_groups": 32,
    },
    # `small` at three quarters of its widths: faster steps on a CPU, and in the same training time at least as near to
    # Fashion-MNIST's test images (docs/fashion-mnist.md); the UNet of `make fashion`.
    "small-narrow": {
        "block_out_channels": (24, 48, 96),
        "layers_per_block": 2,
        "attention_levels": (False, False, True),
        "norm_num_groups": 8,
    },
    # The CIFAR-10 network of Ho et al. 2020 (https://huggingface.co/papers/2006.11239): widths 128-256-256-256, two
    # ResNet blocks a level, attention at 16x16, dropout 0.1. 38.3M parameters at 32x32x3, where Ho et al.'s has 35.7M:
    # the difference (2.56M) is the scale half of each ResNet block's time projection, since our blocks condition on
    # time by FiLM scale-shift (Nichol & Dhariwal 2021) rather than by adding a bias.
    "ddpm-cifar10": {
        "block_out_channels": (128, 256, 256, 256),
        "layers_per_block": 2,
        "attention_levels": (False, True, False, False),
        "norm_num_groups": 32,
        "dropout": 0.1,
    },
}


# Named configurations of the noise-aware classifier (`DDPMClassifier2DModel`) for `--task classifier`. Sample size,
# channels, classes and the number of training timesteps come from the data and the noise schedule.
CLASSIFIER_PRESETS: dict[str, dict[str, Any]] = {
    # A few thousand parameters: for tests.
    "tiny": {
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "attention_levels": (False, True),
        "norm_num_groups": 4,
    },
    # The encoder half of the UNet's "small" preset (its widths, blocks and attention), as Dhariwal & Nichol's
    # classifier is the encoder of their UNet; a training step costs a fraction of the UNet's (docs/training.md).
    "small": {
        "block_out_channels": (32, 64, 128),
        "layers_per_block": 2,
        "attention_levels": (False, False, True),
        "norm_num_groups": 32,
    },
}


# The presets of each --task, and the class whose config keys a JSON file may hold.
_PRESETS = {"diffusion": UNET_PRESETS, "classifier": CLASSIFIER_PRESETS}
_MODEL_NAMES = {"diffusion": "DDPMUNet2DModel", "classifier": "DDPMClassifier2DModel"}


# Keys that the data (or the noise schedule) decides; a model config may repeat them only with the same value.
_DATA_KEYS = ("sample_size", "in_channels", "out_channels", "num_class_embeds", "num_classes", "num_train_timesteps")


def read_model_config(model_config: str | None, task: str = "diffusion") -> dict[str, Any]:
    """The config keys of the model of `task` ("diffusion": `DDPMUNet2DModel`, "classifier": `DDPMClassifier2DModel`)
    that `--model_config` names.

    Args:
        model_config: A name in the task's presets (`UNET_PRESETS`, `CLASSIFIER_PRESETS`), a JSON file of the model's
            config keys (keys it leaves out take the model's defaults; keys starting with "_", as in a saved
            `config.json`, are skipped), or `None` for the "small" preset.
        task: The training script's --task.
    """
    presets = _PRESETS[task]
    if model_config is None:
        return dict(presets["small"])
    if model_config in presets:
        return dict(presets[model_config])
    if not (model_config.endswith(".json") or os.path.isfile(model_config)):
        raise ValueError(
            f"--model_config must be one of the presets {sorted(presets)} or a JSON file of {_MODEL_NAMES[task]} "
            f"config keys; {model_config!r} is neither."
        )
    if not os.path.isfile(model_config):
        raise ValueError(f"--model_config file {model_config!r} does not exist.")
    try:
        config = json.loads(Path(model_config).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"--model_config file {model_config!r} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"--model_config file {model_config!r} must hold a JSON object of UNet config keys.")
    config = {key: value for key, value in config.items() if not key.startswith("_")}
    allowed = list(_model_defaults(task))
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"--model_config file {model_config!r} has unknown keys {unknown}; allowed keys: {allowed}.")
    # JSON has no tuples; the model's config holds tuples.
    return {key: tuple(value) if isinstance(value, list) else value for key, value in config.items()}


def check_resolution(model_keys: dict[str, Any], resolution: int, task: str = "diffusion") -> None:
    """Raises a ValueError naming --resolution when the network's levels cannot halve it evenly."""
    levels = len(model_keys.get("block_out_channels", _model_defaults(task)["block_out_channels"]))
    factor = 2 ** (levels - 1)
    if resolution % factor:
        raise ValueError(
            f"--resolution {resolution} cannot be taken by this model: its {levels} levels halve the image "
            f"{levels - 1} times, so the resolution must be a multiple of {factor}. Use a resolution such as "
            f"{max(factor, resolution // factor * factor)} or a --model_config with fewer levels."
        )


def unet_config_from(
    model_keys: dict[str, Any], *, resolution: int, channels: int, num_classes: int | None
) -> dict[str, Any]:
    """The keyword arguments of the `DDPMUNet2DModel` to train: `model_keys` (from `read_model_config`) completed
    with what the data decides: the sample size, the channels, and the number of classes (`None`: unconditional).
    """
    from_data = {
        "sample_size": resolution,
        "in_channels": channels,
        "out_channels": channels,
        "num_class_embeds": num_classes,
    }
    return _completed(model_keys, from_data)


def classifier_config_from(
    model_keys: dict[str, Any], *, resolution: int, channels: int, num_classes: int, num_train_timesteps: int
) -> dict[str, Any]:
    """The keyword arguments of the `DDPMClassifier2DModel` to train: `model_keys` (from `read_model_config(...,
    task="classifier")`) completed with what the data and the noise schedule decide: the sample size, the channels,
    the number of classes and the number of training timesteps (--num_train_timesteps, that of the diffusion model
    it will guide)."""
    from_data = {
        "sample_size": resolution,
        "in_channels": channels,
        "num_classes": num_classes,
        "num_train_timesteps": num_train_timesteps,
    }
    return _completed(model_keys, from_data)


def _completed(model_keys: dict[str, Any], from_data: dict[str, Any]) -> dict[str, Any]:
    for key in _DATA_KEYS:
        if key in model_keys and key in from_data and model_keys[key] != from_data[key]:
            raise ValueError(
                f"--model_config sets {key}={model_keys[key]!r} but the data gives {from_data[key]!r}; leave {key} "
                "out (it comes from --resolution, the image channels, the labels and --num_train_timesteps) or make "
                "them agree."
            )
    return {**model_keys, **from_data}


def _model_defaults(task: str) -> dict[str, Any]:
    # Imported here: reading a preset needs no diffusers.
    if task == "classifier":
        from .classifier_2d import DDPMClassifier2DModel as model_class
    else:
        from .unet_2d import DDPMUNet2DModel as model_class

    parameters = inspect.signature(model_class.__init__).parameters
    return {name: parameter.default for name, parameter in parameters.items() if name != "self"}
