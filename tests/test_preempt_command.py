"""`mnist-hpc preempt`: the job's own requeue signal (read from its job script) sent the way Slurm
sends it at the time limit; refusals for unknown, pending and whole-array ids. Fake Slurm commands
on PATH record their argv."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mnist_hpc.cli import cluster as commands


@pytest.fixture
def project(tmp_path, monkeypatch):
    from mnist_hpc.cli.main import cli

    commands.register(cli)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def fake(project: Path, name: str, body: str) -> None:
    path = project / "bin" / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def scontrol(project: Path, line: str, script: str = "") -> None:
    (project / "batch_script").write_text(script)
    fake(
        project,
        "scontrol",
        f'case "$1" in show) echo "{line}";; write) cat "{project}/batch_script";; esac\n',
    )


def record_scancel(project: Path) -> Path:
    log = project / "scancel.argv"
    fake(project, "scancel", f'echo "$@" >> "{log}"\n')
    return log


def test_preempt_reads_the_signal_from_the_run_folders_job_script(cli, project):
    run = project / "runs" / "q-1"
    run.mkdir(parents=True)
    (run / "job.sh").write_text("#!/bin/bash\n#SBATCH --time=0:30:00\n#SBATCH --signal=B:USR2@90\n")
    (run / "job.json").write_text(json.dumps({"job_id": "41", "script": str(run / "job.sh")}))
    scontrol(project, "JobId=41 JobName=q JobState=RUNNING")
    log = record_scancel(project)
    r = cli("preempt", "41")
    code, out, err = r.code, r.out, r.err
    assert code == 0, err
    assert log.read_text().split() == ["--signal=USR2", "--batch", "41"]
    assert "sent SIGUSR2 to its batch shell of job 41" in out and "job.sh" in out


def test_preempt_an_array_task_and_a_srun_job_from_slurms_copy_of_the_script(cli, project):
    scontrol(
        project,
        "JobId=57 ArrayJobId=55 ArrayTaskId=2 JobState=RUNNING",
        "#!/bin/bash\n#SBATCH --signal=USR1@60\nsrun python train.py\n",
    )
    log = record_scancel(project)
    r = cli("preempt", "57")
    code, out, err = r.code, r.out, r.err  # the task's own job id is named as the task
    assert code == 0, err
    assert log.read_text().split() == ["--signal=USR1", "55_2"]  # no B: -> the steps, as at the limit
    assert "its job steps" in out and "scontrol write batch_script" in out


@pytest.mark.parametrize(
    "line, script, words",
    [
        ("", "", "does not exist"),
        ("JobId=60 JobState=PENDING", "#SBATCH --signal=B:USR1@90\n", "PENDING, not RUNNING"),
        (
            "JobId=55 ArrayJobId=55 ArrayTaskId=0-3 JobState=RUNNING",
            "#SBATCH --signal=B:USR1@90\n",
            "name one task, e.g. 55_0",
        ),
        ("JobId=61 JobState=RUNNING", "#!/bin/bash\necho no signal\n", "asks for no time-limit signal"),
    ],
)
def test_preempt_refusals_are_one_line_and_send_nothing(cli, project, line, script, words):
    if line:
        scontrol(project, line, script)
    else:
        fake(project, "scontrol", 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1\n')
    log = record_scancel(project)
    r = cli("preempt", line.split()[0].split("=")[1] if line else "99")
    code, _out, err = r.code, r.out, r.err
    assert code != 0 and words in err and len(err.strip().splitlines()) == 1, err
    assert not log.exists()


def test_preempt_dry_run_prints_the_command(cli, project):
    scontrol(project, "JobId=70 JobState=RUNNING", "#SBATCH --signal=B:USR1@90\n")
    log = record_scancel(project)
    r = cli("preempt", "70", "--dry-run")
    code, out, _err = r.code, r.out, r.err
    assert code == 0 and out.strip() == "scancel --signal=USR1 --batch 70" and not log.exists()
