"""One array task's time-limit signal requeues that task only (issue 24), on the local sandbox.

A 3-task sweep array of tiny runs (6,000 images, 4 epochs); task 1 gets the requeue signal through
``scancel --signal=USR1 --batch <array>_1`` while it trains. It checkpoints and requeues
``<array>_1`` (not the array's id, which would restart every task): only it restarts, the other two
run once and are never cancelled, its wrapper says "requeued at epoch E step S", each start is
recorded in the run's env/, and every run ends with the result of the same run trained
uninterrupted."""

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
    _ACTIVE,
    make_project,
    metrics_rows,
    mnist_hpc,
    paced_yaml,
    scontrol_fields,
    wait_until_done,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# three seeds of the tests' paced net, 4 epochs of 6,000 MNIST images (24 steps of at least 0.1 s:
# 2.4 s an epoch or more on any CPU, so 3 epochs are left when task 1 is signalled);
# deterministic, so a resumed run must end exactly as an uninterrupted one
SWEEP = f"""\
base: ../quickstart.yaml
set: {{train.epochs: 4, data.subset: 6000, runtime.threads: 1, runtime.deterministic: true, data.val_split: null,
      train.checkpoint.every: 0, runtime.max_requeues: 5,
      {paced_yaml(0.1)}}}
grid:
  experiment.seed: [0, 1, 2]
"""


def test_one_array_task_requeues_alone_and_every_run_matches_an_uninterrupted_one(slurm_sandbox, slurm_data):
    project = make_project("three", SWEEP)
    try:
        env = {"MNIST_HPC_PYTHON": sys.executable, "MNIST_HPC_DATA_DIR": str(slurm_data)}
        mnist_hpc("data", "pack", "mnist", cwd=project, env=env)  # submit stages the real files only
        sweep_file = project / "configs" / "sweeps" / "three.yaml"
        plan = mnist_hpc("sweep", "plan", sweep_file, cwd=project, env=env).stdout
        names = re.findall(r"^\s*(\d+)\s+(\S+)", plan, re.M)
        assert [i for i, _ in names] == ["0", "1", "2"], plan
        run_dirs = [project / "runs" / "sweeps" / "three" / name for _, name in names]
        out = mnist_hpc(
            "sweep",
            "submit",
            sweep_file,
            "--cluster",
            "local",
            "--parallel",
            "3",
            "--cpus",
            "1",
            "--time",
            "0:30:00",
            cwd=project,
            env=env,
        ).stdout
        array = re.search(r"job array (\d+)", out).group(1)

        # signal task 1 once it has trained an epoch (3 more to go: the signal lands mid-run)
        deadline = time.monotonic() + 900
        while metrics_rows(run_dirs[1]) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert metrics_rows(run_dirs[1]) >= 1, "task 1 trained no epoch in 15 minutes"
        subprocess.run(["scancel", "--signal=USR1", "--batch", f"{array}_1"], check=True)

        states = [wait_until_done(f"{array}_{i}", timeout=1500) for i in range(3)]
        logs = "\n".join(
            f"== {p.name}\n" + p.read_text()[-2500:]
            for p in sorted(project.glob("runs/three-sweep*/slurm-*.out"))
        )
        assert states == ["COMPLETED"] * 3, f"{states}\n{logs}"

        facts = [scontrol_fields(f"{array}_{i}") for i in range(3)]
        restarts = [int(f.get("Restarts", "-1")) for f in facts]
        assert restarts[0] == 0 and restarts[2] == 0 and restarts[1] >= 1, f"{restarts}\n{logs}"
        # the sandbox's record of every job end: the untouched tasks ended once, COMPLETED
        jobcomp = (_ACTIVE["dir"] / "log" / "jobcomp.log").read_text(errors="replace").splitlines()
        for i in (0, 2):
            ends = [line for line in jobcomp if re.search(rf"\bJobId={facts[i]['JobId']}\b", line)]
            assert len(ends) == 1 and "JobState=COMPLETED" in ends[0], f"task {i}: {ends}"

        # env/start-K/ per start: task 1 started twice, the others once, each with its own ids
        starts = [
            [json.loads((p / "job.json").read_text()) for p in sorted((d / "env").glob("start-*"))]
            for d in run_dirs
        ]
        assert [len(s) for s in starts][0::2] == [1, 1] and len(starts[1]) == restarts[1] + 1, starts
        assert [s["restart_count"] for s in starts[1]] == list(range(restarts[1] + 1))
        assert all(
            s["slurm_array_job_id"] == array and s["slurm_array_task_id"] == str(i)
            for i, task in enumerate(starts)
            for s in task
        )

        summaries = [json.loads((d / "summary.json").read_text()) for d in run_dirs]
        assert [len(s["requeues"]) for s in summaries][0::2] == [0, 0], summaries
        assert len(summaries[1]["requeues"]) >= 1 and summaries[1]["requeues"][0]["signal"] == "SIGUSR1"
        assert re.search(rf"requeued Slurm job {array}_1\b", logs), logs
        assert re.search(r"\[1\] \S+: requeued at epoch \d+ step \d+; resumes in the next start", logs), logs
        assert "FAILED" not in logs and "Fix the cause" not in logs, logs

        # the same three runs uninterrupted, from the configs the tasks resolved
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
