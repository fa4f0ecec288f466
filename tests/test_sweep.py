"""Sweep files: expansion (grid, zip, random, seeds), names, validation, the ready sweeps, and
the local runner (resumable, failures reported) with a stand-in for `mnist-hpc train`."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mnist_hpc.cli.experiments import report_command, sweep_group
from mnist_hpc.config import load_config, yaml_load
from mnist_hpc.errors import ConfigError
from mnist_hpc.experiments import sweep as sweep_mod
from mnist_hpc.experiments.sweepfile import dump_value, load_sweep
from tests.paths import ROOT

READY_SWEEPS = ["learning_rate", "batch_size", "epochs", "hidden_layers", "architectures", "fashion"]


@pytest.fixture
def base(tmp_path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        experiment: {{name: tiny, seed: 10, output_dir: {tmp_path / "runs"}}}
        model: {{name: mlp, hidden: [8]}}
        train: {{epochs: 1}}
        """)
    )
    return path


def write_sweep(tmp_path: Path, body: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text("base: base.yaml\n" + textwrap.dedent(body))
    return path


# --------------------------------------------------------------------------- expansion


def test_grid_is_the_cartesian_product_in_file_order(tmp_path, base):
    sw = load_sweep(
        write_sweep(
            tmp_path,
            """\
        grid:
          optim.lr: [0.1, 0.01]
          data.batch_size: [32, 64, 128]
        """,
        )
    )
    assert [r.params for r in sw.runs][:4] == [
        {"optim.lr": 0.1, "data.batch_size": 32},
        {"optim.lr": 0.1, "data.batch_size": 64},
        {"optim.lr": 0.1, "data.batch_size": 128},
        {"optim.lr": 0.01, "data.batch_size": 32},
    ]
    assert len(sw.runs) == 6
    assert [r.index for r in sw.runs] == list(range(6))
    assert sw.runs[0].name == "lr=0.1_bs=32"
    assert sw.runs[0].overrides == ["optim.lr=0.1", "data.batch_size=32"]
    assert sw.axes == ["optim.lr", "data.batch_size"]


def test_zip_varies_lists_together(tmp_path, base):
    sw = load_sweep(
        write_sweep(
            tmp_path,
            """\
        zip:
          data.batch_size: [32, 128, 512]
          optim.lr: [0.00025, 0.001, 0.004]
        """,
        )
    )
    assert [(r.config.data.batch_size, r.config.optim.lr) for r in sw.runs] == [
        (32, 0.00025),
        (128, 0.001),
        (512, 0.004),
    ]


def test_random_samples_are_in_range_and_reproducible(tmp_path, base):
    body = """\
        random:
          count: 20
          seed: {seed}
          params:
            optim.lr: {{loguniform: [1.0e-4, 1.0e-1]}}
            optim.weight_decay: {{uniform: [0, 0.1]}}
            train.epochs: {{int_uniform: [1, 3]}}
            model.hidden: {{choice: [[16], [32, 16]]}}
        """
    runs = load_sweep(write_sweep(tmp_path, body.format(seed=1))).runs
    assert len(runs) == 20
    for r in runs:
        assert 1e-4 <= r.config.optim.lr <= 1e-1
        assert 0 <= r.config.optim.weight_decay <= 0.1
        assert r.config.train.epochs in (1, 2, 3)
        assert r.config.model.hidden in ([16], [32, 16])
    assert len({r.config.optim.lr for r in runs}) > 10
    assert {r.config.train.epochs for r in runs} == {1, 2, 3}
    again = load_sweep(write_sweep(tmp_path, body.format(seed=1))).runs
    assert [r.overrides for r in again] == [r.overrides for r in runs]
    other = load_sweep(write_sweep(tmp_path, body.format(seed=2))).runs
    assert [r.overrides for r in other] != [r.overrides for r in runs]


def test_seeds_list_and_repeat(tmp_path, base):
    sw = load_sweep(
        write_sweep(
            tmp_path,
            """\
        grid: {optim.lr: [0.1, 0.01]}
        seeds: [3, 4]
        """,
        )
    )
    assert [(r.config.optim.lr, r.config.experiment.seed) for r in sw.runs] == [
        (0.1, 3),
        (0.1, 4),
        (0.01, 3),
        (0.01, 4),
    ]
    assert sw.runs[1].name == "lr=0.1_seed=4"
    repeat = load_sweep(write_sweep(tmp_path, "seeds: {repeat: 3}\n"))
    assert [r.config.experiment.seed for r in repeat.runs] == [10, 11, 12]  # from the base seed


def test_axes_combine_as_a_product(tmp_path, base):
    sw = load_sweep(
        write_sweep(
            tmp_path,
            """\
        grid: {optim.lr: [0.1, 0.01]}
        zip: {data.batch_size: [32, 64], train.epochs: [1, 2]}
        random: {count: 2, params: {optim.weight_decay: {uniform: [0, 1]}}}
        seeds: {repeat: 2}
        """,
        )
    )
    assert len(sw.runs) == 2 * 2 * 2 * 2
    assert len({r.name for r in sw.runs}) == 16


def test_names_are_unique_and_filesystem_safe(tmp_path, base):
    sw = load_sweep(
        write_sweep(
            tmp_path,
            """\
        grid:
          model.hidden: [[], [64, 32], [64, 32]]
          model.activation: [relu]
          optim.name: [sgd, adamw]
        """,
        )
    )
    names = [r.name for r in sw.runs]
    assert len(set(names)) == len(names)
    assert names[:2] == ["hidden=none_activation=relu_optim=sgd", "hidden=none_activation=relu_optim=adamw"]
    assert "hidden=64-32_activation=relu_optim=sgd_2" in names
    assert all("/" not in n and " " not in n for n in names)


def test_keys_with_the_same_last_part_keep_their_full_name(tmp_path, base):
    sw = load_sweep(
        write_sweep(
            tmp_path,
            """\
        grid:
          train.early_stopping.patience: [2]
          data.augment.shift: [1.0]
          data.augment.rotate: [5.0]
          optim.momentum: [0.5]
          runtime.max_requeues: [1]
          data.subset: [100]
          model: [{name: mlp, hidden: [4]}]
          optim.name: [sgd]
          optim.schedule: [step]
          optim.step_size: [1]
        """,
        )
    )
    (run,) = sw.runs
    assert run.name.startswith("patience=2_shift=1_rotate=5_momentum=0.5_max_requeues=1")
    assert "_model=mlp-4_" in run.name


def test_values_round_trip_through_set_syntax():
    for value in [0.001, 1e-5, 3, "cnn", "1", True, None, [], [256, 64], {"name": "mlp", "hidden": [8]}]:
        assert yaml_load(dump_value(value)) == value, value
    assert dump_value([256, 64]) == "[256, 64]"
    assert dump_value({"name": "mlp"}) == "{name: mlp}"


def test_runs_load_with_the_train_command_contract(tmp_path, base):
    """`train BASE --set ...` on each run's overrides gives exactly the run's config."""
    sw = load_sweep(
        write_sweep(
            tmp_path,
            """\
        name: mine
        set: {train: {epochs: 2}}
        grid: {model: [{name: mlp}, {name: cnn, hidden: 32}]}
        seeds: [1]
        """,
        ),
        overrides=["data.batch_size=16"],
    )
    assert sw.name == "mine"
    assert sw.base == base
    assert sw.fixed == ["train.epochs=2", "data.batch_size=16"]
    assert sw.output_dir == tmp_path / "runs" / "sweeps" / "mine"
    for run in sw.runs:
        assert run.run_dir == sw.output_dir / run.name
        assert load_config(sw.base, run.overrides) == run.config
    assert sw.runs[1].config.model.to_dict() == {
        "name": "cnn",
        "channels": [32, 64],
        "hidden": 32,
        "dropout1": 0.25,
        "dropout2": 0.5,
    }
    argv = sweep_mod.train_argv(sw, sw.runs[0], data_dir="/data")
    assert argv[-4:] == ["--run-dir", str(sw.runs[0].run_dir), "--data-dir", "/data"]
    assert argv[argv.index(str(base)) + 1 :][:2] == ["--set", "train.epochs=2"]


def test_command_line_set_replaces_the_files_set(tmp_path, base):
    sw = load_sweep(
        write_sweep(tmp_path, "set: {train.epochs: 3}\nseeds: [0]\n"), overrides=["train.epochs=1"]
    )
    assert sw.fixed == ["train.epochs=1"]
    assert sw.runs[0].config.train.epochs == 1


# --------------------------------------------------------------------------- the ready sweeps


@pytest.mark.parametrize("name", READY_SWEEPS)
def test_ready_sweeps_plan(name):
    path = ROOT / "configs" / "sweeps" / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("# Workshop question:"), "each sweep opens with the question it answers"
    assert f"sweep run  configs/sweeps/{name}.yaml" in text
    result = CliRunner().invoke(sweep_group, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    sw = load_sweep(path)
    assert len(sw.runs) >= 3
    assert len(result.output.splitlines()) >= len(sw.runs) + 1
    assert sw.base.parent == ROOT / "configs"


def test_architectures_compares_the_five_models_on_one_budget():
    sw = load_sweep(
        ROOT / "configs" / "sweeps" / "architectures.yaml", overrides=["train.epochs=1", "data.subset=500"]
    )
    assert sorted(r.config.model.name for r in sw.runs) == ["cnn", "fast", "lenet5", "mlp", "resnet18"]
    assert {(r.config.train.epochs, r.config.data.subset, r.config.optim.name) for r in sw.runs} == {
        (1, 500, sw.runs[0].config.optim.name)
    }


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "body, message",
    [
        ("grid: {optim.lrr: [0.1]}\n", "grid.optim.lrr: unknown key optim.lrr (did you mean 'lr'?)"),
        ("grid: {model.hiden: [[4]]}\n", "unknown key model.hiden for model 'mlp' (did you mean 'hidden'?)"),
        ("grid: {optim.lr: []}\n", "grid.optim.lr: empty list"),
        ("zip: {optim.lr: []}\n", "zip.optim.lr: empty list"),
        ("grid: {optim.lr: 0.1}\n", "grid.optim.lr: expected a list, got 0.1"),
        (
            "random: {params: {optim.lr: {loguniform: [1.0e-4, 0.1]}}}\n",
            "random.count: missing: how many runs to draw",
        ),
        (
            "random: {count: 2, params: {optim.lr: {logunifrom: [1.0e-4, 0.1]}}}\n",
            "random.params.optim.lr.logunifrom: unknown key (did you mean 'loguniform'?)",
        ),
        ("random: {count: 2, params: {optim.lr: {loguniform: [0, 0.1]}}}\n", "the bounds must be > 0"),
        (
            "zip: {optim.lr: [0.1, 0.2], data.batch_size: [32]}\n",
            "zip: the lists must have the same length (optim.lr has 2, data.batch_size has 1)",
        ),
        ("gird: {optim.lr: [0.1]}\n", "gird: unknown key (did you mean 'grid'?)"),
        ("name: x\n", "nothing varies"),
        ("grid: {optim.lr: [0.1, -1]}\n", "run 1 (lr=-1): optim.lr: expected a learning rate > 0"),
        ("set: {train.epochs: 2}\ngrid: {train.epochs: [1, 2]}\n", "given in set: and grid:"),
        ("seeds: []\n", "seeds: empty list"),
    ],
)
def test_bad_sweep_files_exit_2_with_one_clear_line(tmp_path, base, body, message):
    path = write_sweep(tmp_path, body)
    for command in ("plan", "run"):
        result = CliRunner().invoke(sweep_group, [command, str(path)])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: {path}: ")
        assert message in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_missing_base_and_set_on_an_axis(tmp_path, base):
    missing = tmp_path / "m.yaml"
    missing.write_text("base: nope.yaml\nseeds: [1]\n")
    result = CliRunner().invoke(sweep_group, ["plan", str(missing)])
    assert result.exit_code == 2 and "base: nope.yaml: no such file" in result.output
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.1, 0.2]}\n")
    result = CliRunner().invoke(sweep_group, ["plan", str(path), "--set", "optim.lr=1"])
    assert result.exit_code == 2 and "optim.lr is an axis of the sweep" in result.output
    result = CliRunner().invoke(sweep_group, ["run", str(path), "--index", "2"])
    assert result.exit_code == 2 and "the sweep" in result.output and "has 2 runs" in result.output
    with pytest.raises(ConfigError, match="no such file"):
        load_sweep(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- running

FAKE_TRAIN = '''
"""Stands in for `mnist-hpc train BASE --set K=V ... --run-dir DIR`: writes a run folder."""
import json, os, sys
from pathlib import Path
from mnist_hpc.config import load_config

args = sys.argv[1:]
base, overrides, run_dir = args[0], [], None
i = 1
while i < len(args):
    if args[i] == "--set":
        overrides.append(args[i + 1]); i += 2
    elif args[i] == "--run-dir":
        run_dir = Path(args[i + 1]); i += 2
    else:
        i += 1
with open(os.environ["FAKE_TRAIN_CALLS"], "a") as f:
    f.write(json.dumps({"run_dir": run_dir.name, "argv": args}) + "\\n")
print("epoch 1/1  fake training")
if os.environ.get("FAKE_TRAIN_FAIL") and os.environ["FAKE_TRAIN_FAIL"] in run_dir.name:
    print("error: the fake trainer was told to fail", file=sys.stderr)
    sys.exit(3)
cfg = load_config(base, overrides)
run_dir.mkdir(parents=True, exist_ok=True)
if os.environ.get("FAKE_TRAIN_REQUEUE") and os.environ["FAKE_TRAIN_REQUEUE"] in run_dir.name:
    # what the trainer records after the time-limit signal's checkpoint and `scontrol requeue`
    (run_dir / "state.json").write_text(json.dumps({"state": "interrupted", "signal": "SIGUSR1",
                                                    "epoch": 2, "step": 17, "requeued": True}))
    sys.exit(75)
(run_dir / "config.yaml").write_text(cfg.to_yaml())
acc = round(0.9 + cfg.optim.lr, 6)
(run_dir / "metrics.csv").write_text(
    "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,images_per_s\\n"
    f"1,0.5,0.8,0.4,{acc},{cfg.optim.lr},1.0,1000\\n")
(run_dir / "summary.json").write_text(json.dumps({
    "status": "completed", "test_accuracy": acc, "best_epoch": 1, "train_seconds": 1.5,
    "params": 1234, "images_per_s": 1000.0}))
'''


def row_count(table: str) -> int:
    lines = table.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("-  "))
    return len([line for line in lines[rule + 1 :] if line[:1].isdigit()])


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setattr(sweep_mod, "TRAIN_COMMAND", [sys.executable, str(script)])
    monkeypatch.setenv("FAKE_TRAIN_CALLS", str(calls))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))

    def runs_called() -> list:
        if not calls.exists():
            return []
        return [json.loads(line) for line in calls.read_text().splitlines()]

    return runs_called


