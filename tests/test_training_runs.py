"""A run folder is the trustworthy record of one run (issue 10): resume keeps a run what it was,
a folder belongs to one run, a run records its state, a full disk is one line, predict judges
each image on its own, Ctrl-C says what was kept and how to resume."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mnist_hpc
from mnist_hpc.config import config_from_dict
from mnist_hpc.errors import Interrupted, UserError
from mnist_hpc.training import checkpoint as ckpt
from mnist_hpc.training.context import TrainContext
from mnist_hpc.training.run import run_training
from mnist_hpc.training.stopflag import StopFlag


def hashes(folder: Path) -> dict:
    """{relative path: sha1} of every file under ``folder`` (the lock file aside)."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def read_state(run_dir):
    from mnist_hpc.runs import read_state as read

    return read(run_dir)


def runstate():
    from mnist_hpc.runs import state

    return state


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def tiny(tmp_path, **train):
    return config_from_dict(
        {
            "experiment": {"name": "tiny", "seed": 0, "output_dir": str(tmp_path / "runs")},
            "data": {"dataset": "mnist", "val_split": 0.2, "batch_size": 64, "eval_batch_size": 256},
            "model": {"name": "mlp", "hidden": [32]},
            "optim": {"name": "adam", "lr": 0.003},
            "train": {"epochs": 2, **train},
            "runtime": {"threads": 1},
        }
    )


@pytest.fixture
def trained(cli, tiny_config, synth_root, tmp_path):
    """A completed 2-epoch run in tmp_path/done."""
    run = tmp_path / "done"
    r = cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", run)
    assert r.code == 0, r
    return run


def interrupt_at(monkeypatch, call: int):
    """Make the ``call``-th optimizer step raise KeyboardInterrupt (Ctrl-C during training)."""
    from mnist_hpc.training import trainer

    real, count = trainer.train_step, [0]

    def step(*args, **kwargs):
        count[0] += 1
        if count[0] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step)


# --------------------------------------------------------------------------- 1. resume semantics


def test_resume_with_another_config_is_refused_and_nothing_is_rewritten(
    cli, trained, tiny_config, synth_root
):
    before = hashes(trained)
    r = cli(
        "train",
        tiny_config,
        "--data-dir",
        synth_root,
        "--resume",
        trained,
        "--set",
        "optim.lr=0.01",
        "--set",
        "train.epochs=3",
    )
    assert r.code == 1, r
    line = one_line(r.err)
    assert "optim.lr 0.003 -> 0.01" in line and "train.epochs" not in line  # epochs may change
    assert f"--init-from {trained}" in line
    assert hashes(trained) == before


def test_resume_applies_allowed_changes_and_records_them(cli, tiny_config, synth_root, tmp_path, monkeypatch):
    run = tmp_path / "r"
    interrupt_at(monkeypatch, 20)  # epoch 2, after the checkpoint of epoch 1
    assert cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", run).code == 130
    monkeypatch.undo()
    r = cli(
        "train",
        tiny_config,
        "--data-dir",
        synth_root,
        "--run-dir",
        run,
        "--resume",
        "auto",
        "--set",
        "train.epochs=3",
        "--set",
        "data.eval_batch_size=128",
        "--set",
        "runtime.threads=2",
    )
    assert r.code == 0, r
    s = summary(run)
    (entry,) = s["requeues"]
    assert entry["changes"] == {
        "data.eval_batch_size": [256, 128],
        "train.epochs": [2, 3],
        "runtime.threads": [1, 2],
    }
    assert s["epochs_run"] == 3 and "epochs: 3" in (run / "config.yaml").read_text()
    assert s["run_id"] == json.loads((run / "run.json").read_text())["run_id"]


def test_extending_a_completed_run_writes_a_new_folder(cli, trained, tiny_config, synth_root, tmp_path):
    before = hashes(trained)
    r = cli("train", tiny_config, "--data-dir", synth_root, "--resume", trained, "--set", "train.epochs=3")
    assert r.code == 0, r
    (new,) = list((tmp_path / "runs").iterdir())
    s = summary(new)
    assert s["parent_run"] == str(trained) and s["epochs_run"] == 3
    assert s["requeues"][0]["changes"] == {"train.epochs": [2, 3]}
    assert len((new / "metrics.csv").read_text().splitlines()) == 4  # the whole history
    assert hashes(trained) == before
    # nothing more to train: the completed run is left alone
    r = cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", trained, "--resume", "auto")
    assert r.code == 0 and "nothing to resume" in r.out, r
    assert hashes(trained) == before


