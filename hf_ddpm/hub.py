"""Sharing a trained pipeline on the Hugging Face Hub: the token check, background pushes, the model card."""

import json
import os
import re
import shutil
import tempfile
from concurrent.futures import Future
from pathlib import Path
from typing import Optional, Sequence

from huggingface_hub import CommitInfo, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import filter_repo_objects


# Training state and logs stay local unless asked for: they are large, and only the pipeline is meant to be shared.
DEFAULT_IGNORE_PATTERNS = ("checkpoint-*", "logs/*")
MODEL_CARD_TAGS = ("diffusers", "pixel-space-diffusion", "ddpm", "hf-ddpm")
CFG_TAG = "classifier-free-guidance"
SECRET_KEY_PARTS = ("token", "secret", "password", "api_key", "credential")
HUB_ID = re.compile(r"[\w-][\w.-]*(/[\w-][\w.-]*)?")
# The values of an evaluation that the model card shows, in this order.
EVALUATION_METRICS = ("fid", "fd_dinov2", "fd_digits", "kid", "precision", "recall", "agreement")
MISSING_TOKEN_HELP = "pass --hub_token, set the HF_TOKEN environment variable, or log in with `hf auth login`"


def resolve_hub_token(token: Optional[str] = None, endpoint: Optional[str] = None) -> str:
    """Find the Hub token to push with and check it with the Hub (`whoami`) before any training starts.

    The token is `token` (from `--hub_token`), else the `HF_TOKEN` environment variable, else the saved login. It is
    returned to the caller and never printed, logged or written anywhere.

    Args:
        token (`str`, *optional*): the token given on the command line.
        endpoint (`str`, *optional*): the Hub to ask; by default `HF_ENDPOINT` or huggingface.co.

    Raises:
        `ValueError`: no token was found, the Hub rejected it, or it cannot write.
    """
    if token:
        origin = "--hub_token"
    else:
        token = get_token()
        if not token:
            raise ValueError(f"Pushing to the Hub needs a token with write access: {MISSING_TOKEN_HELP}.")
        from_environment = token == (os.environ.get("HF_TOKEN") or "").strip()
        origin = "the HF_TOKEN environment variable" if from_environment else "the saved login"

    api = HfApi(endpoint=endpoint)
    try:
        user = api.whoami(token=token)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "no"
        raise ValueError(
            f"The Hub token from {origin} was rejected by {api.endpoint} (HTTP {status}): {MISSING_TOKEN_HELP}."
        ) from error
    role = user.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise ValueError(
            f"The Hub token from {origin} (user {user.get('name')!r}) is read-only and cannot push; give a token "
            f"with write access: {MISSING_TOKEN_HELP}."
        )
    return token


class HubPusher:
    """Pushes a pipeline folder to a Hub model repository, in the background while training goes on, or blocking.

    A background push uploads a snapshot: a copy of the folder's files taken when `push_async` is called, right after
    a save is complete. The training loop may then overwrite the folder with its next save while the upload runs, and
    the Hub never receives a half-written file or a mix of two saves. The uploads run one after another on one
    background thread (`HfApi.run_as_future`), in the order they were asked for, so the repository never steps back
    to an older state.

    Args:
        repo_id (`str`): "namespace/name", or "name" for the token owner's namespace. Created if it does not exist;
            a repository the token cannot create or write to is a `ValueError`.
        token (`str`): a write token, as returned by [`resolve_hub_token`]; kept in memory only.
        private (`bool`): create the repository private (an existing repository keeps its visibility).
        allow_patterns (`Sequence[str]`, *optional*): push only the files matching one of these globs.
        ignore_patterns (`Sequence[str]`): never push the files matching these globs (by default checkpoint state
            folders and logs).
        endpoint (`str`, *optional*): the Hub to push to; by default `HF_ENDPOINT` or huggingface.co.
    """

    def __init__(
        self,
        repo_id: str,
        token: str,
        private: bool = False,
        allow_patterns: Optional[Sequence[str]] = None,
        ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS,
        endpoint: Optional[str] = None,
    ):
        self._api = HfApi(endpoint=endpoint, token=token)
        try:
            self.repo_id = self._api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        except HfHubHTTPError as error:
            message = f"Cannot create or use the Hub repository {repo_id!r} (--hub_model_id): {error}"
            raise ValueError(message) from error
        self.allow_patterns = list(allow_patterns) if allow_patterns is not None else None
        self.ignore_patterns = list(ignore_patterns)
        self._pending: list = []

    def __repr__(self) -> str:
        return f"HubPusher(repo_id={self.repo_id!r}, endpoint={self._api.endpoint!r}, pending={len(self._pending)})"

    def push_async(self, folder: str, commit_message: str) -> Future:
        """Snapshot `folder` now and upload the snapshot in the background; returns the upload's future."""
        snapshot = self._snapshot(folder)
        future = self._api.run_as_future(self._upload_snapshot, snapshot, commit_message)
        self._pending.append(future)
        return future

    def push_blocking(self, folder: str, commit_message: str) -> CommitInfo:
        """Wait for the background pushes, then upload `folder` and return when the commit is on the Hub."""
        self._check_folder(folder)
        self.wait()
        return self._api.upload_folder(
            repo_id=self.repo_id,
            folder_path=folder,
            commit_message=commit_message,
            allow_patterns=self.allow_patterns,
            ignore_patterns=self.ignore_patterns,
        )

    def wait(self) -> list:
        """Wait for every background push; returns their `CommitInfo`s, or raises if any of them failed."""
        pending, self._pending = self._pending, []
        commits, failures = [], []
        for future in pending:
            try:
                commits.append(future.result())
            except Exception as error:  # reported together below, after every push has finished
                failures.append(error)
        if failures:
            summary = f"{len(failures)} of {len(pending)} background pushes to {self.repo_id} failed"
            raise RuntimeError(f"{summary}; the first: {failures[0]}") from failures[0]
        return commits

    def _check_folder(self, folder: str) -> None:
        if not os.path.isdir(folder):
            raise ValueError(f"Cannot push {folder!r} to the Hub: it is not a directory.")

    def _snapshot(self, folder: str) -> str:
        self._check_folder(folder)
        files = [path.relative_to(folder).as_posix() for path in Path(folder).rglob("*") if path.is_file()]
        selected = filter_repo_objects(files, allow_patterns=self.allow_patterns, ignore_patterns=self.ignore_patterns)
        snapshot = tempfile.mkdtemp(prefix="hf-ddpm-push-")
        for relative in selected:
            target = os.path.join(snapshot, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(folder, relative), target)
        return snapshot

    def _upload_snapshot(self, snapshot: str, commit_message: str) -> CommitInfo:
        try:
            return self._api.upload_folder(repo_id=self.repo_id, folder_path=snapshot, commit_message=commit_message)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)


