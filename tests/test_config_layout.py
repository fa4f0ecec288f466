"""The config package's seams: typed model sections (switching models with --set), shipped
configs by name, strings that stay strings, the bounded YAML loader, the shared validator and
the shared extends: resolver."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_hpc.config import (
    MAX_BYTES,
    MAX_NODES,
    SHIPPED_DIR,
    CNNModel,
    ConfigError,
    build_section,
    config_from_dict,
    load_config,
    read_yaml,
    resolve_extends,
    shipped_configs,
    yaml_load,
)
from tests.paths import ROOT


def write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.write_text(text)
    return p


def one_short_line(r, limit=400):
    assert "Traceback" not in r.err, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < limit, r.err[:2000]
    return lines[0]


# --------------------------------------------------------------------------- typed model sections


def test_model_section_is_typed_and_serialises_as_before():
    cfg = load_config("configs/mlp_keras.yaml")
    assert cfg.model.name == "mlp"
    assert cfg.model.params() == {"hidden": [128], "activation": "relu", "dropout": 0.0}
    assert cfg.to_dict()["model"] == {"name": "mlp", "hidden": [128], "activation": "relu", "dropout": 0.0}
    assert config_from_dict(cfg.to_dict()) == cfg  # run folders and checkpoints round-trip
    assert cfg.notes == ()


def test_set_model_name_switches_to_that_models_defaults():
    cfg = load_config("configs/mlp_keras.yaml", ["model.name=cnn"])
    assert cfg.model == CNNModel()
    assert cfg.to_dict()["model"] == {
        "name": "cnn",
        "channels": [32, 64],
        "hidden": 128,
        "dropout1": 0.25,
        "dropout2": 0.5,
    }
    (note,) = cfg.notes
    assert note.startswith("model.name changed mlp -> cnn; dropped model.hidden, model.activation")
    assert "cnn starts from its own defaults" in note


def test_keys_set_for_the_new_model_in_the_same_command_are_kept():
    before = load_config("configs/mlp_keras.yaml", ["model.hidden=64", "model.name=cnn"])
    assert (before.model.name, before.model.hidden) == ("cnn", 64)
    assert before.notes and "model.activation" in before.notes[0] and "model.hidden" not in before.notes[0]
    after = load_config("configs/mlp_keras.yaml", ["model.name=cnn", "model.channels=[8, 16]"])
    assert after.model.channels == [8, 16]  # checked against cnn, not against the file's mlp


def test_model_switch_from_the_command_line(cli):
    r = cli("config", "show", "configs/mlp_keras.yaml", "--set", "model.name=cnn")
    assert r.code == 0, r
    assert "name: cnn" in r.out and "channels: [32, 64]" in r.out and "activation" not in r.out


def test_model_switch_keeps_checking_keys_and_values(cli):
    r = cli("config", "show", "configs/mlp_keras.yaml", "--set", "model.name=cnn", "--set", "model.widht=3")
    assert r.code == 2 and "unknown key model.widht for model 'cnn'" in r.err, r
    r = cli("config", "show", "configs/mlp_keras.yaml", "--set", "model.name=lenet")
    assert r.code == 2 and "model.name: expected one of" in r.err and "lenet5" in r.err, r


def test_extends_with_another_model_starts_from_its_defaults(tmp_path):
    child = write(tmp_path, "child.yaml", "extends: mlp_keras\nmodel: {name: fast, width: 8}\n")
    cfg = load_config(child)
    assert cfg.model.name == "fast" and cfg.model.width == 8 and cfg.data.batch_size == 32


def test_models_command_and_build_model_take_the_typed_section(cli):
    torch = pytest.importorskip("torch")
    from mnist_hpc.training.models import build_model

    cfg = load_config("quickstart", ["model.name=mlp", "model.hidden=[16]"])
    out = build_model(cfg.model)(torch.zeros(2, 1, 28, 28))
    assert tuple(out.shape) == (2, 10)
    assert build_model({"name": "mlp", "hidden": [4], "activation": "relu", "dropout": 0.0})


# --------------------------------------------------------------------------- shipped configs by name


def test_shipped_configs_have_a_purpose_and_load_by_name():
    shipped = shipped_configs()
    assert {"quickstart", "mlp_keras", "fast", "fast995", "best", "cnn_classic"} <= set(shipped)
    for name, purpose in shipped.items():
        assert purpose and len(purpose) < 110 and not purpose.startswith(name), (name, purpose)
        assert load_config(name).experiment.name  # every shipped config validates by its name


def test_shipped_configs_are_package_data():
    import tomllib

    assert SHIPPED_DIR == ROOT / "mnist_hpc" / "configs"
    assert (ROOT / "configs").resolve() == SHIPPED_DIR.resolve()  # the old paths keep working
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {str(p.relative_to(SHIPPED_DIR.parent)) for p in SHIPPED_DIR.rglob("*.yaml")}
    matched = {
        str(p.relative_to(SHIPPED_DIR.parent))
        for pat in patterns["mnist_hpc"]
        for p in SHIPPED_DIR.parent.glob(pat)
    }
    assert shipped and shipped <= matched


def test_config_by_name_from_another_folder(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mnist_hpc", "config", "show", "quickstart", "--set", "train.epochs=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "name: quickstart" in r.stdout and "epochs: 1" in r.stdout


def test_extends_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "mine.yaml", "extends: quickstart\ntrain: {epochs: 1}\n")
    cfg = load_config("mine.yaml")
    assert (cfg.experiment.name, cfg.model.name, cfg.train.epochs) == ("quickstart", "fast", 1)


def test_a_path_beats_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "quickstart", "experiment: {name: mine}\n")
    assert load_config("quickstart").experiment.name == "mine"
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "quickstart", "experiment: {name: sibling}\n")
    child = write(tmp_path / "sub", "child.yaml", "extends: quickstart\n")
    assert load_config(child).experiment.name == "sibling"
    write(tmp_path, "quickstart.yaml", "experiment: {name: explicit}\n")
    assert load_config("quickstart.yaml").experiment.name == "explicit"


def test_missing_config_hints_at_names_and_the_project_folder(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    r = cli("config", "show", "configs/quickstart.yaml")
    line = one_short_line(r)
    assert r.code == 2 and "no such file" in line and "used by its name alone: quickstart" in line
    r = cli("train", "nope.yaml")
    line = one_short_line(r)
    assert r.code == 2 and "project folder" in line and "mlp_keras" in line and "quickstart" in line
    write(tmp_path, "child.yaml", "extends: nowhere\n")
    line = one_short_line(cli("config", "show", "child.yaml"))
    assert "extends: nowhere: no such file" in line


def test_sweep_base_next_to_the_shipped_configs_still_resolves():
    from mnist_hpc.experiments.sweep import load_sweep

    sweep = load_sweep("configs/sweeps/architectures.yaml")
    assert sorted(r.config.model.name for r in sweep.runs) == ["cnn", "fast", "lenet5", "mlp", "resnet18"]


# --------------------------------------------------------------------------- strings stay strings


@pytest.mark.parametrize(
    "override,field,expected",
    [
        ("experiment.name=on", "name", "on"),
        ("experiment.name=2024", "name", "2024"),
        ("experiment.name=1e-3", "name", "1e-3"),
        ("experiment.name='quoted'", "name", "quoted"),
        ("experiment.seed=2024", "seed", 2024),
    ],
)
def test_string_fields_keep_the_text_typed(override, field, expected):
    cfg = load_config("quickstart", [override])
    assert getattr(cfg.experiment, field) == expected
    assert type(getattr(cfg.experiment, field)) is type(expected)


def test_optional_and_choice_strings():
    assert load_config("quickstart", ["data.root=2024"]).data.root == "2024"
    assert load_config("quickstart", ["data.root=null"]).data.root is None
    with pytest.raises(ConfigError, match=r"optim.schedule: expected one of .* got 'off'"):
        load_config("quickstart", ["optim.schedule=off"])
    with pytest.raises(ConfigError, match=r"model.hidden: expected a list, got True"):
        load_config("mlp_keras", ["model.hidden=on"])  # not a string field: YAML as before


def test_non_finite_numbers_are_refused():
    with pytest.raises(ConfigError, match=r"optim.lr: expected a finite number, got nan"):
        load_config("quickstart", ["optim.lr=.nan"])


# --------------------------------------------------------------------------- the bounded loader


def laughs(levels: int = 9, anchor: str = "l") -> str:
    """A 'billion laughs' flow list: each level repeats the previous one ten times."""
    parts = [f"&{anchor}0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, levels):
        parts.append(f"&{anchor}{i} [" + ", ".join([f"*{anchor}{i - 1}"] * 10) + "]")
    return "[" + ", ".join(parts) + "]"


@pytest.mark.timeout(30)
def test_yaml_bomb_in_a_config_file_is_refused_quickly(tmp_path, cli):
    p = write(tmp_path, "bomb.yaml", f"model:\n  name: mlp\n  hidden: {laughs()}\n")
    r = cli("config", "show", p)
    line = one_short_line(r)
    assert r.code == 2 and str(p) in line and f"more than {MAX_NODES:,} values" in line


@pytest.mark.timeout(30)
def test_yaml_bomb_in_a_set_value_is_refused_quickly(tmp_path, cli):
    r = cli("config", "show", "quickstart", "--set", f"model.hidden={laughs()}")
    line = one_short_line(r)
    assert r.code == 2 and "--set model.hidden=" in line and "more than" in line


@pytest.mark.timeout(30)
def test_a_huge_value_gives_a_short_message(cli):
    r = cli("config", "show", "quickstart", "--set", "train.epochs=" + "x" * 500_000)
    line = one_short_line(r, limit=300)
    assert r.code == 2 and "train.epochs: expected an integer, got 'xxx" in line
    r = cli("config", "show", "quickstart", "--set", "train.epochs=" + "x" * (MAX_BYTES + 10))
    assert r.code == 2 and one_short_line(r, limit=300)
    r = cli("config", "show", "quickstart", "--set", "tr" + "a" * 100_000 + "in.epochs=1")
    assert r.code == 2 and "unknown key" in one_short_line(r, limit=400)


def test_file_size_cap(tmp_path, cli):
    p = write(tmp_path, "big.yaml", "# padding\n" * (MAX_BYTES // 10 + 1) + "train: {epochs: 1}\n")
    line = one_short_line(cli("config", "show", p))
    assert str(p) in line and "larger than 1024 KiB" in line


@pytest.mark.parametrize(
    "text,message",
    [
        ("a: &a [*a]\n", "refers to the node that contains it"),
        ("[" * 5000 + "]" * 5000 + "\n", "nested more than"),
        ("? [a, b]\n: 1\n", "unhashable"),
        ("a: 1\na: 2\n", "duplicate key 'a'"),
    ],
)
def test_hostile_documents_are_one_line_errors(tmp_path, text, message):
    p = write(tmp_path, "x.yaml", text)
    with pytest.raises(ConfigError) as e:
        read_yaml(p)
    assert message in str(e.value) and len(str(e.value)) < 400 and "\n" not in str(e.value)


def test_plain_documents_still_load():
    assert yaml_load("lr: 1e-3\nanchors: {a: &x [1, 2], b: *x}\n") == {
        "lr": 0.001,
        "anchors": {"a": [1, 2], "b": [1, 2]},
    }


# --------------------------------------------------------------------------- validator and resolver


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str
    modules: tuple = ()  # bare tuples accept YAML lists
    widths: dict[str, int] = dataclasses.field(default_factory=dict)
    memory: str | None = None


def test_build_section_serves_any_schema():
    e = build_section(
        _Entry, {"name": "x", "modules": ["a", "b"], "widths": {"a": 1}}, "profiles.x", "f.yaml"
    )
    assert e == _Entry("x", ("a", "b"), {"a": 1})
    with pytest.raises(
        ConfigError, match=r"^f.yaml: profiles.x.modles: unknown key \(did you mean 'modules'\?\)"
    ):
        build_section(_Entry, {"name": "x", "modles": []}, "profiles.x", "f.yaml")
    with pytest.raises(ConfigError, match=r"^f.yaml: profiles.x.widths.a: expected an integer, got 'b'$"):
        build_section(_Entry, {"name": "x", "widths": {"a": "b"}}, "profiles.x", "f.yaml")


def test_resolve_extends_merges_in_order_and_detects_loops():
    entries = {"base": ({"a": 1, "b": 1}, []), "gpu": ({"b": 2}, ["base"]), "mine": ({"c": 3}, ["gpu"])}
    assert resolve_extends("mine", entries.__getitem__) == {"a": 1, "b": 2, "c": 3}
    loop = {"a": ({}, ["b"]), "b": ({}, ["c"]), "c": ({}, ["a"])}
    with pytest.raises(ConfigError, match=r"^profiles.c: extends: loop: a -> b -> c -> a$"):
        resolve_extends("a", loop.__getitem__, where=lambda k: f"profiles.{k}")
    deep = {i: ({}, [i + 1]) for i in range(100)}
    with pytest.raises(ConfigError, match="extends: more than"):
        resolve_extends(0, deep.__getitem__)


def test_extends_loop_between_files_names_the_files(tmp_path):
    a = write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"b.yaml: extends: loop: .*a.yaml -> .*b.yaml -> .*a.yaml$"):
        load_config(a)


def test_a_whole_model_section_in_set_is_taken_as_written():
    cfg = load_config("mlp_keras", ["model={name: cnn, hidden: 32}"])
    assert (cfg.model.name, cfg.model.hidden, cfg.model.channels) == ("cnn", 32, [32, 64])
    assert cfg.notes == ()  # nothing of the user's was dropped


# --------------------------------------------------------------------------- config show


def test_to_yaml_is_block_yaml_with_field_comments_and_round_trips():
    for name in shipped_configs():
        cfg = load_config(name)
        text = cfg.to_yaml()
        assert yaml_load(text) == cfg.to_dict(), name
    text = load_config("quickstart", ["model.name=mlp"]).to_yaml()
    assert "{" not in text  # block style: one key a line
    lines = text.splitlines()
    assert any(line.startswith("  lr: 0.03 ") and line.endswith("# peak learning rate") for line in lines)
    assert any(line.startswith("  hidden: [128]") and "# hidden layer widths" in line for line in lines)
    assert any(line.startswith("  name: mlp") and "# which model" in line for line in lines)


def test_a_folder_named_like_a_shipped_config_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").mkdir()  # e.g. a folder of the user's runs
    assert load_config("fast").experiment.name == "fast"
    with pytest.raises(ConfigError, match="is a directory"):
        load_config("./fast")
