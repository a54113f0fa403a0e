"""Classifier guidance beside classifier-free guidance on the same data, seeds and sampler, measured.

1. The classifiers: accuracy on real test images, clean and at each quarter of the noise schedule (images noised by
   the diffusion model's own schedule), for the noise-aware classifier and for one trained on clean images only.
2. Each way of guiding, swept over its scale, scored by the independent judge (never the guiding classifier) and in
   its feature space against the test split: agreement, Fréchet distance beside its real-vs-real floor (the same
   count, the same preprocessing), precision and recall; and its cost per image (UNet forwards, classifier forward
   and backward passes, seconds). The ways: CFG on the conditional model; the noise-aware classifier on the
   unconditional model and on the conditional model (alone, and with CFG); the clean-only classifier on the
   unconditional model.
3. One plot of agreement against distance / floor and of precision against recall, and the rows as JSON.

    python -m hf_ddpm.demo --dataset fashion_mnist                                  # fashion-mnist-demo/
    accelerate launch training/train.py --dataset_name fashion_mnist ... --unconditional --output_dir uncond
    accelerate launch training/train.py --task classifier ... --output_dir classifier
    accelerate launch training/train.py --task classifier --classifier_noise none ... --output_dir clean-classifier
    python benchmarks/measure_classifier_guidance.py --conditional fashion-mnist-demo --unconditional uncond \\
        --classifier classifier --clean_classifier clean-classifier --dataset fashion_mnist
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from bench_evaluation import cpu_description

from hf_ddpm.data import ImageData, load_image_data
from hf_ddpm.evaluation import Evaluator
from hf_ddpm.evaluation.evaluator import sample_images
from hf_ddpm.evaluation.reference import split_halves
from hf_ddpm.models import DDPMClassifier2DModel
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.sampling import load_pipeline


def metrics(distance: str) -> list[str]:
    return [distance, "precision_recall", "agreement"]


def unseen_images(dataset: str, size: int, split: str) -> ImageData:
    """Real images no model trained on: the dataset's `split`; for the digits, which have no test split, the reference
    half that the demo's recipe leaves out (`--exclude_eval_reference`)."""
    if dataset != "digits":
        return load_image_data(dataset_name=dataset, resolution=size, split=split)
    every = load_image_data(dataset_name=dataset, resolution=size, split="train")
    return every.select(split_halves(len(every))[1], "the reference half, never trained on")


