"""Experiment trackers (issue 14) with the real packages: TensorBoard event files, an offline W&B
run and an MLflow file store, read back and compared with summary.json; a run without a network;
a resumed run that continues its tracker runs; the config's loggers and the extras they need."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_hpc.config import config_from_dict, load_config
from mnist_hpc.config.extras import NEEDS, installed, required_packages
from mnist_hpc.errors import ConfigError, Interrupted, UserError
from mnist_hpc.runs.loggers import Logger, Trackers, open_trackers, read_trackers
from tests.paths import ROOT

TRACKING = ("tensorboard", "wandb", "mlflow")
needs_tracking = pytest.mark.skipif(
    not all(installed(m) for m in TRACKING),
    reason="the tracking extra is not installed (pip install 'mnist-hpc[tracking]')",
)
TRACKER_ENV = ("WANDB_MODE", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")


def config(tmp_path, loggers=("csv", "tensorboard", "wandb", "mlflow"), **train) -> dict:
    """A tiny run on the synthetic data whose accuracy is not 100% (so 'equal' means something),
    with a checkpoint every 5 steps (mid-epoch step scalars)."""
    return {
        "experiment": {
            "name": "tiny",
            "seed": 0,
            "output_dir": str(tmp_path / "runs"),
            "loggers": list(loggers),
        },
        "data": {"dataset": "mnist", "val_split": 0.2, "batch_size": 64, "eval_batch_size": 256},
        "model": {"name": "mlp", "hidden": [8]},
        "optim": {"name": "adam", "lr": 0.0005},
        "train": {"epochs": 2, "checkpoint": {"every": 5, "unit": "steps"}, **train},
        "runtime": {"threads": 1},
    }


def write_config(tmp_path, **kw) -> Path:
    import yaml

    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, **kw)))
    return path


def without_network() -> list:
    """argv prefix that runs a command in a network namespace of its own (only a loopback)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed: cannot run a command without a network")
    for prefix in ([unshare, "-n"], [unshare, "-rn"]):  # as root; else in a user namespace
        probe = subprocess.run([*prefix, "cat", "/proc/net/dev"], capture_output=True, text=True)
        if probe.returncode == 0:  # /proc/net/dev lists the interfaces of the reader's namespace
            interfaces = [line.split(":")[0].strip() for line in probe.stdout.splitlines()[2:]]
            assert interfaces == ["lo"], probe.stdout  # nothing but the loopback
            return prefix
    pytest.skip("unshare -n is not permitted here (needs root or unprivileged user namespaces)")


# --------------------------------------------------------------------------- reading trackers back


