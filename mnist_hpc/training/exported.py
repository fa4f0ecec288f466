"""Exported models, the one module that both writing (``export.py``) and using them
(``inference.py``) import: the file formats, the model card beside each file, and loading an
exported file back, checked.

Loading checks, each a one-line ``UserError`` that says what to do next:

- the card is there (a TorchScript or state_dict file copied without it is recognised and the
  message says what the card holds);
- the file is the one the card describes (its size and sha256, recorded when it was exported):
  a file replaced or truncated after the export is refused;
- the images fed to the model have the shape the card says it takes (``ExportedModel``): a
  batch of another shape is refused before the runtime sees it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import torch

from mnist_hpc.config import config_from_dict
from mnist_hpc.config.extras import require
from mnist_hpc.errors import CheckpointError, UserError

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "state_dict": ".state_dict.pt"}
CARD_SUFFIX = ".card.json"
CARD_FORMAT = "mnist-hpc-model-card"
INPUT, OUTPUT = "image", "logits"
CARD_HOLDS = "the dataset, the class names and the normalisation the model needs"


def card_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + CARD_SUFFIX)


def exported_format(path) -> str | None:
    """The export format a file looks like without its card (by name, or a TorchScript archive
    by content), else None."""
    path = Path(path)
    for fmt, suffix in FORMATS.items():
        if path.name.endswith(suffix):
            return fmt
    return "torchscript" if is_torchscript_archive(path) else None


def is_torchscript_archive(path) -> bool:
    """A zip archive laid out the way ``torch.jit.save`` writes it (``code/`` and ``constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names)


def is_exported(path) -> bool:
    """An exported model: a file with a model card beside it, or one that looks like an export
    (``.onnx``, ``.torchscript.pt``, ``.state_dict.pt`` or a TorchScript archive)."""
    path = Path(path)
    return path.is_file() and (card_path(path).is_file() or exported_format(path) is not None)


def file_digest(path) -> tuple[int, str]:
    """(size in bytes, sha256 hex digest) of a file, read in 1 MiB blocks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def read_card(path) -> dict:
    card = card_path(path)
    if not card.is_file():
        fmt = exported_format(path)
        what = f"a {fmt} export" if fmt else "an exported model"
        raise UserError(
            f"{path}: no model card beside it ({card.name}): the file looks like {what}, and "
            f"its card holds {CARD_HOLDS}; copy the card along with the file, or export "
            f"again with: mnist-hpc export RUN --format {fmt or 'FORMAT'}"
        )
    try:
        data = json.loads(card.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(
            f"{card}: not a readable model card ({e}); export the model again (mnist-hpc export RUN)"
        ) from None
    if not isinstance(data, dict) or data.get("card_format") != CARD_FORMAT:
        raise UserError(f"{card}: not an mnist-hpc model card; export the model again (mnist-hpc export RUN)")
    return data


def verify(path, card: dict) -> None:
    """Refuse a file that is not the one its card describes (size, sha256 written at export)."""
    want = card.get("sha256")
    if not isinstance(want, str):
        return  # a card of an earlier version, written without a digest
    try:
        size, digest = file_digest(path)
    except OSError as e:
        raise UserError(
            f"{path}: cannot read the exported model ({e.strerror or e}); check that the file "
            f"is readable, or export it again"
        ) from None
    if digest != want:
        how = (
            f"{size:,} bytes where the card says {card['bytes']:,}"
            if isinstance(card.get("bytes"), int) and card["bytes"] != size
            else "its sha256 differs"
        )
        raise UserError(
            f"{path}: not the file its model card describes ({how}): it was replaced or "
            f"damaged after the export; export it again from its run (mnist-hpc export RUN)"
        )


class OnnxModel(torch.nn.Module):
    """An ONNX file run by onnxruntime, called like the torch model (tensor in, logits out)."""

    def __init__(self, path: Path):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise UserError(
                f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:160]}); "
                f"export it again (mnist-hpc export RUN)"
            ) from None
        self.input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


class ExportedModel(torch.nn.Module):
    """An exported model behind a check of what it is fed: a batch whose image shape is not the
    one on the card is refused in one line, naming both shapes, before the runtime sees it."""

    def __init__(self, inner: torch.nn.Module, path: Path, card: dict):
        super().__init__()
        self.inner, self.path = inner, Path(path)
        shape = (card.get("input") or {}).get("shape")
        self.image_shape: tuple[int, ...] | None = None
        if isinstance(shape, list) and len(shape) >= 2 and all(isinstance(d, int) for d in shape[1:]):
            self.image_shape = tuple(shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_shape is not None and tuple(x.shape[1:]) != self.image_shape:
            want = "×".join(map(str, self.image_shape))
            hint = (
                "give 28×28 digits (white on black), or image files, which predict prepares the MNIST way"
                if self.image_shape == (1, 28, 28)
                else "prepare the images as its card's preprocessing says"
            )
            raise UserError(
                f"{self.path}: the model takes images of batch×{want} (its model card), got "
                f"{'×'.join(map(str, x.shape))}; {hint}"
            )
        try:
            return self.inner(x)
        except UserError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise UserError(
                f"{self.path}: the exported model failed on a batch of shape "
                f"{'×'.join(map(str, x.shape))} ({first}); check the input against its model "
                f"card, or export it again"
            ) from None


def load_exported(path, device="cpu", *, trust_code: bool = False):
    """An exported file -> (model in eval mode, the run's config from its card, the path)."""
    path = Path(path)
    card = read_card(path)
    fmt = card.get("format")
    onnx = fmt == "onnx" or path.suffix == ".onnx"
    if onnx:
        require("onnxruntime", f"{path}: an ONNX model")
    verify(path, card)
    cfg = config_from_dict(card.get("config", {}), source=f"{card_path(path)} (config)")
    model: torch.nn.Module
    if onnx:
        model = OnnxModel(path)
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model = torch.jit.load(str(path), map_location=device)
            except Exception as e:
                raise UserError(
                    f"{path}: not a loadable TorchScript model ({str(e).splitlines()[0][:160]}); "
                    f"export it again (mnist-hpc export RUN --format torchscript)"
                ) from None
    elif fmt == "state_dict":
        from mnist_hpc.training.restore import model_for_state

        model = model_for_state(cfg, card, path, trust_code=trust_code).to(device)
        try:
            model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        except Exception as e:
            raise CheckpointError(
                f"{path}: weights do not load into model {cfg.model.name} ({str(e).splitlines()[0][:160]})"
            ) from None
    else:
        raise UserError(
            f"{card_path(path)}: unknown format {fmt!r} (expected one of {', '.join(FORMATS)}); "
            f"export the model again (mnist-hpc export RUN)"
        )
    model.eval()
    return ExportedModel(model, path, card).eval(), cfg, path
