"""A custom model file in the places that run it in other processes: torchrun with 2 ranks, and a
real Slurm job on the local sandbox submitted from another folder, whose original file is deleted
before the job starts (the job reads the copy submit made)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.ddp_support import clean_env
from tests.own_model_support import NET, only_run, write_project
from tests.paths import ROOT
from tests.slurm_support import mnist_hpc, wait_until_done


@pytest.mark.slow  # a real multi-process or multi-run training: ~20-50 s on 2 cores
def test_a_custom_model_trains_with_two_torchrun_processes(tmp_path, synth_root):
    cfg = write_project(tmp_path)
    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_hpc",
            "train",
            str(cfg),
            "--data-dir",
            str(synth_root),
            "--nproc",
            "2",
            "--set",
            "data.batch_size=50",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    run = only_run(tmp_path)
    s = json.loads((run / "summary.json").read_text())
    assert s["world_size"] == 2 and s["model"] == "custom"
    assert (run / "model" / "tiny.py").is_file()


@pytest.mark.slurm
def test_a_submitted_custom_model_needs_nothing_from_the_callers_folder(slurm_sandbox, slurm_data):
    work = Path(tempfile.mkdtemp(prefix="mnist-hpc-own-"))  # outside pytest's basetemp: a job reads it
    try:
        project = work / "project"
        project.mkdir()
        (project / "mnist_hpc").symlink_to(ROOT / "mnist_hpc")
        write_project(work / "mine")  # the user's config and nets/ live elsewhere
        cfg = work / "mine" / "own.yaml"
        cfg.write_text(cfg.read_text().replace(str(work / "mine" / "runs"), "runs"))
        env = {
            "MNIST_HPC_PYTHON": sys.executable,
            "MNIST_HPC_DATA_DIR": str(slurm_data),
            "XDG_CACHE_HOME": str(work / "cache"),
        }
        mnist_hpc("data", "pack", "mnist", cwd=project, env=env)
        out = mnist_hpc("submit", cfg, "--cluster", "local", "--time", "0:10:00", cwd=project, env=env).stdout
        job = out.split("submitted job ", 1)[1].split()[0]
        shutil.rmtree(work / "mine")  # the original file (and config) are gone before the job runs
        state = wait_until_done(job, 600)
        run = next((project / "runs").iterdir())
        log = "\n".join(p.read_text() for p in run.glob("slurm-*.out"))
        assert state == "COMPLETED", log
        s = json.loads((run / "summary.json").read_text())
        assert s["model"] == "custom" and 0 <= s["test_accuracy"] <= 1
        assert (run / "model" / "tiny.py").read_text() == __import__("textwrap").dedent(NET)
        assert "file: model/tiny.py" in (run / "config.yaml").read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_submit_checks_the_model_before_anything_is_queued(cli, tmp_path):
    cfg = write_project(tmp_path, NET.replace("num_classes=10", "num_classes=9"))
    r = cli("submit", cfg, "--cluster", "local", "--dry-run")
    assert r.code == 2 and "forward must return logits of shape (N, 10)" in r.err, r
