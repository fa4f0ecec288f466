"""Checkpoints: full training state, written atomically, loaded safely.

A checkpoint holds everything needed to continue bit-exactly: model, optimizer, scheduler, AMP
scaler, position (epoch, step), every RNG (python, numpy, torch CPU and CUDA), early-stopping
state, the metrics so far, the resolved config and a format version. It is written to a
temporary file, fsync'ed and renamed, so a kill at any moment leaves the previous file intact.
Loading uses ``torch.load(weights_only=True)``: tensors and plain data only, never arbitrary
pickled objects.

Each checkpoint's sha256 is recorded beside it once the file is in place (``<file>.sha256``, in
``sha256sum`` format: ``sha256sum -c`` checks it too). ``load`` verifies it, so a file damaged
after it was written (a bad disk, a truncated copy) is refused; ``newest_valid`` and
``usable`` then fall back to the previous good checkpoint, saying so. Files without a record
(earlier versions) load unverified.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from pathlib import Path

import torch

from mnist_hpc.config import flatten
from mnist_hpc.errors import CheckpointError
from mnist_hpc.runs.folder import atomic_write, atomic_write_with

FORMAT = "mnist-hpc-checkpoint"
VERSION = 1
# last-epoch<E>-step<S>.pt: epoch E (1-based: the one in progress) after S of its steps, the
# numbers the log and every message use. Files of earlier versions, last-e<done>-s<S>.pt, count
# the epochs done (one less), and are still found and ordered with the others.
_NAME_RE = re.compile(r"^last-epoch(\d+)-step(\d+)\.pt$")
_OLD_NAME_RE = re.compile(r"^last-e(\d+)-s(\d+)\.pt$")


def checkpoint_name(epoch: int, step: int) -> str:
    """The file name of the checkpoint at ``epoch`` epochs done and ``step`` steps into the next:
    ``last-epoch0001-step000102.pt`` is "epoch 1, step 102", as the log says."""
    return f"last-epoch{epoch + 1:04d}-step{step:06d}.pt"


def _position(name: str):
    """(epochs done, step) of a checkpoint file name, either spelling; None for other files."""
    m = _NAME_RE.match(name)
    if m:
        return int(m.group(1)) - 1, int(m.group(2))
    m = _OLD_NAME_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def rng_state() -> dict:
    import numpy as np

    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple)  # the global generator is an MT19937: its legacy state is the tuple
    kind, keys, pos, has_gauss, cached = legacy
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
    if state.get("cuda") and torch.cuda.is_available():
        # one state per GPU the saving process saw: restore those this process sees (a run saved
        # with 4 GPUs may resume with 1; one saved on a CPU, or resumed on one, has none to restore)
        for index, gpu_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, index)


def _to_plain(x):
    return [_to_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


def atomic_save(obj, path) -> Path:
    """``torch.save`` through the project's one atomic writer, then the file's sha256 beside it
    (written after the checkpoint is in place: a record always describes a whole file)."""
    digest_path(path).unlink(missing_ok=True)  # a kill before the new record: no record, never a stale one
    path = atomic_write_with(path, lambda f: torch.save(obj, f))
    record_digest(path)
    return path


DIGEST_SUFFIX = ".sha256"


def digest_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_digest(path) -> Path:
    """Write ``<path>.sha256`` for the file as it is on disk now."""
    path = Path(path)
    return atomic_write(digest_path(path), f"{sha256_of(path)}  {path.name}\n")


def recorded_digest(path) -> str | None:
    """The sha256 recorded for a checkpoint when it was written, None when there is no record."""
    try:
        text = digest_path(path).read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0].lower() if text and len(text[0]) == 64 else None


def verify_digest(path) -> None:
    """Refuse a checkpoint whose bytes are not those recorded when it was written."""
    want = recorded_digest(path)
    if want is None:
        return
    try:
        got = sha256_of(path)
    except OSError as e:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({e.strerror or e}); check that the file is readable"
        ) from None
    if got != want:
        raise CheckpointError(
            f"{path}: damaged: its sha256 is not the one recorded when it was written "
            f"({digest_path(path).name}); name an earlier checkpoint, or give the run "
            f"folder (it falls back to the previous good one)"
        )


def save(state: dict, ckpt_dir: Path, *, keep: int, best: bool = False) -> Path:
    """Write ``last-epoch<E>-step<S>.pt`` (``checkpoint_name``) and ``best.pt``; keep the newest ``keep`` of this run.

    The checkpoint carries the run id of the folder's ``run.json``. Rotation deletes only this
    run's own older files: never one at a later position than the one just written, never one
    stamped with another run's id."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    run_id = folder_run_id(ckpt_dir.parent)
    state = {"format": FORMAT, "version": VERSION, "run_id": run_id, **state}
    path = ckpt_dir / checkpoint_name(state["epoch"], state["step"])
    atomic_save(state, path)
    if best:
        atomic_save(state, ckpt_dir / "best.pt")
    _rotate(ckpt_dir, path, keep, run_id)
    return path


