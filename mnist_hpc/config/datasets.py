"""The dataset registry's torch-free half: names, classes, files and normalisation constants.

``mnist_hpc.training.data`` loads them through torchvision's dataset classes (checksum-verified). To add
a dataset of the same IDX layout, add an entry here with its torchvision class name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    tv_class: str  # torchvision.datasets class name; its folder under the data root
    classes: tuple  # human-readable class names, index = label
    mean: float  # of the training images in [0, 1]
    std: float
    description: str
    tv_kwargs: tuple = ()  # extra (key, value) arguments for the torchvision class
    mirror_safe: bool = False  # a left-right mirrored image keeps its label (clothes: yes; digits, characters: no)

    @property
    def folder(self) -> str:
        return self.tv_class


DIGITS = tuple(str(i) for i in range(10))

DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in [
        DatasetSpec("mnist", "MNIST", DIGITS, 0.1307, 0.3081, "handwritten digits, 60k train / 10k test"),
        DatasetSpec(
            "fashion-mnist", "FashionMNIST",
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
             "Bag", "Ankle boot"),
            0.2860, 0.3530, "Zalando clothing images, 60k train / 10k test", mirror_safe=True),
        DatasetSpec(
            "kmnist", "KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            0.1918, 0.3483, "Kuzushiji (cursive Japanese) characters, 60k train / 10k test"),
    ]
}


def default_data_root() -> str:
    """A per-user cache: $XDG_CACHE_HOME/mnist-hpc/data (~/.cache/mnist-hpc/data)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mnist-hpc", "data")


def resolve_data_root(cli_value=None, config_value=None) -> tuple[str, str]:
    """Where datasets live, and why: --data-dir > $MNIST_HPC_DATA_DIR > config > user cache."""
    import os

    if cli_value:
        return str(cli_value), "--data-dir"
    if os.environ.get("MNIST_HPC_DATA_DIR"):
        return os.environ["MNIST_HPC_DATA_DIR"], "$MNIST_HPC_DATA_DIR"
    if config_value:
        return str(config_value), "data.root"
    return default_data_root(), "the user cache"


RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
