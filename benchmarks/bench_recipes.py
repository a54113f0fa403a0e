"""Quality against training time on the digits demo, for its recipe and candidates that change one thing each.

Each candidate is the demo's training run (`hf_ddpm.demo.training_flags`) with a few flags changed, run in a fresh
process with `--eval_steps`: the EMA weights are measured along the way as the demo measures its model (898 samples
at the demo's guidance scale against the reference half of the digits, which the run never trains on). The
evaluations' values come back from the run's tensorboard logs.

Time is steps times the seconds of one step of the candidate's configuration (model and batch), measured after the
runs in one process that alternates the configurations (medians after a warm-up): a virtual CPU's speed drifts
between runs minutes apart, which would otherwise rank recipes that cost the same per step. Each run's own wall time
of training (evaluations, previews and checkpoints taken out) is kept in curves.json beside it.

Prints, for each candidate, the first evaluation that meets the demo's targets (agreement >= 98%, Fréchet distance
<= 1.5x the floor) and the last one, and plots the distance over its floor and the agreement against training
seconds.

    python benchmarks/bench_recipes.py --out recipe-curves                 # every candidate, about 7 min each
    python benchmarks/bench_recipes.py --out recipe-curves --recipes demo "lr 2e-3"
    python benchmarks/bench_recipes.py --out recipe-curves --plot-only     # time the steps; the table and the plot

Run nothing else beside it.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

import torch
from bench_evaluation import cpu_description
from bench_training import measure

DEMO_TARGETS = {"agreement": 0.98, "fd_ratio": 1.5}
# Flags appended to the demo's run (the last of a repeated flag wins); a model config is a JSON file written at run time.
CANDIDATES: dict[str, list[str]] = {
    "demo": [],
    "lr 2e-3": ["--learning_rate", "2e-3"],
    "lr 5e-4": ["--learning_rate", "5e-4"],
    "batch 16": ["--train_batch_size", "16"],
    "batch 64": ["--train_batch_size", "64"],
    "min-SNR-5": ["--snr_gamma", "5"],
    "EDM noise levels and weight": ["--timestep_distribution", "edm"],
    "EMA shorter (power 2/3)": ["--ema_power", "0.6667"],
    "narrower (24, 48)": ["--model_config", "narrower.json"],
    "wider (48, 96)": ["--model_config", "wider.json"],
}
MODEL_CONFIGS = {
    "narrower.json": {
        "block_out_channels": [24, 48],
        "layers_per_block": 1,
        "attention_levels": [False, True],
        "norm_num_groups": 8,
    },
    "wider.json": {
        "block_out_channels": [48, 96],
        "layers_per_block": 1,
        "attention_levels": [False, True],
        "norm_num_groups": 8,
    },
}


def run_folder(out: str, name: str) -> str:
    """`recipe-curves/lr_2e-3` for the candidate "lr 2e-3"."""
    return os.path.join(out, re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_"))


def train(out: str, name: str, steps: int, eval_every: int) -> None:
    """One candidate's run, in a fresh process, into `run_folder(out, name)`."""
    from hf_ddpm.demo import parse_args, training_flags

    folder = run_folder(out, name)
    demo = parse_args(["--output_dir", folder, "--max_train_steps", str(steps)])
    extra = list(CANDIDATES[name])
    for index, value in enumerate(extra):
        if value in MODEL_CONFIGS:
            path = os.path.join(out, value)
            with open(path, "w", encoding="utf-8") as file:
                json.dump(MODEL_CONFIGS[value], file)
            extra[index] = path
    evaluation = [
        "--eval_steps",
        str(eval_every),
        "--eval_num_samples",
        str(demo.eval_num_samples),
        "--eval_guidance_scales",
        str(demo.guidance_scale),
        "--eval_batch_size",
        "64",
        "--report_to",
        "tensorboard",
    ]
    command = [sys.executable, "-m", "hf_ddpm.training.train", *training_flags(demo), *evaluation, *extra]
    with open(os.path.join(out, os.path.basename(folder) + ".log"), "w", encoding="utf-8") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)


