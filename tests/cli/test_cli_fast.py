"""`hf-ddpm --help` and a usage error answer at once: building the parsers imports nothing heavy."""

import subprocess
import sys

HEAVY = ("torch", "diffusers", "diffusers.pipelines", "transformers", "gradio")
PROBE = f"""
import sys
from hf_ddpm.cli import build_parser
parser = build_parser()
for argv in (["sample", "model", "--steps", "3"], ["evaluate", "model", "--dataset", "digits"]):
    parser.parse_args(argv)
print(",".join(name for name in {HEAVY!r} if name in sys.modules))
"""


def test_building_and_parsing_the_command_line_imports_no_heavy_library():
    loaded = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def test_help_and_a_usage_error_answer_without_loading_torch():
    help_text = subprocess.run([sys.executable, "-m", "hf_ddpm", "--help"], capture_output=True, text=True, check=True)
    assert "evaluate" in help_text.stdout and "sample" in help_text.stdout
    error = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hf_ddpm", "sample"], capture_output=True, text=True
    )
    assert error.returncode == 2 and "the following arguments are required: model" in error.stderr
    imported = {line.split("|")[-1].strip() for line in error.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY)
