"""One tar archive of the datasets, for staging into a job's ``$SLURM_TMPDIR``.

Cluster file systems handle one big file far better than trees of small ones, so job
scripts copy and unpack a single archive onto the node's local disk. The archive holds
``<Folder>/raw/<file>.gz`` for each dataset (the torchvision layout under a data root); it is
not compressed again, as the files already are.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from mnist_hpc.config import did_you_mean
from mnist_hpc.config.datasets import DATASETS, RAW_FILES
from mnist_hpc.errors import DataError, UserError
from mnist_hpc.runs.folder import atomic_write_with

DEFAULT_ARCHIVE = Path("data") / "mnist-hpc-data.tar"


def dataset_files(root, name: str) -> list[Path]:
    """The four files of dataset ``name`` under the data root (missing ones included): the .gz
    archives of MNIST and its kin, the unpacked files of EMNIST and QMNIST (whose downloads are
    one zip of every split, or subsets fetched one by one)."""
    spec = DATASETS[name]
    folder = Path(root) / spec.folder / "raw"
    if spec.files:
        return [folder / f for f in spec.files]
    return [folder / f"{f}.gz" for f in RAW_FILES]


def available(root) -> list[str]:
    """Datasets whose four .gz files are all present under ``root``."""
    return [n for n in DATASETS if all(p.is_file() for p in dataset_files(root, n))]


def check_names(names) -> list[str]:
    for n in names:
        if n not in DATASETS:
            raise UserError(f"unknown dataset {n!r}{did_you_mean(n, DATASETS)}; "
                            f"known: {', '.join(DATASETS)}")
    return list(dict.fromkeys(names))


def pack(root, names, output=DEFAULT_ARCHIVE) -> Path:
    """Write the archive of ``names`` (all available datasets if empty); return its path."""
    root = Path(root)
    names = check_names(names) if names else available(root)
    if not names:
        raise DataError(f"no dataset found under {root} (looked for <Dataset>/raw/*.gz); "
                        "run `mnist-hpc data download` first")
    for name in names:
        missing = [p for p in dataset_files(root, name) if not p.is_file()]
        if missing:
            raise DataError(f"dataset {name}: {missing[0]} is missing; run "
                            f"`mnist-hpc data download {name}` first")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)

    def write(f):
        with tarfile.open(fileobj=f, mode="w") as tar:
            for name in names:
                for path in dataset_files(root, name):
                    tar.add(path, arcname=f"{DATASETS[name].folder}/raw/{path.name}")

    return atomic_write_with(output, write)


def contents(archive) -> list[str]:
    """Datasets with all four files in ``archive`` ([] if it is missing or unreadable)."""
    try:
        with tarfile.open(archive) as tar:
            members = set(tar.getnames())
    except (OSError, tarfile.TarError):
        return []
    return [n for n in DATASETS
            if all(f"{DATASETS[n].folder}/raw/{f}.gz" in members for f in RAW_FILES)]


def ensure(archive, root, needed) -> tuple[Path, bool]:
    """Make sure ``archive`` holds the ``needed`` datasets; (re)pack it from ``root`` if not.

    Returns (path, whether it was written). A rebuilt archive keeps what the old one held
    when those files are still under ``root``.
    """
    archive = Path(archive)
    have = contents(archive)
    if all(n in have for n in needed):
        return archive, False
    keep = [n for n in have if n in available(root)]
    return pack(root, [*keep, *[n for n in needed if n not in keep]], archive), True
