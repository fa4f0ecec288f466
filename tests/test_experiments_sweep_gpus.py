"""`sweep run --parallel N` spreads its runs over the visible GPUs (CUDA mocked: monkeypatched
torch.cuda counts): each child gets a CUDA_VISIBLE_DEVICES of its own, taken from the parent's
list when it has one; runs that overlap in time never share a GPU while there are enough; a
machine without CUDA (or one run at a time) leaves the children's environment as it was."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from mnist_hpc.experiments import sweep as sweep_mod
from mnist_hpc.experiments.sweepfile import load_sweep

STAND_IN = '''
"""Stands in for `mnist-hpc train ... --run-dir DIR`: records its GPUs and when it ran."""
import json, os, sys, time
from pathlib import Path

run_dir = Path(sys.argv[sys.argv.index("--run-dir") + 1])
start = time.time()
time.sleep(0.4)
with open(os.environ["GPU_CALLS"], "a") as f:
    f.write(json.dumps({"run": run_dir.name, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "start": start, "end": time.time()}) + "\\n")
run_dir.mkdir(parents=True, exist_ok=True)
(run_dir / "summary.json").write_text(json.dumps({"status": "completed", "test_accuracy": 0.9}))
'''


@pytest.fixture
def sweep_of(tmp_path, monkeypatch):
    """``sweep_of(n)``: a sweep of ``n`` runs whose trainer is the stand-in; returns (sweep, calls)."""
    (tmp_path / "base.yaml").write_text(f"experiment: {{name: g, output_dir: {tmp_path / 'runs'}}}\n")
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setattr(sweep_mod, "TRAIN_COMMAND", [sys.executable, str(script)])
    monkeypatch.setenv("GPU_CALLS", str(log))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def make(n):
        lrs = ", ".join(str(0.01 * (i + 1)) for i in range(n))
        path = tmp_path / "s.yaml"
        path.write_text("base: base.yaml\n" + textwrap.dedent(f"grid: {{optim.lr: [{lrs}]}}\n"))
        return load_sweep(path), lambda: [json.loads(x) for x in log.read_text().splitlines()]

    return make


def gpus_mocked(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def no_gpu_shared_at_once(calls):
    for a in calls:
        for b in calls:
            if a is not b and a["gpus"] == b["gpus"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)


def test_parallel_runs_spread_over_the_visible_gpus(sweep_of, monkeypatch):
    gpus_mocked(monkeypatch, 2)
    sweep, calls = sweep_of(4)
    lines = []
    results = sweep_mod.run_sweep(sweep, parallel=2, echo=lines.append)
    assert all(r.ok for r in results), lines
    got = calls()
    assert sorted(str(c["gpus"]) for c in got) == ["0", "0", "1", "1"], got
    no_gpu_shared_at_once(got)
    started = sorted(line for line in lines if ": started" in line)
    # the first two start together (in either order on a loaded machine) on different GPUs
    assert sorted(line.rsplit(" ", 1)[1] for line in started[:2]) == ["0", "1"], lines
    assert all(
        line.startswith(("[0] lr=0.01: started on GPU", "[1] lr=0.02: started on GPU"))
        for line in started[:2]
    ), lines


def test_the_parents_gpu_list_is_respected(sweep_of, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: pytest.fail("the parent's list is the answer"))
    sweep, calls = sweep_of(3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # e.g. a Slurm job's two GPUs
    assert all(r.ok for r in sweep_mod.run_sweep(sweep, parallel=3, echo=lambda line: None))
    got = calls()
    assert sorted(c["gpus"] for c in got) == ["5", "5", "7"], got  # three at once on two GPUs: shared fairly
    assert sweep_mod.visible_gpus() == ["5", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-4f1e,MIG-9a0b,-1,3")  # CUDA stops at an invalid entry
    assert sweep_mod.visible_gpus() == ["GPU-4f1e", "MIG-9a0b"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "NoDevFiles")
    assert sweep_mod.visible_gpus() == []


@pytest.mark.parametrize("gpu_count,parallel", [(0, 2), (2, 1)])
def test_without_gpus_or_in_series_the_environment_is_unchanged(sweep_of, monkeypatch, gpu_count, parallel):
    gpus_mocked(monkeypatch, gpu_count)
    sweep, calls = sweep_of(2)
    lines = []
    assert all(r.ok for r in sweep_mod.run_sweep(sweep, parallel=parallel, echo=lines.append))
    assert [c["gpus"] for c in calls()] == [None, None]
    assert sorted(line for line in lines if ": started" in line) == [
        "[0] lr=0.01: started",
        "[1] lr=0.02: started",
    ]
