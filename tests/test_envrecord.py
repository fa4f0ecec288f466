"""env/ in the run folder: what each start of a run ran in (issue 24, part 5), and the loud
warning when a requeued start runs other torch/torchvision/mnist-hpc versions than the first."""

from __future__ import annotations

import json

from mnist_hpc.cluster import envrecord
from mnist_hpc.cluster.env import current


def job(**env):
    return current({"SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "1", **env})


def test_every_start_gets_its_own_record(tmp_path, monkeypatch):
    monkeypatch.setattr(envrecord, "nvidia_smi", lambda: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-x)\n")
    first, warning = envrecord.record(tmp_path, job(), {"LOADEDMODULES": "StdEnv/2023:python/3.13.2"})
    assert warning is None and first == tmp_path / "env" / "start-0"
    facts = json.loads((first / "job.json").read_text())
    assert (facts["slurm_job_id"], facts["slurm_array_job_id"], facts["slurm_array_task_id"]) == (
        "41",
        "40",
        "1",
    )
    assert facts["restart_count"] == 0 and facts["node"] and set(facts["versions"]) == set(envrecord.WATCHED)
    assert (first / "modules.txt").read_text() == "StdEnv/2023\npython/3.13.2\n"
    assert (first / "nvidia-smi.txt").read_text().startswith("GPU 0: NVIDIA H100")
    assert (first / "python.txt").read_text().startswith("Python 3.")
    assert any(
        line.lower().startswith("click==") for line in (first / "pip-freeze.txt").read_text().splitlines()
    )

    monkeypatch.setattr(envrecord, "nvidia_smi", lambda: None)  # a CPU node: no file
    second, warning = envrecord.record(tmp_path, job(SLURM_RESTART_COUNT="1"), {})
    assert warning is None and second.name == "start-1" and not (second / "nvidia-smi.txt").exists()
    assert json.loads((second / "job.json").read_text())["restart_count"] == 1
    assert "no modules loaded" in (second / "modules.txt").read_text()


def test_a_start_with_other_versions_warns_loudly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(envrecord, "nvidia_smi", lambda: None)
    monkeypatch.setattr(
        envrecord, "versions", lambda: {"torch": "2.12.0", "torchvision": "0.27.0", "mnist-hpc": "0.2.0"}
    )
    envrecord.record(tmp_path, job(), {})
    monkeypatch.setattr(
        envrecord, "versions", lambda: {"torch": "2.13.0", "torchvision": "0.27.0", "mnist-hpc": "0.2.0"}
    )
    said = []
    envrecord.on_start(job(SLURM_RESTART_COUNT="1"), said.append)(tmp_path)
    assert len(said) == 1 and said[0].startswith("WARNING: this start of the run uses other versions")
    assert "torch 2.12.0 -> 2.13.0" in said[0] and "torchvision" not in said[0]
    assert said[0] in capsys.readouterr().err  # on stderr too: it stands out in the job's log
    # the same versions again: quiet
    monkeypatch.setattr(
        envrecord, "versions", lambda: {"torch": "2.12.0", "torchvision": "0.27.0", "mnist-hpc": "0.2.0"}
    )
    said.clear()
    envrecord.on_start(job(SLURM_RESTART_COUNT="2"), said.append)(tmp_path)
    assert said == [] and (tmp_path / "env" / "start-2").is_dir()


def test_training_records_its_start(tiny_config, synth_root, tmp_path):
    from mnist_hpc import api

    run = api.train(
        tiny_config,
        ["train.epochs=1"],
        data_dir=synth_root,
        run_dir=tmp_path / "run",
        progress=False,
        echo=lambda line: None,
    )
    facts = json.loads((run.path / "env" / "start-0" / "job.json").read_text())
    assert facts["start"] == 0 and facts["versions"]["torch"]


def test_a_record_that_cannot_be_written_is_a_note_not_the_end_of_the_run(tmp_path):
    (tmp_path / "env").write_text("a file where the folder should be")
    said = []
    envrecord.on_start(job(), said.append)(tmp_path)
    assert len(said) == 1 and said[0].startswith("note: could not record the job environment")
