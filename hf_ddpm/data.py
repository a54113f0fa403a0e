"""Training images: a Hub dataset, a local dataset, an image folder or scikit-learn's digits, decoded once into one
tensor in [-1, 1].

Small image datasets (MNIST-like, CIFAR-like, digits) fit in memory many times over, so every image is decoded,
resized and cropped once, up front. The training loop then only indexes a tensor: no decoding workers compete with
the model for the CPU, and every epoch sees exactly the same pixels.
"""

import logging
import os
from dataclasses import dataclass
from typing import Iterable, Optional

import datasets
import numpy as np
import PIL.Image
import torch
from datasets.data_files import EmptyDatasetError

from .idx import INSTALL_HINT, find_idx_folder, is_idx_folder, read_idx_folder

logger = logging.getLogger(__name__)

DIGITS = "digits"
# Column names the Hub's image datasets use (fashion_mnist: image/label, cifar10: img/label, cifar100: fine_label).
IMAGE_COLUMN_NAMES = ("image", "img")
LABEL_COLUMN_NAMES = ("label", "labels", "fine_label")
LOCAL_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}
GRAYSCALE_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# 16-bit grayscale (PNG and TIFF of depth 16 open as one of these); PIL's convert("L") would clip them at 255.
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
RESAMPLE = PIL.Image.Resampling.BICUBIC
# How many of the images left out by skip_corrupt_images the log names.
UNREADABLE_NAMES_SHOWN = 5


@dataclass
class ImageData:
    """Decoded training images and their labels.

    Args:
        images (`torch.Tensor`): `(N, C, H, W)` float32 in [-1, 1].
        labels (`torch.Tensor`, *optional*): `(N,)` int64 class ids, or `None` for unlabelled data.
        id2label (`dict[int, str]`, *optional*): class id -> name, for every class (`None` for unlabelled data).
        source (`str`): what was loaded, for logs and the model card.
    """

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    id2label: Optional[dict]
    source: str

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.id2label is None else len(self.id2label)

    def __len__(self) -> int:
        return self.images.shape[0]

    def select(self, indices: torch.Tensor, source: str) -> "ImageData":
        """The images (and labels) at `indices`, every class name kept; `source` says what they are."""
        labels = None if self.labels is None else self.labels[indices]
        return ImageData(images=self.images[indices], labels=labels, id2label=self.id2label, source=source)


