"""Using trained models: load one from a run folder or checkpoint, re-evaluate runs on the test
set (alone or as an ensemble), classify images (files or MNIST-style arrays)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional

import torch

from mnist_hpc.config import config_from_dict
from mnist_hpc.config.datasets import resolve_data_root
from mnist_hpc.errors import UserError
from mnist_hpc.training import checkpoint as ckpt
from mnist_hpc.training import data as datamod
from mnist_hpc.training.build import cpu_threads, pick_device
from mnist_hpc.training.evaluate import nll, predict_probs
from mnist_hpc.training.models import build_model


class Loaded(NamedTuple):
    """A trained model ready to use, with what feeding it needs."""

    model: torch.nn.Module
    cfg: object
    path: Path
    info: dict  # dataset, classes, channels, size, mean, std (``data_info``)


def data_info(cfg, state: Optional[dict] = None) -> dict:
    """The classes and normalisation a model was trained with: as its checkpoint (or export card)
    recorded them, else the dataset registry's (checkpoints of earlier versions; MNIST-family only)."""
    stored = (state or {}).get("data_info")
    if isinstance(stored, dict) and stored.get("classes"):
        return stored
    spec = datamod.DATASETS.get(cfg.data.dataset)
    if spec is None or spec.mean is None:
        raise UserError(f"{cfg.data.dataset}: this checkpoint does not record its classes and normalisation; "
                        f"re-export or retrain it with this version")
    return {"dataset": spec.name, "classes": list(spec.classes), "channels": 1, "size": 28,
            "mean": spec.mean, "std": spec.std}


def model_for_state(cfg, state: dict, where, *, run_dir=None, trust_code: bool = False,
                    python_model=None) -> torch.nn.Module:
    """The (untrained) module a checkpoint's weights belong to: a built-in or torchvision net from
    its config, a custom one from the code the checkpoint carries (the run folder's copy when it
    matches), which runs only when trusted (training/usercode.py)."""
    from mnist_hpc.config.datasets import DataShape
    from mnist_hpc.training import usercode

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
            raise UserError(f"{where}: the network ({cfg.model.factory}) was defined in Python without a file, so "
                            f"no other process can rebuild it; move the class into a file (e.g. nets/mynet.py), "
                            f"set model.file and model.factory, and train again")
        code = usercode.code_from_record(record, record.get("text"), where, run_dir=run_dir, trust_code=trust_code)
    return build_model(cfg.model, shape, code=code, load_weights=False)


def find_checkpoint(path) -> Path:
    """A checkpoint file as it is, or a run / checkpoints folder's best.pt, else its newest last-*.pt."""
    p = Path(path)
    if not p.is_dir():
        return p
    cdir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    candidates = ([cdir / "best.pt"] if (cdir / "best.pt").exists() else []) + ckpt.list_checkpoints(cdir)
    if not candidates:
        raise UserError(f"{p}: no checkpoint found (expected {cdir}/best.pt or last-*.pt)")
    return candidates[0]


def load_for_inference(path, device="cpu", *, trust_code: bool = False):
    """A run folder, checkpoint file or exported model (ONNX, TorchScript, state_dict with its
    model card) -> (model in eval mode, its config, the file's path)."""
    loaded = load_model(path, device, trust_code=trust_code)
    return loaded.model, loaded.cfg, loaded.path


def load_model(path, device="cpu", *, trust_code: bool = False, python_model=None) -> Loaded:
    """``load_for_inference`` plus the data the model expects (``Loaded.info``)."""
    from mnist_hpc.training import export

    if export.is_exported(path):
        model, cfg, p = export.load_exported(path, device, trust_code=trust_code)
        return Loaded(model, cfg, p, export.read_card(p).get("data_info") or data_info(cfg))
    p = find_checkpoint(path)
    state = ckpt.load(p, map_location=device)
    cfg = config_from_dict(state.get("config", {}), source=f"{p} (stored config)")
    model = model_for_state(cfg, state, p, run_dir=ckpt.run_of(p), trust_code=trust_code,
                            python_model=python_model).to(device)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"{p}: checkpoint weights do not fit model {cfg.model.name}: "
                        f"{str(e).splitlines()[0][:160]}") from None
    model.eval()
    return Loaded(model, cfg, p, data_info(cfg, state))


