"""Datasets: locate, download, verify and load; the device-resident batch loader; augmentation.

Files come through torchvision's dataset classes, so downloads are MD5-verified. Each split is
read once into one uint8 tensor on the training device; batches are cut by index from a seeded
permutation, normalised per batch, and augmented per batch on the device — no per-sample
Python, no DataLoader workers.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mnist_hpc.config.datasets import DATASETS, FOLDER, DatasetSpec, DataShape
from mnist_hpc.errors import DataError

OFFLINE_HINT = (
    "compute nodes have no internet: run `mnist-hpc data download` on a login node "
    "(or point --data-dir / $MNIST_HPC_DATA_DIR at a folder that holds the data)"
)


def _tv_class(spec: DatasetSpec):
    import torchvision.datasets as tvd

    return getattr(tvd, spec.tv_class)


def raw_folder(spec: DatasetSpec, root) -> Path:
    return Path(root) / spec.folder / "raw"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _resources(spec: DatasetSpec) -> list[tuple[str, str]]:
    """(archive file name, md5) pairs as torchvision knows them (a list for MNIST and its kin, one
    zip for EMNIST, a mapping of subsets for QMNIST)."""
    cls = _tv_class(spec)
    if spec.tv_class == "EMNIST":
        return [(os.path.basename(cls.url), cls.md5)]
    resources = cls.resources
    if isinstance(resources, dict):
        resources = [r for part in ("train", "test") for r in resources[part]]
    return [(os.path.basename(url), md5) for url, md5 in resources]


def status(spec: DatasetSpec, root) -> dict:
    """What is on disk: unpacked files, archives present, archives with a wrong checksum."""
    raw = raw_folder(spec, root)
    unpacked = _unpacked(spec, root)
    archives = {name: (raw / name).is_file() for name, _ in _resources(spec)}
    return {"raw": raw, "unpacked": unpacked, "archives": archives, "all_archives": all(archives.values())}


def verify(spec: DatasetSpec, root) -> list[tuple[str, bool, str]]:
    """Check every archive's MD5 and that the unpacked files load; one (file, ok, note) each."""
    raw = raw_folder(spec, root)
    unpacked = status(spec, root)["unpacked"]
    out = []
    for name, md5 in _resources(spec):
        p = raw / name
        if not p.is_file():
            out.append(
                (
                    str(p),
                    unpacked,
                    "archive absent (the unpacked files are checked below)" if unpacked else "missing",
                )
            )
            continue
        got = _md5(p)
        out.append((str(p), got == md5, "md5 ok" if got == md5 else f"md5 {got} != expected {md5}"))
    if unpacked:
        try:
            for train in (True, False):
                _x, _y = read_split(spec, root, train)
            out.append((str(raw), True, "unpacked files load"))
        except DataError as e:
            out.append((str(raw), False, str(e)))
    return out


def _reason(e: BaseException) -> str:
    """The first non-empty message along an exception's causes (torchvision often wraps the
    network's error in an empty RuntimeError), with its type: 'URLError: ...'."""
    seen: BaseException | None = e
    while seen is not None:
        text = str(seen).strip().splitlines()[0] if str(seen).strip() else ""
        if text:
            return f"{type(seen).__name__}: {text[:120]}"
        seen = seen.__cause__ or seen.__context__
    return f"{type(e).__name__}, no details"


def _download_hint(spec: DatasetSpec, root, from_download: bool) -> str:
    """What to do when a download failed on a machine that may have internet (not a job)."""
    again = (
        ""
        if from_download
        else (
            " (on a cluster, where compute nodes have no internet: "
            "run `mnist-hpc data download` on a login node first)"
        )
    )
    return (
        f"check the internet connection and try again, or copy the files into "
        f"{raw_folder(spec, root)}/, or point --data-dir, $MNIST_HPC_DATA_DIR or data.root at "
        f"a folder that holds {spec.folder}/raw/{again}"
    )


def _remove_empty(made: list) -> None:
    """Remove the folders a failed download created, innermost first, while they are empty."""
    for folder in reversed(made):
        try:
            folder.rmdir()  # only an empty folder: a file in it (ours or not) keeps it
        except FileNotFoundError:
            continue
        except OSError:
            return


def _offline_forced() -> bool:
    return bool(os.environ.get("MNIST_HPC_OFFLINE"))


