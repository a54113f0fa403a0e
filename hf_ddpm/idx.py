"""The MNIST family's own file format (IDX), read without a download: Fashion-MNIST, MNIST, KMNIST and EMNIST.

Each of these datasets ships as four (usually gzipped) IDX files: the training and test images, and their labels. An
IDX file is a big-endian header (two zero bytes, a type code, the number of dimensions, then each dimension's size as
a 32-bit integer) followed by the values. `read_idx_folder` reads such a folder into arrays with the columns, splits
and class names of the Hub dataset of the same data (`image`, `label`; `train` and `test`), and `idx_dataset` into a
`datasets.DatasetDict` of that shape. Debian's `dataset-fashion-mnist` package installs Fashion-MNIST's files, so
`--dataset_name fashion_mnist` trains offline wherever that package is (see `find_idx_folder`).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
import struct
from dataclasses import dataclass

import numpy as np

# The type code of unsigned bytes, the only one the MNIST family uses, and the dimensions of each kind of file.
UBYTE = 0x08
IMAGE_DIMENSIONS, LABEL_DIMENSIONS = 3, 1
SPLIT_PREFIXES = {"train": ("train",), "test": ("t10k", "test")}

# Class names as the Hub datasets' cards give them (zalando-datasets/fashion_mnist, ylecun/mnist).
FASHION_MNIST_NAMES = (
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
)
# Fashion-MNIST and MNIST ship files of the same names; the training labels tell them apart (SHA-256 of the 60,000
# label bytes of Fashion-MNIST's train-labels-idx1-ubyte).
FASHION_MNIST_TRAIN_LABELS_SHA256 = "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7"

# Hub ids of the datasets whose IDX files can stand in for them, and where Debian's packages put those files.
IDX_DATASETS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "zalando-datasets/fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": ("/usr/share/datasets/mnist",),
    "ylecun/mnist": ("/usr/share/datasets/mnist",),
}
INSTALL_HINT = {
    "fashion_mnist": "apt-get install dataset-fashion-mnist",
    "zalando-datasets/fashion_mnist": "apt-get install dataset-fashion-mnist",
}


@dataclass
class IdxSplit:
    """One split of an IDX dataset: `images` `(N, H, W)` uint8 (0 is the background), `labels` `(N,)` int64,
    `names` the class names by id, `files` the two files read."""

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    files: tuple[str, str]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in one IDX file of unsigned bytes, gzipped (`.gz`) or not.

    Raises:
        `ValueError` naming the file: not an IDX file of unsigned bytes (a wrong magic number), a header that does
        not fit the file, or fewer (truncated) or more values than the header announces.
    """
    path = os.fspath(path)
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as file:
            content = bytearray(file.read())  # writable: torch.from_numpy warns about read-only arrays
    except (OSError, EOFError) as error:  # a truncated or corrupt gzip stream, or an unreadable file
        raise ValueError(f"Cannot read the IDX file {path}: {type(error).__name__}: {error}") from error
    if len(content) < 4 or content[:2] != b"\0\0" or content[2] != UBYTE:
        raise ValueError(
            f"{path} is not an IDX file of unsigned bytes: its magic number is {content[:4].hex() or 'missing'}, "
            f"expected 0000{UBYTE:02x}NN (NN: the number of dimensions)."
        )
    ndim = content[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(content) < header:
        raise ValueError(
            f"The IDX file {path} has a header of {ndim} dimensions that does not fit its {len(content)} bytes."
        )
    shape = struct.unpack(f">{ndim}I", content[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(content) - header
    if found != expected:
        state = "truncated: it holds" if found < expected else "longer than its header says: it holds"
        raise ValueError(f"The IDX file {path} is {state} {found} values, its header announces {shape} = {expected}.")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def is_idx_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder holding the training images of an IDX dataset."""
    return os.path.isdir(path) and bool(_split_files(os.fspath(path), "train", None, required=False))


def find_idx_folder(dataset_name: str) -> str | None:
    """Where the IDX files of the Hub dataset `dataset_name` are on this machine (Debian's package folders), if
    anywhere: `fashion_mnist` is found once `dataset-fashion-mnist` is installed."""
    for folder in IDX_DATASETS.get(dataset_name, ()):
        if is_idx_folder(folder):
            return folder
    return None


def read_idx_folder(folder: str | os.PathLike, split: str = "train", config: str | None = None) -> IdxSplit:
    """The images, labels and class names of one split of an IDX dataset's folder.

    Args:
        folder: a folder holding `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
            `t10k-labels-idx1-ubyte` (each may end in `.gz`), as Fashion-MNIST, MNIST and KMNIST ship them, or
            EMNIST's `emnist-<config>-{train,test}-{images-idx3,labels-idx1}-ubyte` files.
        split (`str`): `"train"` or `"test"`.
        config (`str`, *optional*): which EMNIST split (`"balanced"`, `"digits"`, `"letters"`, ...) when the folder
            holds several.

    Class names: EMNIST's `emnist-<config>-mapping.txt` or KMNIST's `kmnist_classmap.csv` when present; Fashion-MNIST's
    names when the training labels are Fashion-MNIST's; the class ids as strings otherwise (MNIST's names).

    Raises:
        `ValueError`: an unknown split, missing files (naming what was looked for), a file that cannot be read (see
        `read_idx`), images and labels of different counts, or a label file that is not one-dimensional.
    """
    folder = os.fspath(folder)
    if split not in SPLIT_PREFIXES:
        raise ValueError(f"An IDX dataset has the splits {sorted(SPLIT_PREFIXES)}; got split={split!r}.")
    image_file, label_file = _split_files(folder, split, config, required=True)
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != IMAGE_DIMENSIONS:
        raise ValueError(f"{image_file} holds an array of shape {images.shape}; images are (count, height, width).")
    if labels.ndim != LABEL_DIMENSIONS:
        raise ValueError(f"{label_file} holds an array of shape {labels.shape}; labels are (count,).")
    if len(images) != len(labels):
        raise ValueError(
            f"The IDX files do not match: {image_file} holds {len(images)} images, {label_file} {len(labels)} labels."
        )
    if os.path.basename(image_file).startswith("emnist-"):
        images = images.transpose(0, 2, 1)  # EMNIST stores each image column by column
    train_labels = labels if split == "train" else _train_labels(folder, config)
    names = _class_names(folder, image_file, labels, train_labels)
    if len(labels) and int(labels.max()) >= len(names):
        raise ValueError(
            f"{label_file} holds the class id {int(labels.max())}, but the dataset names {len(names)} classes."
        )
    return IdxSplit(images=images, labels=labels.astype(np.int64), names=names, files=(image_file, label_file))


def idx_dataset(folder: str | os.PathLike, config: str | None = None):
    """The IDX dataset in `folder` as a `datasets.DatasetDict` with the Hub dataset's shape: splits `train` and
    `test`, columns `image` (`datasets.Image`, 8-bit grayscale) and `label` (`datasets.ClassLabel` with its names)."""
    import datasets
    import PIL.Image

    splits = {}
    for split in SPLIT_PREFIXES:
        data = read_idx_folder(folder, split, config)
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(data.names))})
        images = [PIL.Image.fromarray(image, mode="L") for image in data.images]
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": data.labels.tolist()}, features=features)
    return datasets.DatasetDict(splits)


def _split_files(folder: str, split: str, config: str | None, required: bool) -> tuple[str, str] | None:
    """The (images, labels) files of `split` in `folder`, each with or without `.gz`."""
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = []
        for prefix in SPLIT_PREFIXES[split]:
            stem = f"{prefix}-{kind}" if config is None else f"emnist-{config}-{prefix}-{kind}"
            candidates += [os.path.join(folder, stem + suffix) for suffix in ("", ".gz")]
            if config is None:  # EMNIST's files carry their configuration's name: take it when there is just one
                candidates += sorted(glob.glob(os.path.join(glob.escape(folder), f"emnist-*-{prefix}-{kind}*")))
        existing = [path for path in candidates if os.path.isfile(path)]
        emnist_configs = {os.path.basename(path).split("-")[1] for path in existing if "emnist-" in path}
        if config is None and len(emnist_configs) > 1:
            raise ValueError(
                f"The folder {folder} holds several EMNIST splits {sorted(emnist_configs)}: choose one "
                "with --dataset_config_name."
            )
        if not existing:
            if not required:
                return None
            looked_for = ", ".join(os.path.basename(path) for path in candidates[:4])
            raise ValueError(
                f"The IDX folder {folder} has no {split} {kind.split('-')[0]} file (looked for {looked_for})."
            )
        found.append(existing[0])
    return found[0], found[1]


def _train_labels(folder: str, config: str | None) -> np.ndarray | None:
    train_files = _split_files(folder, "train", config, required=False)
    return None if train_files is None else read_idx(train_files[1])


def _class_names(folder: str, image_file: str, labels: np.ndarray, train_labels: np.ndarray | None) -> tuple[str, ...]:
    base = os.path.basename(image_file)
    if base.startswith("emnist-"):
        mapping = os.path.join(folder, f"emnist-{base.split('-')[1]}-mapping.txt")
        if os.path.isfile(mapping):  # lines of "class_id ascii_code"
            with open(mapping) as file:
                pairs = sorted((int(a), chr(int(b))) for a, b in (line.split()[:2] for line in file if line.strip()))
            return tuple(name for _, name in pairs)
    classmap = os.path.join(folder, "kmnist_classmap.csv")
    if os.path.isfile(classmap):  # index,codepoint,char
        with open(classmap, encoding="utf-8") as file:
            rows = [line.rstrip("\n").split(",") for line in file if line.strip()][1:]
        return tuple(row[2] for row in sorted(rows, key=lambda row: int(row[0])))
    if (
        train_labels is not None
        and hashlib.sha256(train_labels.tobytes()).hexdigest() == FASHION_MNIST_TRAIN_LABELS_SHA256
    ):
        return FASHION_MNIST_NAMES
    # The class ids as names, as many as either split uses (a small test split may miss a class).
    highest = max(int(values.max()) if len(values) else -1 for values in (labels, train_labels) if values is not None)
    return tuple(str(class_id) for class_id in range(highest + 1))
