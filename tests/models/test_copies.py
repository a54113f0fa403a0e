"""Code copied between self-contained files (each ships alone beside a saved model) stays equal to its original: a
`# Copied from module.Name` line above a definition names the definition it must repeat word for word."""

import importlib
import inspect
import re
from pathlib import Path

import pytest

import hf_ddpm

PACKAGE = Path(hf_ddpm.__file__).parent
COPY_MARK = re.compile(r"^( *)# Copied from (hf_ddpm\.[\w.]+)\n", re.MULTILINE)


def copies() -> list[tuple[Path, str, str]]:
    """(file, original's dotted name, the copy's source) for every mark in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for mark in COPY_MARK.finditer(text):
            found.append((path, mark.group(2), _definition_after(text, mark.end(), mark.group(1))))
    return found


def _definition_after(text: str, start: int, indent: str) -> str:
    """The definition (decorators included) that starts at `start`, up to the next line as little indented."""
    lines = text[start:].splitlines(keepends=True)
    body = [lines[0]]
    for line in lines[1:]:
        if line.strip() and not line.startswith(indent + " ") and not line.startswith(indent + ")"):
            if not (line.startswith(indent + "def ") and body[-1].lstrip().startswith("@")):
                break
        body.append(line)
    return "".join(body).rstrip()


def original_source(dotted: str) -> str:
    """The source (decorators included) of `dotted`: the longest prefix that imports as a module, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)
        return inspect.getsource(obj).rstrip()
    raise ValueError(f"{dotted} names no importable module")


@pytest.mark.parametrize("path, dotted, copy", copies(), ids=lambda value: getattr(value, "name", str(value))[:60])
def test_each_copy_repeats_its_original(path, dotted, copy):
    assert _dedent(copy) == _dedent(original_source(dotted)), f"{path.name} has drifted from {dotted}: copy it again"


def test_the_copies_are_found():
    assert any(dotted.endswith("DDPMUNet2DModel._timesteps_for_batch") for _, dotted, _ in copies())


def _dedent(source: str) -> str:
    lines = [line for line in source.splitlines() if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    return "\n".join(line[indent:] for line in lines)