def classifier_accuracy(classifier, images, labels, alphas_cumprod, seed: int = 0, batch_size: int = 500) -> dict:
    """Accuracy on `images` ([-1, 1]) clean (t = 0) and at timesteps drawn uniformly in each quarter of the
    schedule, each image noised once per quarter with the same seeded noise for every classifier."""
    num_train_timesteps = len(alphas_cumprod)
    generator = torch.Generator().manual_seed(seed)
    quarters = {"clean": (0, 1)}
    quarters.update({f"q{q + 1}": (q * num_train_timesteps // 4, (q + 1) * num_train_timesteps // 4) for q in range(4)})
    accuracy = {}
    for name, (low, high) in quarters.items():
        timesteps = torch.randint(low, high, (len(images),), generator=generator)
        noise = torch.randn(images.shape, generator=generator)
        correct = 0
        for start in range(0, len(images), batch_size):
            t = timesteps[start : start + batch_size]
            alpha_bar = alphas_cumprod[t].float().view(-1, 1, 1, 1)
            x0 = images[start : start + batch_size]
            noisy = (
                x0
                if name == "clean"
                else alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise[start : start + len(t)]
            )
            with torch.no_grad():
                predicted = classifier(noisy, t).logits.argmax(1)
            correct += (predicted == labels[start : start + batch_size]).sum().item()
        accuracy[name] = correct / len(images)
    return accuracy


def sweeps(args) -> list[tuple[str, str, dict]]:
    """(method, pipeline key, call arguments) of every point, in plotting order."""
    points = [("CFG (conditional model)", "conditional", dict(guidance_scale=g)) for g in args.cfg_scales]
    points += [
        ("classifier, unconditional model", "unconditional+classifier", dict(classifier_scale=s))
        for s in [0.0, *args.classifier_scales]  # 0: the unconditional model unguided, where guidance starts from
    ]
    points += [
        ("classifier, conditional model", "conditional+classifier", dict(classifier_scale=s))
        for s in args.classifier_scales
    ]
    points += [
        (
            f"classifier + CFG {args.combined_cfg:g}, conditional model",
            "conditional+classifier",
            dict(guidance_scale=args.combined_cfg, classifier_scale=s),
        )
        for s in args.combined_classifier_scales
    ]
    if args.clean_classifier:
        points += [
            ("clean-only classifier, unconditional model", "unconditional+clean", dict(classifier_scale=s))
            for s in args.classifier_scales
        ]
    return points


def network_evaluations(pipe: DDPMCFGPipeline, call: dict) -> dict:
    """Per image and call: UNet forwards (CFG runs two halves at each guided step) and classifier gradients."""
    steps = pipe.num_timesteps
    return {
        "unet_forwards": steps + pipe.num_guided_steps,
        "classifier_forward_backward": steps if call.get("classifier_scale") else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conditional", required=True, help="the class-conditional pipeline folder")
    parser.add_argument("--unconditional", required=True, help="an unconditional pipeline folder, same schedule")
    parser.add_argument("--classifier", required=True, help="the noise-aware classifier's folder")
    parser.add_argument("--clean_classifier", default=None, help="a classifier trained on clean images only")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument(
        "--split",
        default="test",
        help="the real images measured against (never trained on); for the digits: train (the evaluation's "
        "reference half, which the demo's recipe leaves out)",
    )
    parser.add_argument("--distance", default="fd_domain", choices=["fd_domain", "fd_digits"])
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--num_inference_steps", type=int, default=None, help="default: the saved sampler's")
    parser.add_argument("--cfg_scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--classifier_scales", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    parser.add_argument("--combined_cfg", type=float, default=1.5)
    parser.add_argument("--combined_classifier_scales", type=float, nargs="+", default=[3.0])
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="classifier_guidance.json", help="the rows, as JSON")
    parser.add_argument("--plot", default=None, help="where to draw the plot (PNG)")
    args = parser.parse_args()

    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    conditional = load_pipeline(args.conditional, device="cpu")
    unconditional = load_pipeline(args.unconditional, device="cpu")
    classifiers = {"noise-aware": DDPMClassifier2DModel.from_pretrained(args.classifier).eval()}
    if args.clean_classifier:
        classifiers["clean-only"] = DDPMClassifier2DModel.from_pretrained(args.clean_classifier).eval()
    id2label = conditional.config.id2label
    pipes = {
        "conditional": conditional,
        "conditional+classifier": DDPMCFGPipeline.from_pipe(conditional, classifier=classifiers["noise-aware"]),
        "unconditional+classifier": DDPMCFGPipeline(
            unconditional.unet, unconditional.scheduler, id2label=id2label, classifier=classifiers["noise-aware"]
        ),
    }
    if args.clean_classifier:
        pipes["unconditional+clean"] = DDPMCFGPipeline(
            unconditional.unet, unconditional.scheduler, id2label=id2label, classifier=classifiers["clean-only"]
        )
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)

    # 1. The classifiers on real test images.
    size = conditional.unet.config.sample_size
    test = unseen_images(args.dataset, size, args.split)
    count = min(len(test.images), 2000)
    alphas_cumprod = conditional.scheduler.alphas_cumprod
    accuracies = {
        name: classifier_accuracy(classifier, test.images[:count], test.labels[:count], alphas_cumprod, args.seed)
        for name, classifier in classifiers.items()
    }
    print(f"\nClassifier accuracy on {count} real unseen images, clean and noised in each quarter of t:")
    for name, accuracy in accuracies.items():
        print(f"  {name:12} " + "  ".join(f"{key} {value:6.1%}" for key, value in accuracy.items()))

    # 2. The sweeps.
    evaluator = Evaluator(
        conditional, args.dataset, metrics=metrics(args.distance), num_samples=args.num_samples, split=args.split
    )
    floor = evaluator.floors[f"{args.distance}_floor"]
    print(
        f"\n{args.num_samples} samples per point, the same seeds, {type(conditional.scheduler).__name__} "
        f"{args.num_inference_steps or 'default'} steps; judge: {evaluator.judge.describe()} "
        f"(accuracy on real images {evaluator.floors.get('agreement_floor', math.nan):.1%}); {args.distance} floor "
        f"{floor:.2f}"
    )
    print(f"  {'method':48} {'scale':>9}  agreement  fd/floor  precision  recall  unet  clf  s/image")
    rows = []
    for method, key, call in sweeps(args):
        pipe = pipes[key]
        started = time.perf_counter()
        images = sample_images(
            pipe,
            range(args.num_samples),
            evaluator.class_ids,
            args.batch_size,
            args.seed,
            num_inference_steps=args.num_inference_steps,
            **call,
        )
        seconds = (time.perf_counter() - started) / args.num_samples
        row = {"method": method, **call, **evaluator.measure(images), **network_evaluations(pipe, call)}
        row.update(seconds_per_image=round(seconds, 4), fd_ratio=row[args.distance] / floor)
        rows.append(row)
        scale = "/".join(f"{call[k]:g}" for k in ("guidance_scale", "classifier_scale") if k in call)
        print(
            f"  {method:48} {scale:>9}  {row['agreement']:9.1%}  {row['fd_ratio']:8.2f}  {row['precision']:9.2f}  "
            f"{row['recall']:6.2f}  {row['unet_forwards']:4d}  {row['classifier_forward_backward']:3d}  "
            f"{seconds:7.3f}",
            flush=True,
        )
    report = {
        "cpu": cpu_description(),
        "num_samples": args.num_samples,
        "distance": args.distance,
        "classifier_accuracy": accuracies,
        "floors": evaluator.floors,
        "judge": evaluator.judge.describe(),
        "rows": rows,
    }
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2, default=float)
    if args.plot:
        plot(report, args.plot)


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    methods = list(dict.fromkeys(row["method"] for row in report["rows"]))
    for method in methods:
        rows = [row for row in report["rows"] if row["method"] == method]
        scales = [row.get("classifier_scale", row.get("guidance_scale")) for row in rows]
        agreement = [100 * row["agreement"] for row in rows]
        left.plot([row["fd_ratio"] for row in rows], agreement, "o-", label=method)
        right.plot([row["recall"] for row in rows], [row["precision"] for row in rows], "o-", label=method)
        for row, scale, value in zip(rows, scales, agreement):
            left.annotate(f"{scale:g}", (row["fd_ratio"], value), textcoords="offset points", xytext=(4, 4), fontsize=8)
            right.annotate(
                f"{scale:g}", (row["recall"], row["precision"]), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
    if "agreement_floor" in report["floors"]:
        judge_accuracy = 100 * report["floors"]["agreement_floor"]
        left.axhline(judge_accuracy, color="grey", ls="--", lw=1, label="judge on real images")
    left.set_xlabel(f"{report.get('distance', 'Fréchet distance')} / real-vs-real floor (lower is better)")
    left.set_ylabel("agreement with the class asked for (%)")
    right.set_xlabel("recall")
    right.set_ylabel("precision")
    real = report["floors"]
    if "precision_floor" in real:
        right.plot([real["recall_floor"]], [real["precision_floor"]], "k*", ms=12, label="real images")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.suptitle(f"{report['num_samples']} samples per point; the labels are the scales", fontsize=10)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