def load_image_data(
    dataset_name: Optional[str] = None,
    dataset_config_name: Optional[str] = None,
    train_data_dir: Optional[str] = None,
    image_column: Optional[str] = None,
    label_column: Optional[str] = None,
    resolution: int = 32,
    center_crop: bool = False,
    num_channels: Optional[int] = None,
    cache_dir: Optional[str] = None,
    split: str = "train",
    max_samples: Optional[int] = None,
    seed: int = 0,
    skip_corrupt_images: bool = False,
) -> ImageData:
    """Load a dataset of images (and class labels, when it has them) into memory, ready to train on.

    Args:
        dataset_name (`str`, *optional*):
            A Hub dataset id (`"fashion_mnist"`, `"cifar10"`, ...), a local path that `datasets` reads (a parquet or
            arrow file, a folder of parquet files or of images, a folder written by `save_to_disk`), a folder of the
            MNIST family's IDX files (Fashion-MNIST, MNIST, KMNIST, EMNIST; see `hf_ddpm.idx`), or `"digits"`:
            scikit-learn's 1,797 8x8 handwritten digits, shipped inside its wheel. `"fashion_mnist"` and `"mnist"`
            read the dataset's original IDX files where Debian's package installed them (the same images, labels
            and class names as the Hub dataset, without a download), and the Hub otherwise.
        dataset_config_name (`str`, *optional*): the dataset's configuration, for Hub datasets that have several.
        train_data_dir (`str`, *optional*): a folder of images, one sub-folder per class (instead of `dataset_name`).
        image_column (`str`, *optional*): the column holding the images; by default "image", "img" or the first
            column of `datasets.Image` type.
        label_column (`str`, *optional*): the column holding class ids (`ClassLabel` or integers); by default the
            `ClassLabel` column, preferring "label", "labels" and "fine_label". Without one the data is unlabelled.
        resolution (`int`): side of the square training images.
        center_crop (`bool`): resize the shorter side to `resolution` and cut the centre square, keeping the aspect
            ratio. Otherwise the whole image is resized to a square. (A random crop, as diffusers'
            `train_unconditional.py` does, would here be drawn once at load time and frozen for the whole run, which
            is no augmentation at all; the two agree on square images such as MNIST's and CIFAR's.)
        num_channels (`int`, *optional*): 1 (grayscale) or 3 (RGB); by default 1 when every image is grayscale.
        cache_dir (`str`, *optional*): where `datasets` caches downloads and converted files.
        split (`str`): which split to load.
        max_samples (`int`, *optional*): keep a random subset of `max_samples` examples (drawn with `seed`; a
            dataset's first examples are often all of one class).
        seed (`int`): the seed of that subset.
        skip_corrupt_images (`bool`): leave out the images that cannot be read (truncated, corrupt, empty or missing
            files, broken bytes), with their labels, and log how many there were and the first few of them. By
            default the first such image stops loading with a ValueError naming it.

    Returns:
        [`ImageData`]

    Raises:
        `ValueError`: before any decoding, for an argument out of range, a dataset that cannot be found (saying what
        was tried), a configuration or column given for the built-in digits, a missing image or label column
        (listing the columns), a label column that does not hold integer class ids, or an empty dataset; while
        decoding, for an image that cannot be read, naming its file (or, for images stored as bytes, its example and
        column), unless `skip_corrupt_images`.
    """
    _check_arguments(dataset_name, train_data_dir, resolution, num_channels, max_samples)
    if train_data_dir is None and dataset_name == DIGITS and not os.path.exists(DIGITS):
        if split != "train":
            raise ValueError(f"The built-in {DIGITS!r} dataset has one split, 'train'; got split={split!r}.")
        given = [
            flag
            for flag, value in [
                ("--dataset_config_name", dataset_config_name),
                ("--image_column", image_column),
                ("--label_column", label_column),
            ]
            if value is not None
        ]
        if given:  # scikit-learn's digits are one array: nothing would read these, and ignoring them would mislead
            raise ValueError(
                f"The built-in {DIGITS!r} dataset has no configurations or columns to choose: leave out "
                f"{' and '.join(given)}."
            )
        return _load_digits(resolution, center_crop, num_channels, max_samples, seed)
    idx_folder = _idx_folder(dataset_name) if train_data_dir is None else None
    if idx_folder is not None:
        return _load_idx(
            idx_folder,
            dataset_config_name,
            split,
            image_column,
            label_column,
            resolution,
            center_crop,
            num_channels,
            max_samples,
            seed,
        )

    dataset, source = _load_dataset(dataset_name, dataset_config_name, train_data_dir, cache_dir, split)
    rows = np.arange(len(dataset))  # the dataset's own example numbers, to name an image that cannot be read
    if max_samples is not None and max_samples < len(dataset):
        # The subset that dataset.shuffle(seed=seed).select(range(max_samples)) draws, keeping its row numbers.
        rows = np.random.default_rng(seed).permutation(len(dataset))[:max_samples]
        dataset = dataset.select(rows)
    if len(dataset) == 0:
        raise ValueError(f"No examples to train on in the {source} (split {split!r}).")
    image_column = _find_image_column(dataset.features, image_column)
    label_column = _find_label_column(dataset.features, label_column)
    labels, id2label = _read_labels(dataset, label_column) if label_column is not None else (None, None)

    encoded = dataset.with_format("arrow")[image_column].to_pylist()  # {"bytes", "path"} per image, not decoded yet
    unreadable = []  # (position, name) of each image left out
    pil_images = _decode(encoded, rows, image_column, source, skip_corrupt_images, unreadable)
    images = _images_to_tensor(pil_images, len(encoded), resolution, center_crop, num_channels)
    if unreadable:
        names = ", ".join(name for _, name in unreadable[:UNREADABLE_NAMES_SHOWN])
        more = ", ..." if len(unreadable) > UNREADABLE_NAMES_SHOWN else ""
        logger.warning(
            f"Left out {len(unreadable)} of the {len(encoded)} images in the {source} that cannot be read "
            f"(--skip_corrupt_images): {names}{more}"
        )
        if len(images) == 0:
            raise ValueError(f"None of the {len(encoded)} images in the {source} can be read: {names}{more}")
        if labels is not None:
            keep = np.ones(len(encoded), dtype=bool)
            keep[[position for position, _ in unreadable]] = False
            labels = labels[torch.from_numpy(keep)]
    return ImageData(images=images, labels=labels, id2label=id2label, source=source)