def evaluate_runs(paths, *, data_dir=None, tta=False, device="auto", batch_size=2000, cpus=None,
                  offline=False, trust_code: bool = False, python_model=None):
    """Test accuracy and loss of each run (its best, else newest checkpoint) and, with several,
    of their averaged predictions: (one dict per run, the ensemble's dict or None).

    ``cpus``: CPUs given by a scheduler (threads); ``offline``: never download the dataset."""
    dev = pick_device(device)
    torch.set_num_threads(cpu_threads(None, cpus))
    loaded = [load_model(p, dev, trust_code=trust_code, python_model=python_model) for p in paths]
    datasets = {c.data.dataset for _, c, _, _ in loaded}
    if len(datasets) > 1:
        raise UserError(f"--ensemble: the runs were trained on different datasets ({', '.join(sorted(datasets))})")
    cfg = loaded[0].cfg
    if cfg.data.dataset == datamod.FOLDER:
        _, _, x, y, _ = datamod.read_folder(cfg.data, resolve_data_root(data_dir, None)[0])
    else:
        root, _ = resolve_data_root(data_dir, cfg.data.root)
        spec = datamod.DATASETS[cfg.data.dataset]
        datamod.prepare(spec, root, download=not offline)
        x, y = datamod.read_split(spec, root, False)
    x, y = x.to(dev), y.to(dev)
    results, total = [], 0
    for model, _, p, info in loaded:
        probs = predict_probs(model, x, info["mean"], info["std"], batch_size, tta=tta)
        total = total + probs
        results.append({"checkpoint": str(p), "test_accuracy": (probs.argmax(1) == y).float().mean().item(),
                        "test_loss": nll(probs, y).item()})
    ensemble = None
    if len(loaded) > 1:
        probs = total / len(loaded)
        ensemble = {"test_accuracy": (probs.argmax(1) == y).float().mean().item(),
                    "test_loss": nll(probs, y).item(), "members": len(loaded)}
    return results, ensemble


def predict_arrays(checkpoint_path, arrays, device="cpu", top=3, *, trust_code: bool = False, python_model=None):
    """For each MNIST-style image (28×28 uint8, white ink on black): the ``top`` (class name,
    probability) pairs, most likely first."""
    model, cfg, _, info = load_model(checkpoint_path, device, trust_code=trust_code, python_model=python_model)
    classes = info["classes"]
    if not len(arrays):
        return []
    x = torch.stack([torch.as_tensor(a, dtype=torch.uint8) for a in arrays]).to(device)
    size = int(info.get("size", 28))
    if x.shape[-1] != size:  # a model trained on images of another side (an image folder)
        x = torch.nn.functional.interpolate(x.unsqueeze(1).float(), size=(size, size), mode="bilinear",
                                            align_corners=False).round().clamp(0, 255).to(torch.uint8).squeeze(1)
    probs = predict_probs(model, x, info["mean"], info["std"], 256)
    ranked = []
    for pr in probs:
        best = pr.topk(min(top, len(classes)))
        ranked.append([(classes[i], v) for v, i in zip(best.values.tolist(), best.indices.tolist())])
    return ranked


def predict_images(checkpoint_path, images, device="cpu", top=3, *, trust_code: bool = False):
    """(path, top (class name, probability) pairs) for each image file, prepared the MNIST way;
    the first bad image raises its one-line UserError."""
    results = predict_each(checkpoint_path, images, device, top, trust_code=trust_code)
    for _, _, error in results:
        if error:
            raise UserError(error)
    return [(path, ranked) for path, ranked, _ in results]


def predict_each(checkpoint_path, images, device="cpu", top=3, *, trust_code: bool = False):
    """Each image file judged on its own: (path, top pairs or None, None or the one-line error
    naming the file) in input order. The model loads once; a bad checkpoint raises."""
    from mnist_hpc.training import imageprep

    prepared = []
    for p in images:
        try:
            prepared.append((p, imageprep.prepare(p), None))
        except UserError as e:
            prepared.append((p, None, str(e)))
        except Exception as e:  # noqa: BLE001 - an odd file must not cost the other images theirs
            prepared.append((p, None, f"{p}: cannot prepare the image ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'})"))
    good = [a for _, a, err in prepared if err is None]
    ranked = iter(predict_arrays(checkpoint_path, good, device, top, trust_code=trust_code) if good else [])
    if not good:
        load_model(checkpoint_path, device, trust_code=trust_code)  # a bad checkpoint is still the first error
    return [(p, None if err else next(ranked), err) for p, _, err in prepared]
