"""The pieces of diffusion training that the training script and the demo share.

UNet presets and `--model_config` resolution, the regression target and loss of each prediction type, min-SNR-gamma
weighting, classifier-free-guidance label dropout, the per-step random streams that make a resumed run repeat an
uninterrupted one exactly, and the CPU thread policy.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
LOSS_TYPES = ("l2", "l1", "huber")

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
    # 28x28 or 32x32 grayscale sets such as fashion_mnist: three levels, attention at the coarsest.
    "small": {
        "block_out_channels": (32, 64, 128),
        "layers_per_block": 2,
        "attention_levels": (False, False, True),
        "norm_num_groups": 32,
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

# Keys that the data decides; a model config may repeat them only with the same value.
_DATA_KEYS = ("sample_size", "in_channels", "out_channels", "num_class_embeds")


def read_model_config(model_config: str | None) -> dict[str, Any]:
    """The `DDPMUNet2DModel` config keys that `--model_config` names.

    Args:
        model_config: A name in `UNET_PRESETS`, a JSON file of `DDPMUNet2DModel` config keys (keys it leaves out take
            the model's defaults; keys starting with "_", as in a saved `config.json`, are skipped), or `None` for the
            "small" preset.
    """
    if model_config is None:
        return dict(UNET_PRESETS["small"])
    if model_config in UNET_PRESETS:
        return dict(UNET_PRESETS[model_config])
    if not (model_config.endswith(".json") or os.path.isfile(model_config)):
        raise ValueError(
            f"--model_config must be one of the presets {sorted(UNET_PRESETS)} or a JSON file of UNet config keys; "
            f"{model_config!r} is neither."
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
    allowed = list(_unet_defaults())
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"--model_config file {model_config!r} has unknown keys {unknown}; allowed keys: {allowed}.")
    # JSON has no tuples; the model's config holds tuples.
    return {key: tuple(value) if isinstance(value, list) else value for key, value in config.items()}


def check_resolution(model_keys: dict[str, Any], resolution: int) -> None:
    """Raises a ValueError naming --resolution when the network's levels cannot halve it evenly."""
    levels = len(model_keys.get("block_out_channels", _unet_defaults()["block_out_channels"]))
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
    for key in _DATA_KEYS:
        if key in model_keys and model_keys[key] != from_data[key]:
            raise ValueError(
                f"--model_config sets {key}={model_keys[key]!r} but the data gives {from_data[key]!r}; leave {key} "
                "out (it comes from --resolution, the image channels and the labels) or make them agree."
            )
    return {**model_keys, **from_data}


def _unet_defaults() -> dict[str, Any]:
    from .models.unet_2d import DDPMUNet2DModel  # here: the thread and launcher helpers need no diffusers

    parameters = inspect.signature(DDPMUNet2DModel.__init__).parameters
    return {name: parameter.default for name, parameter in parameters.items() if name != "self"}


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


class CpuBf16Support(NamedTuple):
    """Whether this CPU has bfloat16 instructions, and a line that says so and what follows for --mixed_precision."""

    native: bool
    message: str


def read_cpuinfo(cpuinfo_path: str = "/proc/cpuinfo") -> tuple[str | None, set[str]]:
    """The CPU's model name and its feature flags (`avx2`, `avx512_bf16`, ...), as Linux lists them; `(None, set())`
    where there is no such file."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as cpuinfo:
            text = cpuinfo.read()
    except OSError:
        return None, set()
    model = re.search(r"^model name\s*:\s*(.*)$", text, flags=re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, flags=re.MULTILINE)
    return (model.group(1).strip() if model else None), set(flags.group(1).split() if flags else ())


def cpu_bf16_support(cpuinfo_path: str = "/proc/cpuinfo") -> CpuBf16Support:
    """Whether bf16 autocast can pay on this CPU: only with bf16 instructions (the flags `avx512_bf16` or `amx_bf16`).
    Elsewhere bf16 runs emulated, in kernels that make training several times slower than fp32."""
    capability = torch.backends.cpu.get_cpu_capability()
    _, flags = read_cpuinfo(cpuinfo_path)
    found = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]
    if found:
        return CpuBf16Support(
            True,
            f"bf16 on CPU: this CPU has bf16 instructions ({', '.join(found)}; torch uses "
            f"{capability}): bf16 autocast can pay here.",
        )
    return CpuBf16Support(
        False,
        f"bf16 on CPU: this CPU has no bf16 instructions (no avx512_bf16 or amx_bf16; torch "
        f"uses {capability}): bf16 autocast is emulated here and trains several times slower "
        f"than fp32. Use --mixed_precision no.",
    )


def cpu_threads_per_process(
    num_processes_on_node: int, dataloader_num_workers: int, idle_cores: int | None = None
) -> int:
    """How many intra-op threads torch should use in each training process on a CPU.

    A torch thread that shares its core with another busy process stalls every parallel region it takes part in: on
    a 2-core machine where one other process is busy, 2 threads train several times slower than 1. So only idle
    cores count: those that no other work keeps busy when training starts (`idle_cores`, measured when not given),
    less one for each data-loading worker. They are shared equally between the training processes on this machine,
    at least one thread each.
    """
    if idle_cores is None:
        idle_cores = _idle_cores()
    free = idle_cores - num_processes_on_node * dataloader_num_workers
    return max(1, free // num_processes_on_node)


def _idle_cores() -> int:
    """Cores this process may use that were idle over the last fifth of a second."""
    import psutil  # a dependency of accelerate

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count()
    busy = round(psutil.cpu_percent(interval=0.2) / 100 * psutil.cpu_count())
    return min(usable, psutil.cpu_count() - busy)


class TorchThreads(NamedTuple):
    """How many intra-op threads torch should use, and why (for the log: `torch threads: {threads} ({reason})`)."""

    threads: int
    reason: str


@dataclass
class Launcher:
    """The launcher that started this process, and what its user told it about threads.

    Args:
        name: "accelerate launch" or "torchrun".
        omp_num_threads: OMP_NUM_THREADS in the launcher's own environment (`None`: it had none), i.e. the user's.
        num_cpu_threads_per_process: `accelerate launch --num_cpu_threads_per_process` (`None`: not given).
        readable: whether the launcher's environment could be read; if not, what it passed on cannot be told from
            its own default and is taken as the user's.
    """

    name: str
    omp_num_threads: str | None = None
    num_cpu_threads_per_process: int | None = None
    readable: bool = True


def choose_torch_threads(
    device_type: str,
    dataloader_num_workers: int = 0,
    *,
    environ: Mapping[str, str] | None = None,
    launcher: Launcher | None | Literal["find"] = "find",
    idle_cores: int | None = None,
    current_threads: int | None = None,
) -> TorchThreads:
    """How many intra-op threads torch should use in this training process, and why.

    A thread count that the user chose stands: OMP_NUM_THREADS set by the user, or `accelerate launch
    --num_cpu_threads_per_process`. Otherwise a process on a CPU takes its share of the idle cores
    (`cpu_threads_per_process`). `accelerate launch` always sets OMP_NUM_THREADS for the processes it starts, and
    without --num_cpu_threads_per_process it sets it to its own default (1, or with `--cpu` the physical cores per
    process); torchrun sets 1 when it starts several processes. Neither marks that the value is its default, so the
    launcher is found among this process's ancestors and asked: the value is the user's only when OMP_NUM_THREADS
    was in the launcher's own environment or --num_cpu_threads_per_process on its command line.

    Args:
        device_type: the training device (`accelerator.device.type`); other than "cpu", torch's setting is kept.
        dataloader_num_workers: data-loading worker processes of each training process.
        environ: this process's environment (default `os.environ`); LOCAL_WORLD_SIZE gives the training processes
            on this machine.
        launcher: the launcher that started this process (`None`: none); "find" looks it up with `find_launcher`.
        idle_cores: cores that no other work keeps busy, by default measured (only when needed).
        current_threads: torch's present thread count, by default `torch.get_num_threads()`.
    """
    environ = os.environ if environ is None else environ
    current_threads = torch.get_num_threads() if current_threads is None else current_threads
    if device_type != "cpu":
        return TorchThreads(current_threads, f"training on {device_type}: torch's setting kept")

    omp = environ.get("OMP_NUM_THREADS")
    replaced = ""
    if omp is not None:
        launcher = find_launcher() if launcher == "find" else launcher
        if launcher is None:
            return _user_threads(omp, current_threads, "OMP_NUM_THREADS={}, set by the user")
        if launcher.num_cpu_threads_per_process is not None:
            threads = launcher.num_cpu_threads_per_process
            return _user_threads(omp, current_threads, f"--num_cpu_threads_per_process {threads} of {launcher.name}")
        if launcher.omp_num_threads is not None:
            return _user_threads(omp, current_threads, "OMP_NUM_THREADS={}, set by the user for " + launcher.name)
        if not launcher.readable:
            return _user_threads(
                omp,
                current_threads,
                f"OMP_NUM_THREADS={{}} from {launcher.name}, kept: whether the user set it cannot be told here",
            )
        replaced = f"; replaces {launcher.name}'s default OMP_NUM_THREADS={omp}"

    processes = int(environ.get("LOCAL_WORLD_SIZE", 1))
    idle_cores = _idle_cores() if idle_cores is None else idle_cores
    threads = cpu_threads_per_process(processes, dataloader_num_workers, idle_cores)
    reason = f"{idle_cores} idle cores, {processes} training process(es) on this machine"
    if dataloader_num_workers:
        reason += f" with {dataloader_num_workers} data-loading worker(s) each"
    return TorchThreads(threads, reason + replaced)


def _user_threads(omp: str, current_threads: int, reason: str) -> TorchThreads:
    """The thread count that OMP_NUM_THREADS gives (its first number: "4,2" nests levels), else torch's own."""
    try:
        threads = int(omp.split(",")[0])
    except ValueError:
        threads = 0
    return TorchThreads(threads if threads > 0 else current_threads, reason.format(omp))


def find_launcher() -> Launcher | None:
    """The nearest ancestor of this process that is `accelerate launch` or torchrun, with what its user told it
    about threads; `None` when there is none (`python training/train.py`, the demo)."""
    import psutil  # a dependency of accelerate

    try:
        ancestors = psutil.Process().parents()
    except (psutil.Error, OSError):
        return None
    for process in ancestors:
        try:
            cmdline = process.cmdline()
        except (psutil.Error, OSError):
            continue
        if launcher_arguments(cmdline)[0] is None:
            continue
        try:
            environ = process.environ()  # the environment it was started with
        except (psutil.Error, OSError, NotImplementedError):
            environ = None
        return launcher_from(cmdline, environ)
    return None


def launcher_from(cmdline: Sequence[str], environ: Mapping[str, str] | None) -> Launcher | None:
    """The `Launcher` that a process with this command line and environment (`None`: unreadable) is, if any."""
    name, arguments = launcher_arguments(cmdline)
    if name is None:
        return None
    if environ is None:
        return Launcher(name, readable=False)
    return Launcher(name, environ.get("OMP_NUM_THREADS"), _num_cpu_threads_per_process(name, arguments))


def launcher_arguments(cmdline: Sequence[str]) -> tuple[str | None, list[str]]:
    """("accelerate launch" or "torchrun", the launcher's own arguments) when `cmdline` runs one, else (None, [])."""
    program, arguments = _program(list(cmdline))
    if program in ("accelerate", "accelerate.commands.accelerate_cli") and arguments[:1] == ["launch"]:
        return "accelerate launch", arguments[1:]
    if program in ("accelerate-launch", "accelerate.commands.launch"):
        return "accelerate launch", arguments
    if program in ("torchrun", "torch.distributed.run", "torch.distributed.launch"):
        return "torchrun", arguments
    return None, []


def _program(words: list[str]) -> tuple[str, list[str]]:
    """The program a command line runs (a script's or executable's name, or the module of `python -m`), and its
    arguments."""
    if not words:
        return "", []
    name = os.path.splitext(os.path.basename(words[0]))[0]
    if not name.startswith("python"):
        return name, words[1:]
    index = 1
    while index < len(words) and words[index].startswith("-") and words[index] not in ("-m", "-c", "-"):
        index += 2 if words[index] in ("-X", "-W") else 1  # the interpreter's own options
    if index + 1 < len(words) and words[index] == "-m":
        return words[index + 1], words[index + 2 :]
    if index < len(words) and words[index] not in ("-c", "-"):
        return os.path.splitext(os.path.basename(words[index]))[0], words[index + 1 :]
    return name, words[index:]


def _num_cpu_threads_per_process(name: str, arguments: list[str]) -> int | None:
    if name != "accelerate launch":
        return None
    # accelerate's own parser: it alone knows which words are its flags (`--num-cpu-threads-per-process=2` too) and
    # where the training script's begin.
    from accelerate.commands.launch import launch_command_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse prints its complaints before exiting
            parsed, _ = launch_command_parser().parse_known_args(arguments)
    except (SystemExit, Exception):  # a command line this version of accelerate does not read: assume the default
        return None
    return parsed.num_cpu_threads_per_process
