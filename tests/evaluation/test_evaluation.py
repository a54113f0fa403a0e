"""`hf_ddpm.evaluation`: each metric against an independent computation, the real-feature cache, the judges, a sweep
end to end, and every bad input refused before any sampling."""

import json
import warnings

import datasets
import numpy as np
import PIL.Image
import pytest
import scipy.linalg
import torch
import torchmetrics.image.fid
from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTForImageClassification, ViTImageProcessor

import hf_ddpm.cpu
from hf_ddpm.cli import main as cli_main
from hf_ddpm.data import load_image_data
from hf_ddpm.evaluation import (
    FRECHET_METRICS,
    DigitsFeatures,
    DinoV2Features,
    Evaluator,
    FeatureExtractor,
    InceptionFeatures,
    evaluate,
    frechet_distance,
    kernel_distance,
    precision_recall,
    real_features,
    sample_images,
    split_halves,
)
from hf_ddpm.evaluation.judges import (
    HELD_OUT_FRACTION,
    DigitClassifier,
    ImageClassifierJudge,
    class_agreement,
    digit_classifier,
    match_labels,
)
from hf_ddpm.evaluation.metrics import density_coverage
from hf_ddpm.evaluation.reference import SPLIT_SEED
from hf_ddpm.evaluation.report import plot_cfg_tradeoff, plot_quality_vs_steps
from hf_ddpm.evaluation.results import EvaluationResult, best_guidance
from hf_ddpm.models.unet_2d import DDPMUNet2DModel
from hf_ddpm.pipelines import DDPMCFGPipeline
from hf_ddpm.pipelines.pipeline_ddpm_cfg import image_grid
from hf_ddpm.schedulers import DDIMScheduler

DIGIT_NAMES = {i: str(i) for i in range(10)}


def gaussian_features(n, d, seed, shift=0.0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float64) * scale + shift


def independent_frechet(x, y):
    x, y = x.double().numpy(), y.double().numpy()
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def independent_mmd(x, y):
    """The unbiased MMD^2 with KID's kernel (x.y / d + 1)^3."""
    x, y = x.double().numpy(), y.double().numpy()
    k = lambda a, b: (a @ b.T / x.shape[1] + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * k(x, y).mean()
    )


def independent_precision_recall(real, fake, k):
    real, fake = real.double().numpy(), fake.double().numpy()

    def radii(points):
        distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
        return np.sort(distances, axis=1)[:, k]

    def covered(manifold, r, queries):
        distances = np.linalg.norm(queries[:, None] - manifold[None], axis=-1)
        return (distances <= r[None]).any(axis=1).mean()

    return covered(real, radii(real), fake), covered(fake, radii(fake), real)


# ---------------------------------------------------------------------------------------------------------------
# The metrics, against independent computations
# ---------------------------------------------------------------------------------------------------------------


def test_frechet_distance_matches_scipy_and_is_zero_for_identical_sets():
    real, fake = gaussian_features(300, 8, 0), gaussian_features(250, 8, 1, shift=0.3, scale=1.2)
    assert frechet_distance(real, fake) == pytest.approx(independent_frechet(real, fake), rel=1e-6)
    assert abs(frechet_distance(real, real.clone())) < 1e-6


@pytest.mark.parametrize("num_samples", [10, 16])  # 16 samples span 15 dimensions: still singular in 16
def test_frechet_distance_warns_at_or_below_the_feature_dimension(num_samples):
    with pytest.warns(UserWarning, match="no more samples than dimensions"):
        frechet_distance(gaussian_features(num_samples, 16, 0), gaussian_features(num_samples, 16, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frechet_distance(gaussian_features(17, 16, 0), gaussian_features(17, 16, 1))


def test_kernel_distance_is_the_unbiased_mmd_and_near_zero_for_one_distribution():
    real, fake = gaussian_features(200, 6, 0), gaussian_features(150, 6, 1, shift=0.5)
    kid, _ = kernel_distance(real, fake, subset_size=150, subsets=1)
    # One subset as large as the smaller set: all of it, in any order, so exactly the MMD of a 150-subset of real.
    assert kid == pytest.approx(independent_mmd(real[:150], fake), rel=0.5)  # subset of real is random
    same, _ = kernel_distance(real[:100], gaussian_features(100, 6, 2), subset_size=100, subsets=1)
    assert abs(same) < 0.2 * kid
    exact, _ = kernel_distance(real[:100], fake[:100], subset_size=100, subsets=3)
    assert exact == pytest.approx(independent_mmd(real[:100], fake[:100]), rel=1e-9)


def test_kernel_distance_does_not_warn_about_keeping_the_features_it_is_given():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernel_distance(gaussian_features(50, 6, 0), gaussian_features(50, 6, 1), subset_size=50, subsets=2)
    assert [str(warning.message) for warning in caught] == []


def test_precision_recall_matches_brute_force_and_the_textbook_cases():
    real, fake = gaussian_features(120, 5, 0), gaussian_features(90, 5, 1, shift=0.4, scale=0.7)
    assert precision_recall(real, fake, k=3) == pytest.approx(independent_precision_recall(real, fake, 3), abs=1e-12)
    assert precision_recall(real, real.clone(), k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
    # A collapsed generator: every sample on one real point. Perfect precision, almost no recall.
    precision, recall = precision_recall(real, real[:1].repeat(50, 1), k=3)
    assert precision == 1.0 and recall < 0.1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3)), "at least 2 real"),
        (lambda: frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4)), "differ in dimension"),
        (lambda: precision_recall(torch.zeros(3, 2), torch.zeros(3, 2), k=3), "more than 3 samples"),
        (lambda: precision_recall(torch.zeros(9, 2), torch.zeros(9, 2), k=0), "`k` must be a positive"),
        (lambda: kernel_distance(torch.zeros(9, 2), torch.zeros(9, 2), subset_size=1), "`subset_size` must be an"),
        (lambda: kernel_distance(torch.zeros(9, 2), torch.zeros(9, 2), subset_size=4.5), "`subset_size` must be an"),
        (lambda: kernel_distance(torch.zeros(9, 2), torch.zeros(9, 2), subsets=0), "`subsets` must be an integer"),
    ],
)
def test_metric_inputs_are_checked(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------------------------
# Feature spaces
# ---------------------------------------------------------------------------------------------------------------


class SmallFeatures(FeatureExtractor):
    """A tiny deterministic feature network standing in for Inception-V3 (whose weights are a download)."""

    name = "inception"
    num_features = 6

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(self.num_features), torch.nn.Tanh())
        self.net(torch.zeros(1, 1, 8, 8))

    def identity(self):
        return {"extractor": "small-test-net"}

    def forward(self, images):
        return self.net(images)