def test_rerunning_a_half_finished_sweep_runs_only_the_missing_runs(tmp_path, base, fake_train, monkeypatch):
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.01, 0.02, 0.03, 0.04]}\n")
    sw = load_sweep(path)

    monkeypatch.setenv("FAKE_TRAIN_FAIL", "lr=0.03")
    first = CliRunner().invoke(sweep_group, ["run", str(path)])
    assert first.exit_code == 1
    assert sorted(c["run_dir"] for c in fake_train()) == [r.name for r in sw.runs]
    failed_log = sw.output_dir / "lr=0.03" / "train.log"
    assert "1 run failed" in first.output
    assert f"[2] lr=0.03: exit 3, log {failed_log}" in first.output
    assert "error: the fake trainer was told to fail" in first.output
    assert "epoch 1/1  fake training" in failed_log.read_text()
    assert "3 of 4 runs completed" in first.output  # the table of what finished
    assert "<- best" in first.output

    # one more finished run disappears, as if interrupted before writing its summary
    (sw.output_dir / "lr=0.01" / "summary.json").write_text('{"status": "running"}')
    monkeypatch.delenv("FAKE_TRAIN_FAIL")
    second = CliRunner().invoke(sweep_group, ["run", str(path)])
    assert second.exit_code == 0, second.output
    assert sorted(c["run_dir"] for c in fake_train()[4:]) == ["lr=0.01", "lr=0.03"]
    assert "2 of 4 runs already completed, skipping them" in second.output
    assert "4 of 4 runs completed" in second.output
    best = [line for line in second.output.splitlines() if "<- best" in line]
    assert len(best) == 1 and "0.04" in best[0] and "94.00" in best[0]

    third = CliRunner().invoke(sweep_group, ["run", str(path)])
    assert third.exit_code == 0 and len(fake_train()) == 6
    plan = CliRunner().invoke(sweep_group, ["plan", str(path)])
    assert plan.output.count("(done)") == 4
    report = CliRunner().invoke(report_command, [str(path)])  # a sweep file names its folder
    assert report.exit_code == 0 and row_count(report.output) == 4


