"""Hitting the time limit for real: under the local Slurm sandbox a job with --time=2 and
--signal=B:USR1@60 whose training needs more than a minute checkpoints on the signal, requeues
itself, resumes in the same run folder, and ends COMPLETED with the result of an uninterrupted run."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.paths import ROOT
from tests.slurm_support import job_state, mnist_hpc, paced_sets, wait_until_done

pytestmark = pytest.mark.slurm

# 3 epochs of 40 steps (10,240 images, batch 256) of the tests' paced net, each step at least 0.8 s:
# 96 s of training or more on any CPU (tests/nets/paced.py; the quickstart net itself ended a
# 3-epoch job on 10,000 images after 61 s on a fast host, 2026-12-05, and so missed its signal).
# 2 minutes with the signal 60 s before the end: it comes 60 s or more after the start (that 61 s
# job ended without one), still well before the paced training can end; a resumed start spends 5-15 s starting
# Python and torch, then trains for 45 s or more before its own signal. Deterministic;
# max_requeues raised so that a loaded machine still finishes: the test is about resuming
# correctly, not about the default limit of 5
SETS = [
    *paced_sets(0.8),
    "train.epochs=3",
    "data.subset=10240",
    "runtime.deterministic=true",
    "runtime.threads=2",
    "data.val_split=null",
    "train.checkpoint.every=0",
    "runtime.max_requeues=30",
]


def test_time_limit_requeue_resumes_to_the_uninterrupted_result(slurm_sandbox, slurm_data, tmp_path):
    out = tmp_path / "runs"
    overrides = [a for s in [*SETS, f"experiment.output_dir={out}"] for a in ("--set", s)]
    dry = mnist_hpc(
        "submit",
        "configs/quickstart.yaml",
        "--cluster",
        "local",
        "--cpus",
        "2",
        "--time",
        "0:02:00",
        "--dry-run",
        *overrides,
        cwd=ROOT,
        env={"MNIST_HPC_DATA_DIR": str(slurm_data)},
    )
    script = dry.stdout[dry.stdout.index("#!/bin/bash") :]
    script = re.sub(r"--signal=B:USR1@\d+", "--signal=B:USR1@60", script)
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

    # meanwhile, the same training uninterrupted (and unpaced: the pace changes no number)
    ref_dir = tmp_path / "reference"
    ref = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_hpc",
            "train",
            "configs/quickstart.yaml",
            "--run-dir",
            str(ref_dir),
            *overrides,
            "--set",
            "model.args.step_seconds=0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if not k.startswith("SLURM_")},
        timeout=900,
    )
    assert ref.returncode == 0, ref.stdout[-2000:] + ref.stderr[-2000:]

    state = wait_until_done(job, timeout=1800)
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert state == "COMPLETED", f"{state}\n{log[-3000:]}"
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert [str(p) for p in folders] == [run_dir], folders  # one run folder, across every restart
    summary = json.loads((folders[0] / "summary.json").read_text())
    reference = json.loads((ref_dir / "summary.json").read_text())
    assert len(summary["requeues"]) >= 1, log[-3000:]
    assert all(r["signal"] == "SIGUSR1" for r in summary["requeues"])
    assert "requeued Slurm job" in log
    assert summary["test_accuracy"] == reference["test_accuracy"]
    assert summary["test_loss"] == reference["test_loss"]
    assert job_state(job) in ("COMPLETED", "")
