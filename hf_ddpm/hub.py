"""Sharing a trained pipeline on the Hugging Face Hub: the token check, background pushes that retry and never hold up
training, the command that uploads a folder later, the model cards (of a pipeline, and of a noise-aware classifier)."""

import concurrent.futures
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

import httpx2
from huggingface_hub import CommitInfo, HfApi, ModelCard, ModelCardData, constants, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import _http as hub_http, filter_repo_objects, set_client_factory

from .evaluation.registry import LOWER_IS_BETTER, METRIC_KEYS

logger = logging.getLogger(__name__)

# Training state and logs stay local unless asked for: they are large, and only the pipeline is meant to be shared.
DEFAULT_IGNORE_PATTERNS = ("checkpoint-*", "logs/*")
MODEL_CARD_TAGS = ("diffusers", "pixel-space-diffusion", "ddpm", "hf-ddpm")
CFG_TAG = "classifier-free-guidance"
SECRET_KEY_PARTS = ("token", "secret", "password", "api_key", "credential")
HUB_ID = re.compile(r"[\w-][\w.-]*(/[\w-][\w.-]*)?")
# The values of an evaluation that the model card shows, in this order.

MISSING_TOKEN_HELP = "pass {flag}, set the HF_TOKEN environment variable, or log in with `hf auth login`"
# Answers worth trying again: the Hub's own trouble (5xx), a request it timed out, and rate limiting. Any other 4xx is
# final; 401 and 403 mean the token was revoked or cannot write.
RETRIED_STATUSES = (408, 429)
TOKEN_REFUSED_STATUSES = (401, 403)
# Failures on the way, as huggingface_hub's own retries (`http_backoff`) count them.
RETRIED_ERRORS = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How a push is tried again: exponential backoff, bounded in tries and in time.

    Only transient failures are retried: HTTP 5xx, 408 and 429, timeouts and lost connections. huggingface_hub retries
    some requests of an upload itself (the LFS transfers and the upload-mode check: up to 5 times, 1 to 8 s apart),
    so one try may take several `request_timeout`s against a Hub that hangs.

    Args:
        max_attempts (`int`): tries of one push, the first included.
        initial_delay (`float`): seconds between the first try and the second; doubled before each later try.
        max_delay (`float`): the longest wait between two tries.
        max_time (`float`): seconds after the first try past which no new try starts.
        request_timeout (`float`): seconds a request may go without progress (connecting, sending, or waiting for the
            answer) before it fails and the try counts as failed.
    """

    max_attempts: int = 5
    initial_delay: float = 4.0
    max_delay: float = 60.0
    max_time: float = 600.0
    request_timeout: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number `attempt` (1 for the first) before the next one."""
        return min(self.initial_delay * 2 ** (attempt - 1), self.max_delay)


# Read when a pusher is made or a token checked, so that a test can make the waits short.
DEFAULT_RETRY_POLICY = RetryPolicy()


class HubPushError(RuntimeError):
    """A push that did not reach the Hub. Nothing local is lost: the message says why, that every file is saved in
    `folder`, and the command that uploads it later (`command`: `hf-ddpm push FOLDER REPO_ID`)."""

    def __init__(self, reason: str, folder: str, repo_id: str):
        self.reason, self.folder, self.repo_id = reason, folder, repo_id
        self.command = upload_command(folder, repo_id)
        super().__init__(f"{reason} Every file is saved in {folder}; upload it later with: {self.command}")


def upload_command(folder: str, repo_id: str) -> str:
    """The shell command that pushes `folder` to `repo_id` as training does."""
    return f"hf-ddpm push {shlex.quote(os.fspath(folder))} {shlex.quote(repo_id)}"


def pipeline_ignore_patterns(logging_dir: str = "logs") -> list:
    """What stays local when a training run's --output_dir is pushed: checkpoints, logs (tensorboard event files
    wherever they are), the previews under samples/. The pipeline, its model card, sample grid and evaluation go."""
    return [*DEFAULT_IGNORE_PATTERNS, f"{logging_dir}/*", "samples/*", "*tfevents*"]


