"""The whole `mnist-hpc train CONFIG` command against its own training: start-up, finish, exit.

Each run is one `python -m mnist_hpc train CONFIG` process, timed from just before it is started
to its exit, with each output line time-stamped as it arrives. Per run: the wall time; the
training seconds and phase timings the run wrote to summary.json; the total it printed (which
should equal the wall time); when the banner and the result line appeared; the load average.
With ``--baseline REF`` the same runs are made, interleaved, from a git worktree of REF (another
commit of this repository), so the two sides share the machine's state; medians and ratios.

    python -m benchmarks.overhead configs/fast.yaml --repeats 3 --baseline c7066c1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common

ROOT = Path(__file__).resolve().parent.parent
TOTAL = re.compile(r"· ([\d.]+) s total")


def run_once(tree: Path, config: str, overrides: list[str], work: Path) -> dict:
    """One training command from source tree ``tree``, time-stamped line by line."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    argv = [sys.executable, "-m", "mnist_hpc", "train", config, "--run-dir", str(run_dir)]
    for o in overrides:
        argv += ["--set", o]
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "120"}
    load = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.Popen(
        argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = [(time.time() - t0, line.rstrip("\n")) for line in proc.stdout]
    code = proc.wait()
    wall = time.time() - t0
    if code:
        tail = "\n".join(text for _, text in lines[-5:])
        raise SystemExit(f"overhead: the run from {tree} failed ({code}):\n{tail}")
    summary = json.loads((run_dir / "summary.json").read_text())
    banner = next((t for t, text in lines if text.startswith("mnist-hpc: ")), None)
    result = next(((t, text) for t, text in lines if text.startswith("test accuracy ")), (None, ""))
    printed = TOTAL.search(result[1])
    return {
        "wall_seconds": round(wall, 3),
        "train_seconds": summary["train_seconds"],
        "overhead_seconds": round(wall - summary["train_seconds"], 3),
        "printed_total_seconds": float(printed.group(1)) if printed else None,
        "printed_minus_wall": round(float(printed.group(1)) - wall, 3) if printed else None,
        "banner_at": round(banner, 3) if banner is not None else None,
        "result_at": round(result[0], 3) if result[0] is not None else None,
        "exit_after_result": round(wall - result[0], 3) if result[0] is not None else None,
        "phase_seconds": summary.get("phase_seconds"),
        "test_accuracy": summary["test_accuracy"],
        "load_average_1min_before": round(load, 2),
    }


def _worktree(ref: str, work: Path) -> Path:
    where = work / f"baseline-{ref}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref],
        check=True,
        capture_output=True,
    )
    return where


def _med(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def summarise(runs: list[dict]) -> dict:
    keys = (
        "wall_seconds",
        "train_seconds",
        "overhead_seconds",
        "printed_minus_wall",
        "banner_at",
        "exit_after_result",
    )
    return {f"median_{k}": _med(runs, k) for k in keys}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mnist-hpc bench overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", default="configs/fast.yaml")
    p.add_argument("--repeats", type=int, default=3, help="runs per side (default 3)")
    p.add_argument("--baseline", default=None, metavar="REF", help="also time this git commit, interleaved")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/overhead.json)")
    args = p.parse_args(argv)
    config = str(Path(args.config).resolve()) if Path(args.config).is_file() else args.config
    work = Path(tempfile.mkdtemp(prefix="mnist-hpc-overhead-"))
    sides = {"this tree": ROOT}
    if args.baseline:
        sides[f"baseline {args.baseline}"] = _worktree(args.baseline, work)
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    try:
        for i in range(args.repeats):
            for name, tree in sides.items():
                r = run_once(tree, config, args.set, work)
                runs[name].append(r)
                print(
                    f"  {name} #{i + 1}: wall {r['wall_seconds']:.2f} s · training {r['train_seconds']:.2f} s · "
                    f"printed {r['printed_total_seconds']} s · banner at {r['banner_at']} s · "
                    f"exit {r['exit_after_result']} s after the result · load {r['load_average_1min_before']}",
                    flush=True,
                )
    finally:
        if args.baseline:
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(ROOT),
                    "worktree",
                    "remove",
                    "--force",
                    str(sides[f"baseline {args.baseline}"]),
                ],
                capture_output=True,
            )
    summaries = {name: summarise(rs) for name, rs in runs.items()}
    rows = [
        [
            name,
            s["median_wall_seconds"],
            s["median_train_seconds"],
            s["median_overhead_seconds"],
            s["median_banner_at"],
            s["median_exit_after_result"],
            s["median_printed_minus_wall"],
        ]
        for name, s in summaries.items()
    ]
    print()
    print(f"`mnist-hpc train {args.config}` · medians of {args.repeats} · seconds")
    print(
        common.table(
            ["", "wall", "training", "wall - training", "banner at", "exit after result", "printed - wall"],
            rows,
        )
    )
    if args.baseline:
        base, now = summaries[f"baseline {args.baseline}"], summaries["this tree"]
        print(
            f"overhead (wall - training): {now['median_overhead_seconds']:.2f} s vs {base['median_overhead_seconds']:.2f} s "
            f"({base['median_overhead_seconds'] / now['median_overhead_seconds']:.2f}x less); "
            f"wall {now['median_wall_seconds'] / base['median_wall_seconds']:.2f}x of the baseline's"
        )
    path = common.write_results(
        "overhead",
        {
            "benchmark": "overhead",
            "command": f"python -m benchmarks.overhead {' '.join(argv if argv is not None else sys.argv[1:])}",
            "config": args.config,
            "overrides": args.set,
            "environment": common.environment(),
            "summary": summaries,
            "runs": runs,
        },
        args.out,
    )
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