def test_digits_features_are_deterministic_and_separate_the_digits():
    first, second = DigitsFeatures(8), DigitsFeatures(8)
    assert torch.equal(first.weight, second.weight) and first.identity() == second.identity()
    assert first.held_out_accuracy > 0.9
    # Buffers alone say where it computes (it has no parameters): images go to them on any device.
    assert DigitsFeatures(8).to("meta").device == torch.device("meta")
    digits = load_image_data(dataset_name="digits", resolution=8)
    features = first.features(digits.images / 2 + 0.5)
    assert features.shape == (1797, 64)
    # Closer to their own digit's mean than to any other digit's, for most digits.
    means = torch.stack([features[digits.labels == d].mean(0) for d in range(10)])
    nearest = torch.cdist(features, means).argmin(1)
    assert (nearest == digits.labels).float().mean() > 0.85


def test_inception_without_torch_fidelity_or_weights_says_how_to_get_them():
    with pytest.raises(ValueError, match=r"hf-ddpm\[fid\]|Inception-V3 weights"):
        InceptionFeatures()


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dinov2")
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=28, patch_size=14
    )
    Dinov2Model(config).save_pretrained(folder)
    return str(folder)


def test_dinov2_features_are_the_cls_token_of_the_resized_normalised_images(tiny_dinov2):
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    features = DinoV2Features(tiny_dinov2).features(images)
    model = Dinov2Model.from_pretrained(tiny_dinov2).eval()
    rgb = torch.nn.functional.interpolate(images.repeat(1, 3, 1, 1), size=(224, 224), mode="bicubic", antialias=True)
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        expected = model(pixel_values=(rgb.clamp(0, 1) - mean) / std).pooler_output
    assert features.shape == (3, 16)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_dinov2_weights_that_cannot_be_loaded_say_how_to_pass_a_folder(tmp_path):
    with pytest.raises(ValueError, match="--dinov2-model PATH"):
        DinoV2Features(str(tmp_path / "no-such-folder"))


# ---------------------------------------------------------------------------------------------------------------
# Real features: split in two, cached by identity
# ---------------------------------------------------------------------------------------------------------------


class CountingFeatures(SmallFeatures):
    calls = 0

    def forward(self, images):
        CountingFeatures.calls += 1
        return super().forward(images)


def test_real_features_are_cached_and_a_different_dataset_is_recomputed(tmp_path):
    images = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    extractor = CountingFeatures()
    first = real_features(images, extractor, {"dataset": "a"}, cache_dir=str(tmp_path), batch_size=64)
    calls = CountingFeatures.calls
    again = real_features(images, extractor, {"dataset": "a"}, cache_dir=str(tmp_path), batch_size=64)
    assert CountingFeatures.calls == calls and again.cache_path == first.cache_path
    assert torch.equal(again.reference, first.reference) and torch.equal(again.held_out, first.held_out)
    # The halves are the fixed permutation's, 20 and 20, as split_halves gives them to training.
    order = torch.randperm(40, generator=torch.Generator().manual_seed(SPLIT_SEED))
    held_out, reference = split_halves(40)
    assert torch.equal(held_out, order[:20]) and torch.equal(reference, order[20:])
    torch.testing.assert_close(first.held_out, extractor.features(images[held_out]))
    torch.testing.assert_close(first.reference, extractor.features(images[reference]))
    # Other pixels under the same name: another identity, computed afresh.
    calls = CountingFeatures.calls
    changed = images.clone()
    changed[0, 0, 0, 0] = 0.5
    other = real_features(changed, extractor, {"dataset": "a"}, cache_dir=str(tmp_path), batch_size=64)
    assert CountingFeatures.calls == calls + 1 and other.cache_path != first.cache_path


