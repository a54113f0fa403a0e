"""Evaluation during training (`--eval_steps`): when it runs, what it logs and writes, the best checkpoint, bad flags
before any training, and two processes measuring exactly what one measures.

Runs are tiny (8x8 digits, the tiny UNet, 20 evaluation samples of 2 DDIM steps); the real features are cached in a
folder of this module's own (HF_DDPM_CACHE), never in the user's cache.
"""

import json
import os
import re
import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import tiny_flags, train_on_two_processes
from hf_ddpm.evaluation import split_halves
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.training import evaluation_setup, train as train_script
from hf_ddpm.training.checkpoints import find_checkpoint_to_resume, previous_run_outputs
from test_train import assert_nothing_trained, train

VALUES = ["fd_digits", "kid", "precision", "recall", "agreement"]  # what the digits defaults measure
EVAL = ["--eval_num_samples", "20", "--eval_batch_size", "4"]  # 5 whole batches: 3 on one process, 2 on the other


@pytest.fixture(scope="module", autouse=True)
def real_feature_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DDPM_CACHE", str(tmp_path_factory.mktemp("real_features")))
        yield


def evaluated_flags(output_dir, *extra: str) -> list[str]:
    """Five steps, evaluated at steps 2 and 4 and at the end (5), which sweeps guidance 1 and 3; checkpoints at 2, 4;
    the best by fd_digits kept."""
    return tiny_flags(
        output_dir,
        "--max_train_steps",
        "5",
        "--eval_steps",
        "2",
        *EVAL,
        "--eval_guidance_scales",
        "1",
        "--keep_best_checkpoint",
        "fd_digits",
        "--checkpointing_steps",
        "2",
        "--use_ema",
        "--report_to",
        "tensorboard",
        *extra,
    )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("evaluated") / "run"
    train(evaluated_flags(output_dir))
    return output_dir


def logged(output_dir, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(output_dir / "logs" / "train_ddpm"), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def read_json(path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_evaluation_runs_every_eval_steps_and_at_the_end_and_logs_each_metric_to_tensorboard(evaluated):
    for key in VALUES:
        assert [step for step, _ in logged(evaluated, f"eval/{key}")] == [2, 4, 5], key
    report = read_json(evaluated / "evaluation" / "metrics.json")
    final = next(row for row in report["rows"] if row["guidance_scale"] == 3.0)  # --guidance_scale, at step 5
    assert logged(evaluated, "eval/fd_digits")[-1][1] == pytest.approx(final["fd_digits"], rel=1e-6)
    floor = report["floors"]["fd_digits_floor"]
    assert [value for _, value in logged(evaluated, "eval/fd_digits_floor")] == [pytest.approx(floor, rel=1e-6)] * 3


def test_final_evaluation_writes_metrics_json_the_tradeoff_plot_and_the_model_card_section_with_the_floor(evaluated):
    report = read_json(evaluated / "evaluation" / "metrics.json")
    rows = report["rows"]
    assert [row["guidance_scale"] for row in rows] == [1.0, 3.0]  # --eval_guidance_scales and --guidance_scale
    assert all(row["num_samples"] == 20 and row["steps"] == 2 and row["scheduler"] == "dpm" for row in rows)
    assert set(VALUES) <= set(rows[0]) and report["info"]["step"] == 5
    # The work done, as `hf-ddpm evaluate` counts it: both CFG halves on each guided step, one half at guidance 1.
    assert [(row["nfe_per_image"], row["guidance_interval"]) for row in rows] == [(2, None), (4, None)]
    assert (evaluated / "evaluation" / "cfg_tradeoff.png").read_bytes().startswith(b"\x89PNG")

    card = (evaluated / "README.md").read_text()
    section = card[card.index("## Evaluation") : card.index("## Training settings")]
    floor = report["floors"]["fd_digits_floor"]
    values = " | ".join(f"{row['fd_digits']:.4g}" for row in rows)
    assert "| Metric | guidance 1 | guidance 3 | Real-vs-real floor |" in section
    assert f"| fd_digits (lower is better) | {values} | {floor:.4g} |" in section
    assert "| agreement (higher is better) |" in section
    assert "![Guidance trade-off](evaluation/cfg_tradeoff.png)" in section
    assert "The model trained on the reference images too, so these distances can flatter it" in section


@pytest.mark.slow
def test_exclude_eval_reference_trains_on_the_held_out_half_and_measures_against_the_unseen_reference(
    tmp_path, monkeypatch
):
    """The evaluation compares samples with the reference half of the whole split; with --exclude_eval_reference
    no image of that half is trained on (the --max_train_samples subset is drawn from the other half)."""
    returned = {}
    for module, name in [(train_script, "load_training_data"), (evaluation_setup, "real_images")]:
        function = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *args, name=name, function=function: returned.setdefault(name, function(*args))
        )
    output_dir = tmp_path / "run"
    train(evaluated_flags(output_dir, "--exclude_eval_reference"))
    data, real = returned["load_training_data"], returned["real_images"]
    held_out, _ = split_halves(len(real))
    assert len(real) == 1797 and len(data) == 64  # the whole split is measured against; 64 images are trained on
    assert "the held-out half, 64 of 1797 images (evaluation's reference half left out)" in data.source
    # Each training image (with its label) is a distinct image of the held-out half.
    held_out_images, held_out_labels = real.images[held_out].flatten(1), real.labels[held_out]
    positions = [(held_out_images == image).all(dim=1).nonzero().flatten() for image in data.images.flatten(1)]
    assert all(len(found) > 0 for found in positions)
    assert len({found[0].item() for found in positions}) == len(data)
    assert all(data.labels[i] in held_out_labels[found] for i, found in enumerate(positions))
    card = (output_dir / "README.md").read_text()
    assert "The model never saw those reference images: it trained on the held-out half only." in card


def test_keep_best_checkpoint_holds_the_best_logged_value_and_latest_resume_ignores_it(evaluated):
    best_step, best_value = min(logged(evaluated, "eval/fd_digits"), key=lambda event: event[1])
    best = read_json(evaluated / "checkpoint-best" / "best.json")
    assert best["metric"] == "fd_digits" and best["step"] == best_step
    assert best["value"] == pytest.approx(best_value, rel=1e-6)
    state = set(os.listdir(evaluated / "checkpoint-best"))
    assert {"model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"} <= state
    DDPMCFGPipeline.from_pretrained(evaluated / "checkpoint-best" / "pipeline")

    args = train_script.parse_args(evaluated_flags(evaluated, "--resume_from_checkpoint", "latest"))
    assert find_checkpoint_to_resume(args) == str(evaluated / "checkpoint-4")
    assert sorted(name for name in os.listdir(evaluated) if name.startswith("checkpoint")) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-best",
    ]
    # --overwrite_output_dir deletes them with the rest of the run.
    written = {os.path.basename(path) for path in previous_run_outputs(str(evaluated), "logs")}
    assert {"checkpoint-best", "evaluation"} <= written


