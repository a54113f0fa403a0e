"""The IDX reader: the MNIST family's original files (Fashion-MNIST, MNIST, KMNIST, EMNIST), read offline with the Hub
datasets' columns, splits and class names."""

import gzip
import hashlib
import os
import struct

import datasets
import numpy as np
import pytest
import torch

from hf_ddpm.data import load_image_data
from hf_ddpm.idx import FASHION_MNIST_NAMES, find_idx_folder, idx_dataset, read_idx, read_idx_folder
from test_data import FASHION_NAMES  # the Hub dataset card's names, typed independently of the library

FASHION_FOLDER = find_idx_folder("fashion_mnist")
needs_fashion = pytest.mark.skipif(FASHION_FOLDER is None, reason="Fashion-MNIST's IDX files are not installed")


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes, written from the format's definition."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path, array: np.ndarray, compress: bool = True) -> str:
    path = str(path) + (".gz" if compress else "")
    with (gzip.open if compress else open)(path, "wb") as file:
        file.write(idx_bytes(array.astype(np.uint8)))
    return path


def write_folder(folder, train_count=12, test_count=6, side=28, classes=10, prefix="", test_prefix="t10k", seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for split, name, count in [("train", "train", train_count), ("test", test_prefix, test_count)]:
        images = rng.integers(0, 256, size=(count, side, side), dtype=np.uint8)
        labels = (np.arange(count) % classes).astype(np.uint8)
        write_idx(os.path.join(folder, f"{prefix}{name}-images-idx3-ubyte"), images)
        write_idx(os.path.join(folder, f"{prefix}{name}-labels-idx1-ubyte"), labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_returns_the_array_written(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "images-idx3-ubyte", array, compress)
    read = read_idx(path)
    assert read.shape == (2, 3, 4) and read.dtype == np.uint8 and np.array_equal(read, array)


def test_a_wrong_magic_number_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 2) + b"\x00" * 8)  # type 0x0d: floats
    with pytest.raises(ValueError, match=rf"{path}.*not an IDX file of unsigned bytes.*00000d01"):
        read_idx(path)


@pytest.mark.parametrize("delta, word", [(-5, "truncated"), (3, "longer than its header says")])
def test_a_file_of_the_wrong_length_is_an_error_naming_the_file(tmp_path, delta, word):
    content = idx_bytes(np.zeros((4, 5, 5), dtype=np.uint8))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content[:delta] if delta < 0 else content + b"\x00" * delta)
    with pytest.raises(ValueError, match=rf"{path} is {word}.*\(4, 5, 5\) = 100"):
        read_idx(path)


