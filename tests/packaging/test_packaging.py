"""The distribution installs `pipelines/` and `training/` as `hf_ddpm.pipelines` and `hf_ddpm.training`, from the
same source files (no copies), in a regular (wheel) install as in the editable install the tests run from."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# The schedulers import without the UNet or the pipeline (the package's names load on first use), submodules are
# attributes of the package as they load, and each class is the same object by every path.
IMPORT_CHECK = (
    "import sys, hf_ddpm.schedulers; "
    "lazy = not {'hf_ddpm.models', 'hf_ddpm.pipelines'} & set(sys.modules); "
    "import hf_ddpm; unet = hf_ddpm.models.DDPMUNet2DModel; "
    "import hf_ddpm.training.train as train; "
    "print(lazy and unet is hf_ddpm.DDPMUNet2DModel and hf_ddpm.pipelines.DDPMCFGPipeline is hf_ddpm.DDPMCFGPipeline, "
    "train.__file__)"
)


def test_editable_install_imports_pipelines_and_training_from_their_folders():
    import hf_ddpm.pipelines.pipeline_ddpm_cfg as pipeline_module
    import hf_ddpm.training.train as train_module

    assert Path(pipeline_module.__file__) == ROOT / "pipelines" / "pipeline_ddpm_cfg.py"
    assert Path(train_module.__file__) == ROOT / "training" / "train.py"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("hf_ddpm-*.whl"))


def test_wheel_holds_each_source_file_once_under_hf_ddpm(wheel):
    names = [name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")]
    for path in [
        "hf_ddpm/pipelines/pipeline_ddpm_cfg.py",
        "hf_ddpm/training/train.py",
        "hf_ddpm/models/unet_2d.py",
        "hf_ddpm/schedulers/scheduling_ddim.py",
    ]:
        assert path in names
    assert all(name.startswith("hf_ddpm/") for name in names)
    basenames = [Path(name).name for name in names if Path(name).name != "__init__.py"]
    assert len(basenames) == len(set(basenames))


def test_regular_install_imports_pipelines_and_training(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK],
        cwd=tmp_path,  # not the checkout, so nothing resolves from its folders
        env={**os.environ, "PYTHONPATH": str(site)},
        check=True,
        capture_output=True,
        text=True,
    )
    checks, train_file = result.stdout.split()
    assert checks == "True"
    assert Path(train_file) == site / "hf_ddpm" / "training" / "train.py"
