"""The local Slurm sandbox for tests: a session fixture and helpers to watch jobs.

``slurm_sandbox`` reuses a running sandbox of ``scripts/local_slurm.sh`` (the user's, from
``make slurm-start``, in ``$MNIST_HPC_SLURM_DIR`` or /tmp/mnist-hpc-slurm) when its
configuration fits the tests (a default partition, CPUs, memory, an h100 GPU type for the
handout script, a per-job $SLURM_TMPDIR); otherwise it starts a private one in
``$MNIST_HPC_SLURM_TEST_DIR`` (default /tmp/mnist-hpc-slurm-tests) on free ports, leaving
/etc/slurm alone, and points the tests and their subprocesses at it through ``SLURM_CONF``.
It skips with the reason when it cannot: not root, no apt-get and no Slurm,
``MNIST_HPC_SLURM=0``, or the daemons would not start. A sandbox it started is stopped at the
end of the session. Import the fixtures into a test module with
``from tests.slurm_support import *``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.paths import ROOT

SCRIPT = ROOT / "scripts" / "local_slurm.sh"
SANDBOX_DIR = os.environ.get("MNIST_HPC_SLURM_DIR", "/tmp/mnist-hpc-slurm")  # the user's (make slurm-start)
PRIVATE_DIR = os.environ.get("MNIST_HPC_SLURM_TEST_DIR", "/tmp/mnist-hpc-slurm-tests")  # the tests' own
# What the tests ask of a sandbox: jobs side by side, the handout script's typed GPU request,
# and the Alliance's per-job $SLURM_TMPDIR (the data archive is unpacked there).
NEEDS = {"cpus": 4, "mem_mb": 4096, "gpu_type": "h100"}
PRIVATE_KNOBS = {
    "LOCAL_SLURM_CPUS": "6",
    "LOCAL_SLURM_GPUS": "2",
    "LOCAL_SLURM_GPU_TYPE": "h100",
    "LOCAL_SLURM_SLURM_TMPDIR": "1",
    "LOCAL_SLURM_LINK_ETC": "0",
    "LOCAL_SLURM_ALLIANCE": "0",
}
_ACTIVE = {"dir": Path(SANDBOX_DIR)}  # the sandbox the session uses (its jobcomp log)
TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
SHARED_DATA = ROOT.parent / "shared" / "datasets"
PACED_NET = ROOT / "tests" / "nets" / "paced.py"

__all__ = [
    "job_state",
    "misfits",
    "mnist_hpc",
    "paced_sets",
    "paced_yaml",
    "slurm_data",
    "slurm_sandbox",
    "wait_for_state",
    "wait_until_done",
]


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


def _conf(folder) -> str:
    return str(Path(folder) / "etc" / "slurm.conf")


def _running(folder) -> bool:
    return (
        subprocess.run(
            ["bash", str(SCRIPT), "status", str(folder)], capture_output=True, text=True, timeout=120
        ).returncode
        == 0
    )


def _scontrol(conf: str, *args) -> list[dict]:
    """``scontrol show ... --oneliner`` of the Slurm of ``conf``, one dict per line."""
    from mnist_hpc.cluster.slurm import parse_scontrol

    proc = subprocess.run(
        ["scontrol", "show", *args, "--oneliner"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SLURM_CONF": conf},
    )
    return [parse_scontrol(line) for line in proc.stdout.splitlines() if line.strip()]


def misfits(conf: str) -> list[str]:
    """What the running Slurm of ``conf`` lacks for the tests (``NEEDS``); [] when it fits."""
    problems = []
    if not any(p.get("Default") == "YES" and p.get("State") == "UP" for p in _scontrol(conf, "partition")):
        problems.append("no default partition that is up")
    nodes = _scontrol(conf, "node")
    if not nodes:
        return [*problems, "no node answers"]
    node = nodes[0]
    state = node.get("State", "").split("+")[0]
    if state not in ("IDLE", "MIXED", "ALLOCATED", "COMPLETING"):
        problems.append(f"its node is {state or 'in no known state'}")
    cpus, mem = int(node.get("CPUTot", "0") or 0), int(node.get("RealMemory", "0") or 0)
    if cpus < NEEDS["cpus"]:
        problems.append(f"{cpus} CPUs, the tests need {NEEDS['cpus']} (LOCAL_SLURM_CPUS)")
    if mem < NEEDS["mem_mb"]:
        problems.append(f"{mem} MB of memory, the tests need {NEEDS['mem_mb']}")
    if f"gpu:{NEEDS['gpu_type']}:" not in node.get("Gres", ""):
        problems.append(
            f"GPUs {node.get('Gres', '(null)')}: slurm/submit_job.sh asks for "
            f"{NEEDS['gpu_type']} (LOCAL_SLURM_GPUS, LOCAL_SLURM_GPU_TYPE)"
        )
    config = subprocess.run(
        ["scontrol", "show", "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SLURM_CONF": conf},
    ).stdout
    prolog = next(
        (
            line.split("=", 1)[1].strip()
            for line in config.splitlines()
            if line.split("=", 1)[0].strip() == "TaskProlog"
        ),
        "",
    )
    try:
        emulated = (
            "SLURM_TMPDIR" in Path(prolog).read_text(errors="replace") if prolog.startswith("/") else False
        )
    except OSError:
        emulated = False
    if not emulated:
        problems.append("no per-job $SLURM_TMPDIR (LOCAL_SLURM_SLURM_TMPDIR=1)")
    return problems


def _free_ports(first: int = 6917) -> int:
    """A port P with P and P+1 free (slurmctld and slurmd of a private sandbox)."""

    def free(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("", port))
                return True
            except OSError:
                return False

    return next((p for p in range(first, first + 1000, 2) if free(p) and free(p + 1)), first)


def _sandbox() -> tuple[Path, bool]:
    """The sandbox to use and whether this session started it (skips when there is none)."""
    seen = []
    for folder in dict.fromkeys([SANDBOX_DIR, PRIVATE_DIR]):  # the user's, then the tests' own
        if _running(folder):
            problems = misfits(_conf(folder))
            if not problems:
                return Path(folder), False
            seen.append(f"{folder}: {'; '.join(problems)}")
    if _running(PRIVATE_DIR):  # the tests' own, started with other settings: start it again
        subprocess.run(
            ["bash", str(SCRIPT), "stop", PRIVATE_DIR], capture_output=True, text=True, timeout=300
        )
    env = {**os.environ, **PRIVATE_KNOBS, "LOCAL_SLURM_PORT": str(_free_ports())}
    env.pop("SLURM_CONF", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "start", PRIVATE_DIR], capture_output=True, text=True, env=env, timeout=600
    )
    why = f" (a running sandbox does not fit: {' | '.join(seen)})" if seen else ""
    if proc.returncode != 0:
        pytest.skip(
            f"the tests' Slurm sandbox did not start{why}: {(proc.stderr or proc.stdout).strip()[-500:]}"
        )
    problems = misfits(_conf(PRIVATE_DIR))
    if problems:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", PRIVATE_DIR], capture_output=True, text=True, timeout=300
        )
        pytest.skip(f"the tests' own Slurm sandbox does not fit: {'; '.join(problems)}")
    return Path(PRIVATE_DIR), True


@pytest.fixture(scope="session")
def slurm_sandbox():
    """A running one-node Slurm that fits the tests (see ``misfits``); yields its folder. Its
    slurm.conf is exported as SLURM_CONF for the session (the tests' subprocesses and jobs)."""
    reason = _cannot_start()
    if reason:
        pytest.skip(f"no Slurm sandbox: {reason}")
    folder, started = _sandbox()
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = _conf(folder)
    _ACTIVE["dir"] = folder
    try:
        yield folder
    finally:
        if started:
            subprocess.run(
                ["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, text=True, timeout=300
            )
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


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
    code = (
        "import sys; from mnist_hpc.cli.main import cli, main; from mnist_hpc.cli.cluster import register; "
        "register(cli); sys.argv[0] = 'mnist-hpc'; main()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mnist-hpc {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def job_state(job_id: str) -> str:
    """JobState from ``scontrol show job``, else from the sandbox's record of finished jobs
    (its jobcomp log); '' when neither knows the job."""
    proc = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", str(job_id)], capture_output=True, text=True
    )
    for field in proc.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    state = ""
    jobcomp = _ACTIVE["dir"] / "log" / "jobcomp.log"
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
    raise AssertionError(
        f"job {job_id} still {state or 'unknown'} after {timeout:.0f} s "
        f"(waiting for {', '.join(sorted(states))})"
    )


def wait_until_done(job_id: str, timeout: float) -> str:
    return wait_for_state(job_id, TERMINAL, timeout)


def paced_sets(step_seconds: float) -> list[str]:
    """--set strings that train tests/nets/paced.py: at least ``step_seconds`` a training step, so a
    job lasts long enough for its signal or time limit on any CPU (the quickstart net's speed varies
    4x between this project's hosts). The pace changes no number: step_seconds=0 ends the same."""
    return [
        "model.name=custom",
        f"model.file={PACED_NET}",
        "model.factory=Paced",
        f"model.args.step_seconds={step_seconds}",
    ]


def paced_yaml(step_seconds: float) -> str:
    """paced_sets() as entries of a sweep file's `set:` flow mapping."""
    return (
        f"model.name: custom, model.file: '{PACED_NET}', model.factory: Paced, "
        f"model.args: {{step_seconds: {step_seconds}}}"
    )


def make_project(sweep_name: str, text: str) -> Path:
    """A project folder outside pytest's basetemp (pruned by other sessions under running jobs)."""
    project = Path(tempfile.mkdtemp(prefix="mnist-hpc-sweep-"))
    (project / "mnist_hpc").symlink_to(ROOT / "mnist_hpc")
    shutil.copytree(ROOT / "configs", project / "configs")
    (project / "configs" / "sweeps" / f"{sweep_name}.yaml").write_text(text)
    return project


def scontrol_fields(job: str) -> dict:
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True
    ).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def metrics_rows(run_dir: Path) -> int:
    try:
        return max(0, len((run_dir / "metrics.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0
