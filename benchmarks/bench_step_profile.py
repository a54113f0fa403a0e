"""Where a training step's time goes, and how close its convolutions and matmuls run to this CPU's limit.

For the demo's configuration (the `digits` UNet at 16x16) and the Fashion-MNIST recipe's (`small-narrow` at 28x28, and
`small`, its UNet before), each at batch 32 as their demos train: one step of the training script split into its parts
(the batch, the forward pass with the loss, the backward pass, the optimizer, the EMA), timed as medians over several
steps after a warm-up, each with its share of the step. Then, from torch.profiler's FLOP counts, the achieved GFLOP/s
of the step's convolutions and matmuls (forward and backward), and their share of the step's op time, beside the
GFLOP/s of the step's largest convolution timed alone (what this CPU reaches on that shape when nothing else runs: the
practical peak).

The process keeps freed memory for reuse (`keep_freed_memory`), as the training script does on a CPU;
`--default-allocator` leaves glibc's defaults, and each step's page faults are printed.

    python benchmarks/bench_step_profile.py                      # every configuration, fp32 and bf16 autocast
    python benchmarks/bench_step_profile.py --configs small --precisions bf16 --steps 20

Timings need a quiet machine: run nothing else beside it.
"""

import argparse
import resource
import statistics
import time
from collections import defaultdict

import torch
from bench_evaluation import cpu_description
from diffusers.training_utils import EMAModel

from hf_ddpm.cpu import keep_freed_memory
from hf_ddpm.data import load_image_data
from hf_ddpm.models import DDPMUNet2DModel
from hf_ddpm.models.presets import read_model_config, unet_config_from
from hf_ddpm.schedulers import DDPMScheduler
from hf_ddpm.training.flags import parse_args as training_args
from hf_ddpm.training.step import MICRO_BATCH, seeded_generator, training_loss

SETUPS = {
    "digits": dict(dataset="digits", resolution=16),
    "small": dict(dataset="fashion_mnist", resolution=28),
    "small-narrow": dict(dataset="fashion_mnist", resolution=28),
}
PARTS = ("batch", "forward", "backward", "optimizer", "ema")
# The ops of each kind, at every level of the dispatch (their self times add up), the backward passes' included.
# torch.profiler has a FLOP formula for the forward convolution only: counted once per call (at conv2d and again at
# convolution; the larger is taken), and its backward as twice as many (the input's and the weight's gradients, each
# a product of the same size; the first layer's input gradient, which is not computed, makes this a slight
# overcount). A matmul's FLOPs are counted at mm, addmm, bmm or baddbmm, the backward's included (summed: they are
# different calls).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul")
MATMUL_FLOP_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
CONV_OPS = (
    "aten::convolution",
    "aten::_convolution",
    "aten::mkldnn_convolution",
    "aten::conv2d",
    "aten::convolution_backward",
)
BACKWARD_CONV_FLOPS = 2  # times the forward's


def build(config: str, batch_size: int):
    """The model, optimizer, EMA, noise schedule, real images and flags of the demo's run of `config`."""
    setup = SETUPS[config]
    data = load_image_data(dataset_name=setup["dataset"], resolution=setup["resolution"], max_samples=4096)
    flags = ["--dataset_name", setup["dataset"], "--output_dir", "unused", "--resolution", str(setup["resolution"])]
    flags += ["--prediction_type", "v_prediction", "--beta_schedule", "squaredcos_cap_v2", "--use_ema"]
    args = training_args(flags)
    keys = read_model_config(config)
    model = DDPMUNet2DModel(
        **unet_config_from(keys, resolution=setup["resolution"], channels=1, num_classes=data.num_classes)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, foreach=True)
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    return model, optimizer, ema, scheduler, data, args


def timed_step(model, optimizer, ema, scheduler, data, args, step: int, batch_size: int, bf16: bool) -> dict:
    """One training step, each part timed."""
    times, started = {}, time.perf_counter()
    rows = torch.randint(0, len(data), (batch_size,), generator=torch.Generator().manual_seed(step))
    batch = [data.images[rows], data.labels[rows]]
    generator = seeded_generator(0, MICRO_BATCH, 0, step)
    times["batch"] = time.perf_counter() - started
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = training_loss(model, scheduler, batch, generator, args, data.num_classes)
    times["forward"] = time.perf_counter() - started
    started = time.perf_counter()
    loss.backward()
    times["backward"] = time.perf_counter() - started
    started = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    times["optimizer"] = time.perf_counter() - started
    started = time.perf_counter()
    ema.step(model.parameters())
    times["ema"] = time.perf_counter() - started
    return times