def prepare(spec: DatasetSpec, root, download: bool = True, from_download: bool = False) -> None:
    """Make sure the unpacked files exist under root: unpack local archives (offline, MD5
    checked) or download them (when ``download`` and $MNIST_HPC_OFFLINE is unset; callers inside
    a batch job pass ``download=False``: compute nodes have no internet). A failed download
    removes the empty folders it made and says where it looked; ``from_download``: the caller
    is `data download` itself (its message does not suggest running it)."""
    if _unpacked(spec, root):  # the common case: no torchvision import (≈2 s) needed
        return
    nearest = next(p for p in (raw_folder(spec, root), *raw_folder(spec, root).parents) if p.exists())
    if not nearest.is_dir():  # not the network's fault: say so before trying to download
        raise DataError(
            f"{nearest}: is a file, not a folder; point --data-dir, $MNIST_HPC_DATA_DIR "
            f"or data.root at the data folder"
        )
    st = status(spec, root)
    raw = st["raw"]
    for name, md5 in _resources(spec):
        p = raw / name
        if p.is_file() and _md5(p) != md5:
            raise DataError(
                f"{p}: corrupted (MD5 mismatch); delete it and run `mnist-hpc data download "
                f"--dataset {spec.name}`"
            )
    if not st["all_archives"] and (not download or _offline_forced()):
        raise DataError(f"dataset {spec.name} not found under {root} (looked in {raw}/): {OFFLINE_HINT}")
    made = [p for p in reversed((raw, *raw.parents)) if not p.exists()]  # outermost first
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise DataError(
                f"{root}: not writable; the data folder must be writable (files are "
                f"unpacked next to the archives): copy it or set --data-dir"
            )
        _tv_class(spec)(root=str(root), train=True, download=True, **dict(spec.tv_kwargs))
        if not _unpacked(spec, root):  # QMNIST downloads one subset per call; the others all at once
            _tv_class(spec)(root=str(root), train=False, download=True, **dict(spec.tv_kwargs))
    except DataError:
        raise
    except PermissionError as e:
        raise DataError(f"{root}: not writable ({e.strerror}); set --data-dir to a writable folder") from None
    except Exception as e:
        if out_of_memory(e):
            raise DataError(memory_message(spec, root, "unpacking the archives")) from None
        if st["all_archives"]:
            raise DataError(
                f"{raw}: could not unpack the archives ({_reason(e)}); run `mnist-hpc data verify`"
            ) from None
        _remove_empty(made)
        raise DataError(
            f"dataset {spec.name}: not found in {raw}/ and the download failed "
            f"({_reason(e)}); {_download_hint(spec, root, from_download)}"
        ) from None


def prepare_per_node(spec: DatasetSpec, root, denv, download: bool = True) -> None:
    """``prepare`` once per node before any rank reads: each node may have its own data folder
    (a job's local disk), so local rank 0 of every node unpacks into it while the node's other
    ranks wait at a barrier. Global rank 0 goes first, so that nodes sharing one folder find it
    ready instead of unpacking into the same files at once. A collective: every rank calls it."""
    from mnist_hpc.training.distributed import barrier

    if denv.is_main:
        prepare(spec, root, download=download)
    barrier(denv)
    if denv.local_rank == 0 and not denv.is_main:
        prepare(spec, root, download=download)
    barrier(denv)


def prepare_all(names, root, download: bool = True, from_download: bool = False) -> list:
    """``prepare`` each named dataset under ``root``; one (name, raw folder, was already there) each."""
    out = []
    for name in names:
        spec = DATASETS[name]
        present = _unpacked(spec, root)
        prepare(spec, root, download=download, from_download=from_download)
        out.append((name, raw_folder(spec, root), present))
    return out


def _unpacked(spec: DatasetSpec, root) -> bool:
    raw = raw_folder(spec, root)
    return all((raw / f).is_file() for f in spec.raw_files())


def _read_idx(path: Path) -> torch.Tensor:
    """An IDX file (the MNIST format) of unsigned bytes, or of big-endian int32 (QMNIST's
    labels), as a tensor of its dimensions."""
    data = bytearray(path.read_bytes())
    if len(data) < 4 or data[0] or data[1] or data[2] not in (0x08, 0x0C):
        raise ValueError(f"{path.name}: not an unsigned-byte or int32 IDX file")
    ndim, width = data[3], 1 if data[2] == 0x08 else 4
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = math.prod(dims)
    if len(data) != 4 + 4 * ndim + count * width:
        raise ValueError(f"{path.name}: {len(data)} bytes, expected {4 + 4 * ndim + count * width}")
    if width == 1:
        return torch.frombuffer(data, dtype=torch.uint8, offset=4 + 4 * ndim, count=count).reshape(dims)
    import numpy as np

    return torch.from_numpy(np.frombuffer(bytes(data[4 + 4 * ndim :]), dtype=">i4").astype(np.int64)).reshape(
        dims
    )