def random_flip(images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Flip each image of a `(N, C, H, W)` batch left-right with probability 1/2 (augmentation inside the loop)."""
    device = generator.device if generator is not None else images.device
    flip = torch.rand(images.shape[0], generator=generator, device=device).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def _check_arguments(dataset_name, train_data_dir, resolution, num_channels, max_samples) -> None:
    if (dataset_name is None) == (train_data_dir is None):
        raise ValueError(
            "Give exactly one of --dataset_name (a Hub dataset id, a local dataset path or 'digits') and "
            "--train_data_dir (a folder of images with one sub-folder per class)."
        )
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"--resolution must be a positive integer, got {resolution!r}.")
    if num_channels not in (None, 1, 3):
        raise ValueError(f"num_channels must be 1 (grayscale), 3 (RGB) or None (as the data), got {num_channels!r}.")
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}.")


def _load_digits(resolution, center_crop, num_channels, max_samples, seed) -> ImageData:
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import, and only digits needs it

    digits = load_digits()
    keep = np.arange(len(digits.target))
    if max_samples is not None and max_samples < len(keep):
        keep = np.sort(np.random.default_rng(seed).permutation(len(keep))[:max_samples])
    count = len(keep)
    # Pixel values are ink intensities 0..16; 0..255 keeps them exact at both ends (0 -> -1, 16 -> +1).
    pixels = np.rint(digits.images[keep] * (255 / 16)).astype(np.uint8)
    pil_images = (PIL.Image.fromarray(image, mode="L") for image in pixels)
    images = _images_to_tensor(pil_images, count, resolution, center_crop, num_channels)
    labels = torch.from_numpy(digits.target[keep].astype(np.int64))
    id2label = {int(name): str(name) for name in digits.target_names}
    return ImageData(images, labels, id2label, source=f"digits (scikit-learn load_digits, {count} images of 8x8)")


def _idx_folder(dataset_name: str) -> Optional[str]:
    """The folder of IDX files to read for `dataset_name`: the folder itself, or the local copy of a Hub dataset of the
    MNIST family (the same images and labels, read without a download)."""
    if os.path.isdir(dataset_name):
        return dataset_name if is_idx_folder(dataset_name) else None
    folder = find_idx_folder(dataset_name)
    if folder is not None:
        logger.info(f"Reading {dataset_name} from its original IDX files in {folder} (the Hub dataset's images).")
    return folder


def _load_idx(
    folder, config, split, image_column, label_column, resolution, center_crop, num_channels, max_samples, seed
) -> ImageData:
    for flag, value, column in [("--image_column", image_column, "image"), ("--label_column", label_column, "label")]:
        if value not in (None, column):
            raise ValueError(f"{flag} {value!r}: the IDX files in {folder} have the columns 'image' and 'label'.")
    data = read_idx_folder(folder, split, config)
    rows = np.arange(len(data.labels))
    if max_samples is not None and max_samples < len(rows):  # the subset that the Hub dataset's loading draws
        rows = np.random.default_rng(seed).permutation(len(rows))[:max_samples]
    pixels = data.images[rows]
    if len(pixels) == 0:
        raise ValueError(f"No examples to train on in the IDX files {data.files[0]} (split {split!r}).")
    if pixels.shape[1:] == (resolution, resolution) and num_channels != 3:  # as stored: no resampling to do
        images = torch.from_numpy(np.ascontiguousarray(pixels[:, None])).float().div_(127.5).sub_(1.0)
    else:
        pil_images = (PIL.Image.fromarray(image, mode="L") for image in pixels)
        images = _images_to_tensor(pil_images, len(pixels), resolution, center_crop, num_channels)
    config_text = f", config {config}" if config else ""
    return ImageData(
        images=images,
        labels=torch.from_numpy(data.labels[rows]),
        id2label=dict(enumerate(data.names)),
        source=f"IDX files in {folder}{config_text}, split {split}",
    )


def _load_dataset(dataset_name, dataset_config_name, train_data_dir, cache_dir, split) -> tuple:
    """Returns (datasets.Dataset, description of what was loaded)."""
    if train_data_dir is not None:
        if not os.path.isdir(train_data_dir):
            raise ValueError(f"--train_data_dir {train_data_dir!r} is not a directory.")
        source = f"image folder {train_data_dir}"
        return _load_local(source, "imagefolder", split, data_dir=train_data_dir, cache_dir=cache_dir), source

    if os.path.isfile(dataset_name):
        builder = LOCAL_FILE_BUILDERS.get(os.path.splitext(dataset_name)[1])
        if builder is None:
            raise ValueError(
                f"--dataset_name {dataset_name!r} is a file, but not one of the formats read here: "
                f"{sorted(LOCAL_FILE_BUILDERS)}."
            )
        source = f"{builder} file {dataset_name}"
        return _load_local(source, builder, split, data_files=dataset_name, cache_dir=cache_dir), source
    if os.path.isdir(dataset_name):
        if os.path.exists(os.path.join(dataset_name, "state.json")) or os.path.exists(
            os.path.join(dataset_name, "dataset_dict.json")
        ):
            return _load_saved(dataset_name, split), f"dataset saved with save_to_disk in {dataset_name}"
        source = f"local dataset {dataset_name}"
        return _load_local(source, dataset_name, split, name=dataset_config_name, cache_dir=cache_dir), source
    if _looks_like_local_path(dataset_name):
        raise ValueError(f"--dataset_name {dataset_name!r} looks like a local path, but nothing exists there.")

    try:
        dataset = datasets.load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir)
    except Exception as error:  # what went wrong is for the user to read: network, name, config or split
        offline = ""
        if dataset_name in INSTALL_HINT:
            offline = (
                f" Offline, install its original IDX files ({INSTALL_HINT[dataset_name]}) or pass the folder "
                "that holds them as --dataset_name."
            )
        raise ValueError(
            f"Could not load --dataset_name {dataset_name!r}: it is not a local path, not the built-in "
            f"{DIGITS!r}, and loading it from the Hub failed: {type(error).__name__}: {error}.{offline}"
        ) from error
    config = f", config {dataset_config_name}" if dataset_config_name else ""
    return dataset, f"Hub dataset {dataset_name}{config}, split {split}"


def _load_local(source: str, path: str, split: str, **kwargs) -> datasets.Dataset:
    try:
        return datasets.load_dataset(path, split=split, **kwargs)
    except EmptyDatasetError as error:
        raise ValueError(f"The {source} is empty: {error}") from error
    except Exception as error:  # a broken file or a missing split: say which dataset it was
        raise ValueError(f"Could not load the {source}: {type(error).__name__}: {error}") from error


def _load_saved(path: str, split: str) -> datasets.Dataset:
    try:
        saved = datasets.load_from_disk(path)
    except Exception as error:  # a damaged or incompatible save: say which one
        raise ValueError(f"Could not load the dataset saved in {path}: {type(error).__name__}: {error}") from error
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise ValueError(f"The dataset saved in {path} has no split {split!r}; its splits are {list(saved)}.")
        return saved[split]
    return saved


def _looks_like_local_path(name: str) -> bool:
    """Hub ids are "name" or "namespace/name"; anything else that does not exist is a mistyped path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.path.splitext(name)[1] in LOCAL_FILE_BUILDERS


def _columns(features: datasets.Features) -> str:
    return "its columns are " + ", ".join(f"{name} ({feature})" for name, feature in features.items())


def _find_image_column(features: datasets.Features, requested: Optional[str]) -> str:
    image_columns = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if requested is not None:
        if requested not in features:
            raise ValueError(f"--image_column {requested!r} is not a column of the dataset: {_columns(features)}.")
        if requested not in image_columns:
            raise ValueError(
                f"--image_column {requested!r} holds {features[requested]}, not images; "
                f"the image columns are {image_columns}."
            )
        return requested
    for name in IMAGE_COLUMN_NAMES:
        if name in image_columns:
            return name
    if image_columns:
        return image_columns[0]
    raise ValueError(f"The dataset has no image column (of type datasets.Image): {_columns(features)}.")


def _is_class_id_feature(feature) -> bool:
    return isinstance(feature, datasets.ClassLabel) or (
        isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))
    )


