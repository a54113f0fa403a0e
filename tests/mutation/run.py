"""The mutation check: break each core line of the diffusion maths (see `mutants.py`) and make sure a test fails.

    python tests/mutation/run.py              # every mutant; prints each verdict and the score
    python tests/mutation/run.py --ci         # the mutants marked in_ci, as the test suite runs them
    python tests/mutation/run.py --list       # what the mutants are

Each mutant is applied in its own temporary copy of the package (laid out as it installs: `hf_ddpm/`, with
`pipelines/` and `training/` inside it) and of the tests, never in the working tree, and its tests run there in a
fresh interpreter that imports that copy, one thread each, as many at a time as there are cores. An unmutated copy
must pass the same tests, or nothing is learned. Exit status 0 when
every mutant is killed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def run_tests(copy: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def apply(copy: Path, mutant: Mutant) -> None:
    """Writes the mutant into the copy."""
    path = copy / installed_path(mutant.path)
    text = path.read_text(encoding="utf-8")
    count = text.count(mutant.original)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name!r}: its line occurs {count} times in {mutant.path}; update mutants.py")
    path.write_text(text.replace(mutant.original, mutant.mutated), encoding="utf-8")


def run_in_copy(tests: tuple[str, ...], mutant: Mutant | None = None) -> tuple[int, float, str]:
    """Runs `tests` in a fresh copy of the package, with `mutant` applied; (pytest's exit status, seconds, output)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder)
        copy_tree(copy)
        if mutant is not None:
            apply(copy, mutant)
        result = run_tests(copy, tests)
    return result.returncode, time.perf_counter() - started, result.stdout[-3000:] + result.stderr[-3000:]


def check(mutants: tuple[Mutant, ...]) -> int:
    # One copy per run, so the runs can share the cores (each test process is held to one thread).
    all_tests = tuple(sorted({test for mutant in mutants for test in mutant.tests}))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        baseline = pool.submit(run_in_copy, all_tests)
        runs = [pool.submit(run_in_copy, mutant.tests, mutant) for mutant in mutants]
        status, _, output = baseline.result()
        if status != 0:
            print(output)
            raise SystemExit("the unmutated code fails the mutants' tests: fix that first")
        killed = 0
        for mutant, run in zip(mutants, runs):
            status, seconds, _ = run.result()
            # pytest exits 1 when a test failed; anything else (an error, no test run) proves nothing.
            verdict = "killed" if status == 1 else f"SURVIVED (pytest exit {status})"
            killed += status == 1
            print(f"{verdict:>28}  {mutant.name}  [{mutant.path}, {seconds:.0f} s]", flush=True)
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
