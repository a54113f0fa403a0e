"""`hf-ddpm space`: the files of a Space that serves a model's web demo, written locally or uploaded to the loopback
Hub stand-in."""

import ast
import runpy

import gradio as gr
import pytest
import yaml

from hf_ddpm.cli import main
from test_cli_sample import save_tiny_pipeline


def metadata(readme: str) -> dict:
    header = readme.split("---\n")[1]
    return yaml.safe_load(header)


def test_local_dir_gets_an_app_its_requirements_and_a_space_readme(tmp_path, capsys):
    main(["space", "tester/digits", "--local-dir", str(tmp_path / "space"), "--requirement", "hf-ddpm[app]==0.1.0"])
    files = {path.name: path.read_text() for path in (tmp_path / "space").iterdir()}
    assert sorted(files) == ["README.md", "app.py", "requirements.txt"]
    settings = metadata(files["README.md"])
    assert settings["sdk"] == "gradio" and settings["app_file"] == "app.py" and settings["models"] == ["tester/digits"]
    assert "[tester/digits](" in files["README.md"]
    assert files["requirements.txt"] == "hf-ddpm[app]==0.1.0\n"
    # The app builds the demo of the model and serves it where a Space listens.
    calls = {
        node.func.id: node
        for node in ast.walk(ast.parse(files["app.py"]))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert ast.literal_eval(calls["build_demo"].args[0]) == "tester/digits"
    assert {keyword.arg: ast.literal_eval(keyword.value) for keyword in calls["launch"].keywords} == {
        "host": "0.0.0.0",
        "port": 7860,
    }
    assert "wrote" in capsys.readouterr().out


def test_the_space_is_uploaded_with_the_token_checked_first_and_never_shown(hub_server, tmp_path, capsys):
    main(["space", "tester/digits", "--space-id", "tester/digits-demo", "--token", hub_server.token])
    out, err = capsys.readouterr()
    files = hub_server.repo_files("spaces/tester/digits-demo")
    assert {"app.py", "requirements.txt", "README.md"} <= set(files)
    assert metadata(files["README.md"].decode())["sdk"] == "gradio"
    assert b"tester/digits" in files["app.py"]
    assert hub_server.token not in out + err and all(hub_server.token.encode() not in data for data in files.values())
    assert out.startswith("pushed the Space tester/digits-demo:")
    # The token was checked before anything was created.
    paths = [path for _, path in hub_server.requests]
    assert paths.index("/api/whoami-v2") < paths.index("/api/repos/create")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--space-id", "tester/demo"], "Pushing to the Hub needs a token with write access: pass --token"),
        (["--space-id", "tester/demo", "--token", "hf_wrong"], "The Hub token from --token was rejected"),
        (["--space-id", "not a/valid id"], "--space-id 'not a/valid id' is not a Hub repository id"),
        ([], "--space-id USER/NAME is needed to upload the Space"),
    ],
)
def test_bad_uploads_exit_with_status_2_and_the_reason(hub_server, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["space", "tester/digits", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not hub_server.repo_exists("spaces/tester/demo")


def test_a_local_folder_is_not_a_model_repo_for_a_space(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user" / "model").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["space", "user/model", "--local-dir", "space"])
    assert exit_info.value.code == 2
    assert "MODEL_REPO 'user/model' is a local folder; a Space loads its model from the Hub" in capsys.readouterr().err


def test_a_local_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["space", "user/model", "--local-dir", str(tmp_path / "afile")])
    assert exit_info.value.code == 2
    expected = f"--local-dir '{tmp_path / 'afile'}' is a file; it must be a folder (created if missing)"
    assert f"hf-ddpm space: error: {expected}" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_the_space_app_builds_the_demo_of_the_model_on_the_hub(hub_server, tmp_path):
    save_tiny_pipeline(tmp_path / "model").push_to_hub("tester/tiny", token=hub_server.token)
    main(["space", "tester/tiny", "--local-dir", str(tmp_path / "space")])
    demo = runpy.run_path(str(tmp_path / "space" / "app.py"))["demo"]  # as a Space imports it, without serving
    assert isinstance(demo, gr.Blocks) and demo.title == "hf-ddpm: tester/tiny"
    labels = {block.label for block in demo.blocks.values() if getattr(block, "label", None)}
    assert {"Class", "Guidance scale", "Steps", "Scheduler", "Seed"} <= labels
