"""Your own network: a model file (custom), a Python object (train(cfg, model=...)), the code kept in
the run folder with its digest, --trust-code, resume refused when the code changed, and each
mistake in the user's code as one line plus the user's own frames (exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mnist_hpc.training import usercode
from tests.own_model_support import NET, only_run, write_project


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A private trust list and code cache for every test (never the user's ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_a_model_file_trains_and_its_run_keeps_the_code(cli, tmp_path, synth_root, monkeypatch):
    cfg = write_project(tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # the file is found relative to the config, not the working folder
    r = cli("train", cfg, "--data-dir", synth_root)
    assert r.code == 0, r
    assert "custom TinyNet (" in r.out
    run = only_run(tmp_path)
    copy = run / "model" / "tiny.py"
    assert copy.read_text() == (tmp_path / "nets" / "tiny.py").read_text()
    ident = json.loads((run / "run.json").read_text())
    assert ident["model_code"]["sha256"] == usercode.read_code(copy).sha256
    assert ident["model_code"]["factory"] == "TinyNet"
    assert "file: model/tiny.py" in (run / "config.yaml").read_text()  # the run's config uses its own copy

    # evaluate, predict and export work from the run's copy after the original is deleted
    (tmp_path / "nets" / "tiny.py").unlink()
    r = cli("evaluate", run, "--data-dir", synth_root)
    assert r.code == 0 and "test accuracy" in r.out, r
    r = cli("export", run, "--format", "torchscript")
    assert r.code == 0, r
    card = json.loads((run / "exports" / "model.torchscript.pt.card.json").read_text())
    assert card["classes"] == [str(i) for i in range(10)] and card["model_code"]["factory"] == "TinyNet"
    r = cli(
        "train",
        run / "config.yaml",
        "--data-dir",
        synth_root,
        "--set",
        "train.epochs=1",
        "--set",
        f"experiment.output_dir={tmp_path / 'again'}",
    )
    assert r.code == 0, r  # the run folder's config trains again, from its own copy


def test_a_run_folder_from_elsewhere_needs_trust_code(cli, tmp_path, synth_root, monkeypatch):
    cfg = write_project(tmp_path)
    assert cli("train", cfg, "--data-dir", synth_root).code == 0
    run = only_run(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "someone-else"))  # another user, another machine
    r = cli("evaluate", run, "--data-dir", synth_root)
    assert r.code == 2
    assert "carries model code (tiny.py" in r.err and "--trust-code" in r.err
    r = cli("evaluate", run, "--data-dir", synth_root, "--trust-code")
    assert r.code == 0, r
    assert cli("evaluate", run, "--data-dir", synth_root).code == 0  # trusted once: remembered

    # a checkpoint copied alone carries the code's text: it runs from the cache, once trusted
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "third"))
    lone = tmp_path / "lone.pt"
    lone.write_bytes((run / "checkpoints" / "best.pt").read_bytes())
    assert cli("evaluate", lone, "--data-dir", synth_root).code == 2
    r = cli("evaluate", lone, "--data-dir", synth_root, "--trust-code")
    assert r.code == 0, r


def test_resuming_with_changed_code_is_refused_before_anything_is_written(cli, tmp_path, synth_root):
    cfg = write_project(tmp_path, extra="")
    assert cli("train", cfg, "--data-dir", synth_root).code == 0
    run = only_run(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    net = tmp_path / "nets" / "tiny.py"
    net.write_text(net.read_text().replace("nn.ReLU(), nn.MaxPool2d(2)", "nn.GELU(), nn.MaxPool2d(2)"))
    r = cli(
        "train",
        cfg,
        "--data-dir",
        synth_root,
        "--run-dir",
        run,
        "--resume",
        "auto",
        "--set",
        "train.epochs=2",
    )
    assert r.code == 2, r
    assert "differs from the code this run was trained with" in r.err and "sha256" in r.err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_a_sweep_over_the_factorys_arguments(cli, tmp_path, synth_root):
    write_project(tmp_path)
    sweep = tmp_path / "widths.yaml"
    sweep.write_text("""
base: own.yaml
grid:
  model.args.width: [4, 8]
