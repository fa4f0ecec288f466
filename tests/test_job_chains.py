"""Job chains without Slurm: `submit --after JOBID[:afterany]` renders --dependency (afterok by
default) and refuses an id Slurm does not know in one line; `sweep submit --then report` adds a
small CPU job after the array, shown in --dry-run. Fake scontrol on PATH."""

from __future__ import annotations

import os

import pytest

from mnist_hpc.cli import cluster as commands
from mnist_hpc.cluster import jobs
from mnist_hpc.errors import UserError

SWEEP = "base: quickstart\nset: {train.epochs: 1}\ngrid: {optim.lr: [0.1, 0.2, 0.3]}\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    from mnist_hpc.cli.main import cli

    commands.register(cli)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.write_text(
        '#!/bin/sh\ncase "$*" in *" 77") echo "JobId=77 JobState=RUNNING";; '
        '*) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1;; esac\n'
    )
    scontrol.chmod(0o755)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    return tmp_path


def test_dependency_values(project):
    assert jobs.dependency(None) == ""
    assert jobs.dependency("77") == "afterok:77"
    assert jobs.dependency("77:afterany") == "afterany:77"
    with pytest.raises(UserError, match="job 78 does not exist"):
        jobs.dependency("78")
    with pytest.raises(UserError, match="expected JOBID, JOBID:afterok or JOBID:afterany"):
        jobs.dependency("77:after")


def test_submit_after_in_the_dry_run_and_refused_for_an_unknown_job(cli, project):
    r = cli("submit", "quickstart", "--cluster", "local", "--after", "77:afterany", "--dry-run")
    assert r.code == 0 and "#SBATCH --dependency=afterany:77\n" in r.out, r
    r = cli("submit", "quickstart", "--cluster", "local", "--after", "12345", "--dry-run")
    assert r.code != 0 and "job 12345 does not exist" in r.err and len(r.err.strip().splitlines()) == 1, r


def test_sweep_then_report_in_the_dry_run(cli, project):
    r = cli("sweep", "submit", "sweep.yaml", "--cluster", "local", "--then", "report", "--dry-run")
    assert r.code == 0, r
    report = r.out[r.out.rindex("#!/bin/bash") :]
    assert "#SBATCH --dependency=afterany:ARRAY_JOB_ID" in report and "--gpus" not in report
    assert 'args=(sweep report-job "$SWEEP")' in report and "--array" not in report
    r = cli(
        "sweep",
        "submit",
        "sweep.yaml",
        "--cluster",
        "trillium",
        "--account",
        "def-x",
        "--then",
        "report",
        "--dry-run",
    )
    assert r.code != 0 and "whole 192-core nodes" in r.err, r