def test_index_runs_one_run_and_exits_with_its_code(tmp_path, base, fake_train, monkeypatch):
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.01, 0.02, 0.03]}\n")
    result = CliRunner().invoke(
        sweep_group, ["run", str(path), "--index", "1", "--data-dir", str(tmp_path / "data")]
    )
    assert result.exit_code == 0, result.output
    (call,) = fake_train()
    assert call["run_dir"] == "lr=0.02"
    assert call["argv"][-2:] == ["--data-dir", str(tmp_path / "data")]
    monkeypatch.setenv("FAKE_TRAIN_FAIL", "lr=0.03")
    result = CliRunner().invoke(sweep_group, ["run", str(path), "--index", "2"])
    assert result.exit_code == 3


def test_a_requeued_run_says_so_and_where_it_resumes(tmp_path, base, fake_train, monkeypatch):
    """An array task whose run checkpointed on the time-limit signal and requeued itself is no
    failure: the wrapper says where it stopped and exits 75 like `train`, without "Fix the cause"."""
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.01, 0.02]}\n")
    monkeypatch.setenv("FAKE_TRAIN_REQUEUE", "lr=0.02")
    result = CliRunner().invoke(sweep_group, ["run", str(path), "--index", "1"])
    assert result.exit_code == 75, result.output
    assert "[1] lr=0.02: requeued at epoch 2 step 17; resumes in the next start" in result.output
    assert "FAILED" not in result.output and "Fix the cause" not in result.output
    # a run that fails for real still says so
    monkeypatch.setenv("FAKE_TRAIN_FAIL", "lr=0.01")
    result = CliRunner().invoke(sweep_group, ["run", str(path), "--index", "0"])
    assert result.exit_code == 3 and "FAILED (exit 3)" in result.output and "Fix the cause" in result.output


