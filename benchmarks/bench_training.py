"""Training steps per second: eager against torch.compile (and what compiling costs), fp32 against bf16 autocast,
optionally channels_last and diffusers' UNet2DModel beside ours, on the digits configs (`digits`, and `digits-narrow`
that the demo trains), the Fashion-MNIST recipe's `small` config (and `small-narrow`, `small-wide` at other widths)
and the CIFAR-10 config.

Each step is the training script's: `training_loss` (noise, timesteps, label dropout, the v or epsilon target)
through the model built from the preset, backward, fused AdamW. Every variant trains its own copy of the same
initial weights on the same batches; the variants alternate round by round after a warm-up (whose first step is the
compilation for compiled variants) and the table gives median steps/s, images/s, the ratio to the first variant, and
the mean loss over the timed steps (comparable across precisions: bf16 should not change the loss curve; `--loss-curve`
trains the variants side by side on the real digits and prints their curves).

    python benchmarks/bench_training.py                       # digits and CIFAR configs, fp32/bf16 x eager/compile
    python benchmarks/bench_training.py --configs ddpm-cifar10 --models ours diffusers \\
        --variants bf16 bf16+channels_last bf16+channels_last+compile --device cuda --batch-size 128
    python benchmarks/bench_training.py --configs digits small --models ours diffusers --variants fp32 bf16
    python benchmarks/bench_training.py --configs small-narrow small small-wide --variants bf16   # Fashion's widths
    python benchmarks/bench_training.py --quick               # a smoke run: digits, fp32 and bf16, 2 rounds
    python benchmarks/bench_training.py --configs digits --variants fp32 bf16 --loss-curve 600   # loss curves

The process keeps freed memory for reuse (`keep_freed_memory`), as the training script does on a CPU;
`--default-allocator` leaves glibc's defaults, to measure what that is worth.

Timings need a quiet machine: run nothing else beside it.
"""

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from bench_evaluation import cpu_description
from bench_unet import CONFIGS, build_diffusers

from hf_ddpm.cpu import cpu_bf16_support, keep_freed_memory
from hf_ddpm.data import load_image_data
from hf_ddpm.models import DDPMUNet2DModel
from hf_ddpm.models.presets import read_model_config, unet_config_from
from hf_ddpm.schedulers import DDPMScheduler
from hf_ddpm.training.train import parse_args as training_args, training_loss

# The presets measured: the demo's digits model, the Fashion-MNIST recipe's and the DDPM CIFAR-10 network, with the
# data shapes they train on.
DEMO_FLAGS = ["--prediction_type", "v_prediction", "--beta_schedule", "squaredcos_cap_v2"]
# The Fashion-MNIST recipe's data shape and loss.
FASHION = dict(resolution=28, channels=1, num_classes=10, batch_size=32, flags=[*DEMO_FLAGS, "--snr_gamma", "5"])
SETUPS = {
    "digits": dict(resolution=16, channels=1, num_classes=10, batch_size=32, flags=DEMO_FLAGS),
    "digits-narrow": dict(resolution=16, channels=1, num_classes=10, batch_size=32, flags=DEMO_FLAGS),
    "small": dict(FASHION),
    # `small` at three quarters (the recipe's preset now) and at one and a half times its widths: the widths tried for
    # the Fashion-MNIST recipe at the same training time (docs/fashion-mnist.md).
    "small-narrow": dict(FASHION),
    "small-wide": dict(FASHION, preset="small", overrides={"block_out_channels": (48, 96, 192), "norm_num_groups": 16}),
    "ddpm-cifar10": dict(resolution=32, channels=3, num_classes=10, batch_size=16, flags=[]),
}
OPTIONS = ("fp32", "bf16", "compile", "channels_last")


def build_model(name: str, setup: str) -> torch.nn.Module:
    """Our UNet from the preset, or diffusers' UNet2DModel of the same architecture."""
    spec = SETUPS[setup]
    keys = {**read_model_config(spec.get("preset", setup)), **spec.get("overrides", {})}
    if name == "ours":
        return DDPMUNet2DModel(
            **unet_config_from(
                keys, resolution=spec["resolution"], channels=spec["channels"], num_classes=spec["num_classes"]
            )
        )
    # One more embedding row than classes: the null label, which ours keeps apart.
    if setup == "ddpm-cifar10":
        return build_diffusers(CONFIGS["cifar"], attention_head_dim=8, num_class_embeds=spec["num_classes"] + 1)
    widths = keys["block_out_channels"]
    config = dict(
        sample_size=spec["resolution"], channels=spec["channels"], widths=widths, attention=keys["attention_levels"]
    )
    return build_diffusers(
        config,
        attention_head_dim=widths[-1],  # one head, as ours
        num_class_embeds=spec["num_classes"] + 1,
        layers_per_block=keys["layers_per_block"],
        norm_num_groups=keys["norm_num_groups"],
    )


