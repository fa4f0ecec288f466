"""A packed sweep on the local sandbox (issue 25): 6 tiny runs in 2 array tasks of 3
(`sweep submit --pack 3`). Task 1 is preempted with `mnist-hpc preempt <array>_1` while its first
run trains: that run checkpoints, the task requeues itself only, and its next start skips nothing
finished, resumes the interrupted run and trains the other two. Every run ends with the result of
the same run trained uninterrupted; `status` counts the runs' states."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.slurm_support import (
    make_project,
    metrics_rows,
    mnist_hpc,
    paced_yaml,
    scontrol_fields,
    wait_until_done,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# six seeds of the tests' paced net, 3 epochs of 3,000 MNIST images (12 steps of at least 0.1 s:
# 1.2 s an epoch or more on any CPU, tests/nets/paced.py); deterministic, so a resumed run must
# end exactly as an uninterrupted one
SWEEP = f"""\
base: ../quickstart.yaml
set: {{train.epochs: 3, data.subset: 3000, runtime.threads: 1, runtime.deterministic: true, data.val_split: null,
      train.checkpoint.every: 0, runtime.max_requeues: 5,
      {paced_yaml(0.1)}}}
grid:
  experiment.seed: [0, 1, 2, 3, 4, 5]
"""


def test_packed_sweep_preempted_task_resumes_and_every_run_matches(slurm_sandbox, slurm_data):
    project = make_project("packed", SWEEP)
    try:
        env = {"MNIST_HPC_PYTHON": sys.executable, "MNIST_HPC_DATA_DIR": str(slurm_data)}
        mnist_hpc("data", "pack", "mnist", cwd=project, env=env)
        sweep_file = project / "configs" / "sweeps" / "packed.yaml"
        plan = mnist_hpc("sweep", "plan", sweep_file, cwd=project, env=env).stdout
        names = [name for _, name in re.findall(r"^\s*(\d+)\s+(\S+)", plan, re.M)]
        assert len(names) == 6, plan
        run_dirs = [project / "runs" / "sweeps" / "packed" / name for name in names]
        out = mnist_hpc(
            "sweep",
            "submit",
            sweep_file,
            "--cluster",
            "local",
            "--pack",
            "3",
            "--parallel",
            "2",
            "--cpus",
            "1",
            "--time",
            "0:30:00",
            cwd=project,
            env=env,
        ).stdout
        assert "6 runs in 2 tasks of 3 as job array" in out, out
        array = re.search(r"job array (\d+)", out).group(1)

        # task 1's first run (index 3) has trained an epoch: preempt the task the way the limit would
        deadline = time.monotonic() + 900
        while metrics_rows(run_dirs[3]) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert metrics_rows(run_dirs[3]) >= 1, "task 1 trained no epoch in 15 minutes"
        sent = mnist_hpc("preempt", f"{array}_1", cwd=project, env=env).stdout
        assert f"sent SIGUSR1 to its batch shell of job {array}_1" in sent, sent

        states = [wait_until_done(f"{array}_{i}", timeout=1500) for i in range(2)]
        logs = "\n".join(
            f"== {p.name}\n" + p.read_text()[-3000:]
            for p in sorted(project.glob("runs/packed-sweep*/slurm-*.out"))
        )
        assert states == ["COMPLETED"] * 2, f"{states}\n{logs}"
        restarts = [int(scontrol_fields(f"{array}_{i}").get("Restarts", "-1")) for i in range(2)]
        assert restarts[0] == 0 and restarts[1] >= 1, f"{restarts}\n{logs}"
        assert re.search(rf"requeued Slurm job {array}_1\b", logs), logs
        assert "packed task 1: requeued at run 3" in logs and "packed task 1: all 3 runs completed" in logs, (
            logs
        )

        summaries = [json.loads((d / "summary.json").read_text()) for d in run_dirs]
        assert [len(s["requeues"]) for s in summaries] == [0, 0, 0, len(summaries[3]["requeues"]), 0, 0]
        assert len(summaries[3]["requeues"]) >= 1, summaries[3]
        # each of task 1's other runs started once only: after the requeue, not before
        assert [len(list((d / "env").glob("start-*"))) for d in run_dirs[4:]] == [1, 1]
        status = mnist_hpc("status", cwd=project, env=env).stdout
        assert "6 runs in 2 tasks of 3: 6 completed" in status, status

        for d, s in zip(run_dirs, summaries, strict=False):
            ref = Path(tempfile.mkdtemp(prefix="mnist-hpc-ref-", dir=project)) / "run"
            done = subprocess.run(
                [sys.executable, "-m", "mnist_hpc", "train", str(d / "config.yaml"), "--run-dir", str(ref)],
                cwd=project,
                capture_output=True,
                text=True,
                env={**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}, **env},
                timeout=900,
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            reference = json.loads((ref / "summary.json").read_text())
            assert (s["test_accuracy"], s["test_loss"]) == (
                reference["test_accuracy"],
                reference["test_loss"],
            ), d
    finally:
        shutil.rmtree(project, ignore_errors=True)
