"""The training console shows the run's progress, its own lines and every warning; the libraries' INFO chatter goes to
the log file only, unless --verbose."""

import logging
import os
import subprocess
import sys

import pytest

from helpers import tiny_flags
from hf_ddpm.training.launch import ConsoleFilter

CHECKPOINT_CHATTER = "accelerate.checkpointing"


@pytest.mark.slow
def test_library_info_lines_go_to_the_log_file_and_not_to_the_console(tmp_path):
    output_dir = tmp_path / "run"
    flags = tiny_flags(output_dir, "--max_train_steps", "2", "--checkpointing_steps", "2")
    done = subprocess.run(
        [sys.executable, "-m", "hf_ddpm.training.train", *flags],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = done.stdout + done.stderr
    with open(output_dir / "logs" / "train.log", encoding="utf-8") as file:
        log = file.read()
    assert CHECKPOINT_CHATTER in log and "Saved the pipeline" in log
    assert CHECKPOINT_CHATTER not in console
    assert "Saved the pipeline" in console  # the run's own lines stay


@pytest.mark.parametrize("verbose", [False, True])
def test_the_console_keeps_the_runs_lines_and_warnings_and_library_info_only_when_verbose(verbose):
    console = ConsoleFilter(verbose)

    def shown(name, level):
        return console.filter(logging.LogRecord(name, level, __file__, 1, "a line", None, None))

    assert shown("__main__", logging.INFO) and shown("hf_ddpm.training.train", logging.INFO)
    assert shown("accelerate.checkpointing", logging.WARNING)
    assert shown("accelerate.checkpointing", logging.INFO) is verbose
