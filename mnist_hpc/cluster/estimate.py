"""What a job or a sweep will cost, before anything is queued (``mnist-hpc estimate``, and the
same lines in ``submit --dry-run`` / ``sweep submit --dry-run``).

The per-run time comes from ONE measured figure: seconds per training step of the config's model
and batch, timed on this machine by a short probe (``training.probe``, stored and reused). No GPU
figures have been measured in this project's benchmarks/, so a figure for a cluster GPU is never
scaled: it is this machine's figure, printed as an estimate that says so. GPU-hours follow from the
estimated time and the GPUs asked for; RGU-hours from the RGU value of the GPU or MIG slice that the
profile cites from the Alliance wiki page "Allocations and compute scheduling" (none where the page
documents none). Torch-free: the probe's figure is handed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_hpc.cluster.profiles import Profile
from mnist_hpc.cluster.units import format_time, parse_time
from mnist_hpc.config.schema import Config

# training images of each dataset (their pages; config/datasets.py describes the same counts)
TRAIN_IMAGES = {
    "mnist": 60_000,
    "fashion": 60_000,
    "fashion-mnist": 60_000,
    "kmnist": 60_000,
    "qmnist": 60_000,
    "emnist-balanced": 112_800,
    "emnist-letters": 124_800,
    "emnist-digits": 240_000,
    "emnist-byclass": 697_932,
    "emnist-bymerge": 697_932,
}
SETUP_SECONDS = 120  # assumed, not measured: modules, virtualenv from the wheelhouse, data unpacking
MARGIN = 1.5  # the walltime asks for the estimate x this, plus the setup, rounded up to 5 minutes
FAR_ABOVE = 4.0  # a --time this many times the request waits longer in the queue for nothing


@dataclass(frozen=True)
class Probe:
    """One measured figure: seconds per training step of a model and batch on some device."""

    step_seconds: float
    device: str  # e.g. "cpu (2 threads)"
    source: str  # "probe just now", "stored probe of 2026-12-02 15:40", "given"


@dataclass
class Estimate:
    runs: int
    tasks: int
    pack: int
    run_seconds: float  # one run, estimated
    task_seconds: float  # one array task (pack runs one after another), estimated
    request_seconds: int  # the walltime to ask for
    gpus: float  # GPUs a task holds (a MIG slice: 1 slice)
    what: str  # "1 x a100", "1 MIG slice a100_1g.5gb", "CPU only"
    rgu: float | None  # per GPU or slice; None: not documented
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float:
        return self.tasks * self.task_seconds / 3600 * self.gpus

    @property
    def rgu_hours(self) -> float | None:
        return None if self.rgu is None else self.gpu_hours * self.rgu


def store_path() -> Path:
    """Where probes are kept: $XDG_CACHE_HOME/mnist-hpc/probes.json (~/.cache/...)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mnist-hpc" / "probes.json"