def resolve_hub_token(token: Optional[str] = None, endpoint: Optional[str] = None, flag: str = "--hub_token") -> str:
    """Find the Hub token to push with and check it with the Hub (`whoami`) before any training starts.

    The token is `token` (from `flag`), else the `HF_TOKEN` environment variable, else the saved login. It is
    returned to the caller and never printed, logged or written anywhere.

    Args:
        token (`str`, *optional*): the token given on the command line.
        endpoint (`str`, *optional*): the Hub to ask; by default `HF_ENDPOINT` or huggingface.co.
        flag (`str`): the command-line flag that gives `token`, named in the messages.

    Raises:
        `ValueError`: offline mode is on, no token was found, the Hub rejected it, it cannot write, or the Hub did not
            answer.
    """
    if constants.HF_HUB_OFFLINE:  # huggingface_hub refuses every request then, the token check first, in a traceback
        raise ValueError(
            "Pushing to the Hub needs the network, but huggingface_hub is in offline mode (HF_HUB_OFFLINE or "
            "TRANSFORMERS_OFFLINE is set): unset it to push."
        )
    help_text = MISSING_TOKEN_HELP.format(flag=flag)
    if token:
        origin = flag
    else:
        token = get_token()
        if not token:
            raise ValueError(f"Pushing to the Hub needs a token with write access: {help_text}.")
        from_environment = token == (os.environ.get("HF_TOKEN") or "").strip()
        origin = "the HF_TOKEN environment variable" if from_environment else "the saved login"

    api = HfApi(endpoint=endpoint)
    policy = DEFAULT_RETRY_POLICY
    try:
        user = _retrying(lambda: api.whoami(token=token), policy, "Checking the Hub token")
    except _Failure as failure:
        if failure.transient:
            raise ValueError(
                f"Cannot check the Hub token from {origin}: {api.endpoint} {failure.describe(policy)}. Try again "
                "when the Hub answers."
            ) from failure.error
        if not isinstance(failure.error, HfHubHTTPError):
            raise failure.error
        status = _http_status(failure.error) or "no"
        raise ValueError(
            f"The Hub token from {origin} was rejected by {api.endpoint} (HTTP {status}): {help_text}."
        ) from failure.error
    role = user.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise ValueError(
            f"The Hub token from {origin} (user {user.get('name')!r}) is read-only and cannot push; give a token "
            f"with write access: {help_text}."
        )
    return token


@dataclass
class _Push:
    """One background push: the folder it was asked for, its snapshot, and a way to stop its retries."""

    folder: str
    snapshot: str
    commit_message: str
    future: Future = field(default_factory=Future)
    stop: threading.Event = field(default_factory=threading.Event)


