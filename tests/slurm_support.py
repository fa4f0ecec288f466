"""The local Slurm sandbox for tests: a session fixture and helpers to watch jobs.

``slurm_sandbox`` starts ``scripts/local_slurm.sh`` (or reuses a running one) and skips with
the reason when it cannot: not root, no apt-get and no Slurm, ``MNIST_HPC_SLURM=0``, or the
daemons would not start. A sandbox it started is stopped at the end of the session.
Import the fixtures into a test module with ``from tests.slurm_support import *``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
SANDBOX_DIR = os.environ.get("MNIST_HPC_SLURM_DIR", "/tmp/mnist-hpc-slurm")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}
SHARED_DATA = ROOT.parent / "shared" / "datasets"

__all__ = ["slurm_sandbox", "slurm_data", "job_state", "wait_for_state", "wait_until_done", "mnist_hpc"]


def _cannot_start() -> str | None:
    if os.environ.get("MNIST_HPC_SLURM") == "0":
        return "MNIST_HPC_SLURM=0"
    if sys.platform != "linux":
        return "the Slurm sandbox runs on Linux only"
    if os.geteuid() != 0:
        return "the Slurm sandbox needs root (it installs slurm-wlm and runs its daemons)"
    if not shutil.which("sbatch") and not shutil.which("apt-get"):
        return "neither Slurm nor apt-get (to install it) is available"
    return None


@pytest.fixture(scope="session")
def slurm_sandbox():
    """A running one-node Slurm (2 pretend GPUs, a per-job $SLURM_TMPDIR); yields its folder."""
    reason = _cannot_start()
    if reason:
        pytest.skip(f"no Slurm sandbox: {reason}")
    running = subprocess.run(["bash", str(SCRIPT), "status", SANDBOX_DIR], capture_output=True, text=True)
    started = running.returncode != 0
    if started:
        env = {**os.environ, "LOCAL_SLURM_CPUS": "6", "LOCAL_SLURM_GPUS": "2", "LOCAL_SLURM_SLURM_TMPDIR": "1"}
        proc = subprocess.run(["bash", str(SCRIPT), "start", SANDBOX_DIR], capture_output=True, text=True,
                              env=env, timeout=600)
        if proc.returncode != 0:
            pytest.skip(f"the Slurm sandbox did not start: {(proc.stderr or proc.stdout).strip()[-500:]}")
    yield Path(SANDBOX_DIR)
    if started:
        subprocess.run(["bash", str(SCRIPT), "stop", SANDBOX_DIR], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def slurm_data():
    """A writable data root with real MNIST: $MNIST_HPC_DATA_DIR, else a copy of ../shared/datasets
    (outside pytest's basetemp, which other sessions may prune while jobs still read it)."""
    named = os.environ.get("MNIST_HPC_DATA_DIR")
    if named and (Path(named) / "MNIST" / "raw").is_dir():
        yield Path(named)
        return
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip("real MNIST not found: set MNIST_HPC_DATA_DIR to a writable copy of the datasets")
    root = Path(tempfile.mkdtemp(prefix="mnist-hpc-data-"))
    shutil.copytree(SHARED_DATA / "MNIST", root / "MNIST")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def mnist_hpc(*args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess (as a user would), with the cluster commands registered."""
    code = ("import sys; from mnist_hpc.cli.main import cli, main; from mnist_hpc.cli.cluster import register; "
            "register(cli); sys.argv[0] = 'mnist-hpc'; main()")
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"mnist-hpc {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def job_state(job_id: str) -> str:
    """JobState from ``scontrol show job``, else from the sandbox's record of finished jobs
    (its jobcomp log); '' when neither knows the job."""
    proc = subprocess.run(["scontrol", "show", "job", "--oneliner", str(job_id)], capture_output=True,
                          text=True)
    for field in proc.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    state = ""
    jobcomp = Path(SANDBOX_DIR) / "log" / "jobcomp.log"
    if jobcomp.exists():
        for line in jobcomp.read_text(errors="replace").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields.get("JobId") == str(job_id):
                state = fields.get("JobState", "")
    return state


def wait_for_state(job_id: str, states, timeout: float) -> str:
    """Poll until the job is in one of ``states`` (or any terminal state); return the state."""
    states = set(states)
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = job_state(job_id)
        if state in states or state in TERMINAL:
            return state
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {state or 'unknown'} after {timeout:.0f} s "
                         f"(waiting for {', '.join(sorted(states))})")


def wait_until_done(job_id: str, timeout: float) -> str:
    return wait_for_state(job_id, TERMINAL, timeout)
