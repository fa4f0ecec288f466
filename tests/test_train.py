"""End-to-end training on synthetic data: the run folder, determinism, evaluate/predict, and the
bad inputs that involve data, checkpoints, images and output folders."""

import json

import pytest
import torch

from tests.conftest import make_dataset


def run_dirs(base):
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.exists() else []


def test_train_writes_a_complete_run_folder(cli, tiny_config, synth_root, tmp_path):
    r = cli("train", tiny_config, "--data-dir", synth_root)
    assert r.code == 0, r
    assert "test accuracy" in r.out and "epoch   2/2" in r.out
    (run,) = run_dirs(tmp_path / "runs")
    for f in [
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "checkpoints/best.pt",
        "plots/learning_curves.png",
        "plots/confusion_matrix.png",
        "plots/misclassified.png",
    ]:
        assert (run / f).is_file(), f
    s = json.loads((run / "summary.json").read_text())
    for key in [
        "test_accuracy",
        "test_loss",
        "per_class",
        "macro_f1",
        "confusion_matrix",
        "params",
        "model_size_mb",
        "train_seconds",
        "images_per_s",
        "device",
        "versions",
        "git_commit",
        "host",
        "slurm_job_id",
        "world_size",
    ]:
        assert key in s, key
    assert s["test_accuracy"] > 0.9, s["test_accuracy"]  # the synthetic classes are easy
    assert sum(map(sum, s["confusion_matrix"])) == 300
    assert s["world_size"] == 1 and s["params"] == 32 * 784 + 32 + 32 * 10 + 10
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc") and len(rows) == 3
    # the resolved config in the run folder is itself a valid config
    assert cli("config", "validate", run / "config.yaml").code == 0


def _weights(run):
    (ck,) = list((run / "checkpoints").glob("last-*.pt"))[-1:]
    return torch.load(ck, weights_only=True)["model"]


def test_deterministic_runs_are_bit_identical(cli, tiny_config, synth_root, tmp_path):
    for i in range(2):
        r = cli(
            "train",
            tiny_config,
            "--data-dir",
            synth_root,
            "--run-dir",
            tmp_path / f"r{i}",
            "--set",
            "runtime.deterministic=true",
            "--set",
            "data.augment.shift=2",
        )
        assert r.code == 0, r
    a, b = _weights(tmp_path / "r0"), _weights(tmp_path / "r1")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_every_model_trains_one_step(cli, tiny_config, synth_root, tmp_path):
    for name in ["cnn", "lenet5", "fast"]:
        r = cli(
            "train",
            tiny_config,
            "--data-dir",
            synth_root,
            "--run-dir",
            tmp_path / name,
            "--set",
            f"model={{name: {name}}}",
            "--set",
            "data.subset=128",
            "--set",
            "train.epochs=1",
        )
        assert r.code == 0, (name, r)


def test_evaluate_and_ensemble(cli, tiny_config, synth_root, tmp_path):
    for i in range(2):
        assert (
            cli(
                "train",
                tiny_config,
                "--data-dir",
                synth_root,
                "--run-dir",
                tmp_path / f"e{i}",
                "--set",
                f"experiment.seed={i}",
            ).code
            == 0
        )
    r = cli("evaluate", tmp_path / "e0", tmp_path / "e1", "--ensemble", "--data-dir", synth_root)
    assert r.code == 0, r
    assert r.out.count("test accuracy") == 3 and "ensemble of 2" in r.out
    acc = json.loads((tmp_path / "e0" / "summary.json").read_text())["test_accuracy"]
    assert f"{acc * 100:.2f}%" in r.out.splitlines()[0]


def test_predict_image(cli, tiny_config, synth_root, tmp_path):
    from PIL import Image

    from tests.conftest import synthetic_split

    assert cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", tmp_path / "p").code == 0
    x, _y = synthetic_split(1, 2)
    img = tmp_path / "digit.png"
    Image.fromarray(x[0]).resize((280, 280)).save(img)
    r = cli("predict", tmp_path / "p", img)
    assert r.code == 0, r
    assert str(img) in r.out and r.out.count("%") == 3
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    r = cli("predict", tmp_path / "p", bad)
    assert r.code == 1 and "not an image" in r.err and str(bad) in r.err, r