class HubPusher:
    """Pushes a pipeline folder to a Hub model repository, in the background while training goes on, or blocking.

    A background push uploads a snapshot: a copy of the folder's files taken when `push_async` is called, right after
    a save is complete. The training loop may then overwrite the folder with its next save while the upload runs, and
    the Hub never receives a half-written file or a mix of two saves. One background thread uploads the snapshots one
    after another, in the order they were asked for, so the repository never steps back to an older state.

    Nothing a Hub in trouble does reaches the training loop. `push_async` only copies files and returns. Each upload
    is retried as `retry` says, and each of its requests times out (`RetryPolicy.request_timeout`). At most one
    snapshot waits behind the upload under way: a newer one replaces it (its temporary copy is deleted), since the
    Hub only needs the latest state. A push that fails in the end is logged as a warning; training goes on, and the
    next push (which carries every change since) tries again. When the Hub refuses the token (HTTP 401 or 403: it was
    revoked, or lost write access), that is said once and no more background pushes are tried.

    The final push, `push_blocking`, supersedes the background pushes, retries, and raises [`HubPushError`] if it
    fails, saying that every file is in the folder and giving the command that uploads it later.

    Args:
        repo_id (`str`): "namespace/name", or "name" for the token owner's namespace. Created if it does not exist;
            a repository the token cannot create or write to is a `ValueError`.
        token (`str`): a write token, as returned by [`resolve_hub_token`]; kept in memory only.
        private (`bool`): create the repository private (an existing repository keeps its visibility).
        allow_patterns (`Sequence[str]`, *optional*): push only the files matching one of these globs.
        ignore_patterns (`Sequence[str]`): never push the files matching these globs (by default checkpoint state
            folders and logs).
        endpoint (`str`, *optional*): the Hub to push to; by default `HF_ENDPOINT` or huggingface.co.
        retry ([`RetryPolicy`], *optional*): how uploads are retried; by default `DEFAULT_RETRY_POLICY`.
        flag (`str`): the command-line flag that gives `repo_id`, named in the messages.
        token_flag (`str`): the command-line flag that gives `token`, named in the messages.
        repo_type (`str`): "model", or "space" for a Space (created with `space_sdk`, such as "gradio").
    """

    def __init__(
        self,
        repo_id: str,
        token: str,
        private: bool = False,
        allow_patterns: Optional[Sequence[str]] = None,
        ignore_patterns: Sequence[str] = DEFAULT_IGNORE_PATTERNS,
        endpoint: Optional[str] = None,
        retry: Optional[RetryPolicy] = None,
        flag: str = "--hub_model_id",
        token_flag: str = "--hub_token",
        repo_type: str = "model",
        space_sdk: Optional[str] = None,
    ):
        self._api = HfApi(endpoint=endpoint, token=token)
        self.repo_type = repo_type
        self.token_flag = token_flag
        self.retry = retry if retry is not None else DEFAULT_RETRY_POLICY
        try:
            create = lambda: self._api.create_repo(  # noqa: E731
                repo_id, private=private, exist_ok=True, repo_type=repo_type, space_sdk=space_sdk
            )
            self.repo_id = _retrying(create, self.retry, f"Creating {repo_id}").repo_id
        except _Failure as failure:
            if not (failure.transient or isinstance(failure.error, HfHubHTTPError)):
                raise failure.error
            message = f"Cannot create or use the Hub repository {repo_id!r} ({flag}): {failure.error}"
            raise ValueError(message) from failure.error
        self.allow_patterns = list(allow_patterns) if allow_patterns is not None else None
        self.ignore_patterns = list(ignore_patterns)
        self._pending: list = []  # futures of the background pushes asked for since the last `wait`
        self._last_folder: Optional[str] = None
        self._token_refused = False
        # The background thread's state: the push it uploads, the one waiting behind it. Guarded by `_changed`.
        self._changed = threading.Condition()
        self._running: Optional[_Push] = None
        self._waiting: Optional[_Push] = None
        self._worker: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        return f"HubPusher(repo_id={self.repo_id!r}, endpoint={self._api.endpoint!r}, pending={len(self._pending)})"

    def push_async(self, folder: str, commit_message: str) -> Future:
        """Snapshot `folder` now and upload the snapshot in the background; returns at once with the upload's future.

        The future ends with the `CommitInfo`, or the failure (already logged as a warning); it is cancelled when a
        newer push replaces this one before its upload started.
        """
        self._check_folder(folder)
        self._last_folder = folder
        if self._token_refused:
            reason = f"Background push {commit_message!r} to {self.repo_id} skipped: {self._token_reason()}."
            logger.debug(reason)
            return self._add_pending(_failed_future(HubPushError(reason, folder, self.repo_id)))
        try:
            push = _Push(folder, self._snapshot(folder), commit_message)
        except OSError as error:  # a full disk, say: the save before it would have failed too, but the loop goes on
            logger.warning(
                f"Cannot snapshot {folder} for a background push to {self.repo_id} ({error}); training "
                "goes on, and the next checkpoint's push tries again."
            )
            return self._add_pending(_failed_future(error))
        with self._changed:
            replaced, self._waiting = self._waiting, push
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="hub-push", daemon=True)
                self._worker.start()
        if replaced is not None:
            self._drop(replaced, f"replaced by {commit_message!r} before its upload started")
        return self._add_pending(push.future)

    def push_blocking(self, folder: str, commit_message: str) -> CommitInfo:
        """Upload `folder` now, retrying as `retry` says, and return when the commit is on the Hub.

        The background pushes are superseded: one waiting is dropped, and the one uploading stops retrying and is
        waited for, so that this commit lands last.

        Raises:
            [`HubPushError`]: the upload failed; the message says why and how to upload the folder later.
        """
        self._check_folder(folder)
        self._last_folder = folder
        self._supersede_background()
        upload = lambda: self._api.upload_folder(  # noqa: E731
            repo_id=self.repo_id,
            repo_type=self.repo_type,
            folder_path=folder,
            commit_message=commit_message,
            allow_patterns=self.allow_patterns,
            ignore_patterns=self.ignore_patterns,
        )
        try:
            return _retrying(upload, self.retry, f"Push {commit_message!r} to {self.repo_id}")
        except _Failure as failure:
            reason = f"Pushing {folder} to {self.repo_id} failed: {self._reason(failure)}."
            raise HubPushError(reason, folder, self.repo_id) from failure.error

    def wait(self, timeout: Optional[float] = None) -> list:
        """Wait for the background pushes asked for since the last call, at most `timeout` seconds (None: until they
        end, which the retry policy bounds). Returns their `CommitInfo`s.

        At the timeout, a push not yet started is dropped; the one uploading goes on while the process lives.

        Raises:
            [`HubPushError`]: a push failed, or was still uploading at the timeout.
        """
        pending, self._pending = self._pending, []
        _, not_done = concurrent.futures.wait(pending, timeout=timeout)
        if not_done:
            with self._changed:
                waiting, self._waiting = self._waiting, None
            if waiting is not None:
                self._drop(waiting, f"not started after waiting {timeout:g} s")
        asked = [future for future in pending if not future.cancelled()]
        unfinished = [future for future in asked if not future.done()]
        self._pending = unfinished + self._pending  # a later `wait` still sees them
        failures = [future.exception() for future in asked if future.done() and future.exception() is not None]
        if not failures and not unfinished:
            return [future.result() for future in asked]
        problems = []
        if failures:
            first = failures[0].reason if isinstance(failures[0], HubPushError) else str(failures[0])
            problems.append(
                f"{len(failures)} of {len(asked)} background pushes to {self.repo_id} failed; the first: {first}"
            )
        if unfinished:
            problems.append(
                f"{len(unfinished)} of {len(asked)} background pushes to {self.repo_id} still uploading "
                f"after {timeout:g} s"
            )
        raise HubPushError(" ".join(problem.rstrip(".") + "." for problem in problems), self._last_folder, self.repo_id)

    # ----- the background thread -----
    def _work(self) -> None:
        while True:
            with self._changed:
                push, self._waiting = self._waiting, None
                self._running = push
                if push is None:
                    self._worker = None
                    self._changed.notify_all()
                    return
            push.future.set_running_or_notify_cancel()
            commit, error = None, None
            try:
                commit = self._upload_snapshot(push)
            except _Failure as failure:
                error = self._background_failure(push, failure)
            except Exception as unexpected:  # a bug must not go silent: the log and the future carry it
                logger.exception(f"Background push {push.commit_message!r} to {self.repo_id} failed")
                error = unexpected
            # The copy goes before the future ends: whoever waits for it finds no temporary files left.
            shutil.rmtree(push.snapshot, ignore_errors=True)
            if error is None:
                push.future.set_result(commit)
            else:
                push.future.set_exception(error)

    def _upload_snapshot(self, push: _Push) -> CommitInfo:
        upload = lambda: self._api.upload_folder(  # noqa: E731
            repo_id=self.repo_id,
            repo_type=self.repo_type,
            folder_path=push.snapshot,
            commit_message=push.commit_message,
        )
        return _retrying(upload, self.retry, f"Background push {push.commit_message!r} to {self.repo_id}", push.stop)

    def _background_failure(self, push: _Push, failure: "_Failure") -> HubPushError:
        """Log a failed background push as a warning (once only for a refused token); the error for its future."""
        what = f"Background push {push.commit_message!r} of {push.folder} to {self.repo_id}"
        if failure.stopped:
            reason = f"{what} stopped retrying: a later push supersedes it."
            logger.info(reason)
        elif _http_status(failure.error) in TOKEN_REFUSED_STATUSES:
            reason = f"{what} failed: {self._reason(failure)}."
            if not self._token_refused:
                self._token_refused = True
                logger.warning(
                    f"{reason} Training goes on and saves every file in {push.folder}; no more "
                    "background pushes are tried, and the final push will say how to upload the folder "
                    "later."
                )
        else:
            reason = f"{what} failed: {self._reason(failure)}."
            logger.warning(
                f"{reason} Training goes on; every file is saved in {push.folder}, and the next "
                "checkpoint's push tries again."
            )
        return HubPushError(reason, push.folder, self.repo_id)

    def _drop(self, push: _Push, why: str) -> None:
        push.future.cancel()
        shutil.rmtree(push.snapshot, ignore_errors=True)
        logger.info(f"Background push {push.commit_message!r} to {self.repo_id} dropped: {why}.")

    def _supersede_background(self) -> None:
        with self._changed:
            waiting, self._waiting = self._waiting, None
            if self._running is not None:
                self._running.stop.set()
        if waiting is not None:
            self._drop(waiting, "a later push supersedes it")
        with self._changed:
            while self._worker is not None:
                self._changed.wait()
        self._pending = []

    def _add_pending(self, future: Future) -> Future:
        self._pending = [pending for pending in self._pending if not pending.cancelled()]
        self._pending.append(future)
        return future

    # ----- messages -----
    def _reason(self, failure: "_Failure") -> str:
        status = _http_status(failure.error)
        if status in TOKEN_REFUSED_STATUSES:
            return self._token_reason(status)
        if failure.transient:
            return f"the Hub {failure.describe(self.retry)}"
        return f"the Hub refused it ({_describe(failure.error, self.retry)})"

    def _token_reason(self, status: Optional[int] = None) -> str:
        answer = f" (HTTP {status})" if status is not None else ""
        return (
            f"the Hub refused the token{answer}: it was revoked, or cannot write to {self.repo_id}. Give a valid write "
            f"token ({self.token_flag}, HF_TOKEN or `hf auth login`)"
        )

    # ----- files -----
    def _check_folder(self, folder: str) -> None:
        if not os.path.isdir(folder):
            raise ValueError(f"Cannot push {folder!r} to the Hub: it is not a directory.")

    def _snapshot(self, folder: str) -> str:
        files = [path.relative_to(folder).as_posix() for path in Path(folder).rglob("*") if path.is_file()]
        selected = filter_repo_objects(files, allow_patterns=self.allow_patterns, ignore_patterns=self.ignore_patterns)
        snapshot = tempfile.mkdtemp(prefix="hf-ddpm-push-")
        try:
            for relative in selected:
                target = os.path.join(snapshot, relative)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(os.path.join(folder, relative), target)
        except OSError:
            shutil.rmtree(snapshot, ignore_errors=True)
            raise
        return snapshot


