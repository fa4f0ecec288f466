"""Rebuilding the (untrained) module that a checkpoint's or an export card's weights belong to.

A built-in or torchvision net is rebuilt from the stored config; a custom one from the code the
checkpoint carries (the run folder's copy when its digest matches), which runs only when trusted
(training/usercode.py); a network given to ``train()`` as a Python object from that object. The
data it was trained for (classes, channels, side, normalisation) comes from the stored
``data_info``. Used by inference (checkpoints) and exported (state_dict exports) alike.
"""

from __future__ import annotations

import torch

from mnist_hpc.config.datasets import DATASETS, DataShape
from mnist_hpc.errors import UserError
from mnist_hpc.training import usercode
from mnist_hpc.training.models import build_model


def data_info(cfg, state: dict | None = None) -> dict:
    """The classes and normalisation a model was trained with: as its checkpoint (or export card)
    recorded them, else the dataset registry's (checkpoints of earlier versions; MNIST-family only)."""
    stored = (state or {}).get("data_info")
    if isinstance(stored, dict) and stored.get("classes"):
        return stored
    spec = DATASETS.get(cfg.data.dataset)
    if spec is None or spec.mean is None:
        raise UserError(
            f"{cfg.data.dataset}: this checkpoint does not record its classes and normalisation; "
            f"train it again with this version"
        )
    return {
        "dataset": spec.name,
        "classes": list(spec.classes),
        "channels": 1,
        "size": 28,
        "mean": spec.mean,
        "std": spec.std,
    }


def model_for_state(
    cfg, state: dict, where, *, run_dir=None, trust_code: bool = False, python_model=None
) -> torch.nn.Module:
    """The module for ``state``'s weights (see the module's docstring)."""
    info = data_info(cfg, state)
    shape = DataShape(tuple(info["classes"]), int(info.get("channels", 1)), int(info.get("size", 28)))
    code = None
    if cfg.model.source == "custom":
        record = state.get("model_code") or {}
        if not record.get("sha256") and python_model is not None:  # defined in this Python session
            if isinstance(python_model, torch.nn.Module):
                import copy

                return copy.deepcopy(python_model)
            return build_model(cfg.model, shape, factory=python_model)
        if not record.get("sha256"):
            raise UserError(
                f"{where}: the network ({cfg.model.factory}) was defined in Python without a file, so "
                f"no other process can rebuild it; move the class into a file (e.g. nets/mynet.py), "
                f"set model.file and model.factory, and train again"
            )
        code = usercode.code_from_record(
            record, record.get("text"), where, run_dir=run_dir, trust_code=trust_code
        )
    return build_model(cfg.model, shape, code=code, load_weights=False)
