"""torch.compile in training and sampling. --torch_compile: the training forward runs compiled, and checkpoints and
the saved pipeline are the eager model's, so that runs with and without it resume each other; `hf-ddpm sample
--torch-compile` draws what the eager pipeline draws. --mixed_precision bf16 on a CPU says whether the CPU has bf16
instructions.

Inductor's code generation takes minutes on a small CPU, too long for the suite: these runs compile with the
`aot_eager` backend (the same graph capture, forward and backward graphs, and module wrapping as inductor, without
its C++ code). `benchmarks/bench_training.py` compiles with inductor and measures it."""

import functools
import logging

import numpy as np
import PIL.Image
import pytest
import torch

from helpers import tiny_flags
from hf_ddpm.cli import main as cli_main
from hf_ddpm.cpu import cpu_bf16_support
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.sampling import load_pipeline, save_grid_and_gif
from test_cli_sample import save_tiny_pipeline
from test_train import train

pytestmark = [pytest.mark.slow]


@pytest.fixture
def aot_eager_compile(monkeypatch):
    """torch.compile with the aot_eager backend; returns the dynamo counters, cleared."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    return counters


def run_flags(output_dir, steps, *extra):
    """A constant learning rate, so that 2 steps resumed for 2 more make the same schedule as 4 steps."""
    return tiny_flags(
        output_dir, "--max_train_steps", str(steps), "--checkpointing_steps", "2", "--lr_scheduler", "constant", *extra
    )


def unet_weights(folder) -> dict:
    return DDPMCFGPipeline.from_pretrained(folder).unet.state_dict()


@pytest.mark.parametrize("first, then", [("--torch_compile", None), (None, "--torch_compile")])
def test_compiled_and_eager_runs_resume_each_other(first, then, aot_eager_compile, tmp_path):
    eager = train(run_flags(tmp_path / "eager", 4))
    mixed = tmp_path / "mixed"
    train(run_flags(mixed, 2, *filter(None, [first])))
    train(run_flags(mixed, 4, "--resume_from_checkpoint", "latest", *filter(None, [then])))
    assert aot_eager_compile["stats"]["calls_captured"] > 0  # the compiled run did run through the compiler
    expected, resumed = unet_weights(eager), unet_weights(mixed)
    assert resumed.keys() == expected.keys()  # the eager module's names: no `_orig_mod.` prefix
    for name, weight in expected.items():  # the same run, whichever half was compiled
        torch.testing.assert_close(resumed[name], weight, atol=1e-6, rtol=0, msg=name)


def test_sample_with_torch_compile_draws_what_the_eager_pipeline_draws(aot_eager_compile, tmp_path):
    save_tiny_pipeline(tmp_path / "model")
    options = [
        "--labels",
        "Sneaker",
        "Bag",
        "--batch-size",
        "2",
        "--guidance-scale",
        "3",
        "--guidance-interval",
        "0.2",
        "0.8",
        "--steps",
        "4",
        "--seed",
        "5",
        "--device",
        "cpu",
    ]
    cli_main(["sample", str(tmp_path / "model"), *options, "--torch-compile", "--out", str(tmp_path / "compiled.png")])
    assert aot_eager_compile["stats"]["calls_captured"] > 0
    eager = load_pipeline(str(tmp_path / "model"), device="cpu")
    save_grid_and_gif(
        eager,
        tmp_path / "eager.png",
        seed=5,
        class_labels=["Sneaker", "Bag"],
        batch_size=2,
        guidance_scale=3.0,
        guidance_interval=(0.2, 0.8),
        num_inference_steps=4,
    )
    compiled, expected = (np.asarray(PIL.Image.open(tmp_path / name)) for name in ("compiled.png", "eager.png"))
    assert np.abs(compiled.astype(int) - expected).max() <= 1  # the same images, up to rounding to 8 bits


def test_a_compiled_pipeline_saves_and_loads_as_the_eager_one(aot_eager_compile, tmp_path):
    save_tiny_pipeline(tmp_path / "model")
    pipe = load_pipeline(str(tmp_path / "model"), device="cpu", torch_compile=True)
    pipe(1, num_inference_steps=2)
    pipe.save_pretrained(tmp_path / "saved")
    saved, original = (DDPMCFGPipeline.from_pretrained(tmp_path / n).unet.state_dict() for n in ("saved", "model"))
    assert saved.keys() == original.keys()
    assert all(torch.equal(saved[name], original[name]) for name in original)


def test_bf16_on_cpu_logs_whether_the_cpu_has_bf16_instructions(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        train(run_flags(tmp_path / "bf16", 1, "--mixed_precision", "bf16"))
    support = cpu_bf16_support()
    [record] = [record for record in caplog.records if support.message in record.getMessage()]
    # Emulated bf16 trains several times slower than fp32: that is a warning, not news.
    assert record.levelno == (logging.INFO if support.native else logging.WARNING)


@pytest.mark.parametrize(
    "flags, native",
    [("fpu sse avx2 avx512f avx512_bf16", True), ("fpu amx_bf16", True), ("fpu sse avx2 avx512f", False)],
)
def test_cpu_bf16_support_reads_the_cpu_flags(flags, native, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    support = cpu_bf16_support(str(cpuinfo))
    assert support.native is native
    assert ("has bf16 instructions" if native else "has no bf16 instructions") in support.message
    assert ("--mixed_precision no" in support.message) is not native
