"""Scale on one machine: data-parallel training with 2 gloo processes vs 1, and what a checkpoint
costs (milliseconds, megabytes) as the model grows from the MLP to resnet18.

  - DDP: `mnist-hpc train CONFIG --nproc N` with N = 1 (all the cores' threads) and N = 2 (the
    threads split between them), interleaved, the same images; images/s from each summary.json.
  - Checkpoint: the trainer's own ``checkpoint.save`` of model + AdamW state after one step
    (what `train` writes at each checkpoint, digest included), median of a few saves.

    python -m benchmarks.scale --repeats 3 --subset 20000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mlp", "cnn", "fast", "resnet18")


def ddp_run(config: str, nproc: int, threads: int, subset: int, work: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"ddp{nproc}-", dir=work))
    argv = [
        sys.executable,
        "-m",
        "mnist_hpc",
        "train",
        config,
        "--nproc",
        str(nproc),
        "--run-dir",
        str(run_dir),
    ]
    argv += [
        "--set",
        f"data.subset={subset}",
        "--set",
        f"runtime.threads={threads}",
        "--set",
        "runtime.device=cpu",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    t0 = time.time()
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"scale: {' '.join(argv)} failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    s = json.loads((run_dir / "summary.json").read_text())
    return {
        "nproc": nproc,
        "threads_per_process": threads,
        "images_per_s": s["images_per_s"],
        "train_seconds": s["train_seconds"],
        "wall_seconds": round(time.time() - t0, 2),
        "test_accuracy": s["test_accuracy"],
        "load_average_1min_before": round(load, 2),
    }


def checkpoint_cost(model: str, saves: int, work: Path) -> dict:
    import torch

    from mnist_hpc.config import config_from_dict
    from mnist_hpc.training import checkpoint as ckpt
    from mnist_hpc.training.build import make_optimizer
    from mnist_hpc.training.models import build_model

    cfg = config_from_dict({"model": {"name": model}, "optim": {"name": "adamw", "lr": 0.001}})
    net = build_model(cfg.model)
    opt = make_optimizer(cfg, net.parameters())
    net(torch.randn(8, 1, 28, 28)).sum().backward()
    opt.step()  # AdamW's moments exist: a checkpoint as big as training writes
    params = sum(p.numel() for p in net.parameters())
    folder = Path(tempfile.mkdtemp(prefix=f"ckpt-{model}-", dir=work)) / "checkpoints"
    times = []
    for i in range(saves):
        state = {"epoch": 1, "step": i + 1, "model": net.state_dict(), "optimizer": opt.state_dict()}
        t0 = time.perf_counter()
        path = ckpt.save(state, folder, keep=2)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "model": model,
        "params": params,
        "file_mb": round(path.stat().st_size / 1e6, 3),
        "save_ms": [round(t, 2) for t in times],
        "median_save_ms": round(statistics.median(times), 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mnist-hpc bench scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/fast.yaml")
    p.add_argument("--repeats", type=int, default=3, help="DDP runs per process count (default 3)")
    p.add_argument("--subset", type=int, default=20000, help="training images per DDP run (default 20000)")
    p.add_argument("--saves", type=int, default=5, help="checkpoint saves per model (default 5)")
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/scale.json)")
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="mnist-hpc-scale-"))
    config = str(Path(args.config).resolve()) if Path(args.config).is_file() else args.config
    ddp: dict[int, list[dict]] = {1: [], 2: []}
    for i in range(args.repeats):
        for nproc in (1, 2):
            r = ddp_run(config, nproc, max(1, cores // nproc), args.subset, work)
            ddp[nproc].append(r)
            print(
                f"  {nproc} process(es) x {r['threads_per_process']} threads #{i + 1}: "
                f"{common.rate(r['images_per_s'])} img/s · load {r['load_average_1min_before']}",
                flush=True,
            )
    med = {n: statistics.median(r["images_per_s"] for r in runs) for n, runs in ddp.items()}
    ratio = med[2] / med[1]
    costs = [checkpoint_cost(m, args.saves, work) for m in args.models]
    print()
    print(
        f"data parallel on {cores} cores · {args.config} · {args.subset} images · medians of {args.repeats}"
    )
    print(
        common.table(
            ["processes", "images/s"],
            [[1, common.rate(med[1])], [2, f"{common.rate(med[2])} ({ratio:.2f}x)"]],
        )
    )
    print()
    print(f"checkpoint (model + AdamW state) · median of {args.saves} saves")
    print(
        common.table(
            ["model", "params", "MB", "ms"],
            [[c["model"], f"{c['params']:,}", c["file_mb"], c["median_save_ms"]] for c in costs],
        )
    )
    path = common.write_results(
        "scale",
        {
            "benchmark": "scale",
            "command": f"python -m benchmarks.scale {' '.join(argv if argv is not None else sys.argv[1:])}",
            "environment": common.environment(),
            "ddp": {"runs": ddp, "median_images_per_s": med, "ratio_2_vs_1": round(ratio, 3)},
            "checkpoint": costs,
        },
        args.out,
    )
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
