"""A loopback stand-in for the Hugging Face Hub, so that tests push and pull with the real `huggingface_hub` client
and no network.

It answers the requests that `huggingface_hub` makes for model repositories, and for Spaces those of creating one
and committing small files to it (`/api/spaces/...`; kept as repository "spaces/{namespace}/{name}", no LFS):

- `GET  /api/whoami-v2`: the user behind a Bearer token.
- `POST /api/repos/create`, `DELETE /api/repos/delete`: repositories, public or private (409 when one exists).
- `POST /api/validate-yaml`: the README metadata check that runs before a model card is committed.
- `POST /api/models/{repo}/preupload/{rev}`: which files go to LFS (binary, large, or LFS-tracked suffixes).
- `POST /{repo}.git/info/lfs/objects/batch` and `.../verify`, `PUT /lfs-upload/{oid}?signature=...`: the "basic"
  LFS transfer; the upload address is signed, as a storage bucket's would be, because the client sends no token there.
- `POST /api/models/{repo}/commit/{rev}`: NDJSON commits (header, file, lfsFile, deletedFile, deletedFolder).
- `GET  /api/models/{repo}[/revision/{rev}]`: repository info with `sha` and `siblings`.
- `GET  /api/models/{repo}/tree/{rev}[/{path}]`, `POST /api/models/{repo}/paths-info/{rev}`: file listings.
- `GET|HEAD /{repo}/resolve/{rev}/{path}`: file content with `ETag`, `X-Repo-Commit`, `Content-Length` and, for LFS
  files, `X-Linked-Etag` / `X-Linked-Size`.

Failures can be injected, to test how clients live with a Hub in trouble: `fail` (matching requests answer an HTTP
error, such as a 500), `hang` (matching requests get no answer for a while, then the connection drops) and `revoke`
(a token is refused with 401 from then on, as the Hub refuses a revoked token).

Revisions are `main` or a commit sha. Nothing advertises Xet storage (no `X-Xet-*` headers, no `xetHash`), so
downloads use plain HTTP. Uploads are different: `huggingface_hub` picks Xet whenever `hf_xet` is installed, whatever
the server says, so clients must run with `HF_HUB_DISABLE_XET=1` (the `hub_server` fixture sets it).

Everything is kept in memory and the server lives until `stop()`.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

import huggingface_hub
import yaml
from huggingface_hub import constants
from huggingface_hub.utils import _http

# Files larger than this go to LFS, as on the Hub.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
# The LFS-tracked suffixes of the `.gitattributes` that the Hub writes into every new model repository.
LFS_TRACKED_PATTERNS = (
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.lfs.*",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "*.tar.*",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
)
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_TRACKED_PATTERNS)

REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
KIND = r"(?P<kind>models|spaces)"
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
# The requests that an injected failure can target by name; any other string is a regular expression searched in the
# request's path.
FAULT_TARGETS = {
    "commit": r"^/api/models/[\w.-]+/[\w.-]+/commit/",
    "preupload": r"^/api/models/[\w.-]+/[\w.-]+/preupload/",
    "lfs": r"(\.git/info/lfs/objects/|^/lfs-upload/)",
    "create": r"^/api/repos/create$",
    "whoami": r"^/api/whoami",
    "any": r"",
}


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as `oid` / `ETag` for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit. LFS files keep their content in the LFS store and a pointer in git."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def blob_oid(self) -> str:
        return git_blob_oid(self.pointer if self.lfs else self.data)

    @property
    def content_oid(self) -> str:
        """The oid `huggingface_hub` compares local files against to skip unchanged ones (see `_local_oid`)."""
        return self.sha256 if self.lfs else git_blob_oid(self.data)

    def path_info(self, path: str) -> dict:
        info = {"type": "file", "path": path, "size": len(self.data), "oid": self.blob_oid}
        if self.lfs:
            info["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return info


@dataclass(frozen=True)
class Commit:
    oid: str
    message: str
    files: dict  # path -> StoredFile
    created_at: str


@dataclass
class Repository:
    repo_id: str
    private: bool
    commits: list = field(default_factory=list)

    @property
    def owner(self) -> str:
        return self.repo_id.removeprefix("spaces/").split("/")[0]

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def commit_at(self, revision: str) -> Optional[Commit]:
        if revision == "main":
            return self.head
        for commit in self.commits:
            if len(revision) >= 7 and commit.oid.startswith(revision):
                return commit
        return None


@dataclass
class Fault:
    """An injected failure: the requests whose path matches `pattern` answer HTTP `status`, or, with `hang`, get no
    answer for that many seconds and then lose their connection. `remaining` counts down the requests still to fail
    (None: every one); `hits` counts those that failed."""

    pattern: str
    status: Optional[int] = None
    hang: Optional[float] = None
    remaining: Optional[int] = None
    hits: int = 0


class Hang(Exception):
    """Raised by `HubServer.handle` for a request that gets no answer: the handler holds it, then drops it."""

    def __init__(self, seconds: float, released: threading.Event):
        super().__init__(f"hang for {seconds} s")
        self.seconds, self.released = seconds, released


class HubError(Exception):
    """An error answer, with the headers `huggingface_hub.utils.hf_raise_for_status` turns into typed errors."""

    def __init__(self, status: int, message: str, code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubServer:
    """The stand-in Hub: `start()` it, point clients at `endpoint`, `stop()` it.

    Args:
        user (`str`): name of the one account; it owns the namespace `user/`.
        token (`str`, *optional*): that account's write token (random if not given).
        read_token (`str`, *optional*): a read-only token of the same account (random if not given).
    """

    def __init__(self, user: str = "tester", token: Optional[str] = None, read_token: Optional[str] = None):
        self.user = user
        self.token = token or "hf_write_" + secrets.token_hex(12)
        self.read_token = read_token or "hf_read_" + secrets.token_hex(12)
        self.requests: list = []  # (method, path) of every request, for assertions
        self._repos: dict = {}
        self._lfs_store: dict = {}  # sha256 -> bytes
        self._upload_signatures: dict = {}  # sha256 -> signature of the upload address handed out
        self._lock = threading.Lock()
        self._faults: list = []
        self._revoked: set = set()
        self._released = threading.Event()  # set to end every hang at once
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ----- life cycle -----
    def start(self) -> "HubServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True  # idle keep-alive connections must not hold up stop()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-stand-in", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # ----- what tests inspect -----
    def repo_exists(self, repo_id: str) -> bool:
        with self._lock:
            return repo_id in self._repos

    def repo_is_private(self, repo_id: str) -> bool:
        with self._lock:
            return self._repos[repo_id].private

    def repo_files(self, repo_id: str, revision: str = "main") -> dict:
        """Path -> content of every file of `repo_id` at `revision`."""
        with self._lock:
            commit = self._repos[repo_id].commit_at(revision)
            return {path: stored.data for path, stored in commit.files.items()}

    def lfs_paths(self, repo_id: str, revision: str = "main") -> set:
        """The paths of `repo_id` stored through LFS."""
        with self._lock:
            commit = self._repos[repo_id].commit_at(revision)
            return {path for path, stored in commit.files.items() if stored.lfs}

    def commit_messages(self, repo_id: str) -> list:
        """Commit messages of `repo_id`, oldest first (the first is the repository's creation)."""
        with self._lock:
            return [commit.message for commit in self._repos[repo_id].commits]

    # ----- injected failures -----
    def fail(self, status: int = 500, times: Optional[int] = None, on: str = "commit") -> Fault:
        """Answer the next `times` requests to `on` (every one if None) with HTTP `status`; returns the fault.

        `on` is a name of `FAULT_TARGETS` ("commit", "preupload", "lfs", "create", "whoami", "any") or a regular
        expression searched in the request's path.
        """
        return self._add_fault(Fault(FAULT_TARGETS.get(on, on), status=status, remaining=times))

    def hang(self, seconds: float, times: Optional[int] = None, on: str = "commit") -> Fault:
        """Give the next `times` requests to `on` (every one if None) no answer for `seconds`, then close their
        connection without one: a Hub that hangs. `clear_faults()` and `stop()` end the hangs at once."""
        return self._add_fault(Fault(FAULT_TARGETS.get(on, on), hang=seconds, remaining=times))

    def revoke(self, token: str) -> None:
        """Refuse `token` from now on with 401 "Invalid credentials", on every request, as the Hub answers a token
        that was revoked while a client still holds it."""
        with self._lock:
            self._revoked.add(token)

    def clear_faults(self) -> None:
        """Remove the injected failures (not the revocations) and end the hangs under way."""
        with self._lock:
            self._faults = []
            released, self._released = self._released, threading.Event()
        released.set()

    def _add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def _inject_fault(self, path: str) -> None:
        """Raise the first injected failure that `path` matches, if any."""
        with self._lock:
            for fault in self._faults:
                if fault.remaining != 0 and re.search(fault.pattern, path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    fault.hits += 1
                    if fault.hang is not None:
                        raise Hang(fault.hang, self._released)
                    raise HubError(fault.status, f"Injected failure: HTTP {fault.status} from the Hub stand-in")

    # ----- request handling (called by the handler threads) -----
    def caller_role(self, authorization: Optional[str]) -> Optional[str]:
        """ "write", "read" or None (anonymous); a token that is not ours, or was revoked, is refused as the Hub does."""
        if authorization is None:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token in self._revoked:
            raise HubError(401, INVALID_CREDENTIALS)
        if secrets.compare_digest(token, self.token):
            return "write"
        if secrets.compare_digest(token, self.read_token):
            return "read"
        raise HubError(401, INVALID_CREDENTIALS)

    def handle(self, method: str, url: str, headers, body: bytes) -> tuple:
        """Route one request; returns (status, headers, body)."""
        split = urlsplit(url)
        path, query = unquote(split.path), parse_qs(split.query)
        self.requests.append((method, split.path))
        self._inject_fault(path)
        role = self.caller_role(headers.get("Authorization"))
        for route_methods, pattern, handler in _ROUTES:
            match = re.fullmatch(pattern, path)
            if match and method in route_methods:
                groups = match.groupdict()
                if groups.pop("kind", None) == "spaces":
                    groups["repo"] = f"spaces/{groups['repo']}"
                with self._lock:
                    return handler(self, role=role, query=query, body=body, method=method, **groups)
        raise HubError(404, f"{method} {split.path} is not something this Hub stand-in implements")

    def _readable_repo(self, repo_id: str, role: Optional[str]) -> Repository:
        repo = self._repos.get(repo_id)
        if repo is None or (repo.private and role is None):
            # The Hub does not tell a missing repository from a private one.
            raise HubError(401 if role is None else 404, "Repository not found", code="RepoNotFound")
        return repo

    def _writable_repo(self, repo_id: str, role: Optional[str]) -> Repository:
        repo = self._readable_repo(repo_id, role)
        if role != "write":
            raise HubError(403, "You don't have the rights to write to this repository (a write token is needed)")
        return repo

    def _commit_at(self, repo: Repository, revision: str) -> Commit:
        commit = repo.commit_at(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    def _new_commit(self, repo: Repository, message: str, files: dict) -> Commit:
        parent = repo.commits[-1].oid if repo.commits else ""
        seed = f"{repo.repo_id}\n{parent}\n{message}\n{len(repo.commits)}\n{time.time_ns()}".encode()
        commit = Commit(
            oid=hashlib.sha1(seed).hexdigest(),
            message=message,
            files=files,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        )
        repo.commits.append(commit)
        return commit

    def _repo_url(self, repo_id: str) -> str:
        return f"{self.endpoint}/{repo_id}"


# ----- routes -----
def _json(payload, status: int = 200, headers: Optional[dict] = None) -> tuple:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode()


def _whoami(server: HubServer, role, **_) -> tuple:
    if role is None:
        raise HubError(401, INVALID_CREDENTIALS)
    token_info = {"displayName": f"{role} token", "role": role, "createdAt": "2024-01-01T00:00:00.000Z"}
    return _json(
        {
            "type": "user",
            "id": hashlib.sha1(server.user.encode()).hexdigest()[:24],
            "name": server.user,
            "fullname": server.user,
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": token_info},
        }
    )


def _create_repo(server: HubServer, role, body, **_) -> tuple:
    if role is None:
        raise HubError(401, INVALID_CREDENTIALS)
    payload = json.loads(body)
    repo_type = payload.get("type", "model")
    if repo_type not in ("model", "space"):
        raise HubError(400, "This Hub stand-in only hosts model repositories and Spaces")
    if repo_type == "space" and not payload.get("sdk"):
        raise HubError(400, "A Space needs an sdk (gradio, docker or static)")
    namespace = payload.get("organization") or server.user
    repo_id = ("spaces/" if repo_type == "space" else "") + f"{namespace}/{payload['name']}"
    if repo_id in server._repos:
        # The Hub answers 409 with the url: `create_repo(exist_ok=True)` reads it.
        return _json({"error": "You already created this model repo", "url": server._repo_url(repo_id)}, 409)
    if role != "write" or namespace != server.user:
        raise HubError(403, f"You don't have the rights to create a model under the namespace {namespace!r}")
    repo = Repository(repo_id=repo_id, private=payload.get("visibility") == "private")
    server._new_commit(repo, "initial commit", {".gitattributes": StoredFile(GITATTRIBUTES.encode(), lfs=False)})
    server._repos[repo_id] = repo
    return _json({"url": server._repo_url(repo_id), "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()})


def _delete_repo(server: HubServer, role, body, **_) -> tuple:
    payload = json.loads(body)
    repo_id = f"{payload.get('organization') or server.user}/{payload['name']}"
    server._writable_repo(repo_id, role)
    del server._repos[repo_id]
    return 200, {}, b""


def _validate_yaml(server: HubServer, body, **_) -> tuple:
    content = json.loads(body)["content"]
    match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.DOTALL)
    if match is not None:
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as error:
            return _json({"errors": [{"message": f"Invalid YAML: {error}"}]}, 400)
        if metadata is not None and not isinstance(metadata, dict):
            return _json({"errors": [{"message": "The metadata must be a YAML mapping"}]}, 400)
    return _json({"errors": [], "warnings": []})


def _repo_info(server: HubServer, role, repo, query, rev="main", **_) -> tuple:
    repository = server._readable_repo(repo, role)
    commit = server._commit_at(repository, rev)
    with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
    siblings = []
    for path, stored in sorted(commit.files.items()):
        sibling = {"rfilename": path}
        if with_blobs:
            sibling.update(size=len(stored.data), blobId=stored.blob_oid)
            if stored.lfs:
                sibling["lfs"] = {"size": len(stored.data), "sha256": stored.sha256, "pointerSize": len(stored.pointer)}
        siblings.append(sibling)
    return _json(
        {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": repository.owner,
            "sha": commit.oid,
            "lastModified": commit.created_at,
            "createdAt": repository.commits[0].created_at,
            "private": repository.private,
            "disabled": False,
            "gated": False,
            "tags": [],
            "siblings": siblings,
        }
    )


def _folders_of(files: dict) -> set:
    return {"/".join(path.split("/")[:depth]) for path in files for depth in range(1, path.count("/") + 1)}


def _folder_info(path: str) -> dict:
    return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}


def _tree(server: HubServer, role, repo, rev, query, subpath=None, **_) -> tuple:
    commit = server._commit_at(server._readable_repo(repo, role), rev)
    recursive = query.get("recursive", ["false"])[0].lower() == "true"
    prefix = f"{subpath.strip('/')}/" if subpath else ""
    folders = _folders_of(commit.files)
    if prefix and prefix[:-1] not in folders:
        raise HubError(404, f"{subpath} does not exist on {rev}", code="EntryNotFound")

    def listed(path: str) -> bool:
        return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

    entries = [_folder_info(path) for path in sorted(folders) if listed(path)]
    entries += [stored.path_info(path) for path, stored in sorted(commit.files.items()) if listed(path)]
    return _json(entries)


def _paths_info(server: HubServer, role, repo, rev, body, **_) -> tuple:
    commit = server._commit_at(server._readable_repo(repo, role), rev)
    form = parse_qs(body.decode())
    folders = _folders_of(commit.files)
    entries = []
    for path in form.get("paths", []):
        if path in commit.files:
            entries.append(commit.files[path].path_info(path))
        elif path in folders:
            entries.append(_folder_info(path))
    return _json(entries)


def _is_lfs(path: str, size: int, sample: bytes) -> bool:
    name = path.rsplit("/", 1)[-1]
    tracked = any(fnmatch(name, pattern) for pattern in LFS_TRACKED_PATTERNS)
    return tracked or size > LFS_SIZE_THRESHOLD or b"\0" in sample


def _preupload(server: HubServer, role, repo, rev, query, body, **_) -> tuple:
    if "create_pr" in query:
        raise HubError(400, "Pull requests are not implemented by this Hub stand-in")
    commit = server._commit_at(server._writable_repo(repo, role), rev)
    files = []
    for item in json.loads(body)["files"]:
        existing = commit.files.get(item["path"])
        lfs = _is_lfs(item["path"], item["size"], base64.b64decode(item["sample"]))
        files.append(
            {
                "path": item["path"],
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": False,
                "oid": existing.content_oid if existing is not None and existing.lfs == lfs else None,
            }
        )
    return _json({"files": files, "commitOid": commit.oid})


def _lfs_batch(server: HubServer, role, repo, body, **_) -> tuple:
    server._writable_repo(repo, role)
    request = json.loads(body)
    if request.get("operation") != "upload":
        raise HubError(400, "Only LFS uploads are implemented by this Hub stand-in")
    if "basic" not in request.get("transfers", ["basic"]):
        raise HubError(400, "Only the 'basic' LFS transfer is implemented by this Hub stand-in")
    objects = []
    for item in request["objects"]:
        oid, size = item["oid"], item["size"]
        entry = {"oid": oid, "size": size, "authenticated": True}
        if oid not in server._lfs_store:  # a stored object needs no upload: no "actions"
            signature = server._upload_signatures.setdefault(oid, secrets.token_urlsafe(16))
            entry["actions"] = {
                "upload": {"href": f"{server.endpoint}/lfs-upload/{oid}?signature={signature}", "header": {}},
                "verify": {"href": f"{server.endpoint}/{repo}.git/info/lfs/objects/verify", "header": {}},
            }
        objects.append(entry)
    return _json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})


def _lfs_upload(server: HubServer, oid, query, body, **_) -> tuple:
    expected = server._upload_signatures.get(oid)
    if expected is None or not secrets.compare_digest(query.get("signature", [""])[0], expected):
        raise HubError(403, "The upload signature is missing or wrong")
    if hashlib.sha256(body).hexdigest() != oid:
        raise HubError(400, "The uploaded content does not match its sha256")
    server._lfs_store[oid] = body
    return 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b""


def _lfs_verify(server: HubServer, role, repo, body, **_) -> tuple:
    server._writable_repo(repo, role)
    item = json.loads(body)
    stored = server._lfs_store.get(item["oid"])
    if stored is None or len(stored) != item["size"]:
        raise HubError(404, f"LFS object {item['oid']} of size {item['size']} was not uploaded")
    return _json({"success": True})


def _commit(server: HubServer, role, repo, rev, query, body, **_) -> tuple:
    if "create_pr" in query:
        raise HubError(400, "Pull requests are not implemented by this Hub stand-in")
    repository = server._writable_repo(repo, role)
    if rev != "main":
        raise HubError(400, "This Hub stand-in only commits to the 'main' branch")
    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    if not lines or lines[0].get("key") != "header":
        raise HubError(400, "A commit starts with a header line")
    header = lines[0]["value"]
    parent = header.get("parentCommit")
    if parent is not None and parent != repository.head.oid:
        raise HubError(412, "A commit has happened since. Please refresh and try again.")
    files = dict(repository.head.files)
    for line in lines[1:]:
        key, value = line["key"], line["value"]
        path = value["path"]
        if key == "file":
            files[path] = StoredFile(base64.b64decode(value["content"]), lfs=False)
        elif key == "lfsFile":
            data = server._lfs_store.get(value["oid"])
            if data is None:
                raise HubError(422, f"LFS object {value['oid']} for {path} was not uploaded")
            files[path] = StoredFile(data, lfs=True)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            files = {name: stored for name, stored in files.items() if not name.startswith(prefix)}
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")
    commit = server._new_commit(repository, header["summary"], files)
    return _json(
        {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{server._repo_url(repo)}/commit/{commit.oid}",
            "hookOutput": "",
            "pullRequestUrl": None,
        }
    )


def _resolve(server: HubServer, role, repo, rev, filename, method, **_) -> tuple:
    commit = server._commit_at(server._readable_repo(repo, role), rev)
    stored = commit.files.get(filename)
    if stored is None:
        raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
    headers = {
        "Content-Type": "application/octet-stream",
        "ETag": f'"{stored.blob_oid}"',
        "X-Repo-Commit": commit.oid,
    }
    if stored.lfs:
        headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(len(stored.data))})
    return 200, headers, stored.data


