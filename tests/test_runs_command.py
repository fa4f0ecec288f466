"""`mnist-hpc runs [DIR...]` and ``mnist_hpc.list_runs``: one line per run folder found at any
depth, with its state from state.json (completed, running while its trainer holds the lock,
failed with its error, interrupted, requeued), oldest first; a damaged record is named on
stderr and left out; the table fits the terminal. Run folders are made by the load benchmark's
generator (the real layout, nothing trained)."""

from __future__ import annotations

import os
import random
import socket

import pytest

import mnist_hpc
from benchmarks.sweep_load import write_run_folder
from mnist_hpc.config import load_config
from mnist_hpc.experiments import overview
from mnist_hpc.runs.state import RunState, TrainingLock, new_identity, write_identity, write_state


@pytest.fixture
def runs_dir(tiny_config, tmp_path):
    """runs/ with a completed run, a failed, a requeued, a killed and a live one, a damaged record
    and a sweep run two folders down."""
    rng = random.Random(1)
    top = tmp_path / "runs"
    cfg = load_config(tiny_config)
    write_run_folder(top / "a-done", cfg, rng)
    fashion = load_config(tiny_config, ["data.dataset=fashion-mnist", "model.name=cnn"])
    write_run_folder(top / "sweeps" / "lr" / "lr=0.1_seed=0", fashion, rng, epochs=2)

    def unfinished(name, state):
        d = top / name
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(cfg.to_yaml())
        write_identity(d, new_identity(name))
        write_state(d, state)
        return d

    unfinished("b-failed", RunState("failed", error="CUDA out of memory: lower data.batch_size"))
    unfinished(
        "c-requeued",
        RunState(
            "interrupted", signal="SIGUSR1", epoch=2, step=14, checkpoint="x/last-e0002.pt", requeued=True
        ),
    )
    unfinished("d-killed", RunState("running", pid=2**22 + 7, host=socket.gethostname()))
    live = unfinished("e-live", RunState("running", pid=os.getpid(), host=socket.gethostname()))
    bad = top / "f-bad"
    write_run_folder(bad, cfg, rng)
    (bad / "summary.json").write_text('{"status": "completed", "test_accuracy": ')
    lock = TrainingLock(live)
    assert lock.acquire()
    yield top
    lock.release()


def by_name(lines):
    return {r.name: r for r in lines}


def test_every_run_folder_with_its_state(runs_dir):
    lines, damaged = overview.list_runs([runs_dir])
    got = by_name(lines)
    assert set(got) == {"a-done", "sweeps/lr/lr=0.1_seed=0", "b-failed", "c-requeued", "d-killed", "e-live"}
    assert got["a-done"].state == "completed" and got["a-done"].epochs == 3
    assert 0.9 <= got["a-done"].test_accuracy <= 0.99 and got["a-done"].train_seconds == 3.6
    assert (got["sweeps/lr/lr=0.1_seed=0"].dataset, got["sweeps/lr/lr=0.1_seed=0"].model) == (
        "fashion-mnist",
        "cnn",
    )
    assert got["b-failed"].state == "failed"
    assert got["b-failed"].detail == "CUDA out of memory: lower data.batch_size"
    assert (got["b-failed"].dataset, got["b-failed"].model) == ("mnist", "mlp")  # from config.yaml
    assert got["c-requeued"].state == "requeued" and got["c-requeued"].epochs == 1
    assert got["d-killed"].state == "interrupted" and "ended without recording why" in got["d-killed"].detail
    assert got["e-live"].state == "running" and got["e-live"].finished_at is None
    assert len(damaged) == 1 and damaged[0].startswith(
        f"{runs_dir / 'f-bad' / 'summary.json'}: not valid JSON"
    )
    starts = [r.started_at for r in lines]
    assert starts == sorted(starts)


def test_the_command_names_the_damaged_record_and_fits_the_terminal(runs_dir, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    r = cli("runs", runs_dir)
    assert r.code == 0, r
    assert "Traceback" not in r.err
    assert r.err.count("\n") == 1 and "f-bad/summary.json: not valid JSON" in r.err
    rows = {
        line.split()[0]: line.split() for line in r.out.splitlines()[2:] if line and not line[0].isspace()
    }
    assert rows["a-done"][1:4] == ["completed", "mnist", "mlp"]
    assert rows["b-failed"][1] == "failed" and rows["e-live"][1] == "running"
    assert "   CUDA out of memory: lower data.batch_size" in r.out
    assert r.out.splitlines()[-1] == "6 runs: 2 completed, 1 running, 1 failed, 1 interrupted, 1 requeued"
    for columns in (100, 60, 40):
        monkeypatch.setenv("COLUMNS", str(columns))
        r = cli("runs", runs_dir)
        assert r.code == 0 and max(map(len, r.out.splitlines())) <= columns, (columns, r.out)
        assert "completed" in r.out and "f-bad" not in r.out


def test_the_default_folder_and_a_missing_one(runs_dir, cli, monkeypatch, tmp_path):
    monkeypatch.chdir(runs_dir.parent)
    r = cli("runs")
    assert r.code == 0 and "a-done" in r.out, r
    r = cli("runs", tmp_path / "nowhere")
    assert r.code != 0 and r.err.count("\n") == 1 and r.err.startswith("error:") and "nowhere" in r.err
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("runs", empty)
    assert r.code == 0 and "no run folders under" in r.err


def test_list_runs_from_python(runs_dir):
    runs = mnist_hpc.list_runs(runs_dir)
    assert all(isinstance(r, mnist_hpc.Run) for r in runs)
    assert {r.path.name for r in runs} == {
        "a-done",
        "lr=0.1_seed=0",
        "b-failed",
        "c-requeued",
        "d-killed",
        "e-live",
    }
    states = {r.path.name: r.state.state for r in runs}
    assert states["e-live"] == "running" and states["b-failed"] == "failed"
