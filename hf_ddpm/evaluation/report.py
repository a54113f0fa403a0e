"""An evaluation as files: `metrics.json` and the plots people look at.

- `cfg_tradeoff.png`: the Fréchet distance (with its real-vs-real floor) and agreement or precision/recall against
  the guidance scale, the curve of Ho & Salimans 2022 (https://huggingface.co/papers/2207.12598), the best scale
  marked (`best_guidance`): guidance buys class fidelity and precision with diversity; the best scale buys nearly
  all the agreement for the least distance.
- `quality_vs_steps.png`: the Fréchet distance against the number of steps, one line per scheduler: how few steps
  are enough.
- `samples_by_guidance.png`: the same seeds at each guidance scale, side by side.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from ..pipelines.pipeline_ddpm_cfg import image_grid
from ..sampling import as_pil_images
from .results import AGREEMENT_TOLERANCE, SWEPT, EvaluationResult, best_guidance, group_rows

STEPS_LINE_STYLES = ("o-", "s--", "^-.", "D:", "v-", "P--", "X-.", "*:")


def write_report(result: EvaluationResult, out_dir: str | os.PathLike) -> dict[str, str]:
    """Writes `metrics.json` and whichever plots the sweep has the axes for; returns their paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": write_metrics(result, out_dir / "metrics.json")}
    distance = result.distance
    if distance is not None and len({row["guidance_scale"] for row in result.rows}) > 1:
        paths["cfg_tradeoff"] = plot_cfg_tradeoff(result, distance, out_dir / "cfg_tradeoff.png")
    if distance is not None and len({row["steps"] for row in result.rows}) > 1:
        paths["quality_vs_steps"] = plot_quality_vs_steps(result, distance, out_dir / "quality_vs_steps.png")
    paths["samples"] = save_samples_by_guidance(result, out_dir / "samples_by_guidance.png")
    return paths


def write_metrics(result: EvaluationResult, path: Path) -> str:
    """`metrics.json`: the evaluation's info, its real-vs-real floors and its rows."""
    with open(path, "w", encoding="utf-8") as file:
        json.dump({"info": result.info, "floors": result.floors, "rows": result.rows}, file, indent=2, default=str)
    return str(path)


def _label(group: tuple, by: str) -> str:
    """What the rows of a `group_rows(rows, by)` group share, in words (no interval: guidance at every step)."""
    words = {
        "scheduler": "{}",
        "steps": "{} steps",
        "guidance_scale": "guidance {:g}",
        "guidance_interval": "guided at t/T in [{0[0]:g}, {0[1]:g}]",
    }
    names = [name for name in SWEPT if name != by]
    return ", ".join(words[name].format(value) for name, value in zip(names, group) if value is not None)