def test_a_cache_file_of_something_else_or_damaged_is_recomputed_not_reused(tmp_path, caplog):
    images = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    extractor = SmallFeatures()
    first = real_features(images, extractor, {"dataset": "a"}, cache_dir=str(tmp_path))
    # Another identity written under this file's name: detected by the identity stored inside.
    np.savez(
        first.cache_path,
        identity=np.array(json.dumps({"other": 1})),
        reference=np.zeros((10, 6), np.float32),
        held_out=np.zeros((10, 6), np.float32),
    )
    again = real_features(images, extractor, {"dataset": "a"}, cache_dir=str(tmp_path))
    assert torch.equal(again.reference, first.reference)
    with open(first.cache_path, "wb") as file:
        file.write(b"truncated")
    assert torch.equal(
        real_features(images, extractor, {"dataset": "a"}, cache_dir=str(tmp_path)).held_out, first.held_out
    )
    # A cache file cut short (a full disk, a killed copy): its zip directory is gone.
    with open(first.cache_path, "rb") as file:
        whole = file.read()
    with open(first.cache_path, "wb") as file:
        file.write(whole[: len(whole) // 2])
    recomputed = real_features(images, extractor, {"dataset": "a"}, cache_dir=str(tmp_path))
    assert torch.equal(recomputed.held_out, first.held_out)
    assert "holds features of something else" in caplog.text and "could not be read" in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# Judges of agreement
# ---------------------------------------------------------------------------------------------------------------


def test_labels_match_exactly_first_then_case_insensitively_when_unique():
    assert match_labels({0: "Bag", 1: "shirt"}, {5: "bag", 6: "Shirt", 7: "shirt"}, "judge") == {0: 5, 1: 7}
    with pytest.raises(ValueError, match=r"do not cover the pipeline's classes \['Coat'\]"):
        match_labels({0: "Bag", 1: "Coat"}, {0: "bag", 1: "shirt"}, "judge")
    with pytest.raises(ValueError, match=r"\['SHIRT'\]"):  # two case-insensitive candidates: ambiguous
        match_labels({0: "SHIRT"}, {0: "Shirt", 1: "shirt"}, "judge")
    assert class_agreement(np.array([5, 7, 5]), np.array([0, 1, 1]), {0: 5, 1: 7}) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A ViT image classifier of the ten digits, saved with its image processor: random, but a real model."""
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        id2label=DIGIT_NAMES,
        label2id={v: k for k, v in DIGIT_NAMES.items()},
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(folder)
    return str(folder)


def test_image_classifier_judge_predicts_what_the_model_reads(tiny_classifier):
    judge = ImageClassifierJudge(tiny_classifier)
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    processor = ViTImageProcessor.from_pretrained(tiny_classifier)
    model = ViTForImageClassification.from_pretrained(tiny_classifier).eval()
    arrays = list((images.repeat(1, 3, 1, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    with torch.no_grad():
        expected = model(**processor(images=arrays, return_tensors="pt")).logits.argmax(-1).numpy()
    np.testing.assert_array_equal(judge.classify(images), expected)
    assert judge.labels == DIGIT_NAMES


# ---------------------------------------------------------------------------------------------------------------
# evaluate(): a sweep end to end on a tiny digits model
# ---------------------------------------------------------------------------------------------------------------


def tiny_pipeline(conditional=True, channels=1):
    torch.manual_seed(0)
    unet = DDPMUNet2DModel(
        sample_size=8,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(False, True),
        num_class_embeds=10 if conditional else None,
        norm_num_groups=4,
    )
    pipe = DDPMCFGPipeline(unet, DDIMScheduler(num_train_timesteps=50), id2label=DIGIT_NAMES if conditional else None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sample_images_are_the_same_whatever_the_batching():
    pipe = tiny_pipeline()
    class_ids = np.arange(6) % 10
    whole = sample_images(pipe, range(6), class_ids, 6, seed=3, guidance_scale=2.0, num_inference_steps=2)
    odd_then_even = [
        sample_images(pipe, part, class_ids, 2, seed=3, guidance_scale=2.0, num_inference_steps=2)
        for part in (range(0, 6, 2), range(1, 6, 2))
    ]
    torch.testing.assert_close(whole[0::2], odd_then_even[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(whole[1::2], odd_then_even[1], atol=1e-6, rtol=0)


def test_evaluate_sweeps_every_combination_and_writes_metrics_and_plots(tmp_path):
    pipe = tiny_pipeline()
    result = evaluate(
        pipe,
        "digits",
        num_samples=30,
        guidance_scales=[1.0, 3.0],
        steps=[2, 3],
        schedulers=["ddim", "dpm"],
        batch_size=16,
        seed=1,
        out_dir=tmp_path / "eval",
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    assert [(r["scheduler"], r["steps"], r["guidance_scale"]) for r in result.rows] == [
        (name, steps, scale) for name in ("ddim", "dpm") for steps in (2, 3) for scale in (1.0, 3.0)
    ]
    row = result.rows[0]
    for key in ("fd_digits", "fd_digits_floor", "kid", "kid_floor", "precision", "recall", "agreement"):
        assert np.isfinite(row[key]), key
    assert row["fd_digits_floor"] == result.floors["fd_digits_floor"] and result.floors["floor_num_samples"] == 30
    # An untrained model is far from the digits: many times the real-vs-real floor.
    assert row["fd_digits"] > 3 * row["fd_digits_floor"]
    # The row's figure is the Fréchet distance of these very samples' features against the reference half.
    evaluator = Evaluator(pipe, "digits", num_samples=30, metrics=["fd_digits"], cache_dir=str(tmp_path / "cache"))
    images = sample_images(pipe, range(30), evaluator.class_ids, 16, seed=1, num_inference_steps=2)
    fake = evaluator.extractors["digits"].features(images)
    reference = evaluator.reals["digits"].reference
    assert row["fd_digits"] == pytest.approx(independent_frechet(reference, fake), rel=1e-5)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result.rows)) and saved["floors"]["fd_digits_floor"] > 0
    for plot in ("cfg_tradeoff.png", "quality_vs_steps.png", "samples_by_guidance.png"):
        with PIL.Image.open(tmp_path / "eval" / plot) as image:
            assert image.width > 100 and image.height > 50
    # Deterministic: the same call gives the same numbers.
    again = evaluate(
        pipe,
        "digits",
        num_samples=30,
        guidance_scales=[1.0],
        steps=[2],
        schedulers=["ddim"],
        batch_size=7,
        seed=1,
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    assert again.rows[0]["fd_digits"] == pytest.approx(row["fd_digits"], rel=1e-6)
    assert again.rows[0]["agreement"] == row["agreement"]


def test_bf16_sampling_runs_the_unet_in_bf16_and_draws_the_fp32_images_to_bf16_rounding(tmp_path):
    pipe = tiny_pipeline()
    conv_dtypes = []
    pipe.unet.conv_in.register_forward_hook(lambda module, args, output: conv_dtypes.append(output.dtype))
    kwargs = dict(num_samples=20, steps=[3], schedulers=["ddim"], guidance_scales=[2.0], seed=4, progress=False)
    kwargs.update(metrics=["fd_digits"], cache_dir=str(tmp_path))
    fp32 = evaluate(pipe, "digits", mixed_precision="no", **kwargs)
    assert set(conv_dtypes) == {torch.float32} and fp32.info["mixed_precision"] == "no"
    conv_dtypes.clear()
    bf16 = evaluate(pipe, "digits", mixed_precision="bf16", **kwargs)
    assert set(conv_dtypes) == {torch.bfloat16} and bf16.info["mixed_precision"] == "bf16"
    # bf16 keeps 8 bits of mantissa: the images move by about a hundredth, and what they show does not change.
    difference = (fp32.grids[0].float() - bf16.grids[0].float()).abs()
    assert 0 < difference.max() < 0.1 and difference.mean() < 0.01
    assert bf16.rows[0]["fd_digits"] == pytest.approx(fp32.rows[0]["fd_digits"], rel=0.1)


@pytest.mark.parametrize(
    "choice, device, native, resolved",
    [
        ("auto", "cpu", True, "bf16"),
        ("auto", "cpu", False, "no"),
        ("auto", "cuda", False, "bf16"),
        ("no", "cpu", True, "no"),
    ],
)
def test_auto_precision_is_bf16_only_where_it_pays(choice, device, native, resolved, monkeypatch):
    monkeypatch.setattr(hf_ddpm.cpu, "cpu_bf16_support", lambda: hf_ddpm.cpu.CpuBf16Support(native, ""))
    assert hf_ddpm.cpu.resolve_mixed_precision(choice, device) == resolved


def plotted_figures(monkeypatch) -> list:
    """The matplotlib figures that the report's plots save, kept open for the test to read."""
    from matplotlib.figure import Figure

    figures, savefig = [], Figure.savefig

    def keep_and_save(figure, *args, **kwargs):
        figures.append(figure)
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep_and_save)
    return figures


def test_the_sample_grid_has_a_row_per_class_even_when_the_classes_have_no_names(tmp_path):
    unet = tiny_pipeline().unet
    pipe = DDPMCFGPipeline(unet, DDIMScheduler(num_train_timesteps=50))  # class-conditional, its classes unnamed
    pipe.set_progress_bar_config(disable=True)
    evaluate(
        pipe,
        "digits",
        metrics=["fd_digits"],
        num_samples=40,
        steps=[2],
        out_dir=tmp_path / "eval",
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    with PIL.Image.open(tmp_path / "eval" / "samples_by_guidance.png") as grid:
        # Under a 14 px header, 4 images of each of 10 classes, one row per class named by its id: 8 px images
        # enlarged 8x to 64 px, 16 px apart.
        expected = image_grid([PIL.Image.new("L", (8, 8))] * 40, rows=10, names=[str(i) for i in range(10)])
        assert grid.size == (expected.width, 14 + expected.height) and expected.height == 10 * 64 + 9 * 16
        names = np.asarray(grid.convert("L"))[14:, : grid.width - (4 * 64 + 3 * 16)]
        assert all((names[row * 80 : row * 80 + 64] < 128).any() for row in range(10))


def test_the_plots_tell_every_line_apart_even_where_two_samplers_draw_the_same_curve(tmp_path, monkeypatch):
    # DDIM and Euler step alike on the same timesteps: the same distances, one curve on top of the other. A sweep
    # with and without a guidance interval: two agreement curves.
    rows = [
        {
            "scheduler": name,
            "steps": steps,
            "guidance_scale": scale,
            "guidance_interval": interval,
            "fd_digits": 2.0 + 1 / steps + scale,
            "agreement": 0.9 + scale / 100,
        }
        for name in ("ddim", "euler")
        for steps in (5, 10)
        for scale in (1.0, 2.0)
        for interval in (None, (0.2, 0.8))
    ]
    result = EvaluationResult(rows=rows, floors={"fd_digits_floor": 1.5}, info={})
    figures = plotted_figures(monkeypatch)
    plot_cfg_tradeoff(result, "fd_digits", tmp_path / "cfg_tradeoff.png")
    plot_quality_vs_steps(result, "fd_digits", tmp_path / "quality_vs_steps.png")
    tradeoff, steps = figures
    labels = [text.get_text() for text in tradeoff.axes[0].get_legend().get_texts()]
    assert len(labels) == len(set(labels)) and sum(label.startswith("agreement") for label in labels) == 8
    lines = [line for line in steps.axes[0].get_lines() if line.get_label() != "real-vs-real floor (1.5)"]
    assert len(lines) == 8 and len({(line.get_marker(), line.get_linestyle()) for line in lines}) == 8


@pytest.mark.parametrize("resolution", [8, 16])
def test_the_digits_judge_reads_held_out_real_digits_as_the_readme_says(resolution):
    """The judge behind every agreement figure (README: 99.1% at the demo's 16x16), measured here on the real digits
    it never saw: the quarter that `train_test_split` holds out with the same seed, stratified by digit."""
    from sklearn.model_selection import train_test_split

    judge = digit_classifier(resolution)
    digits = load_image_data(dataset_name="digits", resolution=resolution)
    _, held_out, _, truth = train_test_split(
        digits.images,
        digits.labels.numpy(),
        test_size=HELD_OUT_FRACTION,
        random_state=0,
        stratify=digits.labels.numpy(),
    )
    accuracy = float((judge.predict(held_out) == truth).mean())
    assert len(truth) == 450 and accuracy == judge.held_out_accuracy and accuracy >= 0.98


def test_the_best_guidance_buys_nearly_all_the_agreement_for_the_least_distance():
    # A sweep like the demo's: the lowest distance (guidance 1) reads 3 points below the top agreement; of the scales
    # within 1 point of it, 1.3 is the closest to the data.
    sweep = [
        {"guidance_scale": 1.0, "fd_digits": 1.49, "agreement": 0.964},
        {"guidance_scale": 1.3, "fd_digits": 2.00, "agreement": 0.991},
        {"guidance_scale": 1.5, "fd_digits": 2.90, "agreement": 0.994},
        {"guidance_scale": 2.0, "fd_digits": 6.00, "agreement": 1.000},
    ]
    assert best_guidance(sweep, "fd_digits")["guidance_scale"] == 1.3
    # Without agreement (an unconditional or unjudged sweep): the lowest distance.
    unjudged = [{key: row[key] for key in ("guidance_scale", "fd_digits")} for row in sweep]
    assert best_guidance(unjudged, "fd_digits")["guidance_scale"] == 1.0


def test_generated_images_are_featurised_and_judged_a_batch_at_a_time(monkeypatch):
    """A feature network or judge on an accelerator holds one batch's activations, not the whole evaluation's. By
    default an evaluation draws as many samples as the held-out half of the real digits holds (898 of 1797)."""
    seen = []

    class BatchRecordingFeatures(SmallFeatures):
        def forward(self, images):
            seen.append(("features", images.shape[0]))
            return super().forward(images)

    classify = DigitClassifier.classify
    monkeypatch.setattr(
        DigitClassifier,
        "classify",
        lambda judge, images: seen.append(("judge", len(images))) or classify(judge, images),
    )
    evaluator = Evaluator(
        tiny_pipeline(),
        "digits",
        metrics=["fid", "agreement"],
        cache_dir="",
        feature_extractors={"fid": BatchRecordingFeatures()},
    )
    assert evaluator.num_samples == 898 and evaluator.floors["floor_num_samples"] == 898
    seen.clear()
    real = load_image_data(dataset_name="digits", resolution=8)
    values = evaluator.measure(real.images[:898] / 2 + 0.5)
    batches = [256, 256, 256, 130]
    assert seen == [("features", size) for size in batches] + [("judge", size) for size in batches]
    # The digits as drawn are not the classes asked for (i % 10), so agreement is about chance, whole and batched.
    expected = (classify(digit_classifier(8), real.images[:898] / 2 + 0.5) == evaluator.class_ids).mean()
    assert values["agreement"] == pytest.approx(expected)


@pytest.mark.slow
def test_a_feature_network_passed_in_runs_the_fid_path_and_gives_zero_on_the_real_images(tmp_path):
    """FID's own features are a download; the same code path with a small network: the reference half of the real
    images scored as if generated is at distance ~0, the held-out half at the floor."""
    pipe = tiny_pipeline()
    evaluator = Evaluator(
        pipe,
        "digits",
        metrics=["fid", "kid"],
        num_samples=898,
        cache_dir="",
        feature_extractors={"fid": SmallFeatures()},
    )
    real = load_image_data(dataset_name="digits", resolution=8).images / 2 + 0.5
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(SPLIT_SEED))
    scores = evaluator.measure(real[order[899:]][:898])
    assert abs(scores["fid"]) < 1e-6
    held_out = evaluator.measure(real[order[:898]])
    assert held_out["fid"] == pytest.approx(scores["fid_floor"], rel=1e-9) and scores["fid_floor"] > 0
    features = SmallFeatures().features
    assert scores["fid_floor"] == pytest.approx(
        independent_frechet(features(real[order[898:]]), features(real[order[:898]])), rel=1e-5
    )


def test_fid_asks_torchmetrics_for_the_reference_resize_and_caches_by_it(monkeypatch):
    # The weights are a download (torch-fidelity's); what is ours is how the network is asked for.
    built = {}

    class RecordingInception(torch.nn.Module):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, antialias=True):
            super().__init__()
            built.update(name=name, features_list=features_list, antialias=antialias)

    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", RecordingInception)
    features = InceptionFeatures()
    assert built == {"name": "inception-v3-compat", "features_list": ["2048"], "antialias": False}
    assert features.identity()["resize"] == "tf1-bilinear"  # features cached with another resize are not reused


