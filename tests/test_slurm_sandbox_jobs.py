"""Real jobs on the local Slurm sandbox (scripts/local_slurm.sh): `mnist-hpc submit`, the
ready-to-edit slurm/submit_job.sh, status/logs/cancel, and hostile names and paths.

Skipped with a reason where the sandbox cannot start (see tests/slurm_support.py). The
training jobs are submitted together and run side by side; the module takes a few minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.paths import ROOT
from tests.slurm_support import misfits, mnist_hpc, wait_for_state, wait_until_done

pytestmark = pytest.mark.slurm
JOB_TIMEOUT = 900  # seconds; the full quickstart takes 1-2 min alone on 2 idle cores, two run side by side


def make_project(folder: Path) -> Path:
    """A project folder as a user has it: the package, configs and the slurm/ scripts."""
    folder.mkdir(parents=True)
    (folder / "mnist_hpc").symlink_to(ROOT / "mnist_hpc")
    shutil.copytree(ROOT / "configs", folder / "configs")
    shutil.copytree(ROOT / "slurm", folder / "slurm")
    return folder


@pytest.fixture(scope="module")
def workspace():
    """Folders for the jobs, outside pytest's basetemp: pytest prunes old basetemps (also those
    of other sessions on the machine) and would delete them under running jobs."""
    folder = Path(tempfile.mkdtemp(prefix="mnist-hpc-sandbox-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def env(slurm_sandbox, slurm_data):
    # sbatch passes the submitting environment on: the jobs use this python and these data
    import sys

    return {"MNIST_HPC_PYTHON": sys.executable, "MNIST_HPC_DATA_DIR": str(slurm_data)}


@pytest.fixture(scope="module")
def project(workspace, env) -> Path:
    project = make_project(workspace / "mnist")
    mnist_hpc("data", "pack", "mnist", cwd=project, env=env)
    return project


def _job_id(output: str) -> str:
    return output.split("submitted job ", 1)[1].split()[0]


@pytest.fixture(scope="module")
def jobs(project, env, workspace):
    """Submit the three training jobs at once: they run side by side on the sandbox."""
    os.environ.update(env)
    # 1. the tool's own flow, the whole quickstart
    quick = _job_id(mnist_hpc("submit", "configs/quickstart.yaml", "--cluster", "local", cwd=project).stdout)
    # 2. the handout flow: edit account and mail in slurm/submit_job.sh, sbatch it. The sandbox
    #    node is smaller than an Alliance node, so the cores and memory are lowered on the
    #    command line (which beats #SBATCH lines); the script itself is as users edit it.
    script = project / "slurm" / "submit_job.sh"
    text = script.read_text()  # the user's copy may hold their own account and mail already
    text, accounts = re.subn(r"^#SBATCH --account=.*$", "#SBATCH --account=def-tester", text, flags=re.M)
    text, mails = re.subn(r"^#SBATCH --mail-user=.*$", "#SBATCH --mail-user=me@example.org", text, flags=re.M)
    assert accounts == 1 and mails == 1
    script.write_text(text)
    proc = subprocess.run(
        ["sbatch", "--parsable", "--cpus-per-task=2", "--mem=3G", "slurm/submit_job.sh"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    handout = proc.stdout.strip().split(";")[0]
    # 3. a job name and a project path full of spaces, quotes and shell syntax
    hostile = make_project(workspace / "hostile" / 'it\'s a "project" $(touch PWNED) `x`')
    (hostile / "configs" / "hostile.yaml").write_text(
        'extends: quickstart.yaml\nexperiment:\n  name: it\'s a "job" $HOME\n'
        "data:\n  subset: 2000\ntrain:\n  epochs: 1\n"
    )
    bad = _job_id(mnist_hpc("submit", "configs/hostile.yaml", "--cluster", "local", cwd=hostile).stdout)
    # 4. two processes under srun (the multi_gpu template, CPU tasks here) joined by DDP
    ddp = _job_id(
        mnist_hpc(
            "submit",
            "configs/quickstart.yaml",
            "--cluster",
            "local",
            "--tasks",
            "2",
            "--cpus",
            "1",
            "--set",
            "data.subset=2000",
            "--set",
            "train.epochs=1",
            "--set",
            "experiment.name=ddp",
            cwd=project,
        ).stdout
    )
    return {"quickstart": quick, "handout": handout, "hostile": bad, "hostile_dir": hostile, "ddp": ddp}


def _run_folder(project: Path, job_id: str) -> Path:
    for record in project.glob("runs/*/job.json"):
        if json.loads(record.read_text())["job_id"] == job_id:
            return record.parent
    raise AssertionError(f"no run folder with job.json for job {job_id} under {project}/runs")


def test_the_sandbox_fits_the_tests(slurm_sandbox):
    """A sandbox that does not fit (make slurm-start's defaults lack $SLURM_TMPDIR) is not used:
    the fixture starts a private one and points SLURM_CONF at it."""
    assert os.environ["SLURM_CONF"] == str(slurm_sandbox / "etc" / "slurm.conf")
    assert misfits(os.environ["SLURM_CONF"]) == []


def test_status_shows_queued_jobs_with_their_run_folders(project, jobs):
    wait_for_state(jobs["quickstart"], {"RUNNING"}, 120)
    out = mnist_hpc("status", cwd=project).stdout
    line = next(x for x in out.splitlines() if x.startswith(jobs["quickstart"] + " "))
    assert _run_folder(project, jobs["quickstart"]).name in line
    handout = [x for x in out.splitlines() if x.startswith(jobs["handout"] + " ")]
    assert handout and "mnist" in handout[0]


def test_submit_quickstart_on_the_sandbox(project, jobs):
    assert wait_until_done(jobs["quickstart"], JOB_TIMEOUT) == "COMPLETED"
    run = _run_folder(project, jobs["quickstart"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test_accuracy"] >= 0.985, summary
    log = mnist_hpc("logs", jobs["quickstart"], cwd=project).stdout
    assert (run / f"slurm-{jobs['quickstart']}.out").read_text() == log
    assert "test accuracy" in log and "/data" in log  # the archive was unpacked in $SLURM_TMPDIR
    out = mnist_hpc("status", cwd=project).stdout
    line = next(x for x in out.splitlines() if x.startswith(jobs["quickstart"] + " "))
    assert "COMPLETED" in line and "completed, test accuracy" in line, out
    assert "(no accounting on this cluster" in out  # the sandbox keeps no accounting for sacct


def test_handout_script_with_account_and_mail_edited(project, jobs):
    assert wait_until_done(jobs["handout"], JOB_TIMEOUT) == "COMPLETED"
    run = project / "runs" / f"quickstart-job{jobs['handout']}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.985, summary
    log = mnist_hpc("logs", jobs["handout"], cwd=project).stdout
    assert log == (project / f"slurm-{jobs['handout']}.out").read_text() and "test accuracy" in log
    # a plain sbatch job: status finds it by the run folder training named after it
    line = next(
        x for x in mnist_hpc("status", cwd=project).stdout.splitlines() if x.startswith(jobs["handout"] + " ")
    )
    assert "COMPLETED" in line and f"runs/quickstart-job{jobs['handout']}" in line and "test accuracy" in line


def test_hostile_names_and_paths(jobs):
    folder = jobs["hostile_dir"]
    assert wait_until_done(jobs["hostile"], JOB_TIMEOUT) == "COMPLETED"
    run = _run_folder(folder, jobs["hostile"])
    assert run.name.startswith('it\'s a "job" $HOME-')
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert not list(folder.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()
    out = subprocess.run(["scontrol", "show", "job", jobs["hostile"]], capture_output=True, text=True).stdout
    assert 'JobName=it\'s a "job" $HOME' in out


def test_two_task_srun_job_trains_with_ddp(project, jobs):
    assert wait_until_done(jobs["ddp"], JOB_TIMEOUT) == "COMPLETED"
    run = _run_folder(project, jobs["ddp"])
    assert "exec srun" in (run / "job.sh").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2, summary


def test_cancel_a_running_job(project, env):
    out = mnist_hpc(
        "submit",
        "configs/quickstart.yaml",
        "--cluster",
        "local",
        "--set",
        "train.epochs=50",
        "--cpus",
        "1",
        cwd=project,
    ).stdout
    job_id = _job_id(out)
    wait_for_state(job_id, {"RUNNING"}, 120)
    assert f"cancelled job {job_id}" in mnist_hpc("cancel", job_id, cwd=project).stdout
    assert wait_until_done(job_id, 120) == "CANCELLED"
    again = mnist_hpc("cancel", job_id, cwd=project, check=False)
    assert again.returncode == 1 and "not in the queue" in again.stderr
