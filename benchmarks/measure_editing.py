"""Editing real images with a trained class-conditional model, measured on real test images the model never saw.

1. Class-swap (SDEdit, `DDPMCFGImg2ImgPipeline`): each source image is drawn towards another class at strengths 0.2 to
   1.0, with the same seeds at every strength. Per strength: agreement with the target class (the offline judge,
   whose accuracy on real test images is printed beside it), how many edits the judge still reads as the source
   class, and the distance to the source, in pixels (mean absolute, [0, 1]) and in the judge's feature space.
2. Inpainting (`DDPMCFGInpaintPipeline`, RePaint) with the right half and the centre square masked, filled towards
   the image's own class: agreement, the Fréchet distance of the completed images to other real test images beside
   its real-vs-real floor (the same count, the same preprocessing), and the seam: the mean absolute step across the
   mask's border beside the same step in the real images. RePaint's resampling (`jump_n_sample`) against none at
   the same step count and at the same number of UNet calls.
3. DDIM inversion: the mean absolute error of the image drawn back from its inverted noise, against the steps.
4. The seconds per image of each at its default settings.

    python -m hf_ddpm.demo --dataset fashion_mnist                                # trains fashion-mnist-demo/
    python benchmarks/measure_editing.py fashion-mnist-demo --dataset fashion_mnist
    python -m hf_ddpm.demo && python benchmarks/measure_editing.py digits-demo --dataset digits --guidance-scale 1.2
"""

import argparse
import time

import numpy as np
import torch
from bench_evaluation import cpu_description

from hf_ddpm.data import ImageData, load_image_data
from hf_ddpm.editing import preset_mask
from hf_ddpm.evaluation.domain import DomainFeatures, domain_classifier
from hf_ddpm.evaluation.metrics import frechet_distance
from hf_ddpm.evaluation.reference import split_halves
from hf_ddpm.pipelines import DDPMCFGImg2ImgPipeline, DDPMCFGInpaintPipeline, DDPMCFGPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg_inpaint import repaint_schedule
from hf_ddpm.sampling import load_pipeline, scheduler_from_name