def read_curve(folder: str) -> list[dict]:
    """The run's evaluations, each with the run's wall time of training up to it (a step interval over four times the
    run's median stands for one median step: evaluations, previews and checkpoints taken out), from its tensorboard
    logs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # The run's one tensorboard folder, somewhere under logs/ (the tracker nests it under the project's name).
    run_logs = next(
        root
        for root, _, files in os.walk(os.path.join(folder, "logs"))
        if any(name.startswith("events.out") for name in files)
    )
    events = EventAccumulator(run_logs, size_guidance={"scalars": 0})
    events.Reload()
    losses = sorted(events.Scalars("loss"), key=lambda event: event.step)
    intervals = [later.wall_time - earlier.wall_time for earlier, later in zip(losses, losses[1:])]
    typical = statistics.median(intervals)
    seconds_at = {losses[0].step: typical}  # the first step: one typical step (its own start is not logged)
    total = typical
    for event, interval in zip(losses[1:], intervals):
        total += interval if interval <= 4 * typical else typical
        seconds_at[event.step] = total
    values = {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    curve = []
    for step in sorted(values["eval/agreement"]):
        curve.append(
            {
                "step": step,
                "wall_seconds": seconds_at[step],
                "agreement": values["eval/agreement"][step],
                "fd_ratio": values["eval/fd_digits"][step] / values["eval/fd_digits_floor"][step],
                "precision": values["eval/precision"][step],
                "recall": values["eval/recall"][step],
            }
        )
    return curve


def configuration(name: str) -> tuple[str, int]:
    """What a step of the candidate costs depends on: its model config and its batch."""
    flags = dict(zip(CANDIDATES[name][::2], CANDIDATES[name][1::2]))
    return flags.get("--model_config", "digits"), int(flags.get("--train_batch_size", 32))


def step_function(model_config: str, batch_size: int, out: str):
    """One training step of the demo's run with this model and batch: the script's loss, backward and fused AdamW,
    in the precision the demo trains in on this CPU."""
    from hf_ddpm.data import load_image_data
    from hf_ddpm.demo import mixed_precision
    from hf_ddpm.models import DDPMUNet2DModel
    from hf_ddpm.models.presets import read_model_config, unet_config_from
    from hf_ddpm.schedulers import DDPMScheduler
    from hf_ddpm.training.train import parse_args as training_args, training_loss

    config = os.path.join(out, model_config) if model_config in MODEL_CONFIGS else model_config
    model = DDPMUNet2DModel(
        **unet_config_from(read_model_config(config), resolution=16, channels=1, num_classes=10)
    ).train()
    args = training_args(
        ["--dataset_name", "digits", "--prediction_type", "v_prediction", "--beta_schedule", "squaredcos_cap_v2"]
    )
    scheduler = DDPMScheduler(beta_schedule=args.beta_schedule, prediction_type=args.prediction_type)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    data = load_image_data(dataset_name="digits", resolution=16)
    bf16 = mixed_precision("auto") == "bf16"
    calls = iter(range(10**9))

    def step() -> float:
        generator = torch.Generator().manual_seed(next(calls))
        batch = torch.randint(0, len(data.images), (batch_size,), generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = training_loss(model, scheduler, [data.images[batch], data.labels[batch]], generator, args, 10)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def step_seconds(names: list[str], out: str, repeats: int = 40) -> dict[str, float]:
    """Median seconds of a step of each candidate's configuration, the configurations alternating in one process."""
    from hf_ddpm.cpu import keep_freed_memory

    keep_freed_memory()  # as the training script does on a CPU
    configurations = sorted({configuration(name) for name in names})
    steps = {f"{config} {batch}": step_function(config, batch, out) for config, batch in configurations}
    seconds = measure(steps, warmup=5, repeats=repeats)
    return {name: seconds[f"{configuration(name)[0]} {configuration(name)[1]}"]["seconds"] for name in names}


def meets_targets(row: dict) -> bool:
    return row["agreement"] >= DEMO_TARGETS["agreement"] and row["fd_ratio"] <= DEMO_TARGETS["fd_ratio"]


def plot(curves: dict[str, list[dict]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (distance, agreement) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, curve in curves.items():
        seconds = [row["seconds"] for row in curve]
        style = dict(marker="o", markersize=3, linewidth=2.5 if name == "demo" else 1.2, label=name)
        distance.plot(seconds, [row["fd_ratio"] for row in curve], **style)
        agreement.plot(seconds, [100 * row["agreement"] for row in curve], **style)
    distance.axhline(DEMO_TARGETS["fd_ratio"], color="black", linestyle="--", linewidth=1, label="target")
    agreement.axhline(100 * DEMO_TARGETS["agreement"], color="black", linestyle="--", linewidth=1, label="target")
    distance.set(
        yscale="log", xlabel="training seconds (steps x the step's time)", ylabel="fd_digits / real-vs-real floor"
    )
    agreement.set(xlabel="training seconds (steps x the step's time)", ylabel="agreement (%)", ylim=(80, 100.5))
    distance.legend(fontsize=8)
    for axes in (distance, agreement):
        axes.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the runs, curves.json and recipe_curves.png")
    parser.add_argument("--recipes", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--steps", type=int, default=2400, help="optimizer steps of each run (default: the demo's)")
    parser.add_argument("--eval-every", type=int, default=400, help="steps between evaluations")
    parser.add_argument("--plot-only", action="store_true", help="read the finished runs, train nothing")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "curves.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as file:
            results = json.load(file)
    for name in args.recipes:
        if not args.plot_only:
            train(args.out, name, args.steps, args.eval_every)
            results[name] = {"curve": read_curve(run_folder(args.out, name)), "cpu": cpu_description()}
            with open(results_path, "w", encoding="utf-8") as file:
                json.dump(results, file, indent=2)
    results = {name: results[name] for name in CANDIDATES if name in results}

    costs = step_seconds(list(results), args.out)
    for name, result in results.items():
        result["step_seconds"] = costs[name]
        for row in result["curve"]:
            row["seconds"] = row["step"] * costs[name]
    with open(results_path, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)

    cpus = sorted({result["cpu"] for result in results.values()})
    print(f"{'; '.join(cpus)}; the digits demo's recipe and candidates, EMA weights evaluated along each run")
    print(f"{'recipe':<28} {'s/step':>7}  {'first meeting the targets':<26} {'at the end: agreement, distance/floor'}")
    for name, result in results.items():
        curve = result["curve"]
        first = next((row for row in curve if meets_targets(row)), None)
        met = f"step {first['step']:>5}, {first['seconds']:5.0f} s" if first else "never"
        last = curve[-1]
        print(
            f"{name:<28} {result['step_seconds']:7.4f}  {met:<26} step {last['step']}, {last['seconds']:.0f} s: "
            f"{last['agreement']:.1%}, {last['fd_ratio']:.2f}x"
        )
    plot(
        {name: result["curve"] for name, result in results.items()},
        os.path.join(args.out, "recipe_curves.png"),
        f"The digits demo's recipe and candidates: EMA weights measured along each run ({'; '.join(cpus)})",
    )


if __name__ == "__main__":
    main()
