"""`mnist-hpc evaluate`, `predict` and `export` are faces over ``mnist_hpc.evaluate``,
``mnist_hpc.predict`` and ``mnist_hpc.export``: what each command prints is what the Python API
returns (for one run, several and their ensemble; a good image and a bad one; the same exported
file and card), from a run folder, a checkpoint or an exported file, and the ``Run`` methods
agree with both."""

from __future__ import annotations

import json
import sys

import pytest

import mnist_hpc


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_root):
    """Two tiny runs (one epoch each, other seeds) on the synthetic data."""
    top = tmp_path_factory.mktemp("parity")
    runs = []
    for seed in (0, 1):
        cfg = mnist_hpc.load_config(
            "quickstart",
            [
                f"experiment.output_dir={top / 'runs'}",
                f"experiment.name=parity{seed}",
                f"experiment.seed={seed}",
                "model.name=mlp",
                "model.hidden=[16]",
                "train.epochs=1",
                "data.val_split=0.2",
                "runtime.threads=1",
            ],
        )
        runs.append(mnist_hpc.train(cfg, data_dir=synth_root, progress=False, echo=lambda m: None))
    return runs


def _line(r: dict) -> str:
    return f"test accuracy {r['test_accuracy'] * 100:.2f}%  loss {r['test_loss']:.4f}  {r['checkpoint']}"


def test_evaluate_prints_what_the_api_returns(trained, synth_root, cli):
    run = trained[0]
    r = cli("evaluate", run.path, "--data-dir", synth_root, "--device", "cpu")
    assert r.code == 0, r.err
    found = mnist_hpc.evaluate(run, data_dir=synth_root, device="cpu")
    assert found.ensemble is None or found.ensemble["members"] == 1
    assert r.out.splitlines() == [_line(found.results[0])]
    assert run.evaluate(data_dir=synth_root, device="cpu") == found.results[0]


def test_an_ensemble_prints_what_the_api_returns(trained, synth_root, cli):
    paths = [run.path for run in trained]
    r = cli("evaluate", *paths, "--ensemble", "--data-dir", synth_root, "--device", "cpu")
    assert r.code == 0, r.err
    found = mnist_hpc.evaluate(trained, data_dir=synth_root, device="cpu")
    ens = found.ensemble
    assert ens is not None and ens["members"] == 2
    assert r.out.splitlines() == [
        *map(_line, found.results),
        f"ensemble of 2: test accuracy {ens['test_accuracy'] * 100:.2f}%  loss {ens['test_loss']:.4f}",
    ]


def test_a_bad_device_is_named_as_each_caller_spells_it(trained, synth_root, cli):
    r = cli("evaluate", trained[0].path, "--device", "gpu0")
    assert r.code != 0 and r.err.strip().splitlines()[-1].startswith("error: --device='gpu0': not a device")
    with pytest.raises(mnist_hpc.errors.UserError, match=r"^device='gpu0': not a device"):
        mnist_hpc.evaluate(trained[0], data_dir=synth_root, device="gpu0")


# --------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A digit the MNIST way (84×84, white on black) and a blank image (nothing to classify)."""
    from PIL import Image

    from tests.conftest import synthetic_split

    folder = tmp_path_factory.mktemp("parity-images")
    x, _ = synthetic_split(1, 2)
    good, blank = folder / "good.png", folder / "blank.png"
    Image.fromarray(x[0]).resize((84, 84)).save(good)
    Image.new("L", (50, 50), 255).save(blank)
    return good, blank


def _shown(p) -> str:
    """The line `mnist-hpc predict` prints for a Prediction, from its fields."""
    if p.error is not None:
        return f"error: {p.error}"
    return f"{p.source}: " + "  ".join(f"{name} {prob * 100:.1f}%" for name, prob in p.top)


def test_predict_prints_what_the_api_returns(trained, images, cli):
    run, (good, blank) = trained[0], images
    r = cli("predict", run.path, good, blank)
    assert r.code == 1, r.err  # one image failed
    found = mnist_hpc.predict(run.path, [str(good), str(blank)], errors="skip")
    assert [p.source for p in found] == [str(good), str(blank)]
    assert found[0].label is not None and found[0].label == found[0].top[0][0] and len(found[0].top) == 3
    assert found[1].label is None and found[1].error.startswith(f"{blank}: ")
    assert r.out.splitlines() == [_shown(found[0])]
    assert r.err.splitlines() == [_shown(found[1])]
    assert run.predict([good, blank], errors="skip") == found
    assert mnist_hpc.predict(run, [good, blank], errors="skip") == found
    with pytest.raises(mnist_hpc.errors.UserError, match="blank"):  # errors="raise", the default
        mnist_hpc.predict(run.path, [good, blank])


