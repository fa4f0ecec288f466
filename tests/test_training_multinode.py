"""Multi-node runs simulated on one machine (gloo, CPU): 4 ranks as 2 "nodes" of 2 ranks, each
node with its own data folder (as each node of a Slurm job has its own $SLURM_TMPDIR). Each
folder is unpacked exactly once, by that node's local rank 0, and no rank reads a half-written
file; the misclassified plot's "of N" counts the mistakes of every rank's shard."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import ClassVar

import pytest

from tests.ddp_support import _free_port

# several gloo processes training for real: tens of seconds each on 2 cores
pytestmark = pytest.mark.slow

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _slow_unpacker(source_raw: Path, log: Path):
    """A stand-in for torchvision's dataset class: "unpacks" by copying the synthetic files in two
    halves a second apart (a reader in between sees truncated files), and logs every unpack."""

    class SlowUnpack:
        resources: ClassVar[list] = []  # no archives to checksum

        def __init__(self, root, train=True, download=True, **_):
            with open(log, "a") as f:  # one short O_APPEND write per line: safe across processes
                f.write(f"{os.getpid()} {root}\n")
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            blobs = {name: (source_raw / name).read_bytes() for name in RAW_FILES}
            for name, blob in blobs.items():
                (raw / name).write_bytes(blob[: len(blob) // 2])
            time.sleep(1.0)
            for name, blob in blobs.items():
                with open(raw / name, "ab") as f:
                    f.write(blob[len(blob) // 2 :])

    return SlowUnpack


def _rank(rank, world, local_world, port, data_dir, out_dir, extra):
    """One rank of a ``world``-rank run with ``local_world`` ranks per node, reading ``data_dir``."""
    from mnist_hpc.config import config_from_dict
    from mnist_hpc.training import data as datamod
    from mnist_hpc.training.context import TrainContext
    from mnist_hpc.training.run import run_training

    if "unpack_from" in extra:
        datamod._tv_class = lambda spec: _slow_unpacker(Path(extra["unpack_from"]), Path(extra["unpack_log"]))
    if "mistakes_file" in extra and rank == 0:
        from mnist_hpc.runs import plots

        real = plots.misclassified_grid

        def record(images, true, pred, probs, names, path, **kw):
            Path(extra["mistakes_file"]).write_text(
                json.dumps({"shown": len(true), "total": kw.get("total")})
            )
            return real(images, true, pred, probs, names, path, **kw)

        plots.misclassified_grid = record
    cfg = config_from_dict(
        {
            "experiment": {"name": "nodes", "seed": 0, "output_dir": out_dir},
            "data": {
                "dataset": "mnist",
                "val_split": 0.2,
                "batch_size": 64,
                "eval_batch_size": 256,
                "subset": extra.get("subset", 256),
            },
            "model": {"name": "mlp", "hidden": [32]},
            "optim": {"name": "sgd", "lr": 0.05},
            "train": {"epochs": 1},
            "runtime": {"threads": 1, "dist_timeout": 60},
        }
    )
    launch = {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank % local_world),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(local_world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    run_training(
        cfg,
        ctx=TrainContext(launch_env=launch, launcher="slurm", run_name_suffix="job1", offline=True),
        data_dir=data_dir,
        progress=False,
        echo=lambda m: None,
    )


def run_ranks(world, local_world, data_dirs, out_dir, extra, timeout=240):
    port, spawn = _free_port(), multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(
            target=_rank,
            args=(r, world, local_world, port, str(data_dirs[r // local_world]), str(out_dir), extra),
        )
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
    return [p.exitcode for p in procs]


def test_each_node_unpacks_its_own_data_folder_once(synth_root, tmp_path, monkeypatch):
    for k in (
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "MNIST_HPC_DATA_DIR",
    ):
        monkeypatch.delenv(k, raising=False)
    nodes = [tmp_path / "node0-tmpdir", tmp_path / "node1-tmpdir"]  # empty: nothing unpacked yet
    log = tmp_path / "unpacks.log"
    log.touch()
    codes = run_ranks(
        4,
        2,
        nodes,
        tmp_path / "runs",
        {"unpack_from": str(synth_root / "MNIST" / "raw"), "unpack_log": str(log)},
    )
    unpacks = [line.split()[1] for line in log.read_text().splitlines()]
    assert sorted(unpacks) == sorted(str(n) for n in nodes), unpacks  # each folder once, by one rank
    assert codes == [0, 0, 0, 0]  # no rank read a half-written file
    for n in nodes:
        assert all(
            (n / "MNIST" / "raw" / f).read_bytes() == (synth_root / "MNIST" / "raw" / f).read_bytes()
            for f in RAW_FILES
        )
    assert json.loads((tmp_path / "runs" / "nodes-job1" / "summary.json").read_text())["world_size"] == 4


def test_misclassified_plot_counts_every_ranks_mistakes(synth_root, tmp_path, monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    data = tmp_path / "data"
    shutil.copytree(synth_root / "MNIST", data / "MNIST")
    mistakes = tmp_path / "mistakes.json"
    codes = run_ranks(2, 2, [data], tmp_path / "runs", {"mistakes_file": str(mistakes), "subset": 128})
    assert codes == [0, 0]
    summary = json.loads((tmp_path / "runs" / "nodes-job1" / "summary.json").read_text())
    cm = summary["confusion_matrix"]
    wrong = sum(map(sum, cm)) - sum(cm[i][i] for i in range(len(cm)))
    seen = json.loads(mistakes.read_text())
    # rank 0 shows mistakes from its own shard; the title counts those of both shards
    assert wrong > 0 and seen["shown"] <= min(wrong, 36)
    assert seen["total"] == wrong, (seen, wrong)