_ROUTES = (
    ({"GET"}, r"/api/whoami-v2", _whoami),
    ({"POST"}, r"/api/repos/create", _create_repo),
    ({"DELETE"}, r"/api/repos/delete", _delete_repo),
    ({"POST"}, r"/api/validate-yaml", _validate_yaml),
    ({"GET"}, rf"/api/{KIND}/{REPO}", _repo_info),
    ({"GET"}, rf"/api/{KIND}/{REPO}/revision/(?P<rev>[^/]+)", _repo_info),
    ({"GET"}, rf"/api/{KIND}/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<subpath>.+))?", _tree),
    ({"POST"}, rf"/api/{KIND}/{REPO}/paths-info/(?P<rev>[^/]+)", _paths_info),
    ({"POST"}, rf"/api/{KIND}/{REPO}/preupload/(?P<rev>[^/]+)", _preupload),
    ({"POST"}, rf"/api/{KIND}/{REPO}/commit/(?P<rev>[^/]+)", _commit),
    ({"POST"}, rf"/{REPO}\.git/info/lfs/objects/batch", _lfs_batch),
    ({"POST"}, rf"/{REPO}\.git/info/lfs/objects/verify", _lfs_verify),
    ({"PUT"}, r"/lfs-upload/(?P<oid>[0-9a-f]{64})", _lfs_upload),
    ({"GET", "HEAD"}, rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<filename>.+)", _resolve),
)