def out_of_memory(e: BaseException) -> bool:
    """A MemoryError, or torch's allocator failing (a RuntimeError without a type of its own)."""
    return isinstance(e, MemoryError) or (
        isinstance(e, RuntimeError)
        and any(m in str(e) for m in ("can't allocate memory", "not enough memory", "out of memory"))
    )


def memory_message(spec: DatasetSpec, root, doing: str) -> str:
    return (
        f"{raw_folder(spec, root)}: ran out of memory while {doing} ({spec.name}); the files are not "
        f"damaged: free memory (close other programs, lower data.subset), or ask for more (--mem "
        f"on a cluster), and try again"
    )


def read_split(spec: DatasetSpec, root, train: bool):
    """One split's uint8 images (N, 28, 28) and int64 labels, read from the unpacked IDX files
    directly (importing torchvision.datasets would cost ≈2 s of every training process's start);
    EMNIST's column-major images are transposed back and its letters' labels made 0-based."""
    try:
        raw = raw_folder(spec, root)
        names = spec.raw_files()
        if not _unpacked(spec, root):
            raise FileNotFoundError(f"{', '.join(n for n in names if not (raw / n).is_file())} missing")
        x = _read_idx(raw / names[0 if train else 2])
        y = _read_idx(raw / names[1 if train else 3]).to(torch.int64)
        if spec.label_column is not None and y.ndim == 2:
            y = y[:, spec.label_column]
        if spec.transposed:
            x = x.transpose(1, 2)
        if spec.label_offset:
            y = y - spec.label_offset
    except Exception as e:
        if out_of_memory(e):  # the files are fine: never tell the user to delete them
            raise DataError(
                memory_message(spec, root, "reading the " + ("training" if train else "test") + " set")
            ) from None
        raise DataError(
            f"{raw_folder(spec, root)}: a data file is corrupted ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:100] if str(e) else 'unreadable'}); delete the unpacked "
            f"files and run `mnist-hpc data download --dataset {spec.name}`"
        ) from None
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if x.dtype != torch.uint8 or tuple(x.shape[1:]) != (28, 28) or len(x) != len(y) or len(x) == 0:
        raise DataError(
            f"{raw_folder(spec, root)}: unexpected contents (images {tuple(x.shape)}, "
            f"labels {tuple(y.shape)}); delete the unpacked files and run `mnist-hpc data verify`"
        )
    if int(y.min()) < 0 or int(y.max()) >= len(spec.classes):
        raise DataError(
            f"{raw_folder(spec, root)}: labels outside 0..{len(spec.classes) - 1}; the files are corrupted"
        )
    return x.contiguous(), y.to(torch.int64)


