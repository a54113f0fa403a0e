"""DDPMUNet2DModel against diffusers' UNet2DModel at matched configurations, in the same process.

For each configuration both networks have the same architecture: widths, depth, attention levels, FiLM time
conditioning, GroupNorm before every attention; the parameter counts are equal (tests/models/test_unet.py loads diffusers'
weights into ours and gets the same outputs). They differ in implementation, and in attention heads: diffusers'
default width 8, our default one head. Timings alternate between the two models after a warm-up and report
medians; speedups above 1 mean ours is faster. A speedup is the median of the per-round ratios (each round times
both models back to back), not the ratio of the medians: a small shared CPU drifts in speed by several percent
over the tens of seconds a run takes, and pairing calls made moments apart cancels that drift. Achieved GFLOP/s (FLOPs counted by
torch.utils.flop_counter.FlopCounterMode) are compared with the fp32 matmul GFLOP/s of the machine it runs on,
measured by the same script.

    python benchmarks/bench_unet.py                       # both configs, eager / channels_last / compile
    python benchmarks/bench_unet.py --config small --modes eager --repeats 20
    python benchmarks/bench_unet.py --quick               # a fast smoke run
    python benchmarks/bench_unet.py --config small --modes eager --breakdown   # + time in convolutions

With --breakdown, each eager forward row is followed by the share of the pass spent in convolutions (oneDNN on
CPU) and their GFLOP/s, for both models, measured with torch.profiler; the script then also measures a large 3x3
convolution as a second reference, since on some CPUs oneDNN's convolutions run faster than the BLAS matmul.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

from hf_ddpm.models import DDPMUNet2DModel

CONFIGS = {
    # Fashion-MNIST sized: 28 -> 14 -> 7, attention at the 7x7 level.
    "small": dict(sample_size=28, channels=1, widths=(32, 64, 128), attention=(False, False, True)),
    # The DDPM CIFAR-10 network (Ho et al. 2020): attention at 16x16.
    "cifar": dict(sample_size=32, channels=3, widths=(128, 256, 256, 256), attention=(False, True, False, False)),
}
MODES = ("eager", "channels_last", "compile")


def build_ours(config: dict) -> DDPMUNet2DModel:
    return DDPMUNet2DModel(
        sample_size=config["sample_size"],
        in_channels=config["channels"],
        out_channels=config["channels"],
        block_out_channels=config["widths"],
        layers_per_block=2,
        attention_levels=config["attention"],
    )


def build_diffusers(
    config: dict,
    attention_head_dim: int,
    num_class_embeds: int | None = None,
    layers_per_block: int = 2,
    norm_num_groups: int = 32,
) -> UNet2DModel:
    down = tuple("AttnDownBlock2D" if flag else "DownBlock2D" for flag in config["attention"])
    up = tuple("AttnUpBlock2D" if flag else "UpBlock2D" for flag in reversed(config["attention"]))
    return UNet2DModel(
        sample_size=config["sample_size"],
        in_channels=config["channels"],
        out_channels=config["channels"],
        block_out_channels=config["widths"],
        layers_per_block=layers_per_block,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
        attn_norm_num_groups=norm_num_groups,
        resnet_time_scale_shift="scale_shift",
        num_class_embeds=num_class_embeds,
    )


def warm_up(functions: dict[str, Callable[[], None]], calls: int) -> dict[str, float]:
    """Untimed calls (compilation happens here); returns the seconds each function's first call took."""
    first = {}
    for name, function in functions.items():
        start = time.perf_counter()
        function()
        first[name] = time.perf_counter() - start
        for _ in range(calls - 1):
            function()
    return first


def alternate(functions: dict[str, Callable[[], None]], repeats: int) -> tuple[dict[str, float], float]:
    """
    Median seconds per call of each function, calls interleaved so that machine noise hits all alike, and the
    median over rounds of diffusers' time / ours within the round.
    """
    times = {name: [] for name in functions}
    for repeat in range(repeats):
        # Reverse the order every other round so neither model always runs right after the other.
        order = list(functions.items()) if repeat % 2 == 0 else list(reversed(functions.items()))
        for name, function in order:
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    speedup = statistics.median(theirs / ours for theirs, ours in zip(times["diffusers"], times["ours"]))
    return {name: statistics.median(values) for name, values in times.items()}, speedup


