"""No high-frequency scheduler polling (issue 24; Alliance wiki "Running jobs": do not run sq or
squeue in a loop at high frequency): `logs -f` follows the file and asks squeue at most once per
60 s; `status` is one squeue and one sacct call for all jobs, a sweep's tasks included, and
`status --watch` refreshes once a minute. Counting fakes of squeue, sacct and scontrol on PATH
pin the rate; a virtual clock stands in for the minutes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from mnist_hpc.cli import cluster as commands
from mnist_hpc.cluster import queue
from tests.slurm_support import mnist_hpc, wait_until_done


@pytest.fixture
def project(tmp_path, monkeypatch):
    from mnist_hpc.cli.main import cli

    commands.register(cli)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("USER", "someone")
    monkeypatch.setenv("CALLS", str(tmp_path / "calls.txt"))
    return tmp_path


def fake(project: Path, name: str, body: str) -> None:
    """A Slurm command that writes its name into $CALLS each time it is run, then runs body."""
    path = project / "bin" / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> "$CALLS"\n' + body)
    path.chmod(0o755)


def calls(project: Path, name: str) -> list[str]:
    path = project / "calls.txt"
    return [c for c in path.read_text().splitlines() if c.split()[0] == name] if path.exists() else []


class Clock:
    """time.monotonic and time.sleep for queue: sleeping moves the clock and runs a callback."""

    def __init__(self, on_sleep):
        self.now, self.on_sleep, self.slept = 1000.0, on_sleep, []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds
        self.on_sleep(self)


def test_logs_follow_reads_the_file_and_asks_squeue_once_a_minute(cli, project, monkeypatch):
    log = project / "slurm-13.out"
    log.write_text("start\n")
    # queued for the first 5 questions, then gone (the job ended)
    fake(
        project,
        "squeue",
        'n=$(grep -c "^squeue" "$CALLS")\n'
        'if [ "$n" -le 5 ]; then echo "13|mnist|RUNNING|0:12|0:30:00|1|node1"; fi\n',
    )
    fake(project, "scontrol", f'echo "JobId=13 JobName=mnist JobState=RUNNING StdOut={log}"\n')
    fake(project, "sacct", "exit 1\n")

    def grow(clock):  # the job writes a line every second of its run
        with open(log, "a") as f:
            f.write(f"t={clock.now - 1000:.0f}\n")

    clock = Clock(grow)
    monkeypatch.setattr(queue, "time", SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep))
    r = cli("logs", "13", "-f")
    assert r.code == 0, r
    elapsed = clock.now - 1000
    assert elapsed >= 5 * 60  # the job ran 5 minutes of virtual time
    assert len(calls(project, "squeue")) <= 1 + elapsed / 60, calls(project, "squeue")
    assert len(calls(project, "squeue")) == 6  # asked every 60 s, not every second
    assert max(clock.slept) <= 1.0  # the file itself is read every second
    assert r.out.startswith("start\nt=1\nt=2\n") and r.out.endswith(f"t={elapsed:.0f}\n")
    assert len(calls(project, "scontrol")) <= 1  # where the log is: asked once, at the start


def test_status_is_one_squeue_and_one_sacct_for_a_whole_sweep(cli, project):
    tasks = "\n".join(f"7_{i}|lr|RUNNING|0:{i:02d}|1:00:00|1|node{i}" for i in range(200))
    (project / "squeue.txt").write_text(tasks + "\n")
    fake(project, "squeue", f'cat "{project / "squeue.txt"}"\n')
    fake(project, "sacct", "echo 'sacct: error: Slurm accounting storage is disabled' >&2; exit 1\n")
    fake(project, "scontrol", "exit 1\n")
    folder = project / "runs" / "lr-sweep-1"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"job_id": "7", "template": "sweep_array", "runs": 200}))
    for i in range(12):  # plain sbatch runs that ended: found by folder, never asked one by one
        (project / "runs" / f"q-job{100 + i}").mkdir()
    r = cli("status")
    assert r.code == 0, r
    assert "7_199" in r.out
    assert len(calls(project, "squeue")) == 1 and "--states=all" in calls(project, "squeue")[0]
    assert len(calls(project, "sacct")) == 1 and calls(project, "scontrol") == []


def test_status_watch_refreshes_once_a_minute(cli, project, monkeypatch):
    fake(project, "squeue", 'echo "13|mnist|RUNNING|0:12|0:30:00|1|node1"\n')
    fake(project, "sacct", "exit 1\n")
    fake(project, "scontrol", "exit 1\n")

    def stop_after_three(clock):
        if len(clock.slept) == 3:
            raise KeyboardInterrupt

    clock = Clock(stop_after_three)
    monkeypatch.setattr(queue, "time", SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep))
    r = cli("status", "--watch")
    assert r.code == 0, r
    assert clock.slept == [60.0, 60.0, 60.0]
    assert len(calls(project, "squeue")) == 3 and len(calls(project, "sacct")) == 3
    assert r.out.count("-- someone's jobs (every 60 s; Ctrl-C to stop) --") == 3


def test_help_says_how_often_the_scheduler_is_asked(cli):
    assert "once a minute" in " ".join(cli("logs", "--help").out.split())
    assert "once a minute" in " ".join(cli("status", "--help").out.split())


@pytest.mark.slurm
def test_status_reads_an_ended_job_from_the_one_squeue_call_on_the_sandbox(slurm_sandbox, tmp_path):
    """On the real sandbox (no accounting): a job that ended shows Slurm's state from
    `squeue --states=all`, with no scontrol call per job."""
    sub = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--job-name=tiny",
            f"--output={tmp_path}/slurm-%j.out",
            "--wrap",
            "echo done",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    job = sub.stdout.strip().split(";")[0]
    (tmp_path / "runs" / f"tiny-job{job}").mkdir(parents=True)  # as a plain sbatch training names it
    assert wait_until_done(job, timeout=300) == "COMPLETED"
    out = mnist_hpc("status", cwd=tmp_path).stdout
    line = next(x for x in out.splitlines() if x.startswith(job + " "))
    assert "tiny" in line and "COMPLETED" in line, out
