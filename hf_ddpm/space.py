"""A Hugging Face Space that serves a model's web demo: its `app.py` (the app of `hf-ddpm serve`), `requirements.txt`
and README (the Space's settings in YAML: `sdk: gradio`, `app_file: app.py`, the model linked)."""

import os
import tempfile
from pathlib import Path

import gradio
from huggingface_hub import SpaceCard, SpaceCardData, constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

from hf_ddpm.hub import HubPusher, resolve_hub_token

APP_TEMPLATE = '''"""The web demo of {model_repo}, made with `hf-ddpm space`."""

from hf_ddpm.app import build_demo, launch

demo = build_demo({model_repo!r})

if __name__ == "__main__":
    launch(demo, host="0.0.0.0", port=7860)
'''


def default_requirement() -> str:
    from importlib.metadata import version

    return f"hf-ddpm[app]=={version('hf-ddpm')}"


def write_space(
    folder: str | os.PathLike, model_repo: str, space_id: str | None = None, requirement: str | None = None
) -> Path:
    """
    Writes a Space's files for `model_repo` into `folder` (created if missing) and returns it.

    Args:
        folder (`str` or `os.PathLike`): where `app.py`, `requirements.txt` and `README.md` are written.
        model_repo (`str`): the Hub id of the model the Space serves (it downloads it when it starts).
        space_id (`str`, *optional*): the Space's id, for its title (default: the model's name).
        requirement (`str`, *optional*): how the Space installs hf-ddpm (default: this version, with its `app` extra).

    Raises:
        `ValueError`: `model_repo` is not a Hub repository id.
    """
    check_repo_id("MODEL_REPO", model_repo)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(APP_TEMPLATE.format(model_repo=model_repo))
    (folder / "requirements.txt").write_text(f"{requirement or default_requirement()}\n")
    title = (space_id or model_repo).split("/")[-1]
    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=gradio.__version__,
        app_file="app.py",
        models=[model_repo],
        tags=["hf-ddpm", "diffusers", "pixel-space-diffusion"],
    )
    model_url = f"{constants.ENDPOINT}/{model_repo}"
    content = (
        f"---\n{card_data.to_yaml()}\n---\n\n# {title}\n\nA web demo of [{model_repo}]({model_url}), a "
        "pixel-space diffusion model trained with hf-ddpm: choose classes, a guidance scale, a sampler and a "
        "seed, and watch the images being denoised; compare guidance scales on the same seeds.\n"
    )
    SpaceCard(content).save(folder / "README.md")
    return folder


def push_space(
    model_repo: str, space_id: str, token: str | None = None, requirement: str | None = None, private: bool = False
) -> str:
    """
    Writes the Space of `model_repo` and uploads it to `space_id` (created as a Gradio Space if missing); returns the
    commit's address. The token is checked first (`resolve_hub_token`), and never printed or written.

    Raises:
        `ValueError`: a bad id, or a token that is missing, refused or read-only.
        [`HubPushError`]: the upload failed.
    """
    check_repo_id("MODEL_REPO", model_repo)
    check_repo_id("--space-id", space_id)
    token = resolve_hub_token(token, flag="--token")
    pusher = HubPusher(
        space_id, token, private=private, flag="--space-id", token_flag="--token", repo_type="space", space_sdk="gradio"
    )
    with tempfile.TemporaryDirectory(prefix="hf-ddpm-space-") as folder:
        write_space(folder, model_repo, space_id=space_id, requirement=requirement)
        return pusher.push_blocking(folder, f"Web demo of {model_repo}, made with hf-ddpm space").commit_url


def check_repo_id(name: str, repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ValueError(f"{name} {repo_id!r} is not a Hub repository id such as 'user/name'.") from None
    if os.path.isdir(repo_id):
        raise ValueError(
            f"{name} {repo_id!r} is a local folder; a Space loads its model from the Hub: push the "
            f"folder first (hf-ddpm push {repo_id} USER/NAME) and give that id."
        )