def matmul_gflops(size: int, repeats: int) -> float:
    """The machine's attainable fp32 GFLOP/s: the best of `repeats` square matrix multiplies."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / min(seconds) / 1e9


def conv_gflops(repeats: int) -> float:
    """GFLOP/s of a large 3x3 convolution (256 -> 256 channels, 16 images of 16x16, channels-last): the best of
    `repeats` calls."""
    weight = torch.randn(256, 256, 3, 3)
    images = torch.randn(16, 256, 16, 16).to(memory_format=torch.channels_last)
    flops = count_flops(lambda: F.conv2d(images, weight, padding=1))
    seconds = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            F.conv2d(images, weight, padding=1)
            seconds.append(time.perf_counter() - start)
    return flops / min(seconds[1:]) / 1e9


def count_flops(function: Callable[[], None], operator: str | None = None) -> int:
    """FLOPs of one call: all of them, or only those of `operator` (e.g. "convolution")."""
    counter = FlopCounterMode(display=False)
    with counter:
        function()
    if operator is None:
        return counter.get_total_flops()
    return sum(flops for op, flops in counter.get_flop_counts()["Global"].items() if op.__name__ == operator)


def convolution_seconds(function: Callable[[], None], calls: int = 5) -> float:
    """Seconds per call spent in convolutions (plain and transposed), from torch.profiler."""
    with torch.profiler.profile() as profiler:
        for _ in range(calls):
            function()
    return sum(event.cpu_time_total for event in profiler.events() if event.name == "aten::convolution") / calls / 1e6


def make_inputs(config: dict, batch: int, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (batch, config["channels"], config["sample_size"], config["sample_size"])
    sample = torch.randn(shape, generator=generator)
    noise = torch.randn(shape, generator=generator)
    if channels_last:
        sample, noise = sample.to(memory_format=torch.channels_last), noise.to(memory_format=torch.channels_last)
    timesteps = torch.randint(0, 1000, (batch,), generator=generator)
    return sample, timesteps, noise


def prepare(model: torch.nn.Module, mode: str) -> Callable:
    if mode == "channels_last":
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if mode == "compile" else model


def forward_function(model: Callable, sample: torch.Tensor, timesteps: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            model(sample, timesteps)

    return run


def train_step_function(
    model: Callable, parameters: list, sample: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor
) -> Callable[[], None]:
    # As training/train.py steps: AdamW with the fused kernel (one pass over all tensors).
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, fused=True)

    def run() -> None:
        loss = F.mse_loss(model(sample, timesteps).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def benchmark_config(name: str, args: argparse.Namespace, peak_gflops: float) -> list[tuple]:
    config = CONFIGS[name]
    torch.manual_seed(0)
    models = {"ours": build_ours(config), "diffusers": build_diffusers(config, args.diffusers_head_dim)}
    counts = {key: model.num_parameters() for key, model in models.items()}
    sample, timesteps, _ = make_inputs(config, 1, channels_last=False)
    flops = {key: count_flops(forward_function(model.eval(), sample, timesteps)) for key, model in models.items()}
    size = config["sample_size"]
    print(
        f"\n[{name}] {size}x{size}x{config['channels']}, widths {config['widths']}, attention {config['attention']}\n"
        f"  parameters: ours {counts['ours']:,}, diffusers {counts['diffusers']:,}; attention heads: ours "
        f"{models['ours'].config.attention_head_dim or 'one per block'}, diffusers of width {args.diffusers_head_dim}\n"
        f"  forward GFLOP per image: ours {flops['ours'] / 1e9:.3f}, diffusers {flops['diffusers'] / 1e9:.3f} "
        f"(our upsampling convolutions do 16/36 of the multiply-adds)"
    )
    rows = []
    for mode in args.modes:
        try:
            rows += benchmark_mode(name, mode, args, peak_gflops)
        except Exception as error:  # torch.compile can fail on some set-ups; report it and go on
            print(f"{name:7} {mode:14} failed: {type(error).__name__}: {error}".splitlines()[0], flush=True)
    return rows


def benchmark_mode(name: str, mode: str, args: argparse.Namespace, peak_gflops: float) -> list[tuple]:
    config = CONFIGS[name]
    torch.manual_seed(0)
    eager = {"ours": build_ours(config), "diffusers": build_diffusers(config, args.diffusers_head_dim)}
    prepared = {key: prepare(model, mode) for key, model in eager.items()}
    channels_last = mode == "channels_last"
    rows = []
    for batch in args.batch_sizes:
        sample, timesteps, _ = make_inputs(config, batch, channels_last)
        for model in eager.values():
            model.eval()
        forwards = {key: forward_function(model, sample, timesteps) for key, model in prepared.items()}
        flops = {key: count_flops(forward_function(model, sample, timesteps)) for key, model in eager.items()}
        first = warm_up(forwards, args.warmup)
        if mode == "compile":
            print(f"{name:7} {mode:14} first forward b{batch} (compiles): " + describe_seconds(first), flush=True)
        seconds, speedup = alternate(forwards, args.repeats)
        rows.append(result_row(name, mode, f"forward b{batch}", seconds, speedup, flops, batch, peak_gflops))
        print(format_row(rows[-1]), flush=True)
        if args.breakdown and mode == "eager":
            print(describe_convolutions(forwards, seconds), flush=True)
    if args.train_batch_size:
        sample, timesteps, noise = make_inputs(config, args.train_batch_size, channels_last)
        for model in eager.values():
            model.train()
        steps = {
            key: train_step_function(prepared[key], list(eager[key].parameters()), sample, timesteps, noise)
            for key in eager
        }
        flops = {
            key: count_flops(train_step_function(model, list(model.parameters()), sample, timesteps, noise))
            for key, model in eager.items()
        }
        first = warm_up(steps, args.warmup)
        if mode == "compile":
            print(f"{name:7} {mode:14} first train step (compiles): " + describe_seconds(first), flush=True)
        seconds, speedup = alternate(steps, args.train_repeats)
        task = f"train b{args.train_batch_size}"
        rows.append(result_row(name, mode, task, seconds, speedup, flops, None, peak_gflops))
        print(format_row(rows[-1]), flush=True)
    return rows


def describe_convolutions(forwards: dict[str, Callable[[], None]], seconds: dict[str, float]) -> str:
    parts = []
    for key, forward in forwards.items():
        in_convolutions = convolution_seconds(forward)
        gflops = count_flops(forward, "convolution") / in_convolutions / 1e9
        rest = seconds[key] - in_convolutions
        parts.append(f"{key} {1e3 * in_convolutions:.1f} ms at {gflops:.0f} GF/s, the rest {1e3 * rest:.1f} ms")
    return "    convolutions (profiled): " + "; ".join(parts)


def describe_seconds(seconds: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.1f} s" for key, value in seconds.items())


def result_row(config, mode, task, seconds, speedup, flops, batch, peak_gflops) -> tuple:
    gflops = {key: flops[key] / seconds[key] / 1e9 for key in seconds}
    speed = {key: (batch / seconds[key] if batch else 1e3 * seconds[key]) for key in seconds}
    shares = {key: value / peak_gflops for key, value in gflops.items()}
    return (
        config,
        mode,
        task,
        speed["ours"],
        speed["diffusers"],
        speedup,
        gflops["ours"],
        gflops["diffusers"],
        shares["ours"],
        shares["diffusers"],
    )


HEADER = (
    f"{'config':7} {'mode':14} {'task':11} {'ours':>9} {'diffusers':>9} {'speedup':>7} "
    f"{'GF/s ours':>9} {'GF/s diff':>9} {'%mm ours':>8} {'%mm diff':>8}"
)


def format_row(row: tuple) -> str:
    config, mode, task, ours, theirs, ratio, gf_ours, gf_theirs, share_ours, share_theirs = row
    unit = "img/s" if task.startswith("forward") else "ms"
    return (
        f"{config:7} {mode:14} {task:11} {ours:9.1f} {theirs:9.1f} {ratio:6.2f}x "
        f"{gf_ours:9.1f} {gf_theirs:9.1f} {share_ours:8.0%} {share_theirs:8.0%}   ({unit})"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 64], help="forward batch sizes")
    parser.add_argument("--train-batch-size", type=int, default=16, help="0 skips the train step")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward calls per model")
    parser.add_argument("--train-repeats", type=int, default=5, help="timed train steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per model first (compile included)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--diffusers-head-dim", type=int, default=8, help="attention_head_dim of UNet2DModel")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--quick", action="store_true", help="eager only, batch 16, 3 repeats: a smoke run")
    parser.add_argument("--breakdown", action="store_true", help="time in convolutions after each eager forward")
    args = parser.parse_args()
    if args.quick:
        args.modes, args.batch_sizes, args.repeats, args.train_repeats, args.warmup = ["eager"], [16], 3, 2, 1
        args.matmul_size = 1024
    for name in ("repeats", "train_repeats", "warmup", "matmul_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.batch_sizes) < 1 or args.train_batch_size < 0:
        parser.error("batch sizes must be positive (--train-batch-size 0 skips the train step)")
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_gflops(args.matmul_size, repeats=10)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; fp32 matmul {args.matmul_size}^2: {peak:.1f} GFLOP/s")
    if args.breakdown:
        print(f"fp32 3x3 convolution, 256 -> 256 channels at 16x16, batch 16: {conv_gflops(repeats=10):.1f} GFLOP/s")
    rows = []
    for name in CONFIGS if args.config == "all" else [args.config]:
        print(HEADER)
        rows += benchmark_config(name, args, peak)
    print("\nSummary (speedup = diffusers time / ours; forward in images/s, train step in ms):")
    print(HEADER)
    for row in rows:
        print(format_row(row))


if __name__ == "__main__":
    main()
