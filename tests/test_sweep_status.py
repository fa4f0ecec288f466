"""`mnist-hpc sweep status SWEEP`: each run's state from its folder alone (no scheduler call):
pending, running (its trainer or sweep runner holds the lock), completed with its accuracy,
failed with its error, interrupted, requeued, stale (completed with another config), damaged;
the count of each at the end; for a method: optuna study, its trials' states from the journal.
Run folders come from the load benchmark's generator (the real layout, nothing trained)."""

from __future__ import annotations

import os
import random
import socket

import pytest

from benchmarks.sweep_load import write_run_folder
from mnist_hpc.experiments import overview, runguard
from mnist_hpc.experiments.sweepfile import load_sweep
from mnist_hpc.runs.state import RunState, TrainingLock, write_state
from tests.sweep_fakes import write_sweep


@pytest.fixture
def sweep_file(tmp_path):
    """A sweep of 9 runs, one in each state (and one not started)."""
    path = write_sweep(
        tmp_path, "grid: {optim.lr: [0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002]}\n"
    )
    runs = load_sweep(path).runs
    rng = random.Random(2)
    write_run_folder(runs[0].run_dir, runs[0].config, rng)  # completed
    stale_cfg = load_sweep(path, ["train.epochs=7"]).runs[1].config
    write_run_folder(runs[1].run_dir, stale_cfg, rng)  # completed with train.epochs 7: stale
    for run, state in [
        (runs[2], RunState("failed", error="data.subset: larger than the training split")),
        (runs[3], RunState("interrupted", signal="SIGTERM", epoch=3, step=5)),
        (
            runs[4],
            RunState("interrupted", signal="SIGUSR1", epoch=2, step=0, requeued=True, checkpoint="c/last.pt"),
        ),
        (runs[5], RunState("running", pid=os.getpid(), host=socket.gethostname())),
    ]:
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "config.yaml").write_text(run.config.to_yaml())
        write_state(run.run_dir, state)
    write_run_folder(runs[6].run_dir, runs[6].config, rng)
    (runs[6].run_dir / "summary.json").write_text("[1, 2")  # damaged
    runs[7].run_dir.mkdir(parents=True)  # a sweep runner has claimed it, the trainer not started
    return path


def test_each_run_s_state(sweep_file):
    runs = load_sweep(sweep_file).runs
    trainer = TrainingLock(runs[5].run_dir)
    assert trainer.acquire()
    try:
        with runguard.SweepClaim(runs[7].run_dir) as runner:
            assert runner.acquired
            got = overview.sweep_states(load_sweep(sweep_file, validate=False))
    finally:
        trainer.release()
    states = [s.state for s in got]
    assert states == [
        "completed",
        "stale",
        "failed",
        "interrupted",
        "requeued",
        "running",
        "damaged",
        "running",
        "pending",
    ]
    assert got[0].detail.startswith("test accuracy ") and got[0].detail.endswith("%")
    assert "train.epochs: 7 there, 3 now" in got[1].detail
    assert got[2].detail == "data.subset: larger than the training split"
    assert got[3].detail.startswith("by SIGTERM at epoch 3, step 5")
    assert "requeued" in got[4].detail
    assert got[5].detail == f"pid {os.getpid()} on {socket.gethostname()}"
    assert "not valid JSON" in got[6].detail
    assert got[7].detail.startswith(f"starting (process {os.getpid()} on {socket.gethostname()}")


def test_a_running_state_without_its_lock_reads_as_interrupted(sweep_file):
    got = overview.sweep_states(load_sweep(sweep_file, validate=False))
    assert got[5].state == "interrupted" and "ended without recording why" in got[5].detail
    assert got[7].state == "pending"  # an empty folder nobody holds


def test_the_command_prints_a_line_per_run_and_the_counts(sweep_file, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    r = cli("sweep", "status", sweep_file)
    assert r.code == 0 and "Traceback" not in r.err, r
    assert r.out.startswith("sweep s: 9 runs in")
    lines = [line for line in r.out.splitlines() if line.split()[0].isdigit() and line.split()[1] != "runs:"]
    assert max(map(len, lines)) <= 80
    assert [line.split()[:3] for line in lines][:2] == [
        ["0", "lr=0.1", "completed"],
        ["1", "lr=0.05", "stale"],
    ]
    assert len(lines) == 9 and lines[8].split()[1:] == ["lr=0.0002", "pending"]
    assert " ".join(r.out.split("\n9 runs: ")[1].split()) == (
        "1 completed, 2 pending, 1 failed, 2 interrupted, 1 requeued, 1 stale, 1 damaged"
    )
    r = cli("sweep", "status", sweep_file, "--set", "train.epochs=7")
    lines = [line.split() for line in r.out.splitlines() if line.split()[0] in ("0", "1")]
    assert lines[1][2] == "completed"  # asked with the config it was trained with: no longer stale
    assert lines[0][2] == "stale"


def test_a_missing_sweep_file_is_one_line(tmp_path, cli):
    r = cli("sweep", "status", tmp_path / "nope.yaml")
    assert r.code != 0 and r.err.startswith("error:") and r.err.count("\n") == 1, r


def test_a_study_s_trials_from_its_journal(tmp_path, cli):
    optuna = pytest.importorskip("optuna")
    from mnist_hpc.experiments import search
    from tests.search_support import make_study

    path = make_study(tmp_path, n=6)
    sweep = load_sweep(path)
    r = cli("sweep", "status", path)
    assert r.code == 0 and r.out.splitlines()[-1] == "6 trials: 6 pending", r
    study = search.open_study(sweep, worker_seed=0)
    space = search.Space(sweep.study)
    me = search.Me(socket.gethostname(), os.getpid(), None, 0)
    gone = search.Me(socket.gethostname(), 2**22 + 11, None, 1)
    first = search.claim(study, sweep, space, me)
    study.tell(first.trial_id, 0.93)
    second = search.claim(study, sweep, space, me)
    study.tell(second.trial_id, state=optuna.trial.TrialState.PRUNED)
    search.claim(study, sweep, space, me)  # running, its worker is this process
    search.claim(study, sweep, space, gone)  # running, its worker has gone
    states, n = overview.study_states(load_sweep(path))
    assert n == 6 and [s.state for s in states] == ["completed", "pruned", "running", "interrupted"]
    assert states[0].detail.startswith("val_acc 0.93; optim.lr=")
    r = cli("sweep", "status", path)
    assert r.code == 0, r
    assert r.out.splitlines()[0].startswith("sweep study: an Optuna study of 6 trials")
    assert r.out.splitlines()[-1] == "6 trials: 1 completed, 1 running, 2 pending, 1 interrupted, 1 pruned"
