"""Model sizes known before anything is built: ``param_count()`` of every model section equals
the torch count, and ``MAX_PARAMS`` refuses a model too big to build, from a config file, a
``--set``, a run folder's config or a checkpoint's stored config, in one line and at once."""

from __future__ import annotations

import time

import pytest

from mnist_hpc.config import (
    MAX_PARAMS,
    MODEL_SPECS,
    CNNModel,
    ConfigError,
    FastModel,
    LeNet5Model,
    MLPModel,
    ResNet18Model,
    build_section,
    config_from_dict,
    load_config,
    show,
)

CAP_MESSAGE = (
    "model.hidden: the model would have 795,000,000,010 parameters; the cap is "
    f"{MAX_PARAMS:,} (MAX_PARAMS in mnist_hpc/config/models.py)"
)
HUGE_MLP = {"name": "mlp", "hidden": [1_000_000_000]}  # 784e9 + 1e9 + 10e9 + 10 parameters

SECTIONS = [
    MLPModel(),
    MLPModel(hidden=[]),
    MLPModel(hidden=[256, 64]),
    MLPModel(hidden=[1, 2, 3, 500]),
    MLPModel(hidden=[32], activation="tanh", dropout=0.3),
    CNNModel(),
    CNNModel(channels=[8, 16], hidden=32),
    CNNModel(channels=[1, 1], hidden=1),
    CNNModel(channels=[64, 3], hidden=500, dropout1=0.0, dropout2=0.0),
    LeNet5Model(),
    LeNet5Model(activation="tanh"),
    ResNet18Model(),
    FastModel(),
    FastModel(channels=[12, 24, 32]),
    FastModel(channels=[5], head="flatten"),
    FastModel(channels=[7, 9, 11, 13], head="flatten", downsample="stride"),
    FastModel(channels=[8, 16, 32], convs=2, head="flatten"),
    FastModel(width=3, depth=2, convs=3, downsample="stride"),
    *[
        FastModel(width=w, depth=d, head=h, downsample=s)
        for w, d in [(1, 1), (8, 2), (3, 3), (16, 4)]
        for h in ("max", "flatten")
        for s in ("maxpool", "stride")
    ],
]


def one_line(r, limit=400):
    assert "Traceback" not in r.err, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < limit, r.err[:2000]
    return lines[0]


# --------------------------------------------------------------------------- param_count


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: f"{s.name}{s.params()}")
def test_param_count_equals_the_torch_count(section):
    pytest.importorskip("torch")
    from mnist_hpc.training.models import build_model, count_params

    model = build_model(section)
    assert section.param_count() == count_params(model) == sum(p.numel() for p in model.parameters())


def test_every_builtin_model_has_a_count_and_the_defaults_are_far_below_the_cap():
    builtins = {spec.section for spec in MODEL_SPECS.values() if spec.section.source == "builtin"}
    assert {type(s) for s in SECTIONS} == builtins
    for spec in MODEL_SPECS.values():
        if spec.section.source == "builtin":
            assert 0 < spec.section().param_count() < MAX_PARAMS / 5, spec.name
        else:  # counted by building on the meta device (training/models.check_model)
            assert spec.section().param_count() is None, spec.name


def test_counts_follow_the_datasets_classes_channels_and_size():
    from mnist_hpc.config.datasets import DataShape

    pytest.importorskip("torch")
    from mnist_hpc.training.models import build_model, count_params

    shape = DataShape(tuple("abcdefghijklmnopqrstuvwxyz"), 3, 32)
    for section in SECTIONS:
        assert section.param_count(shape) == count_params(build_model(section, shape)), type(section).__name__


def test_param_count_needs_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; from mnist_hpc.config import MLPModel; "
        "print(MLPModel(hidden=[128]).param_count()); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["101770", "False"]


# --------------------------------------------------------------------------- the cap


def test_just_under_the_cap_loads_and_just_over_is_refused():
    assert config_from_dict({"model": {"name": "mlp", "hidden": [125_000]}}).model.param_count() < MAX_PARAMS
    with pytest.raises(ConfigError, match=r"model.hidden: the model would have 100,\d{3},\d{3} param"):
        config_from_dict({"model": {"name": "mlp", "hidden": [126_000]}})


@pytest.mark.timeout(30)
def test_cap_refuses_a_huge_mlp_in_a_config_file(tmp_path, cli):
    p = tmp_path / "huge.yaml"
    p.write_text("model:\n  name: mlp\n  hidden: [1000000000]\n")
    t = time.perf_counter()
    r = cli("config", "show", p)
    assert time.perf_counter() - t < 1
    assert r.code == 2 and one_line(r) == f"error: {p}: {CAP_MESSAGE}"


@pytest.mark.timeout(30)
def test_cap_refuses_a_huge_mlp_from_set(tmp_path, cli):
    t = time.perf_counter()
    r = cli("config", "show", "mlp_keras", "--set", "model.hidden=[1000000000]")
    assert time.perf_counter() - t < 1
    assert r.code == 2 and one_line(r) == f"error: mlp_keras (with --set): {CAP_MESSAGE}"
    out = tmp_path / "runs"
    r = cli(
        "train", "mlp_keras", "--set", "model.hidden=[1000000000]", "--set", f"experiment.output_dir={out}"
    )
    assert r.code == 2 and one_line(r).endswith(CAP_MESSAGE) and not out.exists()


