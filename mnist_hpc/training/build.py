"""Building a training run's parts from a config: host set-up (threads, device, seeds), the one
precision policy, the optimizer and learning-rate schedule, and ``build_components`` — the model
(DDP-wrapped, compiled), optimizer, scheduler, AMP scaler and batch loader that ``mnist-hpc train``
trains with. The benchmarks build through the same function, so they measure what train runs.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

from mnist_hpc.config.validate import check_device
from mnist_hpc.errors import ConfigError, UserError
from mnist_hpc.training import data as datamod
from mnist_hpc.training.distributed import DistEnv
from mnist_hpc.training.models import build_model

# --------------------------------------------------------------------------- host set-up


def cgroup_cpu_limit(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> float | None:
    """The CPUs a cgroup quota lets this process use (cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; the smallest along the path up to the root),
    or None where no quota is set or none can be read (not Linux)."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = ([*line.split(":", 2), "", ""])[:3]
        if controllers == "":  # v2: one unified tree
            folders = [Path(root)]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own tree
            folders = [Path(root) / controllers, Path(root) / "cpu", Path(root) / "cpu,cpuacct"]
        else:
            continue
        for base in folders:
            here = base / path.lstrip("/")
            while True:
                limits.append(_quota(here, v2=controllers == ""))
                if here == base or base not in here.parents:
                    break
                here = here.parent
    found = [q for q in limits if q]
    return min(found) if found else None


def _quota(folder: Path, v2: bool) -> float | None:
    try:
        if v2:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
        else:
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period) if int(period) > 0 and int(quota) > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, lowered by a cgroup CPU quota (a
    container or a Slurm job's cgroup), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def cpu_threads(
    requested: int | None = None,
    cpus_per_task: int | None = None,
    local_world: int = 1,
    warn: Callable[[str], None] | None = None,
    usable: int | None = None,
) -> int:
    """runtime.threads, else the scheduler's CPUs per task, else the affinity mask split over
    the ranks of this node; never more than the CPUs this process may use (``usable_cpus``):
    more threads than cores slow training several times over. ``warn`` hears when a request
    was capped, and where the request came from."""
    usable = usable or usable_cpus()
    if requested:
        asked, source = int(requested), f"runtime.threads: {requested}"
    elif cpus_per_task:
        asked, source = max(1, int(cpus_per_task)), f"$SLURM_CPUS_PER_TASK={cpus_per_task}"
    else:
        return max(1, usable // max(1, local_world))
    if asked > usable:
        if warn is not None:
            warn(
                f"warning: {source} asks for {asked} CPU threads, but this process may use "
                f"{usable} CPU(s) (affinity mask, cgroup quota); using {usable} (more threads than "
                f"cores slow training); set runtime.threads: {usable} or less to silence this"
            )
        return usable
    return asked


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_BLOCKS_UP_TO = 32 * 2**20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit systems
_allocator_tuned: bool | None = None


def keep_freed_tensor_memory() -> bool:
    """Let glibc reuse the memory of freed CPU tensors instead of returning it to the system.

    A CPU training step allocates and frees the same few activation buffers (~13 MB at batch 256
    for the fast995 net) every step. glibc serves blocks that large with mmap and unmaps them on
    free, so each step page-faults its buffers in again; glibc raises that threshold only after a
    larger block is freed, so a run that never evaluates in between keeps paying (measured: 12.9
    vs 10.3 s per fast995 epoch on 2 cores). Fixing the thresholds (blocks up to 32 MiB from the
    heap; the heap trimmed above 256 MiB free) costs at most that much retained memory. Done once
    per process, only with glibc, and not when the user set glibc's own MALLOC_*_ variables.
    Returns whether the thresholds are set."""
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if not any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
            try:
                import ctypes
                import platform

                if platform.libc_ver()[0] == "glibc":
                    libc = ctypes.CDLL(None)
                    _allocator_tuned = bool(
                        libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BLOCKS_UP_TO)
                        and libc.mallopt(_M_TRIM_THRESHOLD, 8 * KEEP_BLOCKS_UP_TO)
                    )
            except (OSError, AttributeError):
                pass
    return _allocator_tuned


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(name: str, denv: DistEnv | None = None, what: str = "runtime.device") -> torch.device:
    """runtime.device as a torch.device; ``auto`` prefers CUDA (this rank's GPU), then MPS, then CPU.

    Under DDP (``denv``) each rank takes the GPU of its local rank: an explicit index (cuda:N) is
    refused, and so is a node whose ranks would share a GPU (``rank_gpu``). ``what``: how the
    user spelt the setting (``--device``, ``device=``), for the messages."""
    name = check_device(name, what)  # the one validator of device strings
    denv = denv or DistEnv("single")
    if name == "auto":
        if torch.cuda.is_available():
            return rank_gpu(denv)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{what}={name}: CUDA is not available on this machine (use {what}=auto or cpu)")
        if dev.index is not None and denv.distributed:
            raise ConfigError(
                f"{what}={name}: an explicit GPU index cannot be combined with a "
                f"one-process-per-GPU launch ({denv.world_size} ranks, each on the GPU of its "
                f"local rank); use {what}=cuda or auto"
            )
        if dev.index is None:
            dev = rank_gpu(denv)
    if dev.type == "mps" and not _mps_available():
        raise UserError(f"{what}={name}: MPS is not available on this machine (use {what}=auto or cpu)")
    return dev