def test_a_cut_gzip_stream_is_an_error_naming_the_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((50, 28, 28), dtype=np.uint8))
    with open(path, "rb") as file:
        content = file.read()
    with open(path, "wb") as file:
        file.write(content[: len(content) // 2])
    with pytest.raises(ValueError, match=rf"Cannot read the IDX file {path}"):
        read_idx(path)


def test_images_and_labels_of_different_counts_are_an_error_naming_both(tmp_path):
    write_folder(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, dtype=np.uint8))
    with pytest.raises(
        ValueError,
        match=r"do not match: .*train-images-idx3-ubyte.gz holds 12 images, "
        r".*train-labels-idx1-ubyte.gz 11 labels",
    ):
        read_idx_folder(tmp_path, "train")


def test_a_missing_file_and_an_unknown_split_are_errors(tmp_path):
    write_folder(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match=r"no test labels file \(looked for t10k-labels-idx1-ubyte"):
        read_idx_folder(tmp_path, "test")
    with pytest.raises(ValueError, match=r"splits \['test', 'train'\]; got split='validation'"):
        read_idx_folder(tmp_path, "validation")


def test_an_mnist_folder_reads_both_splits_with_digit_names(tmp_path):
    arrays = write_folder(tmp_path)
    for split in ("train", "test"):
        data = read_idx_folder(tmp_path, split)
        assert np.array_equal(data.images, arrays[split][0]) and np.array_equal(data.labels, arrays[split][1])
        assert data.labels.dtype == np.int64 and data.names == tuple(str(digit) for digit in range(10))


def test_emnist_files_are_transposed_and_named_by_their_mapping(tmp_path):
    arrays = write_folder(tmp_path, classes=3, prefix="emnist-letters-", test_prefix="test")
    (tmp_path / "emnist-letters-mapping.txt").write_text("0 65 97\n1 66 98\n2 67 99\n")
    data = read_idx_folder(tmp_path, "test")
    assert np.array_equal(data.images, arrays["test"][0].transpose(0, 2, 1))  # stored column by column
    assert data.names == ("A", "B", "C")
    write_folder(tmp_path, classes=3, prefix="emnist-digits-", test_prefix="test")
    with pytest.raises(ValueError, match=r"several EMNIST splits \['digits', 'letters'\].*--dataset_config_name"):
        read_idx_folder(tmp_path, "train")
    assert read_idx_folder(tmp_path, "train", config="digits").names == ("0", "1", "2")


def test_kmnist_classes_are_named_by_its_class_map(tmp_path):
    write_folder(tmp_path)
    characters = "おきすつなはまやれを"
    rows = [f"{index},U+{ord(char):04X},{char}" for index, char in enumerate(characters)]
    (tmp_path / "kmnist_classmap.csv").write_text("index,codepoint,char\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert read_idx_folder(tmp_path, "train").names == tuple(characters)


def test_an_idx_folder_loads_as_training_data_at_any_resolution(tmp_path):
    arrays = write_folder(tmp_path, train_count=20)
    data = load_image_data(dataset_name=str(tmp_path), resolution=28)
    expected = torch.from_numpy(arrays["train"][0]).float()[:, None] / 127.5 - 1
    assert torch.equal(data.images, expected) and data.labels.tolist() == arrays["train"][1].tolist()
    assert data.id2label == {digit: str(digit) for digit in range(10)} and "IDX files in" in data.source
    resized = load_image_data(dataset_name=str(tmp_path), resolution=16, split="test", num_channels=3)
    assert resized.images.shape == (6, 3, 16, 16) and torch.equal(resized.images[:, 0], resized.images[:, 2])
    subset = load_image_data(dataset_name=str(tmp_path), resolution=28, max_samples=5, seed=3)
    rows = np.random.default_rng(3).permutation(20)[:5]  # the subset a Hub dataset's loading draws
    assert torch.equal(subset.images, expected[rows])
    with pytest.raises(ValueError, match=r"--image_column 'img'.*columns 'image' and 'label'"):
        load_image_data(dataset_name=str(tmp_path), resolution=28, image_column="img")


def test_idx_dataset_has_the_hub_datasets_columns_and_splits(tmp_path):
    arrays = write_folder(tmp_path)
    dataset = idx_dataset(tmp_path)
    assert set(dataset) == {"train", "test"} and len(dataset["train"]) == 12 and len(dataset["test"]) == 6
    assert dataset["train"].features == datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(digit) for digit in range(10)])}
    )
    first = dataset["test"][0]
    assert first["image"].mode == "L" and np.array_equal(np.asarray(first["image"]), arrays["test"][0][0])


@needs_fashion
def test_fashion_mnist_reads_offline_as_the_hub_dataset():
    train = read_idx_folder(FASHION_FOLDER, "train")
    test = read_idx_folder(FASHION_FOLDER, "test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert list(train.names) == FASHION_NAMES and list(FASHION_MNIST_NAMES) == FASHION_NAMES
    # The published files: the first training image is an ankle boot; the test labels' file, rebuilt, has its digest.
    assert train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert np.bincount(train.labels).tolist() == [6000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
    assert hashlib.sha256(idx_bytes(test.labels.astype(np.uint8))).hexdigest() == (  # the decompressed file
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
    )
    data = load_image_data(dataset_name="fashion_mnist", resolution=28, split="test")
    assert len(data) == 10000 and list(data.id2label.values()) == FASHION_NAMES
    assert torch.equal(data.images[0, 0], torch.from_numpy(test.images[0]).float() / 127.5 - 1)