def _find_label_column(features: datasets.Features, requested: Optional[str]) -> Optional[str]:
    if requested is not None:
        if requested not in features:
            raise ValueError(f"--label_column {requested!r} is not a column of the dataset: {_columns(features)}.")
        if not _is_class_id_feature(features[requested]):
            raise ValueError(
                f"--label_column {requested!r} holds {features[requested]}; it must hold class ids "
                "(datasets.ClassLabel or integers)."
            )
        return requested
    class_label_columns = [name for name, feature in features.items() if isinstance(feature, datasets.ClassLabel)]
    for name in LABEL_COLUMN_NAMES:
        if name in class_label_columns or (name in features and _is_class_id_feature(features[name])):
            return name
    if class_label_columns:
        return class_label_columns[0]
    for name in LABEL_COLUMN_NAMES:
        if name in features:
            logger.warning(f"Column {name!r} holds {features[name]}, not class ids: the data is treated as unlabelled.")
    return None


def _read_labels(dataset: datasets.Dataset, label_column: str) -> tuple:
    column = dataset.with_format("arrow")[label_column]
    if column.null_count:
        raise ValueError(f"The label column {label_column!r} has {column.null_count} missing labels.")
    labels = torch.from_numpy(column.to_numpy().astype(np.int64))
    if labels.min() < 0:
        raise ValueError(f"The label column {label_column!r} holds negative class ids (e.g. -1 for 'no label').")
    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        id2label = dict(enumerate(feature.names))
    else:
        id2label = {class_id: str(class_id) for class_id in range(int(labels.max()) + 1)}
    return labels, id2label


