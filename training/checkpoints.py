"""A run's checkpoints and output folder: atomic saving (a checkpoint that exists is complete), manifests that tell a
damaged checkpoint, finding and checking the checkpoint to resume, and what an earlier run left in --output_dir."""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from accelerate.checkpointing import load_custom_state
from accelerate.logging import get_logger

from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.stopping import TrainingStopped

logger = get_logger(__name__, log_level="INFO")


CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")


BEST_CHECKPOINT = "checkpoint-best"  # --keep_best_checkpoint; never pruned, never the "latest"


PARTIAL_SUFFIX = ".partial"  # a checkpoint being written; renamed to checkpoint-N once complete


REPLACED_SUFFIX = ".replaced"  # the checkpoint a complete new one replaces, for the moment of the swap


ABANDONED_SUFFIX = ".abandoned"  # a checkpoint past the step a run resumed from: the course the run left


EVALUATION_DIR = "evaluation"  # the final evaluation: metrics.json and plots, shown in the model card


# The folders of a run's output besides the logs and checkpoints: the previews, the evaluation, the pipeline's parts.
RUN_FOLDERS = ("samples", EVALUATION_DIR, "unet", "scheduler")


MANIFEST = "manifest.json"  # in a checkpoint: the size and SHA-256 of each of its files, to tell a damaged one


# What a failed write says, for the errors a full or limited disk gives.
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "a file hit the file-size limit",
}


# torch.save reports a failed write as a RuntimeError of its C++ stream, safetensors as a SafetensorError: with one
# of these in the message.
WRITE_FAILURE_SIGNS = ("iostream error", "file write failed", "PytorchStreamWriter failed", "I/O error")


