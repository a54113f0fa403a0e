"""The web demo's functions, called as the page calls them (no browser), and `hf-ddpm serve` as a server: every
control against the pipeline called directly, the checks, cancelling, the queue, and the ways the server refuses to
start."""

import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import gradio as gr
import numpy as np
import PIL.Image
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from huggingface_hub import HfApi

from helpers import free_port
from hf_ddpm.app import CACHE_CLEAN_UP, DemoApp, build_demo, card_settings, launch, model_defaults
from hf_ddpm.cli import main
from hf_ddpm.sampling import SCHEDULERS, load_pipeline
from test_cli_sample import save_tiny_pipeline

STEPS = 20  # every training step of the tiny model: previews every 2 steps
# A card's training settings, as hf_ddpm.hub writes them.
CARD = (
    "## Training settings\n\n| Setting | Value |\n|---|---|\n"
    "| `num_inference_steps` | 7 |\n| `guidance_scale` | 1.3 |\n"
)


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
    classes = list(classes) if isinstance(classes, tuple) else classes
    return shown(app.generate(classes, images, guidance, steps, scheduler, seed, rescale, low, high))


def shown(updates) -> list[tuple]:
    """The updates that change the page: not those that leave every output as it is, sent while a run samples."""
    return [update for update in updates if not unchanged(update)]


def unchanged(update: tuple) -> bool:
    return all(part == gr.skip() for part in update)


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
    updates = shown(app.compare_guidance(["Bag"], 2, "1, 3", STEPS, "ddim", 7))
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
    assert next(update for update in updates if not unchanged(update))[2].startswith(
        ("Denoising", f"{images * len(classes)} images, {steps} steps")
    )
    updates.close()
    # And on Compare guidance, which draws each of its scales: the first scale is drawn.
    [compare] = [function for function in demo.fns.values() if function.name == "compare_guidance"]
    updates = compare.fn(*[control.value for control in compare.inputs])
    assert next(update for update in updates if not unchanged(update))[1] == "Guidance 1: 1 of 3 scales done"
    [steps_control] = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "steps"]
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
    hidden = {
        getattr(block, "label", None) for block in demo.blocks.values() if getattr(block, "visible", True) is False
    }
    assert {"Class", "Guidance scale"} <= hidden
    pipe = load_pipeline(str(tmp_path), device="cpu")
    app = DemoApp(pipe, str(tmp_path), model_defaults(pipe, str(tmp_path)))
    *_, (_, images, _) = shown(app.generate([], 3, 1.0, 4, "ddim", 0))
    assert len(images) == 3
    # The Edit tab edits with no class and no guidance.
    *_, (_, edited, status) = shown(
        app.edit("class-swap", app.editor_value(images[0]), "brushed", None, 0.5, 1.0, 4, 0)
    )
    assert edited.size == (8, 8) and status == "Edited at strength 0.5: 2 of 4 steps of DDPM, guidance 1"


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
        # What a script may send through the API, taken as sent: each named, never a conversion's own message.
        ({"steps": float("nan")}, "Steps must be a whole number, got nan."),
        ({"images": None}, "Images per class must be a whole number, got None."),
        ({"images": "2"}, "Images per class must be a whole number, got '2'."),
        ({"seed": float("inf")}, "Seed must be a whole number, got inf."),
        ({"guidance": "3"}, "Guidance scale must be a finite number, got '3'."),
        ({"rescale": None}, "Guidance rescale must be a finite number, got None."),
        ({"classes": 5}, "Class must be a list of class names, got 5."),
        ({"scheduler": None}, "Scheduler must be one of ddim, ddpm, dpm, euler, unipc, got None."),
        (
            {"images": 16, "steps": 20},
            "Too much work for one request: 32 images x 20 steps = 640 image-steps; this server allows at most 500",
        ),
    ],
)
def test_bad_values_are_refused_with_a_message_naming_the_control(app, unet_calls, settings, message, caplog):
    with pytest.raises(gr.Error) as error:
        run(app, **settings)
    assert message in error.value.message and not unet_calls  # before any denoising
    # A visitor's mistake is one line in the server's log, not a traceback.
    assert [record.getMessage() for record in caplog.records] == [f"refused a request: {error.value.message}"]
    assert not error.value.print_exception


@pytest.mark.parametrize(
    "scales, message",
    [
        ("1, x", "Guidance scales must be numbers separated by commas"),
        ("1 2 3 4 5 6 7", "give 1 to 6 scales, got 7"),
        ("1, 2", "Too much work for one request: 16 images x 20 steps x 2 guidance scales = 640"),
        ("1, -2", "Guidance scales must be numbers >= 0, got '1, -2'."),
        (None, "Guidance scales must be numbers separated by commas, such as '1, 2, 4'; got None."),
    ],
)
def test_bad_guidance_comparisons_are_refused_before_any_denoising(app, unet_calls, scales, message):
    with pytest.raises(gr.Error) as error:
        shown(app.compare_guidance(["Sneaker", "Bag"], 8, scales, STEPS, "ddim", 0))
    assert message in error.value.message and not unet_calls


def test_compare_guidance_without_a_class_is_refused_before_its_first_scale(app, unet_calls):
    with pytest.raises(gr.Error) as error:
        shown(app.compare_guidance([], 1, "1, 2", STEPS, "ddim", 0))
    assert error.value.message.startswith("Class: choose at least one class") and not unet_calls


