"""A node that dies under a running job (issue 27, "Node failure"): on the local Slurm sandbox,
`scontrol update nodename=... state=down` while a `submit`ted job (--requeue) trains. Slurm
kills the job and requeues it (a node failure); once the node is back, the job starts again,
resumes from the run's last checkpoint in the same run folder, and finishes COMPLETED with the
test accuracy and loss of an uninterrupted run.

The test downs the sandbox's only node, so it runs only in a private sandbox this session
started: set MNIST_HPC_SLURM_TEST_DIR and MNIST_HPC_SLURM_DIR to one folder of your own (e.g.
/tmp/slurm-$USER), so that no one else's sandbox is touched. The node is brought back in all
cases."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.paths import ROOT
from tests.slurm_support import PRIVATE_DIR, SANDBOX_DIR, job_state, mnist_hpc, wait_until_done

pytestmark = pytest.mark.slurm

# two epochs of the quickstart net on 20,000 images (~30 s on two cores), a checkpoint every
# 10 steps, deterministic on the CPU: a resumed run must end exactly where an uninterrupted one does
SETS = [
    "data.subset=20000",
    "train.epochs=2",
    "runtime.deterministic=true",
    "runtime.threads=2",
    "data.val_split=null",
    "train.checkpoint.every=10",
    "train.checkpoint.unit=steps",
]


def scontrol(*args) -> str:
    proc = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"scontrol {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


def job_field(job: str, name: str) -> str:
    found = re.search(
        rf"\b{name}=(\S*)",
        subprocess.run(["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True).stdout,
    )
    return found.group(1) if found else ""


def wait(what, predicate, timeout: float, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_job_on_a_failed_node_is_requeued_and_resumes_to_the_same_result(
    slurm_sandbox, slurm_data, tmp_path
):
    private = os.environ.get("MNIST_HPC_SLURM_TEST_DIR")
    if not private or Path(slurm_sandbox) != Path(PRIVATE_DIR) or Path(SANDBOX_DIR) != Path(PRIVATE_DIR):
        pytest.skip(
            "downs the sandbox's node: only in a private sandbox (set MNIST_HPC_SLURM_TEST_DIR "
            "and MNIST_HPC_SLURM_DIR to the same folder of your own)"
        )
    assert os.environ["SLURM_CONF"].startswith(str(slurm_sandbox))
    (node,) = re.findall(r"NodeName=(\S+)", scontrol("show", "node", "--oneliner"))

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
        "0:20:00",
        "--dry-run",
        *overrides,
        cwd=ROOT,
        env={"MNIST_HPC_DATA_DIR": str(slurm_data)},
    )
    script = dry.stdout[dry.stdout.index("#!/bin/bash") :]
    assert "--requeue" in script
    config_path = re.search(r"^CONFIG=(\S+)", script, re.M).group(1).strip("'")
    run_dir = Path(re.search(r"^RUN_DIR=(\S+)", script, re.M).group(1).strip("'"))
    shown = mnist_hpc("config", "show", "configs/quickstart.yaml", *overrides, cwd=ROOT)
    os.makedirs(os.path.dirname(config_path), exist_ok=True)
    Path(config_path).write_text(shown.stdout)
    job_file = tmp_path / "job.sh"
    job_file.write_text(script)
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

    downed = False
    try:
        # the node dies once the run has saved a checkpoint, mid-training
        wait("the job's first checkpoint", lambda: list((run_dir / "checkpoints").glob("last-*.pt")), 600)
        assert not (run_dir / "summary.json").exists(), "the run finished before the node could fail"
        scontrol("update", f"nodename={node}", "state=down", "reason=mnist-hpc node-failure test")
        downed = True
        wait("Slurm to requeue the job", lambda: job_field(job, "Restarts") not in ("", "0"), 300)
        # requeued (NODE_FAIL); the sandbox's ReturnToService=2 may already have the node back
        assert job_field(job, "JobState") in ("PENDING", "REQUEUED", "CONFIGURING", "RUNNING")
        kept = sorted(p.name for p in (run_dir / "checkpoints").glob("last-*.pt"))
        assert kept and not (run_dir / "summary.json").exists()

        # while the node is down: the same training, uninterrupted, outside Slurm
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
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={k: v for k, v in env.items() if not k.startswith("SLURM_")},
            timeout=900,
        )
        assert ref.returncode == 0, ref.stdout[-2000:] + ref.stderr[-2000:]
    finally:
        if downed:  # always bring the node back (unless it has come back on its own)
            state = re.search(r"\bState=(\S+)", scontrol("show", "node", node, "--oneliner")).group(1)
            if "DOWN" in state or "DRAIN" in state:
                scontrol("update", f"nodename={node}", "state=resume")

    state = wait_until_done(job, timeout=1200)
    log = (tmp_path / f"slurm-{job}.out").read_text(errors="replace")
    assert state == "COMPLETED", f"{state}\n{log[-3000:]}"
    assert [p for p in out.iterdir() if p.is_dir()] == [run_dir]  # one run folder across both starts
    summary = json.loads((run_dir / "summary.json").read_text())
    reference = json.loads((ref_dir / "summary.json").read_text())
    assert len(summary["requeues"]) == 1, summary["requeues"]
    resumed = summary["requeues"][0]
    assert resumed["slurm_restart_count"] >= 1 and (resumed["epoch"], resumed["step"]) > (0, 0)
    assert summary["test_accuracy"] == reference["test_accuracy"]
    assert summary["test_loss"] == reference["test_loss"]
    assert job_state(job) in ("COMPLETED", "")