""")
    r = cli("sweep", "plan", sweep)
    assert r.code == 0, r
    assert "model.args.width" in r.out and "2 runs" in r.out
    r = cli("train", tmp_path / "own.yaml", "--data-dir", synth_root, "--set", "model.args.width=4")
    assert r.code == 0, r
    assert "custom TinyNet (426 params)" in r.out  # width 4: convs 40 + 296, head 90
    run = only_run(tmp_path)
    assert "width: 4" in (run / "config.yaml").read_text()


# --------------------------------------------------------------------------- mistakes in the user's code


MISTAKES = {
    "syntax error": ("class TinyNet(nn.Module:\n    pass\n", "TinyNet", "line 1: SyntaxError"),
    "failing import": (
        "import torch\nimport no_such_package_here\n",
        "TinyNet",
        "an import in the model file failed: ModuleNotFoundError",
    ),
    "misspelt factory": (NET, "TinyNte", "'TinyNte' not found in"),
    "exception in __init__": (
        NET.replace("super().__init__()", "super().__init__()\n        raise ValueError('width too odd')"),
        "TinyNet",
        "raised ValueError: width too odd",
    ),
    "exception in forward": (
        NET.replace("return self.head(self.body(x))", "raise RuntimeError('boom')"),
        "TinyNet",
        "raised RuntimeError: boom",
    ),
    "9 outputs": (
        NET.replace("num_classes=10", "num_classes=9"),
        "TinyNet",
        "forward must return logits of shape (N, 10)",
    ),
    "(N, 1, 10) output": (
        NET.replace("return self.head(self.body(x))", "return self.head(self.body(x)).unsqueeze(1)"),
        "TinyNet",
        "it returned a tensor of shape (2, 1, 10)",
    ),
    "a tuple": (
        NET.replace("return self.head(self.body(x))", "return self.head(self.body(x)), x"),
        "TinyNet",
        "it returned a tuple of 2",
    ),
    "no trainable parameters": (
        NET.replace("    def forward", "        self.requires_grad_(False)\n\n    def forward"),
        "TinyNet",
        "has no trainable parameters",
    ),
    "too many parameters": (
        NET.replace(
            "self.head = nn.Linear(2 * width, num_classes)",
            "self.head = nn.Linear(2 * width, num_classes)\n        self.big = nn.Linear(20000, 10000)",
        ),
        "TinyNet",
        "the cap is 100,000,000",
    ),
    "input-size mismatch": (
        NET.replace("nn.AdaptiveMaxPool2d(1), nn.Flatten())", "nn.Flatten())").replace(
            "nn.Linear(2 * width, num_classes)", "nn.Linear(2 * width * 7 * 7, num_classes)"
        ),
        "TinyNet",
        "layer head (Linear expecting 392 input features) on input (2, 1568)",
    ),
    "not a module": (
        NET + "\n\ndef notmodel(width=8):\n    return 3\n",
        "notmodel",
        "returned int, not a torch.nn.Module",
    ),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_each_mistake_in_the_users_code_is_one_line_and_their_frames(cli, tmp_path, synth_root, case):
    net, factory, expected = MISTAKES[case]
    big = "too many" in case
    cfg = write_project(tmp_path, net, factory, "{width: 4}" if not big else "{}")
    r = cli("config", "validate", cfg)
    assert r.code == 2, r
    first = r.err.splitlines()[0]
    assert expected in first, r.err
    assert "Traceback (most recent call last)" not in r.err
    if case in ("exception in __init__", "exception in forward", "failing import"):
        assert "Traceback (your code):" in r.err and "tiny.py" in r.err
        assert "mnist_hpc" not in r.err.split("Traceback (your code):")[1]  # the user's frames only
    if case == "input-size mismatch":
        assert "1x28x28" in first
    r = cli("train", cfg, "--data-dir", synth_root)
    assert r.code == 2 and expected in r.err.splitlines()[0], r
    assert not (tmp_path / "runs").exists()  # nothing written


def test_a_missing_model_file_is_one_line(cli, tmp_path):
    cfg = write_project(tmp_path)
    (tmp_path / "nets" / "tiny.py").unlink()
    r = cli("config", "validate", cfg)
    assert r.code == 2 and "model.file:" in r.err and "not found" in r.err, r


def test_did_you_mean_over_the_files_names(cli, tmp_path):
    cfg = write_project(tmp_path, factory="TinyNte")
    r = cli("config", "validate", cfg)
    assert "did you mean 'TinyNet'" in r.err and "make_tiny" in r.err, r


def test_config_validate_counts_on_the_meta_device_and_imports_torch_once(tmp_path):
    cfg = write_project(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "mnist_hpc", "config", "validate", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "custom model: 1,2" in r.stdout or "parameters" in r.stdout


# --------------------------------------------------------------------------- from Python


def test_a_class_from_python_trains_and_a_notebook_class_stays_in_session(tmp_path, synth_root):
    import torch
    from torch import nn

    import mnist_hpc

    cfg = mnist_hpc.load_config(
        "quickstart",
        [
            "train.epochs=1",
            "data.subset=300",
            "data.batch_size=50",
            f"experiment.output_dir={tmp_path / 'runs'}",
            "runtime.threads=1",
        ],
    )

    class CellNet(nn.Module):  # as if defined in a notebook cell: no file to copy
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    run = mnist_hpc.train(cfg, model=CellNet, data_dir=synth_root, progress=False, echo=lambda s: None)
    assert run.summary.params == 7850
    assert 0 <= run.evaluate(data_dir=synth_root)["test_accuracy"] <= 1
    assert run.predict(torch.zeros(28, 28, dtype=torch.uint8).numpy())[0].label is not None
    assert json.loads((run.path / "run.json").read_text())["model_code"]["origin"] == "python"
    # a new process cannot rebuild it: the message says how to move it into a file
    with pytest.raises(
        mnist_hpc.UserError if hasattr(mnist_hpc, "UserError") else Exception,
        match="move the class into a file",
    ):
        mnist_hpc.Run.load(run.path).model()

    # an instance works too
    run2 = mnist_hpc.train(cfg, model=CellNet(), data_dir=synth_root, progress=False, echo=lambda s: None)
    assert run2.model().fc.weight.shape == (10, 784)


def test_a_class_from_a_file_is_recorded_with_its_file(tmp_path, synth_root, monkeypatch):
    import importlib.util

    import mnist_hpc

    write_project(tmp_path)
    spec = importlib.util.spec_from_file_location("tinymod_for_test", tmp_path / "nets" / "tiny.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tinymod_for_test"] = mod
    spec.loader.exec_module(mod)
    cfg = mnist_hpc.load_config(
        "quickstart",
        [
            "train.epochs=1",
            "data.subset=300",
            "data.batch_size=50",
            f"experiment.output_dir={tmp_path / 'runs'}",
            "runtime.threads=1",
        ],
    )
    run = mnist_hpc.train(cfg, model=mod.TinyNet, data_dir=synth_root, progress=False, echo=lambda s: None)
    assert (run.path / "model" / "tiny.py").is_file()
    assert (
        mnist_hpc.Run.load(run.path).model().head.out_features == 10
    )  # a fresh Run rebuilds it from the copy


@pytest.mark.slow  # a real multi-process or multi-run training: ~20-50 s on 2 cores
def test_a_sweep_over_several_model_files_from_another_folder(cli, tmp_path, synth_root, monkeypatch):
    write_project(tmp_path)
    (tmp_path / "nets" / "wide.py").write_text(textwrap.dedent(NET).replace("width=8", "width=12"))
    sweep = tmp_path / "files.yaml"
    sweep.write_text("""