def probe_key(cfg: Config) -> str:
    """What a stored probe stands for, torch-free: the model section, the batch, the data's shape
    and this host (its name and cores)."""
    import hashlib
    import json
    import os
    import socket

    from mnist_hpc.config.datasets import MNIST_SHAPE, data_shape

    shape = data_shape(cfg.data) or MNIST_SHAPE
    text = json.dumps(
        {
            "model": cfg.model.to_dict(),
            "batch": cfg.data.batch_size,
            "shape": list(shape.input_shape),
            "classes": shape.num_classes,
            "host": socket.gethostname(),
            "cores": os.cpu_count(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_store() -> dict[str, Any]:
    import json

    try:
        stored = json.loads(store_path().read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def stored_probe(cfg: Config) -> Probe | None:
    """The probe stored for ``cfg`` on this host, or None (``mnist-hpc estimate`` measures one)."""
    s = read_store().get(probe_key(cfg))
    if not isinstance(s, dict):
        return None
    try:
        return Probe(float(s["step_seconds"]), str(s["device"]), f"stored probe of {s['when']}")
    except (KeyError, TypeError, ValueError):
        return None


def steps_per_epoch(cfg: Config) -> int:
    n = TRAIN_IMAGES.get(str(cfg.data.dataset).lower(), 60_000)
    if cfg.data.subset:
        n = min(n, int(cfg.data.subset))
    if cfg.data.val_split:
        n = int(n * (1 - cfg.data.val_split))
    return max(1, math.ceil(n / cfg.data.batch_size))


def _round_up(seconds: float, to: int = 300) -> int:
    return int(math.ceil(seconds / to) * to)


def _hours(h: float) -> str:
    return f"{h:.3f}" if h < 1 else f"{h:.2f}" if h < 100 else f"{h:,.0f}"


def estimate(
    cfgs: Iterable[Config],
    probe: Probe | list[Probe] | tuple[Probe, ...],
    profile: Profile,
    n_gpus: int,
    gpu_type: str | None,
    *,
    pack: int = 1,
    time_limit: str | None = None,
) -> Estimate:
    """The cost of running ``cfgs`` (one config, or every run of a sweep), ``pack`` per array task,
    each task holding ``n_gpus`` GPUs of ``gpu_type`` (a MIG slice name: one slice). ``probe``: one
    ``Probe`` for all, or one per config."""
    cfgs = list(cfgs)
    probes = list(probe) if isinstance(probe, (list, tuple)) else [probe] * len(cfgs)
    probe = probes[0]
    runs = len(cfgs)
    pack = max(1, min(pack, runs))
    tasks = -(-runs // pack)
    run_seconds = [
        c.train.epochs * steps_per_epoch(c) * p.step_seconds for c, p in zip(cfgs, probes, strict=False)
    ]
    longest_task = max(sum(run_seconds[i : i + pack]) for i in range(0, runs, pack))
    mean_run = sum(run_seconds) / runs
    request = _round_up(longest_task * MARGIN + SETUP_SECONDS)
    request = min(request, profile.max_seconds)
    slice_ = profile.mig.get(gpu_type) if gpu_type else None
    if n_gpus <= 0:
        what, gpus, rgu, rgu_from = "CPU only", 0.0, None, "no GPU: charged in core-years, not RGU"
    elif slice_ is not None:
        what, gpus, rgu = f"1 MIG slice {gpu_type}", 1.0, slice_.rgu
        rgu_from = (
            f"{rgu} RGU per {gpu_type} slice [Allocations and compute scheduling]"
            if rgu is not None
            else f"no RGU value documented for {gpu_type}"
        )
    else:
        kind = gpu_type or profile.gpu_type or "GPU"
        what, gpus = f"{n_gpus} x {kind} per task", float(n_gpus)
        rgu = profile.rgu_per_gpu if kind == profile.gpu_type else None
        rgu_from = (
            f"{rgu} RGU per {kind} [Allocations and compute scheduling]"
            if rgu is not None
            else f"no RGU value documented for {kind} on {profile.name}"
        )
    out = Estimate(runs, tasks, pack, mean_run, longest_task, request, gpus, what, rgu)
    where = (
        "this machine's figure, not scaled: no GPU figure is measured in benchmarks/, so a GPU "
        "run is assumed no slower than this"
        if n_gpus > 0
        else "this machine's figure"
    )
    out.lines = [
        f"estimate for {runs} run{'s' if runs != 1 else ''} on {profile.name} ({what}"
        + (
            f", {pack} runs per array task, {tasks} task{'s' if tasks != 1 else ''}"
            if pack > 1 or runs > 1
            else ""
        )
        + "):",
        f"  per run      ~{format_time(round(mean_run))} (estimate, training steps only: {cfgs[0].train.epochs} epochs x "
        f"{steps_per_epoch(cfgs[0])} steps x {probe.step_seconds * 1000:.1f} ms/step measured on "
        f"{probe.device}, {probe.source}"
        + (" (first run; each run its own)" if len(set(probes)) > 1 else "")
        + f"; {where})",
        f"  per task     ~{format_time(round(longest_task))} (estimate)",
        f"  walltime     {format_time(request)} to ask for (the estimate x {MARGIN} + {SETUP_SECONDS} s "
        "assumed for node setup, rounded up to 5 min)",
    ]
    if n_gpus > 0:
        rgu_text = (
            f"~{_hours(out.rgu_hours)} RGU-hours ({rgu_from})"
            if out.rgu_hours is not None
            else f"RGU-hours unknown ({rgu_from})"
        )
        out.lines.append(f"  GPU-hours    ~{_hours(out.gpu_hours)} (estimate, all tasks) · {rgu_text}")
    else:
        out.lines.append(f"  core-hours   see --cpus; {rgu_from}")
    if time_limit:
        asked = parse_time(time_limit)
        if asked < longest_task + SETUP_SECONDS:
            out.warnings.append(
                f"--time {time_limit} is below the estimated {format_time(round(longest_task + SETUP_SECONDS))} "
                "per task: the task would get its time-limit signal and be requeued (or die); "
                f"ask for {format_time(request)}"
            )
        elif asked > FAR_ABOVE * request:
            out.warnings.append(
                f"--time {time_limit} is far above the {format_time(request)} this needs: a long "
                "limit waits longer in the queue (backfill fits short jobs first); "
                f"ask for {format_time(request)}"
            )
    return out


# --------------------------------------------------------------------------- --gpus auto

# Assumptions of `--gpus auto`, printed with its choice (none of them is a measurement):
BYTES_PER_PARAM = 16  # fp32 weights + gradients + two optimizer moments (Adam's; SGD needs less)
ACTIVATION_BYTES_PER_PIXEL = 4 * 64  # fp32 activations of ~64 feature maps per input pixel, per image
# the most parameters a slice of G sevenths of a GPU is given (compute: a 1g slice is 1/7 of the GPU)
MIG_MAX_PARAMS = {1: 2_000_000, 2: 10_000_000, 3: 30_000_000}
_SLICE_RE = __import__("re").compile(r"(\d)g\.(\d+)gb$")


@dataclass(frozen=True)
class GpuChoice:
    gpus: str  # what --gpus would have said: "0", "1", "a100_1g.5gb:1"
    why: str  # one line: what was chosen, from which figures and assumptions


def memory_estimate(cfg: Config) -> float | None:
    """Bytes of GPU memory a run needs, estimated (None where the model's size is unknown)."""
    from mnist_hpc.config.datasets import MNIST_SHAPE, data_shape

    shape = data_shape(cfg.data) or MNIST_SHAPE
    try:
        params = cfg.model.param_count(shape)
    except Exception:  # a custom or torchvision model: no torch-free count
        params = None
    if params is None:
        return None
    c, h, w = shape.input_shape
    needed: int = params * BYTES_PER_PARAM + cfg.data.batch_size * c * h * w * ACTIVATION_BYTES_PER_PIXEL
    return needed


def _params(cfg: Config) -> int | None:
    from mnist_hpc.config.datasets import MNIST_SHAPE, data_shape

    try:
        return cfg.model.param_count(data_shape(cfg.data) or MNIST_SHAPE)
    except Exception:
        return None


def choose_gpus(
    cfgs: Iterable[Config],
    profile: Profile,
    *,
    time_limit: str,
    nodes: int = 1,
    tasks: int | None = None,
    probe: Probe | None = None,
    pack: int = 1,
) -> GpuChoice:
    """``--gpus auto``: the cheapest request the runs' estimated compute and memory fit. DDP (several
    nodes or tasks) and models of unknown or large size get a whole GPU; the CPU where the cluster's
    CPU jobs are not whole nodes and this machine's probe (a CPU figure) says the task fits in the
    time limit with margin; else the MIG slice of fewest RGU whose memory and share of the GPU fit."""
    cfgs = list(cfgs)
    if not profile.gpus_per_node:
        return GpuChoice("0", f"CPU: cluster {profile.name} has no GPUs")
    whole = str(min(profile.gpu_counts or (1,)))
    if nodes > 1 or (tasks or 1) > 1:
        return GpuChoice(
            whole,
            f"{whole} whole GPU(s) per node: DDP ({nodes} node(s), {tasks or 1} task(s)) "
            "takes one whole GPU per process",
        )
    sizes = [_params(c) for c in cfgs]
    known = [s for s in sizes if s is not None]
    if len(known) < len(sizes):
        return GpuChoice(
            whole,
            f"{whole} whole GPU: the model's size is unknown before it is built "
            "(custom or torchvision), so no slice is assumed to fit",
        )
    params = max(known)
    # every model's size is known, so is every run's memory (the same count, from the same shape)
    mem = max(m for m in (memory_estimate(c) for c in cfgs) if m is not None)
    mem_text = f"{params:,} parameters, ~{mem / 2**30:.2f} GiB estimated GPU memory"
    if probe is not None and probe.device.startswith("cpu") and not profile.cpu_node_cores:
        steps = max(
            sum(c.train.epochs * steps_per_epoch(c) for c in cfgs[i : i + pack])
            for i in range(0, len(cfgs), max(pack, 1))
        )
        task = steps * probe.step_seconds
        if task * MARGIN + SETUP_SECONDS <= parse_time(time_limit):
            return GpuChoice(
                "0",
                f"CPU: {mem_text}; a task is estimated at {format_time(round(task))} on "
                f"{probe.device} ({probe.source}), within --time {time_limit} with margin "
                "(no GPU is charged); pass --gpus 1 for a GPU",
            )
    fits = []
    for name, s in profile.mig.items():
        m = _SLICE_RE.search(name)
        if (
            not m or int(m.group(1)) not in MIG_MAX_PARAMS
        ):  # 4g slices: "not available" [Allocations and compute scheduling]
            continue
        sevenths, gb = int(m.group(1)), int(m.group(2))
        if params <= MIG_MAX_PARAMS[sevenths] and mem <= gb * 2**30 * 0.8:
            fits.append((s.rgu if s.rgu is not None else 99.0, len(name), name))
    if fits:
        rgu, _, name = min(fits)
        cost = (
            f"{rgu} RGU against {profile.rgu_per_gpu} for a whole GPU"
            if profile.rgu_per_gpu
            else "a fraction of a GPU"
        )
        return GpuChoice(
            f"{name}:1",
            f"MIG slice {name}: {mem_text} fit it ({cost}) [Allocations and compute "
            "scheduling]; assumed: 16 bytes a parameter, 256 bytes a pixel per image, "
            f"at most {MIG_MAX_PARAMS[int(_SLICE_RE.search(name).group(1))]:,} "
            "parameters for its share",
        )
    why = "no MIG slices on this cluster" if not profile.mig else "too large for every MIG slice"
    return GpuChoice(whole, f"{whole} whole GPU: {mem_text}; {why}")


# --------------------------------------------------------------------------- --pack auto


def choose_pack(
    cfgs: Iterable[Config], probes: Probe | list[Probe] | tuple[Probe, ...], task_time: str
) -> tuple[int, str]:
    """``--pack auto``: as many runs per array task as fit ``task_time`` (default an hour: arrays
    suit tasks of about an hour or more [Job arrays]) with the walltime's margin; at least 1."""
    cfgs = list(cfgs)
    probes = list(probes) if isinstance(probes, (list, tuple)) else [probes] * len(cfgs)
    run = max(
        c.train.epochs * steps_per_epoch(c) * p.step_seconds for c, p in zip(cfgs, probes, strict=False)
    )
    room = parse_time(task_time) - SETUP_SECONDS
    k = max(1, min(len(cfgs), int(room // max(run * MARGIN, 1e-9)))) if room > 0 else 1
    n = -(-len(cfgs) // k)
    why = (
        f"--pack auto: {k} run{'s' if k != 1 else ''} per array task, {n} task{'s' if n != 1 else ''} (a run "
        f"~{format_time(round(run))} estimated from {probes[0].device}, {probes[0].source}; x {MARGIN} each, "
        f"+ {SETUP_SECONDS} s setup, within --task-time {task_time})"
    )
    return k, why
