"""Names that say what they hold (issue 27, defect 25): a run trained with `--set model.name=cnn`
is named after the cnn, not only after the base config's model."""

from __future__ import annotations

from mnist_hpc.config import load_config


def test_a_model_override_names_the_run_after_that_model():
    assert load_config("configs/mlp_keras.yaml").experiment.name == "mlp_keras"
    assert load_config("configs/mlp_keras.yaml", ["model.name=cnn"]).experiment.name == "mlp_keras-cnn"
    assert load_config("configs/mlp_keras.yaml", ["model={name: fast}"]).experiment.name == "mlp_keras-fast"
    # the same model, or a name set in the same command: as written
    assert load_config("configs/mlp_keras.yaml", ["model.name=mlp"]).experiment.name == "mlp_keras"
    assert (
        load_config("configs/mlp_keras.yaml", ["model.name=cnn", "experiment.name=mine"]).experiment.name
        == "mine"
    )


def test_the_run_folder_carries_the_models_name(synth_root, tmp_path, cli):
    r = cli(
        "train",
        "configs/mlp_keras.yaml",
        "--set",
        "model.name=mlp",
        "--set",
        "model.hidden=[8]",
        "--set",
        "data.subset=128",
        "--set",
        "train.epochs=1",
        "--set",
        f"experiment.output_dir={tmp_path}",
        "--data-dir",
        synth_root,
    )
    assert r.code == 0, r
    r = cli(
        "train",
        "configs/mlp_keras.yaml",
        "--set",
        "model.name=cnn",
        "--set",
        "model.channels=[4, 8]",
        "--set",
        "model.hidden=8",
        "--set",
        "data.subset=128",
        "--set",
        "train.epochs=1",
        "--set",
        f"experiment.output_dir={tmp_path}",
        "--data-dir",
        synth_root,
    )
    assert r.code == 0, r
    names = sorted(p.name.rsplit("-", 2)[0] for p in tmp_path.iterdir() if p.is_dir())
    assert names == ["mlp_keras", "mlp_keras-cnn"], names
