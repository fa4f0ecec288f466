"""What a job needs on its compute node, decided when it is submitted: the mnist_hpc code it
runs, the python where the cluster builds no virtualenv, the packages its configs need, and
the check, before anything is queued, that the cluster's wheelhouse has those packages.

The job imports mnist_hpc from the folder its script names (``CODE_DIR``, put first on
``PYTHONPATH``), so neither the folder ``submit`` ran in nor the job's interpreter has to hold
the project: that folder is the checkout the submitting mnist_hpc comes from, or, when
mnist-hpc is installed without a checkout (``pip install mnist-hpc``), a copy of the installed
package made in the run folder at submit time.

A cluster's wheelhouse (the folder of wheels its compute nodes install from, with
``pip install --no-index``) is ``$MNIST_HPC_WHEELHOUSE`` (folders separated by ``:``), else the
profile's ``wheelhouse:``. A package it lacks would make the job fail on the node after its
wait in the queue; ``check_wheelhouse`` refuses it at submit time instead.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterable, Mapping, Optional

from mnist_hpc.errors import UserError

CODE_FOLDER = "code"  # <run folder>/code/mnist_hpc: the copy of an installed mnist_hpc


def _package_root() -> tuple[Path, bool]:
    """The folder holding the running mnist_hpc package, and whether it is a checkout."""
    import mnist_hpc

    root = Path(mnist_hpc.__file__).resolve().parent.parent
    return root, (root / "pyproject.toml").is_file()


def code_dir(folder: Path) -> str:
    """The folder a job submitted into ``folder`` (its run or sweep folder) imports mnist_hpc
    from: this checkout, else ``folder/code`` (filled by ``copy_code``)."""
    root, checkout = _package_root()
    return str(root if checkout else Path(folder) / CODE_FOLDER)


def copy_code(folder: Path) -> Optional[Path]:
    """Copy an installed mnist_hpc (no checkout) into ``folder/code``; None for a checkout."""
    root, checkout = _package_root()
    if checkout:
        return None
    target = Path(folder) / CODE_FOLDER / "mnist_hpc"
    shutil.copytree(root / "mnist_hpc", target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target.parent


def submitting_python() -> str:
    """The interpreter running ``submit``: the job's python where no virtualenv is built."""
    return sys.executable or ""


def job_packages(configs: Iterable) -> tuple[str, ...]:
    """What the job's virtualenv installs: the base dependencies, then what any of ``configs``
    needs beyond them (a logger's package), each once."""
    from mnist_hpc.config.extras import required_packages

    return tuple(dict.fromkeys(name for cfg in configs for name in required_packages(cfg)))


# --------------------------------------------------------------------------- the wheelhouse


def _normal(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): PyYAML, pyyaml and py_yaml agree."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheelhouse_folders(profile, environ: Optional[Mapping[str, str]] = None) -> tuple[list[str], str]:
    """The wheelhouse folders for ``profile`` and where that came from (for messages)."""
    env = os.environ if environ is None else environ
    named = env.get("MNIST_HPC_WHEELHOUSE", "")
    if named.strip():
        return [f for f in named.split(os.pathsep) if f.strip()], "$MNIST_HPC_WHEELHOUSE"
    return list(getattr(profile, "wheelhouse", ())), f"the wheelhouse of cluster {profile.name}"


def wheels_in(folders: Iterable[str]) -> set[str]:
    """The distributions (normalised names) that ``folders`` hold wheels of."""
    names = set()
    for folder in folders:
        for path in Path(folder).iterdir():
            if path.name.endswith(".whl"):
                names.add(_normal(path.name.split("-", 1)[0]))
    return names


def check_wheelhouse(packages: Iterable[str], profile, environ: Optional[Mapping[str, str]] = None) -> None:
    """Refuse (one ``UserError`` line) a job whose packages the cluster's wheelhouse lacks.

    Nothing to check where no wheelhouse is known, or where the profile's folders are not
    visible from here (submitting from elsewhere than the cluster's login node); a
    ``$MNIST_HPC_WHEELHOUSE`` that names no folder is a mistake."""
    folders, where = wheelhouse_folders(profile, environ)
    present = [f for f in folders if Path(f).is_dir()]
    if not present:
        if folders and where.startswith("$"):
            raise UserError(f"{where}={os.pathsep.join(folders)}: no such folder")
        return
    have = wheels_in(present)
    lacking = [p for p in packages if _normal(p) not in have]
    if lacking:
        names = ", ".join(lacking)
        raise UserError(
            f"the job needs {names}, which {where} ({', '.join(present)}) does not have: its "
            f"`pip install --no-index` would fail on the compute node. Drop what needs "
            f"{'it' if len(lacking) == 1 else 'them'} (experiment.loggers), or get "
            f"{'it' if len(lacking) == 1 else 'them'} into the wheelhouse (Alliance: `avail_wheels "
            f"{lacking[0]}`, else ask support; the local sandbox: add to LOCAL_SLURM_WHEELS and start it again)")
