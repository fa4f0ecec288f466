"""Packed array tasks (`sweep submit --pack K`, cluster.packed) without Slurm: task T walks runs
T*K .. T*K+K-1 one after another, skips completed ones, stops with 75 when its trainer requeued, and
the per-user job limit counts tasks. A stand-in trainer writes the run's files."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from mnist_hpc.cluster import jobs, packed
from mnist_hpc.errors import UserError
from mnist_hpc.experiments import sweep as sweep_mod

STAND_IN = '''
"""Stands in for `mnist-hpc train ... --run-dir DIR`: completes, or (REQUEUE_RUN) records a requeue."""
import json, os, sys
from pathlib import Path

run_dir = Path(sys.argv[sys.argv.index("--run-dir") + 1])
run_dir.mkdir(parents=True, exist_ok=True)
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps({"run": run_dir.name, "resume": "--resume" in sys.argv}) + "\\n")
if run_dir.name == os.environ.get("REQUEUE_RUN") and not (run_dir / "checkpoints").exists():
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_text("x")
    (run_dir / "state.json").write_text(json.dumps({"state": "interrupted", "requeued": True, "epoch": 2,
                                                    "step": 5}))
    sys.exit(75)
(run_dir / "summary.json").write_text(json.dumps({"status": "completed", "test_accuracy": 0.9}))
'''


@pytest.fixture
def sweep_file(tmp_path, monkeypatch):
    (tmp_path / "base.yaml").write_text(f"experiment: {{name: p, output_dir: {tmp_path / 'runs'}}}\n")
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    monkeypatch.setattr(sweep_mod, "TRAIN_COMMAND", [sys.executable, str(script)])
    monkeypatch.setenv("CALLS", str(tmp_path / "calls.jsonl"))
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "sweep" / "sweep.yaml"  # as the snapshot in a sweep folder
    path.parent.mkdir()
    path.write_text("base: ../base.yaml\n" + textwrap.dedent("grid: {optim.lr: [0.1, 0.2, 0.3, 0.4, 0.5]}\n"))
    return path


def calls(tmp_path):
    return [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]


def test_task_indices_cover_every_run_once():
    assert [list(packed.task_indices(5, t, 2)) for t in range(3)] == [[0, 1], [2, 3], [4]]
    assert packed.task_count(5, 2) == 3 and packed.task_count(6, 3) == 2


def test_a_task_runs_its_runs_in_turn_and_skips_completed_ones(sweep_file, tmp_path):
    lines = []
    assert packed.run_task(sweep_file, 1, 2, echo=lines.append) == 0
    assert [c["run"] for c in calls(tmp_path)] == ["lr=0.3", "lr=0.4"]
    record = json.loads((sweep_file.parent / "tasks" / "task-1.json").read_text())
    assert record["runs"] == [2, 3] and record["states"] == {"2": "completed", "3": "completed"}
    assert packed.run_task(sweep_file, 1, 2, echo=lines.append) == 0  # a second start trains nothing
    assert len(calls(tmp_path)) == 2 and "completed in an earlier start, skipped" in "\n".join(lines)
    assert packed.sweep_states(sweep_file.parent) == {
        0: "pending",
        1: "pending",
        2: "completed",
        3: "completed",
        4: "pending",
    }


def test_a_requeued_run_ends_the_start_and_the_next_start_resumes_it(sweep_file, tmp_path, monkeypatch):
    monkeypatch.setenv("REQUEUE_RUN", "lr=0.1")
    lines = []
    assert packed.run_task(sweep_file, 0, 2, echo=lines.append) == packed.REQUEUED_EXIT
    assert [c["run"] for c in calls(tmp_path)] == ["lr=0.1"]  # the second run waits for the next start
    assert packed.sweep_states(sweep_file.parent)[0] == "requeued"
    assert packed.run_task(sweep_file, 0, 2, echo=lines.append) == 0
    assert calls(tmp_path)[1:] == [{"run": "lr=0.1", "resume": True}, {"run": "lr=0.2", "resume": False}]


def test_an_index_past_the_sweep_is_refused(sweep_file):
    with pytest.raises(UserError, match="3 tasks"):
        packed.run_task(sweep_file, 3, 2)


def test_the_job_limit_counts_tasks_not_runs(tmp_path, monkeypatch):
    from dataclasses import replace

    from mnist_hpc.cluster.profiles import get_profile

    small = replace(get_profile("local")[0], max_jobs=3)
    arrays, _, _ = jobs.plan_arrays(packed.task_count(6, 2), 4, small)
    assert arrays == [(0, 3)]
    with pytest.raises(UserError, match="sweep of 4 array tasks"):
        jobs.plan_arrays(4, 4, small, what="array tasks")


def test_the_report_job_names_the_runs_that_did_not_complete(sweep_file, tmp_path, monkeypatch):
    monkeypatch.setenv("REQUEUE_RUN", "lr=0.2")
    assert packed.run_task(sweep_file, 0, 2, echo=lambda line: None) == packed.REQUEUED_EXIT
    path, missing = packed.write_report(sweep_file)
    text = path.read_text()
    assert path == sweep_file.parent / "report.md"
    assert text.startswith("# Sweep sweep: 1 of 5 runs completed")
    assert missing == [
        "[1] lr=0.2 (requeued)",
        "[2] lr=0.3 (pending)",
        "[3] lr=0.4 (pending)",
        "[4] lr=0.5 (pending)",
    ]
    assert "## Runs that did not complete" in text and "- [1] lr=0.2 (requeued): log" in text


def test_status_shows_where_a_running_packed_task_is(sweep_file, tmp_path, monkeypatch):
    from mnist_hpc.cluster import queue

    folder = sweep_file.parent
    (folder / "tasks").mkdir()
    (folder / "tasks" / "task-3.json").write_text(
        json.dumps(
            {
                "task": 3,
                "runs": [6, 7, 8],
                "current": 7,
                "states": {"6": "completed", "7": "running", "8": "pending"},
            }
        )
    )
    records = {
        "41": {
            "folder": str(folder),
            "pack": 3,
            "jobs": [{"job_id": "40", "index_offset": 0}, {"job_id": "41", "index_offset": 2}],
        }
    }
    assert queue._packed_task("41_1", records) == "run 7 of 6-8, 1 completed"  # task 1 of the 2nd array
    assert queue._packed_task("41", records) == "" and queue._packed_task("9_0", records) == ""
