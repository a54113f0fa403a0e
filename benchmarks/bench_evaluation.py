"""What an evaluation of the digits model (898 samples, the held-out half) costs, and where the time goes.

Evaluation is sampling plus features: the sampler runs `steps` UNet forwards of each batch (cond and uncond in one
batched forward under guidance), then each image's features are taken once and shared by every metric, and the real
features come from the cache. This prints the one-off cost of the real features (first run, not cached), then for
each setting the seconds spent sampling, in features (and the judge), and in the metrics.

    python -m hf_ddpm.demo                                   # trains the digits model into digits-demo/
    python benchmarks/bench_evaluation.py digits-demo        # 898 samples; DDIM 50, DPM-Solver++ 20; guidance 1, 3
    python benchmarks/bench_evaluation.py digits-demo --num-samples 200 --quick
"""

import argparse
import platform
import tempfile
import time

import torch

from hf_ddpm.cpu import read_cpuinfo
from hf_ddpm.evaluation import Evaluator, evaluate
from hf_ddpm.sampling import load_pipeline


def cpu_description() -> str:
    """The CPU's model and its widest vector extensions, as figures should be reported beside them."""
    model, flags = read_cpuinfo()
    vector = [name for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if name in flags]
    return f"{model or platform.processor() or platform.machine()} ({', '.join(vector) or 'no AVX2'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a digits pipeline folder (what `python -m hf_ddpm.demo` writes)")
    parser.add_argument("--num-samples", type=int, default=None, help="default: the held-out half of the digits (898)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--quick", action="store_true", help="one setting only (DPM-Solver++ 20 steps, guidance 1)")
    args = parser.parse_args()

    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as cache_dir:
        started = time.perf_counter()
        evaluator = Evaluator(pipe, "digits", num_samples=args.num_samples, cache_dir=cache_dir)
        uncached = time.perf_counter() - started
        started = time.perf_counter()
        Evaluator(pipe, "digits", num_samples=args.num_samples, cache_dir=cache_dir)
        cached = time.perf_counter() - started
        print(
            f"{cpu_description()}, {torch.get_num_threads()} torch threads; "
            f"{evaluator.num_samples} samples, batch {args.batch_size}"
        )
        print(f"set-up (data, judge, real features, floors): {uncached:.1f} s uncached, {cached:.1f} s cached")

        settings = (
            [("dpm", 20, 1.0)]
            if args.quick
            else [("ddim", 50, 1.0), ("ddim", 50, 3.0), ("dpm", 20, 1.0), ("dpm", 20, 3.0)]
        )
        print(
            f"{'scheduler':>9} {'steps':>5} {'guidance':>8} {'sampling s':>10} {'features s':>10} {'metrics s':>9} {'total s':>8} {'sampling %':>10}"
        )
        for name, steps, scale in settings:
            started = time.perf_counter()
            row = evaluate(
                pipe,
                "digits",
                num_samples=args.num_samples,
                guidance_scales=[scale],
                steps=[steps],
                schedulers=[name],
                batch_size=args.batch_size,
                cache_dir=cache_dir,
                progress=False,
            ).rows[0]
            total = time.perf_counter() - started
            print(
                f"{name:>9} {steps:>5} {scale:>8g} {row['seconds_sampling']:>10.1f} {row['seconds_features']:>10.2f} "
                f"{row['seconds_metrics']:>9.2f} {total:>8.1f} {row['seconds_sampling'] / total:>10.0%}"
            )


if __name__ == "__main__":
    main()