def test_init_from_copies_weights_into_a_new_run(cli, trained, tiny_config, synth_root, tmp_path):
    before = hashes(trained)
    r = cli(
        "train",
        tiny_config,
        "--data-dir",
        synth_root,
        "--init-from",
        trained,
        "--set",
        "optim.lr=0.001",
        "--set",
        "train.epochs=1",
    )
    assert r.code == 0, r
    (new,) = list((tmp_path / "runs").iterdir())
    s = summary(new)
    assert s["parent_run"] == str(trained) and s["epochs_run"] == 1 and s["requeues"] == []
    # the weights were the parent's: the first epoch starts where the parent ended
    assert s["test_accuracy"] >= 0.95 and "weights from" in r.out
    assert hashes(trained) == before
    run = mnist_hpc.train(
        str(tiny_config),
        ["train.epochs=1"],
        data_dir=synth_root,
        init_from=trained,
        run_dir=tmp_path / "api",
        progress=False,
        echo=lambda m: None,
    )
    assert run.summary.parent_run == str(trained)


def test_init_from_refuses_weights_of_another_model(cli, trained, tiny_config, synth_root, tmp_path):
    r = cli(
        "train",
        tiny_config,
        "--data-dir",
        synth_root,
        "--init-from",
        trained,
        "--set",
        "model.hidden=[64]",
        "--run-dir",
        tmp_path / "x",
    )
    assert r.code == 1 and "do not fit" in one_line(r.err), r
    assert read_state(tmp_path / "x").state == "failed"


# --------------------------------------------------------------------------- 2. one run per folder


def test_run_dir_of_another_run_is_refused(cli, trained, tiny_config, synth_root):
    before = hashes(trained)
    r = cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", trained, "--set", "optim.lr=0.01")
    assert r.code == 1 and "holds another run" in one_line(r.err), r
    assert hashes(trained) == before


def test_rotation_deletes_only_this_runs_checkpoints(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run_id": "ours"}))  # the folder's identity
    foreign = []
    for epoch in (1, 9):  # another run's files, before and after ours
        p = run / "checkpoints" / f"last-e{epoch:04d}-s000000.pt"
        torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "run_id": "theirs", "epoch": epoch}, p)
        foreign.append(p)
    for epoch in (2, 3, 4):
        ckpt.save({"epoch": epoch, "step": 0}, run / "checkpoints", keep=2)
    names = sorted(p.name for p in ckpt.list_checkpoints(run / "checkpoints"))
    assert names == [
        "last-e0001-s000000.pt",
        "last-e0009-s000000.pt",
        "last-epoch0004-step000000.pt",
        "last-epoch0005-step000000.pt",
    ]  # the foreign files have an earlier version's names
    assert ckpt.load(run / "checkpoints" / "last-epoch0005-step000000.pt")["run_id"] == "ours"


def test_run_folders_are_claimed_exclusively(synth_root, tmp_path, monkeypatch):
    """Two runs that pick the same folder name at once: the second takes the next name."""
    from mnist_hpc.runs import folder

    taken = tmp_path / "runs" / "tiny-20260101-000000"
    taken.mkdir(parents=True)  # another process created it right after our check
    monkeypatch.setattr(folder, "new_run_dir", lambda out, name: taken)
    s = run_training(tiny(tmp_path), data_dir=synth_root, progress=False, echo=lambda m: None)
    assert s.run_dir == taken.with_name(taken.name + "-2")
    assert list(taken.iterdir()) == []


def test_a_run_records_its_state(cli, trained, tiny_config, synth_root, tmp_path, monkeypatch):
    assert read_state(trained).state == "completed"
    assert mnist_hpc.Run.load(trained).state.state == "completed"
    # a run that fails on bad data leaves a failed marker, not an empty folder
    bad = tmp_path / "baddata" / "MNIST" / "raw"
    bad.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (bad / name).write_bytes(b"\0\0\x08\x01garbage")
    r = cli("train", tiny_config, "--data-dir", tmp_path / "baddata", "--run-dir", tmp_path / "failed")
    assert r.code == 1, r
    st = mnist_hpc.Run.load(tmp_path / "failed").state
    assert st.state == "failed" and "corrupted" in st.error and st.error in r.err
    # a stop signal: interrupted, by which signal, where
    flag = StopFlag()
    flag.received = signal.SIGUSR1
    with pytest.raises(Interrupted):
        run_training(
            tiny(tmp_path),
            ctx=TrainContext(stop=flag),
            data_dir=synth_root,
            run_dir=tmp_path / "stopped",
            progress=False,
            echo=lambda m: None,
        )
    st = read_state(tmp_path / "stopped")
    assert (st.state, st.signal, st.epoch, st.step) == ("interrupted", "SIGUSR1", 1, 1)
    assert st.describe().startswith(
        "interrupted by SIGUSR1 at epoch 1, step 1; checkpoint last-epoch0001-step000001.pt"
    )
    # report lists the unfinished runs as skipped, with their state
    from mnist_hpc.experiments.report import find_runs

    runs, skipped = find_runs([tmp_path])
    assert [r.path for r in runs] == [trained]
    assert any("failed: " in s for s in skipped) and any("interrupted by SIGUSR1" in s for s in skipped)
    # status shows the state of a job's run that has no summary
    from types import SimpleNamespace

    from mnist_hpc.cluster import queue

    monkeypatch.setattr(queue, "shutil", SimpleNamespace(which=lambda name: f"/usr/bin/{name}"))
    monkeypatch.setattr(
        queue.slurm, "scontrol_show_job", lambda job_id: {"JobState": "CANCELLED", "ExitCode": "0:15"}
    )
    assert queue.result("1", tmp_path / "stopped", {}).startswith(
        "CANCELLED (exit 0:15), run interrupted by SIGUSR1"
    )
    assert queue.result("2", tmp_path / "failed", {}).startswith("CANCELLED (exit 0:15), run failed: ")