def plot_cfg_tradeoff(result: EvaluationResult, distance: str, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.rows
    second = "agreement" if "agreement" in rows[0] else ("precision" if "precision" in rows[0] else None)
    fig, left = plt.subplots(figsize=(6.4, 5.2), dpi=120)
    right = left.twinx() if second else None
    for i, (group, series) in enumerate(group_rows(rows, "guidance_scale").items()):
        scales = [row["guidance_scale"] for row in series]
        color, sweep = f"C{i}", _label(group, "guidance_scale")
        left.plot(scales, [row[distance] for row in series], "o-", color=color, label=f"{distance} ({sweep})")
        best = best_guidance(series, distance)
        left.plot(
            [best["guidance_scale"]],
            [best[distance]],
            "*",
            color=color,
            markersize=16,
            markeredgecolor="black",
            label=f"best: guidance {best['guidance_scale']:g} ({sweep})",
        )
        if right is not None:
            right.plot(
                scales, [row[second] for row in series], "s--", color=color, alpha=0.6, label=f"{second} ({sweep})"
            )
            if second == "precision":
                right.plot(
                    scales, [row["recall"] for row in series], "^:", color=color, alpha=0.6, label=f"recall ({sweep})"
                )
    floor = result.floors.get(f"{distance}_floor")
    if floor is not None:
        left.axhline(floor, color="gray", linestyle=":", label=f"real-vs-real floor ({floor:.3g})")
    criterion = f"the lowest {distance}"
    if second == "agreement":
        criterion += f" within {AGREEMENT_TOLERANCE:.0%} of the top agreement"
    left.set_xlabel(f"guidance scale (best: {criterion})")
    left.set_ylabel(f"{distance} (lower is better)")
    left.set_ylim(bottom=0)
    handles, labels = left.get_legend_handles_labels()
    if right is not None:
        right.set_ylabel(f"{second}{' / recall' if second == 'precision' else ''} (higher is better)")
        # Agreement and precision live near the top of [0, 1]: show the range they span, not the empty rest.
        shown = [row[key] for row in rows for key in ((second, "recall") if second == "precision" else (second,))]
        right.set_ylim(max(0.0, min(shown) - 0.05), 1.005)
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    # Below the axes, where it covers no curve.
    left.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    left.set_title("Classifier-free guidance: distance to the data vs. class fidelity", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def plot_quality_vs_steps(result: EvaluationResult, distance: str, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for i, (group, series) in enumerate(group_rows(result.rows, "steps").items()):
        # A marker and a dash pattern of its own per line: samplers that agree (DDIM and Euler step alike) draw the
        # same curve, and one must not hide the other.
        style = STEPS_LINE_STYLES[i % len(STEPS_LINE_STYLES)]
        axes.plot(
            [row["steps"] for row in series], [row[distance] for row in series], style, label=_label(group, "steps")
        )
    floor = result.floors.get(f"{distance}_floor")
    if floor is not None:
        axes.axhline(floor, color="gray", linestyle=":", label=f"real-vs-real floor ({floor:.3g})")
    axes.set_xscale("log")
    steps = sorted({row["steps"] for row in result.rows})
    axes.set_xticks(steps, [str(s) for s in steps])
    axes.minorticks_off()  # the log axis's own minor labels (6x10^0, ...) would sit among the step counts
    axes.set_xlabel("denoising steps (UNet evaluations per image)")
    axes.set_ylabel(f"{distance} (lower is better)")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=7)
    axes.set_title("Sample quality against steps, per scheduler", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def save_samples_by_guidance(result: EvaluationResult, path: Path) -> str:
    """One grid of samples per guidance scale (same seeds), left to right, for the first scheduler, steps and
    guidance interval."""
    first = result.rows[0]
    shared = [name for name in SWEPT if name != "guidance_scale"]
    picks = [
        (index, row["guidance_scale"])
        for index, row in enumerate(result.rows)
        if all(row.get(name) == first.get(name) for name in shared)
    ]
    blocks = [(guidance, _grid(result, result.grids[index])) for index, guidance in picks]
    font = ImageFont.load_default()
    header = 14
    gap = 8
    width = sum(block.width for _, block in blocks) + gap * (len(blocks) - 1)
    height = max(block.height for _, block in blocks) + header
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for guidance, block in blocks:
        canvas.paste(block, (x, header))
        draw.text((x + 2, 1), f"guidance {guidance:g}", fill="black", font=font)
        x += block.width + gap
    canvas.save(path)
    return str(path)


def _grid(result: EvaluationResult, images: torch.Tensor) -> Image.Image:
    """The images of one combination: one row per class, named by it, when the model is class-conditional (its
    classes named or not); else the most square layout."""
    count = images.shape[0]
    classes = result.info.get("num_classes")
    if classes and count % classes == 0:
        id2label = {int(label_id): name for label_id, name in (result.info.get("id2label") or {}).items()}
        names = [id2label.get(class_id, str(class_id)) for class_id in range(classes)]
        return image_grid(as_pil_images(images), rows=classes, names=names)
    per_row = math.ceil(math.sqrt(count))
    return image_grid(as_pil_images(images), rows=math.ceil(count / per_row))
