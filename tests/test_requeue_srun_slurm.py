"""Hitting the time limit with a 2-task srun job, for real: under the local Slurm sandbox the
multi-GPU (srun) template rendered for 2 tasks on the CPU (DDP over gloo), with --time=2 and
--signal=B:USR1@60 and training that needs more than a minute, checkpoints on the signal with
both ranks, requeues itself, resumes in the same run folder and ends COMPLETED.

B: signals the batch shell only; the template execs srun, which passes the signal to every task;
the ranks agree at their next common step (trainer.py), so one rank's head start hangs nothing."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.paths import ROOT
from tests.slurm_support import job_state, mnist_hpc, paced_sets, wait_until_done

pytestmark = pytest.mark.slurm

# 3 epochs of 40 steps (10,240 images, a global batch of 256) of the tests' paced net, each step at
# least 0.8 s on both ranks: 96 s of training or more on any CPU, more than the 60 s a job gets
# before its signal (2 minutes, the signal 60 s before the end), so at least one requeue (the
# quickstart net on 20,000 images ended in 33 s on a fast host, 2026-12-05, without one);
# max_requeues raised so that a loaded machine (fewer steps per allocation) still finishes
SETS = [
    *paced_sets(0.8),
    "train.epochs=3",
    "data.subset=10240",
    "runtime.deterministic=true",
    "runtime.threads=1",
    "data.val_split=null",
    "train.checkpoint.every=0",
    "runtime.max_requeues=30",
    "runtime.dist_timeout=120",
]


def test_two_task_srun_job_is_requeued_and_completes_in_one_run_folder(slurm_sandbox, slurm_data, tmp_path):
    out = tmp_path / "runs"
    overrides = [a for s in [*SETS, f"experiment.output_dir={out}"] for a in ("--set", s)]
    dry = mnist_hpc(
        "submit",
        "configs/quickstart.yaml",
        "--cluster",
        "local",
        "--gpus",
        "0",
        "--tasks",
        "2",
        "--cpus",
        "1",
        "--time",
        "0:02:00",
        "--dry-run",
        *overrides,
        cwd=ROOT,
        env={"MNIST_HPC_DATA_DIR": str(slurm_data)},
    )
    script = dry.stdout[dry.stdout.index("#!/bin/bash") :]
    assert "--ntasks-per-node=2" in script and "exec srun" in script, script
    script = re.sub(r"--signal=(B:)?USR1@\d+", "--signal=B:USR1@60", script)
    assert "--signal=B:USR1@60" in script and "--time=0:02:00" in script and "--requeue" in script
    # --dry-run creates nothing: write the resolved config where the script expects it
    config_path = re.search(r"^CONFIG=(\S+)", script, re.M).group(1).strip("'")
    run_dir = re.search(r"^RUN_DIR=(\S+)", script, re.M).group(1).strip("'")
    shown = mnist_hpc("config", "show", "configs/quickstart.yaml", *overrides, cwd=ROOT)
    os.makedirs(os.path.dirname(config_path), exist_ok=True)
    with open(config_path, "w") as f:
        f.write(shown.stdout)
    job_file = tmp_path / "job.sh"
    job_file.write_text(script)

    # this interpreter, not a virtualenv from a cluster wheelhouse (there is none here)
    env = {**os.environ, "MNIST_HPC_DATA_DIR": str(slurm_data), "MNIST_HPC_PYTHON": sys.executable}
    sub = subprocess.run(
        ["sbatch", "--parsable", f"--output={tmp_path}/slurm-%j.out", str(job_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    job = sub.stdout.strip().split(";")[0]

    state = wait_until_done(job, timeout=1800)
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert state == "COMPLETED", f"{state}\n{log[-3000:]}"
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert [str(p) for p in folders] == [run_dir], folders  # one run folder, across every restart
    summary = json.loads((folders[0] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["launcher"] == "slurm", summary
    assert summary["epochs_run"] == 3 and summary["status"] == "completed"
    assert len(summary["requeues"]) >= 1, log[-3000:]
    assert all(r["signal"] == "SIGUSR1" for r in summary["requeues"]), summary["requeues"]
    assert "requeued Slurm job" in log
    assert "Traceback" not in log, log[-3000:]
    assert job_state(job) in ("COMPLETED", "")
