"""`python -m hf_ddpm.demo` after its training (a tiny untrained pipeline stands in for the trained one): what its
summary says it wrote. Its whole journey, training included, is tested in test_train.py."""

import os

import pytest
import torch

from hf_ddpm import demo
from test_evaluation import tiny_pipeline


@pytest.mark.parametrize(
    "sweep, plots",
    [
        (["1", "2"], ["cfg_tradeoff.png", "samples_by_guidance.png"]),
        ([], ["samples_by_guidance.png"]),  # one guidance scale: no trade-off to plot
    ],
)
@pytest.mark.filterwarnings("ignore:Fréchet distance on 10 samples")
def test_the_summary_names_the_evaluation_files_that_were_written(tmp_path, monkeypatch, capsys, sweep, plots):
    output_dir = tmp_path / "demo"
    monkeypatch.setattr(demo, "train", lambda flags: tiny_pipeline().save_pretrained(output_dir))
    monkeypatch.setenv("HF_DDPM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)  # the tests' one thread stays
    demo.main(
        [
            "--output_dir",
            str(output_dir),
            "--scheduler",
            "ddim",
            "--num_inference_steps",
            "2",
            "--samples_per_digit",
            "1",
            "--eval_num_samples",
            "10",
            "--sweep_guidance_scales",
            *sweep,
        ]
    )
    files = ["metrics.json", *plots]
    assert sorted(os.listdir(output_dir / "evaluation")) == sorted(files)
    assert f"Evaluation: {output_dir / 'evaluation'}  ({', '.join(files)})" in capsys.readouterr().out