def tensorboard_scalars(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def wandb_records(path: Path) -> list:
    """The records of a ``.wandb`` file: W&B's header, then a LevelDB-style log of protobufs
    (32 KiB blocks; each chunk: crc32, length, type FULL=1/FIRST=2/MIDDLE=3/LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_summary(records) -> dict:
    out = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            out.update({u.key: json.loads(u.value_json) for u in r.summary.update if u.key})
    return out


def wandb_config(records) -> dict:
    out = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            out.update({u.key: json.loads(u.value_json) for u in r.config.update if u.key})
    return out


def mlflow_client(run_dir: Path):
    from mlflow.tracking import MlflowClient

    from mnist_hpc.runs.loggers.mlflow_logger import own_store

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=own_store(run_dir))


# --------------------------------------------------------------------------- the four loggers


@needs_tracking
def test_all_four_loggers_without_a_network(tmp_path, synth_root):
    prefix = without_network()
    cfg, run = write_config(tmp_path), tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in TRACKER_ENV}
    env.update(MNIST_HPC_DATA_DIR=str(synth_root), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "mnist_hpc", "train", str(cfg), "--run-dir", str(run)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    acc = summary["test_accuracy"]
    assert 0.2 < acc < 0.99  # a figure worth comparing
    ids = read_trackers(run)
    assert ids["wandb"]["id"] == json.loads((run / "run.json").read_text())["run_id"]
    sync = f"wandb sync {run}/wandb/offline-run-*"
    assert any(line.startswith("W&B: ") and sync in line for line in proc.stdout.splitlines()), proc.stdout

    # TensorBoard: float32 scalars, so equal as float32
    tb = tensorboard_scalars(run / "tensorboard")
    assert np.float32(tb.Scalars("test/accuracy")[-1].value) == np.float32(acc)
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(e.step, np.float32(e.value)) for e in tb.Scalars("accuracy/val")] == [
        (int(r["epoch"]), np.float32(float(r["val_acc"]))) for r in rows
    ]
    steps = [e.step for e in tb.Scalars("step/train_loss")]
    assert steps == sorted(steps) and len(steps) > 2  # mid-epoch checkpoints and epoch ends
    assert "_hparams_/session_start_info" in tb.PluginTagToContent("hparams")
    assert {"plots/learning_curves", "plots/confusion_matrix", "plots/misclassified"} <= set(
        tb.Tags()["images"]
    )

    # W&B: one offline run folder, named by the run's id, holding the summary and the config
    (offline,) = sorted((run / "wandb").glob("offline-run-*"))
    assert offline.name.endswith("-" + ids["wandb"]["id"])
    records = wandb_records(next(offline.glob("*.wandb")))
    assert wandb_summary(records)["test_accuracy"] == acc
    assert wandb_config(records)["optim"]["lr"] == 0.0005

    # MLflow: the file store in the run folder
    client = mlflow_client(run)
    tracked = client.get_run(ids["mlflow"]["run_id"])
    assert tracked.data.metrics["test_accuracy"] == acc
    assert tracked.data.params["optim.lr"] == "0.0005" and tracked.data.params["model.hidden"] == "[8]"
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "run"
    history = client.get_metric_history(tracked.info.run_id, "accuracy/val")
    assert [(m.step, m.value) for m in history] == [(int(r["epoch"]), float(r["val_acc"])) for r in rows]
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id)} | {
        a.path for a in client.list_artifacts(tracked.info.run_id, "plots")
    }
    assert {"summary.json", "metrics.csv", "plots/learning_curves.png"} <= artifacts


@needs_tracking
def test_a_resumed_run_continues_its_tracker_runs(tmp_path, synth_root, monkeypatch):
    from mnist_hpc.training.context import TrainContext
    from mnist_hpc.training.run import run_training
    from mnist_hpc.training.stopflag import StopFlag

    for name in (*TRACKER_ENV, "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    cfg, run, lines = config_from_dict(config(tmp_path)), tmp_path / "run", []
    stopped = StopFlag()
    stopped.received = signal.SIGUSR1  # stops at the first step, after its checkpoint
    with pytest.raises(Interrupted):
        run_training(
            cfg,
            ctx=TrainContext(stop=stopped),
            data_dir=synth_root,
            run_dir=run,
            progress=False,
            echo=lines.append,
        )
    first = read_trackers(run)
    client = mlflow_client(run)
    assert client.get_run(first["mlflow"]["run_id"]).info.status == "KILLED"
    assert not any(line.startswith("W&B: ") for line in lines)  # the sync hint comes when it is done

    run_training(
        cfg,
        ctx=TrainContext(stop=StopFlag()),
        data_dir=synth_root,
        run_dir=run,
        resume="auto",
        progress=False,
        echo=lines.append,
    )
    assert read_trackers(run) == first
    tracked = client.get_run(first["mlflow"]["run_id"])
    assert tracked.info.status == "FINISHED"
    assert len(client.search_runs([tracked.info.experiment_id])) == 1
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "accuracy/val")] == [1, 2]
    assert (
        tracked.data.metrics["test_accuracy"]
        == json.loads((run / "summary.json").read_text())["test_accuracy"]
    )
    starts = sorted((run / "wandb").glob("offline-run-*"))
    assert len(starts) == 2 and all(p.name.endswith("-" + first["wandb"]["id"]) for p in starts)
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert [e.step for e in tensorboard_scalars(run / "tensorboard").Scalars("accuracy/val")] == [1, 2]


@needs_tracking
@pytest.mark.slow  # a real multi-process or multi-run training: ~20-50 s on 2 cores
def test_under_ddp_only_rank_0_logs(tmp_path, synth_root):
    cfg, run = write_config(tmp_path, epochs=1), tmp_path / "run"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in TRACKER_ENV
        and not k.startswith("SLURM_")
        and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_hpc",
            "train",
            str(cfg),
            "--data-dir",
            str(synth_root),
            "--run-dir",
            str(run),
            "--nproc",
            "2",
        ],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    client = mlflow_client(run)
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert sum(line.startswith("W&B: ") for line in proc.stdout.splitlines()) == 1


@needs_tracking
def test_sync_shows_the_wandb_command_and_runs_it(tmp_path, synth_root, monkeypatch, cli):
    from mnist_hpc.training.context import TrainContext
    from mnist_hpc.training.run import run_training

    for name in TRACKER_ENV:
        monkeypatch.delenv(name, raising=False)
    cfg, run = config_from_dict(config(tmp_path, loggers=("wandb",), epochs=1)), tmp_path / "run"
    run_training(
        cfg, ctx=TrainContext(), data_dir=synth_root, run_dir=run, progress=False, echo=lambda m: None
    )
    r = cli("sync", run, "--dry-run")  # wandb's own dry run: names what it would upload, no network
    assert r.code == 0, r
    (offline,) = (run / "wandb").glob("offline-run-*")
    assert f"{run}: wandb sync --dry-run {offline}" in r.out


def test_sync_refuses_what_it_cannot_upload(tmp_path, cli, monkeypatch):
    r = cli("sync", tmp_path / "nope")
    assert r.code == 1 and r.err.strip() == f"error: {tmp_path / 'nope'}: no such run folder"
    r = cli("sync", tmp_path)
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1 and "no offline W&B run in it" in r.err
    (tmp_path / "wandb" / "offline-run-20260101_000000-abc").mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    r = cli("sync", tmp_path)
    assert r.code == 1 and r.err.strip() == (
        "error: mnist-hpc sync needs wandb, which is not installed: "
        "pip install 'mnist-hpc[tracking]' (or just: pip install wandb)"
    )


# --------------------------------------------------------------------------- the config's loggers


def test_loggers_always_start_with_csv_and_tensorboard_true_adds_tensorboard():
    assert config_from_dict({}).experiment.loggers == ["csv"]
    assert config_from_dict({"experiment": {"loggers": ["mlflow", "csv", "mlflow"]}}).experiment.loggers == [
        "csv",
        "mlflow",
    ]
    old = config_from_dict({"experiment": {"tensorboard": True}})  # the older spelling still works
    assert old.experiment.loggers == ["csv", "tensorboard"]
    assert config_from_dict(old.to_dict()).to_dict() == old.to_dict()  # stable when read back


def test_an_unknown_logger_is_one_line_with_a_suggestion(tmp_path):
    path = write_config(tmp_path, loggers=["csv", "wandbb"])
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == (
        f"{path}: experiment.loggers[1]: expected one of 'csv', 'tensorboard', 'wandb', "
        f"'mlflow', got 'wandbb' (did you mean 'wandb'?)"
    )


def test_a_logger_without_its_package_fails_when_the_config_is_loaded(tmp_path, cli, monkeypatch):
    path = write_config(tmp_path, loggers=["wandb"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    expected = (
        f"{path}: experiment.loggers: wandb needs wandb, which is not installed: "
        f"pip install 'mnist-hpc[tracking]' (or just: pip install wandb)"
    )
    r = cli("config", "validate", path)
    assert r.code == 2 and r.err.strip() == f"error {expected}"
    r = cli("train", path)
    assert r.code == 2 and r.err.strip() == f"error: {expected}"
    assert not (tmp_path / "runs").exists()  # nothing was started
    import mnist_hpc

    with pytest.raises(
        ConfigError, match="pip install 'mnist-hpc\\[tracking\\]'"
    ):  # before any job is queued
        mnist_hpc.submit(path, cluster="local", dry_run=True)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"base: {path.name}\ngrid:\n  optim.lr: [0.001, 0.01]\n")
    r = cli("sweep", "plan", sweep)
    assert r.code == 2 and r.err.strip() == f"error: {sweep}: " + expected.split(": ", 1)[1]


def test_a_logger_without_its_package_is_one_line_when_it_opens(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    cfg = config_from_dict({"experiment": {"loggers": ["tensorboard"]}})
    with pytest.raises(
        UserError,
        match=r"^experiment.loggers: tensorboard needs tensorboard, which is not "
        r"installed: pip install 'mnist-hpc\[tracking\]'",
    ):
        open_trackers(cfg, tmp_path)


def test_required_packages_and_the_extras_agree():
    cfg = config_from_dict({"experiment": {"loggers": ["mlflow", "wandb", "tensorboard"]}})
    pkgs = required_packages(cfg)
    assert pkgs[:2] == ["torch", "torchvision"] and pkgs[-3:] == ["mlflow-skinny", "wandb", "tensorboard"]
    assert "wandb" not in required_packages(config_from_dict({}))
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def names(reqs):
        return {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in reqs}

    assert names(extras["tracking"]) == {n.package for k in TRACKING for n in NEEDS[k]}
    assert names(extras["export"]) == {n.package for n in NEEDS["onnx"]}
    assert names(extras["tensorboard"]) == {"tensorboard"}  # the older extra stays


def test_a_failing_tracker_is_dropped_with_one_warning_and_csv_keeps_going(tmp_path):
    class Broken(Logger):
        name = "broken"

        def log_epoch(self, epoch, step, row, history):
            raise RuntimeError("server said no\nsecond line")

    said = []
    trackers = Trackers([*Trackers.csv_only(tmp_path).loggers, Broken()], echo=said.append)
    row = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.9}
    trackers.log_epoch(1, 10, row, [row])
    trackers.log_epoch(2, 20, {**row, "epoch": 2}, [row, {**row, "epoch": 2}])
    assert said == ["warning: broken logging failed (server said no); the run goes on without it"]
    assert trackers.names == ["csv"] and len((tmp_path / "metrics.csv").read_text().splitlines()) == 3