def test_parallel_runs_share_the_cores(tmp_path, base, fake_train, monkeypatch):
    monkeypatch.setattr(sweep_mod, "available_cores", lambda: 8)
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.01, 0.02, 0.03, 0.04]}\n")
    result = CliRunner().invoke(sweep_group, ["run", str(path), "--parallel", "2"])
    assert result.exit_code == 0, result.output
    calls = fake_train()
    assert len(calls) == 4
    assert all("runtime.threads=4" in c["argv"] for c in calls)
    # a config that sets its threads keeps them
    fixed = write_sweep(
        tmp_path, "set: {runtime.threads: 1}\ngrid: {optim.lr: [0.05, 0.06]}\n", name="t.yaml"
    )
    CliRunner().invoke(sweep_group, ["run", str(fixed), "-j", "2"])
    assert all("runtime.threads=4" not in c["argv"] for c in fake_train()[4:])


def test_a_run_with_checkpoints_is_resumed(tmp_path, base, fake_train):
    path = write_sweep(tmp_path, "grid: {optim.lr: [0.01, 0.02, 0.03]}\n")
    sw = load_sweep(path)
    (sw.runs[0].run_dir / "checkpoints").mkdir(parents=True)
    (sw.runs[0].run_dir / "checkpoints" / "last-e1.pt").write_bytes(b"x")
    CliRunner().invoke(sweep_group, ["run", str(path)])
    argv = {c["run_dir"]: c["argv"] for c in fake_train()}
    assert argv["lr=0.01"][-2:] == ["--resume", "auto"]
    assert "--resume" not in argv["lr=0.02"]


