"""The `hf-ddpm` command line. Each subcommand is one `add_*_command(subparsers)` function listed in SUBCOMMANDS;
it declares its arguments and sets `func`, the function that runs it, and `flags`, the flag behind each Python
argument name that its errors may mention."""

import argparse
import os
import sys
from collections.abc import Sequence

from hf_ddpm.messages import with_flag_names
from hf_ddpm.scheduler_names import SCHEDULER_NAMES, TIMESTEP_SPACINGS

# Nothing heavy is imported at the top: torch, diffusers, transformers and gradio load inside the commands that use
# them, so that --help and a usage error answer at once.


def add_noising_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "noising",
        help="draw the forward process: digits noised part of the way to T, linear and cosine schedules side by side",
    )
    parser.add_argument("--out", default="noising.png", help="image file to write (default: noising.png)")
    parser.add_argument("--num-images", type=int, default=4, help="how many digits, one per row (default: 4)")
    parser.add_argument(
        "--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0], help="fractions of the way to T"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    parser.set_defaults(
        func=run_noising, parser=parser, flags={"fractions": "--fractions", "num_images": "--num-images"}
    )


def run_noising(args: argparse.Namespace) -> None:
    import torch

    from hf_ddpm.visualization import load_digit_images, save_forward_process_grid

    check_writable_folder("--out", args.out, os.path.dirname(os.path.abspath(args.out)))
    path = save_forward_process_grid(
        args.out,
        images=load_digit_images(args.num_images),
        fractions=args.fractions,
        generator=torch.Generator().manual_seed(args.seed),
    )
    print(f"wrote {path}")


def add_sample_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sample", help="draw images from a saved pipeline: a grid and a denoising GIF")
    parser.add_argument("model", help="a folder written by save_pretrained, or a Hub repository id")
    parser.add_argument(
        "--labels",
        nargs="+",
        help="class names or ids, for a class-conditional model (a name first: a class named '3' is "
        "that class; other numbers are ids)",
    )
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--batch-size", type=int, help="images per label (default: 1)")
    count.add_argument("--num-images", type=int, help="images to draw from an unconditional model (default: 1)")
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance scale")
    parser.add_argument("--guidance-rescale", type=float, default=0.0, help="guidance rescale, in [0, 1]")
    parser.add_argument(
        "--guidance-interval",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="guide only the steps whose timestep t has LOW <= t / training steps <= HIGH; the others "
        "run the conditional half alone (default: guide every step)",
    )
    parser.add_argument(
        "--classifier",
        help="a noise-aware classifier (a folder or Hub id written by training/train.py --task classifier) for "
        "classifier guidance; with an unconditional model, --labels are its classes",
    )
    parser.add_argument(
        "--classifier-scale", type=float, default=0.0, help="classifier guidance scale (with --classifier; default 0)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="denoising steps (default: the scheduler's: 15 for dpm and unipc, 50 for ddim and euler, "
        "every training step for ddpm)",
    )
    parser.add_argument(
        "--scheduler",
        choices=sorted(SCHEDULER_NAMES),
        help="replace the saved scheduler: ddpm, ddim, dpm (DPM-Solver++ 2M), euler or unipc",
    )
    add_timestep_spacing_flag(parser)
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM's eta (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="image i starts from the noise of seed + i (default: 0)")
    parser.add_argument("--out", default="samples.png", help="the grid of the images (default: samples.png)")
    parser.add_argument("--gif", help="also write the grid being denoised as a GIF here")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--torch-compile",
        action="store_true",
        help="compile the UNet with torch.compile (pays for many images; the first wait for it)",
    )
    parser.set_defaults(func=run_sample, parser=parser, flags=SAMPLE_FLAGS)


def add_timestep_spacing_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timestep-spacing",
        choices=TIMESTEP_SPACINGS,
        help="replace the saved scheduler's spacing of steps: trailing starts at the last training timestep, where "
        "pure noise belongs (the training script's default); leading starts below it",
    )


SAMPLE_FLAGS = {
    "class_labels": "--labels",
    "batch_size": "--batch-size",
    "guidance_scale": "--guidance-scale",
    "guidance_rescale": "--guidance-rescale",
    "guidance_interval": "--guidance-interval",
    "classifier_scale": "--classifier-scale",
    "classifier": "--classifier",
    "num_inference_steps": "--steps",
    "scheduler": "--scheduler",
    "eta": "--eta",
    "generator": "--seed",
}


