"""The model zoo: torch modules built from ``cfg.model`` (parameters typed in config/models.py).

All models take normalised (N, 1, 28, 28) input and return logits for 10 classes.
"""

from __future__ import annotations

import torch
from torch import nn

from mnist_hpc.config.models import MODEL_SPECS, ModelSection

NUM_CLASSES = 10

_ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU}


def mlp(hidden, activation, dropout) -> nn.Module:
    """784 -> hidden... -> 10. ``hidden=[128]`` is the workshop's Keras Dense(128, relu) net."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = 28 * 28
    for h in hidden:
        layers += [nn.Linear(width, h), _ACT[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, NUM_CLASSES))
    return nn.Sequential(*layers)


def cnn(channels, hidden, dropout1, dropout2) -> nn.Module:
    """The classic PyTorch MNIST example net (the cluster case study's submit_job.sh)."""
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3), nn.ReLU(),
        nn.Conv2d(c1, c2, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(dropout1), nn.Flatten(),
        nn.Linear(c2 * 12 * 12, hidden), nn.ReLU(), nn.Dropout(dropout2),
        nn.Linear(hidden, NUM_CLASSES),
    )


def lenet5(activation) -> nn.Module:
    """LeNet-5: the 32x32 input of the paper is had by padding the first convolution."""
    act = _ACT[activation]
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), act(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), act(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, NUM_CLASSES),
    )


def resnet18() -> nn.Module:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem for one-channel 28x28 images.

    The ImageNet stem (7x7 stride 2 + max-pool) would shrink 28 px to 7 before the first block;
    with this stem and the max-pool kept, stage 1 runs at 14x14 and stage 4 at 2x2.
    """
    from torchvision.models import resnet18 as tv_resnet18

    m = tv_resnet18(num_classes=NUM_CLASSES)
    m.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    return m


def fast(width, depth, channels=(), head="max", downsample="maxpool", convs=1) -> nn.Module:
    """A small batch-normed conv net for time-to-accuracy: blocks of conv3x3 -> 2x2 max-pool ->
    BN -> ReLU (``downsample: maxpool``) or stride-2 conv3x3 -> BN -> ReLU (``stride``: a quarter
    of the conv work and no pooling, a little less accurate per image seen). With ``convs`` > 1
    each block starts with ``convs - 1`` conv3x3 -> BN -> ReLU at full resolution (VGG-style).
    Widths are ``channels`` when given, else ``depth`` blocks from ``width`` doubling. The head
    is a global max (``head: max``) or the flattened last feature map (``flatten``), then one
    linear layer.

    Pooling before BN/ReLU gives the same function class as conv -> BN -> ReLU -> pool (max-pool
    commutes with ReLU and with a per-channel increasing affine map) at a quarter of the BN/ReLU
    cost; on CPU, max-pool is the dearest op of a step unless run channels_last.
    """
    widths = list(channels) or [width * 2 ** i for i in range(depth)]
    layers: list[nn.Module] = []
    c_in, size = 1, 28
    for c_out in widths:
        for _ in range(convs - 1):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        if downsample == "stride":
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)]
            size = (size + 1) // 2
        else:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2)]
            size = size // 2
        layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    if head == "max":
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c_in, NUM_CLASSES)]
    else:
        layers += [nn.Flatten(), nn.Linear(c_in * size * size, NUM_CLASSES)]
    return nn.Sequential(*layers)


BUILDERS = {"mlp": mlp, "cnn": cnn, "lenet5": lenet5, "resnet18": resnet18, "fast": fast}
assert set(BUILDERS) == set(MODEL_SPECS), "config/models.py and training/models.py must name the same models"


def build_model(model_cfg: ModelSection | dict) -> nn.Module:
    """The torch module for ``cfg.model`` (or a plain ``{"name": ..., **params}`` dict)."""
    if isinstance(model_cfg, ModelSection):
        return BUILDERS[model_cfg.name](**model_cfg.params())
    params = {k: v for k, v in model_cfg.items() if k != "name"}
    return BUILDERS[model_cfg["name"]](**params)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_mb(model: nn.Module) -> float:
    """Parameters and buffers, in MB (10^6 bytes)."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(b.numel() * b.element_size() for b in model.buffers())
    return n / 1e6


def summary_rows(model: nn.Module, input_shape=(1, 1, 28, 28)):
    """(layer name, type, output shape, parameters) for every leaf module, via forward hooks."""
    rows = []
    hooks = []
    for name, mod in model.named_modules():
        if list(mod.children()) or mod is model:
            continue

        def hook(m, _inp, out, name=name):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else "?"
            rows.append((name, type(m).__name__, shape, sum(p.numel() for p in m.parameters(recurse=False))))

        hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def summary_text(model: nn.Module, title: str) -> str:
    """A Keras ``model.summary()``-like table."""
    rows = summary_rows(model)
    w1 = max([len("Layer (type)")] + [len(f"{n} ({t})") for n, t, _, _ in rows])
    def fmt(shape):
        return "(None, " + ", ".join(str(d) for d in shape[1:]) + ")" if isinstance(shape, tuple) else shape

    w2 = max([len("Output Shape")] + [len(fmt(s)) for _, _, s, _ in rows])
    line = "-" * (w1 + w2 + 16)
    out = [f"Model: {title}", line, f"{'Layer (type)':<{w1}}  {'Output Shape':<{w2}}  {'Param #':>10}", "=" * len(line)]
    for n, t, s, p in rows:
        out.append(f"{n + ' (' + t + ')':<{w1}}  {fmt(s):<{w2}}  {p:>10,}")
    total = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out += ["=" * len(line), f"Total params: {total:,} ({size_mb(model):.2f} MB)",
            f"Trainable params: {trainable:,}", f"Non-trainable params: {total - trainable:,}", line]
    return "\n".join(out)
