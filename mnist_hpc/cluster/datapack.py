"""One tar archive of the datasets, for staging into a job's ``$SLURM_TMPDIR``.

Cluster file systems handle one big file far better than trees of small ones, so job
scripts copy and unpack a single archive onto the node's local disk. The archive holds
``<Folder>/raw/<file>.gz`` for each dataset (the torchvision layout under a data root); it is
not compressed again, as the files already are. An image folder (``dataset: folder``) is named
``folder:<its path>`` and packed as ``folders/<key>/<class>/<image>`` (``config.datasets.folder_key``):
training reads the staged copy in the job's data folder instead of the path on the shared file
system.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from mnist_hpc.config import did_you_mean
from mnist_hpc.config.datasets import DATASETS, IMAGE_SUFFIXES, RAW_FILES, folder_key
from mnist_hpc.errors import DataError, UserError
from mnist_hpc.runs.folder import atomic_write_with

DEFAULT_ARCHIVE = Path("data") / "mnist-hpc-data.tar"


def dataset_files(root: str | Path, name: str) -> list[Path]:
    """The four files of dataset ``name`` under the data root (missing ones included): the .gz
    archives of MNIST and its kin, the unpacked files of EMNIST and QMNIST (whose downloads are
    one zip of every split, or subsets fetched one by one)."""
    spec = DATASETS[name]
    folder = Path(root) / spec.folder / "raw"
    if spec.files:
        return [folder / f for f in spec.files]
    return [folder / f"{f}.gz" for f in RAW_FILES]


FOLDER_PREFIX = "folder:"


def _folder_files(name: str) -> tuple[Path, list[Path]]:
    """An image folder's path and its image files (``name`` is ``folder:<path>``)."""
    src = Path(name[len(FOLDER_PREFIX) :]).expanduser().resolve()
    if not src.is_dir():
        raise DataError(f"data.root: {src}: not a folder of class subfolders; nothing to pack")
    return src, sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def available(root: str | Path) -> list[str]:
    """Datasets whose four .gz files are all present under ``root``."""
    return [n for n in DATASETS if all(p.is_file() for p in dataset_files(root, n))]


def check_names(names: Sequence[str]) -> list[str]:
    for n in names:
        if n not in DATASETS and not n.startswith(FOLDER_PREFIX):
            raise UserError(f"unknown dataset {n!r}{did_you_mean(n, DATASETS)}; known: {', '.join(DATASETS)}")
    return list(dict.fromkeys(names))


def pack(root: str | Path, names: Sequence[str], output: str | Path = DEFAULT_ARCHIVE) -> Path:
    """Write the archive of ``names`` (all available datasets if empty); return its path."""
    root = Path(root)
    names = check_names(names) if names else available(root)
    if not names:
        raise DataError(
            f"no dataset found under {root} (looked for <Dataset>/raw/*.gz); "
            "run `mnist-hpc data download` first"
        )
    for name in names:
        if name.startswith(FOLDER_PREFIX):
            continue
        missing = [p for p in dataset_files(root, name) if not p.is_file()]
        if missing:
            raise DataError(
                f"dataset {name}: {missing[0]} is missing; run `mnist-hpc data download {name}` first"
            )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)

    def write(f: BinaryIO) -> None:
        with tarfile.open(fileobj=f, mode="w") as tar:
            for name in names:
                if name.startswith(FOLDER_PREFIX):
                    src, files = _folder_files(name)
                    for path in files:
                        tar.add(path, arcname=f"folders/{folder_key(src)}/{path.relative_to(src)}")
                    continue
                for path in dataset_files(root, name):
                    tar.add(path, arcname=f"{DATASETS[name].folder}/raw/{path.name}")

    return atomic_write_with(output, write)


def contents(archive: str | Path) -> list[str]:
    """Datasets with all four files in ``archive`` ([] if it is missing or unreadable)."""
    try:
        with tarfile.open(archive) as tar:
            members = set(tar.getnames())
    except (OSError, tarfile.TarError):
        return []
    found = [
        n
        for n in DATASETS
        if all(f"{DATASETS[n].folder}/raw/{p.name}" in members for p in dataset_files(".", n))
    ]
    keys = sorted({m.split("/")[1] for m in members if m.startswith("folders/") and m.count("/") >= 2})
    return found + [f"{FOLDER_PREFIX}{k}" for k in keys]


def ensure(archive: str | Path, root: str | Path, needed: Sequence[str]) -> tuple[Path, bool]:
    """Make sure ``archive`` holds the ``needed`` datasets; (re)pack it from ``root`` if not.

    Returns (path, whether it was written). A rebuilt archive keeps what the old one held
    when those files are still under ``root``.
    """
    archive = Path(archive)
    have = contents(archive)

    def held(n: str) -> bool:  # an image folder counts as held when its key is in the archive
        return n in have or (
            n.startswith(FOLDER_PREFIX) and f"{FOLDER_PREFIX}{folder_key(_folder_files(n)[0])}" in have
        )

    if all(held(n) for n in needed):
        return archive, False
    keep = [n for n in have if n in available(root)]  # (a staged image folder is packed again when needed)
    return pack(root, [*keep, *[n for n in needed if n not in keep]], archive), True
