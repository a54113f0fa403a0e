"""Saved once, loadable everywhere: the folder `DDPMCFGPipeline.save_pretrained` writes loads with the installed
classes (no flags) and, with the code files it carries, where hf_ddpm cannot be imported at all; push_to_hub uploads
exactly that folder."""

import inspect
import json
import os
import textwrap

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler as DiffusersDDIMScheduler, DiffusionPipeline
from huggingface_hub import upload_file

from hf_ddpm.models.unet_2d import DDPMUNet2DModel
from hf_ddpm.pipelines import DDPMCFGImg2ImgPipeline, DDPMCFGInpaintPipeline, DDPMCFGPipeline
from hf_ddpm.schedulers.scheduling_ddim import DDIMScheduler
from without_hf_ddpm import loads_without_hf_ddpm

LABELS = {0: "T-shirt", 1: "Sneaker", 2: "Bag"}
CALL = dict(class_labels=["Sneaker", "bag"], batch_size=2, guidance_scale=3.0, num_inference_steps=4, output_type="np")


def tiny_pipeline(scheduler=None):
    torch.manual_seed(0)
    unet = DDPMUNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(False, True),
        num_class_embeds=3,
        norm_num_groups=4,
    )
    pipe = DDPMCFGPipeline(unet, scheduler or DDIMScheduler(num_train_timesteps=20), id2label=LABELS)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe):
    return pipe(**CALL, generator=[torch.Generator().manual_seed(i) for i in range(4)]).images


def read_index(folder):
    with open(os.path.join(folder, "model_index.json"), encoding="utf-8") as index_file:
        return json.load(index_file)


def folder_files(folder):
    return sorted(os.path.relpath(os.path.join(root, f), folder) for root, _, files in os.walk(folder) for f in files)


def source_text(cls):
    with open(inspect.getsourcefile(cls), encoding="utf-8") as source:
        return source.read()


def test_saved_folder_has_the_custom_pipeline_and_component_layout(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path)
    index = read_index(tmp_path)
    assert index["_class_name"] == ["pipeline_ddpm_cfg", "DDPMCFGPipeline"]
    assert index["unet"] == ["unet_2d", "DDPMUNet2DModel"]
    assert index["scheduler"] == ["scheduling_ddim", "DDIMScheduler"]
    assert index["id2label"] == {"0": "T-shirt", "1": "Sneaker", "2": "Bag"} and index["null_class_id"] == 3
    assert index["classifier"] == [None, None]  # diffusers' mark of an optional component left out
    assert folder_files(tmp_path) == [
        "classifier_guidance.py",
        "model_index.json",
        "pipeline_ddpm_cfg.py",
        "pipeline_ddpm_cfg_img2img.py",
        "pipeline_ddpm_cfg_inpaint.py",
        "scheduler/scheduler_config.json",
        "scheduler/scheduling_ddim.py",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/unet_2d.py",
    ]
    for path, cls in [
        ("pipeline_ddpm_cfg.py", DDPMCFGPipeline),
        ("pipeline_ddpm_cfg_img2img.py", DDPMCFGImg2ImgPipeline),
        ("pipeline_ddpm_cfg_inpaint.py", DDPMCFGInpaintPipeline),
        ("unet/unet_2d.py", DDPMUNet2DModel),
        ("scheduler/scheduling_ddim.py", DDIMScheduler),
    ]:
        assert (tmp_path / path).read_text(encoding="utf-8") == source_text(cls)