def test_cancel_stops_the_run_at_its_next_step(app):
    steps_run = []
    updates = app.generate(["Bag"], 1, 1.0, STEPS, "ddim", 0)
    first = next(update for update in updates if not unchanged(update))
    assert first[1] is None
    app.cancel()
    with pytest.raises(gr.Error, match="Cancelled"):
        for _, _, status in shown(updates):
            steps_run.append(status)
    assert len(steps_run) < STEPS // 2 - 1  # it did not run to the end


@pytest.fixture(scope="module")
def long_app(model):
    """The tiny model on a schedule of 1,000 steps: runs long enough to be stopped midway."""
    pipe = load_pipeline(model, device="cpu")
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, num_train_timesteps=1000)
    return DemoApp(pipe, "tiny", model_defaults(pipe), max_image_steps=10**6)


@pytest.mark.parametrize("event", ["generate", "compare_guidance", "edit"])
def test_a_client_going_away_stops_its_run_at_the_next_step(long_app, event):
    calls = []

    def step_of_20_ms(*_):  # whatever the machine, the first preview (step 100 of 1000) comes after a heartbeat
        calls.append(1)
        time.sleep(0.02)

    hook = long_app.pipe.unet.register_forward_hook(step_of_20_ms)
    updates = {
        "generate": lambda: long_app.generate(["Bag"], 1, 1.0, 1000, "ddpm", 0),
        "compare_guidance": lambda: long_app.compare_guidance(["Bag"], 1, "1, 2", 1000, "ddpm", 0),
        "edit": lambda: long_app.edit(
            "class-swap", long_app.editor_value(PIL.Image.new("L", (8, 8))), "brushed", "Bag", 1.0, 1.0, 1000, 0
        ),
    }[event]()
    try:
        # The event has started sampling and hands control back to Gradio before its first preview, with no change.
        assert unchanged(next(updates))
        steps_before = len(calls)
        updates.close()  # what Gradio does when the client cancels or goes away
        steps_after = len(calls)
    finally:
        hook.remove()
    assert steps_after - steps_before <= 2 and steps_after < 1000  # not the rest of the run, nor of a scale
    assert not any(thread.name == "sampling" for thread in threading.enumerate())


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


@pytest.mark.slow
def test_through_the_api_every_event_has_a_name_values_are_taken_as_sent_and_a_mistake_is_one_log_line(
    model, caplog, capfd
):
    demo = build_demo(model, device="cpu", max_image_steps=500)
    # Every event of ours (Gradio adds unnamed ones of its own that cancel events) has a name a client can read.
    assert {function.api_name for function in demo.fns.values() if function.fn is not None} == {
        "generate",
        "compare_guidance",
        "cancel",
        "random_seed",
        "choose_edit_mode",
        "load_image",
        "load_mask",
        "pick_example",
        "random_edit_seed",
        "edit",
        "cancel_edit",
    }
    assert demo.delete_cache == CACHE_CLEAN_UP  # Gradio prunes its file cache
    url = launched(demo)
    try:
        client = Client(url, verbose=False)
        requests = [
            ((["Bag"], 2, 3.0, None, "ddpm", 0, 0.0, 0.0, 1.0), "/generate", "Steps must be a whole number, got None."),
            ((["Bag"], "two", 3.0, 4, "ddpm", 0, 0.0, 0.0, 1.0), "/generate", "Images per class must be a whole"),
            ((["Bag"], 2, 3.0, 4, "ddpm", 0, "x", 0.0, 1.0), "/generate", "Guidance rescale must be a finite number"),
            (([], 1, "1, 2", 4, "ddpm", 0), "/compare_guidance", "Class: choose at least one class"),
        ]
        for inputs, api_name, message in requests:
            with pytest.raises(AppError, match=re.escape(message)):
                client.predict(*inputs, api_name=api_name)
        # The page keeps working.
        assert len(client.predict(["Bag"], 2, 3.0, 4, "ddpm", 0, 0.0, 0.0, 1.0, api_name="/generate")[1]) == 2
        # An upload over the bound is refused whole.
        too_large = urllib.request.Request(
            f"{url}gradio_api/upload",
            data=b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
            + bytes(5 * 2**20)
            + b"\r\n--x--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused_upload:
            urllib.request.urlopen(too_large, timeout=10)
        assert refused_upload.value.code == 413
    finally:
        demo.close()
    refusals = [record.getMessage() for record in caplog.records if record.name == "hf_ddpm.app"]
    assert len(refusals) == len(requests) and all(line.startswith("refused a request: ") for line in refusals)
    assert "Traceback" not in capfd.readouterr().err


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


STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM]


def start_server(model) -> tuple[int, subprocess.Popen]:
    """`hf-ddpm serve MODEL` on a free port, starting."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hf_ddpm", "serve", model, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return port, server


@pytest.fixture(scope="module")
def starting_servers(request, model):
    """A server for each stop signal that this session's tests send, all started at once: each spends its first
    seconds importing, on a core of its own where there is one. A test takes its own; any left are stopped here."""
    test = test_hf_ddpm_serve_serves_the_page_until_interrupted_then_closes_the_server_and_exits.__name__
    wanted = [
        item.callspec.params["stop_signal"]
        for item in request.session.items
        if getattr(item, "originalname", "") == test
    ]
    servers = {stop_signal: start_server(model) for stop_signal in STOP_SIGNALS if stop_signal in wanted}
    yield servers
    for _, server in servers.values():
        server.kill()
        server.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", STOP_SIGNALS)
def test_hf_ddpm_serve_serves_the_page_until_interrupted_then_closes_the_server_and_exits(
    model, stop_signal, starting_servers
):
    started = starting_servers.pop(stop_signal, None)
    for _ in range(5):
        port, server = started or start_server(model)
        started = None
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