def generators(count: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def class_swap(pipe, judge, features, sources, source_labels, args) -> list[dict]:
    edit = DDPMCFGImg2ImgPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    num_classes = len(judge.labels)
    shift = torch.randint(1, num_classes, (len(sources),), generator=torch.Generator().manual_seed(args.seed))
    targets = (source_labels + shift) % num_classes
    source_features = features(sources)
    print(
        f"\nClass-swap of {len(sources)} real test images, each towards another class (guidance "
        f"{args.guidance_scale:g}, {type(pipe.scheduler).__name__} {args.steps} steps, the same seeds):"
    )
    print("  strength  target class  still source  pixel distance  feature distance  s/image")
    rows = []
    for strength in args.strengths:
        start = time.perf_counter()
        out = edit(
            sources,
            targets.tolist(),
            strength=strength,
            guidance_scale=args.guidance_scale,
            num_inference_steps=args.steps,
            generator=generators(len(sources), args.seed),
            output_type="pt",
        )
        seconds = (time.perf_counter() - start) / len(sources)
        read = torch.from_numpy(judge.classify(out.images))
        pixel = (out.images - sources).abs().mean().item()
        feature = (features(out.images) - source_features).norm(dim=1).mean().item()
        print(
            f"  {strength:8.1f}  {(read == targets).float().mean():12.1%}  {(read == source_labels).float().mean():11.1%}"
            f"  {pixel:14.3f}  {feature:16.2f}  {seconds:7.3f}"
        )
        target = (read == targets).float().mean().item()
        rows.append({"strength": strength, "target": target, "pixel": pixel, "feature": feature})
    return rows


def plot_class_swap(rows: list[dict], title: str, path: str) -> None:
    """Agreement with the target class against the distance to the source, in pixels and in the judge's features,
    one point per strength."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, label in zip(axes, ("pixel", "feature"), ("pixels, mean absolute", "the judge's feature space")):
        axis.plot([row[key] for row in rows], [100 * row["target"] for row in rows], "o-")
        for row in rows:
            axis.annotate(
                f"{row['strength']:g}",
                (row[key], 100 * row["target"]),
                xytext=(4, -10),
                textcoords="offset points",
                fontsize=8,
            )
        axis.set_xlabel(f"distance to the source image ({label})")
        axis.set_ylabel("read as the target class (%)")
    figure.suptitle(f"{title}: class-swap at each strength (labels), the same seeds", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def seam_step(images: torch.Tensor, mask: torch.Tensor) -> float:
    """The mean absolute difference between horizontally or vertically adjacent pixels of which one is filled and
    the other kept: how visible the border of the mask is."""
    steps = []
    for dim in (-1, -2):
        crossing = (mask.diff(dim=dim) != 0).expand_as(images.diff(dim=dim))
        steps.append(images.diff(dim=dim).abs()[crossing])
    return torch.cat(steps).mean().item()


def inpainting(pipe, judge, features, sources, source_labels, reference, args) -> None:
    inpaint = DDPMCFGInpaintPipeline.from_pipe(pipe)
    inpaint.set_progress_bar_config(disable=True)
    size = sources.shape[-1]
    reference_features = features(reference)
    floor = frechet_distance(reference_features, features(args.held_out[: len(sources)]))
    steps, jump_length, jump_n_sample = args.inpaint_steps, args.jump_length, args.jump_n_sample
    schedule = repaint_schedule(steps, jump_length, jump_n_sample)
    downs = sum(1 for before, index in zip([steps, *schedule], schedule) if index < before)  # UNet calls
    variants = [
        (f"RePaint, {steps} steps, jump {jump_length} x {jump_n_sample}", steps, jump_n_sample),
        (f"no resampling, {steps} steps", steps, 1),
        (f"no resampling, {downs} steps (RePaint's UNet calls)", downs, 1),
    ]
    print(
        f"\nInpainting {len(sources)} real test images towards their own class (guidance {args.guidance_scale:g}); "
        f"Fréchet distance in the judge's space to {len(reference)} other real test images, floor {floor:.2f} "
        f"({len(sources)} real images against them):"
    )
    print("  mask    variant                                             agreement  fd (x floor)  seam (real)  s/image")
    for mask_name in ("right", "centre"):
        mask = torch.from_numpy(np.asarray(preset_mask(mask_name, size, size)) / 255.0).float()[None, None]
        real_seam = seam_step(sources, mask)
        for name, num_steps, resample in variants:
            start = time.perf_counter()
            out = inpaint(
                sources,
                mask,
                source_labels.tolist(),
                guidance_scale=args.guidance_scale,
                num_inference_steps=num_steps,
                jump_length=jump_length,
                jump_n_sample=resample,
                generator=generators(len(sources), args.seed),
                output_type="pt",
            ).images
            seconds = (time.perf_counter() - start) / len(sources)
            agreement = (torch.from_numpy(judge.classify(out)) == source_labels).float().mean()
            fd = frechet_distance(reference_features, features(out))
            print(
                f"  {mask_name:6}  {name:50}  {agreement:9.1%}  {fd:5.2f} ({fd / floor:4.2f}x)  "
                f"{seam_step(out, mask):.3f} ({real_seam:.3f})  {seconds:7.3f}"
            )


def inversion(pipe, sources, source_labels, args) -> None:
    ddim = DDPMCFGImg2ImgPipeline.from_pipe(pipe, scheduler=scheduler_from_name("ddim", pipe.scheduler))
    sampler = DDPMCFGPipeline.from_pipe(ddim)
    for each in (ddim, sampler):
        each.set_progress_bar_config(disable=True)
    count = min(len(sources), 50)
    print(f"\nDDIM inversion of {count} real test images with their class, drawn back with DDIM (eta 0, guidance 1):")
    print("  steps  mean abs error  max abs error  s/image (invert + draw)")
    for steps in args.inversion_steps:
        start = time.perf_counter()
        noise = ddim.invert(sources[:count], source_labels[:count].tolist(), num_inference_steps=steps)
        drawn = sampler(source_labels[:count].tolist(), latents=noise, num_inference_steps=steps, output_type="pt")
        seconds = (time.perf_counter() - start) / count
        error = (drawn.images - sources[:count]).abs()
        print(f"  {steps:5d}  {error.mean():14.4f}  {error.max():13.3f}  {seconds:8.3f}")


def judge_and_edit_images(dataset: str, size: int, split: str) -> tuple[ImageData, ImageData]:
    """The images the judge learns from (the model's training images) and the real images edited and measured
    against, which the model never saw: the dataset's `split`; for the digits, which have no test split, the
    reference half that the demo's training leaves out (`--exclude_eval_reference`)."""
    train = load_image_data(dataset_name=dataset, resolution=size, split="train")
    if dataset != "digits":
        return train, load_image_data(dataset_name=dataset, resolution=size, split=split)
    trained, unseen = split_halves(len(train))
    return train.select(trained, "the demo's training half"), train.select(
        unseen, "the reference half, never trained on"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a class-conditional pipeline folder (what the demo writes)")
    parser.add_argument("--dataset", default="fashion_mnist", help="the dataset it was trained on (with a test split)")
    parser.add_argument("--split", default="test", help="the real images edited and measured against")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=15, help="steps of a whole schedule for the class-swap")
    parser.add_argument("--inpaint-num-images", type=int, default=100, help="of the --num-images, the first N")
    parser.add_argument("--inpaint-steps", type=int, default=50)
    parser.add_argument("--jump-length", type=int, default=10)
    parser.add_argument("--jump-n-sample", type=int, default=5)
    parser.add_argument("--inversion-steps", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument(
        "--parts", nargs="+", choices=["swap", "inpaint", "invert"], default=["swap", "inpaint", "invert"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", help="where to draw the class-swap sweep (PNG)")
    args = parser.parse_args()

    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    pipe = load_pipeline(args.model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size
    train, test = judge_and_edit_images(args.dataset, size, args.split)
    judge, fingerprint = domain_classifier(
        train.images,
        train.labels,
        test.images,
        test.labels,
        test.id2label,
        f"{args.split if args.dataset != 'digits' else 'reference half'} split, {len(test)} images",
    )
    features = DomainFeatures(judge, fingerprint)
    print(f"Judge: {judge.describe()}")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))
    chosen, held_out, reference = (
        order[: args.num_images],
        order[args.num_images : 2 * args.num_images],
        order[2 * args.num_images :],
    )
    sources, source_labels = test.images[chosen] / 2 + 0.5, test.labels[chosen]
    args.held_out = test.images[held_out] / 2 + 0.5
    with torch.no_grad():
        if "swap" in args.parts:
            rows = class_swap(pipe, judge, features, sources, source_labels, args)
            if args.plot:
                plot_class_swap(rows, f"{args.dataset}, {len(sources)} real images", args.plot)
        if "inpaint" in args.parts:
            count = args.inpaint_num_images
            reals = test.images[reference] / 2 + 0.5
            inpainting(pipe, judge, features, sources[:count], source_labels[:count], reals, args)
        if "invert" in args.parts:
            inversion(pipe, sources, source_labels, args)


if __name__ == "__main__":
    main()
