"""The offline judge and feature space of any labelled dataset: a small CNN trained on the dataset's own training images
(`hf_ddpm.evaluation.domain`), its accuracy on real images it never saw, its cache, and `fd_domain` in `evaluate`."""

import os

import numpy as np
import pytest
import torch

from hf_ddpm.data import load_image_data
from hf_ddpm.evaluation import domain as domain_module, evaluate, split_halves
from hf_ddpm.evaluation.domain import DomainFeatures, domain_classifier
from hf_ddpm.idx import find_idx_folder
from test_evaluation import tiny_pipeline
from test_idx import write_idx

DIGIT_NAMES = {digit: str(digit) for digit in range(10)}


def digits_halves(resolution=8):
    data = load_image_data(dataset_name="digits", resolution=resolution)
    held_out, reference = split_halves(len(data))
    return data.select(held_out, "held-out"), data.select(reference, "reference")


@pytest.fixture(scope="module")
def digits_judge(tmp_path_factory):
    train, test = digits_halves()
    cache = str(tmp_path_factory.mktemp("domain-cache"))
    judge, fingerprint = domain_classifier(
        train.images, train.labels, test.images, test.labels, DIGIT_NAMES, "reference half", cache_dir=cache
    )
    return judge, fingerprint, cache


def test_the_digits_judge_reads_real_digits_it_never_saw(digits_judge):
    judge, _, _ = digits_judge
    _, test = digits_halves()
    assert judge.test_accuracy > 0.9  # a CNN on 8x8 digits
    predicted = judge.classify(test.images / 2 + 0.5)
    assert float((predicted == test.labels.numpy()).mean()) == pytest.approx(judge.test_accuracy, abs=1e-6)
    assert "on real reference half" in judge.describe() and f"{judge.test_accuracy:.1%}" in judge.describe()


def test_a_trained_judge_is_read_from_the_cache_and_retrained_for_other_data(digits_judge, monkeypatch):
    judge, fingerprint, cache = digits_judge
    train, test = digits_halves()
    trained = []
    monkeypatch.setattr(domain_module, "_train", lambda *args: trained.append(1))
    again, same = domain_classifier(
        train.images, train.labels, test.images, test.labels, DIGIT_NAMES, "reference half", cache_dir=cache
    )
    assert not trained and same == fingerprint and again.test_accuracy == judge.test_accuracy
    for name, tensor in judge.network.state_dict().items():
        assert torch.equal(tensor, again.network.state_dict()[name])
    _, other = domain_classifier(
        train.images[:-1], train.labels[:-1], test.images, test.labels, DIGIT_NAMES, "reference half", cache_dir=cache
    )
    assert trained == [1] and other != fingerprint


def test_a_truncated_cache_file_trains_again(digits_judge, tmp_path, monkeypatch):
    _, fingerprint, cache = digits_judge
    path = os.path.join(cache, f"domain-classifier-{fingerprint}.safetensors")
    broken = tmp_path / "cache"
    broken.mkdir()
    (broken / os.path.basename(path)).write_bytes(open(path, "rb").read()[:100])
    trained = []
    monkeypatch.setattr(domain_module, "_train", lambda *args: trained.append(1))
    train, test = digits_halves()
    domain_classifier(train.images, train.labels, test.images, test.labels, DIGIT_NAMES, "x", cache_dir=str(broken))
    assert trained == [1] and os.path.getsize(broken / os.path.basename(path)) > 100  # rewritten whole


def test_the_feature_space_is_the_judges_hidden_layer_and_names_its_weights(digits_judge):
    judge, fingerprint, _ = digits_judge
    features = DomainFeatures(judge, fingerprint)
    _, test = digits_halves()
    out = features.features(test.images[:5] / 2 + 0.5)
    assert out.shape == (5, features.num_features) and (out >= 0).all()
    assert features.identity()["trained_on"] == fingerprint and len(features.identity()["weights_sha256"]) == 64
    with pytest.raises(ValueError, match=r"takes \(N, 1, 8, 8\) images, got \(2, 1, 16, 16\)"):
        features.features(torch.zeros(2, 1, 16, 16))


def test_a_judge_needs_two_classes():
    images = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match="at least two classes; the dataset has 1"):
        domain_classifier(
            images,
            torch.zeros(4, dtype=torch.long),
            images,
            torch.zeros(4, dtype=torch.long),
            {0: "a"},
            "x",
            cache_dir="",
        )


def digits_idx_folder(folder, resolution=8):
    """The digits as an IDX dataset: its held-out half as the training split, its reference half as the test split."""
    train, test = digits_halves(resolution)
    os.makedirs(folder)
    for split, data in [("train", train), ("t10k", test)]:
        pixels = ((data.images[:, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
        write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte"), pixels)
        write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte"), data.labels.numpy().astype(np.uint8))
    return folder


@pytest.mark.filterwarnings("ignore:Fréchet distance on 40 samples")
def test_evaluate_measures_a_labelled_dataset_against_its_test_split_offline(tmp_path):
    """`fd_domain`, KID, precision/recall and agreement on a dataset with a test split: the defaults of a
    class-conditional model on any dataset but the built-in digits, with no download."""
    folder = digits_idx_folder(str(tmp_path / "idx"))  # a folder path, as a user passes one
    result = evaluate(
        tiny_pipeline(),
        folder,
        split="test",
        num_samples=40,
        guidance_scales=[1.0],
        steps=[2],
        cache_dir=str(tmp_path / "cache"),
        progress=False,
    )
    row = result.rows[0]
    for key in ("fd_domain", "fd_domain_floor", "kid", "precision", "recall", "agreement", "agreement_floor"):
        assert key in row
    assert row["fd_domain"] > 3 * row["fd_domain_floor"]  # an untrained model's noise, far from real digits
    assert row["agreement"] < 0.5 and row["agreement_floor"] > 0.9  # the judge reads real test digits right
    assert result.info["judge"].startswith("domain CNN") and "test split, 899 images" in result.info["judge"]
    assert "agreement_floor" in result.table()


@pytest.mark.slow
@pytest.mark.skipif(find_idx_folder("fashion_mnist") is None, reason="Fashion-MNIST's IDX files are not installed")
def test_a_judge_of_fashion_mnist_reads_most_real_test_images_right(tmp_path):
    """A tenth of the recipe's training images keeps the test short; the bound is for that judge (the demo's, on all
    60,000, is reported by every evaluation)."""
    train = load_image_data(dataset_name="fashion_mnist", resolution=28, max_samples=6000)
    test = load_image_data(dataset_name="fashion_mnist", resolution=28, split="test", max_samples=2000)
    judge, _ = domain_classifier(
        train.images, train.labels, test.images, test.labels, train.id2label, "test split", cache_dir=""
    )
    assert judge.test_accuracy > 0.8
    assert judge.labels[0] == "T - shirt / top" and judge.labels[9] == "Ankle boot"
