"""What an evaluation measured (`EvaluationResult`) and how its rows are read: grouped into sweeps, the best guidance
scale of a sweep, a plain-text table. Shared by the evaluator, the report, training's evaluation and the model card."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .registry import FRECHET_METRICS, LOWER_IS_BETTER, METRIC_KEYS


@dataclass
class EvaluationResult:
    """What `evaluate` measured.

    Args:
        rows (`list[dict]`): one per (scheduler, steps, guidance scale, guidance interval), each with `scheduler`,
            `steps`, `guidance_scale`, `guidance_interval`, `num_samples`, `unet_evals_per_image` (UNet forwards,
            both CFG halves in one), `nfe_per_image` (network evaluations: two on a guided step, one on any other
            step, the work done), every metric's value, the real-vs-real floor
            beside each distance (`<metric>_floor`), and the seconds spent sampling, in features (and the judge) and
            in the metrics.
        floors (`dict`): the real-vs-real value of each distance, with `floor_num_samples`.
        info (`dict`): the model, dataset, split, feature spaces and judge.
        grids (`dict`): per row index, the first images of each class (`(N, C, H, W)` in [0, 1]) for sample grids.
    """

    rows: list[dict]
    floors: dict
    info: dict
    grids: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def table(self) -> str:
        """The rows as a plain-text table, each distance beside its floor."""
        intervals = ["guidance_interval"] if any(row.get("guidance_interval") for row in self.rows) else []
        keys = ["scheduler", "steps", "guidance_scale", *intervals, "num_samples", "nfe_per_image"] + [
            key for key in self.rows[0] if key in VALUE_KEYS
        ]
        header = [HEADERS.get(key, key) for key in keys]
        cells = [[_format(row.get(key)) for key in keys] for row in self.rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
        if self.floors:
            floors = ", ".join(f"{key} {_format(value)}" for key, value in self.floors.items())
            lines.append(f"real-vs-real floor: {floors}")
        return "\n".join(lines)

    @property
    def distance(self) -> str | None:
        """The first Fréchet metric listed, in whose feature space KID and precision/recall were measured (the one
        the plots and `best_guidance_rows` use), or KID."""
        frechet = [key for key in self.rows[0] if key in FRECHET_METRICS]
        if frechet:
            return frechet[0]
        return "kid" if "kid" in self.rows[0] else None

    def best_guidance_rows(self) -> list[dict]:
        """For each scheduler and steps swept over several guidance scales, the best of them (`best_guidance`)."""
        if self.distance is None:
            return []
        series = group_rows(self.rows, "guidance_scale").values()
        return [best_guidance(rows, self.distance) for rows in series if len(rows) > 1]

    def best(self, metric: str) -> dict:
        """The row with the best value of `metric` (lowest for distances, highest otherwise)."""
        if metric not in self.rows[0]:
            raise ValueError(
                f"`metric` {metric!r} was not measured; measured: {sorted(set(self.rows[0]) & VALUE_KEYS)}."
            )
        sign = 1 if metric in LOWER_IS_BETTER else -1
        return min(self.rows, key=lambda row: sign * row[metric])


def group_rows(rows: Sequence[dict], by: str) -> dict[tuple, list[dict]]:
    """Rows grouped by every swept setting but `by`, each group sorted by `by`."""
    groups: dict[tuple, list[dict]] = {}
    others = [name for name in SWEPT if name != by]
    for row in rows:
        groups.setdefault(tuple(row.get(name) for name in others), []).append(row)
    return {group: sorted(members, key=lambda row: row[by]) for group, members in groups.items()}


# The settings a sweep varies, in the order rows list them.
SWEPT = ("scheduler", "steps", "guidance_scale", "guidance_interval")
HEADERS = {"guidance_scale": "guidance", "guidance_interval": "interval", "nfe_per_image": "nfe"}

# How far below the highest agreement of a guidance sweep a scale may read and still count as fully guided.
AGREEMENT_TOLERANCE = 0.01


def best_guidance(rows: Sequence[dict], distance: str) -> dict:
    """The best row of a guidance sweep (rows that differ in guidance scale alone): the lowest `distance` among the
    rows whose class agreement is within `AGREEMENT_TOLERANCE` of the highest measured, or the lowest `distance`
    where agreement was not measured. Guidance buys agreement with diversity; this is the least diversity spent for
    (nearly) all the agreement that guidance can buy, not the scale with the lowest distance, which is often the one
    with the worst agreement."""
    if "agreement" in rows[0]:
        highest = max(row["agreement"] for row in rows)
        rows = [row for row in rows if row["agreement"] >= highest - AGREEMENT_TOLERANCE]
    return min(rows, key=lambda row: row[distance])


# What a measurement's row holds besides its settings: every metric's values and floors, and KID's spread.
VALUE_KEYS = {*METRIC_KEYS, *(f"{key}_floor" for key in METRIC_KEYS), "kid_std"}


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return str(value)
