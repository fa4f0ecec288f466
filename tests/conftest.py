"""Shared fixtures: a small synthetic dataset in torchvision's layout, the real data when present,
and a helper that runs the CLI in-process."""

from __future__ import annotations

import contextlib
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

# the project root first on sys.path: `benchmarks` and the `tests.*` helpers import from it (the
# test files take the root itself from tests/paths.py, importable only once this line has run)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# fixtures shared by several test files: the Slurm sandbox, the fake sweep trainer, synthetic run folders
pytest_plugins = ("tests.slurm_support", "tests.sweep_fakes", "tests.run_fakes")
# the helper modules that test files import and whose asserts fail with pytest's explanation
# (the plugins above are rewritten already)
pytest.register_assert_rewrite("tests.browser_support", "tests.cli_support", "tests.own_model_support")


def pytest_configure(config) -> None:
    """Before any worker starts (pytest-xdist's controller, or the one process without it): unpack
    the real datasets' archives once, so that parallel workers never race to unpack them."""
    if hasattr(config, "workerinput"):
        return
    named = os.environ.get("MNIST_HPC_DATA_DIR")
    if not named:
        return
    from mnist_hpc.config.datasets import DATASETS
    from mnist_hpc.training.data import prepare

    for spec in DATASETS.values():
        if (Path(named) / spec.folder / "raw").is_dir():
            # an incomplete folder: the tests that need it say so themselves
            with contextlib.suppress(Exception):
                prepare(spec, named, download=False)


@pytest.fixture(autouse=True)
def _terminal_width(monkeypatch):
    """Tables and reports are as wide as the terminal ($COLUMNS first): every test sees the 100
    columns of a process without a terminal, whatever runs it (pytest-xdist's workers set 80)."""
    monkeypatch.setenv("COLUMNS", "100")


def pytest_collection_modifyitems(items) -> None:
    """A test that asks for the real datasets (``real_root``) trains on them: marked ``realdata``
    (`make test-fast` leaves those out)."""
    for item in items:
        if "real_root" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("realdata"):
            item.add_marker(pytest.mark.realdata)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (the MNIST format): magic, big-endian dims, uint8 data."""
    magic = 0x0800 | array.ndim
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def synthetic_split(n: int, seed: int):
    """Learnable fake digits: class k is a bright bar at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(y):
        r = 3 + 2 * int(k) + rng.integers(-1, 2)
        c0 = 4 + rng.integers(0, 4)
        x[i, r : r + 2, c0 : c0 + 16] = 255
        x[i, 4:24, 2 + 2 * int(k)] = 200
    return x, y


def make_dataset(root: Path, folder: str = "MNIST", n_train: int = 1200, n_test: int = 300) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        x, y = synthetic_split(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return root


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthdata")
    make_dataset(root, "MNIST")
    make_dataset(root, "FashionMNIST")
    return root


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real MNIST files (a writable copy named by $MNIST_HPC_DATA_DIR), or skip."""
    d = os.environ.get("MNIST_HPC_DATA_DIR")
    if not d or not (Path(d) / "MNIST" / "raw").is_dir():
        pytest.skip(
            "real MNIST not found: set MNIST_HPC_DATA_DIR to a writable copy of the datasets "
            "(e.g. cp -r ../shared/datasets /tmp/mnist-data)"
        )
    return Path(d)


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """A fast config on the synthetic data: a small MLP, 2 epochs."""
    p = tmp_path / "tiny.yaml"
    p.write_text(f"""
experiment: {{name: tiny, seed: 0, output_dir: {tmp_path / "runs"}}}
data: {{dataset: mnist, val_split: 0.2, batch_size: 64, eval_batch_size: 256}}
model: {{name: mlp, hidden: [32]}}
optim: {{name: adam, lr: 0.003}}
train: {{epochs: 2}}
runtime: {{threads: 1}}
""")
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory, synth_root) -> Path:
    """A finished tiny run without a validation split: its newest checkpoint holds the weights
    its summary evaluated (one per test module: the export, export-safety and predict tests)."""
    from mnist_hpc.config import config_from_dict
    from mnist_hpc.training.context import TrainContext
    from mnist_hpc.training.run import run_training

    tmp = tmp_path_factory.mktemp("export")
    cfg = config_from_dict(
        {
            "experiment": {"name": "tiny", "seed": 0, "output_dir": str(tmp / "runs")},
            "data": {"dataset": "mnist", "val_split": None, "batch_size": 64, "eval_batch_size": 256},
            "model": {
                "name": "fast",
                "width": 8,
                "depth": 2,
            },  # conv + batch norm: more to get right than an MLP
            "optim": {"name": "adam", "lr": 0.003},
            "train": {"epochs": 1},
            "runtime": {"threads": 1},
        }
    )
    run_training(
        cfg, ctx=TrainContext(), data_dir=synth_root, run_dir=tmp / "run", progress=False, echo=lambda m: None
    )
    return tmp / "run"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with run folders, and a bin/ first on PATH for fake Slurm commands
    (tests/status_fakes.py writes them), for the `status` and `logs` tests."""
    from mnist_hpc.cli import cluster as commands
    from mnist_hpc.cli.main import cli

    commands.register(cli)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("USER", "someone")
    return tmp_path


class CLIResult:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return f"CLIResult(code={self.code}, out={self.out[-500:]!r}, err={self.err[-500:]!r})"


@pytest.fixture
def cli(capsys):
    """Run `mnist-hpc ARGS...` in-process; returns exit code, stdout, stderr."""
    from mnist_hpc.cli.main import main

    def run(*args):
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return CLIResult(code, out, err)

    return run
