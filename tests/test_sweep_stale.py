"""A finished run counts as done only when its stored config is the one asked for now (issue 27,
defect 20): `sweep run` and `sweep submit` refuse, naming the keys that differ, and --force
trains those runs anew after moving the old folders aside (nothing deleted)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from mnist_hpc.cli.experiments import sweep_group
from mnist_hpc.experiments.sweepfile import load_sweep
from tests.sweep_fakes import write_sweep


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_runs_finished_with_another_config_are_not_taken_as_done(tmp_path, fake_train):
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.01, 0.02]}\n")
    first = CliRunner().invoke(sweep_group, ["run", str(path), "--set", "train.epochs=1"])
    assert first.exit_code == 0, first.output
    assert len(fake_train()) == 2

    second = CliRunner().invoke(sweep_group, ["run", str(path)])
    assert second.exit_code == 2, second.output
    line = one_line_error(second.output)
    assert "2 finished run(s)" in line and "train.epochs: 1 there, 3 now" in line
    assert "keys that differ: train.epochs" in line and "--force" in line
    assert "already completed" not in second.output and "test accuracy" not in second.output
    assert len(fake_train()) == 2  # nothing trained, nothing touched

    # the same config asked again still skips them
    again = CliRunner().invoke(sweep_group, ["run", str(path), "--set", "train.epochs=1"])
    assert again.exit_code == 0 and "2 of 2 runs already completed" in again.output

    forced = CliRunner().invoke(sweep_group, ["run", str(path), "--force"])
    assert forced.exit_code == 0, forced.output
    assert len(fake_train()) == 4
    sw = load_sweep(path)
    assert all(json.loads((r.run_dir / "summary.json").read_text())["epochs"] == 3 for r in sw.runs)
    (old,) = sw.output_dir.parent.glob(f"{sw.output_dir.name}-replaced-*")
    assert sorted(p.name for p in old.iterdir()) == [r.name for r in sw.runs]
    assert all(json.loads((old / r.name / "summary.json").read_text())["epochs"] == 1 for r in sw.runs)
    assert f"moved 2 finished runs trained with another config to {old}/" in forced.output


def test_settings_that_cannot_change_a_result_do_not_count(tmp_path, fake_train):
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.01]}\n")
    assert CliRunner().invoke(sweep_group, ["run", str(path)]).exit_code == 0
    r = CliRunner().invoke(
        sweep_group, ["run", str(path), "--set", "runtime.threads=1", "--set", "data.eval_batch_size=100"]
    )
    assert r.exit_code == 0 and "1 of 1 run already completed" in r.output, r.output


def test_a_finished_run_without_its_config_is_not_trusted(tmp_path, fake_train):
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.01]}\n")
    assert CliRunner().invoke(sweep_group, ["run", str(path)]).exit_code == 0
    (load_sweep(path).runs[0].run_dir / "config.yaml").unlink()
    r = CliRunner().invoke(sweep_group, ["run", str(path)])
    assert r.exit_code == 2 and "config.yaml is missing or unreadable" in one_line_error(r.output)


def test_sweep_submit_refuses_them_too(tmp_path, fake_train, cli, monkeypatch):
    from mnist_hpc.cli import cluster as commands
    from mnist_hpc.cli.main import cli as main_cli

    commands.register(main_cli)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.01, 0.02]}\n")
    assert CliRunner().invoke(sweep_group, ["run", str(path), "--set", "train.epochs=1"]).exit_code == 0
    r = cli("sweep", "submit", path, "--cluster", "fir", "--dry-run", "--account", "def-x")
    assert r.code == 2 and r.out == "", r
    assert "train.epochs: 1 there, 3 now" in r.err and "--force" in r.err and "\n" not in r.err.strip()
    r = cli("sweep", "submit", path, "--cluster", "fir", "--dry-run", "--account", "def-x", "--force")
    assert r.code == 0, r
    assert (load_sweep(path).runs[0].run_dir / "summary.json").exists()  # a dry run moves nothing