def test_a_second_process_cannot_train_a_running_run(cli, trained, tiny_config, synth_root, tmp_path):
    run = tmp_path / "busy"
    shutil.copytree(trained, run)
    (run / "summary.json").unlink()
    lock = runstate().TrainingLock(run)
    assert lock.acquire()
    try:
        r = cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", run, "--resume", "auto")
        assert r.code == 1 and "another process is training this run now" in one_line(r.err), r
    finally:
        lock.release()


# --------------------------------------------------------------------------- 3. a full disk


@pytest.mark.parametrize(
    "target", ["checkpoint-torch", "checkpoint-oserror", "metrics.csv", "summary.json", "learning_curves.png"]
)
def test_disk_full_is_one_line_and_keeps_earlier_checkpoints(
    cli, tiny_config, synth_root, tmp_path, monkeypatch, target
):
    from mnist_hpc.runs import folder

    real, calls = folder.atomic_write_with, []

    def writer(path, fill):
        path = Path(path)
        calls.append(path.name)
        is_ckpt = path.name.startswith("last-epoch0003")  # epoch 2 done
        second = calls.count(path.name) == 2 if path.name == "metrics.csv" else True  # after a checkpoint
        if (target.startswith("checkpoint") and is_ckpt) or (path.name == target and second):

            def full(f):
                f.write(b"partial")
                if target == "checkpoint-torch":
                    raise RuntimeError(
                        "[enforce fail at inline_container.cc:671] . unexpected pos 704 vs 598"
                    )
                raise OSError(
                    errno.EDQUOT if target == "metrics.csv" else errno.ENOSPC, "No space left on device"
                )

            return real(path, full)
        return real(path, fill)

    from mnist_hpc.runs import plots

    for module in (folder, ckpt, plots):  # the one writer, wherever it was imported
        monkeypatch.setattr(module, "atomic_write_with", writer)
    run = tmp_path / "full"
    r = cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", run)
    assert r.code == 1, r
    line = one_line(r.err)
    assert ("quota exceeded" if target == "metrics.csv" else "no space left on device") in line
    assert "free" in line and str(run) in line
    assert not list(run.rglob(".*.tmp-*"))
    kept = ckpt.list_checkpoints(run / "checkpoints")
    assert kept and all(ckpt.load(p)["format"] == ckpt.FORMAT for p in kept)
    assert read_state(run).state == "failed"


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )


