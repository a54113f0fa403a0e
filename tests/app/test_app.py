"""The web demo's functions, called as the page calls them (no browser), and `hf-ddpm serve` as a server: every
control against the pipeline called directly, the checks, cancelling, the queue, and the ways the server refuses to
start."""

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import gradio as gr
import numpy as np
import PIL.Image
import pytest
import torch
from gradio_client import Client
from huggingface_hub import HfApi

from helpers import free_port
from hf_ddpm.app import DemoApp, build_demo, card_settings, launch, model_defaults
from hf_ddpm.cli import main
from hf_ddpm.sampling import SCHEDULERS, load_pipeline
from test_cli_sample import save_tiny_pipeline

STEPS = 20  # every training step of the tiny model: previews every 2 steps
# A card's training settings, as hf_ddpm.hub writes them.
CARD = (
    "## Training settings\n\n| Setting | Value |\n|---|---|\n"
    "| `num_inference_steps` | 7 |\n| `guidance_scale` | 1.3 |\n"
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_tiny_pipeline(folder)
    return str(folder)


@pytest.fixture(scope="module")
def app(model):
    pipe = load_pipeline(model, device="cpu")
    return DemoApp(pipe, model, model_defaults(pipe, model), max_image_steps=500)


def direct(model, scheduler="ddim", labels=("Sneaker", "Bag"), batch_size=2, seed=7, **call):
    """The images the pipeline draws when called directly, image i from seed + i."""
    pipe = load_pipeline(model, scheduler=scheduler, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    count = batch_size * (len(labels) if labels else 1)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(count)]
    return pipe(
        list(labels) if labels else None,
        batch_size=batch_size,
        generator=generators,
        num_inference_steps=call.pop("num_inference_steps", STEPS),
        **call,
    ).images


def run(
    app,
    classes=("Sneaker", "Bag"),
    images=2,
    guidance=1.0,
    steps=STEPS,
    scheduler="ddim",
    seed=7,
    rescale=0.0,
    low=0.0,
    high=1.0,
):
    return list(app.generate(list(classes), images, guidance, steps, scheduler, seed, rescale, low, high))


def assert_same_images(images, expected):
    assert len(images) == len(expected)
    for image, reference in zip(images, expected):
        np.testing.assert_array_equal(np.asarray(image), np.asarray(reference))


def test_generate_streams_grids_while_denoising_then_the_final_images(app, model):
    updates = run(app, guidance=3.0)
    *intermediate, (final_grid, final_images, status) = updates
    assert len(intermediate) >= 2 and all(images is None for _, images, _ in intermediate)
    assert [text for *_, text in intermediate][:2] == [f"Denoising: step 2 of {STEPS}", f"Denoising: step 4 of {STEPS}"]
    # Intermediate grids are noisier than the final one: they change along the way.
    assert not np.array_equal(np.asarray(intermediate[0][0]), np.asarray(final_grid))
    assert status == f"4 images, {STEPS} steps of DDIM, guidance 3"
    assert [image.size for image in final_images] == [(8, 8)] * 4  # the model's resolution
    assert_same_images(final_images, direct(model, guidance_scale=3.0))


def test_the_page_shows_the_pipelines_named_grid_enlarged_by_a_whole_factor(app, model):
    *intermediate, (final_grid, final_images, _) = run(app, classes=["bag", "Sneaker"])
    pipe = load_pipeline(model, device="cpu")
    sample_grid = pipe.sample_grid(final_images, ["Bag", "Sneaker"])  # gaps, enlarged cells, the class names
    factor = final_grid.width // sample_grid.width
    assert factor >= 2 and final_grid.size == (sample_grid.width * factor, sample_grid.height * factor)
    expected = sample_grid.resize(final_grid.size, PIL.Image.NEAREST)
    np.testing.assert_array_equal(np.asarray(final_grid), np.asarray(expected))
    assert all(grid.size == final_grid.size for grid, *_ in intermediate)  # the grid keeps its size while denoising


@pytest.mark.parametrize("control", ["scheduler", "rescale", "interval", "images", "seed"])
def test_every_control_reaches_the_pipeline(app, model, control):
    settings, call = {
        "scheduler": ({"scheduler": "dpm", "steps": 10}, {"scheduler": "dpm", "num_inference_steps": 10}),
        "rescale": ({"guidance": 4.0, "rescale": 0.7}, {"guidance_scale": 4.0, "guidance_rescale": 0.7}),
        "interval": (
            {"guidance": 4.0, "low": 0.2, "high": 0.6},
            {"guidance_scale": 4.0, "guidance_interval": (0.2, 0.6)},
        ),
        "images": ({"images": 3, "classes": ["T-shirt"]}, {"batch_size": 3, "labels": ["T-shirt"]}),
        "seed": ({"seed": 123}, {"seed": 123}),
    }[control]
    *_, (_, images, _) = run(app, **settings)
    assert_same_images(images, direct(model, **call))


def test_the_same_seed_draws_the_same_images_and_another_seed_others(app):
    first, again, other = (run(app, seed=seed)[-1][1] for seed in (5, 5, 6))
    assert_same_images(first, again)
    assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0]))


