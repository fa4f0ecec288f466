"""Config loading: schema, extends:, --set, and every bad input -> one clear line, exit 2."""

import pytest

from mnist_hpc.config import load_config, yaml_load


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_overrides(tmp_path):
    p = write(tmp_path, "a.yaml", "model: {name: mlp}\noptim: {lr: 1e-3}\n")
    cfg = load_config(p, ["model.hidden=[256, 64]", "optim.lr=0.01", "train.epochs=4"])
    assert cfg.model.to_dict() == {"name": "mlp", "hidden": [256, 64], "activation": "relu", "dropout": 0.0}
    assert cfg.optim.lr == 0.01 and cfg.train.epochs == 4
    assert cfg.experiment.output_dir == "./runs"


def test_yaml_12_floats():
    assert yaml_load("lr: 1e-3") == {"lr": 0.001}


def test_extends_is_relative_and_deep_merges(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "base.yaml", "optim: {name: sgd, lr: 0.1}\ntrain: {epochs: 7}\n")
    child = write(tmp_path / "sub", "child.yaml", "extends: ../base.yaml\noptim: {lr: 0.05}\n")
    cfg = load_config(child)
    assert (cfg.optim.name, cfg.optim.lr, cfg.train.epochs) == ("sgd", 0.05, 7)


def test_shipped_configs_validate(cli):
    import glob

    files = sorted(glob.glob("configs/*.yaml"))
    assert len(files) >= 5
    r = cli("config", "validate", *files)
    assert r.code == 0, r


BAD = [
    ("malformed.yaml", "train: {epochs: 3\n", "invalid YAML (line"),
    ("empty.yaml", "", "the file is empty"),
    ("list.yaml", "- a\n- b\n", "top level must be a mapping"),
    ("unknown.yaml", "trian: {epochs: 3}\n", "unknown key (did you mean 'train'?)"),
    ("nested.yaml", "optim: {lrr: 0.1}\n", "optim.lrr: unknown key (did you mean 'lr'?)"),
    ("type.yaml", "train: {epochs: three}\n", "train.epochs: expected an integer, got 'three'"),
    ("epochs.yaml", "train: {epochs: 0}\n", "train.epochs: expected a positive integer"),
    ("batch.yaml", "data: {batch_size: -5}\n", "data.batch_size: expected a positive integer"),
    ("lr.yaml", "optim: {lr: 0}\n", "optim.lr: expected a learning rate > 0"),
    ("val.yaml", "data: {val_split: 1.0}\n", "data.val_split: expected a fraction strictly between 0 and 1"),
    ("dataset.yaml", "data: {dataset: mnsit}\n", "did you mean 'mnist'?"),
    ("model.yaml", "model: {name: lenet}\n", "model.name: expected one of"),
    ("optim.yaml", "optim: {name: adamm}\n", "did you mean 'adam'?"),
    (
        "modelparam.yaml",
        "model: {name: mlp, hiden: [3]}\n",
        "model.hiden: unknown key for model 'mlp' (did you mean 'hidden'?)",
    ),
    (
        "tag.yaml",
        "experiment: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
        "YAML tags that construct Python objects are not allowed",
    ),
    ("dup.yaml", "train: {epochs: 1}\ntrain: {epochs: 2}\n", "duplicate key 'train'"),
    ("missing_parent.yaml", "extends: nowhere.yaml\n", "extends: nowhere.yaml: no such file"),
]


@pytest.mark.parametrize("name,text,message", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_one_line_exit_2(tmp_path, cli, name, text, message):
    p = write(tmp_path, name, text)
    r = cli("config", "show", p)
    assert r.code == 2, r
    assert message in r.err, r.err
    assert str(p) in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1


def test_extends_loop(tmp_path, cli):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    r = cli("train", tmp_path / "a.yaml")
    assert r.code == 2 and "extends: loop" in r.err, r


@pytest.mark.parametrize(
    "override,message",
    [
        ("trian.epochs=3", "unknown key trian (did you mean 'train'?)"),
        ("optim.lrr=0.1", "unknown key optim.lrr (did you mean 'optim.lr'?)".replace("optim.lr'", "lr'")),
        ("model.hiden=[1]", "unknown key model.hiden for model 'cnn'"),
        ("optim.lr", "expected KEY=VALUE"),
        ("optim.lr=[1", "not valid YAML"),
        ("optim.lr=-1", "optim.lr: expected a learning rate > 0"),
    ],
)
def test_bad_set(tmp_path, cli, override, message):
    p = write(tmp_path, "ok.yaml", "model: {name: cnn}\n")
    r = cli("config", "show", p, "--set", override)
    assert r.code == 2 and message in r.err, r


def test_missing_config_file(cli, tmp_path):
    r = cli("train", tmp_path / "nope.yaml")
    assert r.code == 2 and "no such file" in r.err


def test_config_show_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    p = write(tmp_path, "a.yaml", "model: {name: mlp}\n")
    code = (
        "import sys; from mnist_hpc.cli.main import main\n"
        f"try: main(['config', 'show', {str(p)!r}])\nexcept SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "name: mlp" in r.stdout
