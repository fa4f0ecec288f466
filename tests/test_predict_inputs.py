"""What predict and evaluate are handed (issue 27, defects 7 and 8): arrays in the documented
layouts are classified and any other shape is refused naming those it accepts; a device string
is checked by one validator everywhere (config, --device, device=), in one line."""

from __future__ import annotations

import numpy as np
import pytest

import mnist_hpc
from mnist_hpc.config.validate import check_device
from mnist_hpc.errors import ConfigError, UserError
from tests.cli_support import one_line
from tests.conftest import synthetic_split


@pytest.fixture(scope="module")
def digits():
    x, _ = synthetic_split(5, seed=3)
    return x  # 5×28×28 uint8


# --------------------------------------------------------------------------- defect 7


def test_predict_takes_every_documented_array_layout(run, digits):
    r = mnist_hpc.Run.load(run)
    one = [p.label for p in r.predict(list(digits))]
    assert [p.label for p in r.predict(digits)] == one  # N×H×W: a batch
    assert [p.label for p in r.predict(digits[:, None])] == one  # N×1×H×W
    assert [p.label for p in r.predict(digits[..., None])] == one  # N×H×W×1
    colour = np.repeat(digits[..., None], 3, axis=-1)  # N×H×W×3 (prepared from a picture, like a file)
    rgb = [p.label for p in r.predict(colour)]
    assert len(rgb) == 5 and all(rgb)
    assert [p.label for p in r.predict(np.moveaxis(colour, -1, 1))] == rgb  # N×3×H×W
    assert [p.label for p in r.predict([np.moveaxis(c, -1, 0) for c in colour])] == rgb  # each 3×H×W
    assert r.predict(colour[0])[0].label == rgb[0]  # one H×W×3 image
    assert r.predict(digits[0][None])[0].label == one[0]  # one 1×H×W image
    assert len(r.predict(digits[:2])) == 2


@pytest.mark.parametrize(
    "shape, needle",
    [
        (
            (3, 28, 28),
            "an array of shape 3×28×28 is ambiguous (3 grayscale images, or one colour image with its "
            "channels first?)",
        ),
        ((28,), "an array of shape 28: not an image; predict takes H×W (grayscale)"),
        ((2, 2, 28, 28, 1), "an array of shape 2×2×28×28×1: not an image"),
        ((2, 5, 28, 28), "image 0: an array of shape 5×28×28 is not an image; predict takes H×W (grayscale)"),
    ],
)
def test_predict_refuses_other_array_shapes_naming_the_accepted_ones(run, shape, needle):
    with pytest.raises(UserError) as e:
        mnist_hpc.Run.load(run).predict(np.zeros(shape, np.uint8))
    assert needle in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- defect 8


def test_one_validator_for_device_strings():
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"):
        assert check_device(ok) == ok
    with pytest.raises(
        ConfigError,
        match=r"^--device='gpu': not a device \(for a GPU write cuda, or cuda:N for "
        r"GPU N\); expected auto, cpu, cuda, cuda:N or mps$",
    ):
        check_device("gpu")
    for bad in ("cuda:x", "CPU ", "", "tpu", 0, None, "cuda:-1"):
        with pytest.raises(ConfigError, match="not a device"):
            check_device(bad, "device")


def test_predict_and_evaluate_name_a_bad_device_not_a_corrupted_checkpoint(run, cli, digits, synth_root):
    from mnist_hpc.training.inference import evaluate_runs, predict_arrays

    r = mnist_hpc.Run.load(run)
    for call in (
        lambda: r.predict(digits, device="gpu"),
        lambda: r.model(device="gpu"),
        lambda: r.evaluate(device="gpu", data_dir=synth_root),
        lambda: predict_arrays(run, list(digits), device="gpu"),
    ):
        with pytest.raises(ConfigError, match=r"^device='gpu': not a device \(for a GPU write cuda"):
            call()
    with pytest.raises(ConfigError, match=r"^--device='gpu': not a device"):
        evaluate_runs([run], device="gpu", data_dir=synth_root)
    res = cli("evaluate", run, "--device", "gpu", "--data-dir", synth_root)
    assert res.code == 2 and one_line(res) == (
        "error: --device='gpu': not a device (for a GPU write cuda, or "
        "cuda:N for GPU N); expected auto, cpu, cuda, cuda:N or mps"
    )
    assert "did you mean 'cpu'" in one_line(cli("evaluate", run, "--device", "cpi", "--data-dir", synth_root))
    with pytest.raises(ConfigError, match=r"runtime\.device: .*auto, cpu, cuda, cuda:N or mps"):
        mnist_hpc.load_config("quickstart", ["runtime.device=gpu"])