def _visible_list() -> list[str]:
    """The entries of $CUDA_VISIBLE_DEVICES (GPU indexes or GPU-/MIG- UUIDs); [] when unset."""
    return [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]


def _mig_visible(count: int) -> bool:
    return any(e.startswith("MIG-") for e in _visible_list()) or any(
        " MIG " in f"{torch.cuda.get_device_name(i)} " for i in range(count)
    )


def rank_gpu(denv: DistEnv) -> torch.device:
    """GPU ``local_rank`` of this node; under DDP refused (one line) where ranks would share one:
    more ranks on the node than visible GPUs (a process sees a single MIG slice, however many
    were allocated), or MIG slices at all (MIG is for single-GPU jobs only). NCCL would refuse
    duplicate GPUs later, with a traceback; an explicit rule now says why."""
    count = torch.cuda.device_count()
    if not denv.distributed:
        return torch.device("cuda", 0)
    mig = _mig_visible(count)
    # a scheduler that binds one GPU to each task (srun --gpus-per-task) shows every rank one
    # device of its own, named alone in $CUDA_VISIBLE_DEVICES; torchrun's ranks share one list
    own_gpu = count == 1 and len(_visible_list()) == 1 and denv.launcher not in ("torchrun", "single")
    if denv.local_world_size > count and not own_gpu:
        raise UserError(
            f"{denv.local_world_size} ranks on this node but {count} visible GPU(s)"
            f"{' (MIG slices: a process sees only one)' if mig else ''}: ranks would share a GPU; "
            f"start at most {count} rank(s) per node, one per GPU"
        )
    if mig:
        raise UserError(
            f"MIG slices cannot be used for multi-GPU training ({denv.world_size} ranks); "
            f"use whole GPUs, or one MIG slice in a single-process run"
        )
    return torch.device("cuda", denv.local_rank % count)


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(on: bool) -> None:
    """Bit-reproducible kernels (``on``), or cuDNN autotuning for speed."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if on or torch.are_deterministic_algorithms_enabled():
        # only when the flag changes: it also sets torch._inductor's, importing the whole compiler
        # stack (3.2 of a 2-core run's 5.4 s start-up, for a flag that is off by default)
        torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on


# --------------------------------------------------------------------------- precision


@dataclass(frozen=True)
class Precision:
    """train.amp on a device: the autocast context and the gradient scaler it needs."""

    amp: str  # "none" | "bf16" | "fp16"
    device_type: str

    @property
    def name(self) -> str:
        """What summary.json calls it: fp32, bf16 or fp16."""
        return "fp32" if self.amp == "none" else self.amp

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)

    def autocast(self) -> AbstractContextManager:
        dtype = self.dtype
        return torch.autocast(self.device_type, dtype=dtype) if dtype is not None else nullcontext()

    def grad_scaler(self):
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        return torch.amp.GradScaler("cuda") if self.amp == "fp16" else None


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: a CUDA GPU that supports it (Ampere and
    newer), or a CPU whose oneDNN has bf16 kernels (AVX512-BF16, AMX). Elsewhere bf16 autocast
    is emulated and slower than fp32."""
    if device.type == "cuda":  # not torch.cuda.is_bf16_supported(): it counts emulation (V100, T4) as support
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a torch without this probe: do not guess
            return False
    return False


def precision_policy(amp: str, device: torch.device, *, deterministic: bool = False) -> Precision:
    """The one place that sets numeric policy, for ``train`` and the benchmarks alike: kernel
    determinism / cuDNN autotuning, TF32 tensor cores for fp32 matmuls and convolutions on CUDA
    (Ampere and newer; bit-reproducible too), and the autocast dtype of ``train.amp`` (``auto``
    resolves here: bf16 where ``native_bf16``, else none)."""
    if amp == "auto":
        amp = "bf16" if native_bf16(device) else "none"
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.amp=fp16 needs CUDA (device is {device.type}); use bf16")
    set_deterministic(deterministic)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Precision(amp, device.type)


