"""Copy the project to a cluster: rsync (scp when rsync is missing), heavy folders left behind.

Commands are argv lists, never shell strings; the remote folder defaults to
``<push_dir>/<project folder name>`` under the remote home, ``push_dir`` coming from the profile
of the cluster (named, or recognised in the host name): ``scratch``, or ``links/scratch`` where
scratch is linked there (Trillium, whose $HOME compute nodes cannot write; Rorqual).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from mnist_hpc.cluster import datapack
from mnist_hpc.errors import UserError

PUSH_EXCLUDES = (".venv", "runs", "__pycache__", ".git", ".pytest_cache", "*.egg-info")
DEFAULT_REMOTE_PARENT = "scratch"


EXAMPLE = "you@narval.alliancecan.ca:scratch/mnist"
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")  # a host name, an address or an ssh alias
_DIR = re.compile(r"[A-Za-z0-9._~+%=,@/-]+")  # no spaces, quotes or shell characters


def check_target(target: str) -> tuple[str, str | None]:
    """``[USER@]HOST[:DIR]`` -> (``[USER@]HOST``, DIR or None), checked before any rsync, scp or
    ssh sees it: one UserError line naming what is wrong otherwise."""

    def bad(why: str) -> UserError:
        return UserError(
            f"push {target!r}: {why}; expected USER@HOST[:DIR], e.g. {EXAMPLE} (or USER@HOST "
            f"alone for the cluster's default folder)"
        )

    if not isinstance(target, str) or not target:
        raise bad("no destination")
    if any(c.isspace() or not c.isprintable() for c in target):
        raise bad("spaces or control characters in it")
    login, sep, remote = target.partition(":")
    user, at, host = login.rpartition("@")
    if not login:
        raise bad("no host before ':'")
    if at and not user:
        raise bad("nothing before '@' (the user name)")
    if at and not host:
        raise bad("no host after '@'")
    if "@" in user or (user and not _USER.fullmatch(user)):
        raise bad(f"{user!r} is not a user name")
    if not _HOST.fullmatch(host):
        raise bad(f"{host!r} is not a host name")
    if sep and not remote:
        raise bad("no folder after ':'")
    if sep and (remote.startswith("-") or not _DIR.fullmatch(remote)):
        raise bad(f"{remote!r} is not a folder name for the cluster (letters, digits, . _ - / ~ only)")
    return login, (remote.rstrip("/") or "/") if sep else None


def push_commands(
    project: Path, target: str, with_data: bool, have_rsync: bool, remote_parent: str = DEFAULT_REMOTE_PARENT
) -> list[list[str]]:
    """The argv lists that copy ``project`` to ``target`` (USER@HOST[:DIR])."""
    host, remote = check_target(target)
    remote = remote or f"{remote_parent}/{project.name}"
    remote = remote.rstrip("/")
    archive = project / datapack.DEFAULT_ARCHIVE
    data_folder = archive.parent.name
    if have_rsync:
        # the top-level data/ folder stays behind, except the archive with --with-data
        data_rules = (
            [
                f"--include=/{data_folder}/",
                f"--include=/{datapack.DEFAULT_ARCHIVE}",
                f"--exclude=/{data_folder}/*",
            ]
            if with_data
            else [f"--exclude=/{data_folder}/"]
        )
        return [
            [
                "rsync",
                "-a",
                *[f"--exclude={e}" for e in PUSH_EXCLUDES],
                *data_rules,
                f"{project}/",
                f"{host}:{remote}/",
            ]
        ]
    entries = sorted(
        str(p)
        for p in project.iterdir()
        if p.name != data_folder and not any(fnmatch.fnmatch(p.name, e) for e in PUSH_EXCLUDES)
    )
    # scp copies whole trees (no excludes below the top level) and needs the folders to exist
    folders = [remote] + ([f"{remote}/data"] if with_data else [])
    cmds = [
        ["ssh", host, "mkdir -p -- " + " ".join(shlex.quote(f) for f in folders)],
        ["scp", "-r", "-p", *entries, f"{host}:{remote}/"],
    ]
    if with_data:
        cmds.append(["scp", "-p", str(archive), f"{host}:{remote}/data/"])
    return cmds


def remote_parent(target: str, cluster: str | None = None) -> str:
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


def project_folder(project: str | Path) -> Path:
    folder = Path(project).resolve()
    if not (folder / "mnist_hpc").is_dir():
        raise UserError(
            f"{folder} is not the mnist-hpc project folder (no mnist_hpc/ in it); "
            "run push from the project folder or pass --project"
        )
    return folder


def push(
    target: str,
    *,
    project: str | Path = ".",
    with_data: bool = False,
    dry_run: bool = False,
    cluster: str | None = None,
    show: Callable[[str], None] = print,
) -> Path:
    """Copy ``project`` to ``target``; ``show`` gets each command (``$ rsync ...``) before it runs
    and a line about packing the data. Returns the project folder."""
    check_target(target)  # before anything is packed or copied
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
