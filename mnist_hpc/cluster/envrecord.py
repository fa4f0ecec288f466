"""The environment each start of a run ran in, recorded in its run folder: ``env/start-<K>/``.

Per start (the first, and every requeued or resumed one): ``job.json`` (node, Slurm job, array and
task ids, restart count, the time, python, and the versions of torch, torchvision and mnist-hpc),
``pip-freeze.txt`` (every installed distribution), ``modules.txt`` (Lmod's loaded modules, from
``$LOADEDMODULES``), ``python.txt`` (``python -V``) and, where the node has one, ``nvidia-smi.txt``
(``nvidia-smi -L``). A later start whose torch, torchvision or mnist-hpc version differs from the
first start's says so loudly: a cluster's wheelhouse can change between two starts of one job, and
the resumed run then no longer matches an uninterrupted one.

The Slurm facts come from ``cluster.env.JobEnv`` (the only reader of ``SLURM_*``); training calls
the ``on_start`` callback of its ``TrainContext`` once rank 0 holds the run folder. No torch import:
versions are read from the installed distributions' metadata.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from mnist_hpc.cluster.env import JobEnv

ENV_DIR = "env"
WATCHED = ("torch", "torchvision", "mnist-hpc")  # what must not change between two starts


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in WATCHED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if out.get("mnist-hpc") is None:  # a checkout on PYTHONPATH, not installed
        from mnist_hpc import __version__

        out["mnist-hpc"] = __version__
    return out


def pip_freeze() -> str:
    """``pip freeze``'s list (name==version, sorted), from the installed distributions' metadata."""
    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        # typeshed's PackageMetadata has .get only from 3.12; the object is an email Message on every version
        name = dist.metadata.get("Name")  # type: ignore[attr-defined]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "".join(line + "\n" for _, line in sorted(seen.items()))


def nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"nvidia-smi -L failed: {e}\n"
    return proc.stdout if proc.returncode == 0 else f"nvidia-smi -L failed: {proc.stderr.strip()}\n"


def _starts(env_dir: Path) -> list[Path]:
    found = [p for p in env_dir.glob("start-*") if p.is_dir() and p.name[6:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[6:]))


def record(
    run_dir: str | Path, job: JobEnv, environ: Mapping[str, str] | None = None
) -> tuple[Path, str | None]:
    """Write ``env/start-<K>/`` for this start; return it and, when this start's watched versions
    differ from the first start's, the warning to show (else None)."""
    env = os.environ if environ is None else environ
    env_dir = Path(run_dir) / ENV_DIR
    env_dir.mkdir(exist_ok=True)
    earlier = _starts(env_dir)
    index = int(earlier[-1].name[6:]) + 1 if earlier else 0
    here = env_dir / f"start-{index}"
    here.mkdir()
    now = versions()
    facts = {
        "start": index,
        "node": socket.gethostname(),
        "started_at": datetime.now(timezone.utc).isoformat(),
        "slurm_job_id": job.job_id,
        "slurm_array_job_id": job.array_job_id,
        "slurm_array_task_id": job.array_task_id,
        "restart_count": job.restart_count,
        "python": platform.python_version(),
        "executable": sys.executable,
        "versions": now,
    }
    (here / "job.json").write_text(json.dumps(facts, indent=2) + "\n")
    (here / "pip-freeze.txt").write_text(pip_freeze())
    (here / "python.txt").write_text(f"Python {platform.python_version()}\n")
    loaded = [m for m in (env.get("LOADEDMODULES") or "").split(":") if m]
    (here / "modules.txt").write_text(
        "".join(f"{m}\n" for m in loaded) if loaded else "(no modules loaded, or no Lmod on this node)\n"
    )
    gpus = nvidia_smi()
    if gpus is not None:
        (here / "nvidia-smi.txt").write_text(gpus)
    if not earlier:
        return here, None
    try:
        first = json.loads((earlier[0] / "job.json").read_text()).get("versions") or {}
    except (OSError, ValueError):
        return here, None
    changed = [
        f"{name} {first.get(name)} -> {now.get(name)}" for name in WATCHED if first.get(name) != now.get(name)
    ]
    if not changed:
        return here, None
    return here, (
        f"WARNING: this start of the run uses other versions than its first start did "
        f"({', '.join(changed)}; see {env_dir}/): the resumed run may not match an "
        "uninterrupted one. Pin the versions (a virtualenv made once) or start the run afresh."
    )


def on_start(job: JobEnv, echo: Callable[[str], None] = print) -> Callable[[Path], None]:
    """The ``TrainContext.on_start`` callback: record this start's environment in the run folder
    and warn loudly when the versions changed since the first start. A failure to write the
    record is a note, never the end of the run."""

    def callback(run_dir: Path) -> None:
        try:
            _, warning = record(run_dir, job)
        except OSError as e:
            echo(f"note: could not record the job environment in {run_dir}/{ENV_DIR}: {e}")
            return
        if warning:
            echo(warning)
            print(warning, file=sys.stderr, flush=True)

    return callback
