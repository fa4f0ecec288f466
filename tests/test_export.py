"""Models that leave the run folder (issue 14): ONNX (through onnxruntime), TorchScript and
state_dict exports match the run's model, predict/evaluate accept them, the model card says how
to use them, and every mistake is one line."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch

import mnist_hpc
from mnist_hpc.config.datasets import DATASETS
from mnist_hpc.config.extras import installed
from mnist_hpc.errors import UserError
from mnist_hpc.training import export
from tests.cli_support import one_line
from tests.conftest import synthetic_split

needs_onnx = pytest.mark.skipif(
    not all(installed(m) for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="the export extra is not installed (pip install 'mnist-hpc[export]')",
)


@pytest.fixture(scope="module")
def images():
    """1,000 digits the model has not seen, normalised as the model expects."""
    x, _ = synthetic_split(1000, seed=7)
    spec = DATASETS["mnist"]
    return ((torch.from_numpy(x).float().unsqueeze(1) / 255.0) - spec.mean) / spec.std


@pytest.fixture(scope="module")
def reference(run, images):
    with torch.no_grad():
        return mnist_hpc.Run.load(run).model()(images)


# --------------------------------------------------------------------------- parity


@needs_onnx
def test_onnx_matches_the_model_on_1000_images(run, images, reference):
    import onnxruntime as ort

    path = mnist_hpc.Run.load(run).export("onnx")
    assert path == run / "exports" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    logits = session.run(None, {"image": images.numpy()})[0]
    assert logits.shape == (1000, 10)
    assert np.abs(logits - reference.numpy()).max() < 1e-4
    model, cfg, _ = export.load_exported(path)  # what predict and evaluate use
    with torch.no_grad():
        assert (model(images[:7]) - reference[:7]).abs().max() < 1e-4
    assert cfg.model.name == "fast"


def test_torchscript_and_state_dict_match_the_model_on_1000_images(run, images, reference):
    ts = mnist_hpc.Run.load(run).export("torchscript")
    sd = mnist_hpc.Run.load(run).export("state_dict")
    assert (ts.name, sd.name) == ("model.torchscript.pt", "model.state_dict.pt")
    with warnings.catch_warnings():  # torch.jit is deprecated upstream; it still loads
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(ts))
    with torch.no_grad():
        assert (scripted(images) - reference).abs().max() < 1e-4
        model, _, _ = export.load_exported(sd)
        assert torch.equal(model(images), reference)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "state_dict"])
def test_predict_and_evaluate_take_an_exported_file(fmt, run, cli, tmp_path, synth_root):
    if fmt == "onnx" and not all(installed(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        pytest.skip("the export extra is not installed (pip install 'mnist-hpc[export]')")
    from PIL import Image

    r = cli("export", run, "--format", fmt, "--out", f"{tmp_path / 'out'}/")  # a folder: the slash says so
    exported = tmp_path / "out" / f"model{export.FORMATS[fmt]}"
    assert r.code == 0 and r.out.splitlines()[0].startswith(f"exported {run}/checkpoints/"), r
    assert r.out.splitlines()[1] == f"model card: {exported}.card.json"
    x, _ = synthetic_split(4, seed=11)
    pngs = []
    for i, digit in enumerate(x):
        pngs.append(tmp_path / f"digit{i}.png")
        Image.fromarray(digit).resize((84, 84)).save(pngs[-1])
    by_run, by_file = cli("predict", run, *pngs), cli("predict", exported, *pngs)
    assert by_run.code == by_file.code == 0, (by_run, by_file)

    def labels(out):
        return [line.split(": ")[1].split()[0] for line in out.splitlines()]

    assert labels(by_file.out) == labels(by_run.out) and len(labels(by_run.out)) == 4
    by_run, by_file = (
        cli("evaluate", p, "--data-dir", synth_root, "--device", "cpu") for p in (run, exported)
    )
    assert by_run.code == by_file.code == 0, (by_run, by_file)
    assert by_file.out.split("  ")[0] == by_run.out.split("  ")[0]  # "test accuracy NN.NN%"


# --------------------------------------------------------------------------- the model card


def test_the_model_card_says_what_the_file_is_and_how_to_feed_it(run):
    path = mnist_hpc.Run.load(run).export("state_dict")
    card = json.loads((run / "exports" / "model.state_dict.pt.card.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    spec = DATASETS["mnist"]
    assert (
        card["file"] == path.name and card["format"] == "state_dict" and card["bytes"] == path.stat().st_size
    )
    assert (card["dataset"], card["classes"], card["model"]) == ("mnist", list(spec.classes), "fast")
    assert card["parameters"] == summary["params"] and card["size_mb"] == summary["model_size_mb"]
    assert card["test_accuracy"] == summary["test_accuracy"]  # the same weights the summary evaluated
    pre = card["preprocessing"]
    assert (pre["mean"], pre["std"], pre["size"]) == (spec.mean, spec.std, [28, 28])
    assert "white on a black background" in pre["ink"] and pre["formula"] == "x = (pixel / 255 - mean) / std"
    assert card["config"] == mnist_hpc.Run.load(run).config.to_dict()
    assert card["versions"]["mnist_hpc"] == mnist_hpc.__version__
    assert card["input"]["shape"] == ["batch", 1, 28, 28]


def test_the_card_has_no_test_accuracy_for_weights_the_summary_did_not_evaluate(run):
    cfg = mnist_hpc.Run.load(run).config
    assert export._accuracy({"epoch": 1, "step": 0}, cfg, run)["test_accuracy"] is not None
    assert export._accuracy({"epoch": 1, "step": 5}, cfg, run)["test_accuracy"] is None  # mid-epoch
    assert export._accuracy({"epoch": 0, "step": 0}, cfg, run)["test_accuracy"] is None  # an earlier epoch


def test_a_checkpoint_file_exports_next_to_its_run(run, cli):
    (checkpoint,) = (run / "checkpoints").glob("last-*.pt")
    r = cli("export", checkpoint, "--format", "torchscript")
    assert r.code == 0, r
    assert (run / "exports" / "model.torchscript.pt.card.json").is_file()


# --------------------------------------------------------------------------- bad input


def test_a_folder_that_is_not_a_run(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert one_line(cli("export", tmp_path)) == (
        f"error: {tmp_path}: not a run folder (no config.yaml or checkpoints/ in it); "
        f"give a run folder or a checkpoint file"
    )
    assert (
        one_line(cli("export", tmp_path / "nope"))
        == f"error: {tmp_path / 'nope'}: no such run folder or checkpoint"
    )
    assert one_line(cli("export", tmp_path / "notes.txt")).startswith(  # the checkpoint loader's own line
        f"error: {tmp_path / 'notes.txt'}: not a readable checkpoint"
    )


def test_an_unknown_format(cli, run):
    assert one_line(cli("export", run, "--format", "onx")) == (
        "error: --format onx: unknown format (did you mean 'onnx'?); expected one of onnx, torchscript, state_dict"
    )
    with pytest.raises(UserError, match="unknown format"):
        mnist_hpc.Run.load(run).export("tflite")


def test_a_missing_extra(cli, run, monkeypatch):
    for module in ("onnx", "onnxscript", "onnxruntime"):  # as if the export extra were not installed
        monkeypatch.setitem(sys.modules, module, None)
    assert one_line(cli("export", run, "--format", "onnx")) == (
        "error: --format onnx needs onnx, onnxscript, onnxruntime, which are not installed: "
        "pip install 'mnist-hpc[export]' (or just: pip install onnx onnxscript onnxruntime)"
    )


def test_an_exported_file_without_its_card_or_runtime(cli, run, tmp_path, monkeypatch):
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(b"not really")
    r = cli("predict", bare, tmp_path / "x.png")
    assert one_line(r).startswith(f"error: {bare}: no model card beside it (bare.onnx.card.json)")
    already = mnist_hpc.Run.load(run).export("state_dict")
    assert one_line(cli("export", already)) == (
        f"error: {already}: already an exported model; export from its run folder or checkpoint"
    )
    if installed("onnxruntime"):
        (tmp_path / "bare.onnx.card.json").write_text(
            (already.parent / (already.name + ".card.json")).read_text().replace('"state_dict"', '"onnx"')
        )
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        assert one_line(cli("evaluate", bare)) == (
            f"error: {bare}: an ONNX model needs onnxruntime, which is not installed: "
            "pip install 'mnist-hpc[export]' (or just: pip install onnxruntime)"
        )
