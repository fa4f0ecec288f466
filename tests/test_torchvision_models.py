"""torchvision architectures as models: pretrained weights read from the torch hub cache (a job
never downloads), one input channel, a new head, the batch resized on the device."""

from __future__ import annotations

import json

import pytest
import torch

from mnist_hpc.config import config_from_dict
from mnist_hpc.config.datasets import MNIST_SHAPE, DataShape
from mnist_hpc.training.models import build_model, hub_weights_path


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch.hub.get_dir(): $TORCH_HOME/hub
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch"


def write_imagenet_weights(arch: str, name: str = "DEFAULT"):
    """A weights file in the place and layout torchvision's own would have: this test's stand-in
    for `mnist-hpc models download` (no internet here)."""
    from torchvision import models as tvm

    path, _ = hub_weights_path(arch, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = tvm.get_model(arch, weights=None)
    torch.save(net.state_dict(), path)
    return path, net


def test_pretrained_weights_come_from_the_hub_cache_and_adapt_to_grey_images(torch_home):
    _path, net = write_imagenet_weights("resnet18")
    cfg = config_from_dict(
        {"model": {"name": "torchvision", "arch": "resnet18", "weights": "DEFAULT", "resize": 64}}
    )
    model = build_model(cfg.model, DataShape(tuple("abcdefghijklmnopqrstuvwxyz")))
    inner = model.net
    # the first conv is the RGB one summed over its input channels: a grey image gives the same output
    assert inner.conv1.in_channels == 1
    assert torch.allclose(inner.conv1.weight, net.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(inner.layer1[0].conv1.weight, net.layer1[0].conv1.weight)  # the rest as pretrained
    assert inner.fc.out_features == 26
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 26)
        grey_rgb = net.eval().conv1(
            torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear").expand(-1, 3, -1, -1)
        )
        ours = inner.conv1(torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear"))
    assert torch.allclose(grey_rgb, ours, atol=1e-5)


def test_missing_weights_name_the_download_command(cli, torch_home, tmp_path):
    cfg = tmp_path / "tv.yaml"
    cfg.write_text("model: {name: torchvision, arch: resnet18, weights: DEFAULT}\n")
    r = cli("train", cfg)
    assert r.code == 1, r
    assert "not in the torch hub cache" in r.err and "mnist-hpc models download resnet18" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_unknown_arch_and_weights_are_one_line(cli, torch_home, tmp_path):
    cfg = tmp_path / "tv.yaml"
    cfg.write_text("model: {name: torchvision, arch: resnet81}\n")
    r = cli("config", "validate", cfg)
    assert r.code == 2 and "did you mean 'resnet18'" in r.err, r
    cfg.write_text("model: {name: torchvision, arch: resnet18, weights: IMAGENET9K}\n")
    r = cli("config", "validate", cfg)
    assert r.code == 2 and "IMAGENET1K_V1" in r.err, r


def test_models_download_finds_a_cached_file(cli, torch_home):
    path, _ = write_imagenet_weights("resnet18")
    r = cli("models", "download", "resnet18")
    assert r.code == 0 and "already there" in r.out and str(path) in r.out, r


def test_a_weights_file_next_to_the_config(torch_home, tmp_path):
    from torchvision import models as tvm

    torch.save(tvm.get_model("mobilenet_v3_small", weights=None).state_dict(), tmp_path / "mine.pth")
    cfg = tmp_path / "tv.yaml"
    cfg.write_text("model: {name: torchvision, arch: mobilenet_v3_small, weights: mine.pth}\n")
    from mnist_hpc.config import load_config

    c = load_config(cfg)
    assert c.model.weights == str(tmp_path / "mine.pth")
    assert build_model(c.model, MNIST_SHAPE).eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.realdata
@pytest.mark.slow
def test_resnet18_pretrained_trains_one_epoch_on_2000_images(cli, torch_home, real_root, tmp_path):
    write_imagenet_weights("resnet18")
    cfg = tmp_path / "tv.yaml"
    cfg.write_text(f"""
experiment: {{name: tv, output_dir: {tmp_path / "runs"}}}
data: {{subset: 2000, val_split: null, batch_size: 100, eval_batch_size: 500}}
model: {{name: torchvision, arch: resnet18, weights: DEFAULT, resize: 64}}
optim: {{name: adamw, lr: 0.001}}
train: {{epochs: 1}}
""")
    r = cli("train", cfg, "--data-dir", real_root)
    assert r.code == 0, r
    run = next((tmp_path / "runs").iterdir())
    s = json.loads((run / "summary.json").read_text())
    assert s["params"] == 11_175_370 and s["test_accuracy"] > 0.5  # a real signal after 2,000 images
