"""Checkpoints are verified (issue 27, faults): each checkpoint's sha256 is recorded beside it
once the file is in place; resume, evaluate and export verify it and fall back to the previous
good checkpoint, saying so, when the latest is damaged; a damaged file named on its own is one
line."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from mnist_hpc.training import checkpoint as ckpt
from tests.cli_support import one_line


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_root) -> Path:
    """A finished 2-epoch run with a validation split: best.pt and two last-* checkpoints."""
    from mnist_hpc.config import config_from_dict
    from mnist_hpc.training.context import TrainContext
    from mnist_hpc.training.run import run_training

    tmp = tmp_path_factory.mktemp("digest")
    cfg = config_from_dict(
        {
            "experiment": {"name": "digest", "seed": 0, "output_dir": str(tmp / "runs")},
            "data": {"dataset": "mnist", "val_split": 0.2, "batch_size": 64, "eval_batch_size": 256},
            "model": {"name": "mlp", "hidden": [16]},
            "optim": {"name": "adam", "lr": 0.003},
            "train": {"epochs": 2, "checkpoint": {"keep": 2}},
            "runtime": {"threads": 1},
        }
    )
    run_training(
        cfg, ctx=TrainContext(), data_dir=synth_root, run_dir=tmp / "run", progress=False, echo=lambda m: None
    )
    return tmp / "run"


@pytest.fixture
def run(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def damage(path: Path) -> None:
    """Flip one byte in the middle, keeping the size (a bad disk block, not a truncation)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_each_checkpoint_has_its_sha256_recorded_in_sha256sum_format(run):
    files = sorted((run / "checkpoints").glob("*.pt"))
    assert [p.name for p in files] == [
        "best.pt",
        "last-epoch0002-step000000.pt",
        "last-epoch0003-step000000.pt",
    ]
    for p in files:
        record = (run / "checkpoints" / (p.name + ".sha256")).read_text()
        assert record == f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
    assert sorted(q.name for q in (run / "checkpoints").iterdir()) == sorted(
        [p.name for p in files] + [p.name + ".sha256" for p in files]
    )  # rotation removes both


def test_rotation_removes_the_record_with_its_checkpoint(tmp_path):
    for epoch in range(1, 4):
        ckpt.save({"epoch": epoch, "step": 0}, tmp_path / "checkpoints", keep=1)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "last-epoch0004-step000000.pt",
        "last-epoch0004-step000000.pt.sha256",
    ]


def test_a_damaged_checkpoint_that_still_unpickles_is_refused_when_named(run, cli, synth_root):
    newest = run / "checkpoints" / "last-epoch0003-step000000.pt"
    state = ckpt.load(newest)
    bad = bytearray(newest.read_bytes())
    # change a stored number inside the archive: the file still loads, with another value
    at = bytes(bad).find(b"digest")
    assert at > 0
    bad[at : at + 6] = b"DIGEST"
    newest.write_bytes(bytes(bad))
    with pytest.raises(ckpt.CheckpointError, match="damaged: its sha256 is not the one recorded"):
        ckpt.load(newest)
    assert state["epoch"] == 2
    line = one_line(cli("evaluate", newest, "--data-dir", synth_root, "--device", "cpu"))
    assert line.startswith(
        f"error: {newest}: damaged: its sha256 is not the one recorded when it was written "
        f"(last-epoch0003-step000000.pt.sha256); name an earlier checkpoint, or give the run folder (it falls "
        f"back to the previous good one)"
    )


def test_evaluate_and_export_fall_back_to_the_previous_good_checkpoint_and_say_so(run, cli, synth_root):
    damage(run / "checkpoints" / "best.pt")
    r = cli("evaluate", run, "--data-dir", synth_root, "--device", "cpu")
    assert r.code == 0, r
    assert (
        f"warning: {run}/checkpoints/best.pt: damaged" in r.err
        and "using last-epoch0003-step000000.pt instead" in r.err
    )
    assert r.out.strip().endswith("last-epoch0003-step000000.pt")
    r = cli("export", run, "--format", "state_dict")
    assert r.code == 0 and "using last-epoch0003-step000000.pt instead" in r.err, r
    assert r.out.startswith(f"exported {run}/checkpoints/last-epoch0003-step000000.pt as state_dict")
    for p in (run / "checkpoints").glob("last-*.pt"):  # best.pt is damaged already
        damage(p)
    line = one_line(cli("evaluate", run, "--data-dir", synth_root, "--device", "cpu"))
    assert line == (
        f"error: {run}/checkpoints: no checkpoint of the run loads (best.pt, last-epoch0003-step000000.pt, "
        f"last-epoch0002-step000000.pt: damaged or unreadable); restore them from a copy, or train the "
        f"run again"
    ), line


def test_resume_falls_back_past_a_damaged_newest_checkpoint(run, cli, synth_root, tmp_path):
    from mnist_hpc.config import read_yaml

    damage(run / "checkpoints" / "last-epoch0003-step000000.pt")
    (run / "summary.json").unlink()  # as if the run had stopped after its second checkpoint
    config = tmp_path / "c.yaml"
    config.write_text((run / "config.yaml").read_text())
    assert read_yaml(config)["train"]["epochs"] == 2
    r = cli("train", config, "--data-dir", synth_root, "--run-dir", run, "--resume", "auto")
    assert r.code == 0, r
    assert (
        "warning: " + str(run / "checkpoints" / "last-epoch0003-step000000.pt") + ": damaged"
    ) in r.out + r.err
    assert "trying the previous checkpoint" in r.out + r.err
    assert (
        ckpt.load(run / "checkpoints" / "last-epoch0003-step000000.pt")["epoch"] == 2
    )  # written anew, whole


def test_a_rewritten_best_never_keeps_the_record_of_the_file_it_replaced(tmp_path, monkeypatch):
    cdir = tmp_path / "checkpoints"
    ckpt.save({"epoch": 1, "step": 0}, cdir, keep=2, best=True)
    old_record = (cdir / "best.pt.sha256").read_text()

    real = ckpt.record_digest

    def killed(path):
        if path.name == "best.pt":
            raise KeyboardInterrupt  # the process ends after the new best.pt, before its record
        return real(path)

    monkeypatch.setattr(ckpt, "record_digest", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save({"epoch": 2, "step": 0}, cdir, keep=2, best=True)
    monkeypatch.undo()
    assert not (cdir / "best.pt.sha256").exists() and old_record
    assert ckpt.load(cdir / "best.pt")["epoch"] == 2  # loads: no stale record calls it damaged
