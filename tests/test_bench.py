"""The benchmarks run end to end (tiny sizes, synthetic data, CPU) and write their JSON; the
`bench` CLI group stays torch-free and hands arguments through. No timing is asserted: speed
claims come from the benchmarks' own output, not from tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT


def test_cli_and_bench_group_do_not_import_torch():
    code = (
        "import sys, mnist_hpc.cli.main, mnist_hpc.cli.bench; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_bench_help_lists_the_benchmarks():
    from click.testing import CliRunner

    from mnist_hpc.cli.bench import bench

    r = CliRunner().invoke(bench, ["--help"])
    assert r.exit_code == 0
    for name in ("tta", "throughput", "side-by-side", "pipeline", "overhead", "scale", "all"):
        assert name in r.output


def test_bench_subcommand_passes_its_arguments_through(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mnist_hpc.cli import bench as bench_cli

    got = {}

    class Fake:
        @staticmethod
        def main(argv):
            got["argv"] = argv
            return 0

    monkeypatch.setattr(bench_cli, "load_benchmark", lambda name: got.setdefault("name", name) and Fake)
    r = CliRunner().invoke(bench_cli.bench, ["side-by-side", "--images", "64", "--help"])
    assert r.exit_code == 0, r.output
    assert got == {"name": "side_by_side", "argv": ["--images", "64", "--help"]}


def test_missing_benchmarks_folder_is_one_clear_error(tmp_path, monkeypatch):
    from mnist_hpc.cli import bench as bench_cli
    from mnist_hpc.errors import UserError

    monkeypatch.setattr(bench_cli, "_candidates", lambda: iter([tmp_path]))
    with pytest.raises(UserError, match="root of a clone"):
        bench_cli.load_benchmark("tta")


# --------------------------------------------------------------------------- smoke runs


def _json(path: Path) -> dict:
    assert path.is_file()
    return json.loads(path.read_text())


def test_pipeline_benchmark(synth_root, tmp_path):
    from benchmarks import pipeline

    out = tmp_path / "p.json"
    assert (
        pipeline.main(
            [
                "--images",
                "128",
                "--resident-images",
                "256",
                "--batch-sizes",
                "32",
                "--workers",
                "0",
                "--repeats",
                "1",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--data-dir",
                str(synth_root),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    med = _json(out)["median_images_per_s"]
    assert set(med) == {
        "ResidentLoader, batch 32",
        "ResidentLoader + augment, batch 32",
        "DataLoader workers=0, batch 32",
    }
    assert all(v > 0 for v in med.values())


def test_throughput_benchmark(synth_root, tmp_path):
    from benchmarks import throughput

    out = tmp_path / "t.json"
    assert (
        throughput.main(
            [
                "--models",
                "mlp",
                "fast",
                "--batch-sizes",
                "32",
                "--repeats",
                "2",
                "--seconds",
                "0.02",
                "--warmup",
                "1",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--data-dir",
                str(synth_root),
                "--set",
                "runtime.channels_last=true",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = _json(out)["results"]
    assert [(r["model"], r["batch_size"]) for r in res] == [("mlp", 32), ("fast", 32)]
    assert all(r["median_images_per_s"] > 0 and len(r["images_per_s"]) == 2 for r in res)


def test_side_by_side_benchmark(synth_root, tmp_path):
    from benchmarks import side_by_side

    out = tmp_path / "s.json"
    assert (
        side_by_side.main(
            [
                "--images",
                "64",
                "--batch-size",
                "32",
                "--repeats",
                "1",
                "--workers",
                "0",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--data-dir",
                str(synth_root),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    d = _json(out)
    assert set(d["median_images_per_s"]) == {"DataLoader, num_workers=0", "mnist-hpc engine"}
    assert d["ratio"] > 0


@pytest.mark.slow  # a real multi-process or multi-run training: ~20-50 s on 2 cores
def test_tta_benchmark(synth_root, tmp_path):
    from benchmarks import tta

    cfg = tmp_path / "tiny_fast.yaml"
    cfg.write_text("""