def _failed_future(error: BaseException) -> Future:
    future = Future()
    future.set_exception(error)
    return future


# ----- retries -----
class _Failure(Exception):
    """What `_retrying` raises when it gives up: the last error, and how many tries took how long."""

    def __init__(self, error: Exception, attempts: int, seconds: float, stopped: bool = False):
        super().__init__(str(error))
        self.error, self.attempts, self.seconds, self.stopped = error, attempts, seconds, stopped
        self.transient = _is_transient(error)

    def describe(self, policy: RetryPolicy) -> str:
        tries = f"{self.attempts} tries over {self.seconds:.1f} s" if self.attempts > 1 else "1 try"
        return f"still failed after {tries} (the last: {_describe(self.error, policy)})"


def _retrying(action: Callable[[], T], policy: RetryPolicy, what: str, stop: Optional[threading.Event] = None) -> T:
    """`action()`, tried again after transient failures as `policy` says, each of its requests bounded by
    `policy.request_timeout`; `stop` ends the retries early. Raises `_Failure` when it gives up."""
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            with _bounded_requests(policy.request_timeout):
                return action()
        except Exception as error:
            delay, elapsed = policy.delay(attempt), time.monotonic() - start
            stopped = stop is not None and stop.is_set()
            out_of_tries = attempt >= policy.max_attempts or elapsed + delay > policy.max_time
            if stopped or out_of_tries or not _is_transient(error):
                raise _Failure(error, attempt, elapsed, stopped) from error
            logger.info(
                f"{what}: {_describe(error, policy)} (try {attempt} of {policy.max_attempts}); trying again in "
                f"{delay:g} s."
            )
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                raise _Failure(error, attempt, time.monotonic() - start, stopped=True) from error