base: own.yaml
set: {model.args: {}}
grid:
  model.file: [nets/tiny.py, nets/wide.py]
""")
    monkeypatch.chdir(tmp_path.parent)  # the files are named relative to the sweep file, not here
    r = cli("sweep", "run", sweep, "--data-dir", synth_root)
    assert r.code == 0, r
    runs = sorted((tmp_path / "runs" / "sweeps" / "files").iterdir())
    copies = sorted(p.name for run in runs for p in (run / "model").iterdir())
    assert copies == ["tiny.py", "wide.py"], copies


def test_sweep_submit_carries_every_model_file_of_its_axes(cli, tmp_path, monkeypatch):
    write_project(tmp_path)
    (tmp_path / "nets" / "wide.py").write_text(textwrap.dedent(NET).replace("width=8", "width=12"))
    sweep = tmp_path / "files.yaml"
    sweep.write_text(
        "base: own.yaml\nset: {model.args: {}}\ngrid:\n  model.file: [nets/tiny.py, nets/wide.py]\n"
    )
    from mnist_hpc.cluster import snapshot
    from mnist_hpc.experiments.sweepfile import load_sweep

    folder = tmp_path / "job"
    folder.mkdir()
    path = snapshot.write(load_sweep(sweep), folder)  # checks that the copy makes the same runs
    (tmp_path / "nets" / "tiny.py").unlink()
    (tmp_path / "nets" / "wide.py").unlink()
    copy = load_sweep(path)  # the copy needs nothing from the user's folder
    files = sorted(Path(r.config.model.file).name for r in copy.runs)
    assert files == ["tiny.py", "wide.py"] and all(str(folder) in r.config.model.file for r in copy.runs)