def run_sample(args: argparse.Namespace) -> None:
    from hf_ddpm.sampling import (  # imports diffusers' pipelines
        label_arguments,
        load_pipeline,
        save_grid_and_gif,
        with_classifier,
    )

    if args.labels and args.num_images is not None:
        raise ValueError("--num-images is for unconditional models; with --labels, --batch-size sets images per label")
    for flag, count in [("--batch-size", args.batch_size), ("--num-images", args.num_images)]:
        if count is not None and count < 1:
            raise ValueError(f"{flag} must be an integer >= 1, got {count}.")
    check_seed(args.seed)
    check_image_path("--out", args.out, ".png")
    if args.gif is not None:
        check_image_path("--gif", args.gif, ".gif", allowed={".gif"})
    if args.device is not None:
        check_device(args.device)
    pipe = load_pipeline(
        args.model,
        scheduler=args.scheduler,
        device=args.device,
        torch_compile=args.torch_compile,
        timestep_spacing=args.timestep_spacing,
    )
    if args.classifier is not None:
        pipe = with_classifier(pipe, args.classifier)
    if args.labels is None and pipe.config.null_class_id is not None:
        names = ", ".join((pipe.config.id2label or {}).values()) or f"ids 0..{pipe.config.null_class_id - 1}"
        print(
            f"{args.model} is class-conditional and no --labels were given: drawing unconditional samples (the null "
            f"label, no guidance). Pass --labels for images of a class ({names}).",
            file=sys.stderr,
        )
    save_grid_and_gif(
        pipe,
        args.out,
        args.gif,
        seed=args.seed,
        class_labels=label_arguments(pipe, args.labels),
        batch_size=next((n for n in (args.batch_size, args.num_images) if n is not None), 1),
        guidance_scale=args.guidance_scale,
        guidance_rescale=args.guidance_rescale,
        num_inference_steps=args.steps,
        eta=args.eta,
        guidance_interval=args.guidance_interval and tuple(args.guidance_interval),
        classifier_scale=args.classifier_scale,
    )
    print(f"wrote {args.out}" + (f" and {args.gif}" if args.gif else ""))


def add_edit_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "edit", help="redraw a real image towards a class (SDEdit): the source beside its edit at each strength"
    )
    parser.add_argument("model", help="a folder written by save_pretrained, or a Hub repository id")
    parser.add_argument("--image", required=True, help="the image file to edit, in the model's size")
    parser.add_argument("--class", dest="label", help="the class to draw it towards, by name or id")
    parser.add_argument(
        "--strength",
        type=float,
        nargs="+",
        default=[0.8],
        help="how far into the noise the image goes, in [0, 1]: 0 keeps it, 1 draws anew (default: 0.8; several "
        "give a row of edits)",
    )
    add_guidance_and_seed_flags(parser)
    parser.add_argument("--steps", type=int, help="steps of a whole schedule, of which --strength run")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULER_NAMES), help="replace the saved scheduler")
    parser.add_argument("--out", default="edit.png", help="the source and its edits in a row (default: edit.png)")
    parser.set_defaults(func=run_edit, parser=parser, flags=EDIT_FLAGS)


def add_inpaint_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("inpaint", help="fill a masked region of a real image (RePaint), towards a class")
    parser.add_argument("model", help="a folder written by save_pretrained, or a Hub repository id")
    parser.add_argument("--image", required=True, help="the image file, in the model's size")
    parser.add_argument(
        "--mask",
        required=True,
        help="what to fill: an image file (white fills, black is kept) or a preset: left, right, top, bottom (a "
        "half) or centre (the centre square)",
    )
    parser.add_argument("--class", dest="label", help="the class to fill towards, by name or id")
    add_guidance_and_seed_flags(parser)
    parser.add_argument("--steps", type=int, default=100, help="DDPM steps before the jumps (default: 100)")
    parser.add_argument("--jump-length", type=int, default=10, help="steps each jump goes back (default: 10)")
    parser.add_argument("--jump-n-sample", type=int, default=10, help="times each stretch is sampled (default: 10)")
    parser.add_argument("--out", default="inpaint.png", help="source, masked source and result (default: inpaint.png)")
    parser.set_defaults(func=run_inpaint, parser=parser, flags=EDIT_FLAGS)


