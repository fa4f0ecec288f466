"""`status` as a replacement for `sq` + `seff`: jobs submitted with plain sbatch found by their
run folder or by name, finished jobs with Slurm's state, elapsed time, CPU and memory efficiency
from sacct (parsed by a pure function, tested on text captured from Slurm 22.05 with accounting)
and the run's result; peak GPU memory in summary.json. Fake Slurm commands on PATH."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from mnist_hpc.cluster import accounting as A
from mnist_hpc.cluster import queue
from mnist_hpc.runs.summary import RunSummary, read_summary, write_summary
from tests.status_fakes import DISABLED, _line, _run, fake

# `sacct --parsable2 --noheader --format=<accounting.FIELDS> --user=root --starttime=now-7days`
# on a Slurm 22.05.8 sandbox with slurmdbd and jobacct_gather/linux (30 s sampling): a job of two
# steps busy on 2 cores, a failing job, an array of two, a job cancelled while pending, one
# sampled for memory (it ran 41 s), one killed by its time-limit signal and one still pending.
CAPTURED = """\
1|COMPLETED|0:0|9|00:09.294|2|1|500M|billing=2,cpu=2,mem=500M,node=1||2026-11-21T06:34:42|busy|pipe
1.batch|COMPLETED|0:0|9|00:06.189|2|1||cpu=2,mem=500M,node=1||2026-11-21T06:34:42|batch
1.0|COMPLETED|0:0|3|00:03.104|2|1||cpu=2,mem=500M,node=1||2026-11-21T06:34:42|python3
2|FAILED|3:0|2|00:00.003|1|1|100M|billing=1,cpu=1,mem=100M,node=1||2026-11-21T06:34:35|fails
2.batch|FAILED|3:0|2|00:00.003|1|1||cpu=1,mem=100M,node=1||2026-11-21T06:34:35|batch
4|CANCELLED by 0|0:0|0|00:00:00|1|1|23081M|||2026-11-21T06:34:38|long
3_0|COMPLETED|0:0|3|00:00.003|1|1|200M|billing=1,cpu=1,mem=200M,node=1||2026-11-21T06:34:36|arr
3_0.batch|COMPLETED|0:0|3|00:00.003|1|1||cpu=1,mem=200M,node=1||2026-11-21T06:34:36|batch
3_1|COMPLETED|0:0|3|00:00.003|1|1|200M|billing=1,cpu=1,mem=200M,node=1||2026-11-21T06:34:39|arr
3_1.batch|COMPLETED|0:0|3|00:00.003|1|1||cpu=1,mem=200M,node=1||2026-11-21T06:34:39|batch
6|COMPLETED|0:0|41|00:00.230|1|1|1G|billing=1,cpu=1,mem=1G,node=1||2026-11-21T06:35:51|mem
6.batch|COMPLETED|0:0|41|00:00.230|1|1||cpu=1,mem=1G,node=1|221192K|2026-11-21T06:35:51|batch
8|FAILED|0:10|18|00:00.002|1|1|23081M|billing=1,cpu=1,mem=23081M,node=1||2026-11-21T06:36:42|long
8.batch|CANCELLED|0:10|18|00:00.002|1|1||cpu=1,mem=23081M,node=1||2026-11-21T06:36:42|batch
9|PENDING|0:0|0|00:00:00|1|1|23081M|||Unknown|long
"""


# --------------------------------------------------------------------------- parsing (pure)


def test_parse_sacct_on_captured_text():
    jobs = A.parse_sacct(CAPTURED)
    assert sorted(jobs) == ["1", "2", "3_0", "3_1", "4", "6", "8", "9"]
    busy = jobs["1"]
    assert busy.name == "busy|pipe" and busy.state == "COMPLETED" and busy.elapsed == 9 and busy.cpus == 2
    assert busy.cpu_seconds == pytest.approx(9.293) and busy.cpu_efficiency == pytest.approx(9.293 / 18)
    assert busy.mem_bytes == 500 * 2**20 and busy.max_rss_bytes is None and busy.mem_efficiency is None
    mem = jobs["6"]
    assert mem.max_rss_bytes == 221192 * 1024 and mem.mem_efficiency == pytest.approx(221192 / 2**20)
    assert jobs["2"].state == "FAILED" and jobs["2"].exit_code == "3:0"
    assert jobs["4"].state == "CANCELLED" and jobs["4"].mem_bytes == 23081 * 2**20  # from ReqMem
    assert jobs["8"].end == "2026-11-21T06:36:42" and jobs["9"].end == ""


def test_efficiency_text_like_seff():
    jobs = A.parse_sacct(CAPTURED)
    assert A.efficiency_text(jobs["6"]) == "CPU 1% of 1 core, memory 216M of 1.0G (21%)"
    assert A.efficiency_text(jobs["1"]) == "CPU 52% of 2 cores, memory not measured (of 500M)"
    assert A.efficiency_text(jobs["4"]) == "did not run"


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("00:09.294", 9.294),
        ("01:02:03", 3723),
        ("2-01:00:00", 176400),
        ("1-02:03:04.5", 93784.5),
        ("42", 42),
        ("", 0),
        ("INVALID", 0),
    ],
)
def test_parse_seconds(text, seconds):
    assert A.parse_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text,cpus,nodes,size",
    [
        ("221192K", 1, 1, 221192 * 1024),
        ("1.50G", 1, 1, int(1.5 * 2**30)),
        ("0", 1, 1, 0),
        ("3000Mn", 1, 2, 6000 * 2**20),
        ("2Gc", 4, 1, 8 * 2**30),
        ("", 1, 1, None),
        ("16?", 1, 1, None),
    ],
)
def test_parse_size(text, cpus, nodes, size):
    assert A.parse_size(text, cpus, nodes) == size


def test_lines_that_are_not_sacct_rows_are_ignored():
    assert A.parse_sacct("sacct: warning: something\n\n1|COMPLETED\n") == {}


def test_format_helpers():
    assert [A.format_size(n) for n in (512, 300 * 1024, 1.5 * 2**30, 12 * 2**30, 3 * 2**40)] == [
        "512B",
        "300K",
        "1.5G",
        "12G",
        "3.0T",
    ]
    assert [A.format_duration(s) for s in (42, 3723, 176400)] == ["0:42", "1:02:03", "2-01:00:00"]


# --------------------------------------------------------------------------- status with fake Slurm


def test_status_with_accounting(cli, project):
    sacct_out = project / "sacct.txt"
    sacct_out.write_text(CAPTURED.replace("3_", "7_"))  # the array is the recorded sweep
    fake(project, "squeue", 'echo "13|mnist|RUNNING|0:12|0:30:00|1|node1"\n')
    fake(project, "sacct", f'cat "{sacct_out}"\n')
    fake(project, "scontrol", "exit 1\n")
    # a plain `sbatch slurm/submit_job.sh`: training named its folder after the job
    _run(project, "quickstart-job6", {"status": "completed", "test_accuracy": 0.9912})
    _run(project, "quickstart-job1")  # no summary: it ended before writing one
    _run(project, "quickstart-job13")  # still running
    sweep = _run(
        project,
        "lr-sweep-20261121-063000",
        record={
            "job_id": "7",
            "template": "sweep_array",
            "runs": 2,
            "sweep": "lr.yaml",
            "snapshot": "runs/lr-sweep-20261121-063000/sweep.yaml",
        },
    )
    r = cli("status")
    assert r.code == 0, r
    assert "runs/quickstart-job13" in _line(r.out, "13") and "RUNNING" in _line(r.out, "13")
    assert "CPU AND MEMORY (sacct)" in r.out and "no accounting" not in r.out
    line = _line(r.out, "6")
    assert "COMPLETED" in line and "0:41" in line and "memory 216M of 1.0G (21%)" in line
    assert "completed, test accuracy 99.12%" in line and "runs/quickstart-job6" in line
    line = _line(r.out, "1")
    assert "busy|pipe" in line and "CPU 52% of 2 cores" in line and "no summary.json" in line
    line = _line(r.out, "7")  # the sweep's array: its tasks counted, not listed one by one
    assert "2 COMPLETED" in line and "2 tasks: CPU 0% of 1 core" in line and sweep.name in line
    assert "mnist-hpc report runs/lr-sweep-20261121-063000/sweep.yaml" in line
    assert not any(x.startswith("7_") for x in r.out.splitlines())
    # found by name only: it failed before any run folder was made
    line = _line(r.out, "8")
    assert "long" in line and "FAILED (exit 0:10)" in line and "no run folder in runs/" in line
    assert not any(x.startswith("9 ") for x in r.out.splitlines())  # pending: not finished


def test_status_without_accounting(cli, project):
    # squeue --states=all still remembers job 12 (ended minutes ago); job 5 it forgot
    fake(
        project, "squeue", 'case "$*" in *--states=all*) echo "12|mnist|FAILED|1:05|0:30:00|1|None";; esac\n'
    )
    fake(project, "sacct", f'echo "{DISABLED}" >&2; exit 1\n')
    fake(project, "scontrol", "echo scontrol must not be asked per job >&2; exit 1\n")
    folder = _run(project, "quickstart-job12")
    (folder / "state.json").write_text(json.dumps({"state": "failed", "error": "out of memory"}))
    _run(project, "quickstart-job5", {"status": "completed", "test_accuracy": 0.985})
    r = cli("status")
    assert r.code == 0, r
    assert "CPU AND MEMORY" not in r.out and "(no accounting on this cluster" in r.out
    line = _line(r.out, "12")
    assert "mnist" in line and "FAILED" in line and "1:05" in line
    assert "run failed: out of memory" in line
    assert "completed, test accuracy 98.50%" in _line(r.out, "5")  # Slurm forgot it: the run tells
    now = queue.status("runs")
    assert not now.accounting and {f.usage for f in now.finished} == {"no accounting"}


def test_status_where_sacct_is_missing(cli, project, monkeypatch):
    monkeypatch.setenv("PATH", str(project / "bin"))  # no sacct, no scontrol
    fake(project, "squeue", "true\n")
    _run(project, "quickstart-job5", {"status": "completed", "test_accuracy": 0.985})
    r = cli("status")
    assert r.code == 0 and "(no accounting on this cluster" in r.out, r
    assert "completed, test accuracy 98.50%" in _line(r.out, "5")


def test_status_when_sacct_fails_says_why(cli, project):
    fake(project, "squeue", "true\n")
    fake(project, "sacct", 'echo "sacct: error: slurmdbd: Connection refused" >&2; exit 1\n')
    fake(project, "scontrol", "exit 1\n")
    _run(project, "quickstart-job5", {"status": "completed", "test_accuracy": 0.985})
    r = cli("status")
    assert r.code == 0, r
    assert "note: sacct failed: sacct: error: slurmdbd: Connection refused; CPU and memory" in r.err


def test_status_lists_the_ten_most_recent(cli, project):
    fake(project, "squeue", "true\n")
    fake(project, "sacct", f'echo "{DISABLED}" >&2; exit 1\n')
    fake(project, "scontrol", "exit 1\n")
    for i in range(12):
        folder = _run(project, f"q-job{100 + i}")
        os.utime(folder, (1_700_000_000 + i, 1_700_000_000 + i))
    ids = [f.job_id for f in queue.status("runs").finished]
    assert ids == [str(100 + i) for i in range(2, 12)]


def test_job_folders_finds_plain_sbatch_runs(tmp_path):
    for name in ("quickstart-job12", "my-exp-job34_5", "quickstart-20260101-000000", "x-jobless"):
        (tmp_path / name).mkdir()
    (tmp_path / "a-job99").write_text("a file, not a run folder")
    assert {k: p.name for k, p in queue.job_folders(tmp_path).items()} == {
        "12": "quickstart-job12",
        "34_5": "my-exp-job34_5",
    }


def test_result_keeps_slurm_state_when_the_run_wrote_no_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(queue.shutil, "which", lambda name: f"/usr/bin/{name}")  # no Slurm needed here
    monkeypatch.setattr(
        queue.slurm, "scontrol_show_job", lambda job_id: {"JobState": "TIMEOUT", "ExitCode": "0:0"}
    )
    assert queue.result("3", tmp_path, {}).startswith("TIMEOUT, no summary.json")


# --------------------------------------------------------------------------- peak GPU memory


def test_peak_gpu_memory_goes_into_the_summary_on_cuda(monkeypatch):
    torch = pytest.importorskip("torch")
    from mnist_hpc.training import run as R

    asked = []
    monkeypatch.setattr(
        torch.cuda, "max_memory_allocated", lambda device=None: asked.append(device) or 812.4 * 2**20
    )
    cuda = SimpleNamespace(device=torch.device("cuda", 0))
    assert R._RankTraining._peak_gpu_memory_mb(cuda) == 812.4 and asked == [torch.device("cuda", 0)]
    assert R._RankTraining._peak_gpu_memory_mb(SimpleNamespace(device=torch.device("cpu"))) is None


def test_peak_gpu_memory_is_a_summary_key(tmp_path):
    write_summary(tmp_path, RunSummary(test_accuracy=0.99, peak_gpu_memory_mb=812.4))
    assert json.loads((tmp_path / "summary.json").read_text())["peak_gpu_memory_mb"] == 812.4
    assert read_summary(tmp_path).peak_gpu_memory_mb == 812.4
    assert queue.run_result(tmp_path) == "completed, test accuracy 99.00%, peak GPU memory 812 MB"
    write_summary(tmp_path, RunSummary(test_accuracy=0.99))  # CPU runs: null, and not shown
    assert json.loads((tmp_path / "summary.json").read_text())["peak_gpu_memory_mb"] is None
    assert queue.run_result(tmp_path) == "completed, test accuracy 99.00%"
