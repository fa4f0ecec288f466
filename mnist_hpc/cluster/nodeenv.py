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
from collections.abc import Iterable, Mapping
from pathlib import Path

from mnist_hpc.cluster.profiles import Profile
from mnist_hpc.config.schema import Config
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


def copy_code(folder: Path) -> Path | None:
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


def job_packages(configs: Iterable[Config]) -> tuple[str, ...]:
    """What the job's virtualenv installs: the base dependencies, then what any of ``configs``
    needs beyond them (a logger's package), each once."""
    from mnist_hpc.config.extras import required_packages

    return tuple(dict.fromkeys(name for cfg in configs for name in required_packages(cfg)))


# --------------------------------------------------------------------------- the wheelhouse


def _normal(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): PyYAML, pyyaml and py_yaml agree."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheelhouse_folders(profile: Profile, environ: Mapping[str, str] | None = None) -> tuple[list[str], str]:
    """The wheelhouse folders for ``profile`` and where that came from (for messages)."""
    env = os.environ if environ is None else environ
    named = env.get("MNIST_HPC_WHEELHOUSE", "")
    if named.strip():
        return [f for f in named.split(os.pathsep) if f.strip()], "$MNIST_HPC_WHEELHOUSE"
    return list(getattr(profile, "wheelhouse", ())), f"the wheelhouse of cluster {profile.name}"


def python_version(modules: Iterable[str]) -> tuple[int, int] | None:
    """The (major, minor) of the ``python/X.Y[.Z]`` module among ``modules``, if any."""
    for m in modules:
        found = re.match(r"^python/(\d+)\.(\d+)", m)
        if found:
            return int(found.group(1)), int(found.group(2))
    return None


def wheel_fits(filename: str, python: tuple[int, int] | None) -> bool:
    """Whether a wheel (``name-version[-build]-pytag-abitag-platform.whl``) installs on
    ``python`` (None: any): a pure ``py3`` wheel, ``cpXY`` for that very version, or an
    ``abi3`` wheel built for that version or an older one."""
    parts = filename[: -len(".whl")].split("-")
    if python is None or len(parts) < 5:
        return True
    pytags, abi = parts[-3].split("."), parts[-2]
    here = f"{python[0]}{python[1]}"
    for tag in pytags:
        if tag in ("py3", f"py{python[0]}", f"py{here}", f"cp{here}"):
            return True
        if abi == "abi3" and re.match(r"^cp3(\d+)$", tag) and int(tag[3:]) <= python[1] and python[0] == 3:
            return True
    return False


def wheels_in(folders: Iterable[str], python: tuple[int, int] | None = None) -> set[str]:
    """The distributions (normalised names) that ``folders`` hold wheels of for ``python``.
    Subfolders count (the Alliance wheelhouse keeps its wheels in folders per software
    environment and CPU architecture, which this check does not tell apart) [Python § Available wheels]."""
    names: set[str] = set()
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            if len(Path(root).relative_to(folder).parts) >= 3:
                dirs[:] = []
            for name in files:
                if name.endswith(".whl") and wheel_fits(name, python):
                    names.add(_normal(name.split("-", 1)[0]))
    return names


def check_wheelhouse(
    packages: Iterable[str], profile: Profile, environ: Mapping[str, str] | None = None
) -> None:
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
    python = python_version(getattr(profile, "modules", ()))
    have = wheels_in(present, python)
    lacking = [p for p in packages if _normal(p) not in have]
    if lacking:
        names = ", ".join(lacking)
        for_python = f" for Python {python[0]}.{python[1]}" if python else ""
        raise UserError(
            f"the job needs {names}, which {where} ({', '.join(present)}) does not have{for_python}: its "
            f"`pip install --no-index` would fail on the compute node. Drop what needs "
            f"{'it' if len(lacking) == 1 else 'them'} (experiment.loggers), or get "
            f"{'it' if len(lacking) == 1 else 'them'} into the wheelhouse (Alliance: `avail_wheels "
            f"{lacking[0]}`, else ask support; the local sandbox: add to LOCAL_SLURM_WHEELS and start it again)"
        )


