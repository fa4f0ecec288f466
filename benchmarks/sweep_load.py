"""Load: how the sweep and report commands scale (issue 27, "Load"), measured, not asserted.

Builds a sweep of 200 tiny runs and writes a finished run folder for each, synthetically but in
the real layout (config.yaml as `train` resolves it, summary.json, metrics.csv, run.json,
state.json, train.log, plots/ and checkpoints/ with placeholder files, which none of the timed
commands reads), plus 1,000 plain run folders, so that nothing is trained. Then times each
command as a user runs it (a fresh `python -m mnist_hpc` process: interpreter start included),
several times, and keeps the median and the child's peak memory (``wait4``):

    sweep plan SWEEP          goal <= 1 s   (checks every run's config)
    sweep status SWEEP        goal <= 2 s   (where the command exists on this branch)
    sweep report SWEEP        goal <= 10 s, <= 1 GB (where it exists; else `report SWEEP`)
    report SWEEP              the comparison over the 200 finished runs
    runs DIR                  goal <= 3 s over 1,000 folders (where it exists; else `report DIR`)

    python -m benchmarks.sweep_load [--repeat 5] [--out benchmarks/results/sweep_load.json]

The results JSON holds each command line, the medians, the peak memory, the goals and the
load average before and after (on a shared machine the figures move with it).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import environment, write_results

ROOT = Path(__file__).resolve().parent.parent
GOALS = {
    "sweep plan": (1.0, None),
    "sweep status": (2.0, None),
    "sweep report": (10.0, 1024),
    "report": (10.0, 1024),
    "runs": (3.0, None),
}
CLASSES = [str(i) for i in range(10)]


# --------------------------------------------------------------------------- synthetic runs


def write_run_folder(run_dir: Path, cfg, rng: random.Random, epochs: int = 3) -> None:
    """A finished run of ``cfg`` in the layout `mnist-hpc train` leaves (no real weights)."""
    from mnist_hpc.runs.state import RunState, new_identity, write_identity, write_state
    from mnist_hpc.runs.summary import RunSummary, write_summary

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        "# resolved config of this run (source: benchmark)\n" + cfg.to_yaml()
    )
    identity = new_identity(cfg.experiment.name)
    write_identity(run_dir, identity)
    acc = rng.uniform(0.90, 0.99)
    rows, lines = [], []
    for e in range(1, epochs + 1):
        va = acc - 0.01 * (epochs - e)
        rows.append(f"{e},{0.5 / e:.6f},{va - 0.005:.6f},{0.4 / e:.6f},{va:.6f},0.001,1.2,25000.0")
        lines.append(f"epoch {e:>3}/{epochs}  loss {0.5 / e:.4f}  acc {100 * va:6.2f}%  1.2 s  25.0k img/s")
    (run_dir / "metrics.csv").write_text(
        "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,images_per_s\n" + "\n".join(rows) + "\n"
    )
    (run_dir / "train.log").write_text("\n".join(lines) + f"\ntest accuracy {100 * acc:.2f}%\n")
    support = 1000
    per_class = {
        c: {"precision": round(acc, 4), "recall": round(acc, 4), "f1": round(acc, 4), "support": support}
        for c in CLASSES
    }
    confusion = [
        [int(support * acc) if i == j else int(support * (1 - acc) / 9) for j in range(10)] for i in range(10)
    ]
    write_summary(
        run_dir,
        RunSummary(
            status="completed",
            test_accuracy=round(acc, 6),
            test_loss=round(1 - acc, 6),
            best_val_accuracy=round(acc, 6),
            best_epoch=epochs,
            epochs_run=epochs,
            macro_f1=round(acc, 6),
            per_class=per_class,
            confusion_matrix=confusion,
            params=25_818,
            model_size_mb=0.1,
            train_seconds=3.6,
            eval_seconds=0.2,
            data_seconds=0.3,
            total_seconds=5.0,
            process_seconds=7.0,
            images_per_s=25_000.0,
            warmup_seconds=0.4,
            device="cpu (2 CPU threads)",
            precision="fp32",
            global_batch_size=cfg.data.batch_size,
            per_rank_batch_size=cfg.data.batch_size,
            dataset=cfg.data.dataset,
            train_images=3000,
            val_images=300,
            test_images=10_000,
            model=cfg.model.name,
            config_name=cfg.experiment.name,
            seed=cfg.experiment.seed,
            run_id=identity["run_id"],
            started_at="2026-01-01T00:00:00",
            finished_at="2026-01-01T00:00:07",
        ),
    )
    write_state(run_dir, RunState("completed", identity["run_id"]))
    (run_dir / "plots").mkdir(exist_ok=True)
    for name in ("learning_curves.png", "confusion_matrix.png", "misclassified.png"):
        (run_dir / "plots" / name).write_bytes(b"\x89PNG placeholder")
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    for name in ("best.pt", f"last-e{epochs:04d}-s000000.pt"):
        (run_dir / "checkpoints" / name).write_bytes(b"placeholder: not read by the timed commands")


def build(work: Path, n_plain: int) -> tuple[Path, Path]:
    """The sweep file (200 runs, every one finished) and a folder of ``n_plain`` run folders."""
    from mnist_hpc.config import load_config
    from mnist_hpc.experiments.sweepfile import load_sweep

    base = work / "tiny.yaml"
    base.write_text(
        f"experiment: {{name: tiny, seed: 0, output_dir: {work / 'runs'}}}\n"
        "model: {name: mlp, hidden: [16]}\ndata: {subset: 3000}\ntrain: {epochs: 3}\n"
    )
    sweep_file = work / "load200.yaml"
    sweep_file.write_text(
        "base: tiny.yaml\nname: load200\n"
        "grid: {optim.lr: [0.1, 0.03, 0.01, 0.003, 0.001], data.batch_size: [32, 64, 128, 256]}\n"
        "seeds: {repeat: 10}\n"
    )
    rng = random.Random(0)
    sweep = load_sweep(sweep_file)
    assert len(sweep.runs) == 200, len(sweep.runs)
    for run in sweep.runs:
        write_run_folder(run.run_dir, run.config, rng)
    plain = work / "many"
    for i in range(n_plain):
        cfg = load_config(base, [f"optim.lr={0.001 * (1 + i % 7)}", f"experiment.seed={i}"])
        write_run_folder(plain / f"tiny-20260101-{i:06d}", cfg, rng)
    return sweep_file, plain


# --------------------------------------------------------------------------- timing


def has_command(*words) -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_hpc", *words, "--help"], capture_output=True, text=True, cwd=ROOT
    )
    return proc.returncode == 0


def timed(argv: list, cwd: Path) -> tuple[float, float, int, str]:
    """(seconds, peak memory in MiB, exit code, last line of stderr) of one run of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "120"}
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace").strip().splitlines()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, proc.returncode, err[-1] if err else ""


