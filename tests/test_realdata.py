"""End-to-end on the real MNIST files (skipped where they are absent): the quickstart reaches
99%, a 2-rank torchrun run reaches 98.5% with one run folder, and the real archives unpack and
verify offline."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.realdata


def test_quickstart_reaches_99(cli, real_root, tmp_path):
    r = cli("train", "configs/quickstart.yaml", "--data-dir", real_root, "--run-dir", tmp_path / "qs")
    assert r.code == 0, r
    s = json.loads((tmp_path / "qs" / "summary.json").read_text())
    assert s["test_accuracy"] >= 0.99, s["test_accuracy"]
    assert s["dataset"] == "mnist" and len(s["per_class"]) == 10


def test_torchrun_two_ranks_quickstart(real_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out = tmp_path / "runs"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "mnist_hpc",
            "train",
            "configs/quickstart.yaml",
            "--data-dir",
            str(real_root),
            "--set",
            f"experiment.output_dir={out}",
        ],
        capture_output=True,
        text=True,
        env=dict(env, OMP_NUM_THREADS="1"),
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (run,) = list(out.iterdir())
    s = json.loads((run / "summary.json").read_text())
    assert s["world_size"] == 2 and s["launcher"] == "torchrun"
    assert s["test_accuracy"] >= 0.985, s["test_accuracy"]


def test_real_archives_unpack_and_verify_offline(cli, real_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_HPC_OFFLINE", "1")
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in (real_root / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(gz, raw)
    r = cli("data", "download", "--dataset", "mnist", "--data-dir", tmp_path / "data")
    assert r.code == 0 and "mnist: ready" in r.out, r
    assert (raw / "train-images-idx3-ubyte").is_file()
    r = cli("data", "verify", "--dataset", "mnist", "--data-dir", tmp_path / "data")
    assert r.code == 0 and r.out.count("md5 ok") == 4 and "unpacked files load" in r.out, r
