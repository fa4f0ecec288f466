"""The peer, side by side in one run: pytorch/examples' `mnist/main.py` for one epoch (the
classic two-conv net, Adadelta, batch 64, torchvision's DataLoader) against `mnist-hpc train`
of the same recipe (``configs/cnn_classic.yaml``, one epoch) and of ``configs/fast.yaml``.

Each run is one process, timed from just before it starts to its exit, its output lines
time-stamped as they arrive; the peer's training is the span from its first "Train Epoch" line to
its "Test set" line (it prints no timer of its own), mnist-hpc's comes from summary.json. The
sides alternate, ``--repeats`` times each, so machine noise hits them alike; medians; the load
average before each run.

The peer's script is not part of this project: clone https://github.com/pytorch/examples and give
its `mnist/main.py` (``--peer``; the commit is recorded when it is a git checkout). It reads
``../data`` from its working folder: the benchmark runs it in a scratch folder whose ``../data``
is a link to the dataset folder (``MNIST_HPC_DATA_DIR``, or ``--data-dir``), so nothing downloads.

    python -m benchmarks.peer --peer ~/examples/mnist/main.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common
from benchmarks.overhead import ROOT, run_once

ACCURACY = re.compile(r"Test set: Average loss: [\d.]+, Accuracy: (\d+)/(\d+)")
OURS = {
    "mnist-hpc cnn_classic.yaml, 1 epoch": ("configs/cnn_classic.yaml", ["train.epochs=1"]),
    "mnist-hpc fast.yaml": ("configs/fast.yaml", []),
}
PEER = "pytorch/examples mnist/main.py --epochs 1"


def run_peer(script: Path, data_root: Path, work: Path) -> dict:
    """One `python main.py --epochs 1 --no-accel` in a scratch folder beside a link to the data."""
    scratch = Path(tempfile.mkdtemp(prefix="peer-", dir=work))
    (scratch / "data").symlink_to(data_root.resolve(), target_is_directory=True)
    (scratch / "run").mkdir()
    argv = [sys.executable, str(script), "--epochs", "1", "--no-accel"]
    load = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.Popen(
        argv, cwd=scratch / "run", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = [(time.time() - t0, line.rstrip("\n")) for line in proc.stdout]
    code = proc.wait()
    wall = time.time() - t0
    if code:
        tail = "\n".join(text for _, text in lines[-5:])
        raise SystemExit(f"peer: {script} failed ({code}):\n{tail}")
    first = next(t for t, text in lines if text.startswith("Train Epoch"))
    tested = next((t, ACCURACY.search(text)) for t, text in lines if ACCURACY.search(text))
    correct, total = int(tested[1].group(1)), int(tested[1].group(2))
    return {
        "wall_seconds": round(wall, 3),
        # from the first logged batch (its data and model ready) to the test result: its
        # test pass included, which mnist-hpc's train_seconds leaves out (compare the walls)
        "train_seconds": round(tested[0] - first, 3),
        "first_batch_at": round(first, 3),
        "test_accuracy": correct / total,
        "load_average_1min_before": round(load, 2),
    }


def _commit(script: Path) -> str | None:
    out = subprocess.run(
        ["git", "-C", str(script.parent), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or None


def _med(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 5 if key == "test_accuracy" else 3) if values else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mnist-hpc bench peer", description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", required=True, type=Path, help="pytorch/examples' mnist/main.py")
    p.add_argument("--repeats", type=int, default=3, help="runs per side (default 3)")
    p.add_argument("--peer-commit", default=None, help="the examples' commit, when --peer is no git checkout")
    p.add_argument("--data-dir", type=Path, default=None, help="default: $MNIST_HPC_DATA_DIR")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/peer.json)")
    args = p.parse_args(argv)
    data = args.data_dir or (
        Path(os.environ["MNIST_HPC_DATA_DIR"]) if os.environ.get("MNIST_HPC_DATA_DIR") else None
    )
    if not args.peer.is_file():
        raise SystemExit(f"peer: {args.peer}: no such file (clone https://github.com/pytorch/examples)")
    if data is None or not (data / "MNIST" / "raw").is_dir():
        raise SystemExit(
            "peer: no MNIST folder: give --data-dir or set MNIST_HPC_DATA_DIR (torchvision layout)"
        )
    os.environ["MNIST_HPC_DATA_DIR"] = str(data)  # the mnist-hpc runs read the same files
    work = Path(tempfile.mkdtemp(prefix="mnist-hpc-peer-"))
    runs: dict[str, list[dict]] = {PEER: [], **{name: [] for name in OURS}}
    for i in range(args.repeats):
        r = run_peer(args.peer, data, work)
        runs[PEER].append(r)
        print(
            f"  peer #{i + 1}: wall {r['wall_seconds']:.1f} s · training {r['train_seconds']:.1f} s · "
            f"{r['test_accuracy']:.2%} · load {r['load_average_1min_before']}",
            flush=True,
        )
        for name, (config, overrides) in OURS.items():
            r = run_once(ROOT, str(ROOT / config), overrides, work)
            runs[name].append(r)
            print(
                f"  {name} #{i + 1}: wall {r['wall_seconds']:.1f} s · training {r['train_seconds']:.1f} s · "
                f"{r['test_accuracy']:.2%} · load {r['load_average_1min_before']}",
                flush=True,
            )
    summary = {
        name: {f"median_{k}": _med(rs, k) for k in ("wall_seconds", "train_seconds", "test_accuracy")}
        for name, rs in runs.items()
    }
    peer_wall = summary[PEER]["median_wall_seconds"]
    peer_train = summary[PEER]["median_train_seconds"]
    rows = [
        [
            name,
            s["median_wall_seconds"],
            s["median_train_seconds"],
            f"{s['median_test_accuracy']:.2%}",
            f"{peer_wall / s['median_wall_seconds']:.2f}x",
            f"{peer_train / s['median_train_seconds']:.2f}x",
        ]
        for name, s in summary.items()
    ]
    print()
    print(f"one process each · medians of {args.repeats} · seconds")
    print(
        common.table(["", "wall", "training", "test acc", "peer wall / this", "peer training / this"], rows)
    )
    path = common.write_results(
        "peer",
        {
            "benchmark": "peer",
            "command": f"python -m benchmarks.peer {' '.join(argv if argv is not None else sys.argv[1:])}",
            "peer_script": str(args.peer),
            "peer_commit": _commit(args.peer) or args.peer_commit,
            "environment": common.environment(),
            "summary": summary,
            "runs": runs,
        },
        args.out,
    )
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