def test_compare_guidance_draws_the_same_seeds_at_each_scale(app, model):
    updates = list(app.compare_guidance(["Bag"], 2, "1, 3", STEPS, "ddim", 7))
    grids, status = updates[-1]
    assert [caption for _, caption in grids] == ["guidance 1", "guidance 3"] and len(updates) == 2
    assert status == "Guidance 1, 3: 2 of 2 scales done"
    # Each block is the enlarged grid of what `generate` draws at that scale.
    for (grid, _), scale in zip(grids, (1.0, 3.0)):
        assert np.array_equal(np.asarray(grid), np.asarray(run(app, classes=["Bag"], guidance=scale)[-1][0]))
    assert not np.array_equal(np.asarray(grids[0][0]), np.asarray(grids[1][0]))


def test_defaults_come_from_the_model_and_its_card(tmp_path):
    pipe = save_tiny_pipeline(tmp_path)
    assert model_defaults(pipe, str(tmp_path)).guidance_scale == 3.0  # no card: the page's own default
    (tmp_path / "README.md").write_text(CARD)
    defaults = model_defaults(pipe, str(tmp_path))
    assert (defaults.resolution, defaults.guidance_scale, defaults.num_inference_steps) == (8, 1.3, 7)
    assert defaults.scheduler == "ddpm"  # the saved scheduler


def test_a_folders_card_is_read_from_the_folder_only_and_a_hub_ids_from_the_hub(tmp_path, monkeypatch, hub_server):
    monkeypatch.chdir(tmp_path)
    pipe = save_tiny_pipeline(tmp_path / "tinyddpm")
    # A folder without a card has none: its path is no Hub id to look one up under.
    assert model_defaults(pipe, "tinyddpm").guidance_scale == 3.0 and hub_server.requests == []
    api = HfApi(token=hub_server.token)
    repo_id = api.create_repo(f"{hub_server.user}/tinyddpm").repo_id
    api.upload_file(path_or_fileobj=CARD.encode(), path_in_repo="README.md", repo_id=repo_id)
    assert card_settings(repo_id) == {"num_inference_steps": "7", "guidance_scale": "1.3"}


# Compare guidance draws each of its 3 starting scales: the page's values fit a third of the work limit.
@pytest.mark.parametrize(
    "train_steps, max_image_steps, start",
    [
        (STEPS, 4000, (["T-shirt", "Sneaker"], 4, STEPS)),  # the model's defaults fit: the page starts with them
        (200, 3000, (["T-shirt", "Sneaker"], 2, 200)),  # DDPM's every training step, with fewer images
        (1000, 1500, (["T-shirt", "Sneaker"], 1, 250)),  # not even one image of each class at 1000 steps: fewer steps
        (1000, 3, (["T-shirt"], 1, 1)),  # not even one image-step of each class: one class
    ],
)
def test_the_page_starts_with_values_that_its_server_accepts(model, train_steps, max_image_steps, start):
    pipe = load_pipeline(model, device="cpu")
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, num_train_timesteps=train_steps)
    demo = build_demo(pipe, model_name="tiny", max_image_steps=max_image_steps)
    [generate] = [function for function in demo.fns.values() if function.name == "generate"]
    values = [control.value for control in generate.inputs]
    classes, images, _, steps, scheduler, *_ = values
    assert (classes, images, steps, scheduler) == (*start, "ddpm")
    # The first click on Generate: the request passes its checks and sampling begins.
    updates = generate.fn(*values)
    assert next(updates)[2].startswith(("Denoising", f"{images * len(classes)} images, {steps} steps"))
    updates.close()
    # And on Compare guidance, which draws each of its scales: the first scale is drawn.
    [compare] = [function for function in demo.fns.values() if function.name == "compare_guidance"]
    assert next(compare.fn(*[control.value for control in compare.inputs]))[1] == "Guidance 1: 1 of 3 scales done"
    [steps_control] = [block for block in demo.blocks.values() if getattr(block, "label", None) == "Steps"]
    if start[1:] == (4, train_steps):
        assert steps_control.info is None
    else:  # where the default steps are shown, why the page starts lower
        assert steps_control.info == (
            f"The model's default is {train_steps} steps; this server allows at most {max_image_steps} image-steps "
            "(images x steps) a request (Compare guidance counts each of its 3 scales), so the page starts with "
            f"{images * len(classes)} images at {steps} steps."
        )


