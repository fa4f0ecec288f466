"""Every GPU row of the performance table in one go, for the day a GPU is lent (`bash benchmarks/gpu.sh`).

Rows, each measured by the benchmark that owns it (run as a subprocess, its JSON collected):
  - time to 99.0% and 99.5% test accuracy: `bench tta` over configs/fast.yaml and configs/fast995.yaml
  - training images/s of the fast and classic nets in fp32, bf16, channels_last and torch.compile:
    `bench throughput`
  - data-parallel scaling: `mnist-hpc train configs/fast.yaml --nproc 1` vs `--nproc 2` (when there are
    two GPUs), images/s from each run's summary.json
  - the `--gpus auto` cost probe: `mnist-hpc estimate CONFIG --cluster fir --gpus auto` (a timed probe
    of the config's step on this GPU, then the allocation it would ask for)
One results JSON and one markdown table come out. Without a GPU it refuses (exit 2) unless ``--smoke``:
the same rows on the CPU at toy sizes (no compile row), to check the script, not to measure.

    bash benchmarks/gpu.sh                 # on a GPU node: ≈ 5-8 minutes
    bash benchmarks/gpu.sh --smoke --out /tmp/gpu-smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common

ROOT = Path(__file__).resolve().parent.parent


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _run(argv: list[str], log: Path) -> subprocess.CompletedProcess:
    """One step, its output kept in ``log`` (and echoed), failing loudly."""
    print(f"$ {' '.join(argv)}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    print(done.stdout[-1500:], end="", flush=True)
    if done.returncode:
        raise SystemExit(f"gpu: step failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-2000:]}")
    return done


def time_to_accuracy(out: Path, smoke: bool) -> list[list]:
    py = [sys.executable, "-m", "benchmarks.tta"]
    configs = ["configs/fast.yaml"] if smoke else ["configs/fast.yaml", "configs/fast995.yaml"]
    args = [*configs, "--seeds", "1" if smoke else "3", "--out", str(out / "tta.json")]
    if smoke:
        args += ["--eval-every", "0.5", "--set", "data.subset=1000"]
    _run(py + args, out / "tta.log")
    rows = []
    for r in json.loads((out / "tta.json").read_text())["results"]:
        for th in ("0.990", "0.995"):
            got = r[th]
            m, s = got["from_first_step"]
            rows.append(
                [
                    f"time to {float(th) * 100:.1f}% ({Path(r['config']).name})",
                    common.fmt_ms(m, s) if m is not None else f"not reached ({got['reached']}/{got['of']})",
                ]
            )
    return rows


def throughput(out: Path, smoke: bool, gpu: bool) -> list[list]:
    variants = [("fp32", []), ("bf16", ["train.amp=bf16"]), ("channels_last", ["runtime.channels_last=true"])]
    if gpu:  # compiling on a CPU takes minutes and measures nothing a GPU user needs
        variants.append(("compile", ["train.compile=true"]))
    rows = []
    for name, sets in variants:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.throughput",
            "--models",
            "fast",
            "cnn",
            "--out",
            str(out / f"throughput-{name}.json"),
        ]
        argv += (
            ["--quick", "--repeats", "1", "--seconds", "0.2"] if smoke else ["--batch-sizes", "256", "1024"]
        )
        for s in sets:
            argv += ["--set", s]
        _run(argv, out / f"throughput-{name}.log")
        for r in json.loads((out / f"throughput-{name}.json").read_text())["results"]:
            rows.append(
                [
                    f"{r['model']} batch {r['batch_size']} {name}",
                    f"{common.rate(r['median_images_per_s'])} img/s",
                ]
            )
    return rows


def data_parallel(out: Path, smoke: bool, gpus: int) -> list[list]:
    if gpus < 2 and not smoke:
        return [["DDP 2 vs 1 GPU", f"not measured: {gpus} GPU here"]]
    procs = (1, 2)
    rates = {}
    for n in procs:
        run_dir = out / f"ddp-{n}"
        argv = [
            sys.executable,
            "-m",
            "mnist_hpc",
            "train",
            "configs/fast.yaml",
            "--nproc",
            str(n),
            "--run-dir",
            str(run_dir),
            "--set",
            "train.epochs=2",
        ]
        if smoke:  # gloo on the CPU, a sliver of the data: the launch path, not a figure
            argv += ["--set", "data.subset=512", "--set", "train.epochs=1", "--set", "runtime.device=cpu"]
        _run(argv, out / f"ddp-{n}.log")
        rates[n] = json.loads((run_dir / "summary.json").read_text())["images_per_s"]
    ratio = rates[2] / rates[1] if rates[1] else float("nan")
    return [
        ["train fast.yaml, 1 process", f"{common.rate(rates[1])} img/s"],
        ["train fast.yaml, 2 processes", f"{common.rate(rates[2])} img/s ({ratio:.2f}x)"],
    ]


def gpus_auto(out: Path, smoke: bool) -> list[list]:
    rows = []
    for config in (
        ["configs/fast.yaml"]
        if smoke
        else ["configs/fast.yaml", "configs/quickstart.yaml", "configs/resnet18.yaml"]
    ):
        done = _run(
            [sys.executable, "-m", "mnist_hpc", "estimate", config, "--cluster", "fir", "--gpus", "auto"],
            out / f"estimate-{Path(config).stem}.log",
        )
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        asked = next((line for line in lines if line.startswith("walltime")), "(no walltime line)")
        rows.append([f"estimate {Path(config).name} --gpus auto", f"{lines[0] if lines else ''} {asked}"])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu.sh", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--smoke", action="store_true", help="toy sizes on the CPU: checks the script, measures nothing"
    )
    p.add_argument(
        "--out",
        default=None,
        help="folder for the JSON, the table and the logs (default benchmarks/results/gpu-<date>)",
    )
    args = p.parse_args(argv)
    gpus = _gpus()
    if not gpus and not args.smoke:
        print(
            "gpu: no CUDA GPU here (torch.cuda.is_available() is False); `bash benchmarks/gpu.sh --smoke` checks the script on the CPU",
            file=sys.stderr,
        )
        return 2
    out = (
        Path(args.out)
        if args.out
        else ROOT / "benchmarks" / "results" / f"gpu-{time.strftime('%Y%m%d-%H%M')}"
    )
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sections = {
        "time to accuracy": time_to_accuracy(out, args.smoke),
        "throughput": throughput(out, args.smoke, gpus > 0),
        "data parallel": data_parallel(out, args.smoke, gpus),
        "--gpus auto": gpus_auto(out, args.smoke),
    }
    env = common.environment()
    env["gpus"] = gpus
    if gpus:
        import torch

        env["gpu"] = torch.cuda.get_device_name(0)
    elapsed = time.time() - t0
    title = f"GPU benchmarks · {env.get('gpu', 'CPU smoke run: not figures')} · {elapsed / 60:.1f} min"
    lines = [f"# {title}", "", "| row | figure |", "| --- | --- |"]
    lines += [f"| {row} | {figure} |" for rows in sections.values() for row, figure in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    common.write_results(
        "gpu",
        {
            "benchmark": "gpu",
            "smoke": args.smoke,
            "environment": env,
            "seconds": round(elapsed, 1),
            "rows": sections,
        },
        out / "gpu.json",
    )
    print("\n".join(lines))
    print(f"\nwritten {out / 'gpu.json'} and {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
