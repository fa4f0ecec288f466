"""Checkpoints: full training state, written atomically, loaded safely.

A checkpoint holds everything needed to continue bit-exactly: model, optimizer, scheduler, AMP
scaler, position (epoch, step), every RNG (python, numpy, torch CPU and CUDA), early-stopping
state, the metrics so far, the resolved config and a format version. It is written to a
temporary file, fsync'ed and renamed, so a kill at any moment leaves the previous file intact.
Loading uses ``torch.load(weights_only=True)``: tensors and plain data only, never arbitrary
pickled objects.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import torch

from mnist_hpc.errors import CheckpointError

FORMAT = "mnist-hpc-checkpoint"
VERSION = 1
_STEP_RE = re.compile(r"^last-e(\d+)-s(\d+)\.pt$")


def rng_state() -> dict:
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    random.setstate(_to_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(x):
    return [_to_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


def atomic_save(obj, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save(state: dict, ckpt_dir: Path, *, keep: int, best: bool = False) -> Path:
    """Write ``last-e<epoch>-s<step>.pt`` (and ``best.pt``), keep the newest ``keep``."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": VERSION, **state}
    path = ckpt_dir / f"last-e{state['epoch']:04d}-s{state['step']:06d}.pt"
    atomic_save(state, path)
    if best:
        atomic_save(state, ckpt_dir / "best.pt")
    for old in list_checkpoints(ckpt_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """``last-*`` checkpoints, newest position first."""
    found = []
    for p in Path(ckpt_dir).glob("last-e*-s*.pt"):
        m = _STEP_RE.match(p.name)
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), p))
    return [p for _, p in sorted(found, reverse=True)]


def load(path, *, map_location="cpu") -> dict:
    """Load a checkpoint safely; refuse files that are not mnist-hpc checkpoints."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(f"{path}: refused: the file holds Python objects that a safe load "
                                  f"will not construct (not an mnist-hpc checkpoint)") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): {msg}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mnist-hpc checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {state.get('version')} is not "
                              f"supported (this mnist-hpc reads version {VERSION})")
    return state


def newest_valid(ckpt_dir: Path, warn=print):
    """The newest loadable ``last-*`` checkpoint (skipping corrupted ones with a warning)."""
    for p in list_checkpoints(ckpt_dir):
        try:
            return p, load(p)
        except CheckpointError as e:
            warn(f"warning: {e}; trying the previous checkpoint")
    return None, None


def check_compatible(state: dict, cfg_dict: dict, path) -> None:
    """Refuse a checkpoint of another model, dataset or optimizer than the config's."""
    old = state.get("config", {})
    for what, get in [("model", lambda c: c.get("model")),
                      ("data.dataset", lambda c: c.get("data", {}).get("dataset")),
                      ("optim.name", lambda c: c.get("optim", {}).get("name"))]:
        if get(old) != get(cfg_dict):
            raise CheckpointError(f"{path}: checkpoint is for {what}={get(old)!r}, but the config says "
                                  f"{get(cfg_dict)!r}")