def test_an_unconditional_model_hides_the_class_and_guidance_controls(tmp_path):
    save_tiny_pipeline(tmp_path, num_class_embeds=None)
    demo = build_demo(str(tmp_path), device="cpu")
    hidden = {block.label for block in demo.blocks.values() if getattr(block, "visible", True) is False}
    assert {"Class", "Guidance scale"} <= hidden
    pipe = load_pipeline(str(tmp_path), device="cpu")
    app = DemoApp(pipe, str(tmp_path), model_defaults(pipe, str(tmp_path)))
    *_, (_, images, _) = list(app.generate([], 3, 1.0, 4, "ddim", 0))
    assert len(images) == 3


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"steps": 21}, "Steps must be an integer in [1, 20]"),
        ({"steps": 0}, "Steps must be an integer in [1, 20]"),
        ({"steps": 2.5}, "Steps must be a whole number, got 2.5"),
        ({"guidance": -1.0}, "Guidance scale must be a number >= 0"),
        ({"guidance": 2.0, "rescale": 1.5}, "Guidance rescale must be in [0, 1]"),
        ({"guidance": 2.0, "low": 0.6, "high": 0.2}, "Guidance interval must be None or a pair (low, high)"),
        ({"classes": ["Hat"]}, "Class: unknown label name 'Hat'; valid names: 'T-shirt', 'Sneaker', 'Bag'"),
        ({"images": 0}, "Images per class must be an integer >= 1"),
        ({"seed": -1}, "Seed must be in [0, 9223372036854775804] for 4 images, got -1"),
        ({"seed": 2**63 - 2}, "Seed must be in [0, 9223372036854775804] for 4 images, got 9223372036854775806"),
        ({"scheduler": "heun"}, "Scheduler must be one of ddim, ddpm, dpm, euler, unipc, got 'heun'"),
        (
            {"images": 16, "steps": 20},
            "Too much work for one request: 32 images x 20 steps = 640 image-steps; this server allows at most 500",
        ),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_the_control(app, settings, message):
    with pytest.raises(gr.Error) as error:
        run(app, **settings)
    assert message in error.value.message


@pytest.mark.parametrize(
    "scales, message",
    [
        ("1, x", "Guidance scales must be numbers separated by commas"),
        ("1 2 3 4 5 6 7", "give 1 to 6 scales, got 7"),
        ("1, 2", "Too much work for one request: 16 images x 20 steps x 2 guidance scales = 640"),
    ],
)
def test_bad_guidance_comparisons_are_refused(app, scales, message):
    with pytest.raises(gr.Error) as error:
        list(app.compare_guidance(["Sneaker", "Bag"], 8, scales, STEPS, "ddim", 0))
    assert message in error.value.message


def test_cancel_stops_the_run_at_its_next_step(app):
    steps_run = []
    updates = app.generate(["Bag"], 1, 1.0, STEPS, "ddim", 0)
    first = next(updates)
    assert first[1] is None
    app.cancel()
    with pytest.raises(gr.Error, match="Cancelled"):
        for _, _, status in updates:
            steps_run.append(status)
    assert len(steps_run) < STEPS // 2 - 1  # it did not run to the end