def add_guidance_and_seed_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--guidance-scale", type=float, help="classifier-free guidance (default: 2 with --class, else none: 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")


EDIT_FLAGS = {
    "image": "--image",
    "mask_image": "--mask",
    "class_labels": "--class",
    "strength": "--strength",
    "guidance_scale": "--guidance-scale",
    "num_inference_steps": "--steps",
    "jump_length": "--jump-length",
    "jump_n_sample": "--jump-n-sample",
    "generator": "--seed",
}


def load_edit_inputs(args: argparse.Namespace):
    """The checks every edit makes before loading the model, then the pipeline and the source image."""
    from hf_ddpm.editing import read_image
    from hf_ddpm.sampling import label_arguments, load_pipeline

    check_seed(args.seed)
    check_image_path("--out", args.out, ".png")
    if args.device is not None:
        check_device(args.device)
    source = read_image(args.image, "--image")
    if args.guidance_scale is None:
        args.guidance_scale = 2.0 if args.label is not None else 1.0
    pipe = load_pipeline(args.model, scheduler=getattr(args, "scheduler", None), device=args.device)
    labels = label_arguments(pipe, [args.label]) if args.label is not None else None
    return pipe, source, labels and labels[0]


def run_edit(args: argparse.Namespace) -> None:
    import torch

    from hf_ddpm.editing import save_image, side_by_side
    from hf_ddpm.pipelines import DDPMCFGImg2ImgPipeline

    pipe, source, label = load_edit_inputs(args)
    edit = DDPMCFGImg2ImgPipeline.from_pipe(pipe)
    edits = [
        edit(
            source,
            label,
            strength=strength,
            guidance_scale=args.guidance_scale,
            num_inference_steps=args.steps,
            generator=torch.Generator().manual_seed(args.seed),
        ).images[0]
        for strength in args.strength
    ]
    save_image(side_by_side([source.convert(edits[0].mode), *edits]), args.out)
    print(f"wrote {args.out}: the source, then its edit at strength {', '.join(f'{s:g}' for s in args.strength)}")


def run_inpaint(args: argparse.Namespace) -> None:
    import torch

    from hf_ddpm.editing import read_mask, save_image, side_by_side, with_mask_shown
    from hf_ddpm.pipelines import DDPMCFGInpaintPipeline

    pipe, source, label = load_edit_inputs(args)
    mask = read_mask(args.mask, "--mask", *pipe.sample_shape(1)[2:])
    inpaint = DDPMCFGInpaintPipeline.from_pipe(pipe)
    result = inpaint(
        source,
        mask,
        label,
        guidance_scale=args.guidance_scale,
        num_inference_steps=args.steps,
        jump_length=args.jump_length,
        jump_n_sample=args.jump_n_sample,
        generator=torch.Generator().manual_seed(args.seed),
    ).images[0]
    shown = source.convert(result.mode)
    save_image(side_by_side([shown, with_mask_shown(shown, mask), result]), args.out)
    print(f"wrote {args.out}: the source, what is kept of it, and the result")


def check_image_path(flag: str, path: str, example: str, allowed: set[str] | None = None) -> None:
    """A ValueError naming `flag` unless `path` has an image extension that can be written and a usable folder."""
    import PIL.Image

    extension = os.path.splitext(path)[1].lower()
    writable = allowed or {ext for ext, kind in PIL.Image.registered_extensions().items() if kind in PIL.Image.SAVE}
    if extension not in writable:
        got = f"{extension!r}, not one of {sorted(allowed)}" if allowed and extension else extension or "no extension"
        raise ValueError(f"{flag} {path!r} must name an image file such as 'samples{example}' (got {got}).")
    check_writable_folder(flag, path, os.path.dirname(os.path.abspath(path)))


def check_output_folder(flag: str, path: str) -> None:
    """A ValueError naming `flag` unless `path` is a folder, or can be made one, that can be written: checked before
    the work, which would otherwise end in a FileExistsError with its results unsaved."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is a file; it must be a folder (created if missing).")
    check_writable_folder(flag, path, os.path.abspath(path))


def check_writable_folder(flag: str, path: str, folder: str) -> None:
    """A ValueError naming `flag` unless `folder`, where `path` is written, is a writable folder or can be made inside
    the nearest one that exists."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise ValueError(f"{flag} {path!r} cannot be written: {existing!r} is not a writable folder.")


def add_evaluate_command(subparsers: argparse._SubParsersAction) -> None:
    from hf_ddpm.evaluation.registry import METRICS

    parser = subparsers.add_parser(
        "evaluate",
        help="measure a model against real images: Fréchet distances, KID, precision/recall, class agreement; sweeps",
        description="Samples MODEL at every combination of --guidance-scale, --steps and --scheduler (same seeds in "
        "each), measures the samples against the real images of --dataset, prints a table and writes "
        "DIR/metrics.json and plots (the CFG trade-off, quality against steps, samples by guidance).",
    )
    parser.add_argument("model", help="a folder written by save_pretrained, or a Hub repository id")
    parser.add_argument(
        "--dataset",
        required=True,
        help="the real images, as the training script reads them: a Hub dataset id, a local dataset "
        "path, a folder of IDX files, or 'digits'",
    )
    parser.add_argument("--dataset-config", help="the dataset's configuration, if it has several")
    parser.add_argument("--split", default="train", help="the split of real images (default: train)")
    parser.add_argument("--image-column", help="column of the images (default: found automatically)")
    parser.add_argument("--label-column", help="column of the class ids (default: the ClassLabel column)")
    parser.add_argument("--center-crop", action="store_true", help="crop the real images as training did with it")
    parser.add_argument(
        "--metrics",
        nargs="+",
        choices=METRICS,
        metavar="METRIC",
        help=f"any of {', '.join(METRICS)} (default: fd_digits, kid, precision_recall and agreement "
        "on digits; fd_domain, kid, precision_recall and agreement for a class-conditional model "
        "elsewhere, measured by a classifier trained on the dataset; fid, kid and "
        "precision_recall for an unconditional one)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        help="images per combination, at most the held-out half of the real images (default: 1000, "
        "or that half if smaller)",
    )
    parser.add_argument("--guidance-scale", type=float, nargs="+", default=[1.0], help="guidance scales to sweep")
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[None],
        help="denoising step counts to sweep (default: the scheduler's own default)",
    )
    parser.add_argument(
        "--scheduler",
        nargs="+",
        choices=sorted(SCHEDULER_NAMES),
        default=[None],
        metavar="NAME",
        help=f"schedulers to sweep: {', '.join(sorted(SCHEDULER_NAMES))} (default: the saved one)",
    )
    add_timestep_spacing_flag(parser)
    parser.add_argument(
        "--guidance-interval",
        type=float,
        nargs=2,
        action="append",
        metavar=("LOW", "HIGH"),
        help="sweep guidance limited to the steps with LOW <= t / training steps <= HIGH; repeat it to "
        "sweep several intervals ('0 1' guides every step; default: every step)",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="images per pipeline call (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="image i starts from the noise of seed + i (default: 0)")
    parser.add_argument("--classifier", help="a transformers image classifier (Hub id or folder) for agreement")
    parser.add_argument(
        "--dinov2-model",
        default="facebook/dinov2-base",
        help="DINOv2 weights for fd_dinov2: Hub id or local folder (default: facebook/dinov2-base)",
    )
    parser.add_argument("--cache-dir", help="where real-image features are cached (default: in the HF cache)")
    parser.add_argument(
        "--mixed-precision",
        choices=["no", "bf16", "auto"],
        default="no",
        help="sample under bf16 autocast (auto: where it pays, on a GPU or a CPU with bf16 instructions; default: no)",
    )
    parser.add_argument("--out", default="evaluation", help="folder for metrics.json and the plots")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.set_defaults(func=run_evaluate, parser=parser, flags=EVALUATE_FLAGS)


EVALUATE_FLAGS = {
    "num_samples": "--num-samples",
    "guidance_scale": "--guidance-scale",
    "steps": "--steps",
    "scheduler": "--scheduler",
    "metrics": "--metrics",
    "batch_size": "--batch-size",
    "classifier": "--classifier",
    "guidance_interval": "--guidance-interval",
    "dinov2_model": "--dinov2-model",
    # the pipeline's, for a step count that a swept scheduler refuses
    "num_inference_steps": "--steps",
    # the data loader's, which speaks the training script's flags
    "dataset_name": "--dataset",
    "dataset_config_name": "--dataset-config",
    "image_column": "--image-column",
    "label_column": "--label-column",
}


def run_evaluate(args: argparse.Namespace) -> None:
    from hf_ddpm.cpu import keep_freed_memory
    from hf_ddpm.evaluation import evaluate
    from hf_ddpm.sampling import load_pipeline

    check_seed(args.seed)
    check_output_folder("--out", args.out)
    if args.cache_dir:  # "" turns the cache off
        check_output_folder("--cache-dir", args.cache_dir)
    if args.device is not None:
        check_device(args.device)
    pipe = load_pipeline(args.model, device=args.device, timestep_spacing=args.timestep_spacing)
    pipe.set_progress_bar_config(disable=True)
    if pipe.device.type == "cpu":
        keep_freed_memory()
    intervals = [tuple(pair) for pair in args.guidance_interval] if args.guidance_interval else [None]
    result = evaluate(
        pipe,
        args.dataset,
        metrics=args.metrics,
        num_samples=args.num_samples,
        guidance_scales=args.guidance_scale,
        steps=args.steps,
        schedulers=args.scheduler,
        batch_size=args.batch_size,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        out_dir=args.out,
        guidance_intervals=intervals,
        split=args.split,
        dataset_config_name=args.dataset_config,
        image_column=args.image_column,
        label_column=args.label_column,
        center_crop=args.center_crop,
        classifier=args.classifier,
        dinov2_model=args.dinov2_model,
        cache_dir=args.cache_dir,
    )
    print(result.table())
    for best in result.best_guidance_rows():
        # Each interval swept has its own best scale: say which.
        interval = ", interval [{:g}, {:g}]".format(*best["guidance_interval"]) if len(intervals) > 1 else ""
        print(f"best guidance for {best['scheduler']}, {best['steps']} steps{interval}: {best['guidance_scale']:g}")
    print(f"wrote {args.out}/metrics.json and the plots")


def check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:  # image i takes seed + i, and a torch generator takes at most 64 bits
        raise ValueError(f"--seed must be in [0, 2**63), got {seed}.")


def check_device(device: str) -> None:
    import torch

    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"--device {device!r} cannot be used here: {error}") from None


def add_push_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload a pipeline folder to a Hub model repository, as training pushes it (after a failed upload)",
        description="Uploads FOLDER, the --output_dir of a training run, to the Hub model repository REPO_ID, as "
        "training pushes it: the pipeline, its model card, sample grid and evaluation; no checkpoints, logs or "
        "previews (samples/). The token is checked first; uploads are retried when the Hub fails.",
    )
    parser.add_argument("folder", help="a pipeline folder (with model_index.json)")
    parser.add_argument("repo_id", help="namespace/name, or name for the token owner's namespace; created if missing")
    parser.add_argument(
        "--private", action="store_true", help="create the repository private (an existing one keeps its visibility)"
    )
    parser.add_argument("--token", help="a Hub token with write access (default: HF_TOKEN or the saved login)")
    parser.add_argument("--message", default="Upload with hf-ddpm push", help="the commit message")
    parser.set_defaults(func=run_push, parser=parser, flags={})