def _make_handler(server: HubServer) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client expects
        timeout = 60  # drop connections the client left idle

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            body = self._read_body()
            try:
                status, headers, payload = server.handle(self.command, self.path, self.headers, body)
            except Hang as hang:
                hang.released.wait(hang.seconds)
                self.close_connection = True  # no answer at all: the client sees the connection drop
                return
            except HubError as error:
                status, headers, payload = _json({"error": error.message}, error.status, error.headers)
                headers["X-Error-Message"] = error.message
                if error.code is not None:
                    headers["X-Error-Code"] = error.code
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format, *args) -> None:
            pass  # tests read `server.requests` instead of a log on stderr

    return Handler


def point_clients_at(server: HubServer, monkeypatch, hf_home: str) -> None:
    """Send every Hub client of this process, and of the subprocesses it starts, to `server`, with a fresh `hf_home`.

    Subprocesses follow the environment variables. This process needs more: `huggingface_hub`, `diffusers` and
    `datasets` read those variables into module constants when they are imported, and `huggingface_hub`'s module-level
    functions (`create_repo`, `upload_folder`, `model_info`, ...) are methods of one `HfApi` built at import time with
    the endpoint of that moment. Modules imported after this call read the patched environment.
    """
    endpoint = server.endpoint
    hub_cache = os.path.join(hf_home, "hub")
    token_path = os.path.join(hf_home, "token")
    environment = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": hf_home,
        # `huggingface_hub` uploads through Xet whenever `hf_xet` is installed; the stand-in speaks plain LFS only.
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    # A token, cache or offline switch from the surroundings must not leak in.
    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_OIDC_RESOURCE",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_ASSETS_CACHE",
        "HF_XET_CACHE",
        "HF_MODULES_CACHE",
        "HF_DATASETS_CACHE",
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HUGGINGFACE_CO_STAGING",
    ):
        monkeypatch.delenv(name, raising=False)

    host = urlsplit(endpoint).hostname
    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {host},
        "HF_HOME": hf_home,
        "HF_HUB_CACHE": hub_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": os.path.join(hf_home, "assets"),
        "HUGGINGFACE_ASSETS_CACHE": os.path.join(hf_home, "assets"),
        "HF_XET_CACHE": os.path.join(hf_home, "xet"),
        "HF_TOKEN_PATH": token_path,
        "HF_STORED_TOKENS_PATH": os.path.join(hf_home, "stored_tokens"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_OFFLINE": False,
    }.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(endpoint)})

    if "diffusers" in sys.modules:
        modules_cache = os.path.join(hf_home, "modules")
        for module in ("diffusers.utils.constants", "diffusers.utils", "diffusers.utils.dynamic_modules_utils"):
            if module in sys.modules:
                monkeypatch.setattr(sys.modules[module], "HF_MODULES_CACHE", modules_cache, raising=False)
    if "datasets" in sys.modules:
        from datasets import config

        monkeypatch.setattr(config, "HF_ENDPOINT", endpoint)
        monkeypatch.setattr(config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
        monkeypatch.setattr(config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(config, "HF_DATASETS_CACHE", Path(hf_home, "datasets"))