experiment: {name: tiny-fast}
data: {dataset: mnist, val_split: null, batch_size: 100, eval_batch_size: 300}
model: {name: fast, channels: [4, 8], head: flatten}
optim: {name: adamw, lr: 0.01, schedule: onecycle}
train: {epochs: 2, checkpoint: {every: 0}}
runtime: {threads: 1, device: cpu, channels_last: true}
""")
    out = tmp_path / "tta.json"
    assert (
        tta.main(
            [
                str(cfg),
                "--seeds",
                "2",
                "--eval-every",
                "0.5",
                "--data-dir",
                str(synth_root),
                "--cli",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    d = _json(out)
    (res,) = d["results"]
    assert res["seeds"] == [0, 1]
    run = res["runs"][0]
    assert [e["epoch"] for e in run["evals"]] == [0.5, 1.0, 1.5, 2.0]
    assert all(0 <= e["test_accuracy"] <= 1 for e in run["evals"])
    times = [e["train_seconds"] for e in run["evals"]]
    assert times == sorted(times)
    assert run["process_start_to_first_step"] > 0
    for r in run["reached"].values():
        assert r["from_process_start"] > r["train_seconds"]
    assert len(res["cli_runs"]) == 2 and all(0 <= c["test_accuracy"] <= 1 for c in res["cli_runs"])


def test_gpu_script_refuses_without_a_gpu(tmp_path):
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.startswith("gpu: no CUDA GPU here") and "--smoke" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow
def test_gpu_script_smoke_mode_runs_every_step_on_the_cpu(synth_root, tmp_path):
    env = {**os.environ, "MNIST_HPC_DATA_DIR": str(synth_root), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--smoke", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    d = _json(tmp_path / "out" / "gpu.json")
    assert d["smoke"] is True and list(d["rows"]) == [
        "time to accuracy",
        "throughput",
        "data parallel",
        "--gpus auto",
    ]
    assert all(d["rows"][section] for section in d["rows"])
    table = (tmp_path / "out" / "table.md").read_text()
    assert "CPU smoke run: not figures" in table and "train fast.yaml, 2 processes" in table


def test_checkpoint_cost_is_the_trainers_own_save(tmp_path):
    from benchmarks import scale

    c = scale.checkpoint_cost("mlp", 2, tmp_path)
    assert c["model"] == "mlp" and c["params"] > 10_000 and len(c["save_ms"]) == 2
    # model + AdamW's two moments, float32: at least 3 x 4 bytes per parameter
    assert c["file_mb"] >= 12 * c["params"] / 1e6
    assert list(tmp_path.glob("ckpt-mlp-*/checkpoints/*.pt"))


def test_overhead_run_reads_the_printed_total_and_the_phases(tiny_config, synth_root, tmp_path, monkeypatch):
    from benchmarks import overhead

    monkeypatch.setenv("MNIST_HPC_DATA_DIR", str(synth_root))
    r = overhead.run_once(ROOT, str(tiny_config), ["train.epochs=1"], tmp_path)
    assert r["printed_total_seconds"] is not None and r["banner_at"] < r["result_at"] <= r["wall_seconds"]
    assert r["overhead_seconds"] == pytest.approx(r["wall_seconds"] - r["train_seconds"], abs=0.01)
    assert {"start-up", "training", "test", "plots"} <= set(r["phase_seconds"])


FAKE_PEER = """import os, sys, time
assert sys.argv[1:] == ["--epochs", "1", "--no-accel"], sys.argv
assert os.path.isdir("../data/MNIST/raw")  # the script's own ../data, linked to the data folder
print("Train Epoch: 1 [0/60000 (0%)]\\tLoss: 2.3", flush=True)
time.sleep(0.3)
print("\\nTest set: Average loss: 0.0512, Accuracy: 9835/10000 (98%)\\n", flush=True)
"""


def test_peer_run_reads_the_examples_output_in_a_folder_beside_the_data(tmp_path):
    from benchmarks import peer

    script = tmp_path / "examples" / "mnist" / "main.py"
    script.parent.mkdir(parents=True)
    script.write_text(FAKE_PEER)
    (tmp_path / "data" / "MNIST" / "raw").mkdir(parents=True)
    r = peer.run_peer(script, tmp_path / "data", tmp_path)
    assert r["test_accuracy"] == 0.9835
    assert 0.25 <= r["train_seconds"] <= r["wall_seconds"] and r["first_batch_at"] < r["wall_seconds"]


def test_peer_benchmark_refuses_a_missing_script_or_data_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.peer", "--peer", str(tmp_path / "nope.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and out.stderr.strip().splitlines() == [
        f"peer: {tmp_path / 'nope.py'}: no such file (clone https://github.com/pytorch/examples)"
    ]
    (tmp_path / "main.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "MNIST_HPC_DATA_DIR"}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.peer", "--peer", str(tmp_path / "main.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert (
        out.returncode != 0 and "no MNIST folder" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    )
