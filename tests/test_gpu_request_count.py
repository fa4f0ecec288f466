"""`--gpus TYPE:N` asks for N GPUs of a type: zero or a negative count is a mistake, never a
silent CPU job (issue 27, defect 14)."""

import pytest

from mnist_hpc.cli import cluster as commands
from tests.paths import ROOT

QUICKSTART = ROOT / "configs" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def registered(monkeypatch, tmp_path):
    from mnist_hpc.cli.main import cli

    commands.register(cli)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("gpus", ["h100:0", "h100:-1", "h100:00", "-1", "a100_3g.20gb:0"])
def test_a_typed_zero_or_negative_gpu_count_is_refused(cli, gpus):
    r = cli("submit", QUICKSTART, "--cluster", "fir", "--gpus", gpus, "--dry-run", "--account", "def-x")
    assert r.code != 0 and r.out == "", r
    line = r.err.strip()
    assert line.startswith(f"error: --gpus {gpus}:") and "\n" not in line, line
    assert "Traceback" not in r.err


def test_the_sweep_submit_refuses_it_too(cli, tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"base: {QUICKSTART}\ngrid: {{optim.lr: [0.1, 0.01]}}\n")
    r = cli(
        "sweep", "submit", sweep, "--cluster", "fir", "--gpus", "h100:0", "--dry-run", "--account", "def-x"
    )
    assert r.code != 0 and "error: --gpus h100:0:" in r.err and "at least 1" in r.err, r


def test_a_plain_zero_still_asks_for_a_cpu_job(cli):
    r = cli("submit", QUICKSTART, "--cluster", "fir", "--gpus", "0", "--dry-run", "--account", "def-x")
    assert r.code == 0, r
    assert "--gpus-per-node" not in r.out and "--gres=gpu" not in r.out
