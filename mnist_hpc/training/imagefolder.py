"""The user's own images (``data: {dataset: folder, root: ...}``): one subfolder per class (or
``train/`` and ``test/`` folders holding them), any size, grey or colour, decoded with PIL once
into uint8 tensors cached in the data folder. A copy staged from the data archive
(``folders/<key>`` in a job's data folder, cluster/datapack.py) is read instead of the original.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from mnist_hpc.config.datasets import IMAGE_SUFFIXES
from mnist_hpc.errors import DataError

FOLDER_TEST_FRACTION = 0.1  # a single image folder: this share is the test split (fixed seed)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _decode(paths, channels: int, size: int) -> tuple[torch.Tensor, list[str]]:
    """Decode, convert and resize images with PIL: uint8 (N, size, size) or (N, 3, size, size)."""
    import numpy as np
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = np.zeros((len(paths), size, size) if channels == 1 else (len(paths), size, size, 3), dtype=np.uint8)
    bad = []
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                out[i] = np.asarray(im.convert(mode).resize((size, size), Image.Resampling.BILINEAR))
        except Exception as e:
            bad.append(f"{p} ({type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else 'unreadable'})")
    t = torch.from_numpy(out)
    return (t if channels == 1 else t.permute(0, 3, 1, 2).contiguous()), bad


def read_folder(data_cfg, cache_root=None):
    """The images of ``data.root`` (one subfolder per class; or ``train/`` and ``test/`` folders
    each holding the class subfolders): (train x, train y, test x, test y, class names). A
    single folder gives ``FOLDER_TEST_FRACTION`` of each class's images, chosen with a fixed
    seed, to the test split. Decoded once into a cache (``<cache_root>/folder-cache``) keyed by
    the files' names, sizes and times, the image size and channels."""
    from mnist_hpc.config.datasets import folder_key

    root = Path(os.path.expanduser(data_cfg.root)).resolve()
    staged = Path(cache_root) / "folders" / folder_key(root) if cache_root else None
    if (
        staged is not None and staged.is_dir()
    ):  # unpacked from the data archive (`data pack`, a job's $SLURM_TMPDIR)
        root = staged
    if not root.is_dir():
        raise DataError(
            f"data.root: {data_cfg.root}: not a folder; dataset: folder needs a folder of images, "
            f"one subfolder per class"
        )
    split_dirs = (root / "train", root / "test")
    two = all(d.is_dir() for d in split_dirs)
    base = split_dirs[0] if two else root
    classes = tuple(sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith(".")))
    if len(classes) < 2:
        raise DataError(
            f"data.root: {base}: {len(classes)} class folder(s); expected one subfolder per class "
            f"(at least two), each holding PNG/JPEG images"
        )
    parts = {}
    for split, folder_ in (("train", split_dirs[0]), ("test", split_dirs[1])) if two else (("all", root),):
        files, labels = [], []
        for k, c in enumerate(classes):
            found = _image_files(folder_ / c) if (folder_ / c).is_dir() else []
            files += found
            labels += [k] * len(found)
        if not files:
            raise DataError(
                f"data.root: {folder_}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders"
            )
        parts[split] = (files, labels)
    stamp = hashlib.sha256(
        repr(
            (
                str(root),
                data_cfg.image_size,
                data_cfg.channels,
                [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for fs, _ in parts.values() for f in fs],
            )
        ).encode()
    ).hexdigest()
    cache = Path(cache_root or root) / "folder-cache" / f"{root.name}-{stamp[:16]}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            return saved["x"], saved["y"], saved["tx"], saved["ty"], tuple(saved["classes"])
        except Exception:
            pass
    decoded = {}
    for split, (files, labels) in parts.items():
        x, bad = _decode(files, data_cfg.channels, data_cfg.image_size)
        if bad:
            more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
            raise DataError(
                f"data.root: {len(bad)} image(s) could not be read: {'; '.join(bad[:3])}{more}; "
                f"fix or remove them"
            )
        decoded[split] = (x, torch.tensor(labels, dtype=torch.int64))
    if two:
        (x, y), (tx, ty) = decoded["train"], decoded["test"]
    else:
        x_all, y_all = decoded["all"]
        g = torch.Generator().manual_seed(12345)  # the test split does not move with experiment.seed
        test = torch.zeros(len(y_all), dtype=torch.bool)
        for k in range(len(classes)):
            idx = (y_all == k).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            test[idx[: max(1, round(len(idx) * FOLDER_TEST_FRACTION))]] = True
        x, y, tx, ty = x_all[~test], y_all[~test], x_all[test], y_all[test]
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"x": x, "y": y, "tx": tx, "ty": ty, "classes": list(classes)}, tmp)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only place: decode again next time
    return x, y, tx, ty, classes
