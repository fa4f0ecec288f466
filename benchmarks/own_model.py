"""Side by side, in one run: the built-in ``fast`` net (configs/fast.yaml) and the same network
written by hand in a model file (configs/own.yaml -> configs/nets/mynet.py), each trained by
``mnist-hpc train`` as a user runs it. Does a custom model pay anything for coming from a file?

The two alternate, ``--repeats`` times each, so that machine noise hits them alike; each figure is
the epoch's training seconds from the run's metrics.csv (the clock the per-epoch line prints) and
the whole command's wall time; the ratio is own over built-in of the medians.

    python -m benchmarks.own_model                       # full MNIST, 1 epoch each, 3 repeats
    python -m benchmarks.own_model --repeats 5 --set data.subset=20000
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "built-in fast": ROOT / "configs" / "fast.yaml",
    "own file (same net)": ROOT / "configs" / "own.yaml",
}


def one_run(config: Path, out: Path, sets) -> tuple[float, float, float]:
    """(epoch training seconds, whole command seconds, test accuracy) of one `mnist-hpc train`."""
    argv = [sys.executable, "-m", "mnist_hpc", "train", str(config), "--set", f"experiment.output_dir={out}"]
    for s in sets:
        argv += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{config}: training failed:\n{proc.stdout}\n{proc.stderr}")
    run = sorted(out.iterdir())[-1]
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    import json

    acc = json.loads((run / "summary.json").read_text())["test_accuracy"]
    return sum(float(r["seconds"]) for r in rows), wall, acc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="an override for both configs")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/own-model.json)")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    times = {k: [] for k in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, cfg in CONFIGS.items():
                epoch, wall, acc = one_run(cfg, Path(tmp) / f"{name.split()[0]}-{i}", args.sets)
                times[name].append(
                    {
                        "epoch_seconds": round(epoch, 3),
                        "wall_seconds": round(wall, 3),
                        "test_accuracy": acc,
                        "load_average_1min": round(os.getloadavg()[0], 2),
                    }
                )
                print(
                    f"{name:<20} repeat {i + 1}: epoch {epoch:6.2f} s · whole command {wall:6.2f} s · "
                    f"{acc * 100:.2f}% · load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    med = {
        k: (common.median([r["epoch_seconds"] for r in v]), common.median([r["wall_seconds"] for r in v]))
        for k, v in times.items()
    }
    (b_epoch, b_wall), (o_epoch, o_wall) = med["built-in fast"], med["own file (same net)"]
    rows = [[k, f"{e:.2f} s", f"{w:.2f} s"] for k, (e, w) in med.items()]
    print(common.table(["config", "median epoch", "median whole command"], rows))
    print(
        f"own / built-in: {o_epoch / b_epoch:.3f}x per epoch, {o_wall / b_wall:.3f}x whole command "
        f"(load average {load_before:.2f} at the start)"
    )
    path = common.write_results(
        "own-model",
        {
            "command": "python -m benchmarks.own_model "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "environment": common.environment(),
            "load_average_at_start": round(load_before, 2),
            "runs": times,
            "median_epoch_seconds": {k: e for k, (e, _) in med.items()},
            "median_wall_seconds": {k: w for k, (_, w) in med.items()},
            "ratio_epoch_own_over_builtin": round(o_epoch / b_epoch, 4),
            "ratio_wall_own_over_builtin": round(o_wall / b_wall, 4),
        },
        args.out,
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
