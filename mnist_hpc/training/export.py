"""Models that leave the run folder: ONNX, TorchScript or a plain state_dict, each with a model card.

``export_model(run or checkpoint, "onnx")`` writes ``<run>/exports/model.onnx`` (or ``--out``)
and, beside it, ``model.onnx.card.json``: what the file is (model, parameters, size), what it
was trained on and how well it does (dataset, classes, test accuracy), how to feed it
(28x28, one channel, white on black, ``(pixel / 255 - mean) / std``), the run's config and the
versions. The exported graph is the model itself: normalised images in, logits out.

``load_exported(file)`` loads any of them back for ``predict`` and ``evaluate`` (ONNX through
onnxruntime, TorchScript through torch.jit); the card beside the file supplies the dataset and
the normalisation.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from mnist_hpc.config import config_from_dict, did_you_mean
from mnist_hpc.config.extras import require
from mnist_hpc.errors import CheckpointError, UserError
from mnist_hpc.runs.folder import atomic_write, atomic_write_with, write_json
from mnist_hpc.runs.summary import read_summary

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "state_dict": ".state_dict.pt"}
CARD_SUFFIX = ".card.json"
CARD_FORMAT = "mnist-hpc-model-card"
INPUT, OUTPUT = "image", "logits"


@dataclass
class Exported:
    path: Path  # the exported model
    card: Path  # its model card (JSON)
    format: str
    checkpoint: Path  # what it was exported from


def card_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + CARD_SUFFIX)


def is_exported(path) -> bool:
    """An exported model: a file with a model card beside it, or any ``.onnx`` file."""
    path = Path(path)
    return path.is_file() and (card_path(path).is_file() or path.suffix == ".onnx")


# --------------------------------------------------------------------------- export


def export_model(source, fmt: str = "onnx", out=None, *, trust_code: bool = False, python_model=None) -> Exported:
    """Export the model of a run folder (its best, else newest checkpoint) or of a checkpoint file
    as ``fmt`` (onnx, torchscript, state_dict) to ``out`` (a file or a folder; default the run
    folder's ``exports/``), with its model card beside it. Every mistake is one ``UserError`` line."""
    from mnist_hpc.training.inference import load_model

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown format{did_you_mean(fmt, FORMATS)}; "
                        f"expected one of {', '.join(FORMATS)}")
    checkpoint, run_dir = _checkpoint_of(Path(source))
    model, cfg, checkpoint, info = load_model(checkpoint, "cpu", trust_code=trust_code, python_model=python_model)
    if fmt == "onnx":
        require("onnx", "--format onnx")
    target = _target(out, run_dir, fmt)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{target.parent}: cannot create the export folder ({e.strerror or e})") from None
    EXPORTERS[fmt](model, target, _example(info))
    card = model_card(model, cfg, fmt, target, checkpoint, run_dir, info)
    write_json(card_path(target), card)
    return Exported(target, card_path(target), fmt, checkpoint)