def _http_status(error: BaseException) -> Optional[int]:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _is_transient(error: BaseException) -> bool:
    status = _http_status(error)
    if status is not None:
        return status >= 500 or status in RETRIED_STATUSES
    return isinstance(error, RETRIED_ERRORS)


def _describe(error: BaseException, policy: RetryPolicy) -> str:
    """A failure in one line: the HTTP status and the Hub's message, or what happened on the way."""
    status = _http_status(error)
    if status is not None:
        server_message = getattr(error, "server_message", None) or ""
        return f"HTTP {status}" + (f" ({server_message.strip().splitlines()[0]})" if server_message.strip() else "")
    if isinstance(error, httpx2.TimeoutException):
        return f"no answer within {policy.request_timeout:g} s ({type(error).__name__})"
    return f"{type(error).__name__}: {error}"


# ----- a bound on every request of an upload -----
# huggingface_hub's shared HTTP client sets no timeout, and uploads and API calls pass none: a Hub that accepts the
# connection and never answers would hold an upload, and every push behind it, for ever. While a push runs, a request
# hook on that client gives every request that has no timeout of its own the push's `request_timeout` (downloads set
# theirs: HF_HUB_DOWNLOAD_TIMEOUT, HF_HUB_ETAG_TIMEOUT). The bound holds for the whole process, not one thread,
# because huggingface_hub uploads LFS files from a thread pool of its own.
_REQUEST_TIMEOUTS: list = []  # the request timeouts of the pushes under way
_REQUEST_TIMEOUTS_LOCK = threading.Lock()


