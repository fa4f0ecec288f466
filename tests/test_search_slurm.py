"""A method: optuna study as a 3-task job array on the local Slurm sandbox (skipped with the reason
where it cannot start): the tasks are the study's workers; one is preempted (its batch shell gets
SIGUSR1, as at the time limit) while it trains a trial, checkpoints, requeues itself, and the trial
is resumed from its checkpoint; the journal ends with 12 trials, each once."""

import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.search_support import launches, trials_of
from tests.slurm_support import PACED_NET, make_project, mnist_hpc, wait_until_done

pytest.importorskip("optuna", reason="method: optuna needs the [search] extra (pip install optuna)")
pytestmark = pytest.mark.slurm

# the paced net (0.1 s a step, 19 steps an epoch): a trial lasts long enough on any CPU for the test
# to see its checkpoint and signal its task before the trial ends
BASE = f"""\
experiment: {{name: tiny, seed: 0}}
data: {{dataset: mnist, val_split: 0.2, batch_size: 64, eval_batch_size: 1000, subset: 1500}}
model: {{name: custom, file: '{PACED_NET}', factory: Paced, args: {{step_seconds: 0.1, width: 8}}}}
optim: {{name: adam, lr: 0.003}}
train: {{epochs: 3}}
runtime: {{threads: 1}}
"""

STUDY = """\
base: ../tiny_study_base.yaml
method: optuna
n_trials: 12
sampler: tpe
seed: 0
pruner: median
params:
  optim.lr: {float: [1.0e-5, 0.1], log: true}
  model.args.width: {int: [4, 16], step: 4}
"""


def test_a_study_as_a_job_array_survives_a_preempted_task(slurm_sandbox, slurm_data):
    project = make_project("study", STUDY)
    try:
        (project / "configs" / "tiny_study_base.yaml").write_text(BASE)
        env = {"MNIST_HPC_PYTHON": sys.executable, "MNIST_HPC_DATA_DIR": str(slurm_data)}
        mnist_hpc("data", "pack", "mnist", cwd=project, env=env)
        out = mnist_hpc(
            "sweep",
            "submit",
            "configs/sweeps/study.yaml",
            "--cluster",
            "local",
            "--parallel",
            "3",
            "--cpus",
            "1",
            "--time",
            "0:20:00",
            cwd=project,
            env=env,
        ).stdout
        assert "3 workers of a 12-trial study as job array" in out, out
        job = re.search(r"job array (\d+)", out).group(1)
        sweep_dir = project / "runs" / "sweeps" / "study"

        # preempt task 1 while it trains a trial that has a checkpoint
        deadline, victim = time.monotonic() + 600, None
        while time.monotonic() < deadline and victim is None:
            trials = trials_of(sweep_dir)
            for t in trials:
                run_dir = sweep_dir / t.user_attrs.get("run", "-")
                owner = (run_dir / "worker.json").read_text() if (run_dir / "worker.json").exists() else ""
                if (
                    t.state.name == "RUNNING"
                    and f'"task": "{job}_1"' in owner
                    and any((run_dir / "checkpoints").glob("*.pt"))
                    and not (run_dir / "summary.json").exists()
                ):
                    victim = t.number, run_dir
                    break
            if all(t.state.is_finished() for t in trials) and len(trials) == 12:
                break  # over before task 1 had a trial to preempt (or every trial failed)
            time.sleep(0.3)
        assert victim, "task 1 never trained a trial with a checkpoint: " + "\n".join(
            p.read_text()[-2000:] for p in project.glob("runs/study-sweep*/slurm-*.out")
        )
        subprocess.run(["scancel", "--signal=USR1", "--batch", f"{job}_1"], check=True)

        states = {task: wait_until_done(f"{job}_{task}", timeout=900) for task in range(3)}
        logs = "\n".join(p.read_text()[-4000:] for p in project.glob("runs/study-sweep*/slurm-*.out"))
        assert set(states.values()) == {"COMPLETED"}, f"{states}\n{logs}"
        trials = trials_of(sweep_dir)
        assert [t.number for t in trials] == list(range(12)), logs
        assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), logs
        number, run_dir = victim
        trial_log = (run_dir / "train.log").read_text()  # the trainer's own output
        assert "requeued Slurm job" in trial_log, trial_log
        assert re.search(
            rf"\[trial {number}\] \S+: stopped \(exit -?\d+\); the next worker resumes it", logs
        ), logs
        assert re.search(rf"\[trial {number}\] \S+: resumed", logs), logs
        assert launches(run_dir) == 2 and "--resume auto" in trial_log, trial_log  # resumed, once
        for t in trials:
            if t.number != number:
                assert launches(sweep_dir / t.user_attrs["run"]) == 1, t.number
    finally:
        shutil.rmtree(project, ignore_errors=True)