def _checkpoint_of(source: Path) -> tuple[Path, Path]:
    """(the checkpoint to export, the run folder it belongs to) for a run folder or a checkpoint."""
    from mnist_hpc.training.checkpoint import run_of
    from mnist_hpc.training.inference import find_checkpoint

    if not source.exists():
        raise UserError(f"{source}: no such run folder or checkpoint")
    if source.is_dir():
        is_run = (source / "config.yaml").is_file() or (source / "checkpoints").is_dir() \
            or source.name == "checkpoints"
        if not is_run:
            raise UserError(f"{source}: not a run folder (no config.yaml or checkpoints/ in it); "
                            f"give a run folder or a checkpoint file")
        checkpoint = find_checkpoint(source)
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
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT],
                                    output_names=[OUTPUT], verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
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
    blob = target.read_bytes()
    size, channels, classes = int(info.get("size", 28)), int(info.get("channels", 1)), list(info["classes"])
    return {
        "card_format": CARD_FORMAT, "card_version": 1,
        "file": target.name, "format": fmt, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
        "model": cfg.model.name, "parameters": count_params(model), "size_mb": round(size_mb(model), 3),
        "dataset": cfg.data.dataset, "classes": classes, "data_info": info,
        **_accuracy(state, cfg, run_dir),
        "input": {"name": INPUT, "shape": ["batch", channels, size, size], "dtype": "float32"},
        "output": {"name": OUTPUT, "shape": ["batch", len(classes)],
                   "meaning": "class scores (logits): softmax gives probabilities, argmax the class"},
        "preprocessing": {
            "size": [size, size], "channels": channels, "ink": "white on a black background (invert dark-on-light scans)",
            "scale": "pixel / 255", "mean": info["mean"], "std": info["std"],
            "formula": "x = (pixel / 255 - mean) / std",
            "from a photo": "grayscale, invert if the background is light, crop to the digit, fit it in "
                            "20x20 keeping its aspect ratio, centre it by its centre of mass in 28x28 "
                            "(what `mnist-hpc predict` does)"},
        "source": {"run_dir": str(run_dir.resolve()), "checkpoint": str(checkpoint.resolve()),
                   "run_id": state.get("run_id")},
        "config": cfg.to_dict(),
        **({"model_code": state["model_code"]} if state.get("model_code") else {}),
        "versions": {"mnist_hpc": mnist_hpc.__version__, "torch": torch.__version__, **_runtime_versions(fmt)},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _accuracy(state: dict, cfg, run_dir: Path) -> dict:
    """The run's test accuracy when it was measured on these very weights (the checkpoint is at
    the epoch the summary evaluated), else null with the best validation accuracy."""
    summary = read_summary(run_dir) if run_dir.is_dir() else None
    epoch, step = state.get("epoch"), state.get("step", 0)
    best_val = state.get("best_val")
    out = {"epoch": epoch, "val_accuracy": best_val if isinstance(best_val, float) and best_val >= 0 else None,
           "test_accuracy": None}
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


# --------------------------------------------------------------------------- loading back


def read_card(path) -> dict:
    card = card_path(path)
    if not card.is_file():
        raise UserError(f"{path}: no model card beside it ({card.name}), which says the dataset and the "
                        f"normalisation; export it again with: mnist-hpc export RUN --format ...")
    try:
        data = json.loads(card.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{card}: not a readable model card ({e})") from None
    if not isinstance(data, dict) or data.get("card_format") != CARD_FORMAT:
        raise UserError(f"{card}: not an mnist-hpc model card")
    return data


class OnnxModel(torch.nn.Module):
    """An ONNX file run by onnxruntime, called like the torch model (tensor in, logits out)."""

    def __init__(self, path: Path):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own error types
            raise UserError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:160]})") from None
        self.input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def load_exported(path, device="cpu", *, trust_code: bool = False):
    """An exported file -> (model in eval mode, the run's config from its card, the path)."""
    path = Path(path)
    card = read_card(path)
    cfg = config_from_dict(card.get("config", {}), source=f"{card_path(path)} (config)")
    fmt = card.get("format")
    if fmt == "onnx" or path.suffix == ".onnx":
        require("onnxruntime", f"{path}: an ONNX model")
        model = OnnxModel(path)
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model = torch.jit.load(str(path), map_location=device)
            except Exception as e:  # noqa: BLE001
                raise UserError(f"{path}: not a loadable TorchScript model ({str(e).splitlines()[0][:160]})") from None
    elif fmt == "state_dict":
        from mnist_hpc.training.inference import model_for_state

        model = model_for_state(cfg, card, path, trust_code=trust_code).to(device)
        try:
            model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: weights do not load into model {cfg.model.name} "
                                  f"({str(e).splitlines()[0][:160]})") from None
    else:
        raise UserError(f"{card_path(path)}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    model.eval()
    return model, cfg, path
