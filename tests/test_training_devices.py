"""Device rules under DDP, with CUDA mocked (monkeypatched torch.cuda counts and names): every
rank takes the GPU of its local rank; an explicit index (cuda:N) is refused; so is a node whose
ranks would share a GPU (more ranks than visible GPUs, MIG slices)."""

from __future__ import annotations

import pytest
import torch

from mnist_hpc.errors import ConfigError, UserError
from mnist_hpc.training.build import pick_device
from mnist_hpc.training.distributed import DistEnv


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(count, name, visible)``: pretend this process sees ``count`` GPUs called ``name``,
    with $CUDA_VISIBLE_DEVICES ``visible`` (None: unset)."""

    def mock(count, name="NVIDIA H100 80GB HBM3", visible=None):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)

    return mock


def rank(local_rank, local_world=2, world=None, launcher="torchrun"):
    world = world or local_world
    return DistEnv(
        launcher, rank=local_rank, local_rank=local_rank, world_size=world, local_world_size=local_world
    )


def test_each_rank_takes_the_gpu_of_its_local_rank(gpus):
    gpus(4)
    assert [pick_device(d, rank(r, 4, world=8)) for r in range(4) for d in ("auto", "cuda")] == [
        torch.device("cuda", r) for r in range(4) for _ in range(2)
    ]
    assert pick_device("cuda:3") == torch.device("cuda", 3)  # one process: the index is honoured
    assert pick_device("auto") == torch.device("cuda", 0)


def test_an_explicit_gpu_index_is_refused_under_ddp(gpus):
    gpus(4)
    with pytest.raises(ConfigError) as e:
        pick_device("cuda:1", rank(1))
    assert str(e.value) == (
        "runtime.device=cuda:1: an explicit GPU index cannot be combined with a "
        "one-process-per-GPU launch (2 ranks, each on the GPU of its local rank); "
        "use runtime.device=cuda or auto"
    )


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_more_ranks_than_visible_gpus_is_refused(gpus, device):
    gpus(1, visible="0")  # torchrun --nproc_per_node 2 on a one-GPU machine
    with pytest.raises(
        UserError,
        match=r"^2 ranks on this node but 1 visible GPU\(s\): ranks would share a GPU; "
        r"start at most 1 rank\(s\) per node, one per GPU$",
    ):
        pick_device(device, rank(1))


def test_mig_slices_are_refused_for_multi_gpu_runs(gpus):
    mig = "NVIDIA A100-SXM4-40GB MIG 1g.5gb"
    gpus(1, mig, visible="MIG-1a2b,MIG-3c4d")  # --gpus a100_1g.5gb:2: each process sees one slice
    for r in (0, 1):
        with pytest.raises(
            UserError,
            match=r"^2 ranks on this node but 1 visible GPU\(s\) \(MIG slices: "
            r"a process sees only one\)",
        ):
            pick_device("auto", rank(r, launcher="slurm"))
    gpus(1, mig, visible="MIG-3c4d")  # srun --gpus-per-task: a slice of its own per task
    with pytest.raises(UserError, match=r"^MIG slices cannot be used for multi-GPU training"):
        pick_device("cuda", rank(1, launcher="slurm"))
    assert pick_device("auto") == torch.device("cuda", 0)  # one process on one slice is fine


def test_a_gpu_bound_to_each_task_is_that_ranks_own(gpus):
    gpus(1, visible="3")  # srun --gpus-per-task=1: task 1 sees only its GPU, as cuda:0
    assert pick_device("auto", rank(1, launcher="slurm")) == torch.device("cuda", 0)


def test_train_refuses_an_indexed_device_under_ddp_in_one_line(
    cli, tiny_config, synth_root, gpus, monkeypatch
):
    gpus(2)
    for k, v in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }.items():
        monkeypatch.setenv(k, v)
    r = cli(
        "train",
        tiny_config,
        "--data-dir",
        synth_root,
        "--set",
        "runtime.device=cuda:1",
        "--set",
        "runtime.dist_timeout=5",
    )
    assert r.code == 2, r
    assert r.err.strip().splitlines() == [
        "error: runtime.device=cuda:1: an explicit GPU index cannot be "
        "combined with a one-process-per-GPU launch (2 ranks, each on the GPU "
        "of its local rank); use runtime.device=cuda or auto"
    ], r