def test_a_really_full_disk(cli, tiny_config, synth_root, tmp_path, monkeypatch):
    """A 2 MB tmpfs that fills up after the first checkpoint (skipped where it cannot be mounted)."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "2m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        real_save = ckpt.save

        def save_then_fill(*args, **kwargs):
            path = real_save(*args, **kwargs)
            filler = mnt / "filler"
            if not filler.exists():  # the user's other files fill the disk after the first checkpoint
                with open(filler, "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * 65536)
                    except OSError:
                        pass
            return path

        monkeypatch.setattr(ckpt, "save", save_then_fill)
        run = mnt / "run"
        r = cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", run)
        assert r.code == 1, r
        line = one_line(r.err)
        assert "no space left on device" in line and str(run) in line
        (kept,) = ckpt.list_checkpoints(run / "checkpoints")
        assert ckpt.load(kept)["epoch"] == 1
        assert not list(run.rglob(".*.tmp-*"))
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# --------------------------------------------------------------------------- 4. predict


def test_predict_judges_each_image_on_its_own(cli, trained, tmp_path):
    from PIL import Image

    from tests.conftest import synthetic_split

    x, _ = synthetic_split(1, 2)
    good = tmp_path / "good.png"
    Image.fromarray(x[0]).resize((84, 84)).save(good)
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:60])
    folder_ = tmp_path / "a-folder"
    folder_.mkdir()
    missing = tmp_path / "missing.png"
    r = cli("predict", trained, blank, good, corrupt, folder_, missing)
    assert r.code == 1, r
    assert r.out.startswith(f"{good}: ") and len(r.out.strip().splitlines()) == 1
    errors = r.err.strip().splitlines()
    assert len(errors) == 4 and "Traceback" not in r.err
    for path, line in zip([blank, corrupt, folder_, missing], errors, strict=False):
        assert line.startswith(f"error: {path}: "), line
    preds = mnist_hpc.Run.load(trained).predict([blank, good], errors="skip")
    assert preds[0].label is None and "blank" in preds[0].error and preds[1].label is not None
    with pytest.raises(UserError, match="blank"):
        mnist_hpc.Run.load(trained).predict([good, blank])


# --------------------------------------------------------------------------- 5. smaller ones


def test_a_data_folder_that_is_a_file(cli, tiny_config, tmp_path, monkeypatch):
    f = tmp_path / "data.txt"
    f.write_text("not a folder")
    monkeypatch.setenv("MNIST_HPC_DATA_DIR", str(f))
    r = cli("train", tiny_config, "--run-dir", tmp_path / "r")
    assert r.code == 1, r
    line = one_line(r.err)
    assert f"{f}: is a file, not a folder" in line and "internet" not in line and "download" not in line


def test_a_raw_pickle_checkpoint_is_refused_without_a_warning(tmp_path):
    import pickle

    raw = tmp_path / "raw.pt"
    with open(raw, "wb") as f:
        pickle.dump({"format": "mnist-hpc-checkpoint", "version": 1, "model": {}}, f, protocol=4)
    p = subprocess.run(
        [sys.executable, "-m", "mnist_hpc", "evaluate", str(raw)],
        capture_output=True,
        text=True,
        env=dict(os.environ, MNIST_HPC_OFFLINE="1"),
    )
    assert p.returncode == 1, p.stderr
    assert one_line(p.stderr).startswith(f"error: {raw}: ") and "Warning" not in p.stderr


def test_ctrl_c_names_the_kept_checkpoint_and_the_resume_command(
    cli, tiny_config, synth_root, tmp_path, monkeypatch
):
    run = tmp_path / "r"
    interrupt_at(monkeypatch, 20)  # epoch 2, step 5: the checkpoint of epoch 1 is on disk
    r = cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", run, "--set", "optim.lr=0.002")
    assert r.code == 130, r
    line = one_line(r.err)
    kept = run / "checkpoints" / "last-epoch0002-step000000.pt"
    assert f"kept the newest checkpoint {kept}" in line and "at epoch 2, step 4" in line
    command = f"mnist-hpc train {run / 'config.yaml'} --run-dir {run} --resume auto"
    assert command in line
    st = read_state(run)
    assert (st.state, st.signal, st.checkpoint) == ("interrupted", "SIGINT", str(kept))
    monkeypatch.undo()
    r = cli(*command.split()[1:], "--data-dir", synth_root)  # the printed command works as it is
    assert r.code == 0 and f"resumed from {kept}" in r.out, r


def test_the_final_line_never_says_training_exceeds_total(cli, trained, tiny_config, synth_root, tmp_path):
    """A checkpoint of an earlier version (no wall time) of a long run: total >= training."""
    import re

    run = tmp_path / "old"
    shutil.copytree(trained, run)
    for name in (
        "summary.json",
        "run.json",
        "state.json",
        "checkpoints/last-epoch0003-step000000.pt",
        "checkpoints/last-epoch0002-step000000.pt.sha256",
    ):  # earlier versions recorded no sha256
        (run / name).unlink(missing_ok=True)
    last = run / "checkpoints" / "last-epoch0002-step000000.pt"
    state = torch.load(last, weights_only=True)
    state.pop("wall_seconds"), state.pop("run_id", None)
    state["train_seconds"] = 1000.0  # a long first start
    torch.save(state, last)
    r = cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", run, "--resume", "auto")
    assert r.code == 0, r
    m = re.search(r"([\d.]+) s training · ([\d.]+) s total over 2 starts \(([\d.]+) s this process\)", r.out)
    assert m, r.out
    assert float(m.group(1)) <= float(m.group(2))
    s = summary(run)
    assert s["train_seconds"] <= s["total_seconds"] and s["process_seconds"] > 0
