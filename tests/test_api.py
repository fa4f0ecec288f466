"""The public Python API: torch-free import, train -> Run, Run.load, submit(dry_run), docs/api.md examples."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import mnist_hpc
from mnist_hpc.errors import UserError
from tests.paths import ROOT


def test_import_loads_no_torch_and_is_quick():
    code = (
        "import sys, time; t = time.perf_counter(); import mnist_hpc; dt = time.perf_counter() - t; "
        "print(dt, 'torch' in sys.modules, 'click' in sys.modules, callable(mnist_hpc.train))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    seconds, torch_loaded, click_loaded, has_train = float(out[0]), out[1], out[2], out[3]
    assert torch_loaded == "False" and click_loaded == "False" and has_train == "True"
    assert seconds < 0.5  # ~1 ms here; the bound only catches an eager torch import


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError):
        mnist_hpc.no_such_thing  # noqa: B018


def test_train_returns_a_run_that_loads_back(tiny_config, synth_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = mnist_hpc.load_config(tiny_config, overrides=["train.epochs=1"])
    run = mnist_hpc.train(cfg, data_dir=synth_root, progress=False, echo=lambda m: None)
    assert isinstance(run, mnist_hpc.Run)
    again = mnist_hpc.Run.load(run.path)
    assert again.summary.test_accuracy == run.summary.test_accuracy
    assert again.summary.summary_version == 2
    assert again.config.model.name == "mlp" and again.config.train.epochs == 1
    assert [row["epoch"] for row in again.metrics] == [1]
    assert set(again.plots) == {"learning_curves", "confusion_matrix", "misclassified"}
    assert again.checkpoint("last").name.startswith("last-")
    result = again.evaluate(data_dir=synth_root, device="cpu")
    assert result["test_accuracy"] == pytest.approx(run.summary.test_accuracy, abs=1e-6)


def test_train_from_a_source_with_overrides(tiny_config, synth_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    run = mnist_hpc.train(
        str(tiny_config),
        ["train.epochs=1", "experiment.name=from-path"],
        data_dir=synth_root,
        progress=False,
        echo=lambda m: None,
    )
    assert run.path.name.startswith("from-path-")
    assert run.summary.config_name == "from-path"


def test_predict_paths_arrays_and_pil(tiny_config, synth_root, monkeypatch, tmp_path):
    import numpy as np
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    run = mnist_hpc.train(
        tiny_config, ["train.epochs=1"], data_dir=synth_root, progress=False, echo=lambda m: None
    )
    digit = np.zeros((56, 40), dtype=np.uint8)
    digit[10:46, 18:22] = 255
    Image.fromarray(255 - digit).save(tmp_path / "one.png")  # dark ink on white paper
    preds = run.predict([tmp_path / "one.png", digit, Image.fromarray(digit)])
    assert len(preds) == 3 and all(0 <= p.probability <= 1 and len(p.top) == 3 for p in preds)
    assert preds[0].source.endswith("one.png") and preds[1].source == "image 1"
    assert preds[0].label == preds[1].label == preds[2].label  # the same picture three ways
    with pytest.raises(UserError, match="no such file"):
        run.predict(tmp_path / "missing.png")


def test_run_load_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="no such run folder"):
        mnist_hpc.Run.load(tmp_path / "nope")
    with pytest.raises(UserError, match="not a run folder"):
        mnist_hpc.Run.load(tmp_path)


def test_first_release_summary_reads_with_version_1(tmp_path):
    (tmp_path / "config.yaml").write_text("experiment: {name: old}\n")
    old = {"status": "completed", "test_accuracy": 0.99, "test_loss": 0.03, "params": 10, "novel_key": 1}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    s = mnist_hpc.Run.load(tmp_path).summary
    assert s.summary_version == 1 and s.test_accuracy == 0.99 and s.extra == {"novel_key": 1}
    assert s.to_dict()["novel_key"] == 1 and s.get("params") == 10


def test_submit_dry_run_holds_the_sbatch_lines(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    job = mnist_hpc.submit("quickstart", cluster="narval", account="def-x", dry_run=True)
    assert job.job_id is None
    assert "#SBATCH --account=def-x" in job.script
    assert re.search(r"#SBATCH --gpus-per-node=a100:1", job.script)


def _doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_docs_api_examples_run(real_root, monkeypatch, tmp_path, capsys):
    """Every ```python block of docs/api.md, in order, in one namespace (as a reader would)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # estimate's stored probes
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    blocks = _doc_blocks()
    assert len(blocks) >= 5
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "fast 0.03 1" in out
    acc = float(re.search(r"test accuracy (\d+\.\d+)%", out).group(1))
    assert acc >= 90.0  # one epoch on 6,000 images
    assert (tmp_path / "lr-report.html").stat().st_size > 1000
    assert "#SBATCH --account=def-someone" in out
    assert "5 3 1 [None]" in out  # sweep_submit: 5 runs, 2 a task, one array
    assert "estimate for 1 run on narval (1 MIG slice a100_1g.5gb)" in out and "RGU-hours" in out
    assert re.search(r"data/mnist-only.tar: mnist from .* MiB", out)