def write_model_card(
    output_dir: str,
    repo_id: Optional[str] = None,
    dataset_name: Optional[str] = None,
    training_args: Optional[dict] = None,
    sample_grid_path: Optional[str] = None,
    id2label: Optional[dict] = None,
    evaluation_dir: Optional[str] = None,
) -> ModelCard:
    """Write `output_dir/README.md`: Hub metadata (tags, dataset), a sample grid, usage, an evaluation and the training
    settings.

    Args:
        output_dir (`str`): the pipeline folder.
        repo_id (`str`, *optional*): the Hub repository, for the usage snippet (else the folder's path).
        dataset_name (`str`, *optional*): what the model was trained on; Hub ids are linked in the metadata.
        training_args (`dict`, *optional*): the training settings, shown as a table. Keys that name secrets
            (tokens, passwords, ...) are left out.
        sample_grid_path (`str`, *optional*): an image of samples; copied into `output_dir` if it lies elsewhere.
        id2label (`dict[int, str]`, *optional*): class names of a class-conditional model.
        evaluation_dir (`str`, *optional*): a folder inside `output_dir` written by `hf_ddpm.evaluation.write_report`
            for rows that differ in guidance scale only (as the training script sweeps): its `metrics.json` becomes a
            table (each metric at each scale, beside its real-vs-real floor) and its guidance trade-off plot is shown.
    """
    conditional = bool(id2label)
    card_data = ModelCardData(
        library_name="diffusers",
        tags=list(MODEL_CARD_TAGS) + ([CFG_TAG] if conditional else []),
        datasets=[dataset_name] if _is_hub_dataset_id(dataset_name) else None,
        pipeline_tag=None if conditional else "unconditional-image-generation",
    )
    model_id = repo_id or output_dir
    title = (repo_id or os.path.basename(os.path.abspath(output_dir))).split("/")[-1]
    sections = [
        f"# {title}",
        _description(dataset_name, conditional),
        _samples_section(output_dir, sample_grid_path),
        _usage_section(model_id, id2label),
        _classes_section(id2label),
        _evaluation_section(output_dir, evaluation_dir),
        _settings_section(training_args),
    ]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(section for section in sections if section) + "\n"
    card = ModelCard(content)
    card.save(os.path.join(output_dir, "README.md"))
    return card


def _is_hub_dataset_id(name: Optional[str]) -> bool:
    """Whether the metadata can link `name` to a Hub dataset: a "name" or "namespace/name" that is not a local path."""
    return bool(name and HUB_ID.fullmatch(name)) and name != "digits" and not os.path.exists(name)


def _description(dataset_name: Optional[str], conditional: bool) -> str:
    kind = (
        "A class-conditional pixel-space diffusion model with classifier-free guidance "
        "([Ho & Salimans, 2022](https://arxiv.org/abs/2207.12598))"
        if conditional
        else "An unconditional pixel-space diffusion model"
    )
    data = f" on `{dataset_name}`" if dataset_name else ""
    return (
        f"{kind}: a UNet trained as a DDPM denoiser ([Ho et al., 2020](https://arxiv.org/abs/2006.11239))"
        f"{data} with hf-ddpm, for 🧨 diffusers."
    )


