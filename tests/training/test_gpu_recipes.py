"""The GPU recipes of docs/gpu-recipes.md keep working: each command's first steps run on the CPU, with every flag of
the command kept but the scale (a tiny UNet, small images, two steps) and the data (a small local dataset of the
same shape and columns, since the Hub cannot be reached in tests)."""

import os
import re
import shlex

import datasets
import numpy as np
import PIL.Image
import pytest

from hf_ddpm.pipelines import DDPMCFGPipeline
from test_data import CIFAR_FEATURES
from test_idx import write_folder
from test_train import train

pytestmark = [pytest.mark.slow]

RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "gpu-recipes.md")
TRAINING_COMMAND = "accelerate launch training/train.py"
# The flags a test run replaces: how big and how long (the data is replaced too, by `local_dataset`).
SCALE = {
    "--resolution",
    "--model_config",
    "--train_batch_size",
    "--num_epochs",
    "--max_train_steps",
    "--mixed_precision",
    "--eval_steps",
    "--eval_num_samples",
    "--checkpointing_steps",
    "--output_dir",
    "--lr_warmup_steps",
    "--dataset_name",
}


def recipe_commands() -> dict[str, list[str]]:
    """The training commands of the page, by the dataset they train on, as argument lists."""
    with open(RECIPES, encoding="utf-8") as file:
        blocks = re.findall(r"```bash\n(.*?)```", file.read(), flags=re.DOTALL)
    commands = {}
    for block in blocks:
        words = shlex.split(block.replace("\\\n", " "))
        if " ".join(words[:3]) == TRAINING_COMMAND:
            flags = words[3:]
            commands[flags[flags.index("--dataset_name") + 1]] = flags
    return commands


def without_scale(flags: list[str]) -> list[str]:
    kept, skipping = [], False
    for word in flags:
        if word.startswith("--"):
            skipping = word in SCALE
        if not skipping:
            kept.append(word)
    return kept


def cifar_like(folder: str) -> str:
    """Labelled 32x32 RGB images in `img`/`label` columns with train and test splits, as the Hub's cifar10."""
    rng = np.random.default_rng(0)
    splits = {}
    for split, count in [("train", 40), ("test", 40)]:
        images = [PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]
        splits[split] = datasets.Dataset.from_dict(
            {"img": images, "label": [i % 10 for i in range(count)]}, CIFAR_FEATURES
        )
    datasets.DatasetDict(splits).save_to_disk(folder)
    return folder


def test_the_page_has_a_command_for_each_dataset():
    assert set(recipe_commands()) == {"fashion_mnist", "cifar10"}


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10"])
@pytest.mark.filterwarnings("ignore:Fréchet distance on")
def test_a_recipe_runs_its_first_steps_on_the_cpu(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DDPM_CACHE", str(tmp_path / "cache"))
    flags = recipe_commands()[dataset]
    if dataset == "fashion_mnist":
        write_folder(str(tmp_path / "data"), train_count=40, test_count=40, side=28)
        local, resolution = str(tmp_path / "data"), "28"
    else:
        local, resolution = cifar_like(str(tmp_path / "data")), "32"
    output_dir = tmp_path / "run"
    train(
        without_scale(flags)
        + [
            "--dataset_name",
            local,
            "--resolution",
            resolution,
            "--model_config",
            "tiny",
            "--train_batch_size",
            "4",
            "--max_train_steps",
            "2",
            "--lr_warmup_steps",
            "1",
            "--eval_steps",
            "2",
            "--eval_num_samples",
            "10",
            "--checkpointing_steps",
            "2",
            "--output_dir",
            str(output_dir),
            "--num_inference_steps",
            "2",
            "--save_images_steps",
            "1000",
            "--report_to",
            "none",
        ]
    )
    pipe = DDPMCFGPipeline.from_pretrained(output_dir)
    assert pipe.config.null_class_id == 10 and pipe.unet.config.sample_size == int(resolution)
    assert os.path.isfile(output_dir / "evaluation" / "metrics.json")