@contextmanager
def _bounded_requests(timeout: float):
    _install_request_hook()
    with _REQUEST_TIMEOUTS_LOCK:
        _REQUEST_TIMEOUTS.append(timeout)
    try:
        yield
    finally:
        with _REQUEST_TIMEOUTS_LOCK:
            _REQUEST_TIMEOUTS.remove(timeout)


def _bound_request(request: httpx2.Request) -> None:
    timeouts = list(_REQUEST_TIMEOUTS)
    if timeouts and not any(request.extensions.get("timeout", {}).values()):
        request.extensions["timeout"] = httpx2.Timeout(min(timeouts)).as_dict()


def _install_request_hook() -> None:
    """Make huggingface_hub's client factory add `_bound_request` to the clients it makes (once per process; the
    factory in place, a user's own included, still makes them)."""
    with _REQUEST_TIMEOUTS_LOCK:
        factory = getattr(hub_http, "_GLOBAL_CLIENT_FACTORY", hub_http.default_client_factory)
        if getattr(factory, "bounds_requests", False):
            return

        def bounded_client_factory() -> httpx2.Client:
            client = factory()
            hooks = client.event_hooks
            client.event_hooks = {**hooks, "request": [*hooks.get("request", []), _bound_request]}
            return client

        bounded_client_factory.bounds_requests = True
        set_client_factory(bounded_client_factory)


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
            (tokens, passwords, ...) are left out. Their `guidance_scale` and `num_inference_steps` (the previews')
            go into the usage snippet.
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
        _usage_section(model_id, id2label, training_args or {}),
        _classes_section(id2label),
        _evaluation_section(output_dir, evaluation_dir, training_args or {}),
        _settings_section(training_args),
    ]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(section for section in sections if section) + "\n"
    card = ModelCard(content)
    card.save(os.path.join(output_dir, "README.md"))
    return card


def write_classifier_card(
    folder: str,
    model_id: str,
    dataset_name: Optional[str] = None,
    training_args: Optional[dict] = None,
    id2label: Optional[dict] = None,
    accuracy: Optional[dict] = None,
) -> ModelCard:
    """Write `folder/README.md` for a noise-aware classifier (`DDPMClassifier2DModel`, saved by `--task classifier`):
    what it is and which noise schedule it guides, how to load it, its classes, its accuracy by noise level (the
    `accuracy` report of its training, if given) and the training settings.

    Args:
        folder (`str`): where the card goes.
        model_id (`str`): the Hub repository or the folder that the classifier is loaded from, for the title and the
            usage snippet.
        dataset_name (`str`, *optional*): what it was trained on; Hub ids are linked in the metadata.
        training_args (`dict`, *optional*): the training settings, shown as a table (secrets left out); their
            `beta_schedule`, `num_train_timesteps` and `classifier_noise` say what the classifier was trained on.
        id2label (`dict[int, str]`, *optional*): class names.
        accuracy (`dict`, *optional*): the final report of the training script (`evaluation/classifier_accuracy.json`).
    """
    args = training_args or {}
    card_data = ModelCardData(
        library_name="diffusers",
        tags=[*MODEL_CARD_TAGS, "classifier-guidance", "image-classification"],
        datasets=[dataset_name] if _is_hub_dataset_id(dataset_name) else None,
        pipeline_tag="image-classification",
    )
    title = os.path.basename(os.path.normpath(model_id))
    data = f" on `{dataset_name}`" if dataset_name else ""
    schedule = f"`{args.get('beta_schedule')}` schedule of {args.get('num_train_timesteps')} steps"
    if args.get("classifier_noise") == "none":
        trained_on = "clean images only (at t = 0): the baseline of a classifier that never saw noise"
    else:
        trained_on = f"images noised at timesteps drawn uniformly from the {schedule}"
    sections = [
        f"# {title}",
        "A noise-aware classifier for classifier guidance "
        "([Dhariwal & Nichol, 2021](https://arxiv.org/abs/2105.05233)): given a noisy image `x_t` and its timestep "
        f"`t` it returns the logits of `p(y | x_t)`, whose gradient guides a diffusion model trained with the "
        f"{schedule}. Trained{data} with hf-ddpm on {trained_on}.",
        "## Usage\n\n"
        "With diffusers alone (the model code comes with the repository):\n\n"
        "```python\n"
        "from diffusers import AutoModel\n\n"
        f'classifier = AutoModel.from_pretrained("{model_id}", trust_remote_code=True)\n'
        "logits = classifier(noisy_images, timesteps).logits\n"
        "```\n\n"
        "With hf-ddpm installed: `DDPMClassifier2DModel.from_pretrained(...)`. The class names are the config's "
        "`id2label`.",
        _classes_section(id2label),
        _accuracy_section(accuracy),
        _settings_section(training_args),
    ]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(section for section in sections if section) + "\n"
    card = ModelCard(content)
    card.save(os.path.join(folder, "README.md"))
    return card


