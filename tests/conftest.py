import gc
import os
import sys

# Collecting the tests only imports (torch, diffusers, gradio, the test modules): no garbage collection until it is
# done, then one (`pytest_collection_finish`), instead of one after another over an ever larger heap.
gc.disable()

# The tests live in folders by area (schedulers, models, pipelines, data, training, evaluation, hub, app, cli), with
# the shared helpers and the Hub stand-in under fixtures/. Test modules import builders from each other by module name
# (`from test_evaluation import tiny_pipeline`), whatever folder they are in: every area is on the import path.
TESTS = os.path.dirname(os.path.abspath(__file__))
for _area in sorted(os.listdir(TESTS), reverse=True):
    _path = os.path.join(TESTS, _area)
    if os.path.isdir(_path) and not _area.startswith(("_", ".")) and _path not in sys.path:
        sys.path.insert(0, _path)

# The test models are tiny: per-op overhead dominates, and a second torch thread only adds synchronisation (and
# contention with the subprocesses some tests start). One thread each, also for those subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import huggingface_hub  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hub_server import HubServer, point_clients_at  # noqa: E402
from without_hf_ddpm import ProcessWithoutHfDdpm  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_finish(session):
    """What the session imported stays until it ends. Frozen, it is left out of the garbage collections that the
    tests' own allocations set off, which would otherwise walk all of it again each time."""
    gc.enable()
    gc.collect()  # the imports' garbage goes first: only what stays is frozen
    gc.freeze()


@pytest.fixture
def hub_server(monkeypatch, tmp_path_factory):
    """A loopback stand-in for the Hugging Face Hub (tests/hub_server.py), for one test.

    Every Hub client of this process, and of subprocesses started with the inherited environment, talks to it:
    HF_ENDPOINT points at it, HF_HOME is a fresh folder (no saved login, empty caches), HF_TOKEN is unset and
    HF_HUB_DISABLE_XET=1 (huggingface_hub would otherwise upload through Xet, which the stand-in does not speak).
    Authenticate as `hub_server.user` with `hub_server.token` (write) or `hub_server.read_token` (read-only); inspect
    what arrived with `repo_files(repo_id)`, `lfs_paths(repo_id)`, `commit_messages(repo_id)`, `repo_is_private`.
    """
    with HubServer() as server:
        point_clients_at(server, monkeypatch, str(tmp_path_factory.mktemp("hf_home")))
        yield server
        huggingface_hub.close_session()  # pooled keep-alive connections to this server end with it


@pytest.fixture(scope="session")
def process_without_hf_ddpm(request, tmp_path_factory):
    """The one process, shared by the tests selected in this session, where their scripts run without hf_ddpm."""
    selected = {getattr(item, "originalname", item.name) for item in request.session.items}
    return ProcessWithoutHfDdpm(tmp_path_factory.mktemp("without_hf_ddpm"), selected)


@pytest.fixture
def loaded_without_hf_ddpm(request, process_without_hf_ddpm):
    """What the script that this test registered with `without_hf_ddpm.loads_without_hf_ddpm` did where hf_ddpm
    cannot be imported (`Loaded`: its folder, what `prepare` returned, exit status, stdout and stderr)."""
    return process_without_hf_ddpm.result(request.node.originalname)