def test_diffusers_scheduler_is_saved_as_a_diffusers_reference(tmp_path):
    tiny_pipeline(DiffusersDDIMScheduler(num_train_timesteps=20)).save_pretrained(tmp_path)
    assert read_index(tmp_path)["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert not list((tmp_path / "scheduler").glob("*.py"))


@pytest.mark.parametrize("scheduler", [DDIMScheduler, DiffusersDDIMScheduler])
def test_ddpmcfgpipeline_loads_the_folder_with_installed_classes_and_no_flags(tmp_path, scheduler):
    pipe = tiny_pipeline(scheduler(num_train_timesteps=20))
    pipe.save_pretrained(tmp_path)
    # The copies in the folder must not run: DDPMCFGPipeline.from_pretrained takes hf_ddpm's own classes.
    for code_file in tmp_path.rglob("*.py"):
        code_file.write_text("raise RuntimeError('the copy in the folder was executed')\n")
    loaded = DDPMCFGPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is DDPMCFGPipeline
    assert type(loaded.unet) is DDPMUNet2DModel and type(loaded.scheduler) is scheduler
    assert loaded.config.id2label == LABELS and loaded.config.null_class_id == 3
    np.testing.assert_array_equal(sample(loaded), sample(pipe))


# Runs where `import hf_ddpm` fails: loads each folder with DiffusionPipeline (trust_remote_code), samples, and saves
# the loaded pipeline again.
LOAD_WITHOUT_HF_DDPM = """
import json, sys
import numpy as np
import torch
from diffusers import DiffusionPipeline
from huggingface_hub import upload_file

try:
    import hf_ddpm
    raise SystemExit("hf_ddpm should not be importable here")
except ImportError:
    pass
report = {}
for folder in sys.argv[1:]:
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(**CALL, generator=[torch.Generator().manual_seed(i) for i in range(4)]).images
    np.save(folder + ".npy", images)
    pipe.save_pretrained(folder + "_resaved")
    report[folder] = [type(component).__module__ for component in (pipe, pipe.unet, pipe.scheduler)]
print(json.dumps(report))
"""


def save_ours_and_theirs(tmp_path):
    """Two folders, one with our DDIM and one with diffusers'; the script's arguments, and `(theirs, folders)`."""
    ours, theirs = tiny_pipeline(), tiny_pipeline(DiffusersDDIMScheduler(num_train_timesteps=20))
    folders = {str(tmp_path / "ours_scheduler"): ours, str(tmp_path / "diffusers_scheduler"): theirs}
    for folder, pipe in folders.items():
        pipe.save_pretrained(folder)
    return list(folders), (theirs, folders)


@pytest.mark.slow
@loads_without_hf_ddpm(f"CALL = {CALL!r}\n" + textwrap.dedent(LOAD_WITHOUT_HF_DDPM), save_ours_and_theirs)
def test_diffusion_pipeline_loads_the_folder_where_hf_ddpm_is_not_importable(loaded_without_hf_ddpm):
    run = loaded_without_hf_ddpm
    theirs, folders = run.prepared
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])

    for folder, pipe in folders.items():
        pipeline_module, unet_module, scheduler_module = report[folder]
        assert pipeline_module.startswith("diffusers_modules.") and unet_module.startswith("diffusers_modules.")
        expected_scheduler = "diffusers." if pipe is theirs else "diffusers_modules."
        assert scheduler_module.startswith(expected_scheduler)
        np.testing.assert_array_equal(np.load(folder + ".npy"), sample(pipe))
        # Saved again from the copies, the folder is the same.
        assert read_index(folder + "_resaved") == read_index(folder)
        assert folder_files(folder + "_resaved") == folder_files(folder)


def test_push_to_hub_uploads_the_saved_folder_and_it_loads_back_by_repo_id(hub_server, tmp_path):
    pipe = tiny_pipeline()
    repo_id = f"{hub_server.user}/tiny-cfg"
    pipe.push_to_hub(repo_id, token=hub_server.token)
    pipe.save_pretrained(tmp_path)
    uploaded = hub_server.repo_files(repo_id)
    saved = {path: (tmp_path / path).read_bytes() for path in folder_files(tmp_path)}
    assert {path: uploaded[path] for path in saved} == saved
    assert set(uploaded) - set(saved) <= {"README.md", ".gitattributes"}

    # Files of the repository that are not the pipeline's (say, training state) are not downloaded.
    upload_file(
        path_or_fileobj=b"state", path_in_repo="checkpoint-10/optimizer.bin", repo_id=repo_id, token=hub_server.token
    )
    downloaded = DDPMCFGPipeline.download(repo_id, token=hub_server.read_token)
    assert folder_files(downloaded) == sorted(saved)

    by_repo_id = DDPMCFGPipeline.from_pretrained(repo_id, token=hub_server.read_token)
    by_repo_id.set_progress_bar_config(disable=True)
    assert type(by_repo_id) is DDPMCFGPipeline and type(by_repo_id.unet) is DDPMUNet2DModel
    np.testing.assert_array_equal(sample(by_repo_id), sample(pipe))
    remote_code = DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True, token=hub_server.read_token)
    remote_code.set_progress_bar_config(disable=True)
    assert type(remote_code).__module__.startswith("diffusers_modules.")
    np.testing.assert_array_equal(sample(remote_code), sample(pipe))


def test_save_pretrained_with_push_to_hub_uploads_the_same_folder(hub_server, tmp_path):
    pipe = tiny_pipeline()
    repo_id = f"{hub_server.user}/pushed-on-save"
    pipe.save_pretrained(tmp_path, push_to_hub=True, repo_id=repo_id, token=hub_server.token)
    uploaded = hub_server.repo_files(repo_id)
    for path in folder_files(tmp_path):
        assert uploaded[path] == (tmp_path / path).read_bytes()


def test_save_pretrained_with_push_to_hub_uploads_its_model_card_and_nothing_else_of_the_folder(hub_server, tmp_path):
    (tmp_path / "README.md").write_text("# My digits model\n")
    (tmp_path / "notes.txt").write_text("not part of the pipeline")
    tiny_pipeline().save_pretrained(
        tmp_path,
        push_to_hub=True,
        repo_id=f"{hub_server.user}/carded",
        token=hub_server.token,
        commit_message="First upload",
    )
    uploaded = hub_server.repo_files(f"{hub_server.user}/carded")
    expected = [path for path in folder_files(tmp_path) if path != "notes.txt"]
    assert sorted(set(uploaded) - {".gitattributes"}) == expected
    assert uploaded["README.md"] == b"# My digits model\n"
    assert "unet/unet_2d.py" in uploaded and "pipeline_ddpm_cfg.py" in uploaded
    assert hub_server.commit_messages(f"{hub_server.user}/carded")[-1] == "First upload"