def folder_run_id(run_dir) -> str | None:
    """The run id in ``<run_dir>/run.json`` (None for folders of earlier versions)."""
    try:
        data = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data.get("run_id") if isinstance(data, dict) else None


def _rotate(ckpt_dir: Path, newest: Path, keep: int, run_id) -> None:
    files = list_checkpoints(ckpt_dir)
    older = files[files.index(newest) :] if newest in files else []
    for old in older[keep:]:
        if run_id is None or stored_run_id(old) in (run_id, None):
            old.unlink(missing_ok=True)
            digest_path(old).unlink(missing_ok=True)


def stored_run_id(path):
    """The run id a checkpoint was stamped with (None for files of earlier versions); "?" when
    the file cannot be read (so it counts as nobody's and is left alone). Memory-mapped: cheap."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return "?"
    return state.get("run_id") if isinstance(state, dict) else "?"


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """``last-*`` checkpoints, newest position first."""
    found = []
    for p in Path(ckpt_dir).glob("last-*.pt"):
        pos = _position(p.name)
        if pos is not None:
            found.append((pos, p))
    return [p for _, p in sorted(found, reverse=True)]


def load(path, *, map_location="cpu") -> dict:
    """Load a checkpoint safely; refuse files that are not mnist-hpc checkpoints, and those whose
    sha256 is not the one recorded when they were written."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    verify_digest(path)
    try:
        with warnings.catch_warnings():  # e.g. torch's pickle-protocol note before a refusal
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        msg = str(e).splitlines()[0].split(". ")[0][:160] if str(e) else type(e).__name__
        if "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects that a safe load "
                f"will not construct (not an mnist-hpc checkpoint)"
            ) from None
        if "weights_only" in str(e):
            raise CheckpointError(
                f"{path}: refused: not a file written by torch.save (a raw pickle or "
                f"other data), so not an mnist-hpc checkpoint"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): {msg}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mnist-hpc checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {state.get('version')} is not "
            f"supported (this mnist-hpc reads version {VERSION})"
        )
    return state


def newest_valid(ckpt_dir: Path, warn=print):
    """The newest loadable ``last-*`` checkpoint (skipping corrupted ones with a warning)."""
    for p in list_checkpoints(ckpt_dir):
        try:
            return p, load(p)
        except CheckpointError as e:
            warn(f"warning: {e}; trying the previous checkpoint")
    return None, None


def usable(ckpt_dir: Path, warn=print) -> Path | None:
    """The checkpoint a run folder offers for using its model: ``best.pt``, else the newest
    ``last-*``; one that is damaged (unreadable, or not the bytes recorded when it was written)
    is skipped with a warning naming the one used instead. None when there is none at all;
    raises the newest's error when every one is damaged."""
    ckpt_dir = Path(ckpt_dir)
    candidates = ([ckpt_dir / "best.pt"] if (ckpt_dir / "best.pt").is_file() else []) + list_checkpoints(
        ckpt_dir
    )
    errors = []
    for p in candidates:
        try:
            load(p)
        except CheckpointError as e:
            errors.append((p, e))
            continue
        for _, err in errors:
            warn(f"warning: {str(err).split('; ')[0]}; using {p.name} instead")
        return p
    if errors:
        names = ", ".join(p.name for p, _ in errors[:3]) + (" ..." if len(errors) > 3 else "")
        raise CheckpointError(
            f"{ckpt_dir}: no checkpoint of the run loads ({names}: damaged or unreadable); "
            f"restore them from a copy, or train the run again"
        )
    return None