@pytest.mark.timeout(30)
def test_cap_refuses_a_stored_config():
    stored = load_config("mlp_keras").to_dict()
    stored["model"] = HUGE_MLP
    t = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        config_from_dict(stored, "runs/x/checkpoints/best.pt (stored config)")
    assert time.perf_counter() - t < 1
    assert str(e.value) == f"runs/x/checkpoints/best.pt (stored config): {CAP_MESSAGE}"


@pytest.mark.parametrize(
    "model,key,count",
    [
        ({"name": "cnn", "hidden": 1_000_000}, "hidden", "9,227,018,826"),
        ({"name": "cnn", "channels": [32, 100_000]}, "channels", "1,872,101,738"),
        ({"name": "fast", "width": 100_000, "depth": 4}, "width", "3,780,011,900,010"),
        ({"name": "fast", "channels": [100, 1_000_000]}, "channels", "912,001,110"),
        ({"name": "mlp", "hidden": [64, 2_000_000, 64]}, "hidden", "258,050,954"),
    ],
)
def test_the_message_names_the_key_that_makes_the_model_big(model, key, count):
    with pytest.raises(
        ConfigError,
        match=rf"^<config>: model\.{key}: the model would have "
        rf"{count} parameters; the cap is 100,000,000 \(MAX_PARAMS",
    ):
        config_from_dict({"model": model})


@pytest.mark.timeout(30)
def test_absurd_integers_are_refused_without_counting_or_printing_them(tmp_path, cli):
    t = time.perf_counter()
    with pytest.raises(ConfigError, match=r"model.hidden: a width of about 1,000,001 digits cannot be built"):
        config_from_dict({"model": {"name": "mlp", "hidden": [10**1_000_000]}})
    with pytest.raises(
        ConfigError, match=r"model.hidden: expected a list of positive .* got \[<an integer of"
    ):
        config_from_dict({"model": {"name": "mlp", "hidden": [-(10**5000)]}})
    assert time.perf_counter() - t < 1
    assert show(10**5000) == "<an integer of 5,001 digits>" and show(12345) == "12345"
    r = cli("config", "show", "mlp_keras", "--set", "model.hidden=[1" + "0" * 5000 + "]")
    assert r.code == 2 and "an integer of 5,001 characters is too long" in one_line(r)
    p = tmp_path / "big.yaml"
    p.write_text("train: {epochs: " + "9" * 5000 + "}\n")
    r = cli("config", "show", p)
    assert r.code == 2 and f"{p}: invalid YAML (line 1, column 17): an integer of 5,000" in one_line(r)


def test_build_section_err_takes_a_whole_problem():
    import dataclasses

    @dataclasses.dataclass
    class _S:
        n: int = 0

        def check(self, err):
            if self.n > 1:
                err("n", problem="too many")

    with pytest.raises(ConfigError, match=r"^f.yaml: s.n: too many$"):
        build_section(_S, {"n": 2}, "s", "f.yaml")


# --------------------------------------------------------------------------- crafted checkpoints


def crafted_checkpoint(tmp_path, model: dict):
    """A file with a checkpoint's structure whose stored config asks for ``model``."""
    torch = pytest.importorskip("torch")
    from mnist_hpc.training.checkpoint import FORMAT, VERSION

    config = load_config("mlp_keras").to_dict()
    config["model"] = model
    state = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": 1,
        "step": 10,
        "config": config,
        "model": {"0.weight": torch.zeros(4, 784), "0.bias": torch.zeros(4)},
        "optimizer": {},
    }
    p = tmp_path / "best.pt"
    torch.save(state, p)
    return p


@pytest.fixture
def no_big_tensors(monkeypatch):
    """Fail the test if anything tries to allocate a tensor of more than MAX_PARAMS elements."""
    torch = pytest.importorskip("torch")
    real = torch.empty

    def guarded(*size, **kwargs):
        dims = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        n = 1
        for d in dims:
            n *= int(d)
        assert n <= MAX_PARAMS, "allocated a tensor of more than MAX_PARAMS elements"
        return real(*size, **kwargs)

    monkeypatch.setattr(torch, "empty", guarded)


def digit_png(tmp_path):
    from PIL import Image, ImageDraw

    img = Image.new("L", (56, 56), 255)
    ImageDraw.Draw(img).line([(28, 8), (28, 48)], fill=0, width=6)  # a dark "1" on white
    p = tmp_path / "one.png"
    img.save(p)
    return p


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_crafted_checkpoint_is_refused_before_allocating(tmp_path, cli, no_big_tensors, command):
    ckpt = crafted_checkpoint(tmp_path, HUGE_MLP)
    args = [ckpt] if command == "evaluate" else [ckpt, digit_png(tmp_path)]
    t = time.perf_counter()
    r = cli(command, *args, "--device", "cpu") if command == "evaluate" else cli(command, *args)
    assert time.perf_counter() - t < 5
    assert r.code != 0 and one_line(r) == f"error: {ckpt} (stored config): {CAP_MESSAGE}"
    assert r.out == ""


@pytest.mark.timeout(60)
def test_crafted_checkpoint_with_an_absurd_integer(tmp_path, cli, no_big_tensors):
    # torch's safe loader reads integers of up to 255 bytes (pickle's LONG1), about 600 digits
    ckpt = crafted_checkpoint(tmp_path, {"name": "fast", "channels": [10**500]})
    r = cli("evaluate", ckpt, "--device", "cpu")
    assert r.code != 0 and "model.channels: a width of about 501 digits cannot be built" in one_line(r)