SIGNAL_AWARE_TRAIN = """
import json, os, signal, sys, time
from pathlib import Path
run_dir = Path(sys.argv[sys.argv.index("--run-dir") + 1])
signal.signal(signal.SIGUSR1, lambda s, f: (print("got SIGUSR1: checkpoint saved", flush=True),
                                            sys.exit(75)))
with open(os.environ["FAKE_TRAIN_CALLS"], "a") as f:
    f.write(json.dumps({"run_dir": run_dir.name, "argv": sys.argv[1:]}) + "\\n")
time.sleep(30)
sys.exit(1)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_requeue_signal_is_passed_on_and_no_new_run_starts(tmp_path, base, fake_train, monkeypatch):
    """Under Slurm `sweep run --index I` gets the time-limit signal from the batch shell."""
    script = tmp_path / "signal_train.py"
    script.write_text(SIGNAL_AWARE_TRAIN)
    monkeypatch.setattr(sweep_mod, "TRAIN_COMMAND", [sys.executable, str(script)])
    sw = load_sweep(write_sweep(tmp_path, "grid: {optim.lr: [0.01, 0.02]}\n"))

    def signal_when_started():
        deadline = time.monotonic() + 20
        while not fake_train() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # let the child install its handler
        os.kill(os.getpid(), signal.SIGUSR1)

    threading.Thread(target=signal_when_started, daemon=True).start()
    results = sweep_mod.run_sweep(sw, echo=lambda line: None)
    assert [(r.status, r.returncode) for r in results] == [("failed", 75), ("failed", None)]
    assert [c["run_dir"] for c in fake_train()] == ["lr=0.01"]
    assert "got SIGUSR1: checkpoint saved" in results[0].log.read_text()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers restored