def training_images(setup: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The real digits (and labels) for the digits config, so that loss curves mean something; random images of the
    CIFAR shape otherwise (the timing does not depend on the pixels)."""
    spec = SETUPS[setup]
    if setup.startswith("digits"):
        data = load_image_data(dataset_name="digits", resolution=spec["resolution"])
        return data.images, data.labels
    if setup.startswith("small"):
        data = load_image_data(dataset_name="fashion_mnist", resolution=spec["resolution"], max_samples=4096)
        return data.images, data.labels
    generator = torch.Generator().manual_seed(0)
    shape = (256, spec["channels"], spec["resolution"], spec["resolution"])
    images = torch.rand(shape, generator=generator) * 2 - 1
    return images, torch.randint(0, spec["num_classes"], (len(images),), generator=generator)


def step_function(model_name: str, variant: str, setup: str, initial: torch.nn.Module, device: torch.device):
    """One training step of `variant` ("bf16+compile", ...) on its own copy of `initial`; returns the loss."""
    options = variant.split("+")
    spec = SETUPS[setup]
    args = training_args(["--dataset_name", "digits", "--resolution", str(spec["resolution"]), *spec["flags"]])
    model = copy.deepcopy(initial).to(device).train()
    memory_format = torch.channels_last if "channels_last" in options else torch.contiguous_format
    model.to(memory_format=memory_format)
    forward = torch.compile(model) if "compile" in options else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
    )
    null_class_id = spec["num_classes"]
    images, labels = training_images(setup)
    images, labels = images.to(device, memory_format=memory_format), labels.to(device)
    calls = iter(range(10**9))

    def step() -> float:
        batch_generator = torch.Generator().manual_seed(next(calls))  # the same batches for every variant
        batch = torch.randint(0, len(images), (spec["batch_size"],), generator=batch_generator).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in options):
            loss = training_loss(
                forward, noise_scheduler, [images[batch], labels[batch]], batch_generator, args, null_class_id
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # waits for the device

    return step


def measure(steps: dict[str, Callable[[], float]], warmup: int, repeats: int) -> dict[str, dict]:
    """First-step seconds, median seconds per step and mean loss of each variant, rounds alternating in order."""
    results = {name: {"first": 0.0, "seconds": [], "losses": []} for name in steps}
    for name, step in steps.items():
        started = time.perf_counter()
        step()
        results[name]["first"] = time.perf_counter() - started
        for _ in range(warmup - 1):
            step()
    for round_index in range(repeats):
        order = list(steps.items()) if round_index % 2 == 0 else list(reversed(steps.items()))
        for name, step in order:
            started = time.perf_counter()
            results[name]["losses"].append(step())
            results[name]["seconds"].append(time.perf_counter() - started)
    return {
        name: {"first": r["first"], "seconds": statistics.median(r["seconds"]), "loss": statistics.mean(r["losses"])}
        for name, r in results.items()
    }


def loss_curves(steps: dict[str, Callable[[], float]], total: int, windows: int = 10) -> None:
    """Trains every variant `total` steps on the same batches (alternating) and prints the mean loss per window."""
    losses = {name: [] for name in steps}
    for _ in range(total):
        for name, step in steps.items():
            losses[name].append(step())
    size = max(1, total // windows)
    print(f"{'steps':>11} " + " ".join(f"{name:>18}" for name in steps))
    for start in range(0, total, size):
        means = [statistics.mean(values[start : start + size]) for values in losses.values()]
        print(f"{start + 1:>5}-{min(start + size, total):<5} " + " ".join(f"{mean:18.4f}" for mean in means))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs", nargs="+", choices=list(SETUPS), default=[name for name in SETUPS if "preset" not in SETUPS[name]]
    )
    parser.add_argument("--models", nargs="+", choices=["ours", "diffusers"], default=["ours"])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["fp32", "bf16", "fp32+compile", "bf16+compile"],
        help=f"'+'-joined options of {OPTIONS}; the first is the baseline of the ratios",
    )
    parser.add_argument("--batch-size", type=int, help="per config default: digits and small 32 (the demos'), CIFAR 16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (the first compiles)")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="digits, fp32 and bf16, 1 warm-up step, 2 rounds")
    parser.add_argument("--default-allocator", action="store_true", help="leave glibc's thresholds as they are")
    parser.add_argument(
        "--loss-curve",
        type=int,
        metavar="STEPS",
        help="instead of timing, train each variant STEPS steps on the same batches (the real digits "
        "for the digits config) and print the mean loss of every tenth of the run",
    )
    args = parser.parse_args()
    if args.quick:
        args.configs, args.variants, args.warmup, args.repeats = ["digits"], ["fp32", "bf16"], 1, 2
    for variant in args.variants:
        unknown = set(variant.split("+")) - set(OPTIONS)
        if unknown:
            parser.error(f"--variants {variant!r}: unknown {sorted(unknown)}; options are {OPTIONS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_description()
    print(f"torch {torch.__version__} on {where}, {torch.get_num_threads()} threads")
    if device.type == "cpu":
        print(cpu_bf16_support().message)
        print("freed memory: left to glibc's defaults" if args.default_allocator else keep_freed_memory())

    for setup in args.configs:
        if args.batch_size:
            SETUPS[setup]["batch_size"] = args.batch_size
        torch.manual_seed(0)
        steps = {}
        for model_name in args.models:
            initial = build_model(model_name, setup)
            for variant in args.variants:
                steps[f"{model_name} {variant}"] = step_function(model_name, variant, setup, initial, device)
        batch = SETUPS[setup]["batch_size"]
        if args.loss_curve:
            print(f"\n[{setup}] batch {batch}, mean loss of each variant over {args.loss_curve} steps")
            loss_curves(steps, args.loss_curve)
            continue
        print(f"\n[{setup}] batch {batch}, {args.warmup} warm-up steps, {args.repeats} rounds")
        results = measure(steps, args.warmup, args.repeats)
        baseline = next(iter(results.values()))["seconds"]
        print(f"{'variant':34} {'steps/s':>8} {'images/s':>9} {'ratio':>6} {'first step s':>12} {'mean loss':>9}")
        for name, r in results.items():
            print(
                f"{name:34} {1 / r['seconds']:8.2f} {batch / r['seconds']:9.1f} {baseline / r['seconds']:5.2f}x "
                f"{r['first']:12.1f} {r['loss']:9.4f}"
            )


if __name__ == "__main__":
    main()