def measure(name: str, words: list, cwd: Path, repeat: int) -> dict:
    argv = [sys.executable, "-m", "mnist_hpc", *map(str, words)]
    runs = [timed(argv, cwd) for _ in range(repeat)]
    seconds = [r[0] for r in runs]
    goal_s, goal_mb = GOALS.get(name, (None, None))
    med = statistics.median(seconds)
    peak = max(r[1] for r in runs)
    out = {
        "command": "mnist-hpc " + " ".join(map(str, words)),
        "median_s": round(med, 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "peak_rss_mb": round(peak, 1),
        "exit_codes": sorted({r[2] for r in runs}),
        "goal_s": goal_s,
        "goal_mb": goal_mb,
        "meets_goal": (goal_s is None or med <= goal_s) and (goal_mb is None or peak <= goal_mb),
    }
    if any(r[2] for r in runs):
        out["stderr_last_line"] = runs[-1][3]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--plain", type=int, default=1000, help="plain run folders for `runs`/`report DIR`")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/sweep_load.json)")
    ap.add_argument("--keep", action="store_true", help="keep the generated folders (printed)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mnist-hpc-load-"))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    sweep_file, plain = build(work, args.plain)
    built_s = time.perf_counter() - t0
    results = {"sweep plan": measure("sweep plan", ["sweep", "plan", sweep_file], work, args.repeat)}
    if has_command("sweep", "status"):
        results["sweep status"] = measure("sweep status", ["sweep", "status", sweep_file], work, args.repeat)
    if has_command("sweep", "report"):
        results["sweep report"] = measure("sweep report", ["sweep", "report", sweep_file], work, args.repeat)
    results["report"] = measure("report", ["report", sweep_file], work, args.repeat)
    if has_command("runs"):
        results["runs"] = measure("runs", ["runs", plain], work, args.repeat)
    results[f"report over {args.plain} folders"] = measure("runs", ["report", plain], work, args.repeat)
    absent = [c for c in ("sweep status", "sweep report", "runs") if c not in results]
    payload = {
        "benchmark": "sweep_load",
        "command": "python -m benchmarks.sweep_load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "what": "fresh-process wall time (median of --repeat) and peak RSS of each command over 200 "
        f"finished sweep runs and {args.plain} plain run folders, generated in the run-folder layout",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "generated_in_s": round(built_s, 1),
        "repeat": args.repeat,
        "results": results,
        "commands_absent_on_this_branch": absent,
        "environment": environment(),
    }
    path = write_results("sweep_load", payload, args.out)
    width = max(map(len, results))
    for name, r in results.items():
        mark = "ok" if r["meets_goal"] else "MISSES GOAL"
        goal = f"goal {r['goal_s']} s" if r["goal_s"] else ""
        print(f"{name:<{width}}  {r['median_s']:6.2f} s  {r['peak_rss_mb']:7.1f} MiB  {goal:<12} {mark}")
    if absent:
        print("not on this branch: " + ", ".join(absent))
    print(f"load average {payload['load_average_before']} -> {payload['load_average_after']}; wrote {path}")
    if args.keep:
        print(f"folders kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
