"""Sweeps as Slurm job arrays on the local sandbox (skipped with the reason where it cannot start):
a 3-run sweep completes with the --set given at submit time, unchanged by edits of the sweep file
made after submitting, and `report` gathers it; a sweep whose config asks for SIGUSR2 gets that
signal in its job script, so its task checkpoints, requeues itself and completes."""

import csv
import io
import json
import re
import shutil
import sys
import time

import pytest

from tests.slurm_support import make_project, mnist_hpc, paced_yaml, wait_until_done

pytestmark = pytest.mark.slurm

SWEEP = """\
# three learning rates of the workshop MLP, shortened for the test
base: ../mlp_keras.yaml
set: {data.subset: 3000, runtime.threads: 1}
grid:
  optim.lr: [3.0e-4, 1.0e-3, 3.0e-3]
"""


# one run of the tests' paced net: 2 epochs of 40 steps (10,240 images), each step at least 1.2 s,
# so 96 s of training or more on any CPU (tests/nets/paced.py), with a 2-minute limit: the signal
# comes 60 s or more after each start (the limit less 60 s), of which Python and torch take 5-15 s,
# so the task must requeue at least once to finish (the quickstart net itself, 40,000 images, now
# trains in under 10 s on a fast host)
SWEEP_USR2 = f"""\
base: ../quickstart.yaml
set: {{runtime.requeue_signal: USR2, runtime.max_requeues: 30, runtime.threads: 2, data.subset: 10240,
      data.val_split: null, train.checkpoint.every: 0, {paced_yaml(1.2)}}}
grid:
  experiment.seed: [0]
"""


def test_sweep_array_completes_and_report_gathers_it(slurm_sandbox, slurm_data):
    project = make_project("tiny_lr", SWEEP)
    try:
        env = {"MNIST_HPC_PYTHON": sys.executable, "MNIST_HPC_DATA_DIR": str(slurm_data)}
        mnist_hpc("data", "pack", "mnist", cwd=project, env=env)
        sweep_file = project / "configs" / "sweeps" / "tiny_lr.yaml"
        out = mnist_hpc(
            "sweep",
            "submit",
            sweep_file,
            "--cluster",
            "local",
            "--set",
            "train.epochs=1",
            "--parallel",
            "3",
            "--cpus",
            "1",
            "--time",
            "0:20:00",
            cwd=project,
            env=env,
        ).stdout
        assert "3 runs as job array" in out, out
        # edited before the tasks start: they read the snapshot made at submit time
        sweep_file.write_text(SWEEP.replace("[3.0e-4, 1.0e-3, 3.0e-3]", "[0.5]") + "seeds: [7, 8]\n")
        job = re.search(r"job array (\d+)", out).group(1)

        sweep_dir = project / "runs" / "sweeps" / "tiny_lr"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and len(list(sweep_dir.glob("*/summary.json"))) < 3:
            time.sleep(2)
        summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")]
        logs = "\n".join(p.read_text()[-1500:] for p in project.glob("runs/*-sweep*/slurm-*.out"))
        assert len(summaries) == 3, logs
        assert sorted(s["slurm_array_task_id"] for s in summaries) == ["0", "1", "2"]
        from mnist_hpc.config import load_config

        seed = load_config(project / "configs" / "mlp_keras.yaml").experiment.seed
        assert all(s["epochs_run"] == 1 and s["seed"] == seed for s in summaries), summaries

        lrs = sorted(load_config(p.parent / "config.yaml").optim.lr for p in sweep_dir.glob("*/summary.json"))
        assert lrs == [3.0e-4, 1.0e-3, 3.0e-3]

        r = mnist_hpc("report", sweep_dir, "--format", "csv", cwd=project, env=env)
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        assert len(rows) == 3
        assert sorted(float(row["test_accuracy_mean"]) for row in rows) == pytest.approx(
            sorted(s["test_accuracy"] for s in summaries), abs=1e-6
        )
        assert job
    finally:
        shutil.rmtree(project, ignore_errors=True)


def test_sweep_task_requeues_with_the_configured_signal(slurm_sandbox, slurm_data):
    project = make_project("usr2", SWEEP_USR2)
    try:
        env = {"MNIST_HPC_PYTHON": sys.executable, "MNIST_HPC_DATA_DIR": str(slurm_data)}
        mnist_hpc("data", "pack", "mnist", cwd=project, env=env)
        out = mnist_hpc(
            "sweep",
            "submit",
            "configs/sweeps/usr2.yaml",
            "--cluster",
            "local",
            "--cpus",
            "2",
            "--time",
            "0:02:00",
            cwd=project,
            env=env,
        ).stdout
        job = re.search(r"job array (\d+)", out).group(1)
        (script,) = project.glob("runs/usr2-sweep*/job-0.sh")
        text = script.read_text()
        assert "#SBATCH --signal=B:USR2@60\n" in text and "REQUEUE_SIGNAL=USR2 " in text

        state = wait_until_done(f"{job}_0", timeout=1200)
        logs = "\n".join(p.read_text()[-3000:] for p in script.parent.glob("slurm-*.out"))
        assert state == "COMPLETED", f"{state}\n{logs}"
        (run,) = (project / "runs" / "sweeps" / "usr2").glob("*/summary.json")
        summary = json.loads(run.read_text())
        assert summary["status"] == "completed", summary
        assert len(summary["requeues"]) >= 1 and all(r["signal"] == "SIGUSR2" for r in summary["requeues"]), (
            logs
        )
        assert "requeued Slurm job" in logs
    finally:
        shutil.rmtree(project, ignore_errors=True)
