"""Two `sweep run` on one sweep folder at once (issue 27, defect 12): each run is trained by
one runner only; the other leaves it alone, says who has it, and never calls it FAILED."""

from __future__ import annotations

import threading
import time

from click.testing import CliRunner

from mnist_hpc.cli.experiments import sweep_group
from mnist_hpc.experiments import runguard
from mnist_hpc.experiments.sweep import run_sweep
from mnist_hpc.experiments.sweepfile import load_sweep
from tests.sweep_fakes import write_sweep


def test_a_second_runner_leaves_the_runs_the_first_is_training(tmp_path, fake_train, monkeypatch):
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.01, 0.02]}\n")
    go = tmp_path / "go"
    monkeypatch.setenv("FAKE_TRAIN_WAIT", str(go))
    first_said, first = [], {}
    runner = threading.Thread(
        target=lambda: first.update(results=run_sweep(load_sweep(path), parallel=2, echo=first_said.append))
    )
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while len(fake_train()) < 2 and time.monotonic() < deadline:  # both runs started
            time.sleep(0.05)
        assert len(fake_train()) == 2
        second = CliRunner().invoke(sweep_group, ["run", str(path)])
    finally:
        go.touch()
        runner.join(30)
    assert second.exit_code == 0, second.output
    assert "FAILED" not in second.output and "failed" not in second.output
    assert second.output.count("being trained by process ") == 2, second.output
    assert "left to another runner of this sweep" in second.output
    assert len(fake_train()) == 2  # the second runner started no trainer
    assert [r.status for r in first["results"]] == ["completed", "completed"]
    third = CliRunner().invoke(sweep_group, ["run", str(path)])
    assert third.exit_code == 0 and "2 of 2 runs already completed" in third.output
    assert len(fake_train()) == 2


def test_the_lock_names_its_holder_and_is_free_again_after(tmp_path):
    with runguard.SweepClaim(tmp_path / "run") as a:
        assert a.acquired
        with runguard.SweepClaim(tmp_path / "run") as b:
            assert not b.acquired and b.holder.startswith("process ") and " on " in b.holder
    with runguard.SweepClaim(tmp_path / "run") as c:
        assert c.acquired