@pytest.mark.filterwarnings("ignore:Fréchet distance on 20 samples")
def test_the_first_distance_listed_is_the_one_reported_and_kid_shares_its_space():
    pipe = tiny_pipeline()
    for metrics, distance in [(["fd_digits", "fid", "kid"], "fd_digits"), (["fid", "fd_digits", "kid"], "fid")]:
        result = evaluate(
            pipe,
            "digits",
            metrics=metrics,
            num_samples=20,
            steps=[2],
            batch_size=20,
            cache_dir="",
            feature_extractors={"fid": SmallFeatures()},
            progress=False,
        )
        assert result.distance == distance and list(result.info["feature_spaces"])[0] == FRECHET_METRICS[distance]
        assert [key for key in result.rows[0] if key in FRECHET_METRICS] == metrics[:2]


@pytest.mark.slow
def test_fd_dinov2_and_agreement_with_a_transformers_classifier(tiny_dinov2, tiny_classifier, tmp_path):
    result = evaluate(
        tiny_pipeline(),
        "digits",
        metrics=["fd_dinov2", "precision_recall", "agreement"],
        num_samples=12,
        steps=[2],
        batch_size=12,
        dinov2_model=tiny_dinov2,
        classifier=tiny_classifier,
        cache_dir=str(tmp_path),
        progress=False,
    )
    row = result.rows[0]
    assert {"fd_dinov2", "fd_dinov2_floor", "precision", "recall", "agreement"} <= set(row)
    assert result.info["feature_spaces"]["dinov2"]["extractor"] == "dinov2"
    # Agreement and the distance, recomputed from the same samples outside the evaluation code.
    pipe = tiny_pipeline()
    images = sample_images(pipe, range(12), np.arange(12) % 10, 12, seed=0, num_inference_steps=2)
    model = ViTForImageClassification.from_pretrained(tiny_classifier).eval()
    processor = ViTImageProcessor.from_pretrained(tiny_classifier)
    arrays = list((images.repeat(1, 3, 1, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    with torch.no_grad():
        read_as = model(**processor(images=arrays, return_tensors="pt")).logits.argmax(-1).numpy()
    assert row["agreement"] == np.mean(read_as == np.arange(12) % 10)
    reference = real_features(
        load_image_data(dataset_name="digits", resolution=8).images / 2 + 0.5,
        DinoV2Features(tiny_dinov2),
        {},
        cache_dir="",
    ).reference
    fake = DinoV2Features(tiny_dinov2).features(images)
    assert row["fd_dinov2"] == pytest.approx(independent_frechet(reference, fake), rel=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: a clear error before any sampling
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_sampling(monkeypatch):
    """Any pipeline call fails the test: the errors must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("sampled before the bad input was refused")

    monkeypatch.setattr(DDPMCFGPipeline, "__call__", refuse)


@pytest.fixture
def unlabelled_dataset(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (6, 8, 8), dtype=np.uint8)
    images = [PIL.Image.fromarray(p) for p in pixels]
    dataset = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    dataset.save_to_disk(str(tmp_path / "unlabelled"))
    return str(tmp_path / "unlabelled")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(metrics=["fid", "sharpness"]), r"unknown \['sharpness'\]"),
        (dict(schedulers=["ddim", "heun"]), "unknown 'heun'"),
        (dict(num_samples=1), "`num_samples` must be an integer >= 2"),
        (dict(guidance_scales=[float("nan")]), "finite numbers >= 0"),
        (dict(steps=[0]), "integers >= 1"),
        (dict(batch_size=0), "`batch_size` must be an integer >= 1"),
        (dict(mixed_precision="fp16"), "`mixed_precision` must be one of no, bf16, auto; got 'fp16'"),
        (dict(metrics=["fd_digits"], num_samples=3, dataset="digits-but-not"), "Could not load"),
        (dict(metrics=["agreement"], dataset="UNLABELLED", num_samples=3), "dataset with class labels"),
        # The floor beside each distance has no more held-out real digits than 898 (of 1797).
        (dict(num_samples=899), "`num_samples` must be at most 898"),
        (dict(metrics=["fd_dinov2"], dinov2_model="no/such-model-here"), "--dinov2-model PATH"),
        (dict(metrics=["fid"]), r"hf-ddpm\[fid\]|Inception-V3 weights"),
        (dict(metrics=["agreement"], classifier="no/such-classifier"), "could not be loaded.*local folder"),
    ],
)
def test_bad_input_is_refused_before_sampling(kwargs, message, no_sampling, unlabelled_dataset, tmp_path, hub_server):
    kwargs = {"dataset": "digits", "num_samples": 10, "cache_dir": str(tmp_path), "progress": False, **kwargs}
    if kwargs["dataset"] == "UNLABELLED":
        kwargs["dataset"] = unlabelled_dataset
    with pytest.raises(ValueError, match=message):
        evaluate(tiny_pipeline(), **kwargs)


def test_agreement_on_an_unconditional_model_is_refused(no_sampling):
    with pytest.raises(ValueError, match="`agreement` needs a class-conditional model"):
        evaluate(tiny_pipeline(conditional=False), "digits", metrics=["fd_digits", "agreement"], num_samples=10)
    with pytest.raises(ValueError, match="other than 1 needs a class-conditional model"):
        evaluate(tiny_pipeline(conditional=False), "digits", guidance_scales=[2.0], num_samples=10)


def test_a_classifier_that_does_not_know_the_classes_is_refused(tiny_classifier, no_sampling, tmp_path):
    pipe = tiny_pipeline()
    pipe.register_to_config(id2label={i: name for i, name in enumerate("abcdefghij")})
    with pytest.raises(ValueError, match="do not cover the pipeline's classes"):
        evaluate(
            pipe, "digits", metrics=["agreement"], classifier=tiny_classifier, num_samples=10, cache_dir=str(tmp_path)
        )


def test_agreement_elsewhere_than_digits_is_judged_by_a_classifier_of_the_dataset(no_sampling, tmp_path):
    """The default judge learns the dataset's own classes (`domain.py`); a pipeline of other classes is refused."""
    folder = tmp_path / "shirts"
    images = [PIL.Image.fromarray(np.full((8, 8), 40 * i, np.uint8)) for i in range(6)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("ab"))})
    datasets.Dataset.from_dict({"image": images, "label": [0, 1] * 3}, features=features).save_to_disk(str(folder))
    with pytest.raises(ValueError, match=r"domain CNN .*do not cover the pipeline's classes \['0', '1'"):
        evaluate(tiny_pipeline(), str(folder), metrics=["agreement"], num_samples=3, cache_dir=str(tmp_path))


def test_a_dataset_of_other_channels_is_refused(no_sampling, tmp_path):
    with pytest.raises(ValueError, match="1-channel images of 8px but the model makes 3-channel"):
        evaluate(tiny_pipeline(channels=3), "digits", metrics=["fd_dinov2"], num_samples=10, cache_dir=str(tmp_path))


@pytest.mark.parametrize("sample_size", [(8, 8), [8, 8]])  # as code gives a pair, and as config.json does
def test_a_square_sample_size_pair_evaluates_as_its_side(sample_size, tmp_path):
    pipe = tiny_pipeline()
    pipe.unet.register_to_config(sample_size=sample_size)
    evaluator = Evaluator(pipe, "digits", metrics=["fd_digits"], num_samples=10, cache_dir=str(tmp_path))
    assert evaluator.info["feature_spaces"]["digits"]["resolution"] == 8
    pipe.unet.register_to_config(sample_size=(8, 16))
    with pytest.raises(ValueError, match=r"square model; its sample_size is \(8, 16\)"):
        Evaluator(pipe, "digits", metrics=["fd_digits"], num_samples=10, cache_dir=str(tmp_path))


def test_fd_digits_on_another_dataset_is_refused(no_sampling, unlabelled_dataset, tmp_path):
    with pytest.raises(ValueError, match="`fd_digits` compares with the built-in digits only"):
        evaluate(tiny_pipeline(), unlabelled_dataset, metrics=["fd_digits"], num_samples=3, cache_dir=str(tmp_path))


def test_cli_evaluate_prints_the_table_and_refuses_unknown_choices(tmp_path, capsys):
    tiny_pipeline().save_pretrained(tmp_path / "model")
    cli_main(
        [
            "evaluate",
            str(tmp_path / "model"),
            "--dataset",
            "digits",
            "--num-samples",
            "12",
            "--steps",
            "2",
            "--guidance-scale",
            "1",
            "2",
            "--batch-size",
            "12",
            "--mixed-precision",
            "bf16",
            "--timestep-spacing",
            "trailing",
            "--out",
            str(tmp_path / "eval"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    assert "fd_digits" in printed and "real-vs-real floor" in printed
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = saved["rows"]
    assert len(rows) == 2 and saved["info"]["mixed_precision"] == "bf16"
    assert saved["info"]["timestep_spacing"] == "trailing"
    best = best_guidance(rows, "fd_digits")
    assert f"best guidance for {best['scheduler']}, 2 steps: {best['guidance_scale']:g}" in printed
    for argv, message in [
        (["--metrics", "sharpness"], "invalid choice: 'sharpness'"),
        (["--scheduler", "heun"], "invalid choice: 'heun'"),
        (["--mixed-precision", "fp16"], "invalid choice: 'fp16'"),
        (["--num-samples", "1"], "hf-ddpm evaluate: error: --num-samples must be an integer >= 2"),
        (["--device", "tpu:7"], "--device 'tpu:7' cannot be used here"),
        # the data loader's message, in this command's flags (it speaks the training script's --dataset_name)
        (["--dataset", str(tmp_path / "none")], f"error: --dataset '{tmp_path / 'none'}' looks like a local path"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["evaluate", str(tmp_path / "model"), "--dataset", "digits", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
@pytest.mark.parametrize(
    "path, message",
    [
        ("afile", "{flag} '{path}' is a file; it must be a folder (created if missing)"),
        ("afile/sub", "{flag} '{path}' cannot be written: '{afile}' is not a writable folder"),
    ],
    ids=["a-file", "under-a-file"],
)
def test_cli_evaluate_refuses_an_unwritable_folder_before_loading_the_model(tmp_path, capsys, flag, path, message):
    (tmp_path / "afile").write_text("not a folder")
    # A model that does not exist: the folders are checked first, not after the whole sweep.
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["evaluate", str(tmp_path / "no-model"), "--dataset", "digits", flag, str(tmp_path / path)])
    assert exit_info.value.code == 2
    expected = message.format(flag=flag, path=tmp_path / path, afile=tmp_path / "afile")
    assert f"hf-ddpm evaluate: error: {expected}" in capsys.readouterr().err


def test_cli_evaluate_checks_every_step_count_against_each_scheduler_before_sampling(tmp_path, capsys, no_sampling):
    tiny_pipeline().save_pretrained(tmp_path / "model")  # 50 training steps
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            [
                "evaluate",
                str(tmp_path / "model"),
                "--dataset",
                "digits",
                "--num-samples",
                "12",
                "--steps",
                "2",
                "100",
                "--scheduler",
                "ddim",
                "dpm",
                "--out",
                str(tmp_path / "eval"),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
    assert exit_info.value.code == 2
    message = "--steps must be an integer in [1, 50] (the scheduler's training steps), got 100."
    assert f"hf-ddpm evaluate: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


def test_cli_evaluate_refuses_columns_and_configs_of_the_builtin_digits(tmp_path, capsys, no_sampling):
    tiny_pipeline().save_pretrained(tmp_path / "model")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            [
                "evaluate",
                str(tmp_path / "model"),
                "--dataset",
                "digits",
                "--num-samples",
                "12",
                "--image-column",
                "image",
                "--dataset-config",
                "mnist",
                "--out",
                str(tmp_path / "eval"),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
    assert exit_info.value.code == 2
    assert (
        "hf-ddpm evaluate: error: The built-in 'digits' dataset has no configurations or columns to choose: leave "
        "out --dataset-config and --image-column."
    ) in capsys.readouterr().err


def test_density_and_coverage_match_their_definition_and_are_measured_by_name(tmp_path):
    """Naeem et al.'s density and coverage, against a direct double loop over their definition (k = 5)."""
    real, fake = torch.randn(40, 3, generator=torch.Generator().manual_seed(0)), torch.randn(30, 3) * 1.5
    radius = [sorted(float((r - other).norm()) for other in real)[5] for r in real]  # [0] is the point itself
    balls = [[float((f - r).norm()) <= radius[i] for i, r in enumerate(real)] for f in fake]
    density, coverage = density_coverage(real, fake)
    assert density == pytest.approx(sum(map(sum, balls)) / (5 * len(fake)))
    assert coverage == pytest.approx(np.mean([any(ball[i] for ball in balls) for i in range(len(real))]))
    row = evaluate(
        tiny_pipeline(),
        "digits",
        metrics=["fd_digits", "density_coverage"],
        num_samples=10,
        steps=[2],
        cache_dir=str(tmp_path),
        progress=False,
    ).rows[0]
    assert 0 <= row["coverage"] <= 1 and row["density"] >= 0 and 0 < row["coverage_floor"] <= 1
