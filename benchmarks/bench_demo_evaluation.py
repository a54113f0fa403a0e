"""What the demo's evaluation costs now, against how it ran before: the same trained model, the same sweep, seeds and
metrics (`hf_ddpm.demo.measure`), in fresh processes that alternate.

- `before`: fp32, 250 images a pipeline call, glibc's allocator defaults (freed activations go back to the system);
- `now`: as the demo runs it: its recipe's precision (`auto`: bf16 autocast where the CPU has bf16 instructions), its
  recipe's batch, and freed memory kept for reuse (`keep_freed_memory`).

Each process loads the pipeline and measures once with the real features cached (the first round, uncached, is a
warm-up); the seconds are those of the `measure` call, medians over the rounds. Each setting's agreement and
distance at the demo's guidance scale are printed beside it: the faster run has to measure the same model.

    python -m hf_ddpm.demo                                           # trains digits-demo/
    python benchmarks/bench_demo_evaluation.py digits-demo --rounds 3
    python benchmarks/bench_demo_evaluation.py fashion-mnist-demo --dataset fashion_mnist --num-samples 200 --rounds 1

Timings need a quiet machine: run nothing else beside it.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "before": dict(batch_size=250, mixed_precision="no", keep_memory=False),
    "now": dict(batch_size=None, mixed_precision=None, keep_memory=True),  # None: the recipe's
}


def child(model: str, dataset: str, setting: str, cache_dir: str, num_samples: int | None) -> None:
    """One measurement in this process; prints a JSON line."""
    from hf_ddpm.cpu import keep_freed_memory

    chosen = SETTINGS[setting]
    if chosen["keep_memory"]:
        keep_freed_memory()
    import torch
    from bench_evaluation import cpu_description

    from hf_ddpm.demo import measure, parse_args
    from hf_ddpm.sampling import load_pipeline

    args = parse_args(["--dataset", dataset, "--output_dir", model])
    overrides = {key: chosen[key] for key in ("batch_size", "mixed_precision") if chosen[key] is not None}
    if num_samples is not None:
        overrides["num_samples"] = num_samples
    pipe = load_pipeline(model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    result = measure(pipe, args, cache_dir=cache_dir, progress=False, **overrides)
    seconds = time.perf_counter() - started
    row = next(row for row in result.rows if row["guidance_scale"] == args.guidance_scale)
    distance = args.recipe.distance
    print(
        json.dumps(
            {
                "seconds": seconds,
                "agreement": row["agreement"],
                "ratio": row[distance] / row[distance + "_floor"],
                "precision": result.info["mixed_precision"],
                "batch": overrides.get("batch_size", args.recipe.eval_batch_size),
                "cpu": f"{cpu_description()}, {torch.get_num_threads()} threads",
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a pipeline folder written by the demo")
    parser.add_argument("--dataset", default="digits", help="the demo's --dataset (default: digits)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each setting, after one warm-up")
    parser.add_argument("--num-samples", type=int, help="samples per guidance scale (default: the demo's)")
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, args.dataset, args.child, args.cache_dir, args.num_samples)
        return

    def run(setting: str, cache_dir: str) -> dict:
        command = [sys.executable, __file__, args.model, "--dataset", args.dataset, "--child", setting]
        if args.num_samples is not None:
            command += ["--num-samples", str(args.num_samples)]
        done = subprocess.run([*command, "--cache-dir", cache_dir], capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as cache_dir:
        results = {setting: [] for setting in SETTINGS}
        for round_ in range(args.rounds + 1):
            for setting in SETTINGS:
                measured = run(setting, cache_dir)
                if round_ > 0:
                    results[setting].append(measured)
    print(f"{measured['cpu']}; the demo's evaluation of {args.model}, medians of {args.rounds} rounds")
    seconds = {setting: statistics.median(r["seconds"] for r in rounds) for setting, rounds in results.items()}
    for setting, rounds in results.items():
        last = rounds[-1]
        print(
            f"  {setting:<7} {seconds[setting]:7.1f} s  ({last['precision']}, batch {last['batch']}; at the demo's "
            f"guidance: agreement {last['agreement']:.1%}, distance {last['ratio']:.2f}x the floor)"
        )
    print(f"  speed-up: {seconds['before'] / seconds['now']:.2f}x")


if __name__ == "__main__":
    main()
