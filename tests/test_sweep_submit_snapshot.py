"""`sweep submit` with --set, and the snapshot of the sweep file and its base config that the
job array reads (so editing the files after submitting changes nothing queued). Without a real
Slurm: dry runs and a fake sbatch on PATH; tests/test_sweep_slurm.py runs one on the sandbox."""

from __future__ import annotations

import json
import os

import pytest

from mnist_hpc.cli import cluster as commands
from mnist_hpc.cluster import datapack, snapshot
from mnist_hpc.experiments.sweep import train_argv
from mnist_hpc.experiments.sweepfile import load_sweep
from tests.paths import ROOT

SWEEP = """\
base: base.yaml
set: {train: {epochs: 1}, data.subset: 3000}
grid:
  optim.lr: [0.1, 0.01]
seeds: {repeat: 2}
"""
BASE = "extends: quickstart\nmodel: {name: mlp, hidden: [64]}\nexperiment: {seed: 5}\n"


@pytest.fixture(autouse=True)
def project(monkeypatch, tmp_path):
    from mnist_hpc.cli.main import cli

    commands.register(cli)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("MNIST_HPC_CLUSTERS", "SBATCH_ACCOUNT", "SLURM_ACCOUNT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sw.yaml").write_text(SWEEP)
    (tmp_path / "base.yaml").write_text(BASE)
    data = tmp_path / "datasets"
    for f in datapack.dataset_files(data, "mnist"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"fake")
    monkeypatch.setenv("MNIST_HPC_DATA_DIR", str(data))
    return tmp_path


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 321\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def _submit(cli, *extra):
    return cli(
        "sweep",
        "submit",
        "sw.yaml",
        "--cluster",
        "local",
        "--set",
        "experiment.name=on",
        "--set",
        "train.epochs=2",
        *extra,
    )


def test_dry_run_points_the_array_at_the_snapshot_and_creates_nothing(cli, tmp_path):
    r = _submit(cli, "--dry-run")
    assert r.code == 0, r
    line = next(x for x in r.out.splitlines() if x.startswith("SWEEP="))
    assert line.split()[0].endswith("/sweep.yaml") and f"{tmp_path}/runs/sw-sweep-" in line
    assert "4 runs in 1 job array(s)" in r.err and not (tmp_path / "runs").exists()


def test_set_reaches_every_run_through_the_snapshot(cli, tmp_path, fake_sbatch):
    r = _submit(cli)
    assert r.code == 0 and "submitted sweep sw: 4 runs as job array 321" in r.out, r
    (folder,) = (tmp_path / "runs").glob("sw-sweep-*")
    record = json.loads((folder / "job.json").read_text())
    assert record["snapshot"] == str(folder / "sweep.yaml") and record["sweep"] == "sw.yaml"
    assert f"SWEEP={folder}/sweep.yaml " in (folder / "job-0.sh").read_text()

    original = load_sweep("sw.yaml", ("experiment.name=on", "train.epochs=2"))
    copy = load_sweep(folder / "sweep.yaml")
    assert copy.name == "sw" and copy.base == folder / "base.yaml"
    assert [r.name for r in copy.runs] == [r.name for r in original.runs]
    assert [r.config.to_dict() for r in copy.runs] == [r.config.to_dict() for r in original.runs]
    cfg = copy.runs[3].config
    assert cfg.experiment.name == "on" and cfg.train.epochs == 2 and cfg.data.subset == 3000
    assert cfg.model.hidden == [64] and cfg.optim.lr == 0.01 and cfg.experiment.seed == 6
    # what an array task runs: the copied base config, never the user's files
    argv = train_argv(copy, copy.runs[0])
    assert argv[argv.index("train") + 1] == str(folder / "base.yaml")
    assert "extends" not in (folder / "base.yaml").read_text().split("\n", 2)[2]


