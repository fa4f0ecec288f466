"""Launch detection and the process group: torchrun-style variables (RANK, WORLD_SIZE, ...) or one process.

Only torchrun's variables are read here. A scheduler's own launcher (srun, one task per GPU)
reaches training through the same variables: the cluster layer derives them and the run entry
merges them over the environment (``TrainContext.launch_env``). An environment that looks
half-distributed (WORLD_SIZE without RANK, say) is an error, never a silent fallback to one
process. The process group is always destroyed, on errors too.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass

from mnist_hpc.errors import UserError

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    launcher: str  # "single", "torchrun", or the name of what set the variables ("slurm")
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


def detect(env=None, launcher: str = "torchrun") -> DistEnv:
    """The rank layout from torchrun-style variables in ``env`` (default: os.environ); one
    process when none is set. ``launcher`` names who set them (recorded in summary.json)."""
    env = os.environ if env is None else env
    present = [k for k in TORCHRUN_VARS[:3] if k in env]
    if not present:
        return DistEnv("single")
    # RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT are all needed
    missing = [k for k in TORCHRUN_VARS if k not in env]
    if missing:
        raise UserError(
            f"distributed launch: {', '.join('$' + k for k in present)} set but "
            f"{', '.join('$' + k for k in missing)} missing; launch with torchrun, "
            f"or unset them for a single process"
        )
    world, rank, local = _int(env, "WORLD_SIZE"), _int(env, "RANK"), _int(env, "LOCAL_RANK")
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"distributed launch: RANK={rank} is not in [0, WORLD_SIZE={world})")
    local_world = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world
    return DistEnv(launcher, rank, local, world, local_world, env["MASTER_ADDR"], _int(env, "MASTER_PORT"))


@contextmanager
def process_group(denv: DistEnv, device_type: str, timeout_s: float):
    """Initialise torch.distributed for ``denv`` (no-op for one process); always tear down."""
    if not denv.distributed:
        yield
        return
    import torch
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR=denv.master_addr,
        MASTER_PORT=str(denv.master_port),
        RANK=str(denv.rank),
        WORLD_SIZE=str(denv.world_size),
    )
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(denv.local_rank % max(1, torch.cuda.device_count()))
    try:
        dist.init_process_group(
            backend,
            init_method="env://",
            rank=denv.rank,
            world_size=denv.world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    except Exception as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = ""
        if "address already in use" in text.lower() or "EADDRINUSE" in text:
            hint = f": port {denv.master_port} is in use; set MASTER_PORT to a free port"
        elif "timed out" in text.lower() or "timeout" in text.lower():
            hint = (
                f": no rendezvous with {denv.master_addr}:{denv.master_port} within "
                f"{timeout_s:g} s (runtime.dist_timeout); is MASTER_ADDR reachable?"
            )
        raise UserError(
            f"distributed launch failed (rank {denv.rank} of {denv.world_size}, "
            f"{denv.launcher}){hint or ': ' + text[:200]}"
        ) from None
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