# --------------------------------------------------------------------------- a virtualenv in $HOME
# Trillium's documented way to get Python packages into jobs is a virtualenv made once on the
# login node in $HOME (read-only but readable on compute nodes), activated by each job: its
# $SLURM_TMPDIR is a RAM disk, not a node-local disk, so a fresh virtualenv per job start would
# sit in the job's memory [Trillium Quickstart § example job scripts; Data management at Trillium
# § $SLURM_TMPDIR (RAM)]. A profile's ``home_venv`` names that folder under $HOME; the stamp file
# in it says what it was built with, and a job whose project needs something else refuses to run.

STAMP_FILE = "mnist-hpc-env.txt"


def venv_stamp(modules: Iterable[str], packages: Iterable[str]) -> str:
    """The one line a home virtualenv must hold for a job: the mnist-hpc version (which pins the
    dependency versions), the modules it was built under and the packages installed."""
    from mnist_hpc import __version__

    return f"mnist-hpc {__version__}; modules {' '.join(modules) or '-'}; packages {' '.join(packages)}"


def home_venv_path(profile: Profile, home: Path | None = None) -> Path | None:
    rel = getattr(profile, "home_venv", "")
    return (Path(home) if home is not None else Path.home()) / rel if rel else None


def check_home_venv(profile: Profile, packages: Iterable[str], home: Path | None = None) -> None:
    """Refuse a job (one UserError line) on a cluster whose jobs activate a virtualenv in $HOME
    when that virtualenv is missing or was built for other packages (stale)."""
    venv = home_venv_path(profile, home)
    if venv is None:
        return
    fix = f"make it once on the login node with: mnist-hpc setup --cluster {profile.name}"
    if not (venv / "bin" / "python").exists():
        raise UserError(
            f"cluster {profile.name}: jobs run in the virtualenv {venv}, which does not exist; {fix}"
        )
    try:
        have = (venv / STAMP_FILE).read_text().strip()
    except OSError:
        have = ""
    want = venv_stamp(profile.modules, packages)
    if have != want:
        raise UserError(
            f"cluster {profile.name}: the virtualenv {venv} is stale (built with "
            f"{have or 'no record of its packages'!r}, the job needs {want!r}); rebuild it: "
            f"mnist-hpc setup --cluster {profile.name}"
        )


def setup_script(profile: Profile, packages: Iterable[str], venv: Path) -> str:
    """The bash commands `mnist-hpc setup` runs on the login node: a clean module environment,
    the profile's modules, a virtualenv at ``venv`` from the wheelhouse (``--no-index``), the
    stamp. A pure function of its arguments (printed by ``--dry-run``)."""
    import shlex

    packages = list(packages)
    q = shlex.quote
    modules = " ".join(q(m) for m in profile.modules)
    stamp = venv_stamp(profile.modules, packages)
    v = q(str(venv))
    lines = [
        "set -euo pipefail",
        "command -v module >/dev/null 2>&1 || exit 3  # no module command: not on the cluster",
        "set +u",
        "module purge",
        f"module load {modules}" if modules else ":",
        "set -u",
        f"if [ -e {v} ] && [ ! -x {v}/bin/python ]; then",
        f'  echo "error: {venv} exists and is no virtualenv; move it away first" >&2',
        "  exit 1",
        "fi",
        f"rm -rf {v}",
        f"if command -v virtualenv >/dev/null 2>&1; then virtualenv --no-download {q(str(venv))}; "
        f"else python3 -m venv {q(str(venv))}; fi",
        f"{q(str(venv / 'bin' / 'python'))} -m pip install --no-index --quiet {' '.join(q(p) for p in packages)}",
        f"printf '%s\\n' {q(stamp)} > {q(str(venv / STAMP_FILE))}",
    ]
    return "\n".join(lines) + "\n"
