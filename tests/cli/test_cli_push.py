"""`hf-ddpm push` and `hf-ddpm space` in huggingface_hub's offline mode: refused up front, saying why."""

import huggingface_hub
import pytest

from hf_ddpm.cli import main
from test_cli_sample import save_tiny_pipeline


@pytest.mark.parametrize(
    "command",
    [
        ["push", "{model}", "user/x", "--token", "hf_fake"],
        ["space", "user/x", "--space-id", "user/x-demo", "--token", "hf_fake"],
    ],
    ids=["push", "space"],
)
def test_offline_mode_is_refused_with_status_2_naming_it(tmp_path, capsys, monkeypatch, command):
    save_tiny_pipeline(tmp_path / "model")
    # What HF_HUB_OFFLINE=1 sets when huggingface_hub is imported; every request would fail.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit) as exit_info:
        main([word.format(model=tmp_path / "model") for word in command])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"hf-ddpm {command[0]}: error: Pushing to the Hub needs the network" in err
    assert "HF_HUB_OFFLINE" in err and "hf_fake" not in err
