"""Cluster profiles: what a job may ask for on each cluster, kept as data.

The built-in profiles live in ``clusters.yaml`` next to this module. Users add or override
profiles in ``~/.config/mnist-hpc/clusters.yaml`` (``$XDG_CONFIG_HOME`` respected) or in the
file named by ``$MNIST_HPC_CLUSTERS``; both are validated as strictly as experiment configs:
an unknown key is an error with a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

from mnist_hpc.config import did_you_mean, read_yaml
from mnist_hpc.errors import ConfigError, UserError

GPU_REQUEST_STYLES = ("gpus-per-node", "gres")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    gpu_type: Optional[str] = None  # default GPU specifier; None = untyped requests
    gpu_types: tuple = ()  # specifiers accepted by --gpus TYPE:N
    gpu_request: str = "gres"  # gpus-per-node | gres
    gpus_per_node: int = 0
    cpus_per_gpu: int = 1
    mem_per_gpu: Optional[str] = None  # None = no --mem for GPU jobs
    cpus_cpu_job: int = 1
    mem_cpu_job: Optional[str] = None
    max_time: str = "1-00:00:00"
    max_array_size: int = 1001
    modules: tuple = ()
    gpu_modules: tuple = ()
    partition: Optional[str] = None
    internet: bool = True
    account_required: bool = False

    @property
    def max_seconds(self) -> int:
        return parse_time(self.max_time)

    def gpu_directive(self, count: int, gpu_type: Optional[str] = None) -> Optional[str]:
        """The sbatch option asking for ``count`` GPUs per node, e.g. ``--gpus-per-node=h100:2``."""
        if count <= 0:
            return None
        kind = gpu_type or self.gpu_type
        if self.gpu_request == "gpus-per-node":
            return f"--gpus-per-node={kind}:{count}" if kind else f"--gpus-per-node={count}"
        return f"--gres=gpu:{kind}:{count}" if kind else f"--gres=gpu:{count}"


_FIELDS = {f.name: f for f in dataclasses.fields(Profile) if f.name != "name"}
_LISTS = ("gpu_types", "modules", "gpu_modules")
_OPTIONAL_STR = ("gpu_type", "mem_per_gpu", "mem_cpu_job", "partition")
_INTS = ("gpus_per_node", "cpus_per_gpu", "cpus_cpu_job", "max_array_size")
_BOOLS = ("internet", "account_required")
_MEM_RE = re.compile(r"^[0-9]+[KMGT]?$")


# --------------------------------------------------------------------------- time strings

_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: str) -> int:
    """Seconds in a Slurm time limit: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S."""
    m = _TIME_RE.match(str(text).strip())
    if not m:
        raise UserError(f"time {text!r}: expected a Slurm time such as 30 (minutes), 0:30:00, "
                        "12:00:00 or 2-00:00:00")
    days, a, b, c = m.groups()
    a, b, c = int(a), int(b) if b else None, int(c) if c else None
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = int(days) * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # M:S
        seconds = a * 60 + b
    else:  # M
        seconds = a * 60
    if seconds <= 0:
        raise UserError(f"time {text!r}: must be longer than zero")
    return seconds


def format_time(seconds: int) -> str:
    """A Slurm time limit: H:MM:SS, or D-HH:MM:SS from one day on."""
    days, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h}:{m:02d}:{s:02d}"


def check_mem(text: str, what: str = "--mem") -> str:
    if not _MEM_RE.match(str(text)):
        raise UserError(f"{what} {text!r}: expected a size such as 4G, 500M or 16000 (MB)")
    return str(text)


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


def _check_entry(name: str, entry, source: str) -> dict:
    """Validate one raw profile mapping (before ``extends:`` is resolved)."""
    where = f"{source}: profiles.{name}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping of profile settings, got {entry!r}")
    allowed = ["extends", *_FIELDS]
    for key, value in entry.items():
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key{did_you_mean(key, allowed)}; "
                              f"expected one of {', '.join(allowed)}")
        bad = None
        if key in _LISTS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                bad = "a list of strings"
        elif key in _OPTIONAL_STR:
            if value is not None and not isinstance(value, str):
                bad = "a string or null"
            elif key.startswith("mem") and value is not None and not _MEM_RE.match(value):
                bad = "a memory size such as 32G (or null)"
        elif key in _INTS:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                bad = "an integer >= 0"
        elif key in _BOOLS:
            if not isinstance(value, bool):
                bad = "true or false"
        elif key == "gpu_request":
            if value not in GPU_REQUEST_STYLES:
                bad = f"one of {', '.join(GPU_REQUEST_STYLES)}"
        elif key == "max_time":
            try:
                parse_time(value)
            except UserError:
                bad = "a Slurm time such as 7-00:00:00"
        elif not isinstance(value, str):  # description, extends
            bad = "a string"
        if bad:
            raise ConfigError(f"{where}.{key}: expected {bad}, got {value!r}")
    return entry


def _read_file(text_source: str, data, entries: dict, retired: dict, builtin: bool):
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError(f"{text_source}: expected a mapping with 'profiles:'")
    allowed = ["profiles", "retired"] if builtin else ["profiles"]
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{text_source}: {key}: unknown key{did_you_mean(key, allowed)}; "
                              f"expected {' or '.join(allowed)}")
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{text_source}: profiles: expected a mapping of profile names")
    for name, entry in profiles.items():
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
            raise ConfigError(f"{text_source}: profiles: {name!r} is not a valid profile name "
                              "(letters, digits, '.', '_' and '-')")
        entries[name] = (_check_entry(name, entry, text_source), text_source)
    retired.update(data.get("retired") or {})


def _resolve(name: str, entries: dict, chain: tuple = ()) -> dict:
    entry, source = entries[name]
    parent = entry.get("extends")
    if parent is None:
        return {k: v for k, v in entry.items() if k != "extends"}
    if parent in chain or parent == name:
        raise ConfigError(f"{source}: profiles.{name}.extends: loop through {' -> '.join((*chain, name, parent))}")
    if parent not in entries:
        raise ConfigError(f"{source}: profiles.{name}.extends: unknown profile "
                          f"{parent!r}{did_you_mean(parent, entries)}")
    merged = _resolve(parent, entries, (*chain, name))
    merged.update({k: v for k, v in entry.items() if k != "extends"})
    return merged


def load_profiles() -> tuple[dict[str, Profile], dict[str, dict]]:
    """All profiles (built-in, then the user's files) and the retired-name table."""
    entries: dict = {}
    retired: dict = {}
    builtin = resources.files("mnist_hpc.cluster").joinpath("clusters.yaml")
    with resources.as_file(builtin) as path:
        _read_file(f"{path}", read_yaml(Path(path)), entries, retired, builtin=True)
    for path in _user_files():
        _read_file(str(path), read_yaml(path), entries, retired, builtin=False)
    profiles = {}
    for name in entries:
        values = _resolve(name, entries)
        for key in _LISTS:
            if key in values:
                values[key] = tuple(values[key])
        profiles[name] = Profile(name=name, **values)
    return profiles, retired


def get_profile(name: str) -> tuple[Profile, Optional[str]]:
    """The profile called ``name`` and, for a retired cluster's name, a warning to show."""
    profiles, retired = load_profiles()
    key = name.strip().lower()
    if key in profiles:
        return profiles[key], None
    if key in retired:
        old = retired[key]
        successor = profiles[old["successor"]]
        return successor, (f"{old['note']}; using its successor {successor.name} instead "
                           f"(pass --cluster {successor.name} to silence this warning)")
    known = sorted([*profiles, *retired])
    raise UserError(f"unknown cluster {name!r}{did_you_mean(key, known)}; known clusters: "
                    f"{', '.join(sorted(profiles))} (add your own in ~/.config/mnist-hpc/clusters.yaml)")