def test_predict_from_a_checkpoint_prints_what_the_api_returns(trained, images, cli):
    checkpoint, (good, _) = trained[0].checkpoint(), images
    r = cli("predict", checkpoint, good)
    assert r.code == 0 and r.err == "", r.err
    found = mnist_hpc.predict(checkpoint, [good])
    assert r.out.splitlines() == [_shown(found[0])]
    assert found == trained[0].predict([good])  # the best checkpoint is the run's own model


def test_a_source_without_a_model_is_one_line_for_both(trained, images, cli, tmp_path):
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    good, blank = images
    for imgs in ([good], [blank]):  # even when no image is good, the missing model is the error
        r = cli("predict", empty, *imgs)
        assert r.code == 1 and r.out == ""
        with pytest.raises(mnist_hpc.errors.UserError) as e:
            mnist_hpc.predict(empty, imgs, errors="skip")
        assert r.err.splitlines() == [f"error: {e.value}"]


# --------------------------------------------------------------------------- export


def _export_lines(done) -> list[str]:
    size = done.path.stat().st_size
    return [
        f"exported {done.checkpoint} as {done.format}: {done.path} ({size / 1e3:,.1f} kB)",
        f"model card: {done.card}",
    ]


def _card(path) -> dict:
    card = json.loads(path.read_text())
    card.pop("exported_at")
    return card


def test_export_prints_what_the_api_returns(trained, images, cli, tmp_path):
    run = trained[0]
    r = cli("export", run.path, "--format", "state_dict", "--out", tmp_path / "cli.pt")
    assert r.code == 0, r.err
    by_cli = _card(tmp_path / "cli.pt.card.json")
    done = mnist_hpc.export(run.path, "state_dict", out=tmp_path / "cli.pt")  # the same file again
    assert (done.path, done.card, done.format) == (
        tmp_path / "cli.pt",
        tmp_path / "cli.pt.card.json",
        "state_dict",
    )
    assert done.checkpoint == run.checkpoint()
    assert r.out.splitlines() == _export_lines(done)
    assert _card(done.card) == by_cli  # the same card (but for the time it was written)
    assert run.export("state_dict", tmp_path / "cli.pt") == done.path
    assert _card(done.card) == by_cli


def test_export_of_a_checkpoint_to_the_run_and_predict_from_it(trained, images, cli):
    run, (good, _) = trained[1], images
    r = cli("export", run.checkpoint(), "--format", "torchscript")
    assert r.code == 0, r.err
    done = mnist_hpc.export(run.checkpoint(), "torchscript")
    assert done.path.parent == run.path / "exports" and done.checkpoint == run.checkpoint()
    assert r.out.splitlines()[1:] == _export_lines(done)[1:]  # a TorchScript file's size varies a little
    assert r.out.splitlines()[0].startswith(f"exported {done.checkpoint} as torchscript: {done.path} (")
    assert mnist_hpc.export(run, "torchscript").path == done.path  # a Run is its folder
    p = cli("predict", done.path, good)  # the exported file: the same classes, the same lines
    assert p.code == 0, p.err
    found = mnist_hpc.predict(done.path, [good])
    assert p.out.splitlines() == [_shown(found[0])]
    assert found[0].label == run.predict([good])[0].label


def test_an_export_mistake_is_the_same_line_for_both(trained, cli):
    run = trained[0]
    r = cli("export", run.path, "--format", "onnxx")
    with pytest.raises(mnist_hpc.errors.UserError) as e:
        mnist_hpc.export(run.path, "onnxx")
    assert r.code == 1 and r.err.splitlines() == [f"error: {e.value}"]


def test_predict_and_export_are_the_api_functions_not_modules():
    """``mnist_hpc.export`` is the function: no ``mnist_hpc/export.py`` or package shadows it,
    and importing the modules named export (CLI, writer) leaves it in place."""
    import mnist_hpc.cli.export
    import mnist_hpc.training.export

    assert "mnist_hpc.export" not in sys.modules and "mnist_hpc.predict" not in sys.modules
    assert mnist_hpc.export is mnist_hpc.api.export and mnist_hpc.predict is mnist_hpc.api.predict
    assert {"predict", "export"} <= set(dir(mnist_hpc)) and {"predict", "export"} <= set(mnist_hpc.__all__)
