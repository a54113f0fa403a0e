"""--torch_compile: the training forward runs compiled, and checkpoints and the saved pipeline are the eager model's,
so that runs with and without it resume each other. --mixed_precision bf16 on a CPU says whether the CPU has bf16
instructions.

Inductor's code generation takes minutes on a small CPU, too long for the suite: these runs compile with the
`aot_eager` backend (the same graph capture, forward and backward graphs, and module wrapping as inductor, without
its C++ code). `benchmarks/bench_training.py` compiles with inductor and measures it."""

import functools
import logging

import pytest
import torch
from helpers import tiny_flags
from test_train import train

from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.training_utils import cpu_bf16_support


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
    return tiny_flags(output_dir, "--max_train_steps", str(steps), "--checkpointing_steps", "2", "--lr_scheduler",
                      "constant", *extra)  # fmt: skip


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


def test_bf16_on_cpu_logs_whether_the_cpu_has_bf16_instructions(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        train(run_flags(tmp_path / "bf16", 1, "--mixed_precision", "bf16"))
    assert cpu_bf16_support().message in caplog.text


@pytest.mark.parametrize("flags, native", [("fpu sse avx2 avx512f avx512_bf16", True), ("fpu amx_bf16", True),
                                           ("fpu sse avx2 avx512f", False)])  # fmt: skip
def test_cpu_bf16_support_reads_the_cpu_flags(flags, native, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    support = cpu_bf16_support(str(cpuinfo))
    assert support.native is native
    assert ("has bf16 instructions" if native else "has no bf16 instructions") in support.message