def run_push(args: argparse.Namespace) -> None:
    from hf_ddpm.hub import HubPusher, HubPushError, pipeline_ignore_patterns, resolve_hub_token

    if not os.path.isfile(os.path.join(args.folder, "model_index.json")):
        raise ValueError(
            f"FOLDER {args.folder!r} is not a pipeline folder: it has no model_index.json (give the "
            "--output_dir of a training run, or a folder written by save_pretrained)."
        )
    token = resolve_hub_token(args.token, flag="--token")
    pusher = HubPusher(
        args.repo_id,
        token,
        private=args.private,
        ignore_patterns=pipeline_ignore_patterns(),
        flag="REPO_ID",
        token_flag="--token",
    )
    try:
        commit = pusher.push_blocking(args.folder, args.message)
    except HubPushError as error:
        sys.exit(f"hf-ddpm push: error: {error}")
    print(f"pushed {args.folder} to {pusher.repo_id}: {commit.commit_url}")


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="a web page for a pipeline (Gradio): draw classes, edit real images, watch them being denoised",
        description="Serves MODEL's web demo until interrupted. Sampling runs are queued: --concurrency at a time, "
        "at most --max-queue waiting, each shown its place.",
    )
    parser.add_argument("model", help="a folder written by save_pretrained, or a Hub repository id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    parser.add_argument("--share", action="store_true", help="also open a temporary public link through Gradio")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--concurrency", type=int, default=1, help="sampling runs at a time (default: 1)")
    parser.add_argument("--max-queue", type=int, default=16, help="requests that may wait (default: 16)")
    parser.add_argument(
        "--max-image-steps",
        type=int,
        default=4000,
        help="the most images x steps one request may ask for (default: 4000)",
    )
    parser.add_argument("--examples", help="a folder of real images in the model's size that the Edit tab offers")
    parser.set_defaults(
        func=run_serve,
        parser=parser,
        flags={
            "concurrency_limit": "--concurrency",
            "max_queue_size": "--max-queue",
            "max_image_steps": "--max-image-steps",
            "examples": "--examples",
        },
    )


