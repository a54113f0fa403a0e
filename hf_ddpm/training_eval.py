"""Evaluation while a model trains (`--eval_steps` of the training script).

Every `--eval_steps` optimizer steps the script measures its (EMA) weights against the real images with the metrics
of `hf_ddpm.evaluation`, at `--guidance_scale`; at the end it sweeps the guidance scales into `evaluation/`
(`metrics.json`, the trade-off plot) for the model card. `--keep_best_checkpoint METRIC` keeps the training state
of the best evaluation so far beside the latest, its value in `best.json`.

With several processes, each draws a share of the evaluation's images, whole batches of `--eval_batch_size` dealt
out in turn; image i always starts from the noise of seed `seed + i` and is drawn in the same batch, so the images
are bit for bit those of one process. The main process gathers and measures them, and hands the values back to
every process, so that all of them decide alike whether to save a checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from .evaluation import EvaluationResult, Evaluator, sample_images, write_report
from .evaluation.evaluator import grid_images, settings_row
from .evaluation.registry import LOWER_IS_BETTER, metric_keys
from .stopping import StopRequested

logger = logging.getLogger(__name__)

BEST_FILE = "best.json"


def run_on_main(accelerator: Accelerator, compute: Callable[[], object]) -> object:
    """`compute()` on the main process, its result handed to every process. An exception there is raised on every
    process: the others would otherwise wait for a result forever."""
    outcome, error = [None], None
    if accelerator.is_main_process:
        try:
            outcome = [(True, compute())]
        except Exception as caught:
            outcome, error = [(False, f"{type(caught).__name__}: {caught}")], caught
    broadcast_object_list(outcome)
    if error is not None:
        raise error
    succeeded, value = outcome[0]
    if not succeeded:
        raise RuntimeError(f"Evaluation failed on the main process: {value}")
    return value


class TrainingEvaluation:
    """Evaluations of the model being trained, all against one [`Evaluator`] that the main process sets up once.

    Args:
        accelerator (`Accelerator`): the training's; every process must call `measure` and `sweep` together.
        make_evaluator (`Callable[[], Evaluator]`): builds the evaluator; called on the main process only, now, so that
            a metric it cannot compute stops the run before any training step.
        seed (`int`): image i starts from the noise of seed `seed + i`, at every evaluation.
        batch_size (`int`): images per pipeline call, on each process.
        num_inference_steps (`int`): sampling steps.

    Raises:
        `ValueError` (main process) or `RuntimeError` (the others) when the evaluator cannot be set up.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        make_evaluator: Callable[[], Evaluator],
        *,
        seed: int,
        batch_size: int,
        num_inference_steps: int,
    ):
        self.accelerator = accelerator
        self.evaluator: Evaluator | None = None
        self.seed, self.batch_size, self.num_inference_steps = seed, batch_size, num_inference_steps

        def set_up() -> tuple:
            self.evaluator = make_evaluator()
            return self.evaluator.num_samples, self.evaluator.class_ids

        self.num_samples, self.class_ids = run_on_main(accelerator, set_up)

    def measure(self, pipe, guidance_scale: float, stop: Callable[[], bool] | None = None) -> dict:
        """Samples the evaluation images at `guidance_scale` and measures them; the row (settings and metric values,
        as `evaluate` writes them) on every process. `stop()`, asked between batches, abandons the evaluation: when
        it says so on any process, every process raises `StopRequested` after its sampling."""
        row, _ = self._sample_and_measure(pipe, guidance_scale, stop)
        return row

    def sweep(self, pipe, guidance_scales: Sequence[float], out_dir: str, info: dict) -> list[dict]:
        """Measures at every scale of `guidance_scales`; the main process writes `out_dir` afresh (`metrics.json`, the
        guidance trade-off plot when there are several scales, the samples side by side). Returns the rows."""
        rows, grids = [], {}
        for index, scale in enumerate(guidance_scales):
            row, images = self._sample_and_measure(pipe, scale)
            rows.append(row)
            if images is not None:
                grids[index] = grid_images(images, self.class_ids)
        if self.accelerator.is_main_process:
            result = EvaluationResult(
                rows=rows, floors=self.evaluator.floors, info={**info, **self.evaluator.info}, grids=grids
            )
            shutil.rmtree(out_dir, ignore_errors=True)  # no plot of an earlier sweep may outlive it
            write_report(result, out_dir)
        self.accelerator.wait_for_everyone()
        return rows

    def _sample_and_measure(self, pipe, guidance_scale: float, stop=None) -> tuple[dict, torch.Tensor | None]:
        started = time.perf_counter()
        images = self._sample(pipe, guidance_scale, stop)
        seconds = time.perf_counter() - started

        def measure() -> dict:  # as `evaluate` writes its rows
            row = settings_row(pipe, guidance_scale, None, self.num_samples, seconds)
            return {**row, **self.evaluator.measure(images)}

        # The main process's row (it draws the first batch, so its pipeline has sampled), on every process.
        return run_on_main(self.accelerator, measure), images

    def _sample(self, pipe, guidance_scale: float, stop=None) -> torch.Tensor | None:
        """This process's share of the images, gathered; all of them, in order, on the main process.

        The shares are whole batches (batch b of `batch_size` images to process b mod W): an image is then drawn in
        the same batch whatever the number of processes, and comes out bit for bit the same (a batch of another
        size can round differently)."""
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        batches = [
            range(start, min(start + self.batch_size, self.num_samples))
            for start in range(0, self.num_samples, self.batch_size)
        ]
        # Only the last batch can be short, and it is the last of its process's share: its calls are these batches.
        shares_of_batches = []
        for batch in batches[rank::world]:
            if stop is not None and stop():
                self.accelerator.set_trigger()
                break
            shares_of_batches.append(
                sample_images(
                    pipe,
                    batch,
                    self.class_ids,
                    self.batch_size,
                    self.seed,
                    guidance_scale=guidance_scale,
                    num_inference_steps=self.num_inference_steps,
                )
            )
        if stop is not None and self.accelerator.check_trigger():  # every process asks once, here: all agree
            raise StopRequested("the run is stopping")
        share = torch.cat(shares_of_batches) if shares_of_batches else torch.empty(0)
        shares = gather_object([share])
        if not self.accelerator.is_main_process:
            return None
        in_batch_order = [None] * len(batches)
        for process, images in enumerate(shares):
            for position, batch_images in enumerate(images.split(self.batch_size) if len(images) else []):
                in_batch_order[process + position * world] = batch_images
        return torch.cat(in_batch_order)