def _samples_section(output_dir: str, sample_grid_path: Optional[str]) -> str:
    if sample_grid_path is None:
        return ""
    output_dir, sample_grid_path = os.path.abspath(output_dir), os.path.abspath(sample_grid_path)
    if os.path.commonpath([output_dir, sample_grid_path]) != output_dir:
        copied = os.path.join(output_dir, "sample_grid" + os.path.splitext(sample_grid_path)[1])
        shutil.copyfile(sample_grid_path, copied)
        sample_grid_path = copied
    relative = Path(os.path.relpath(sample_grid_path, output_dir)).as_posix()
    return f"## Samples\n\n![Samples]({relative})"


def _usage_section(model_id: str, id2label: Optional[dict]) -> str:
    if id2label:
        names = [id2label[class_id] for class_id in sorted(id2label)[:2]]
        call = f"pipe(class_labels={names!r}, guidance_scale=3.0, num_inference_steps=50)"
    else:
        call = "pipe(batch_size=4, num_inference_steps=50)"
    return (
        "## Usage\n\n"
        "With diffusers alone (the pipeline and model code come with the repository):\n\n"
        "```python\n"
        "from diffusers import DiffusionPipeline\n\n"
        f'pipe = DiffusionPipeline.from_pretrained("{model_id}", trust_remote_code=True)\n'
        f"images = {call}.images\n"
        "```\n\n"
        "With hf-ddpm installed:\n\n"
        "```python\n"
        "from hf_ddpm import DDPMCFGPipeline\n\n"
        f'pipe = DDPMCFGPipeline.from_pretrained("{model_id}")\n'
        f"images = {call}.images\n"
        "```"
    )


def _classes_section(id2label: Optional[dict]) -> str:
    if not id2label:
        return ""
    rows = "\n".join(f"| {class_id} | {_cell(id2label[class_id])} |" for class_id in sorted(id2label))
    return f"## Classes\n\n| Id | Label |\n|---:|---|\n{rows}"


def _evaluation_section(output_dir: str, evaluation_dir: Optional[str]) -> str:
    if evaluation_dir is None or not os.path.isfile(os.path.join(evaluation_dir, "metrics.json")):
        return ""
    from .evaluation.evaluate import LOWER_IS_BETTER  # torch and the metrics: only for a card that has them

    with open(os.path.join(evaluation_dir, "metrics.json"), encoding="utf-8") as file:
        report = json.load(file)
    rows, floors, info = report["rows"], report["floors"], report["info"]
    metrics = [key for key in EVALUATION_METRICS if key in rows[0]]
    scales = " | ".join(f"guidance {row['guidance_scale']:g}" for row in rows)
    lines = [f"| Metric | {scales} | Real-vs-real floor |", "|---|" + "---:|" * (len(rows) + 1)]
    for metric in metrics:
        direction = "lower" if metric in LOWER_IS_BETTER else "higher"
        values = " | ".join(_number(row[metric]) for row in rows)
        lines.append(f"| {metric} ({direction} is better) | {values} | {_number(floors.get(f'{metric}_floor'))} |")
    first = rows[0]
    step = f" after {info['step']} optimizer steps" if info.get("step") is not None else ""
    text = [
        "## Evaluation",
        f"{first['num_samples']} samples per guidance scale{step} ({first['steps']} {first['scheduler'].upper()} "
        f"steps, image i from seed {info.get('seed', 0)} + i), against the real images of `{info.get('dataset')}`. "
        "The floor is what as many held-out real images score: the best a model can reach with this many samples.",
        "\n".join(lines),
    ]
    if info.get("judge"):
        text.append(f"Agreement: the share of samples that the {info['judge']} reads as the class asked for.")
    plot = os.path.join(evaluation_dir, "cfg_tradeoff.png")
    if os.path.isfile(plot):
        relative = Path(os.path.relpath(plot, output_dir)).as_posix()
        text.append(f"![Guidance trade-off]({relative})")
    return "\n\n".join(text)


def _number(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _settings_section(training_args: Optional[dict]) -> str:
    if not training_args:
        return ""
    public = {key: value for key, value in training_args.items() if not _is_secret(key)}
    rows = "\n".join(f"| `{key}` | {_cell(value)} |" for key, value in public.items())
    return f"## Training settings\n\n| Setting | Value |\n|---|---|\n{rows}"


def _is_secret(key: str) -> bool:
    return any(part in key.lower() for part in SECRET_KEY_PARTS)


def _cell(value) -> str:
    """A value as a markdown table cell: one line, pipes escaped."""
    return str(value).replace("|", "\\|").replace("\n", " ")
