"""Sweep files that cannot explode (lazy runs, a cap, bounded YAML), shipped base configs by name,
and `config validate` over sweep files (every run's config checked)."""

from __future__ import annotations

import itertools
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from mnist_hpc.cli.experiments import sweep_group
from mnist_hpc.errors import ConfigError
from mnist_hpc.experiments import axes
from mnist_hpc.experiments.sweepfile import MAX_RUNS, is_sweep_file, load_sweep, validate_sweep_file
from tests.paths import ROOT


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


def write(tmp_path: Path, body: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text("base: base.yaml\n" + textwrap.dedent(body))
    return path


def big_grid(tmp_path: Path, n_lr: int, n_bs: int) -> Path:
    lrs = ", ".join(f"{(i + 1) * 1e-5:.5g}" for i in range(n_lr))
    sizes = ", ".join(str(i + 1) for i in range(n_bs))
    return write(tmp_path, f"grid:\n  optim.lr: [{lrs}]\n  data.batch_size: [{sizes}]\n")


def one_line_error(result, *pieces):
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    for piece in pieces:
        assert piece in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --------------------------------------------------------------------------- size


def test_a_sweep_over_the_cap_is_refused_at_once_and_allowed_on_request(tmp_path, base):
    path = big_grid(tmp_path, 1000, 100)  # 100,000 runs
    start = time.monotonic()
    result = CliRunner().invoke(sweep_group, ["plan", str(path)])
    assert time.monotonic() - start < 5
    one_line_error(result, "100,000 runs (1,000 x 100)", f"more than {MAX_RUNS:,}", "--allow-large")
    one_line_error(CliRunner().invoke(sweep_group, ["run", str(path)]), "--allow-large")

    # allowed: nothing is expanded until asked for; run i is the i-th of the product
    start = time.monotonic()
    sweep = load_sweep(path, allow_large=True, validate=False)
    assert len(sweep.runs) == 100_000
    last = sweep.runs[-1]
    assert time.monotonic() - start < 5
    assert last.index == 99_999 and last.name == "lr=0.01_bs=100"
    assert last.config.optim.lr == 0.01 and last.config.data.batch_size == 100
    assert last.run_dir == sweep.output_dir / "lr=0.01_bs=100"


def test_an_absurd_random_count_is_refused_before_anything_is_drawn(tmp_path, base):
    path = write(tmp_path, "random: {count: 1000000000, params: {optim.lr: {loguniform: [1.0e-4, 0.1]}}}\n")
    tracemalloc.start()
    try:
        start = time.monotonic()
        with pytest.raises(ConfigError, match=r"1,000,000,000 runs, more than 10,000"):
            load_sweep(path)
        lazy = load_sweep(path, allow_large=True, validate=False)  # even allowed: nothing stored
        assert len(lazy.runs) == 10**9 and 1e-4 <= lazy.runs[1000].config.optim.lr <= 0.1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 5
    assert peak < 20 * 2**20
    repeat = write(tmp_path, "seeds: {repeat: 1000000000}\n", name="r.yaml")
    assert len(load_sweep(repeat, allow_large=True, validate=False).runs) == 10**9
    one_line_error(CliRunner().invoke(sweep_group, ["plan", str(path)]), "1,000,000,000 runs")


def test_random_access_and_iteration_agree(tmp_path, base):
    """The lazy product gives the runs in the order (and with the names) of a plain expansion."""
    sweep = load_sweep(
        write(
            tmp_path,
            """\
        grid: {model.hidden: [[4], [4]], optim.lr: [0.1, 0.2]}
        zip: {data.batch_size: [16, 32], train.epochs: [1, 2]}
        random: {count: 3, seed: 7, params: {optim.weight_decay: {choice: [0.0, 0.1]}}}
        seeds: {repeat: 2}
        """,
        )
    )
    runs = list(sweep.runs)
    assert len(runs) == 2 * 2 * 2 * 3 * 2
    assert [sweep.runs[i].name for i in reversed(range(len(runs)))] == [r.name for r in reversed(runs)]
    assert len({r.name for r in runs}) == len(runs)  # repeated values got suffixes
    # the draws are those of one seeded generator, in order, as the first release made them
    import random as stdlib_random

    rng = stdlib_random.Random(7)
    draws = [rng.choice([0.0, 0.1]) for _ in range(3)]
    assert [r.params["optim.weight_decay"] for r in runs[:6:2]] == draws
    dims = sweep.dims
    expected = [
        {k: v for p in combo for k, v in p.items()}
        for combo in itertools.product(*([d.point(i) for i in range(d.size)] for d in dims))
    ]
    assert [r.params for r in runs] == expected
    assert [axes.params_at(dims, i) for i in range(len(runs))] == expected


# --------------------------------------------------------------------------- hostile YAML

BOMB = """\
a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize("where", ["grid: {optim.lr: *i}\n", "set: {model.hidden: *i}\nseeds: [0]\n"])
def test_a_yaml_bomb_is_refused_quickly_in_one_short_line(tmp_path, base, where):
    path = tmp_path / "bomb.yaml"
    path.write_text("base: base.yaml\n" + BOMB + where)
    start = time.monotonic()
    result = CliRunner().invoke(sweep_group, ["plan", str(path)])
    assert time.monotonic() - start < 5
    one_line_error(result, str(path))
    assert len(result.output) < 300


# --------------------------------------------------------------------------- base by name


def test_base_may_name_a_shipped_config(tmp_path):
    path = tmp_path / "named.yaml"
    path.write_text(
        f"base: quickstart\nset: {{experiment.output_dir: {tmp_path}}}\ngrid: {{optim.lr: [0.001, 0.01]}}\n"
    )
    sweep = load_sweep(path)
    assert sweep.base.name == "quickstart.yaml" and sweep.base.is_file()
    assert [r.config.model.name for r in sweep.runs] == ["fast", "fast"]
    missing = tmp_path / "missing.yaml"
    missing.write_text("base: quickstrat\nseeds: [0]\n")
    result = CliRunner().invoke(sweep_group, ["plan", str(missing)])
    one_line_error(result, f"{missing}: base: quickstrat: no such file")
    no_base = tmp_path / "nobase.yaml"
    no_base.write_text("seeds: [0]\n")
    one_line_error(CliRunner().invoke(sweep_group, ["plan", str(no_base)]), "base: missing")


# --------------------------------------------------------------------------- config validate


def test_config_validate_checks_every_run_of_a_sweep_file(cli, tmp_path, base):
    shipped = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))
    r = cli("config", "validate", *shipped, ROOT / "configs" / "quickstart.yaml")
    assert r.code == 0, r
    lines = r.out.splitlines()
    for path, line in zip(shipped, lines, strict=False):
        assert line == f"ok    {path} ({validate_sweep_file(path)} runs)"
    assert lines[-1] == f"ok    {ROOT / 'configs' / 'quickstart.yaml'}"

    one = write(tmp_path, "seeds: [3]\n", name="one.yaml")
    bad = write(tmp_path, "grid: {optim.lr: [0.1, -1]}\n", name="bad.yaml")
    r = cli("config", "validate", one, bad)
    assert r.code == 2
    assert r.out == f"ok    {one} (1 run)\n"
    assert r.err.startswith(f"error {bad}: run 1 (lr=-1): optim.lr:") and len(r.err.splitlines()) == 1
    assert is_sweep_file(one) and not is_sweep_file(base) and not is_sweep_file(tmp_path / "absent")
