"""A 3-run sweep submitted as one Slurm job array to the local sandbox completes, and `report`
gathers all three runs (skipped with the reason where the sandbox cannot start)."""

import csv
import io
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.slurm_support import ROOT, mnist_hpc, slurm_data, slurm_sandbox  # noqa: F401 - fixtures

pytestmark = pytest.mark.slurm

SWEEP = """\
# three learning rates of the workshop MLP, shortened for the test
base: ../mlp_keras.yaml
set: {train.epochs: 1, data.subset: 3000, runtime.threads: 1}
grid:
  optim.lr: [3.0e-4, 1.0e-3, 3.0e-3]
"""


def test_sweep_array_completes_and_report_gathers_it(slurm_sandbox, slurm_data):
    project = Path(tempfile.mkdtemp(prefix="mnist-hpc-sweep-"))
    try:
        (project / "mnist_hpc").symlink_to(ROOT / "mnist_hpc")
        shutil.copytree(ROOT / "configs", project / "configs")
        (project / "configs" / "sweeps" / "tiny_lr.yaml").write_text(SWEEP)
        env = {"MNIST_HPC_PYTHON": sys.executable, "MNIST_HPC_DATA_DIR": str(slurm_data)}
        mnist_hpc("data", "pack", "mnist", cwd=project, env=env)
        out = mnist_hpc("sweep", "submit", "configs/sweeps/tiny_lr.yaml", "--cluster", "local",
                        "--parallel", "3", "--cpus", "1", "--time", "0:20:00", cwd=project, env=env).stdout
        assert "3 runs as job array" in out, out
        job = re.search(r"job array (\d+)", out).group(1)

        sweep_dir = project / "runs" / "sweeps" / "tiny_lr"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and len(list(sweep_dir.glob("*/summary.json"))) < 3:
            time.sleep(2)
        summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")]
        logs = "\n".join(p.read_text()[-1500:] for p in project.glob("runs/*-sweep*/slurm-*.out"))
        assert len(summaries) == 3, logs
        assert sorted(s["slurm_array_task_id"] for s in summaries) == ["0", "1", "2"]

        r = mnist_hpc("report", sweep_dir, "--format", "csv", cwd=project, env=env)
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        assert len(rows) == 3
        assert sorted(float(row["test_accuracy_mean"]) for row in rows) == \
            pytest.approx(sorted(s["test_accuracy"] for s in summaries), abs=1e-6)
        assert job
    finally:
        shutil.rmtree(project, ignore_errors=True)
