"""The web demo's test modules share these: a tiny saved model, the page's functions on it, and a count of the UNet's
calls. Module-scoped, as each module had them: every module builds its own."""

import pytest

from hf_ddpm.app import DemoApp, model_defaults
from hf_ddpm.sampling import load_pipeline
from test_cli_sample import save_tiny_pipeline


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_tiny_pipeline(folder)
    return str(folder)


@pytest.fixture(scope="module")
def app(model):
    pipe = load_pipeline(model, device="cpu")
    return DemoApp(pipe, model, model_defaults(pipe, model), max_image_steps=500)


@pytest.fixture
def unet_calls(app):
    """The UNet's forward calls while the test runs: none means nothing was denoised."""
    calls = []
    hook = app.pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    hook.remove()