def test_missing_data_offline_says_what_to_run(cli, tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_HPC_OFFLINE", "1")
    r = cli("train", tiny_config, "--data-dir", tmp_path / "empty")
    assert r.code == 1, r
    assert "run `mnist-hpc data download` on a login node" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_corrupted_data_file(cli, tiny_config, tmp_path):
    root = make_dataset(tmp_path / "data")
    f = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:5000])  # truncated
    r = cli("train", tiny_config, "--data-dir", root)
    assert r.code == 1 and "corrupted" in r.err, r
    r = cli("data", "verify", "--dataset", "mnist", "--data-dir", root)
    assert r.code == 1 and "BAD" in r.out, r


def test_corrupted_archive_is_caught_by_md5(cli, tiny_config, tmp_path):
    raw = tmp_path / "d" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for n in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]:
        (raw / n).write_bytes(b"not really gzip")
    r = cli("train", tiny_config, "--data-dir", tmp_path / "d")
    assert r.code == 1 and "MD5 mismatch" in r.err, r


def test_output_folder_not_writable(cli, tiny_config, synth_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("train", tiny_config, "--data-dir", synth_root, "--set", f"experiment.output_dir={blocker}/runs")
    assert r.code == 1 and "not writable" in r.err, r


def test_unknown_dataset_flag(cli):
    r = cli("data", "download", "--dataset", "mnsit")
    assert r.code == 2 and "did you mean 'mnist'" in r.err, r


def test_summary_and_models(cli, tiny_config):
    r = cli("summary", tiny_config)
    assert r.code == 0 and "Total params: 25,450" in r.out, r
    r = cli("models")
    assert r.code == 0 and "1,199,882" in r.out and "101,770" in r.out, r


def test_checkpoint_bad_inputs(cli, tiny_config, synth_root, tmp_path):
    assert cli("train", tiny_config, "--data-dir", synth_root, "--run-dir", tmp_path / "ok").code == 0
    good = sorted((tmp_path / "ok" / "checkpoints").glob("last-*.pt"))[-1]
    # truncated
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:2000])
    r = cli("evaluate", trunc, "--data-dir", synth_root)
    assert r.code == 1 and "truncated or corrupted" in r.err, r
    # not ours
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    r = cli("evaluate", other, "--data-dir", synth_root)
    assert r.code == 1 and "not an mnist-hpc checkpoint" in r.err, r
    # another model: resume a cnn config from an mlp checkpoint
    r = cli("train", tiny_config, "--data-dir", synth_root, "--set", "model={name: cnn}", "--resume", good)
    assert (
        r.code == 1
        and "the config differs from the checkpoint's: experiment.name 'tiny' -> 'tiny-cnn', model.name 'mlp' -> 'cnn'"
        in r.err
    ), r
    assert "--init-from" in r.err and len(r.err.strip().splitlines()) == 1, r
    assert good.exists()


def test_crafted_pickle_is_refused_and_not_executed(cli, tmp_path):
    import os
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": "mnist-hpc-checkpoint", "x": Evil()}, f)
    r = cli("evaluate", evil)
    assert r.code == 1 and "refused" in r.err, r
    assert not marker.exists()
    evil2 = tmp_path / "evil2.pt"
    torch.save({"format": "mnist-hpc-checkpoint", "x": Evil()}, evil2)
    r = cli("evaluate", evil2)
    assert r.code == 1 and not marker.exists(), r


def test_metrics_log_the_learning_rate_each_epoch_used(cli, tiny_config, synth_root, tmp_path):
    """StepLR as in the classic example: epoch 1 trains at lr, epoch 2 at lr * gamma."""
    r = cli(
        "train",
        tiny_config,
        "--data-dir",
        synth_root,
        "--run-dir",
        tmp_path / "lr",
        "--set",
        "optim={name: adadelta, lr: 1.0, schedule: step, step_size: 1, gamma: 0.7}",
    )
    assert r.code == 0, r
    rows = (tmp_path / "lr" / "metrics.csv").read_text().splitlines()[1:]
    assert [float(row.split(",")[5]) for row in rows] == pytest.approx([1.0, 0.7])
