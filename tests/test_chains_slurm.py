"""Job chains on the local sandbox (issue 25): `sweep submit --then report` writes the sweep's
report.md after its array has ended, and `submit --after A` starts only once job A has ended."""

import re
import shutil
import sys

import pytest

from tests.slurm_support import make_project, mnist_hpc, scontrol_fields, wait_until_done

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SWEEP = """\
base: ../quickstart.yaml
set: {train.epochs: 1, data.subset: 2000, runtime.threads: 1, data.val_split: null, train.checkpoint.every: 0}
grid:
  experiment.seed: [0, 1]
"""


def test_then_report_writes_the_report_after_the_array(slurm_sandbox, slurm_data):
    project = make_project("chain", SWEEP)
    try:
        env = {"MNIST_HPC_PYTHON": sys.executable, "MNIST_HPC_DATA_DIR": str(slurm_data)}
        mnist_hpc("data", "pack", "mnist", cwd=project, env=env)
        out = mnist_hpc(
            "sweep",
            "submit",
            project / "configs" / "sweeps" / "chain.yaml",
            "--cluster",
            "local",
            "--cpus",
            "1",
            "--time",
            "0:20:00",
            "--then",
            "report",
            cwd=project,
            env=env,
        ).stdout
        array = re.search(r"job array (\d+)", out).group(1)
        report_job = re.search(r"then job (\d+) writes", out).group(1)
        assert wait_until_done(report_job, timeout=1200) == "COMPLETED", out
        states = [wait_until_done(f"{array}_{i}", timeout=60) for i in range(2)]
        assert states == ["COMPLETED"] * 2
        folder = next(project.glob("runs/chain-sweep-*"))
        text = (folder / "report.md").read_text()
        assert text.startswith("# Sweep chain: 2 of 2 runs completed") and "did not complete" not in text, (
            text
        )
        ends = [scontrol_fields(f"{array}_{i}")["EndTime"] for i in range(2)]
        assert scontrol_fields(report_job)["StartTime"] >= max(ends)  # ISO times compare as text
    finally:
        shutil.rmtree(project, ignore_errors=True)


def test_after_orders_two_jobs(slurm_sandbox, slurm_data):
    project = make_project("unused", SWEEP)
    try:
        env = {"MNIST_HPC_PYTHON": sys.executable, "MNIST_HPC_DATA_DIR": str(slurm_data)}
        mnist_hpc("data", "pack", "mnist", cwd=project, env=env)
        common = [
            "--cluster",
            "local",
            "--cpus",
            "1",
            "--time",
            "0:20:00",
            "--set",
            "train.epochs=1",
            "--set",
            "data.subset=2000",
            "--set",
            "data.val_split=null",
        ]
        first = mnist_hpc("submit", "configs/quickstart.yaml", *common, cwd=project, env=env).stdout
        a = re.search(r"submitted job (\d+)", first).group(1)
        refused = mnist_hpc(
            "submit",
            "configs/quickstart.yaml",
            *common,
            "--after",
            "999999",
            cwd=project,
            env=env,
            check=False,
        )
        assert refused.returncode != 0 and "job 999999 does not exist" in refused.stderr, refused.stderr
        second = mnist_hpc(
            "submit", "configs/quickstart.yaml", *common, "--after", a, cwd=project, env=env
        ).stdout
        b = re.search(r"submitted job (\d+)", second).group(1)
        fields_a, fields_b = scontrol_fields(a), scontrol_fields(b)
        if fields_a.get("JobState") in ("PENDING", "RUNNING"):  # A still going: B waits for it
            assert (fields_b.get("JobState"), fields_b.get("Reason")) == ("PENDING", "Dependency"), fields_b
        assert wait_until_done(b, timeout=1200) == "COMPLETED"
        assert wait_until_done(a, timeout=60) == "COMPLETED"
        assert scontrol_fields(b)["StartTime"] >= scontrol_fields(a)["EndTime"]
    finally:
        shutil.rmtree(project, ignore_errors=True)
