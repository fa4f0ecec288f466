"""The dataset registry's torch-free half: names, classes, files, image shape and normalisation.

``mnist_hpc.training.data`` loads them through torchvision's dataset classes (checksum-verified
downloads) or reads the unpacked IDX files directly. To add a dataset of the IDX layout, add an
entry here with its torchvision class name, its unpacked file names and its classes. The class
count flows from here to the model's head, the metrics, the report, ``predict`` and export cards:
nothing else assumes ten classes.

``dataset: folder`` is the user's own images (one subfolder per class under ``data.root``); its
classes are the subfolder names, read without torch (``folder_classes``).
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mnist_hpc.config.schema import DataConfig

IMAGE_SIZE = 28  # the MNIST family's images are 1x28x28


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    tv_class: str  # torchvision.datasets class name; its folder under the data root
    classes: tuple[str, ...]  # human-readable class names, index = label
    mean: float | None  # of the training images in [0, 1]; None: measured on the training split at load
    std: float | None
    description: str
    tv_kwargs: tuple[tuple[str, str], ...] = ()  # extra (key, value) arguments for the torchvision class
    mirror_safe: bool = (
        False  # a left-right mirrored image keeps its label (clothes: yes; digits, characters: no)
    )
    # unpacked (train images, train labels, test images, test labels) under <folder>/raw
    files: tuple[str, ...] = ()
    transposed: bool = False  # stored column-major (EMNIST): transposed back on reading
    label_offset: int = 0  # subtracted from the stored labels (EMNIST letters are stored 1..26)
    label_column: int | None = None  # labels stored as rows of several ints (QMNIST): the class column

    @property
    def folder(self) -> str:
        return self.tv_class

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def raw_files(self) -> tuple[str, ...]:
        return self.files or RAW_FILES


@dataclass(frozen=True)
class DataShape:
    """What a model is built for: the class names (their count is the head's width), the image
    channels and the side of the square images it receives."""

    classes: tuple[str, ...]
    channels: int = 1
    size: int = IMAGE_SIZE

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)


DIGITS = tuple(str(i) for i in range(10))
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_SHAPE = DataShape(DIGITS)


def _emnist(split: str, classes: Iterable[str], description: str, offset: int = 0) -> DatasetSpec:
    stem = f"emnist-{split}"
    return DatasetSpec(
        f"emnist-{split}",
        "EMNIST",
        tuple(classes),
        None,
        None,
        description,
        tv_kwargs=(("split", split),),
        transposed=True,
        label_offset=offset,
        files=(
            f"{stem}-train-images-idx3-ubyte",
            f"{stem}-train-labels-idx1-ubyte",
            f"{stem}-test-images-idx3-ubyte",
            f"{stem}-test-labels-idx1-ubyte",
        ),
    )


# EMNIST's merged splits drop the lowercase letters whose shapes equal their capitals
_MERGED = set("cijklmopsuvwxyz")
_EMNIST_ALL = sorted(string.digits + string.ascii_letters)

DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in [
        DatasetSpec("mnist", "MNIST", DIGITS, 0.1307, 0.3081, "handwritten digits, 60k train / 10k test"),
        DatasetSpec(
            "fashion-mnist",
            "FashionMNIST",
            (
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            0.2860,
            0.3530,
            "Zalando clothing images, 60k train / 10k test",
            mirror_safe=True,
        ),
        DatasetSpec(
            "kmnist",
            "KMNIST",
            ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            0.1918,
            0.3483,
            "Kuzushiji (cursive Japanese) characters, 60k train / 10k test",
        ),
        _emnist(
            "balanced",
            [c for c in _EMNIST_ALL if c not in _MERGED],
            "EMNIST balanced: 47 classes of digits and letters, 112.8k train / 18.8k test",
        ),
        _emnist(
            "letters",
            string.ascii_lowercase,
            "EMNIST letters: 26 classes (upper and lower case merged), 124.8k train / 20.8k test",
            offset=1,
        ),
        _emnist("digits", string.digits, "EMNIST digits: 10 classes, 240k train / 40k test"),
        _emnist("byclass", _EMNIST_ALL, "EMNIST by class: 62 unbalanced classes, 697.9k train / 116.3k test"),
        _emnist(
            "bymerge",
            [c for c in _EMNIST_ALL if c not in _MERGED],
            "EMNIST by merge: 47 unbalanced classes, 697.9k train / 116.3k test",
        ),
        DatasetSpec(
            "qmnist",
            "QMNIST",
            DIGITS,
            None,
            None,
            "QMNIST: MNIST's digits reconstructed from NIST, 60k train / 60k test",
            files=(
                "qmnist-train-images-idx3-ubyte",
                "qmnist-train-labels-idx2-int",
                "qmnist-test-images-idx3-ubyte",
                "qmnist-test-labels-idx2-int",
            ),
            label_column=0,
        ),
    ]
}
FOLDER = "folder"  # data.dataset for the user's own images: <data.root>/<class>/<image files>
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def folder_key(root: str | os.PathLike[str]) -> str:
    """The name of an image folder's staged copy in a data folder (``folders/<key>``): its base
    name and a digest of its absolute path."""
    import hashlib

    path = os.path.abspath(os.path.expanduser(str(root)))
    return f"{os.path.basename(path.rstrip(os.sep)) or 'images'}-{hashlib.sha256(path.encode()).hexdigest()[:10]}"


def folder_classes(root: str | os.PathLike[str]) -> tuple[str, ...] | None:
    """The class names of an image folder (its subfolders holding at least one entry, sorted), or
    None when ``root`` is not a folder."""
    try:
        entries = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return tuple(entries)


def data_shape(data_cfg: DataConfig, data_dir: str | os.PathLike[str] | None = None) -> DataShape | None:
    """The shape models are built for, from ``cfg.data`` alone (no torch, no image read); None for
    an image folder that is not there (yet: a config checked on a laptop for a cluster path). An
    image folder staged into ``data_dir`` (``folders/<key>``, from the data archive) counts."""
    if data_cfg.dataset == FOLDER:
        staged = (
            os.path.join(str(data_dir), "folders", folder_key(data_cfg.root))
            if data_dir and data_cfg.root
            else None
        )
        classes = folder_classes(staged) if staged and os.path.isdir(staged) else None
        classes = classes or (folder_classes(data_cfg.root) if data_cfg.root else None)
        if not classes:
            return None
        return DataShape(classes, data_cfg.channels, data_cfg.image_size)
    spec = DATASETS[data_cfg.dataset]
    return DataShape(spec.classes, 1, IMAGE_SIZE)


def default_data_root() -> str:
    """A per-user cache: $XDG_CACHE_HOME/mnist-hpc/data (~/.cache/mnist-hpc/data)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mnist-hpc", "data")


def resolve_data_root(
    cli_value: str | os.PathLike[str] | None = None, config_value: str | os.PathLike[str] | None = None
) -> tuple[str, str]:
    """Where datasets live, and why: --data-dir > $MNIST_HPC_DATA_DIR > config > user cache."""
    import os

    if cli_value:
        return str(cli_value), "--data-dir"
    if os.environ.get("MNIST_HPC_DATA_DIR"):
        return os.environ["MNIST_HPC_DATA_DIR"], "$MNIST_HPC_DATA_DIR"
    if config_value:
        return str(config_value), "data.root"
    return default_data_root(), "the user cache"
