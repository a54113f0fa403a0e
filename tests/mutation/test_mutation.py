"""The mutation check in the suite: every selected mutant of the diffusion maths is killed by the tests
(`tests/mutation/run.py --ci`; the whole list with `python tests/mutation/run.py`)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

RUN = Path(__file__).parent / "run.py"


def test_every_selected_mutant_of_the_diffusion_maths_is_killed():
    result = subprocess.run([sys.executable, str(RUN), "--ci"], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SURVIVED" not in result.stdout and "mutation score: 9/9 mutants killed" in result.stdout