def run_serve(args: argparse.Namespace) -> None:
    from hf_ddpm.app import build_demo, launch

    if not 0 <= args.port < 2**16:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}.")
    if args.device is not None:
        check_device(args.device)
    demo = build_demo(
        args.model,
        device=args.device,
        max_image_steps=args.max_image_steps,
        concurrency_limit=args.concurrency,
        max_queue_size=args.max_queue,
        examples=args.examples,
    )
    launch(demo, host=args.host, port=args.port, share=args.share)


def add_space_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "space",
        help="make a Hugging Face Space that serves a model's web demo, and upload it",
        description="Writes a Gradio Space for MODEL_REPO (app.py, requirements.txt, README.md with the Space's "
        "settings) and uploads it to --space-id, created if missing; with --local-dir, writes the files there "
        "and uploads nothing. The token is checked first.",
    )
    parser.add_argument("model_repo", help="the Hub id of the model (push a folder first with hf-ddpm push)")
    parser.add_argument("--space-id", help="the Space, USER/NAME (needed to upload)")
    parser.add_argument("--local-dir", help="write the Space's files into this folder instead of uploading them")
    parser.add_argument("--token", help="a Hub token with write access (default: HF_TOKEN or the saved login)")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--requirement", help="how the Space installs hf-ddpm (default: hf-ddpm[app] at this version)")
    parser.set_defaults(func=run_space, parser=parser, flags={})