def test_editing_the_files_after_submitting_changes_nothing(cli, tmp_path, fake_sbatch):
    assert _submit(cli).code == 0
    (folder,) = (tmp_path / "runs").glob("sw-sweep-*")
    before = [r.config.to_dict() for r in load_sweep(folder / "sweep.yaml").runs]
    (tmp_path / "sw.yaml").write_text("base: base.yaml\ngrid: {optim.lr: [0.5]}\n")
    (tmp_path / "base.yaml").write_text("extends: quickstart\nmodel: {name: cnn}\n")
    (tmp_path / "quickstart.yaml").write_text("experiment: {name: shadow}\n")  # a name now shadowed
    after = [r.config.to_dict() for r in load_sweep(folder / "sweep.yaml").runs]
    assert after == before and len(after) == 4


def test_plan_of_the_snapshot(cli, tmp_path, fake_sbatch):
    assert _submit(cli).code == 0
    (folder,) = (tmp_path / "runs").glob("sw-sweep-*")
    r = cli("sweep", "plan", folder / "sweep.yaml")
    assert r.code == 0 and "sweep sw: 4 runs" in r.out, r
    assert "--set experiment.name='on'" in r.out and "--set train.epochs=2" in r.out


def test_set_on_an_axis_is_refused(cli, tmp_path):
    r = cli("sweep", "submit", "sw.yaml", "--cluster", "local", "--set", "optim.lr=0.5", "--dry-run")
    assert r.code == 2 and "optim.lr is an axis of the sweep" in r.err, r


def test_a_bad_set_is_refused_before_anything_is_made(cli, tmp_path, fake_sbatch):
    r = cli("sweep", "submit", "sw.yaml", "--cluster", "local", "--set", "optim.lrr=1")
    assert r.code == 2 and "did you mean 'lr'" in r.err, r
    assert not (tmp_path / "runs").exists()


def test_the_snapshot_keeps_the_order_of_overrides(tmp_path):
    """A later --set replaces a whole section the file's set: gave; the copy applies the same."""
    (tmp_path / "o.yaml").write_text(
        "base: base.yaml\nset: {model.hidden: [8], optim.lr: 0.5}\ngrid: {data.batch_size: [32, 64]}\n"
    )
    sweep = load_sweep(tmp_path / "o.yaml", ("model={name: mlp, dropout: 0.5}",))
    (tmp_path / "snap").mkdir()
    path = snapshot.write(sweep, tmp_path / "snap")  # raises if the copy would differ
    cfg = load_sweep(path).runs[1].config
    assert cfg.model.hidden == [128] and cfg.model.dropout == 0.5 and cfg.optim.lr == 0.5
    assert cfg.data.batch_size == 64


def test_a_model_switch_in_one_run_does_not_leak_into_the_next(tmp_path):
    """Regression: applying one run's overrides changed the base config the next run starts from."""
    (tmp_path / "z.yaml").write_text("base: base.yaml\nzip: {model.name: [fast, mlp]}\n")
    runs = load_sweep(tmp_path / "z.yaml").runs
    assert runs[1].config.model.name == "mlp" and runs[1].config.model.hidden == [64]


def test_a_taken_folder_name_gets_the_next_one(tmp_path, fake_sbatch, monkeypatch):
    """The folder is made with an exclusive mkdir: a name taken meanwhile is not shared."""
    from mnist_hpc.cluster import jobs
    from mnist_hpc.runs import folder as F

    planned = tmp_path / "runs" / "sw-sweep-20260101-000000"
    monkeypatch.setattr(F, "new_run_dir", lambda *a: planned)
    planned.mkdir(parents=True)  # another submit made it between the plan and the mkdir
    out = jobs.sweep_submit("sw.yaml", "local")
    assert out.folder == planned.with_name(planned.name + "-2")
    assert f"SWEEP={out.folder}/sweep.yaml " in (out.folder / "job-0.sh").read_text()
    assert list(planned.iterdir()) == []
    run = tmp_path / "runs" / "q-20260101-000000"
    monkeypatch.setattr(F, "new_run_dir", lambda *a: run)
    run.mkdir()
    job = jobs.submit(ROOT / "configs" / "quickstart.yaml", cluster="local")
    assert job.run_dir == run.with_name(run.name + "-2") and f"RUN_DIR={job.run_dir} " in job.script
    assert (job.run_dir / "job.sh").read_text() == job.script and list(run.iterdir()) == []
