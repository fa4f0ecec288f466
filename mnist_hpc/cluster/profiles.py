"""Cluster profiles: what a job may ask for on each cluster, kept as data.

The built-in profiles live in ``clusters.yaml`` next to this module. Users add or override
profiles in ``~/.config/mnist-hpc/clusters.yaml`` (``$XDG_CONFIG_HOME`` respected) or in the
file named by ``$MNIST_HPC_CLUSTERS``. Every file is read with the shared bounded YAML loader and
validated by the one config validator (``build_section``): an unknown key is an error with a
did-you-mean, exactly as in experiment configs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from mnist_hpc.cluster.units import is_mem, is_time, parse_time
from mnist_hpc.config import build_section, did_you_mean, read_yaml, resolve_extends
from mnist_hpc.config.validate import fail
from mnist_hpc.errors import ConfigError, UserError

GPU_REQUEST_STYLES = ("gpus-per-node", "gres")
# the validator's ``err(key, expected, got, options)`` handed to ``check``: it raises ConfigError
ErrFn = Callable[..., NoReturn]
# name -> (the raw mapping of a profile, the file it was read from)
Entries = dict[str, tuple[dict[str, Any], str]]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class MigSlice:
    """One MIG instance type: the cores and memory a job asks for with it."""

    cpus: int = 1
    mem: str = "1G"
    rgu: float | None = None  # Reference GPU Units charged for the slice (None: not documented)

    def check(self, err: ErrFn) -> None:
        if self.rgu is not None and not (isinstance(self.rgu, (int, float)) and self.rgu > 0):
            err("rgu", "a positive number of RGU (or null)", self.rgu)
        if self.cpus < 1:
            err("cpus", "an integer >= 1", self.cpus)
        if not is_mem(self.mem):
            err("mem", "a memory size such as 15G", self.mem)


@dataclass(frozen=True)
class Profile:
    """One cluster; each key is explained at the top of clusters.yaml."""

    name: str = ""  # the key under profiles: (set by the loader, not in the file)
    description: str = ""
    gpu_type: str | None = None
    gpu_types: tuple[str, ...] = ()
    gpu_request: str = "gres"
    gpus_per_node: int = 0
    gpu_counts: tuple[int, ...] = ()
    mig: dict[str, MigSlice] = field(default_factory=dict)
    cpus_per_gpu: int = 1
    rgu_per_gpu: float | None = None  # RGU charged for one whole GPU of gpu_type (None: not documented)
    mem_per_gpu: str | None = None
    cpus_cpu_job: int = 1
    mem_cpu_job: str | None = None
    cpu_node_cores: int = 0
    max_time: str = "1-00:00:00"
    max_jobs: int = 0
    max_running: int = 0
    max_array_size: int = 1001  # Slurm's default MaxArraySize
    modules: tuple[str, ...] = ()
    gpu_modules: tuple[str, ...] = ()
    partition: str | None = None
    internet: bool = True
    account_required: bool = False
    account_prefixes: tuple[str, ...] = ()
    home_read_only: bool = False
    home_venv: str = ""  # jobs activate this virtualenv under $HOME ("" = one in $SLURM_TMPDIR per start)
    push_dir: str = "scratch"
    wheelhouse: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def check(self, err: ErrFn) -> None:
        if self.gpu_request not in GPU_REQUEST_STYLES:
            err(
                "gpu_request", f"one of {', '.join(GPU_REQUEST_STYLES)}", self.gpu_request, GPU_REQUEST_STYLES
            )
        if not is_time(self.max_time):
            err("max_time", "a Slurm time such as 7-00:00:00", self.max_time)
        for key in ("mem_per_gpu", "mem_cpu_job"):
            if getattr(self, key) is not None and not is_mem(getattr(self, key)):
                err(key, "a memory size such as 32G (or null)", getattr(self, key))
        for key in (
            "gpus_per_node",
            "cpus_per_gpu",
            "cpus_cpu_job",
            "cpu_node_cores",
            "max_jobs",
            "max_running",
            "max_array_size",
        ):
            if getattr(self, key) < 0:
                err(key, "an integer >= 0", getattr(self, key))
        if self.rgu_per_gpu is not None and not (
            isinstance(self.rgu_per_gpu, (int, float)) and self.rgu_per_gpu > 0
        ):
            err("rgu_per_gpu", "a positive number of RGU (or null)", self.rgu_per_gpu)
        if any(n < 1 for n in self.gpu_counts):
            err("gpu_counts", "a list of GPU counts >= 1", list(self.gpu_counts))
        if self.home_venv and (
            self.home_venv.startswith(("/", "-"))
            or ".." in Path(self.home_venv).parts
            or not Path(self.home_venv).parts
        ):
            err(
                "home_venv", "a folder under $HOME, such as .virtualenvs/mnist-hpc (or empty)", self.home_venv
            )
        if not self.push_dir.strip() or self.push_dir.startswith("-"):
            err("push_dir", "a folder under the remote home, such as scratch", self.push_dir)

    def check_whole(self, err: ErrFn) -> None:
        """The checks across keys, once ``extends:`` is resolved."""
        if self.gpu_type and self.gpu_type not in self.gpu_types:
            err("gpu_type", f"one of gpu_types ({', '.join(self.gpu_types) or 'none'})", self.gpu_type)
        if any(n > self.gpus_per_node for n in self.gpu_counts):
            err("gpu_counts", f"counts up to gpus_per_node ({self.gpus_per_node})", list(self.gpu_counts))
        if set(self.mig) & set(self.gpu_types):
            err("mig", "slice names that are not in gpu_types", sorted(set(self.mig) & set(self.gpu_types)))

    @property
    def max_seconds(self) -> int:
        return parse_time(self.max_time)

    def gpu_directive(self, count: int, gpu_type: str | None = None) -> str | None:
        """The sbatch option asking for ``count`` GPUs per node, e.g. ``--gpus-per-node=h100:2``."""
        if count <= 0:
            return None
        kind = gpu_type or self.gpu_type
        if self.gpu_request == "gpus-per-node":
            return f"--gpus-per-node={kind}:{count}" if kind else f"--gpus-per-node={count}"
        return f"--gres=gpu:{kind}:{count}" if kind else f"--gres=gpu:{count}"


@dataclass(frozen=True)
class Retired:
    """A cluster that no longer runs jobs, and the one that replaced it."""

    successor: str = ""
    note: str = ""  # what happened, shown in the warning


@dataclass(frozen=True)
class ClustersFile:
    """The layout of clusters.yaml (built-in and the user's)."""

    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # raw: `extends:` is resolved later
    retired: dict[str, Retired] = field(default_factory=dict)


# --------------------------------------------------------------------------- loading


def _user_files() -> list[Path]:
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    files = [Path(config_home) / "mnist-hpc" / "clusters.yaml"]
    if os.environ.get("MNIST_HPC_CLUSTERS"):
        named = Path(os.environ["MNIST_HPC_CLUSTERS"])
        if not named.is_file():
            raise ConfigError(f"$MNIST_HPC_CLUSTERS={named}: no such file")
        files.append(named)
    return [f for f in files if f.is_file()]


def _read_file(path: str | Path, entries: Entries, retired: dict[str, Retired]) -> None:
    """Add the profiles of one file to ``entries`` (name -> (raw mapping, source))."""
    source = str(path)
    data = build_section(ClustersFile, read_yaml(Path(path)), "", source)
    for name, entry in data.profiles.items():
        where = f"profiles.{name}"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            fail(
                source,
                "profiles",
                f"{name!r} is not a valid profile name (letters, digits, '.', '_' and '-')",
            )
        if not isinstance(entry, dict):
            fail(source, where, f"expected a mapping of profile settings, got {entry!r}")
        if "name" in entry:
            fail(source, f"{where}.name", "unknown key; a profile is named by its key under profiles:")
        if not isinstance(entry.get("extends", ""), str):
            fail(source, f"{where}.extends", f"expected a profile name, got {entry['extends']!r}")
        build_section(Profile, {k: v for k, v in entry.items() if k != "extends"}, where, source)
        entries[name] = (entry, source)
    for name, old in data.retired.items():
        retired[name] = old


def _resolve(name: str, entries: Entries) -> dict[str, Any]:
    """A profile's settings merged over those of the profiles it extends (the shared resolver)."""

    def lookup(key: str) -> tuple[dict[str, Any], list[str]]:
        entry, source = entries[key]
        parent = entry.get("extends")
        if parent is not None and parent not in entries:
            fail(
                source,
                f"profiles.{key}.extends",
                f"unknown profile {parent!r}{did_you_mean(parent, entries)}",
            )
        return {k: v for k, v in entry.items() if k != "extends"}, [] if parent is None else [parent]

    # shallow: a value replaces the parent's whole value (`mig: {}` drops the parent's slices)
    return resolve_extends(
        name,
        lookup,
        merge=lambda base, over: {**base, **over},
        where=lambda key: f"{entries[key][1]}: profiles.{key}",
    )


def load_profiles() -> tuple[dict[str, Profile], dict[str, Retired]]:
    """All profiles (built-in, then the user's files) and the retired-name table."""
    entries: Entries = {}
    retired: dict[str, Retired] = {}
    builtin = resources.files("mnist_hpc.cluster").joinpath("clusters.yaml")
    with resources.as_file(builtin) as path:
        _read_file(path, entries, retired)
    for path in _user_files():
        _read_file(path, entries, retired)
    profiles = {}
    for name, (_, source) in entries.items():
        values = _resolve(name, entries)
        profile = build_section(Profile, {**values, "name": name}, f"profiles.{name}", source)
        profile.check_whole(
            lambda key, expected, got, options=None, source=source, name=name: fail(
                source, f"profiles.{name}.{key}", f"expected {expected}, got {got!r}"
            )
        )
        profiles[name] = profile
    for name, old in retired.items():
        if old.successor not in profiles:
            raise ConfigError(f"retired.{name}.successor: unknown profile {old.successor!r}")
    return profiles, retired


def get_profile(name: str) -> tuple[Profile, str | None]:
    """The profile called ``name`` and, for a retired cluster's name, a warning to show."""
    profiles, retired = load_profiles()
    key = name.strip().lower()
    if key in profiles:
        return profiles[key], None
    if key in retired:
        old = retired[key]
        successor = profiles[old.successor]
        return successor, (
            f"{old.note}; using its successor {successor.name} instead "
            f"(pass --cluster {successor.name} to silence this warning)"
        )
    known = sorted([*profiles, *retired])
    raise UserError(
        f"unknown cluster {name!r}{did_you_mean(key, known)}; known clusters: "
        f"{', '.join(sorted(profiles))} (add your own in ~/.config/mnist-hpc/clusters.yaml)"
    )