# --------------------------------------------------------------------------- resume: same run?

# Keys that may differ on --resume without making it another run: how long it trains, when it
# saves, where and how fast it runs, what it logs. Any other difference is another experiment.
RESUMABLE_KEYS = (
    "train.epochs",
    "train.checkpoint.",
    "train.compile",
    "runtime.threads",
    "runtime.device",
    "runtime.deterministic",
    "runtime.channels_last",
    "runtime.dist_timeout",
    "runtime.max_requeues",
    "runtime.requeue_signal",
    "experiment.tensorboard",
    "experiment.loggers",
    "experiment.output_dir",
    "data.root",
    "data.eval_batch_size",
    "model.file",
)  # the model's code is compared by its sha256 (training/run.py), not its path


_ABSENT = object()  # a key one of the two configs does not have (e.g. another model's parameter)


def _diff(old: dict, new: dict) -> dict:
    a, b = flatten(old), flatten(new)
    pairs = {k: (a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in dict.fromkeys([*a, *b])}
    return {k: [va, vb] for k, (va, vb) in pairs.items() if va != vb}


def config_changes(old: dict, new: dict) -> dict:
    """{dotted key: [old value, new value]} for every key whose value differs (None: absent)."""
    return {k: [None if v is _ABSENT else v for v in pair] for k, pair in _diff(old, new).items()}


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def _show(value) -> str:
    text = "(absent)" if value is _ABSENT else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def run_of(path) -> Path:
    """The run folder of a checkpoint file (``<run>/checkpoints/x.pt``), else the file itself."""
    path = Path(path)
    return path.parent.parent if path.parent.name == "checkpoints" else path


def check_compatible(state: dict, cfg_dict: dict, path) -> dict:
    """The changes that resuming ``state`` with config ``cfg_dict`` applies ({key: [old, new]}):
    only keys of ``RESUMABLE_KEYS`` may differ, and train.epochs may not fall below the epoch the
    checkpoint reached. Anything else raises one line listing the differing keys (old -> new)
    and how to start a new run from the checkpoint's weights (--init-from)."""
    old = state.get("config")
    if not isinstance(old, dict):
        raise CheckpointError(
            f"{path}: the checkpoint carries no config, so it cannot be resumed; "
            f"start a new run from its weights with --init-from {path}"
        )
    from mnist_hpc.config import config_from_dict

    old = config_from_dict(old, source=f"{path} (stored config)").to_dict()  # validated, defaults filled
    refused = {k: v for k, v in _diff(old, cfg_dict).items() if not resumable(k)}
    if refused:
        shown = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in list(refused.items())[:8])
        more = f" (+{len(refused) - 8} more)" if len(refused) > 8 else ""
        run = run_of(path)
        own = "its config.yaml" if (run / "config.yaml").is_file() else "its own config"
        raise CheckpointError(
            f"{path}: the config differs from the checkpoint's: {shown}{more}; --resume continues the "
            f"same run (only epochs, checkpointing, device/threads and logging may change): resume with "
            f"{own}, or start a new run from its weights: mnist-hpc train CONFIG --init-from {run}"
        )
    reached = int(state.get("epoch", 0))
    epochs = cfg_dict.get("train", {}).get("epochs", reached)
    if epochs < reached or (epochs == reached and state.get("step", 0)):
        raise CheckpointError(
            f"{path}: train.epochs={epochs}, but the checkpoint is already at epoch "
            f"{reached + (1 if state.get('step', 0) else 0)}; set train.epochs to at least that"
        )
    return config_changes(old, cfg_dict)