@dataclass
class BestValue:
    """The best value of `metric` so far and the step that reached it, as `checkpoint-best/best.json` records them.

    Args:
        metric (`str`): one of `METRIC_KEYS`; lower is better for those in `LOWER_IS_BETTER`, higher for the others.
        value (`float`, *optional*): the best value, `None` before the first evaluation.
        step (`int`, *optional*): the optimizer step of that evaluation.
    """

    metric: str
    value: float | None = None
    step: int | None = None

    def improved_by(self, value: float) -> bool:
        """Whether `value` is strictly better than the best so far (a NaN never is)."""
        if not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value < self.value if self.metric in LOWER_IS_BETTER else value > self.value

    @classmethod
    def read(cls, checkpoint: str, metric: str) -> BestValue:
        """The best value that `checkpoint` records for `metric`; none when it holds none, or one of another metric."""
        path = os.path.join(checkpoint, BEST_FILE)
        if not os.path.isfile(path):
            return cls(metric)
        with open(path, encoding="utf-8") as file:
            saved = json.load(file)
        if saved.get("metric") != metric:
            logger.warning(
                f"{checkpoint} is the best by {saved.get('metric')!r}, not {metric!r}: the next evaluation replaces it."
            )
            return cls(metric)
        return cls(metric, float(saved["value"]), int(saved["step"]))

    def write(self, checkpoint: str) -> None:
        with open(os.path.join(checkpoint, BEST_FILE), "w", encoding="utf-8") as file:
            json.dump(asdict(self), file, indent=2)


def log_line(row: dict, metrics: Sequence[str]) -> str:
    """`fd_digits 12.3 (floor 8.01), kid 0.0412 (floor -0.002), agreement 0.91`: each value beside its floor."""
    parts = []
    for key in metric_keys(metrics):
        floor = row.get(f"{key}_floor")
        parts.append(f"{key} {row[key]:.4g}" + (f" (floor {floor:.4g})" if floor is not None else ""))
    return ", ".join(parts)


def scalars(row: dict, metrics: Sequence[str]) -> dict[str, float]:
    """The row's metric values and their floors, as tensorboard scalars `eval/<key>`."""
    keys = metric_keys(metrics)
    keys += [f"{key}_floor" for key in keys if f"{key}_floor" in row]
    return {f"eval/{key}": float(row[key]) for key in keys}
