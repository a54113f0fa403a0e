"""Time `step` and `add_noise` of hf_ddpm's DDPMScheduler and DDIMScheduler against diffusers' classes of the same name.

A batch of 64 images of 1x28x28. One round of `step` walks the whole 50-step schedule with a fixed model output and
sample (so both schedulers see the same numbers each round); one round of `add_noise` noises the batch at random
timesteps. Ours and diffusers' alternate round after round after a warm-up; medians are reported per call, with the
speed-up (diffusers' time / ours: above 1 means ours is faster).

    python benchmarks/bench_schedulers.py                  # CPU
    python benchmarks/bench_schedulers.py --threads 1      # steadier figures on a busy machine
    python benchmarks/bench_schedulers.py --device cuda
    python benchmarks/bench_schedulers.py --quick          # a fast smoke run
"""

import argparse
import statistics
import time
from collections.abc import Callable

import diffusers
import torch

import hf_ddpm.schedulers as ours

STEPS = 50


def median_seconds(variants: dict[str, Callable[[], object]], sync: Callable[[], None], warmup: int, repeats: int):
    """Median wall time of one round of each variant; the variants run in turn, round after round."""
    times = {name: [] for name in variants}
    for round_index in range(warmup + repeats):
        for name, run in variants.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}


def step_round(scheduler, model_output, sample, **step_kwargs) -> Callable[[], None]:
    def run():
        for t in scheduler.timesteps:
            scheduler.step(model_output, t, sample, **step_kwargs)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch intra-op CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="5 repeats, 1 warm-up round")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup = 5, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    generator = torch.Generator(device).manual_seed(0)
    shape = (args.batch_size, 1, 28, 28)
    sample = torch.randn(shape, generator=generator, device=device)
    model_output = torch.randn(shape, generator=generator, device=device)
    timesteps = torch.randint(0, 1000, (args.batch_size,), generator=generator, device=device)

    cases = {}
    for name, ours_class, theirs_class, step_kwargs in [
        ("DDPM step", ours.DDPMScheduler, diffusers.DDPMScheduler, dict(generator=generator)),
        ("DDIM step, eta=0", ours.DDIMScheduler, diffusers.DDIMScheduler, dict(eta=0.0)),
        ("DDIM step, eta=1", ours.DDIMScheduler, diffusers.DDIMScheduler, dict(eta=1.0, generator=generator)),
    ]:
        pair = {}
        for who, scheduler_class in (("ours", ours_class), ("diffusers", theirs_class)):
            scheduler = scheduler_class()
            scheduler.set_timesteps(STEPS, device=device)
            pair[who] = step_round(scheduler, model_output, sample, **step_kwargs)
        cases[name] = (pair, STEPS)
    for name, method in [("add_noise", "add_noise"), ("get_velocity", "get_velocity")]:
        pair = {}
        for who, scheduler in (("ours", ours.DDPMScheduler()), ("diffusers", diffusers.DDPMScheduler())):
            pair[who] = lambda f=getattr(scheduler, method): f(sample, model_output, timesteps)
        cases[name] = (pair, 1)

    print(
        f"batch {shape}, device {device}, {torch.get_num_threads()} CPU threads, "
        f"{args.repeats} rounds after {args.warmup} warm-up, medians per call"
    )
    print(f"{'':<18}{'ours':>12}{'diffusers':>12}{'speed-up':>10}")
    for name, (pair, calls_per_round) in cases.items():
        seconds = median_seconds(pair, sync, args.warmup, args.repeats)
        ours_us, theirs_us = (seconds[who] / calls_per_round * 1e6 for who in ("ours", "diffusers"))
        print(f"{name:<18}{ours_us:>10.1f}us{theirs_us:>10.1f}us{theirs_us / ours_us:>9.2f}x")


if __name__ == "__main__":
    main()