def flops_and_time(model, optimizer, ema, scheduler, data, args, batch_size: int, bf16: bool) -> dict:
    """FLOPs and self CPU time of the convolutions and of the matmuls of one step, from torch.profiler."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, with_flops=True, record_shapes=True) as profile:
        timed_step(model, optimizer, ema, scheduler, data, args, 10_000, batch_size, bf16)
    totals = defaultdict(lambda: [0.0, 0.0])
    for event in profile.key_averages():
        if event.key in CONV_OPS:
            totals["conv"][0] = max(totals["conv"][0], event.flops * (1 + BACKWARD_CONV_FLOPS))
            totals["conv"][1] += event.self_cpu_time_total / 1e6
        elif event.key in MATMUL_OPS:
            totals["matmul"][0] += event.flops if event.key in MATMUL_FLOP_OPS else 0
            totals["matmul"][1] += event.self_cpu_time_total / 1e6
    total_time = sum(event.self_cpu_time_total for event in profile.key_averages()) / 1e6
    return {"totals": dict(totals), "step_seconds": total_time}


def largest_conv_gflops(model, sample: torch.Tensor, labels: torch.Tensor, bf16: bool, repeats: int = 20):
    """The GFLOP/s of the step's most expensive convolution (the input shape it is fed, forward and backward), timed
    alone: what this CPU reaches on that shape."""
    shapes = {}

    def record(module, inputs, output):
        shapes.setdefault(module, inputs[0].shape)  # returns nothing: the output stays the module's

    hooks = [module.register_forward_hook(record) for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    with torch.no_grad():
        model(sample, torch.zeros(len(sample), dtype=torch.long), class_labels=labels)
    for hook in hooks:
        hook.remove()

    def macs(item):
        conv, shape = item
        return (
            shape[0]
            * conv.in_channels
            * conv.out_channels
            * conv.kernel_size[0]
            * conv.kernel_size[1]
            * shape[2]
            * shape[3]
        )

    conv, shape = max(shapes.items(), key=macs)
    weight = conv.weight.detach().clone().requires_grad_()
    inputs = torch.randn(shape, requires_grad=True)
    flops = 2 * macs((conv, shape)) * 3  # the forward pass, and the backward pass's two products of the same size
    samples = []
    for index in range(repeats + 3):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = torch.nn.functional.conv2d(inputs, weight, stride=conv.stride, padding=conv.padding)
        out.float().sum().backward()
        if index >= 3:
            samples.append(time.perf_counter() - started)
    described = (
        f"{conv.in_channels}->{conv.out_channels} {conv.kernel_size[0]}x{conv.kernel_size[1]} at {shape[2]}x{shape[3]}"
    )
    return described, flops / statistics.median(samples) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=32, help="the demos' batch")
    parser.add_argument("--steps", type=int, default=15, help="timed steps after 3 of warm-up")
    parser.add_argument("--default-allocator", action="store_true", help="leave glibc's thresholds as they are")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("freed memory: left to glibc's defaults" if args.default_allocator else keep_freed_memory())
    for config in args.configs:
        for precision in args.precisions:
            bf16 = precision == "bf16"
            parts = build(config, args.batch_size)
            samples, faults = defaultdict(list), []
            for step in range(args.steps + 3):
                faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                times = timed_step(*parts, step, args.batch_size, bf16)
                if step >= 3:
                    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faulted)
                    for part, seconds in times.items():
                        samples[part].append(seconds)
            medians = {part: statistics.median(samples[part]) for part in PARTS}
            total = sum(medians.values())
            print(
                f"\n{config} ({SETUPS[config]['resolution']}x{SETUPS[config]['resolution']}), batch "
                f"{args.batch_size}, {precision}: {total * 1000:.1f} ms a step ({1 / total:.2f} steps/s), "
                f"{statistics.median(faults):.0f} page faults a step"
            )
            for part in PARTS:
                print(f"  {part:<10} {medians[part] * 1000:8.1f} ms  {medians[part] / total:6.1%}")
            profiled = flops_and_time(*parts, args.batch_size, bf16)
            # Under autocast the profiler records each convolution at two dispatch levels: count the FLOPs of the
            # same step in fp32, which are the same multiply-adds.
            counted = flops_and_time(*parts, args.batch_size, False)["totals"] if bf16 else profiled["totals"]
            for kind, (_, seconds) in sorted(profiled["totals"].items()):
                flops = counted[kind][0]
                share = seconds / profiled["step_seconds"]
                print(
                    f"  {kind:<10} {flops / 1e9:8.2f} GFLOP in {seconds * 1000:7.1f} ms of ops: "
                    f"{flops / seconds / 1e9:7.1f} GFLOP/s, {share:.0%} of the profiled op time"
                )
            model, data = parts[0], parts[4]
            sample = data.images[: args.batch_size]
            shape, peak = largest_conv_gflops(model, sample, data.labels[: args.batch_size], bf16)
            print(f"  the largest convolution alone ({shape}, forward and backward): {peak:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
