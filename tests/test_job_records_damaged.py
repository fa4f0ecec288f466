"""A job record (job.json) of the wrong shape (issue 27, defect 15): `status` and `logs` name the
file in one warning, leave it out and carry on with the other jobs."""

from __future__ import annotations

import json

import pytest

from mnist_hpc.cluster import queue
from tests.status_fakes import DISABLED, _line, _run, fake

BAD = {
    "a list": [{"job_id": "5"}],
    "jobs of numbers": {"jobs": [1, 2]},
    "jobs as text": {"jobs": "5,6"},
    "a job id of a list": {"job_id": ["5"]},
    "an output of a number": {"job_id": "21", "output": 7},
    "a template of a dict": {"job_id": "22", "template": {"x": 1}},
}


@pytest.mark.parametrize("kind", list(BAD))
def test_status_and_logs_name_a_job_record_of_the_wrong_shape_and_carry_on(cli, project, kind):
    fake(project, "squeue", "true\n")
    fake(project, "sacct", f'echo "{DISABLED}" >&2; exit 1\n')
    fake(project, "scontrol", "exit 1\n")
    good = _run(
        project,
        "good",
        {"status": "completed", "test_accuracy": 0.985},
        record={"job_id": "30", "output": str(project / "runs" / "good" / "slurm-%j.out")},
    )
    (good / "slurm-30.out").write_text("epoch 1 done\n")
    bad = _run(project, "bad")
    (bad / "job.json").write_text(json.dumps(BAD[kind]))
    r = cli("status")
    assert r.code == 0 and "Traceback" not in r.err, r
    assert "warning: runs/bad/job.json: not a job record of mnist-hpc (" in r.err and "left out" in r.err
    assert "completed, test accuracy 98.50%" in _line(r.out, "30")
    r = cli("logs", "30")
    assert r.code == 0 and "epoch 1 done" in r.out, r
    assert "runs/bad/job.json" in r.err


def test_a_record_without_a_job_yet_is_not_a_fault(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "job.json").write_text(json.dumps({"job_id": None, "template": "cpu_only"}))
    said = []
    assert queue.submitted_jobs(tmp_path, warn=said.append) == {} and said == []
