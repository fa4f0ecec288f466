"""`mnist-hpc estimate` and the same lines in `submit --dry-run` / `sweep submit --dry-run`: golden
outputs per cluster profile with the probe's figure injected (10 ms a step, "given"), RGU values
as cited from the Alliance wiki page "Allocations and compute scheduling" in clusters.yaml, and the
--time warnings. Regenerate with MNIST_HPC_UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mnist_hpc import api_cluster
from mnist_hpc.cli import cluster as commands
from mnist_hpc.cluster import estimate as est
from mnist_hpc.cluster.profiles import get_profile, load_profiles

GOLDEN = Path(__file__).resolve().parent / "golden" / "estimate"
UPDATE = os.environ.get("MNIST_HPC_UPDATE_GOLDEN") == "1"
PROBE = est.Probe(0.010, "cpu (test)", "given")
SWEEP = "base: quickstart\nset: {train.epochs: 2, data.batch_size: 128}\ngrid: {optim.lr: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}\n"
# (cluster, --gpus) pairs: each profile's default, and its MIG slices where it has them
CASES = [(name, None) for name in sorted(load_profiles()[0]) if name != "tamia"] + [
    ("narval", "a100_1g.5gb:1"),
    ("narval", "a100_3g.20gb:1"),
    ("nibi", "h100_1g.10gb:1"),
    ("rorqual", "h100_3g.40gb:1"),
    ("fir", "nvidia_h100_80gb_hbm3_2g.20gb:1"),
    ("narval", "0"),
]


@pytest.fixture
def injected(monkeypatch, tmp_path):
    from mnist_hpc.cli.main import cli

    commands.register(cli)
    monkeypatch.setattr(api_cluster, "_probe", lambda cfg: PROBE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    return tmp_path


@pytest.mark.parametrize("cluster,gpus", CASES, ids=[f"{c}-{g or 'default'}" for c, g in CASES])
def test_estimate_golden(cli, injected, cluster, gpus):
    args = ["estimate", "sweep.yaml", "--cluster", cluster, "--pack", "3", "--time", "1:00:00"]
    r = cli(*args, *(["--gpus", gpus] if gpus else []))
    assert r.code == 0, r
    text = r.out + "".join(f"stderr: {line}\n" for line in r.err.splitlines())
    path = GOLDEN / f"{cluster}--{(gpus or 'default').replace(':', '-')}.txt"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with MNIST_HPC_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs: review, then MNIST_HPC_UPDATE_GOLDEN=1"
    assert "measured on cpu (test), given" in text and "estimate" in text
    assert "measured on cuda" not in text and "measured on a100" not in text  # no GPU figure claimed


def test_rgu_values_are_the_pages():
    # "Allocations and compute scheduling", RGU per GPU (bundle table), checked 2026-12-02
    narval, _ = get_profile("narval")
    assert narval.rgu_per_gpu == 4.0
    assert {k: v.rgu for k, v in narval.mig.items()} == {
        "a100_1g.5gb": 0.57,
        "a100_2g.10gb": 1.14,
        "a100_3g.20gb": 2.0,
        "a100_4g.20gb": 2.3,
    }
    for name in ("fir", "nibi", "rorqual", "trillium"):
        p, _ = get_profile(name)
        assert p.rgu_per_gpu == 12.2
        assert {k.split("_")[-1]: v.rgu for k, v in p.mig.items()} in (
            {},
            {"1g.10gb": 1.74, "2g.20gb": 3.48, "3g.40gb": 6.1},
        )
    for name in ("killarney", "vulcan", "tamia", "generic"):
        assert get_profile(name)[0].rgu_per_gpu is None


def test_a_request_submit_would_refuse_is_refused(cli, injected):
    r = cli("estimate", "sweep.yaml", "--cluster", "tamia", "--gpus", "4")  # whole nodes; arrays: one GPU
    assert r.code == 1 and "one GPU at most" in r.err, r
    r = cli("estimate", "quickstart", "--cluster", "narval", "--gpus", "a100_9g.5gb:1")
    assert r.code == 1 and "did you mean 'a100_1g.5gb'" in r.err and len(r.err.strip().splitlines()) == 1, r
    r = cli("estimate", "quickstart", "--cluster", "tamia", "--gpus", "4")  # one config: a whole node is fine
    assert r.code == 0 and "4 x h100 per task" in r.out and "RGU-hours unknown" in r.out, r


def test_time_warnings(cli, injected):
    low = cli("estimate", "sweep.yaml", "--cluster", "narval", "--pack", "6", "--time", "0:02:00")
    assert "warning: --time 0:02:00 is below the estimated" in low.err, low
    high = cli("estimate", "sweep.yaml", "--cluster", "narval", "--time", "2-00:00:00")
    assert "is far above" in high.err, high
    fine = cli("estimate", "sweep.yaml", "--cluster", "narval", "--time", "0:10:00")
    assert "warning" not in fine.err, fine


def test_dry_runs_print_the_estimate(cli, injected, monkeypatch):
    r = cli("submit", "quickstart", "--cluster", "narval", "--account", "def-x", "--dry-run")
    assert r.code == 0 and "no cost estimate yet" in r.err and "mnist-hpc estimate quickstart" in r.err, r
    monkeypatch.setattr(est, "stored_probe", lambda cfg: PROBE)  # as if `estimate` had probed here
    r = cli(
        "sweep",
        "submit",
        "sweep.yaml",
        "--cluster",
        "narval",
        "--account",
        "def-x",
        "--pack",
        "3",
        "--dry-run",
    )
    assert r.code == 0, r
    assert "estimate for 6 runs on narval (1 x a100 per task, 3 runs per array task, 2 tasks):" in r.err
    assert "RGU-hours (4.0 RGU per a100" in r.err and "(2 tasks of 3)" in r.err
    r = cli(
        "submit",
        "quickstart",
        "--cluster",
        "nibi",
        "--account",
        "def-x",
        "--gpus",
        "h100_1g.10gb:1",
        "--dry-run",
    )
    assert r.code == 0, r
    assert "estimate for 1 run on nibi (1 MIG slice h100_1g.10gb)" in r.err and "1.74 RGU per" in r.err


def test_the_probe_is_stored_and_reused_by_torch_free_dry_runs(tmp_path, monkeypatch):
    from mnist_hpc.config import load_config
    from mnist_hpc.training import probe as probing

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = load_config("quickstart", ["model.name=mlp", "model.hidden=[16]", "data.batch_size=32"])
    assert est.stored_probe(cfg) is None
    first = probing.probe(cfg)
    assert first.step_seconds > 0 and first.source.startswith("median of ")
    again = est.stored_probe(cfg)
    assert again is not None and again.step_seconds == first.step_seconds and "stored probe" in again.source
    other = load_config("quickstart", ["model.name=mlp", "model.hidden=[16]", "data.batch_size=64"])
    assert est.stored_probe(other) is None  # another batch is another figure


# --------------------------------------------------------------------------- --gpus auto, pinned

# (profile, config) -> what --gpus auto asks for without a probe (no CPU judgement possible)
AUTO = {
    ("narval", "quickstart"): "a100_1g.5gb:1",
    ("narval", "cnn_classic"): "a100_1g.5gb:1",
    ("narval", "resnet18"): "a100_3g.20gb:1",
    ("nibi", "quickstart"): "h100_1g.10gb:1",
    ("nibi", "cnn_classic"): "h100_1g.10gb:1",
    ("nibi", "resnet18"): "h100_3g.40gb:1",
    ("rorqual", "quickstart"): "h100_1g.10gb:1",
    ("rorqual", "resnet18"): "h100_3g.40gb:1",
    ("fir", "quickstart"): "nvidia_h100_80gb_hbm3_1g.10gb:1",
    ("fir", "resnet18"): "nvidia_h100_80gb_hbm3_3g.40gb:1",
    ("trillium", "quickstart"): "1",
    ("trillium", "resnet18"): "1",
    ("killarney", "quickstart"): "1",
    ("vulcan", "quickstart"): "1",
    ("tamia", "quickstart"): "4",
    ("local", "quickstart"): "0",
    ("generic", "quickstart"): "1",
}


@pytest.mark.parametrize("cluster,config", sorted(AUTO), ids=[f"{c}-{m}" for c, m in sorted(AUTO)])
def test_gpus_auto_choices(cluster, config):
    from mnist_hpc.config import load_config

    choice = est.choose_gpus([load_config(config)], get_profile(cluster)[0], time_limit="1:00:00")
    assert choice.gpus == AUTO[(cluster, config)], choice.why


def test_gpus_auto_cpu_ddp_and_unknown_sizes():
    from mnist_hpc.config import load_config

    narval = get_profile("narval")[0]
    quick = load_config("quickstart", ["data.batch_size=128"])  # 2 epochs x 422 steps
    fast_cpu = est.Probe(0.010, "cpu (test)", "given")  # ~8 s a run: the CPU, within an hour
    assert est.choose_gpus([quick], narval, time_limit="1:00:00", probe=fast_cpu).gpus == "0"
    slow_cpu = est.Probe(5.0, "cpu (test)", "given")  # ~70 min a run: not within the hour
    assert est.choose_gpus([quick], narval, time_limit="1:00:00", probe=slow_cpu).gpus == "a100_1g.5gb:1"
    trillium = get_profile("trillium")[0]  # CPU jobs are whole 192-core nodes there: never chosen
    assert est.choose_gpus([quick], trillium, time_limit="1:00:00", probe=fast_cpu).gpus == "1"
    ddp = est.choose_gpus([quick], narval, time_limit="1:00:00", nodes=2)
    assert ddp.gpus == "1" and "DDP" in ddp.why
    big = load_config("quickstart", ["model.name=mlp", "model.hidden=[4096,4096,4096]"])  # ~37M parameters
    assert est.choose_gpus([big], narval, time_limit="1:00:00").gpus == "1"


def test_explicit_gpus_win_and_auto_says_why(cli, injected):
    r = cli(
        "submit", "quickstart", "--cluster", "narval", "--account", "def-x", "--gpus", "a100:1", "--dry-run"
    )
    assert r.code == 0 and "--gpus-per-node=a100:1" in r.out and "--gpus auto" not in r.err, r
    r = cli(
        "submit", "quickstart", "--cluster", "narval", "--account", "def-x", "--gpus", "auto", "--dry-run"
    )
    assert r.code == 0 and "--gpus-per-node=a100_1g.5gb:1" in r.out, r
    assert "--gpus auto: a100_1g.5gb:1 -- MIG slice a100_1g.5gb" in r.err


def test_pack_auto_fills_the_task_time_from_the_stored_probe(cli, injected, monkeypatch):
    r = cli(
        "sweep",
        "submit",
        "sweep.yaml",
        "--cluster",
        "narval",
        "--account",
        "def-x",
        "--pack",
        "auto",
        "--dry-run",
    )
    assert r.code == 1 and "--pack auto needs the runs' time: run mnist-hpc estimate" in r.err, r
    monkeypatch.setattr(est, "stored_probe", lambda cfg: est.Probe(0.1, "cpu (test)", "given"))
    # a run: 2 epochs x 422 steps x 0.1 s = 84 s; x 1.5 = 126 s; (600 - 120) // 126 = 3 per task
    r = cli(
        "sweep",
        "submit",
        "sweep.yaml",
        "--cluster",
        "narval",
        "--account",
        "def-x",
        "--pack",
        "auto",
        "--task-time",
        "0:10:00",
        "--dry-run",
    )
    assert (
        r.code == 0 and "--pack auto: 3 runs per array task, 2 tasks" in r.err and "(2 tasks of 3)" in r.err
    ), r
    assert 'args=(sweep task "$SWEEP" --task "$(( SLURM_ARRAY_TASK_ID + INDEX_OFFSET ))" --pack 3)' in r.out
    r = cli(
        "sweep",
        "submit",
        "sweep.yaml",
        "--cluster",
        "narval",
        "--account",
        "def-x",
        "--pack",
        "x",
        "--dry-run",
    )
    assert r.code == 1 and "expected a number of runs per array task" in r.err, r