class TrainingProgress:
    """What a checkpoint records besides weights, optimizer, schedule, EMA and RNG states: the optimizer steps done
    (which fix the data position), the seed of the run's random streams, whether it keeps an EMA (which decides
    what else the checkpoint holds), the model's config (the UNet's or the classifier's, which the weights must fit),
    how the steps were batched (processes, batch size, accumulation and images: the data position and the
    learning-rate schedule of a step hold only for those), and the run's optimizer steps in all."""

    def __init__(
        self,
        seed: int,
        use_ema: bool,
        unet_config: dict | None = None,
        batching: dict | None = None,
        max_train_steps: int | None = None,
    ):
        self.global_step = 0
        self.seed = seed
        self.use_ema = use_ema
        self.unet_config = unet_config
        self.batching = batching
        self.max_train_steps = max_train_steps

    def state_dict(self) -> dict:
        return {
            "global_step": self.global_step,
            "seed": self.seed,
            "use_ema": self.use_ema,
            "unet_config": self.unet_config,
            "batching": self.batching,
            "max_train_steps": self.max_train_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.global_step, self.seed, self.use_ema = state["global_step"], state["seed"], state["use_ema"]
        # Absent from checkpoints of older versions.
        self.unet_config, self.batching = state.get("unet_config"), state.get("batching")
        self.max_train_steps = state.get("max_train_steps")


def saved_progress(path: str) -> TrainingProgress:
    saved = TrainingProgress(seed=None, use_ema=None)
    load_custom_state(saved, path, index=0)  # the first object registered for checkpointing: the progress
    return saved


def check_checkpoint_matches(path: str, args: argparse.Namespace) -> None:
    """Raises a ValueError, before anything is loaded, when the flags cannot continue the run saved in `path`."""
    saved = saved_progress(path)
    if saved.seed != args.seed:
        raise ValueError(
            f"--seed {args.seed} differs from the seed of {path} ({saved.seed}); resume with --seed {saved.seed} to "
            "continue that run."
        )
    if saved.use_ema != args.use_ema:
        flag = "--use_ema" if saved.use_ema else "no --use_ema"
        raise ValueError(f"{path} was saved by a run with {flag}: resume it with {flag} as well.")


def as_json(config: dict) -> dict:
    """The config as JSON would give it back (tuples as lists), for comparing."""
    return json.loads(json.dumps(config))


def check_same_unet(path: str, unet_config: dict, model_name: str = "UNet") -> None:
    """Raises a ValueError naming the keys of the model config (`unet_config`, as JSON gives it back; from
    --model_config, --resolution and the data; a UNet's, or `model_name`'s) in which the run to resume differs from the
    one `path` saved: its weights would not fit."""
    saved = saved_progress(path).unet_config
    if saved is None:
        return
    wanted = unet_config
    differing = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
    if differing:
        details = "; ".join(f"{key}: saved {saved.get(key)!r}, now {wanted.get(key)!r}" for key in differing)
        raise ValueError(
            f"{path} holds a {model_name} of another configuration ({details}). Resume with the --task, "
            "--model_config, --resolution and data of that run, or start a new run in another --output_dir."
        )


def check_same_batching(path: str, batching: dict, max_train_steps: int) -> None:
    """Raises a ValueError when the run to resume batches its steps (`batching`: processes, batch size, accumulation,
    images) otherwise than the run that saved `path`, and steps are left, by the saved run's count or by this run's
    `max_train_steps`: its step count would stand for another data position and another point of the learning-rate
    schedule. A finished run that this run takes no further may be evaluated and saved again on any batching."""
    progress = saved_progress(path)
    saved = progress.batching
    finished = progress.global_step >= max(progress.max_train_steps or math.inf, max_train_steps)
    if saved is None or saved == batching or finished:
        return

    def describe(layout: dict) -> str:
        return (
            f"{layout['processes']} process(es) x --train_batch_size {layout['batch_size']} x "
            f"--gradient_accumulation_steps {layout['accumulation']} on {layout['images']} images"
        )

    raise ValueError(
        f"{path} was saved by a run of {describe(saved)}; this run has {describe(batching)}. A checkpoint's step "
        "stands for a data position and a point of the learning-rate schedule only in the run that saved it: resume "
        "with that run's processes, batch, accumulation and data, or start a new run in another --output_dir."
    )


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in `output_dir` as (step, path), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_NAME.fullmatch(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def find_checkpoint_to_resume(args: argparse.Namespace) -> str | None:
    """The checkpoint that --resume_from_checkpoint names; `None` for a fresh start. `latest` passes over damaged
    checkpoints (a file missing or truncated) with a warning naming each; a damaged one named explicitly is an
    error."""
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        for _, path in reversed(list_checkpoints(args.output_dir)):
            damage = checkpoint_damage(path)
            if damage is None:
                return path
            warnings.warn(f"Skipping the damaged checkpoint {path}: {damage}.", stacklevel=2)
        return None
    for candidate in (args.resume_from_checkpoint, os.path.join(args.output_dir, args.resume_from_checkpoint)):
        if os.path.isdir(candidate):
            damage = checkpoint_damage(candidate)
            if damage is not None:
                raise ValueError(
                    f"--resume_from_checkpoint {candidate!r} is damaged: {damage}. Give another checkpoint, or "
                    "'latest' to take the newest complete one."
                )
            return candidate
    raise ValueError(
        f"--resume_from_checkpoint {args.resume_from_checkpoint!r} does not exist (as a path, or as a checkpoint in "
        f"--output_dir {args.output_dir!r}); give 'latest' or an existing checkpoint-N folder."
    )


def previous_run_outputs(output_dir: str, logging_dir: str) -> list[str]:
    """The paths in `output_dir` that a training run writes and that exist: the pipeline (`model_index.json`, its code
    file and component folders, the model card) or the classifier (`saved_model_files`), the final preview, samples,
    logs, the evaluation and checkpoints (the best one included). Anything else in the folder is not ours, and
    --overwrite_output_dir leaves it alone."""
    if not os.path.isdir(output_dir):
        return []
    names = ["samples", "samples.png", "samples.gif", logging_dir, EVALUATION_DIR]
    index_path = os.path.join(output_dir, "model_index.json")
    if os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as index_file:
            index = json.load(index_file)
        components = [key for key, value in index.items() if not key.startswith("_") and isinstance(value, list)]
        code = index.get("_class_name")
        code_files = [f"{code[0]}.py"] if isinstance(code, list) and code and isinstance(code[0], str) else []
        names += ["model_index.json", "README.md", *components, *code_files]
    names += saved_model_files(output_dir)
    checkpoints = [name for name in os.listdir(output_dir) if is_checkpoint_folder(name)]
    names += sorted(checkpoints)
    names = list(dict.fromkeys(names))  # README.md is both a pipeline's and a model's
    return [os.path.join(output_dir, name) for name in names if os.path.exists(os.path.join(output_dir, name))]


def saved_model_files(output_dir: str) -> list[str]:
    """The names of a model that `save_pretrained` wrote straight into `output_dir` (a classifier of --task
    classifier): its config, weights, code file and model card, when `config.json` names one of our models."""
    config_path = os.path.join(output_dir, "config.json")
    if not os.path.isfile(config_path):
        return []
    with open(config_path, encoding="utf-8") as config_file:
        config = json.load(config_file)
    code = config.get("auto_map", {}).get("AutoModel", "") if isinstance(config, dict) else ""
    if not code:
        return []
    return ["config.json", "diffusion_pytorch_model.safetensors", f"{code.split('.')[0]}.py", "README.md"]


def is_checkpoint_folder(name: str) -> bool:
    """`checkpoint-N` or `checkpoint-best`, complete, being written, being replaced, or abandoned."""
    base = name.removesuffix(PARTIAL_SUFFIX).removesuffix(REPLACED_SUFFIX).removesuffix(ABANDONED_SUFFIX)
    return base == BEST_CHECKPOINT or CHECKPOINT_NAME.fullmatch(base) is not None


def describe_previous_run(paths: list[str]) -> str:
    names = [os.path.basename(path) for path in paths]
    return ", ".join(names[:6] + ([f"and {len(names) - 6} more"] if len(names) > 6 else []))


def delete_previous_run(paths: list[str]) -> None:
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def prepare_output_dir(accelerator: Accelerator, output_dir: str, replaced: list[str], resume_path: str | None) -> None:
    """Makes `output_dir` ready on the main process, once every check has passed: only now are the outputs of an
    earlier run that --overwrite_output_dir replaces (`replaced`) deleted, and, when resuming from `resume_path`, the
    checkpoints past its step set aside. Every process waits for it."""
    if accelerator.is_main_process:
        if replaced:
            delete_previous_run(replaced)
        os.makedirs(output_dir, exist_ok=True)
        if resume_path is not None:
            set_aside_later_checkpoints(output_dir, saved_progress(resume_path).global_step)
    accelerator.wait_for_everyone()


def set_aside_later_checkpoints(output_dir: str, step: int) -> None:
    """Renames the checkpoints in `output_dir` past `step`, where the run resumes, to `checkpoint-N.abandoned`
    (replacing an older abandoned copy of the same step): they belong to the course the run left, which `latest`
    must not go back to, nor pruning count."""
    for saved_step, path in list_checkpoints(output_dir):
        if saved_step > step:
            shutil.rmtree(path + ABANDONED_SUFFIX, ignore_errors=True)
            os.rename(path, path + ABANDONED_SUFFIX)
            logger.warning(
                f"Set {path} aside as {path + ABANDONED_SUFFIX}: it is past step {step}, where this run resumes."
            )


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, total_limit: int | None) -> None:
    """`accelerator.save_state` into `output_dir/checkpoint-{step}`, all or nothing (`save_state_atomically`). Once
    it is complete, the oldest checkpoints go until at most `total_limit` remain: a crash while saving always leaves
    the previous checkpoint to resume from."""
    save_state_atomically(accelerator, os.path.join(output_dir, f"checkpoint-{step}"))
    if accelerator.is_main_process:
        if total_limit is not None:
            older = [path for saved_step, path in list_checkpoints(output_dir) if saved_step != step]
            for path in older[: max(0, len(older) - total_limit + 1)]:
                shutil.rmtree(path)
    accelerator.wait_for_everyone()


def save_state_atomically(accelerator: Accelerator, final: str, add_files: Callable[[str], None] | None = None) -> None:
    """`accelerator.save_state` into the folder `final`, all or nothing: the state is written under a temporary name
    (with whatever `add_files(folder)` adds on the main process, and a manifest of every file) and renamed when
    complete, so a crash never leaves a checkpoint that looks whole but is not. A folder already at `final` (a stale
    one from a run resumed from an earlier step, or the previous best) is set aside until the new one is in place.
    A write that fails (a full disk, a quota, a file-size limit) removes the partial folder and raises
    `TrainingStopped`; the earlier checkpoints stay."""
    partial, replaced = final + PARTIAL_SUFFIX, final + REPLACED_SUFFIX
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        with writing(os.path.basename(final), os.path.dirname(final)):
            accelerator.save_state(partial)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                if add_files is not None:
                    add_files(partial)
                write_manifest(partial)
    except TrainingStopped:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if accelerator.is_main_process:
        shutil.rmtree(replaced, ignore_errors=True)
        if os.path.exists(final):
            os.rename(final, replaced)
        os.rename(partial, final)
        shutil.rmtree(replaced, ignore_errors=True)
        logger.info(f"Saved {final}")
    accelerator.wait_for_everyone()


@contextlib.contextmanager
def writing(what: str, output_dir: str):
    """Turns a failed write of `what` into `TrainingStopped` saying why (a full disk, a quota, a file-size limit) and
    which checkpoint is there to resume from."""
    try:
        yield
    except Exception as error:
        reason = write_failure(error)
        if reason is None:
            raise  # a bug, not the disk
        kept = list_checkpoints(output_dir)
        newest = f"the newest complete checkpoint is {kept[-1][1]}" if kept else "no checkpoint was complete yet"
        raise TrainingStopped(
            f"Could not write {what} in {output_dir}: {reason} ({error}). Nothing half-written is left in its place; "
            f"{newest}. Free space (or raise the limit) and resume with --resume_from_checkpoint latest."
        ) from error


def write_failure(error: Exception) -> str | None:
    """Why a write failed, when `error` is a failed write (by the OS, torch.save or safetensors); else `None`."""
    if isinstance(error, OSError):
        return DISK_ERRORS.get(error.errno, error.strerror or str(error))
    if any(sign in str(error) for sign in WRITE_FAILURE_SIGNS):
        codes = {f"os error {number}": reason for number, reason in DISK_ERRORS.items()}
        generic = "a file could not be written (a full disk, a quota or a file-size limit)"
        return next((reason for code, reason in codes.items() if code in str(error)), generic)
    return None


def write_manifest(folder: str) -> None:
    """Records the size and SHA-256 of every file in `folder` (a checkpoint being written) in `MANIFEST`."""
    files = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as file:
        json.dump(files, file, indent=1)


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_damage(folder: str) -> str | None:
    """What is wrong with the checkpoint `folder` (a file missing, truncated or changed, against its manifest), or
    `None` when it is whole. Checkpoints written before manifests existed are taken as they are."""
    manifest_path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest_path):
        return None
    try:
        with open(manifest_path, encoding="utf-8") as file:
            manifest = json.load(file)
    except (OSError, ValueError) as error:
        return f"its {MANIFEST} cannot be read ({error})"
    for name, expected in manifest.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if os.path.getsize(path) != expected["size"]:
            return f"{name} has {os.path.getsize(path)} bytes instead of {expected['size']}"
        if file_sha256(path) != expected["sha256"]:
            return f"{name} does not hold what was saved (SHA-256 differs)"
    return None


def save_pipeline_atomically(pipe: DDPMCFGPipeline, output_dir: str) -> None:
    """`pipe.save_pretrained(output_dir)`, atomically as `save_folder_atomically` writes."""
    save_folder_atomically(pipe.save_pretrained, output_dir, "pipeline")


def save_folder_atomically(write: Callable[[str], None], output_dir: str, what: str) -> None:
    """`write(folder)` (a `save_pretrained`, with whatever goes beside it), written first into a folder beside
    `output_dir`'s entries (`.{what}.partial`) and then moved into place entry by entry (renames, which need no
    space): a write that fails leaves the previous pipeline or model as it was."""
    staging = os.path.join(output_dir, f".{what}" + PARTIAL_SUFFIX)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in os.listdir(staging):
        target, replaced = os.path.join(output_dir, name), os.path.join(output_dir, name + REPLACED_SUFFIX)
        if os.path.isdir(target):
            shutil.rmtree(replaced, ignore_errors=True)  # left by a save killed between the two renames
            os.rename(target, replaced)
        os.replace(os.path.join(staging, name), target)
        shutil.rmtree(replaced, ignore_errors=True)
    os.rmdir(staging)