def run_space(args: argparse.Namespace) -> None:
    from hf_ddpm.hub import HubPushError
    from hf_ddpm.space import push_space, write_space

    if args.local_dir is not None:
        check_output_folder("--local-dir", args.local_dir)
        folder = write_space(args.local_dir, args.model_repo, space_id=args.space_id, requirement=args.requirement)
        print(f"wrote {folder}/app.py, requirements.txt and README.md")
        return
    if args.space_id is None:
        raise ValueError("--space-id USER/NAME is needed to upload the Space (or give --local-dir to only write it).")
    try:
        url = push_space(
            args.model_repo, args.space_id, token=args.token, requirement=args.requirement, private=args.private
        )
    except HubPushError as error:
        sys.exit(f"hf-ddpm space: error: {error}")
    print(f"pushed the Space {args.space_id}: {url}")


SUBCOMMANDS = (
    add_noising_command,
    add_sample_command,
    add_edit_command,
    add_inpaint_command,
    add_evaluate_command,
    add_push_command,
    add_serve_command,
    add_space_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-ddpm", description="Pixel-space diffusion with diffusers.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in SUBCOMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `hf-ddpm COMMAND ...`; bad arguments exit with status 2 and the reason, as argparse does."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as error:
        args.parser.error(with_flag_names(str(error), args.flags))
    return 0
