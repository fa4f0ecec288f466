"""`mnist-hpc evaluate` is a face over ``mnist_hpc.evaluate``: the figures the command prints are
the ones the Python API returns, for one run, several and their ensemble, and ``Run.evaluate``
agrees with both."""

from __future__ import annotations

import pytest

import mnist_hpc


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_root):
    """Two tiny runs (one epoch each, other seeds) on the synthetic data."""
    top = tmp_path_factory.mktemp("parity")
    runs = []
    for seed in (0, 1):
        cfg = mnist_hpc.load_config(
            "quickstart",
            [
                f"experiment.output_dir={top / 'runs'}",
                f"experiment.name=parity{seed}",
                f"experiment.seed={seed}",
                "model.name=mlp",
                "model.hidden=[16]",
                "train.epochs=1",
                "data.val_split=0.2",
                "runtime.threads=1",
            ],
        )
        runs.append(mnist_hpc.train(cfg, data_dir=synth_root, progress=False, echo=lambda m: None))
    return runs


def _line(r: dict) -> str:
    return f"test accuracy {r['test_accuracy'] * 100:.2f}%  loss {r['test_loss']:.4f}  {r['checkpoint']}"


def test_evaluate_prints_what_the_api_returns(trained, synth_root, cli):
    run = trained[0]
    r = cli("evaluate", run.path, "--data-dir", synth_root, "--device", "cpu")
    assert r.code == 0, r.err
    found = mnist_hpc.evaluate(run, data_dir=synth_root, device="cpu")
    assert found.ensemble is None or found.ensemble["members"] == 1
    assert r.out.splitlines() == [_line(found.results[0])]
    assert run.evaluate(data_dir=synth_root, device="cpu") == found.results[0]


def test_an_ensemble_prints_what_the_api_returns(trained, synth_root, cli):
    paths = [run.path for run in trained]
    r = cli("evaluate", *paths, "--ensemble", "--data-dir", synth_root, "--device", "cpu")
    assert r.code == 0, r.err
    found = mnist_hpc.evaluate(trained, data_dir=synth_root, device="cpu")
    ens = found.ensemble
    assert ens is not None and ens["members"] == 2
    assert r.out.splitlines() == [
        *map(_line, found.results),
        f"ensemble of 2: test accuracy {ens['test_accuracy'] * 100:.2f}%  loss {ens['test_loss']:.4f}",
    ]


def test_a_bad_device_is_named_as_each_caller_spells_it(trained, synth_root, cli):
    r = cli("evaluate", trained[0].path, "--device", "gpu0")
    assert r.code != 0 and r.err.strip().splitlines()[-1].startswith("error: --device='gpu0': not a device")
    with pytest.raises(mnist_hpc.errors.UserError, match=r"^device='gpu0': not a device"):
        mnist_hpc.evaluate(trained[0], data_dir=synth_root, device="gpu0")
