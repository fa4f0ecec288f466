"""Launch detection and the process group: torchrun, Slurm srun (one task per GPU), or one process.

An environment that looks half-distributed (WORLD_SIZE without RANK, say) is an error, never a
silent fallback to one process. The process group is always destroyed, on errors too.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass

from mnist_hpc.errors import UserError

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    launcher: str  # "single" | "torchrun" | "slurm"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(env, key) -> int:
    try:
        return int(env[key])
    except (KeyError, ValueError):
        raise UserError(f"distributed launch: ${key} must be an integer, got {env.get(key)!r}") from None


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list, via `scontrol show hostnames` (handles node[01-04])."""
    if "[" not in nodelist and "," not in nodelist:
        return nodelist
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise UserError(f"distributed launch: cannot expand the Slurm node list {nodelist!r} "
                        f"with scontrol ({e}); set MASTER_ADDR") from None
    if not out:
        raise UserError(f"distributed launch: empty Slurm node list {nodelist!r}")
    return out[0]


def detect(env=None) -> DistEnv:
    env = os.environ if env is None else env
    present = [k for k in TORCHRUN_VARS[:3] if k in env]
    if present:  # torchrun (or a hand-made equivalent): RANK, LOCAL_RANK, WORLD_SIZE all needed
        missing = [k for k in TORCHRUN_VARS if k not in env]
        if missing:
            raise UserError(f"distributed launch: {', '.join('$' + k for k in present)} set but "
                            f"{', '.join('$' + k for k in missing)} missing; launch with torchrun, "
                            f"or unset them for a single process")
        world, rank, local = _int(env, "WORLD_SIZE"), _int(env, "RANK"), _int(env, "LOCAL_RANK")
        if world < 1 or not 0 <= rank < world:
            raise UserError(f"distributed launch: RANK={rank} is not in [0, WORLD_SIZE={world})")
        return DistEnv("torchrun", rank, local, world, int(env.get("LOCAL_WORLD_SIZE", world)),
                       env["MASTER_ADDR"], _int(env, "MASTER_PORT"))
    ntasks = env.get("SLURM_STEP_NUM_TASKS")
    if ntasks and int(ntasks) > 1 and "SLURM_PROCID" in env:  # srun, one task per GPU
        world, rank = int(ntasks), _int(env, "SLURM_PROCID")
        local = int(env.get("SLURM_LOCALID", 0))
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        addr = env.get("MASTER_ADDR") or first_host(nodes)
        job = int(env.get("SLURM_JOB_ID", "0") or 0)
        port = int(env.get("MASTER_PORT") or 20000 + job % 20000)
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE", "").split("(")[0]
        local_world = int(per_node) if per_node.isdigit() else world
        return DistEnv("slurm", rank, local, world, local_world, addr, port)
    return DistEnv("single")


@contextmanager
def process_group(denv: DistEnv, device_type: str, timeout_s: float):
    """Initialise torch.distributed for ``denv`` (no-op for one process); always tear down."""
    if not denv.distributed:
        yield
        return
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR=denv.master_addr, MASTER_PORT=str(denv.master_port),
                      RANK=str(denv.rank), WORLD_SIZE=str(denv.world_size))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(denv.local_rank % max(1, torch.cuda.device_count()))
    try:
        dist.init_process_group(backend, init_method="env://", rank=denv.rank,
                                world_size=denv.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as e:  # noqa: BLE001 - rendezvous errors: DistNetworkError, RuntimeError, ...
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = ""
        if "address already in use" in text.lower() or "EADDRINUSE" in text:
            hint = f": port {denv.master_port} is in use; set MASTER_PORT to a free port"
        elif "timed out" in text.lower() or "timeout" in text.lower():
            hint = (f": no rendezvous with {denv.master_addr}:{denv.master_port} within "
                    f"{timeout_s:g} s (runtime.dist_timeout); is MASTER_ADDR reachable?")
        raise UserError(f"distributed launch failed (rank {denv.rank} of {denv.world_size}, "
                        f"{denv.launcher}){hint or ': ' + text[:200]}") from None
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(denv: DistEnv):
    if denv.distributed:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(denv: DistEnv, obj):
    """Rank 0's ``obj`` on every rank."""
    if not denv.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(denv: DistEnv, tensor):
    """Sum a tensor over ranks, in place; returns it."""
    if denv.distributed:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