@dataclass
class Splits:
    """uint8 images (N, H, W), or (N, C, H, W) for colour, and int64 labels for train / val /
    test, on one device; the class names and the normalisation the model is trained with."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor
    name: str
    classes: tuple
    mean: float
    std: float
    channels: int = 1

    @property
    def shape(self) -> DataShape:
        return DataShape(self.classes, self.channels, int(self.train_x.shape[-1]))

    def info(self) -> dict:
        """What inference needs to feed the model as it was trained (kept in checkpoints)."""
        return {
            "dataset": self.name,
            "classes": list(self.classes),
            "channels": self.channels,
            "size": int(self.train_x.shape[-1]),
            "mean": self.mean,
            "std": self.std,
        }


def measured_stats(x: torch.Tensor) -> tuple[float, float]:
    """Mean and std in [0, 1] of (up to 10,000 evenly spaced) training images."""
    step = max(1, len(x) // 10_000)
    sample = x[::step].float() / 255.0
    return round(sample.mean().item(), 4), round(max(sample.std().item(), 1e-3), 4)


def load(
    dataset: str, root, *, val_split, subset, seed: int, device, download: bool = True, data_cfg=None
) -> Splits:
    """Read the dataset once and carve the validation split (and subset) with ``seed``."""
    if dataset == FOLDER:
        from mnist_hpc.training.imagefolder import read_folder

        x, y, tx, ty, classes = read_folder(data_cfg, root)
        channels = data_cfg.channels
        mean, std = measured_stats(x)
    else:
        spec = DATASETS[dataset]
        prepare(spec, root, download=download)
        x, y = read_split(spec, root, True)
        tx, ty = read_split(spec, root, False)
        classes, channels = spec.classes, 1
        mean, std = (
            (spec.mean, spec.std) if spec.mean is not None and spec.std is not None else measured_stats(x)
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_val = round(len(x) * val_split) if val_split else 0
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if subset:
        train_idx = train_idx[:subset]
    train_idx, _ = train_idx.sort()  # keep file order: the loader shuffles per epoch anyway
    dev = torch.device(device)
    return Splits(
        train_x=x[train_idx].to(dev),
        train_y=y[train_idx].to(dev),
        val_x=x[val_idx.sort()[0]].to(dev) if n_val else None,
        val_y=y[val_idx.sort()[0]].to(dev) if n_val else None,
        test_x=tx.to(dev),
        test_y=ty.to(dev),
        name=dataset,
        classes=tuple(classes),
        mean=mean,
        std=std,
        channels=channels,
    )


# --------------------------------------------------------------------------- batches


def normalize(x_u8: torch.Tensor, mean: float, std: float, dtype=torch.float32) -> torch.Tensor:
    """uint8 (N, H, W) -> normalised float (N, 1, H, W) (colour (N, 3, H, W) stays 4-d), equal
    to ToTensor + Normalize."""
    x = x_u8.to(dtype)
    return (((x.unsqueeze(1) if x.ndim == 3 else x) / 255.0) - mean) / std


def augment(
    x: torch.Tensor,
    *,
    shift: float,
    rotate: float,
    scale: float,
    hflip: bool = False,
    generator: torch.Generator,
) -> torch.Tensor:
    """Random affine (shift in px, rotation in degrees, zoom fraction, and a left-right mirror of
    half the images with ``hflip``) on a float batch in [0, 1] of shape (N, 1, H, W), on its
    device. Zero padding keeps values in [0, 1]."""
    n, _, h, w = x.shape
    dev = x.device

    def u(lo_hi):  # uniform in [-v, v]
        return (torch.rand(n, device=dev, generator=generator) * 2 - 1) * lo_hi

    angle = u(math.radians(rotate)) if rotate else torch.zeros(n, device=dev)
    zoom = 1 + u(scale) if scale else torch.ones(n, device=dev)
    tx = u(2 * shift / w) if shift else torch.zeros(n, device=dev)
    ty = u(2 * shift / h) if shift else torch.zeros(n, device=dev)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    if hflip:  # the output's x reads the input at -x: negate the x column of the affine map
        mirror = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -1.0, 1.0)
        theta[:, :, 0] *= mirror[:, None]
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class ResidentLoader:
    """Batches from tensors already on the device.

    Epoch ``e`` uses the permutation ``randperm(N, seed + e)`` (same on every rank), so the
    position in the data is just (epoch, step): a resumed run sees exactly the batches it would
    have seen. Under DDP each global batch is cut into ``world_size`` contiguous shards, one per
    rank; a last partial batch smaller than ``world_size`` is dropped (on every rank alike).
    """

    def __init__(
        self,
        images,
        labels,
        *,
        batch_size: int,
        mean: float,
        std: float,
        seed: int,
        shuffle: bool = True,
        augment_cfg=None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ):
        self.x, self.y = images, labels
        self.batch_size, self.mean, self.std, self.seed = batch_size, mean, std, seed
        self.shuffle, self.aug = (
            shuffle,
            augment_cfg if augment_cfg is not None and augment_cfg.enabled else None,
        )
        self.rank, self.world = rank, world_size
        self.channels_last = channels_last
        n = len(images)
        full, rest = divmod(n, batch_size)
        self.steps = full + (1 if rest >= world_size else 0)
        self._gen = torch.Generator(device=images.device) if self.aug else None

    def __len__(self) -> int:
        return self.steps

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.x), device=self.x.device)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.x), generator=g).to(self.x.device)

    def batches(self, epoch: int, start_step: int = 0):
        """Yield (step, x, y, global_batch_size) from ``start_step`` to the end of the epoch."""
        perm = self.order(epoch)
        for step in range(start_step, self.steps):
            idx = perm[step * self.batch_size : (step + 1) * self.batch_size]
            gsize = len(idx)
            if self.world > 1:
                idx = idx.tensor_split(self.world)[self.rank]
            yield step, self.make_batch(idx, epoch, step), self.y[idx], gsize

    def make_batch(self, idx, epoch: int = 0, step: int = 0) -> torch.Tensor:
        xb = self.x[idx]
        if self.aug is not None:
            assert self._gen is not None  # made with the augmentation
            self._gen.manual_seed((self.seed * 1_000_003 + epoch) * 100_003 + step * 31 + self.rank)
            xf = augment(
                (xb.unsqueeze(1) if xb.ndim == 3 else xb).float() / 255.0,
                shift=self.aug.shift,
                rotate=self.aug.rotate,
                scale=self.aug.scale,
                hflip=self.aug.hflip,
                generator=self._gen,
            )
            xb = (xf - self.mean) / self.std
        else:
            xb = normalize(xb, self.mean, self.std)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb
