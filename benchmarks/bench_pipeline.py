"""What DDPMCFGPipeline costs on top of its UNet, and what batching the two CFG halves saves.

1. `pipe(...)` with classifier-free guidance against the pure UNet time of the same forwards (same batch of
   cond + uncond, same timesteps): the pipeline's overhead (scheduler steps, guidance arithmetic, labels, progress
   bar, post-processing). Target: at most 1%. Measured two ways: against a separate loop of bare UNet calls (the
   UNet's own run-to-run spread, a few percent on a small CPU, blurs this one), and inside the same calls, with the
   UNet forwards timed by hooks (the pipeline's own time, free of that spread).
2. One UNet forward of the cond + uncond batch against two forwards of half the batch each, per step.

Timings alternate between the variants after a warm-up and report medians.

    python benchmarks/bench_pipeline.py            # 28x28x1 Fashion-MNIST-sized UNet, 8 images, 20 DDIM steps
    python benchmarks/bench_pipeline.py --quick    # a fast smoke run
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from hf_ddpm.models import DDPMUNet2DModel
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.sampling import SCHEDULERS


def build_pipeline(scheduler: str, num_classes: int) -> DDPMCFGPipeline:
    torch.manual_seed(0)
    unet = DDPMUNet2DModel(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        attention_levels=(False, False, True),
        num_class_embeds=num_classes,
    )
    pipe = DDPMCFGPipeline(unet.eval(), SCHEDULERS[scheduler](num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def median_times(variants: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, float]:
    """Median wall time of each variant in seconds; the variants run in turn, round after round."""
    times = {name: [] for name in variants}
    for round_index in range(warmup + repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}


class UNetTimer:
    """Seconds spent inside the UNet's forward, summed over the calls made while it is entered."""

    def __init__(self, unet: torch.nn.Module):
        self.unet, self.seconds, self._started = unet, 0.0, 0.0

    def __enter__(self) -> "UNetTimer":
        self._handles = [
            self.unet.register_forward_pre_hook(lambda module, args: self._start()),
            self.unet.register_forward_hook(lambda module, args, output: self._stop()),
        ]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()

    def _start(self) -> None:
        self._started = time.perf_counter()

    def _stop(self) -> None:
        self.seconds += time.perf_counter() - self._started


def own_time(pipeline_call: Callable[[], object], unet: torch.nn.Module, warmup: int, repeats: int) -> tuple:
    """Median time of a pipeline call and of the UNet forwards inside it, both from the same calls."""
    totals, inside = [], []
    for round_index in range(warmup + repeats):
        with UNetTimer(unet) as timer:
            start = time.perf_counter()
            pipeline_call()
            total = time.perf_counter() - start
        if round_index >= warmup:
            totals.append(total)
            inside.append(timer.seconds)
    own = statistics.median(total - unet_seconds for total, unet_seconds in zip(totals, inside))
    return statistics.median(totals), statistics.median(inside), own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="images per pipeline call (default: 8)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default: 20)")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="ddim")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 images, 3 steps, 3 repeats, 1 warm-up round")
    args = parser.parse_args()
    if args.quick:
        args.images, args.steps, args.repeats, args.warmup = 2, 3, 3, 1

    num_classes = 10
    pipe = build_pipeline(args.scheduler, num_classes)
    unet = pipe.unet
    labels = [i % num_classes for i in range(args.images)]
    pipe.scheduler.set_timesteps(args.steps)
    timesteps = pipe.scheduler.timesteps.clone()
    x = torch.randn(args.images, 1, 28, 28)
    cond = torch.tensor(labels)
    null = torch.full_like(cond, pipe.config.null_class_id)
    both_x, both_labels = torch.cat([x, x]), torch.cat([cond, null])

    def pipeline_call():
        pipe(
            labels,
            guidance_scale=3.0,
            num_inference_steps=args.steps,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        )

    @torch.no_grad()
    def unet_forwards():
        for t in timesteps:
            unet(both_x, t, class_labels=both_labels)

    @torch.no_grad()
    def batched_step():
        unet(both_x, timesteps[0], class_labels=both_labels)

    @torch.no_grad()
    def two_forward_step():
        unet(x, timesteps[0], class_labels=cond)
        unet(x, timesteps[0], class_labels=null)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; UNet 28x28x1, widths (32, 64, 128), "
        f"{sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters"
    )
    print(
        f"{args.images} images with CFG (UNet batch {2 * args.images}), {args.steps} {args.scheduler} steps, "
        f"medians of {args.repeats} after {args.warmup} warm-up rounds"
    )

    whole = median_times({"pipe": pipeline_call, "unet": unet_forwards}, args.warmup, args.repeats)
    overhead = whole["pipe"] / whole["unet"] - 1
    print("\n1. pipeline overhead")
    print(f"   pipe(...)                 {whole['pipe'] * 1e3:9.2f} ms")
    print(f"   the same UNet forwards    {whole['unet'] * 1e3:9.2f} ms")
    print(f"   overhead                  {overhead:+9.2%}  (target <= +1%)")
    total, inside, own = own_time(pipeline_call, unet, args.warmup, args.repeats)
    print("   measured inside the same calls:")
    print(f"   pipe(...)                 {total * 1e3:9.2f} ms")
    print(f"   its UNet forwards         {inside * 1e3:9.2f} ms")
    print(f"   the rest (pipeline)       {own * 1e3:9.2f} ms = {own / inside:+.2%} of the UNet time  (target <= +1%)")

    steps = median_times({"batched": batched_step, "two": two_forward_step}, args.warmup, 3 * args.repeats)
    print("\n2. one step of CFG")
    print(f"   one forward, batch {2 * args.images:<5d}  {steps['batched'] * 1e3:9.2f} ms")
    print(f"   two forwards, batch {args.images:<4d}  {steps['two'] * 1e3:9.2f} ms")
    print(f"   batched speed-up          {steps['two'] / steps['batched']:9.2f}x")


if __name__ == "__main__":
    main()