def _decode(
    encoded: list, rows: np.ndarray, column: str, source: str, skip: bool, unreadable: list
) -> Iterable[Optional[PIL.Image.Image]]:
    """Decodes each `{"bytes", "path"}` value into a loaded PIL image. One that cannot be read raises a ValueError
    naming it, or with `skip` is yielded as None and recorded in `unreadable` as (position, name)."""
    decoder = datasets.Image()
    for position, (row, value) in enumerate(zip(rows, encoded)):
        try:
            image = decoder.decode_example(value)
            image.load()  # PIL reads lazily: a truncated file fails here, not later inside a resize
        except Exception as error:  # PIL and the file system raise many kinds (OSError, SyntaxError, ValueError...)
            name = _image_name(value, int(row), column)
            if not skip:
                raise ValueError(
                    f"Cannot read the image {name} in the {source}: {type(error).__name__}: {error}. Repair or remove "
                    "it, or leave out every image that cannot be read with --skip_corrupt_images "
                    "(load_image_data(skip_corrupt_images=True))."
                ) from error
            unreadable.append((position, name))
            yield None
        else:
            yield image


def _image_name(value: dict, row: int, column: str) -> str:
    """A file read from disk is named by its path; an image stored as bytes in the dataset by its example and column
    (and the file name it was made from, when the dataset kept one)."""
    path = value.get("path")
    if value.get("bytes") is None and path:
        return path
    origin = f", from {path}" if path else ""
    return f"example {row} (column {column!r}{origin})"


def _resize_and_crop(image: PIL.Image.Image, resolution: int, center_crop: bool) -> PIL.Image.Image:
    width, height = image.size
    if (width, height) == (resolution, resolution):
        return image
    if not center_crop:
        return image.resize((resolution, resolution), RESAMPLE)
    scale = resolution / min(width, height)
    width, height = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    left, top = (width - resolution) // 2, (height - resolution) // 2
    return image.resize((width, height), RESAMPLE).crop((left, top, left + resolution, top + resolution))


def _images_to_tensor(
    images: Iterable[Optional[PIL.Image.Image]],
    count: int,
    resolution: int,
    center_crop: bool,
    num_channels: Optional[int],
) -> torch.Tensor:
    """Resize, crop and convert up to `count` PIL images to one `(N, C, resolution, resolution)` float32 tensor in
    [-1, 1]; a None in `images` (an image left out) takes no row."""
    pixels = np.empty((count, resolution, resolution, 3), dtype=np.uint8)
    grayscale = np.zeros(count, dtype=bool)
    kept = 0
    for image in images:
        if image is None:  # left out
            continue
        if num_channels is not None:
            mode = "L" if num_channels == 1 else "RGB"
        else:
            mode = "L" if image.mode in GRAYSCALE_MODES else "RGB"
        if image.mode in SIXTEEN_BIT_MODES:
            image = PIL.Image.fromarray(np.rint(np.asarray(image) / 257).clip(0, 255).astype(np.uint8), mode="L")
        image = image if image.mode == mode else image.convert(mode)
        array = np.asarray(_resize_and_crop(image, resolution, center_crop))
        grayscale[kept] = array.ndim == 2
        if grayscale[kept]:
            pixels[kept, :, :, 0] = array
        else:
            pixels[kept] = array
        kept += 1
    pixels, grayscale = pixels[:kept], grayscale[:kept]
    if num_channels == 1 or (num_channels is None and grayscale.all()):
        pixels = pixels[..., :1]
    else:  # colour data: grayscale images become three equal channels
        pixels[grayscale, :, :, 1:] = pixels[grayscale, :, :, :1]
    tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
    return tensor.float().div_(127.5).sub_(1.0)
