"""Models that leave the run folder: ONNX, TorchScript or a plain state_dict, each with a model card.

``export_model(run or checkpoint, "onnx")`` writes ``<run>/exports/model.onnx`` (or ``--out``)
and, beside it, ``model.onnx.card.json``: what the file is (model, parameters, size), what it
was trained on and how well it does (dataset, classes, test accuracy), how to feed it
(28x28, one channel, white on black, ``(pixel / 255 - mean) / std``), the run's config and the
versions. The exported graph is the model itself: normalised images in, logits out.

Loading them back (``load_exported``, for ``predict`` and ``evaluate``: ONNX through onnxruntime,
TorchScript through torch.jit, with the card's checks) lives in ``exported.py``, the one module
that this writer and ``inference.py`` both use.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from mnist_hpc.config import did_you_mean
from mnist_hpc.config.extras import require
from mnist_hpc.errors import UserError
from mnist_hpc.runs.folder import atomic_write, atomic_write_with, remove_stale_temps, write_json
from mnist_hpc.runs.summary import read_summary
from mnist_hpc.training.exported import (  # noqa: F401 - card_path, is_exported, ...: the names of before
    CARD_FORMAT,
    CARD_SUFFIX,
    FORMATS,
    INPUT,
    OUTPUT,
    card_path,
    file_digest,
    is_exported,
    load_exported,
    read_card,
)
from mnist_hpc.training.inference import find_checkpoint, load_model


@dataclass
class Exported:
    path: Path  # the exported model
    card: Path  # its model card (JSON)
    format: str
    checkpoint: Path  # what it was exported from


# --------------------------------------------------------------------------- export


def export_model(
    source, fmt: str = "onnx", out=None, *, echo=None, trust_code: bool = False, python_model=None
) -> Exported:
    """Export the model of a run folder (its best, else newest checkpoint) or of a checkpoint file
    as ``fmt`` (onnx, torchscript, state_dict) to ``out`` (a file or a folder; default the run
    folder's ``exports/``), with its model card beside it. Every mistake is one ``UserError`` line;
    the output never replaces an input or any file that is not an earlier export, and a failed or
    stopped export leaves no partial file."""
    if fmt not in FORMATS:
        raise UserError(
            f"--format {fmt}: unknown format{did_you_mean(fmt, FORMATS)}; "
            f"expected one of {', '.join(FORMATS)}"
        )
    checkpoint, run_dir = _checkpoint_of(Path(source), echo)
    model, cfg, checkpoint, info = load_model(
        checkpoint, "cpu", trust_code=trust_code, python_model=python_model
    )
    if fmt == "onnx":
        require("onnx", "--format onnx")
    target = _target(out, run_dir, fmt)
    for path in (target, card_path(target)):
        _refuse_overwriting(path, checkpoint)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"{target.parent}: cannot create the export folder ({e.strerror or e}); "
            f"choose a writable place with --out"
        ) from None
    for path in (target, card_path(target)):
        remove_stale_temps(path)  # left by an export that was killed while writing
    try:
        with _sigterm_stops_the_write(target):
            EXPORTERS[fmt](model, target, _example(info))
            card = model_card(model, cfg, fmt, target, checkpoint, run_dir, info)
            write_json(card_path(target), card)
    except UserError:
        raise
    except OSError as e:
        raise UserError(
            f"{target.parent}: cannot write the export ({e.strerror or e}); choose a "
            f"writable place with --out (nothing was written)"
        ) from None
    return Exported(target, card_path(target), fmt, checkpoint)


def _refuse_overwriting(path: Path, checkpoint: Path) -> None:
    """The output may replace an earlier export, never its input (or a link to it) nor any other file."""
    if not (path.exists() or path.is_symlink()):
        return
    same = os.path.realpath(path) == os.path.realpath(checkpoint)
    with contextlib.suppress(OSError):
        same = same or os.path.samefile(path, checkpoint)  # a hard link too
    if same:
        raise UserError(
            f"--out {path}: that is the checkpoint being exported ({checkpoint}) or a link to "
            f"it, and writing there would destroy it; choose another --out (default: "
            f"RUN/exports/)"
        )
    if path.is_dir():
        raise UserError(f"--out {path}: a folder is in the way; choose another --out")
    if not (is_exported(path) or path.name.endswith(CARD_SUFFIX)):
        raise UserError(
            f"--out {path}: the file exists and is not an exported model; export replaces only "
            f"earlier exports, so choose another --out (or move that file away)"
        )


class ExportStopped(UserError):
    exit_code = 143  # 128 + SIGTERM, as a shell reports a terminated command


class _sigterm_stops_the_write:
    """While the export writes, SIGTERM raises (so the atomic writer removes its temporary file)
    instead of ending the process on the spot."""

    def __init__(self, target: Path):
        self.target = target
        # the SIGTERM handler replaced: a function, SIG_DFL / SIG_IGN, or None (not set from Python)
        self.previous: Callable[[int, FrameType | None], Any] | int | None = None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():

            def stop(signum, frame):
                raise ExportStopped(
                    f"{self.target}: export stopped by SIGTERM; nothing was written (run the export again)"
                )

            self.previous = signal.signal(signal.SIGTERM, stop)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _checkpoint_of(source: Path, echo=None) -> tuple[Path, Path]:
    """(the checkpoint to export, the run folder it belongs to) for a run folder or a checkpoint."""
    from mnist_hpc.training.checkpoint import run_of

    if not source.exists():
        raise UserError(f"{source}: no such run folder or checkpoint")
    if source.is_dir():
        is_run = (
            (source / "config.yaml").is_file()
            or (source / "checkpoints").is_dir()
            or source.name == "checkpoints"
        )
        if not is_run:
            raise UserError(
                f"{source}: not a run folder (no config.yaml or checkpoints/ in it); "
                f"give a run folder or a checkpoint file"
            )
        checkpoint = find_checkpoint(source, **({"echo": echo} if echo else {}))
        return checkpoint, run_of(checkpoint)
    if is_exported(source):
        raise UserError(f"{source}: already an exported model; export from its run folder or checkpoint")
    return source, run_of(source) if source.parent.name == "checkpoints" else source.parent


def _target(out, run_dir: Path, fmt: str) -> Path:
    name = "model" + FORMATS[fmt]
    if out is None:
        return run_dir / "exports" / name
    folder = Path(out).is_dir() or str(out).endswith(("/", "\\"))  # Path() drops a trailing slash
    return Path(out) / name if folder else Path(out)


def _example(info: dict) -> torch.Tensor:
    size = int(info.get("size", 28))
    return torch.zeros(2, int(info.get("channels", 1)), size, size)  # a batch of 2: the batch size stays free


def _onnx(model, target: Path, example: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT],
            output_names=[OUTPUT],
            verbose=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    assert program is not None  # dynamo=True returns the ONNXProgram (None is the legacy exporter's)
    atomic_write(target, program.model_proto.SerializeToString())


def _torchscript(model, target: Path, example: torch.Tensor) -> None:
    with warnings.catch_warnings():  # torch.jit is deprecated upstream, yet what many runtimes load
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        atomic_write_with(target, lambda f: torch.jit.save(traced, f))


def _state_dict(model, target: Path, example: torch.Tensor) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write_with(target, lambda f: torch.save(state, f))


EXPORTERS = {"onnx": _onnx, "torchscript": _torchscript, "state_dict": _state_dict}


# --------------------------------------------------------------------------- the model card


def model_card(model, cfg, fmt: str, target: Path, checkpoint: Path, run_dir: Path, info: dict) -> dict:
    import mnist_hpc
    from mnist_hpc.training import checkpoint as ckpt
    from mnist_hpc.training.models import count_params, size_mb

    state = ckpt.load(checkpoint)
    size_bytes, digest = file_digest(target)
    size, channels, classes = int(info.get("size", 28)), int(info.get("channels", 1)), list(info["classes"])
    return {
        "card_format": CARD_FORMAT,
        "card_version": 1,
        "file": target.name,
        "format": fmt,
        "bytes": size_bytes,
        "sha256": digest,
        "model": cfg.model.name,
        "parameters": count_params(model),
        "size_mb": round(size_mb(model), 3),
        "dataset": cfg.data.dataset,
        "classes": classes,
        "data_info": info,
        **_accuracy(state, cfg, run_dir),
        "input": {"name": INPUT, "shape": ["batch", channels, size, size], "dtype": "float32"},
        "output": {
            "name": OUTPUT,
            "shape": ["batch", len(classes)],
            "meaning": "class scores (logits): softmax gives probabilities, argmax the class",
        },
        "preprocessing": {
            "size": [size, size],
            "channels": channels,
            "ink": "white on a black background (invert dark-on-light scans)",
            "scale": "pixel / 255",
            "mean": info["mean"],
            "std": info["std"],
            "formula": "x = (pixel / 255 - mean) / std",
            "from a photo": "grayscale, invert if the background is light, crop to the digit, fit it in "
            "20x20 keeping its aspect ratio, centre it by its centre of mass in 28x28 "
            "(what `mnist-hpc predict` does)",
        },
        "source": {
            "run_dir": str(run_dir.resolve()),
            "checkpoint": str(checkpoint.resolve()),
            "run_id": state.get("run_id"),
        },
        "config": cfg.to_dict(),
        **({"model_code": state["model_code"]} if state.get("model_code") else {}),
        "versions": {
            "mnist_hpc": mnist_hpc.__version__,
            "torch": torch.__version__,
            **_runtime_versions(fmt),
        },
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _accuracy(state: dict, cfg, run_dir: Path) -> dict:
    """The run's test accuracy when it was measured on these very weights (the checkpoint is at
    the epoch the summary evaluated), else null with the best validation accuracy."""
    summary = read_summary(run_dir) if run_dir.is_dir() else None
    epoch, step = state.get("epoch"), state.get("step", 0)
    best_val = state.get("best_val")
    out = {
        "epoch": epoch,
        "val_accuracy": best_val if isinstance(best_val, float) and best_val >= 0 else None,
        "test_accuracy": None,
    }
    if summary is None or step:
        return out
    evaluated = summary.best_epoch if cfg.train.early_stopping.patience else summary.epochs_run
    if epoch == evaluated:
        out["test_accuracy"] = summary.test_accuracy
    return out


def _runtime_versions(fmt: str) -> dict:
    if fmt != "onnx":
        return {}
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