def setup_host(
    device: str = "auto",
    *,
    threads: int | None = None,
    cpus: int | None = None,
    denv: DistEnv | None = None,
    amp: str = "none",
    deterministic: bool = False,
    warn: Callable[[str], None] | None = None,
    what: str = "runtime.device",
) -> tuple[torch.device, Precision]:
    """Ready this process for torch work, the same way for ``train``, ``evaluate`` and the
    benchmarks: the device (``pick_device``), the CPU threads (``cpu_threads``: ``threads``, else the
    scheduler's ``cpus``, split over this node's ranks of ``denv``), freed-memory reuse
    (``keep_freed_tensor_memory``) and the numeric policy (``precision_policy``)."""
    dev = pick_device(device, denv, what=what)
    local_world = denv.local_world_size if denv is not None else 1
    torch.set_num_threads(cpu_threads(threads, cpus, local_world, warn=warn))
    keep_freed_tensor_memory()
    return dev, precision_policy(amp, dev, deterministic=deterministic)


# --------------------------------------------------------------------------- optimizer, schedule


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=o.lr,
            momentum=o.momentum,
            nesterov=o.nesterov and o.momentum > 0,
            weight_decay=o.weight_decay,
        )
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adadelta":
        return torch.optim.Adadelta(params, lr=o.lr, weight_decay=o.weight_decay)
    raise ConfigError(f"optim.name: unknown optimizer {o.name!r}")


def lr_factor(cfg, step: int, steps_per_epoch: int) -> float:
    """Multiplier of optim.lr at optimizer step ``step`` (0-based)."""
    o = cfg.optim
    total = max(1, cfg.train.epochs * steps_per_epoch)
    if o.schedule == "onecycle":
        peak = max(1, int(o.pct_start * total))
        if step < peak:
            return 0.04 + 0.96 * step / peak  # from lr/25 up to lr
        return max(0.0, (total - step) / max(1, total - peak))  # linearly down to 0
    warm = o.warmup_epochs * steps_per_epoch
    factor = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
    if o.schedule == "step":
        factor *= o.gamma ** ((step // steps_per_epoch) // o.step_size)
    elif o.schedule == "cosine":
        factor *= 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return factor


def make_scheduler(cfg, optimizer, steps_per_epoch: int):
    """optim.schedule as a per-step LambdaLR over ``lr_factor``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, steps_per_epoch))


# --------------------------------------------------------------------------- the components


@dataclass
class Components:
    """What a training step needs, built the way ``mnist-hpc train`` builds it."""

    raw_model: torch.nn.Module  # the module itself: state dicts, parameter counts, evaluation
    ddp_model: torch.nn.Module  # raw_model, DDP-wrapped under DDP (for no_sync)
    model: torch.nn.Module  # ddp_model, compiled with train.compile: what the step calls
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None  # fp16 only
    precision: Precision
    loader: datamod.ResidentLoader  # this rank's batches
    denv: DistEnv

    @property
    def autocast(self) -> Callable[[], AbstractContextManager]:
        """A factory of the autocast context (a no-op context in fp32)."""
        return self.precision.autocast


def build_components(
    cfg,
    device,
    denv: DistEnv | None = None,
    train_x=None,
    train_y=None,
    *,
    mean: float,
    std: float,
    precision: Precision | None = None,
    make_model: Callable[[], torch.nn.Module] | None = None,
) -> Components:
    """Model, optimizer, schedule, scaler and loader for ``cfg`` on ``device``; ``train_x`` (uint8
    N×28×28) and ``train_y`` are the training tensors already on the device. Seed first
    (``seed_everything``) for reproducible initial weights. ``make_model``: builds the network
    (training/run.py passes the run's checked ``PreparedModel.build``); default: ``cfg.model``."""
    denv = denv or DistEnv("single")
    precision = precision or precision_policy(cfg.train.amp, device, deterministic=cfg.runtime.deterministic)
    loader = datamod.ResidentLoader(
        train_x,
        train_y,
        batch_size=cfg.data.batch_size,
        mean=mean,
        std=std,
        seed=cfg.experiment.seed,
        augment_cfg=cfg.data.augment,
        rank=denv.rank,
        world_size=denv.world_size,
        channels_last=cfg.runtime.channels_last,
    )
    if len(loader) == 0:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} leaves no full step over {len(train_x)} training images"
        )
    raw = (make_model() if make_model else build_model(cfg.model)).to(device)
    if cfg.runtime.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    ddp = raw
    if denv.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(raw, device_ids=[device.index] if device.type == "cuda" else None)
    # torch.compile of a module returns an OptimizedModule (a Module); its stub says only Callable
    model = cast(torch.nn.Module, torch.compile(ddp)) if cfg.train.compile else ddp
    optimizer = make_optimizer(cfg, raw.parameters())
    return Components(
        raw_model=raw,
        ddp_model=ddp,
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(cfg, optimizer, len(loader)),
        scaler=precision.grad_scaler(),
        precision=precision,
        loader=loader,
        denv=denv,
    )