def launched(demo):
    """`demo` served on a free port in the background; its address (another port when one was taken meanwhile)."""
    for _ in range(5):
        try:
            return launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
        except ValueError:
            continue
    raise RuntimeError("no free port")


@pytest.mark.slow
def test_the_queue_runs_one_at_a_time_bounds_its_size_and_the_server_stays_responsive(model):
    pipe = load_pipeline(model, device="cpu")
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, num_train_timesteps=1000)  # long runs
    demo = build_demo(pipe, model_name="tiny", concurrency_limit=1, max_queue_size=1, max_image_steps=10**6)
    url = launched(demo)
    try:
        first_visitor, second_visitor = Client(url, verbose=False), Client(url, verbose=False)
        first = first_visitor.submit([], 16, 1.0, 1000, "ddpm", 0, 0.0, 0.0, 1.0, api_name="/generate")
        while first.status().code.name not in ("PROCESSING", "ITERATING"):
            time.sleep(0.02)
        # While it samples, the page answers at once, and a second run waits in the queue with its place.
        started = time.monotonic()
        urllib.request.urlopen(url, timeout=5).read()
        assert time.monotonic() - started < 1.0
        second = second_visitor.submit([], 1, 1.0, 2, "ddpm", 0, 0.0, 0.0, 1.0, api_name="/generate")
        while second.status().code.name != "IN_QUEUE" or second.status().rank is None:
            time.sleep(0.02)
        assert second.status().rank == 0 and not first.done()
        with pytest.raises(Exception, match="[Qq]ueue is full"):  # max_queue_size=1
            second_visitor.submit([], 1, 1.0, 2, "ddpm", 0, 0.0, 0.0, 1.0, api_name="/generate").result()
        # Cancelled (as the Cancel button cancels the event), the first run stops sampling, and the second one runs.
        first.cancel()
        assert len(second.result(timeout=30)[1]) == 1
        deadline = time.monotonic() + 10
        while any(thread.name == "sampling" for thread in threading.enumerate()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(thread.name == "sampling" for thread in threading.enumerate())
    finally:
        demo.close()


def test_serve_refuses_a_model_that_cannot_be_loaded(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"MODEL {str(tmp_path)!r} is a folder without a saved pipeline in it" in capsys.readouterr().err


def test_serve_refuses_a_port_in_use(model, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", model, "--port", str(port), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert f"--port {port} on 127.0.0.1 is in use by another program" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--max-image-steps", "0"], "--max-image-steps must be an integer >= 1, got 0"),
        (["--concurrency", "0"], "--concurrency must be an integer >= 1, got 0"),
        (["--port", "70000"], "--port must be in [0, 65535], got 70000"),
    ],
)
def test_serve_refuses_bad_settings(model, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", model, *arguments])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_scheduler_choices_are_the_samplers_of_hf_ddpm_sample(app):
    demo = build_demo(app.pipe, model_name="tiny")
    [dropdown] = [block for block in demo.blocks.values() if getattr(block, "label", None) == "Scheduler"]
    assert sorted(value for _, value in dropdown.choices) == sorted(SCHEDULERS)
    assert [name for name, _ in dropdown.choices] == ["DDPM", "DDIM", "DPM-Solver++ (2M)", "Euler", "UniPC"]


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_hf_ddpm_serve_serves_the_page_until_interrupted_then_closes_the_server_and_exits(model, stop_signal):
    for _ in range(5):
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "hf_ddpm", "serve", model, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            page = wait_for_page(f"http://127.0.0.1:{port}/", server)
        finally:
            server.send_signal(stop_signal)
            output = server.communicate(timeout=30)[0]
        if page is not None or "is in use by another program" not in output:
            break
    assert page is not None, output
    assert '"elem_id":"generate"' in page.replace(" ", "") and "Running on local URL" in output
    assert server.returncode == 0 and "Stopping: closing the server." in output and "Traceback" not in output, output


def wait_for_page(url: str, server: subprocess.Popen, timeout: float = 60) -> str | None:
    """The page at `url` once the server answers, or None if it ended first."""
    deadline = time.monotonic() + timeout
    while server.poll() is None and time.monotonic() < deadline:
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            time.sleep(0.2)
    return None