@pytest.mark.slow
@pytest.mark.parametrize("recorded, replaced", [(0.0, False), (1e9, True)])
def test_resumed_run_competes_with_the_best_value_recorded_before(evaluated, tmp_path, recorded, replaced):
    output_dir = tmp_path / "run"
    shutil.copytree(evaluated, output_dir)
    recorded_best = {"metric": "fd_digits", "value": recorded, "step": 1}
    (output_dir / "checkpoint-best" / "best.json").write_text(json.dumps(recorded_best))
    train(evaluated_flags(output_dir, "--max_train_steps", "7", "--resume_from_checkpoint", "latest"))
    best = read_json(output_dir / "checkpoint-best" / "best.json")
    if replaced:  # any real value beats 1e9: the first evaluation after the resume, at step 6
        assert best["step"] == 6 and best["value"] < recorded
    else:  # nothing beats 0: the recorded best stands
        assert best == recorded_best


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--eval_steps", "2", "--eval_metrics", "fd_pixels"], "--eval_metrics: invalid choice: 'fd_pixels'"),
        (["--eval_steps", "0"], "--eval_steps must be at least 1"),
        (["--eval_steps", "2", "--eval_num_samples", "1"], "--eval_num_samples must be at least 2"),
        (["--keep_best_checkpoint", "kid"], "--keep_best_checkpoint given without --eval_steps"),
        (["--eval_metrics", "kid"], "--eval_metrics given without --eval_steps"),
        (
            ["--eval_steps", "2", "--eval_metrics", "fd_digits", "--keep_best_checkpoint", "recall"],
            re.escape("--keep_best_checkpoint recall is not among the evaluated values ['fd_digits']"),
        ),
    ],
)
def test_bad_eval_flags_are_rejected_by_the_parser_naming_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit):
        train_script.parse_args(["--dataset_name", "digits", *flags])
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--unconditional", "--eval_metrics", "agreement"], "`agreement` needs a class-conditional model"),
        (
            ["--unconditional", "--keep_best_checkpoint", "agreement"],
            "--keep_best_checkpoint agreement is not among the evaluated values",
        ),
        (["--unconditional", "--eval_guidance_scales", "3"], "--eval_guidance_scales other than 1 need a class-cond"),
        (["--eval_metrics", "precision_recall", "--eval_num_samples", "3"], "`precision_recall` needs more than k=3"),
    ],
)
def test_eval_flags_the_data_or_the_model_cannot_take_fail_before_any_training_step(flags, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        train(tiny_flags(tmp_path / "run", "--max_train_steps", "2", "--eval_steps", "1", *flags))
    assert_nothing_trained(tmp_path / "run")


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_measure_exactly_what_one_process_measures_on_the_same_weights(tmp_path):
    output_dir = tmp_path / "run"
    flags = tiny_flags(
        output_dir,
        "--max_train_steps",
        "2",
        "--checkpointing_steps",
        "2",
        "--eval_steps",
        "1",
        *EVAL,
        "--eval_guidance_scales",
        "1",
        "--use_ema",
        "--report_to",
        "tensorboard",
    )
    run = train_on_two_processes(flags)
    assert run.returncode == 0, run.stderr[-4000:]
    assert [step for step, _ in logged(output_dir, "eval/fd_digits")] == [1, 2]
    two_processes = read_json(output_dir / "evaluation" / "metrics.json")["rows"]

    # The finished run resumed on one process trains no further and evaluates the same weights again.
    shutil.rmtree(output_dir / "evaluation")
    train(flags + ["--resume_from_checkpoint", "latest"])
    one_process = read_json(output_dir / "evaluation" / "metrics.json")["rows"]
    keys = VALUES + [f"{key}_floor" for key in VALUES[:4]]
    assert [[row[key] for key in keys] for row in one_process] == [[row[key] for key in keys] for row in two_processes]
