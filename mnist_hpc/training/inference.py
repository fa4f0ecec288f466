"""Using trained models: load one from a run folder or checkpoint, re-evaluate runs on the test
set (alone or as an ensemble), classify images (files or MNIST-style arrays)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import torch

from mnist_hpc.config import Config, config_from_dict
from mnist_hpc.config.datasets import resolve_data_root
from mnist_hpc.errors import UserError
from mnist_hpc.training import checkpoint as ckpt
from mnist_hpc.training import data as datamod
from mnist_hpc.training import exported
from mnist_hpc.training.build import pick_device, setup_host
from mnist_hpc.training.evaluate import nll, predict_probs
from mnist_hpc.training.restore import data_info, model_for_state


class Loaded(NamedTuple):
    """A trained model ready to use, with what feeding it needs."""

    model: torch.nn.Module
    cfg: Config
    path: Path
    info: dict  # dataset, classes, channels, size, mean, std (``data_info``)


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def find_checkpoint(path, echo=_warn) -> Path:
    """A checkpoint file as it is, or a run / checkpoints folder's best.pt, else its newest
    last-*.pt; a damaged one is skipped for the previous good one, with a warning (``echo``)."""
    p = Path(path)
    if not p.is_dir():
        return p
    cdir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    found = ckpt.usable(cdir, warn=echo)
    if found is None:
        where = p if p.name == "checkpoints" else p / "checkpoints"  # where train writes them
        raise UserError(
            f"{p}: no checkpoint found (expected best.pt or last-*.pt in {where}/)"
            + _how_the_run_ended(where.parent)
        )
    return found


def _how_the_run_ended(run_dir: Path) -> str:
    """'; the run failed: ...' (or stopped, or is running) from its state.json, else ''."""
    from mnist_hpc.runs.state import read_state

    try:
        st = read_state(run_dir)
    except Exception:
        return ""
    if st is None or st.state == "completed":
        return ""
    what = st.describe()
    then = (
        "; fix the cause and train it again (see its train.log or job output)"
        if st.state == "failed"
        else "; wait for it to save a checkpoint"
        if st.state == "running"
        else ""
    )
    return f"; the run {what}{then}"


def load_for_inference(path, device="cpu", echo=_warn, what="device", *, trust_code: bool = False):
    """A run folder, checkpoint file or exported model (ONNX, TorchScript, state_dict with its
    model card) -> (model in eval mode, its config, the file's path)."""
    loaded = load_model(path, device, echo, what, trust_code=trust_code)
    return loaded.model, loaded.cfg, loaded.path


def load_model(
    path, device="cpu", echo=_warn, what="device", *, trust_code: bool = False, python_model=None
) -> Loaded:
    """``load_for_inference`` plus the data the model expects (``Loaded.info``)."""
    device = pick_device(device, what=what)
    if exported.is_exported(path):
        model, cfg, p = exported.load_exported(path, device, trust_code=trust_code)
        return Loaded(model, cfg, p, exported.read_card(p).get("data_info") or data_info(cfg))
    p = find_checkpoint(path, echo)
    state = ckpt.load(p, map_location=device)
    cfg = config_from_dict(state.get("config", {}), source=f"{p} (stored config)")
    model = model_for_state(
        cfg, state, p, run_dir=ckpt.run_of(p), trust_code=trust_code, python_model=python_model
    ).to(device)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise UserError(
            f"{p}: checkpoint weights do not fit model {cfg.model.name}: {str(e).splitlines()[0][:160]}"
        ) from None
    model.eval()
    return Loaded(model, cfg, p, data_info(cfg, state))


def evaluate_runs(
    paths,
    *,
    data_dir=None,
    tta=False,
    device="auto",
    batch_size=2000,
    cpus=None,
    offline=False,
    what="--device",
    trust_code: bool = False,
    python_model=None,
):
    """Test accuracy and loss of each run (its best, else newest checkpoint) and, with several,
    of their averaged predictions: (one dict per run, the ensemble's dict or None).

    ``cpus``: CPUs given by a scheduler (threads); ``offline``: never download the dataset;
    ``what``: how the caller spells the device setting (for the one-line error of a bad one)."""
    dev, _ = setup_host(device, cpus=cpus, what=what)
    loaded = [load_model(p, dev, trust_code=trust_code, python_model=python_model) for p in paths]
    datasets = {c.data.dataset for _, c, _, _ in loaded}
    if len(datasets) > 1:
        raise UserError(
            f"--ensemble: the runs were trained on different datasets ({', '.join(sorted(datasets))})"
        )
    cfg = loaded[0].cfg
    if cfg.data.dataset == datamod.FOLDER:
        from mnist_hpc.training.imagefolder import read_folder

        _, _, x, y, _ = read_folder(cfg.data, resolve_data_root(data_dir, None)[0])
    else:
        root, _ = resolve_data_root(data_dir, cfg.data.root)
        spec = datamod.DATASETS[cfg.data.dataset]
        datamod.prepare(spec, root, download=not offline)
        x, y = datamod.read_split(spec, root, False)
    x, y = x.to(dev), y.to(dev)
    results = []
    total: torch.Tensor | None = None  # the sum of the runs' probabilities
    for model, _, p, info in loaded:
        probs = predict_probs(model, x, info["mean"], info["std"], batch_size, tta=tta)
        total = probs if total is None else total + probs
        results.append(
            {
                "checkpoint": str(p),
                "test_accuracy": (probs.argmax(1) == y).float().mean().item(),
                "test_loss": nll(probs, y).item(),
            }
        )
    ensemble = None
    if len(loaded) > 1 and total is not None:
        probs = total / len(loaded)
        ensemble = {
            "test_accuracy": (probs.argmax(1) == y).float().mean().item(),
            "test_loss": nll(probs, y).item(),
            "members": len(loaded),
        }
    return results, ensemble


def predict_arrays(
    checkpoint_path, arrays, device="cpu", top=3, *, trust_code: bool = False, python_model=None
):
    """For each MNIST-style image (28×28 uint8, white ink on black): the ``top`` (class name,
    probability) pairs, most likely first."""
    device = pick_device(device, what="device")
    model, _cfg, _, info = load_model(
        checkpoint_path, device, trust_code=trust_code, python_model=python_model
    )
    classes = info["classes"]
    if not len(arrays):
        return []
    for i, a in enumerate(arrays):
        if tuple(getattr(a, "shape", ())) != (28, 28):
            raise UserError(
                f"image {i}: shape {tuple(getattr(a, 'shape', ()))}; predict_arrays takes 28×28 "
                f"uint8 digits (white ink on black); give image files or PIL images to "
                f"Run.predict, which prepares any size the MNIST way"
            )
    x = torch.stack([torch.as_tensor(a, dtype=torch.uint8) for a in arrays]).to(device)
    size = int(info.get("size", 28))
    if x.shape[-1] != size:  # a model trained on images of another side (an image folder)
        x = (
            torch.nn.functional.interpolate(
                x.unsqueeze(1).float(), size=(size, size), mode="bilinear", align_corners=False
            )
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
            .squeeze(1)
        )
    probs = predict_probs(model, x, info["mean"], info["std"], 256)
    ranked = []
    for pr in probs:
        best = pr.topk(min(top, len(classes)))
        ranked.append(
            [(classes[i], v) for v, i in zip(best.values.tolist(), best.indices.tolist(), strict=False)]
        )
    return ranked
