"""The mutation check: break each core line of the diffusion maths (see `mutants.py`) and make sure a test fails.

    python tests/mutation/run.py              # every mutant; prints each verdict and the score
    python tests/mutation/run.py --ci         # the mutants marked in_ci, as the test suite runs them
    python tests/mutation/run.py --list       # what the mutants are

Each mutant is applied in its own temporary copy of the package (laid out as it installs: `hf_ddpm/`, with
`pipelines/` and `training/` inside it) and of the tests, never in the working tree, and its tests run there with
pytest, in a child process that imports that copy, one thread each, as many at a time as there are cores. The
children fork from this process once it has imported the libraries the tests use (diffusers alone takes as long to
import as a mutant's tests take to run) and forgotten the package and the tests themselves, so each imports its own
copy. A mutant is killed by the test that failed on it only if that test passes on an unmutated copy, or nothing is
learned. Exit status 0 when every mutant is killed.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import NamedTuple

# Before torch is imported: the children share the cores one thread each, and a thread pool does not survive a fork.
os.environ["OMP_NUM_THREADS"] = "1"

sys.path.insert(0, str(Path(__file__).parent))
from mutants import MUTANTS, Mutant  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[2]
# Where each source folder lands in the installed layout (pyproject's package-dir).
LAYOUT = {"hf_ddpm": "hf_ddpm", "pipelines": "hf_ddpm/pipelines", "training": "hf_ddpm/training", "tests": "tests"}
TIMEOUT_S = 600


def installed_path(path: str) -> str:
    top, _, rest = path.partition("/")
    return f"{LAYOUT[top]}/{rest}"


def copy_tree(destination: Path) -> None:
    for source, target in LAYOUT.items():
        shutil.copytree(REPOSITORY / source, destination / target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPOSITORY / "pyproject.toml", destination / "pyproject.toml")  # pytest's settings


def apply(copy: Path, mutant: Mutant) -> None:
    """Writes the mutant into the copy."""
    path = copy / installed_path(mutant.path)
    text = path.read_text(encoding="utf-8")
    count = text.count(mutant.original)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name!r}: its line occurs {count} times in {mutant.path}; update mutants.py")
    path.write_text(text.replace(mutant.original, mutant.mutated), encoding="utf-8")


def preload(tests: tuple[str, ...]) -> None:
    """Imports the test modules of `tests` from the repository, and so every library they use, then forgets the
    package and the tests: a child forked afterwards imports them again, from its own copy, and nothing else."""
    path = list(sys.path)
    sys.path.insert(0, str(REPOSITORY / "tests"))
    for module in ["conftest", *sorted({Path(test.split("::")[0]).stem for test in tests})]:
        importlib.import_module(module)  # the conftest puts every area of the tests on the path
    sys.path[:] = path
    ours = tuple(str(REPOSITORY / folder) + os.sep for folder in LAYOUT)
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] == "hf_ddpm" or (getattr(module, "__file__", None) or "").startswith(ours):
            del sys.modules[name]


class Run(NamedTuple):
    status: int  # pytest's exit status: 1 when a test failed
    seconds: float
    failed: list[str]  # the node ids of the tests that failed
    output: str  # the end of pytest's output


class FailedTests:
    """A pytest plugin that keeps the node ids of the tests that fail."""

    def __init__(self):
        self.node_ids = []

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.node_ids.append(report.nodeid)


def start_run(copy: Path, tests: tuple[str, ...]) -> int:
    """Forks a child that runs `tests` with pytest in `copy`, writing its output to `copy/pytest.log` and the tests
    that failed to `copy/failed.txt`; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    status = 3  # pytest's "internal error", should anything here fail
    try:
        signal.alarm(TIMEOUT_S)  # a hung run ends as not killed
        log = os.open(copy / "pytest.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.chdir(copy)
        sys.path.insert(0, str(copy))
        import pytest
        import torch

        torch.set_num_threads(1)
        failed = FailedTests()
        status = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests], plugins=[failed]))
        (copy / "failed.txt").write_text("".join(f"{node_id}\n" for node_id in failed.node_ids), encoding="utf-8")
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def run_all(runs: list[tuple[tuple[str, ...], Mutant | None]]) -> list[Run]:
    """Runs each (tests, mutant or None) in a fresh copy of the package with the mutant applied, as many at a time as
    there are cores; the `Run` of each, in order."""
    results, running, waiting = [None] * len(runs), {}, list(enumerate(runs))
    while waiting or running:
        while waiting and len(running) < (os.cpu_count() or 1):
            index, (tests, mutant) = waiting.pop(0)
            copy = Path(tempfile.mkdtemp(prefix="mutant-"))
            copy_tree(copy)
            if mutant is not None:
                apply(copy, mutant)
            running[start_run(copy, tests)] = (index, copy, time.perf_counter())
        pid, wait_status = os.wait()
        index, copy, started = running.pop(pid)
        failed = copy / "failed.txt"
        output = (copy / "pytest.log").read_text(encoding="utf-8", errors="replace")[-6000:]
        failed = failed.read_text(encoding="utf-8").split() if failed.exists() else []
        results[index] = Run(os.waitstatus_to_exitcode(wait_status), time.perf_counter() - started, failed, output)
        shutil.rmtree(copy, ignore_errors=True)
    return results


def check(mutants: tuple[Mutant, ...]) -> int:
    preload(tuple(test for mutant in mutants for test in mutant.tests))
    # What the libraries allocated is kept for good: frozen, it is left out of every garbage collection of the
    # children, which otherwise walk it again and again (pytest alone collects several times as it ends).
    gc.freeze()
    runs = run_all([(mutant.tests, mutant) for mutant in mutants])
    # The tests that killed a mutant, on the unmutated code: each must pass there, or its failure proved nothing.
    killers = tuple(sorted({node_id for run in runs if run.status == 1 for node_id in run.failed}))
    if killers:
        [baseline] = run_all([(killers, None)])
        if baseline.status != 0:
            print(baseline.output)
            raise SystemExit(f"the unmutated code fails {baseline.failed}: fix that first")
    killed = 0
    for mutant, run in zip(mutants, runs):
        # pytest exits 1 when a test failed; anything else (an error, no test run) proves nothing.
        verdict = "killed" if run.status == 1 else f"SURVIVED (pytest exit {run.status})"
        killed += run.status == 1
        print(f"{verdict:>28}  {mutant.name}  [{mutant.path}, {run.seconds:.0f} s]", flush=True)
    print(f"mutation score: {killed}/{len(mutants)} mutants killed")
    return 0 if killed == len(mutants) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ci", action="store_true", help="only the mutants marked in_ci")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args()
    mutants = tuple(mutant for mutant in MUTANTS if mutant.in_ci or not args.ci)
    if args.list:
        for mutant in mutants:
            print(f"{mutant.name}: {mutant.path}: {mutant.original!r} -> {mutant.mutated!r}")
        return 0
    return check(mutants)


if __name__ == "__main__":
    sys.exit(main())
