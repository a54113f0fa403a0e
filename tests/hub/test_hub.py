import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import (
    HfApi,
    ModelCard,
    create_repo,
    hf_hub_download,
    login,
    model_info,
    snapshot_download,
    upload_folder,
    whoami,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from helpers import tiny_diffusers_unet
from hf_ddpm.hub import HubPusher, resolve_hub_token, write_model_card


def _write_files(folder, files: dict) -> None:
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


PIPELINE_FILES = {
    "model_index.json": b'{"_class_name": "DDPMPipeline"}',
    "unet/config.json": b'{"sample_size": 8}',
    "unet/diffusion_pytorch_model.safetensors": bytes(range(256)) * 8,
    "samples/grid.png": b"\x89PNG\r\n\x1a\n" + bytes(100),
}


# ----- the stand-in, through the real huggingface_hub client -----
def test_upload_folder_then_snapshot_download_round_trips_regular_and_lfs_files(hub_server, tmp_path):
    repo_id = create_repo("round-trip", token=hub_server.token).repo_id
    assert repo_id == f"{hub_server.user}/round-trip"
    _write_files(tmp_path / "src", PIPELINE_FILES)
    upload_folder(repo_id=repo_id, folder_path=tmp_path / "src", commit_message="add files", token=hub_server.token)
    assert hub_server.lfs_paths(repo_id) == {"unet/diffusion_pytorch_model.safetensors", "samples/grid.png"}

    local = snapshot_download(repo_id, cache_dir=tmp_path / "cache")
    for relative, content in PIPELINE_FILES.items():
        with open(os.path.join(local, relative), "rb") as file:
            assert file.read() == content
    assert hub_server.commit_messages(repo_id) == ["initial commit", "add files"]

    api = HfApi()
    top_level = {entry.path for entry in api.list_repo_tree(repo_id)}
    assert top_level == {".gitattributes", "model_index.json", "unet", "samples"}
    weights, unet = api.get_paths_info(repo_id, ["unet/diffusion_pytorch_model.safetensors", "unet"])
    assert weights.lfs.size == weights.size == 2048 and unet.path == "unet" and not hasattr(unet, "lfs")


def test_unchanged_upload_makes_no_commit_and_create_repo_accepts_an_existing_repo(hub_server, tmp_path):
    repo_id = create_repo("again", token=hub_server.token).repo_id
    assert create_repo(repo_id, token=hub_server.token, exist_ok=True).repo_id == repo_id
    with pytest.raises(HfHubHTTPError, match="409"):
        create_repo(repo_id, token=hub_server.token)
    _write_files(tmp_path / "src", PIPELINE_FILES)
    for _ in range(2):
        upload_folder(repo_id=repo_id, folder_path=tmp_path / "src", commit_message="same", token=hub_server.token)
    assert hub_server.commit_messages(repo_id) == ["initial commit", "same"]


def test_missing_files_revisions_and_repos_raise_the_typed_errors(hub_server, tmp_path):
    repo_id = create_repo("errors", token=hub_server.token).repo_id
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "absent.json", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        model_info(repo_id, revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        model_info(f"{hub_server.user}/never-created")


def test_whoami_knows_the_tokens_and_rejects_others(hub_server):
    assert whoami(token=hub_server.token)["name"] == hub_server.user
    assert whoami(token=hub_server.read_token)["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        whoami(token="hf_not_a_token")


def test_private_repo_is_invisible_without_a_token(hub_server, tmp_path):
    repo_id = create_repo("secret-model", token=hub_server.token, private=True).repo_id
    _write_files(tmp_path / "src", {"config.json": b"{}"})
    upload_folder(repo_id=repo_id, folder_path=tmp_path / "src", token=hub_server.token)
    assert hub_server.repo_is_private(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        model_info(repo_id, token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, "config.json", cache_dir=tmp_path / "anonymous", token=False)
    path = hf_hub_download(repo_id, "config.json", cache_dir=tmp_path / "owner", token=hub_server.read_token)
    assert open(path).read() == "{}"


def test_read_only_token_cannot_create_or_push(hub_server, tmp_path):
    with pytest.raises(HfHubHTTPError, match="403"):
        create_repo("not-mine", token=hub_server.read_token)
    repo_id = create_repo("read-only", token=hub_server.token).repo_id
    _write_files(tmp_path / "src", {"config.json": b"{}"})
    with pytest.raises(HfHubHTTPError, match="403"):
        upload_folder(repo_id=repo_id, folder_path=tmp_path / "src", token=hub_server.read_token)


def test_diffusers_pipeline_push_to_hub_then_from_pretrained(hub_server, tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline

    torch.manual_seed(0)
    unet = tiny_diffusers_unet()
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10))
    pipe.push_to_hub("tiny-ddpm", token=hub_server.token)
    repo_id = f"{hub_server.user}/tiny-ddpm"
    assert "unet/diffusion_pytorch_model.safetensors" in hub_server.lfs_paths(repo_id)

    loaded = DiffusionPipeline.from_pretrained(repo_id, cache_dir=tmp_path / "fresh-cache")
    assert isinstance(loaded, DDPMPipeline)
    for name, tensor in unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], tensor)
    assert loaded.scheduler.config.num_train_timesteps == 10


def test_subprocess_inherits_the_stand_in_through_the_environment(hub_server, tmp_path):
    _write_files(tmp_path / "src", {"weights.safetensors": bytes(1000), "config.json": b'{"a": 1}'})
    script = textwrap.dedent(
        f"""
        import sys
        from huggingface_hub import create_repo, snapshot_download, upload_folder
        repo_id = create_repo("from-child", token=sys.argv[1]).repo_id
        upload_folder(repo_id=repo_id, folder_path={str(tmp_path / "src")!r}, token=sys.argv[1])
        print(snapshot_download(repo_id))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, hub_server.token], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert hub_server.repo_files(f"{hub_server.user}/from-child")["config.json"] == b'{"a": 1}'
    assert result.stdout.strip().splitlines()[-1].startswith(os.environ["HF_HOME"])


# ----- resolve_hub_token -----
def test_resolve_hub_token_prefers_the_argument_then_hf_token_then_the_saved_login(hub_server, monkeypatch):
    assert resolve_hub_token(hub_server.token) == hub_server.token
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert resolve_hub_token(None) == hub_server.token
    monkeypatch.delenv("HF_TOKEN")
    login(token=hub_server.token)
    assert resolve_hub_token(None) == hub_server.token


def test_resolve_hub_token_without_any_token_names_every_way_to_give_one(hub_server):
    with pytest.raises(ValueError, match="--hub_token.*HF_TOKEN.*hf auth login"):
        resolve_hub_token(None)


def test_resolve_hub_token_rejects_a_wrong_token_without_showing_it(hub_server, monkeypatch):
    with pytest.raises(ValueError, match="--hub_token was rejected .* 401") as error:
        resolve_hub_token("hf_wrong_token_value")
    assert "hf_wrong_token_value" not in str(error.value)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_env_token")
    with pytest.raises(ValueError, match="HF_TOKEN environment variable was rejected"):
        resolve_hub_token(None)


def test_resolve_hub_token_rejects_a_read_only_token(hub_server):
    with pytest.raises(ValueError, match="read-only"):
        resolve_hub_token(hub_server.read_token)


# ----- HubPusher -----
def test_pusher_creates_the_repo_private_in_the_token_owners_namespace(hub_server):
    pusher = HubPusher("private-run", token=hub_server.token, private=True)
    assert pusher.repo_id == f"{hub_server.user}/private-run"
    assert hub_server.repo_is_private(pusher.repo_id)
    assert HubPusher(pusher.repo_id, token=hub_server.token).repo_id == pusher.repo_id  # exist_ok
    assert hub_server.token not in repr(pusher)


def test_background_push_uploads_the_folder_as_it_was_when_asked(hub_server, tmp_path):
    folder = tmp_path / "out"
    _write_files(folder, {"model_index.json": b"step 10", "unet/weights.safetensors": b"\x00weights 10"})
    pusher = HubPusher("snapshots", token=hub_server.token)
    future = pusher.push_async(str(folder), "step 10")
    # The next save overwrites the folder while the upload may still be running.
    _write_files(folder, {"model_index.json": b"step 20", "unet/weights.safetensors": b"\x00weights 20", "new": b"x"})
    commit = future.result()
    assert hub_server.repo_files(pusher.repo_id, revision=commit.oid) == {
        ".gitattributes": hub_server.repo_files(pusher.repo_id)[".gitattributes"],
        "model_index.json": b"step 10",
        "unet/weights.safetensors": b"\x00weights 10",
    }
    pusher.wait()


def test_checkpoint_state_and_logs_stay_local_unless_asked(hub_server, tmp_path):
    folder = tmp_path / "out"
    _write_files(
        folder,
        {
            "model_index.json": b"{}",
            "checkpoint-100/optimizer.bin": b"\x00state",
            "logs/train/events.out.tfevents.1": b"\x00log",
        },
    )
    pusher = HubPusher("filtered", token=hub_server.token)
    pusher.push_async(str(folder), "async")
    pusher.push_blocking(str(folder), "blocking")
    assert set(hub_server.repo_files(pusher.repo_id)) == {".gitattributes", "model_index.json"}

    everything = HubPusher("everything", token=hub_server.token, ignore_patterns=())
    everything.push_blocking(str(folder), "all")
    assert "checkpoint-100/optimizer.bin" in hub_server.repo_files(everything.repo_id)


def test_blocking_push_lands_after_the_background_pushes(hub_server, tmp_path):
    folder = tmp_path / "out"
    pusher = HubPusher("ordered", token=hub_server.token)
    for step in (1, 2, 3):
        _write_files(folder, {"step.txt": f"{step}".encode()})
        pusher.push_async(str(folder), f"step {step}")
    _write_files(folder, {"step.txt": b"final"})
    pusher.push_blocking(str(folder), "final")
    # The background pushes land in order; one still waiting when a newer one comes is dropped, and the blocking push
    # supersedes those left (tests/test_hub_faults.py pins down which).
    messages = hub_server.commit_messages(pusher.repo_id)
    assert messages[0] == "initial commit" and messages[-1] == "final"
    assert messages[1:-1] == sorted(messages[1:-1]) and set(messages[1:-1]) <= {"step 1", "step 2", "step 3"}
    assert hub_server.repo_files(pusher.repo_id)["step.txt"] == b"final"


def test_wait_reports_a_failed_background_push(hub_server, tmp_path):
    _write_files(tmp_path / "out", {"a.txt": b"a"})
    pusher = HubPusher("vanishing", token=hub_server.token)
    HfApi().delete_repo(pusher.repo_id, token=hub_server.token)
    assert not hub_server.repo_exists(pusher.repo_id)
    pusher.push_async(str(tmp_path / "out"), "lost")
    with pytest.raises(RuntimeError, match="1 of 1 background pushes .* failed"):
        pusher.wait()
    assert pusher.wait() == []


def test_pusher_refuses_a_namespace_the_token_cannot_write_to(hub_server):
    with pytest.raises(ValueError, match=r"'someone-else/model' \(--hub_model_id\).*403"):
        HubPusher("someone-else/model", token=hub_server.token)


def test_pushing_a_missing_folder_is_refused(hub_server, tmp_path):
    pusher = HubPusher("no-folder", token=hub_server.token)
    with pytest.raises(ValueError, match="not a directory"):
        pusher.push_async(str(tmp_path / "missing"), "x")


def test_token_is_never_printed_logged_or_written(hub_server, tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "out"
    _write_files(folder, PIPELINE_FILES)
    token = resolve_hub_token(hub_server.token)
    pusher = HubPusher("quiet", token=token)
    pusher.push_async(str(folder), "async")
    pusher.push_blocking(str(folder), "blocking")
    write_model_card(str(folder), repo_id=pusher.repo_id, training_args={"hub_token": token, "seed": 0})
    captured = capfd.readouterr()
    assert token not in captured.out + captured.err + caplog.text
    for root in (tmp_path, os.environ["HF_HOME"]):
        for directory, _, names in os.walk(root):
            for name in names:
                with open(os.path.join(directory, name), "rb") as file:
                    assert token.encode() not in file.read(), os.path.join(directory, name)


# ----- model card -----
def test_model_card_has_metadata_samples_usage_and_settings_but_no_secrets(hub_server, tmp_path):
    folder = tmp_path / "out"
    _write_files(folder, {"samples/grid.png": b"\x89PNG"})
    id2label = {0: "T - shirt / top", 1: "Trouser", 7: "Sneaker"}
    settings = {"learning_rate": 1e-4, "hub_token": "hf_secret", "resolution": 28, "report_to": "a|b"}
    write_model_card(
        str(folder),
        repo_id="tester/fashion-ddpm",
        dataset_name="fashion_mnist",
        training_args=settings,
        sample_grid_path=str(folder / "samples" / "grid.png"),
        id2label=id2label,
    )
    card = ModelCard.load(folder / "README.md")
    assert set(card.data.tags) == {"diffusers", "pixel-space-diffusion", "ddpm", "classifier-free-guidance", "hf-ddpm"}
    assert card.data.datasets == ["fashion_mnist"] and card.data.library_name == "diffusers"
    text = card.text
    assert "![Samples](samples/grid.png)" in text
    assert 'DiffusionPipeline.from_pretrained("tester/fashion-ddpm", trust_remote_code=True)' in text
    assert 'DDPMCFGPipeline.from_pretrained("tester/fashion-ddpm")' in text
    assert "pipe(class_labels=['T - shirt / top', 'Trouser'], guidance_scale=3.0, num_inference_steps=50)" in text
    assert "| 7 | Sneaker |" in text and "| `learning_rate` | 0.0001 |" in text and "a\\|b" in text
    assert "hf_secret" not in (folder / "README.md").read_text() and "hub_token" not in text

    # The Hub's metadata check accepts it.
    pusher = HubPusher("fashion-ddpm", token=hub_server.token)
    pusher.push_blocking(str(folder), "card")
    assert b"library_name: diffusers" in hub_server.repo_files(pusher.repo_id)["README.md"]


def test_model_card_of_an_unconditional_model_on_local_data(tmp_path):
    grid = tmp_path / "elsewhere" / "grid.png"
    _write_files(tmp_path, {"elsewhere/grid.png": b"\x89PNG", "out/model_index.json": b"{}"})
    write_model_card(str(tmp_path / "out"), dataset_name="digits", sample_grid_path=str(grid))
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.datasets is None and "classifier-free-guidance" not in card.data.tags
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert (tmp_path / "out" / "sample_grid.png").read_bytes() == b"\x89PNG"
    assert "![Samples](sample_grid.png)" in card.text and "pipe(batch_size=4, num_inference_steps=50)" in card.text
