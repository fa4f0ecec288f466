"""Copy the project to a cluster: rsync (scp when rsync is missing), heavy folders left behind.

Commands are argv lists, never shell strings; the remote folder defaults to
``<push_dir>/<project folder name>`` under the remote home, ``push_dir`` coming from the profile
of the cluster (named, or recognised in the host name): ``scratch``, or ``links/scratch`` where
scratch is linked there (Trillium, whose $HOME compute nodes cannot write; Rorqual).
"""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Optional

from mnist_hpc.cluster import datapack
from mnist_hpc.errors import UserError

PUSH_EXCLUDES = (".venv", "runs", "__pycache__", ".git", ".pytest_cache", "*.egg-info")
DEFAULT_REMOTE_PARENT = "scratch"


def push_commands(project: Path, target: str, with_data: bool, have_rsync: bool,
                  remote_parent: str = DEFAULT_REMOTE_PARENT) -> list[list[str]]:
    """The argv lists that copy ``project`` to ``target`` (USER@HOST[:DIR])."""
    host, sep, remote = target.partition(":")
    if not host or host.startswith("-"):
        raise UserError(f"push {target}: expected USER@HOST[:DIR], e.g. you@narval.alliancecan.ca:scratch/mnist")
    remote = remote if sep and remote else f"{remote_parent}/{project.name}"
    remote = remote.rstrip("/")
    archive = project / datapack.DEFAULT_ARCHIVE
    data_folder = archive.parent.name
    if have_rsync:
        # the top-level data/ folder stays behind, except the archive with --with-data
        data_rules = ([f"--include=/{data_folder}/", f"--include=/{datapack.DEFAULT_ARCHIVE}",
                       f"--exclude=/{data_folder}/*"] if with_data else [f"--exclude=/{data_folder}/"])
        return [["rsync", "-a", *[f"--exclude={e}" for e in PUSH_EXCLUDES], *data_rules,
                 f"{project}/", f"{host}:{remote}/"]]
    entries = sorted(str(p) for p in project.iterdir()
                     if p.name != data_folder and not any(fnmatch.fnmatch(p.name, e) for e in PUSH_EXCLUDES))
    # scp copies whole trees (no excludes below the top level) and needs the folders to exist
    folders = [remote] + ([f"{remote}/data"] if with_data else [])
    cmds = [["ssh", host, "mkdir -p -- " + " ".join(shlex.quote(f) for f in folders)],
            ["scp", "-r", "-p", *entries, f"{host}:{remote}/"]]
    if with_data:
        cmds.append(["scp", "-p", str(archive), f"{host}:{remote}/data/"])
    return cmds


def remote_parent(target: str, cluster: Optional[str] = None) -> str:
    """The folder under the remote home that the project goes into: the ``push_dir`` of
    ``cluster``, else of the profile the host is named after (``trillium-gpu.alliancecan.ca``)."""
    from mnist_hpc.cluster.profiles import get_profile, load_profiles

    if cluster:
        return get_profile(cluster)[0].push_dir
    host = target.partition(":")[0].rpartition("@")[2].split(".")[0].lower()
    for name, profile in load_profiles()[0].items():
        if host == name or host.startswith(f"{name}-"):
            return profile.push_dir
    return DEFAULT_REMOTE_PARENT


def project_folder(project) -> Path:
    folder = Path(project).resolve()
    if not (folder / "mnist_hpc").is_dir():
        raise UserError(f"{folder} is not the mnist-hpc project folder (no mnist_hpc/ in it); "
                        "run push from the project folder or pass --project")
    return folder


def push(target: str, *, project=".", with_data: bool = False, dry_run: bool = False,
         cluster: Optional[str] = None, show: Callable[[str], None] = print) -> Path:
    """Copy ``project`` to ``target``; ``show`` gets each command (``$ rsync ...``) before it runs
    and a line about packing the data. Returns the project folder."""
    project_dir = project_folder(project)
    parent = remote_parent(target, cluster)
    archive = project_dir / datapack.DEFAULT_ARCHIVE
    if with_data and not archive.is_file() and not dry_run:
        from mnist_hpc.config.datasets import resolve_data_root

        root, _ = resolve_data_root(None, None)
        show(f"data: packing {datapack.pack(root, [], archive)}")
    have_rsync = shutil.which("rsync") is not None
    for argv in push_commands(project_dir, target, with_data, have_rsync, parent):
        show("$ " + shlex.join(argv))
        if dry_run:
            continue
        if shutil.which(argv[0]) is None:
            raise UserError(f"{argv[0]} not found: install openssh-client (and rsync)")
        proc = subprocess.run(argv)
        if proc.returncode != 0:
            raise UserError(f"{argv[0]} failed with exit status {proc.returncode}")
    return project_dir
