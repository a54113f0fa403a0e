import io

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from datasets import ClassLabel, Features, Image, Value

from hf_ddpm.data import ImageData, load_image_data, random_flip

# The schemas of the Hub's fashion_mnist (image: Image, label: ClassLabel) and cifar10 (img: Image, label: ClassLabel).
FASHION_NAMES = [
    "T - shirt / top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_FEATURES = Features({"image": Image(), "label": ClassLabel(names=FASHION_NAMES)})
CIFAR_FEATURES = Features({"img": Image(), "label": ClassLabel(names=CIFAR_NAMES)})


def _pixels(count: int, shape: tuple, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def _expected(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W[, C]) -> the (N, C, H, W) tensor in [-1, 1] that loading must give when no resize happens."""
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.fixture
def fashion():
    pixels, labels = _pixels(12, (28, 28), seed=0), [i % 10 for i in range(12)]
    images = [PIL.Image.fromarray(array, mode="L") for array in pixels]
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=FASHION_FEATURES), pixels, labels


@pytest.fixture
def cifar():
    pixels, labels = _pixels(10, (32, 32, 3), seed=1), [9 - i for i in range(10)]
    images = [PIL.Image.fromarray(array, mode="RGB") for array in pixels]
    return datasets.Dataset.from_dict({"img": images, "label": labels}, features=CIFAR_FEATURES), pixels, labels


def _load(path, tmp_path, **kwargs) -> ImageData:
    return load_image_data(str(path), cache_dir=str(tmp_path / "cache"), **kwargs)


def test_fashion_mnist_schema_from_parquet_file_loads_grayscale_with_class_names(fashion, tmp_path):
    dataset, pixels, labels = fashion
    dataset.to_parquet(str(tmp_path / "fashion.parquet"))
    data = _load(tmp_path / "fashion.parquet", tmp_path, resolution=28)
    assert data.images.shape == (12, 1, 28, 28) and data.images.dtype == torch.float32
    assert torch.equal(data.images, _expected(pixels))
    assert data.labels.tolist() == labels and data.labels.dtype == torch.int64
    assert data.id2label == dict(enumerate(FASHION_NAMES)) and data.num_classes == 10


def test_cifar10_schema_from_save_to_disk_loads_rgb_from_img_column(cifar, tmp_path):
    dataset, pixels, labels = cifar
    dataset.save_to_disk(str(tmp_path / "cifar"))
    data = _load(tmp_path / "cifar", tmp_path, resolution=32)
    assert torch.equal(data.images, _expected(pixels))
    assert data.labels.tolist() == labels and data.id2label[0] == "airplane"
    assert "save_to_disk" in data.source


def test_parquet_directory_loads_through_datasets(cifar, tmp_path):
    dataset, pixels, labels = cifar
    (tmp_path / "parquet").mkdir()
    dataset.to_parquet(str(tmp_path / "parquet" / "train-00000.parquet"))
    data = _load(tmp_path / "parquet", tmp_path, resolution=32)
    assert torch.equal(data.images, _expected(pixels)) and data.labels.tolist() == labels


def test_dataset_dict_on_disk_gives_the_requested_split_and_lists_splits_when_missing(fashion, cifar, tmp_path):
    splits = datasets.DatasetDict({"train": fashion[0], "test": fashion[0].select(range(3))})
    splits.save_to_disk(str(tmp_path / "splits"))
    assert len(_load(tmp_path / "splits", tmp_path, resolution=28, split="test")) == 3
    with pytest.raises(ValueError, match=r"no split 'validation'.*\['train', 'test'\]"):
        _load(tmp_path / "splits", tmp_path, resolution=28, split="validation")


def _write_image_folder(root, classes: dict) -> None:
    for class_name, arrays in classes.items():
        (root / class_name).mkdir(parents=True)
        for index, array in enumerate(arrays):
            PIL.Image.fromarray(array).save(root / class_name / f"{index}.png")


def test_train_data_dir_takes_classes_from_sub_folders(tmp_path):
    cats, dogs = _pixels(2, (16, 16, 3), seed=2), _pixels(3, (16, 16, 3), seed=3)
    _write_image_folder(tmp_path / "pets", {"cat": cats, "dog": dogs})
    data = load_image_data(train_data_dir=str(tmp_path / "pets"), resolution=16, cache_dir=str(tmp_path / "cache"))
    assert data.id2label == {0: "cat", 1: "dog"}
    by_label = {label: data.images[data.labels == label] for label in (0, 1)}
    # Compare as sets of images: the order of files within a class is the builder's business.
    for label, arrays in ((0, cats), (1, dogs)):
        expected = sorted(_expected(arrays).flatten(1).tolist())
        assert sorted(by_label[label].flatten(1).tolist()) == expected


def test_image_folder_without_class_folders_is_unlabelled(tmp_path):
    (tmp_path / "flat").mkdir()
    for index, array in enumerate(_pixels(3, (8, 8), seed=4)):
        PIL.Image.fromarray(array, mode="L").save(tmp_path / "flat" / f"{index}.png")
    data = _load(tmp_path / "flat", tmp_path, resolution=8)
    assert data.labels is None and data.id2label is None and data.images.shape == (3, 1, 8, 8)


def test_sixteen_bit_grayscale_is_scaled_to_its_depth_not_clipped(tmp_path):
    (tmp_path / "deep").mkdir()
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    PIL.Image.fromarray(ramp).save(tmp_path / "deep" / "ramp.png")
    assert PIL.Image.open(tmp_path / "deep" / "ramp.png").mode == "I;16"
    data = _load(tmp_path / "deep", tmp_path, resolution=8)
    assert torch.equal(data.images, _expected(np.rint(ramp / 257).astype(np.uint8)[None]))
    assert data.images.shape == (1, 1, 8, 8) and abs(data.images.mean().item()) < 0.02


def test_grayscale_and_colour_images_together_give_three_equal_channels_for_the_gray_ones(tmp_path):
    gray, colour = _pixels(1, (8, 8), seed=5)[0], _pixels(1, (8, 8, 3), seed=6)[0]
    _write_image_folder(tmp_path / "mixed", {"a": [gray], "b": [colour]})
    data = load_image_data(train_data_dir=str(tmp_path / "mixed"), resolution=8, cache_dir=str(tmp_path / "cache"))
    assert data.images.shape == (2, 3, 8, 8)
    gray_image = data.images[data.labels == 0][0]
    assert torch.equal(gray_image, _expected(np.stack([gray] * 3, axis=-1)[None])[0])
    assert torch.equal(data.images[data.labels == 1][0], _expected(colour[None])[0])


def test_num_channels_converts_with_pil(cifar, fashion, tmp_path):
    cifar[0].save_to_disk(str(tmp_path / "cifar"))
    gray = _load(tmp_path / "cifar", tmp_path, resolution=32, num_channels=1)
    expected = np.stack([np.asarray(PIL.Image.fromarray(array).convert("L")) for array in cifar[1]])
    assert torch.equal(gray.images, _expected(expected))
    fashion[0].save_to_disk(str(tmp_path / "fashion"))
    rgb = _load(tmp_path / "fashion", tmp_path, resolution=28, num_channels=3)
    assert rgb.images.shape == (12, 3, 28, 28)
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2]) and torch.equal(rgb.images[:, :1], _expected(fashion[1]))


def test_center_crop_cuts_the_sides_and_plain_resize_keeps_the_whole_image(tmp_path):
    wide = np.zeros((20, 40), dtype=np.uint8)
    wide[:, :10] = 255  # a white band on the left quarter
    dataset = datasets.Dataset.from_dict({"image": [PIL.Image.fromarray(wide)]}, features=Features({"image": Image()}))
    dataset.save_to_disk(str(tmp_path / "wide"))
    cropped = _load(tmp_path / "wide", tmp_path, resolution=10, center_crop=True).images
    squashed = _load(tmp_path / "wide", tmp_path, resolution=10, center_crop=False).images
    assert cropped.shape == squashed.shape == (1, 1, 10, 10)
    assert cropped[..., 2:].max() == -1  # the band fell outside the centre square (bar resampling at its edge)
    assert squashed[..., 0].min() == 1 and squashed[..., -1].max() == -1


def test_upscaling_resizes_to_the_resolution(fashion, tmp_path):
    fashion[0].save_to_disk(str(tmp_path / "fashion"))
    data = _load(tmp_path / "fashion", tmp_path, resolution=32)
    expected = np.stack([np.asarray(PIL.Image.fromarray(a).resize((32, 32), PIL.Image.BICUBIC)) for a in fashion[1]])
    assert torch.equal(data.images, _expected(expected))


def test_digits_are_the_1797_scikit_learn_digits_in_ten_classes():
    data = load_image_data("digits", resolution=16)
    assert data.images.shape == (1797, 1, 16, 16)
    assert data.id2label == {i: str(i) for i in range(10)} and sorted(set(data.labels.tolist())) == list(range(10))
    assert data.images.min() == -1 and data.images.max() == 1
    from sklearn.datasets import load_digits

    assert data.labels.tolist() == load_digits().target.tolist()


def test_max_samples_draws_a_seeded_random_subset_not_the_first_examples(tmp_path):
    digits = load_image_data("digits", resolution=8)
    subset = load_image_data("digits", resolution=8, max_samples=100, seed=3)
    assert len(subset) == 100 and subset.labels.tolist() != digits.labels[:100].tolist()
    # Every image of the subset is one of the dataset's, with its own label.
    matches = (subset.images.flatten(1)[:, None] == digits.images.flatten(1)[None]).all(-1)
    assert matches.any(1).all()
    same = load_image_data("digits", resolution=8, max_samples=100, seed=3)
    assert torch.equal(same.images, subset.images) and torch.equal(same.labels, subset.labels)
    assert not torch.equal(load_image_data("digits", resolution=8, max_samples=100, seed=4).labels, subset.labels)

    # An image folder lists its classes in order: the first examples would all be cats.
    for name in ("cat", "dog"):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for index, pixels in enumerate(_pixels(6, (8, 8), seed=len(name) + ord(name[0]))):
            PIL.Image.fromarray(pixels).save(tmp_path / "pets" / name / f"{index}.png")
    data = load_image_data(
        train_data_dir=str(tmp_path / "pets"), resolution=8, cache_dir=str(tmp_path / "cache"), max_samples=6
    )
    assert len(data) == 6 and set(data.labels.tolist()) == {0, 1}


def test_digits_at_native_size_map_ink_0_to_16_onto_minus_one_to_one():
    from sklearn.datasets import load_digits

    data = load_image_data("digits", resolution=8)
    expected = torch.from_numpy(np.rint(load_digits().images * 255 / 16)).float()[:, None] / 127.5 - 1
    assert torch.allclose(data.images, expected)


def test_explicit_columns_override_detection_and_cifar100_prefers_fine_label(tmp_path):
    pixels = _pixels(4, (8, 8), seed=7)
    features = Features(
        {
            "img": Image(),
            "sketch": Image(),
            "coarse_label": ClassLabel(names=["a", "b"]),
            "fine_label": ClassLabel(names=["c", "d", "e", "f"]),
        }
    )
    images = [PIL.Image.fromarray(array) for array in pixels]
    dataset = datasets.Dataset.from_dict(
        {"img": images, "sketch": images[::-1], "coarse_label": [0, 1, 0, 1], "fine_label": [3, 2, 1, 0]},
        features=features,
    )
    dataset.save_to_disk(str(tmp_path / "both"))
    detected = _load(tmp_path / "both", tmp_path, resolution=8)
    assert detected.labels.tolist() == [3, 2, 1, 0] and torch.equal(detected.images, _expected(pixels))
    chosen = _load(tmp_path / "both", tmp_path, resolution=8, image_column="sketch", label_column="coarse_label")
    assert chosen.labels.tolist() == [0, 1, 0, 1] and chosen.id2label == {0: "a", 1: "b"}
    assert torch.equal(chosen.images, _expected(pixels[::-1].copy()))


def test_integer_label_column_names_classes_by_id(tmp_path):
    images = [PIL.Image.fromarray(array) for array in _pixels(3, (8, 8), seed=8)]
    features = Features({"image": Image(), "label": Value("int32")})
    dataset = datasets.Dataset.from_dict({"image": images, "label": [0, 2, 2]}, features=features)
    dataset.save_to_disk(str(tmp_path / "d"))
    data = _load(tmp_path / "d", tmp_path, resolution=8)
    assert data.labels.tolist() == [0, 2, 2] and data.id2label == {0: "0", 1: "1", 2: "2"}


def test_random_flip_mirrors_some_images_reproducibly():
    images = torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    flipped = random_flip(images, generator=torch.Generator().manual_seed(1))
    mirrored = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(images, flipped)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(images, flipped)])
    assert torch.all(mirrored ^ kept) and 16 < int(mirrored.sum()) < 48
    assert torch.equal(flipped, random_flip(images, generator=torch.Generator().manual_seed(1)))


# ----- bad input -----
def test_unknown_dataset_says_what_was_tried(hub_server, tmp_path):
    tried = "not a local path, not the built-in 'digits', and loading it from the Hub failed: DatasetNotFoundError"
    with pytest.raises(ValueError, match=tried):
        load_image_data("no-such-dataset-anywhere", cache_dir=str(tmp_path / "cache"))


def test_missing_local_path_is_reported_as_such(tmp_path):
    with pytest.raises(ValueError, match="looks like a local path, but nothing exists there"):
        load_image_data(str(tmp_path / "missing.parquet"))
    with pytest.raises(ValueError, match="--train_data_dir .* is not a directory"):
        load_image_data(train_data_dir=str(tmp_path / "missing"))


def test_missing_image_column_lists_the_columns(tmp_path):
    features = Features({"text": Value("string"), "label": ClassLabel(names=["x"])})
    datasets.Dataset.from_dict({"text": ["a"], "label": [0]}, features=features).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"no image column .*: its columns are text \(.*string.*\), label \(Class"):
        _load(tmp_path / "d", tmp_path)
    with pytest.raises(ValueError, match=r"--image_column 'text' holds .*, not images"):
        _load(tmp_path / "d", tmp_path, image_column="text")


def test_missing_or_non_integer_label_column_is_rejected(fashion, tmp_path):
    fashion[0].save_to_disk(str(tmp_path / "fashion"))
    with pytest.raises(ValueError, match=r"--label_column 'class' is not a column .*: its columns are image .*, label"):
        _load(tmp_path / "fashion", tmp_path, label_column="class")
    images = [PIL.Image.fromarray(array) for array in _pixels(2, (8, 8), seed=9)]
    features = Features({"image": Image(), "caption": Value("string")})
    datasets.Dataset.from_dict({"image": images, "caption": ["a", "b"]}, features=features).save_to_disk(
        str(tmp_path / "captions")
    )
    with pytest.raises(ValueError, match="--label_column 'caption' holds .*string.*class ids"):
        _load(tmp_path / "captions", tmp_path, label_column="caption")


def test_empty_dataset_is_rejected(tmp_path):
    (tmp_path / "no_images").mkdir()
    with pytest.raises(ValueError, match="The image folder .*no_images is empty"):
        load_image_data(train_data_dir=str(tmp_path / "no_images"), cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resolution": 0}, "--resolution must be a positive integer"),
        ({"num_channels": 2}, "num_channels must be 1"),
        ({"max_samples": 0}, "max_samples must be a positive integer"),
        ({"train_data_dir": "images"}, "Give exactly one of --dataset_name"),
        ({"split": "test"}, "'digits' dataset has one split, 'train'"),
        ({"image_column": "image"}, "'digits' dataset has no configurations or columns to choose: leave out --image"),
        ({"label_column": "label", "dataset_config_name": "x"}, "leave out --dataset_config_name and --label_column"),
    ],
)
def test_bad_arguments_are_rejected_before_loading(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_image_data("digits", **kwargs)


def test_no_dataset_at_all_is_rejected():
    with pytest.raises(ValueError, match="Give exactly one of --dataset_name"):
        load_image_data()


# ----- images that cannot be read -----
def _truncated_png(path) -> None:
    PIL.Image.fromarray(_pixels(1, (16, 16, 3), seed=10)[0]).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CORRUPT_FILES = {
    "truncated.png": _truncated_png,
    "random_bytes.jpg": lambda path: path.write_bytes(np.random.default_rng(11).bytes(600)),
    "empty.png": lambda path: path.write_bytes(b""),
}


@pytest.mark.parametrize("bad_name", sorted(CORRUPT_FILES))
def test_train_data_dir_with_a_corrupt_file_names_it_and_skipping_keeps_labels_aligned(bad_name, tmp_path, caplog):
    cats, dogs = _pixels(2, (8, 8, 3), seed=12), _pixels(3, (8, 8, 3), seed=13)
    _write_image_folder(tmp_path / "pets", {"cat": cats, "dog": dogs})
    bad = tmp_path / "pets" / "cat" / bad_name
    CORRUPT_FILES[bad_name](bad)
    kwargs = dict(train_data_dir=str(tmp_path / "pets"), resolution=8, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=rf"Cannot read the image {bad} in the image folder .*--skip_corrupt_images"):
        load_image_data(**kwargs)

    data = load_image_data(**kwargs, skip_corrupt_images=True)
    assert len(data) == 5 and data.id2label == {0: "cat", 1: "dog"}
    for label, arrays in ((0, cats), (1, dogs)):  # every image kept beside its own label
        assert sorted(data.images[data.labels == label].flatten(1).tolist()) == sorted(
            _expected(arrays).flatten(1).tolist()
        )
    assert f"Left out 1 of the 6 images in the image folder {tmp_path / 'pets'} that cannot be read" in caplog.text
    assert str(bad) in caplog.text


def test_local_image_folder_dataset_skips_every_kind_of_corrupt_file_and_names_the_first_few(tmp_path, caplog):
    (tmp_path / "flat").mkdir()
    pixels = _pixels(3, (8, 8), seed=14)
    for index, array in enumerate(pixels):
        PIL.Image.fromarray(array, mode="L").save(tmp_path / "flat" / f"{index}.png")
    for name, write in CORRUPT_FILES.items():
        write(tmp_path / "flat" / name)
    with pytest.raises(
        ValueError,
        match=r"Cannot read the image .*flat/(empty.png|random_bytes.jpg|truncated.png) "
        r"in the local dataset .*: (OSError|UnidentifiedImageError)",
    ):
        _load(tmp_path / "flat", tmp_path, resolution=8)

    data = _load(tmp_path / "flat", tmp_path, resolution=8, skip_corrupt_images=True)
    assert data.labels is None and data.images.shape == (3, 1, 8, 8)
    assert sorted(data.images.flatten(1).tolist()) == sorted(_expected(pixels).flatten(1).tolist())
    assert "Left out 3 of the 6 images" in caplog.text
    assert all(str(tmp_path / "flat" / name) in caplog.text for name in CORRUPT_FILES)


def _with_broken_bytes(pixels: np.ndarray, bad_rows: dict) -> datasets.Dataset:
    """A dataset of the images in `pixels` with integer labels, label i for image i, whose rows in `bad_rows` hold
    the given bytes instead of an image."""
    images = []
    for row, array in enumerate(pixels):
        buffer = io.BytesIO()
        PIL.Image.fromarray(array, mode="L").save(buffer, format="PNG")
        images.append({"bytes": bad_rows.get(row, buffer.getvalue()), "path": None})
    features = Features({"image": Image(), "label": Value("int64")})
    return datasets.Dataset.from_dict({"image": images, "label": list(range(len(pixels)))}, features=features)


def test_parquet_with_broken_bytes_names_the_example_and_column_and_skipping_keeps_labels_aligned(tmp_path, caplog):
    pixels = _pixels(6, (8, 8), seed=15)
    good = io.BytesIO()
    PIL.Image.fromarray(pixels[4], mode="L").save(good, format="PNG")
    bad_rows = {1: good.getvalue()[:40], 4: b"not an image at all"}
    _with_broken_bytes(pixels, bad_rows).to_parquet(str(tmp_path / "broken.parquet"))
    with pytest.raises(ValueError, match=r"Cannot read the image example 1 \(column 'image'\) in the parquet file "):
        _load(tmp_path / "broken.parquet", tmp_path, resolution=8)

    data = _load(tmp_path / "broken.parquet", tmp_path, resolution=8, skip_corrupt_images=True)
    kept = [0, 2, 3, 5]
    assert data.labels.tolist() == kept and torch.equal(data.images, _expected(pixels[kept]))
    assert "Left out 2 of the 6 images" in caplog.text
    assert "example 1 (column 'image'), example 4 (column 'image')" in caplog.text


def test_save_to_disk_with_broken_bytes_names_the_dataset_row_also_in_a_max_samples_subset(tmp_path):
    pixels = _pixels(20, (8, 8), seed=16)
    _with_broken_bytes(pixels, {13: b"\x89PNG\r\n\x1a\n broken"}).save_to_disk(str(tmp_path / "saved"))
    # The subset of 15 images holds row 13 (checked below), at another position: the message names the row.
    subset = datasets.load_from_disk(str(tmp_path / "saved")).shuffle(seed=0).select(range(15))
    assert 13 in subset["label"] and subset["label"].index(13) != 13
    with pytest.raises(ValueError, match=r"image example 13 \(column 'image'\) in the dataset saved with save_to_disk"):
        _load(tmp_path / "saved", tmp_path, resolution=8, max_samples=15, seed=0)

    # Skipping leaves the same subset that datasets' shuffle draws, less the broken image.
    data = _load(tmp_path / "saved", tmp_path, resolution=8, max_samples=15, seed=0, skip_corrupt_images=True)
    expected = [label for label in subset["label"] if label != 13]
    assert data.labels.tolist() == expected and torch.equal(data.images, _expected(pixels[expected]))


def test_parquet_pointing_at_a_missing_file_names_that_file(tmp_path):
    paths = []
    for index, array in enumerate(_pixels(3, (8, 8), seed=17)):
        paths.append(str(tmp_path / f"{index}.png"))
        PIL.Image.fromarray(array, mode="L").save(paths[-1])
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
    # Parquet keeps local images as paths (save_to_disk would copy their bytes in).
    datasets.Dataset.from_dict({"image": paths, "label": [0, 1, 2]}, features=features).to_parquet(
        str(tmp_path / "by_path.parquet")
    )
    (tmp_path / "1.png").unlink()
    with pytest.raises(ValueError, match=rf"Cannot read the image {tmp_path / '1.png'} in .*FileNotFoundError"):
        _load(tmp_path / "by_path.parquet", tmp_path, resolution=8)
    data = _load(tmp_path / "by_path.parquet", tmp_path, resolution=8, skip_corrupt_images=True)
    assert data.labels.tolist() == [0, 2]


def test_skipping_when_no_image_can_be_read_is_an_error(tmp_path):
    (tmp_path / "broken").mkdir()
    for name, write in CORRUPT_FILES.items():
        write(tmp_path / "broken" / name)
    with pytest.raises(ValueError, match="None of the 3 images in the local dataset .* can be read"):
        _load(tmp_path / "broken", tmp_path, resolution=8, skip_corrupt_images=True)


# Needs training/train.py to pass its --skip_corrupt_images to load_image_data; skipped until it does. Remove the skip
# once train.py is wired.


def test_training_stops_at_a_corrupt_image_and_with_skip_corrupt_images_trains_without_it(tmp_path, caplog):
    from accelerate.state import AcceleratorState, GradientState

    from hf_ddpm.pipelines import DDPMCFGPipeline
    from hf_ddpm.training import train as train_script

    cats, dogs = _pixels(5, (8, 8, 3), seed=18), _pixels(5, (8, 8, 3), seed=19)
    _write_image_folder(tmp_path / "pets", {"cat": cats, "dog": dogs})
    _truncated_png(tmp_path / "pets" / "dog" / "truncated.png")
    flags = [
        "--train_data_dir",
        str(tmp_path / "pets"),
        "--cache_dir",
        str(tmp_path / "cache"),
        "--resolution",
        "8",
        "--model_config",
        "tiny",
        "--train_batch_size",
        "4",
        "--max_train_steps",
        "1",
        "--num_inference_steps",
        "2",
        "--eval_batch_size",
        "2",
        "--save_images_steps",
        "1000",
        "--checkpointing_steps",
        "1000",
        "--report_to",
        "none",
    ]

    def train(*extra: str) -> str:
        try:
            return train_script.main([*flags, *extra])
        finally:  # as a new process would start
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()

    truncated = tmp_path / "pets" / "dog" / "truncated.png"
    with pytest.raises(ValueError, match=rf"Cannot read the image {truncated} .*--skip_corrupt_images"):
        train("--output_dir", str(tmp_path / "stopped"))
    output_dir = train("--output_dir", str(tmp_path / "run"), "--skip_corrupt_images")
    assert "Left out 1 of the 11 images" in caplog.text and str(truncated) in caplog.text
    assert DDPMCFGPipeline.from_pretrained(output_dir).config.id2label == {0: "cat", 1: "dog"}