def _accuracy_section(report: Optional[dict]) -> str:
    if not report:
        return ""
    rows = "\n".join(
        f"| {name} | {_timesteps(*report['timesteps'][name])} | {_number(value)} |"
        for name, value in report["accuracy"].items()
    )
    return (
        f"## Accuracy\n\nOn {report['num_images']} held-out images ({report['source']}) after {report['step']} "
        "optimizer steps, each noised at a timestep drawn uniformly from the range:\n\n"
        f"| Noise | Timesteps | Accuracy |\n|---|---|---:|\n{rows}"
    )


def _timesteps(low: int, high: int) -> str:
    """The timesteps `range(low, high)`, in words."""
    return str(low) if high == low + 1 else f"{low} to {high - 1}"


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


def _usage_section(model_id: str, id2label: Optional[dict], training_args: dict) -> str:
    """How to sample, with the guidance scale and steps that the training previews used (if known)."""
    steps = training_args.get("num_inference_steps") or 50
    if id2label:
        names = [id2label[class_id] for class_id in sorted(id2label)[:2]]
        guidance = float(training_args.get("guidance_scale", 3.0))
        call = f"pipe(class_labels={names!r}, guidance_scale={guidance!r}, num_inference_steps={steps})"
    else:
        call = f"pipe(batch_size=4, num_inference_steps={steps})"
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


def _evaluation_section(output_dir: str, evaluation_dir: Optional[str], training_args: dict) -> str:
    if evaluation_dir is None or not os.path.isfile(os.path.join(evaluation_dir, "metrics.json")):
        return ""

    with open(os.path.join(evaluation_dir, "metrics.json"), encoding="utf-8") as file:
        report = json.load(file)
    rows, floors, info = report["rows"], report["floors"], report["info"]
    metrics = [key for key in METRIC_KEYS if key in rows[0]]
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
        "The floor is what as many held-out real images score: the best a model can reach with this many samples."
        + _reference_sentence(training_args),
        "\n".join(lines),
    ]
    if info.get("judge"):
        text.append(f"Agreement: the share of samples that the {info['judge']} reads as the class asked for.")
    plot = os.path.join(evaluation_dir, "cfg_tradeoff.png")
    if os.path.isfile(plot):
        relative = Path(os.path.relpath(plot, output_dir)).as_posix()
        text.append(f"![Guidance trade-off]({relative})")
    return "\n\n".join(text)


def _reference_sentence(training_args: dict) -> str:
    """Whether the real images that samples are compared with were trained on: a model that memorised them could
    score below the floor."""
    if not training_args:
        return ""
    if training_args.get("exclude_eval_reference"):
        return " The model never saw those reference images: it trained on the held-out half only."
    return (
        " The model trained on the reference images too, so these distances can flatter it; train with "
        "`--exclude_eval_reference` to measure on images it never saw."
    )


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
