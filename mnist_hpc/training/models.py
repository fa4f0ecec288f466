"""Models as torch modules: the built-in nets, the user's own file, torchvision architectures.

Every model is built for a ``DataShape`` (config/datasets.py: the dataset's class names, image
channels and side) and takes normalised (N, C, H, W) batches, returning (N, num_classes) logits.
Three sources answer the same call, ``build_model(cfg.model, shape)``:

- built-in: ``BUILDERS[name](shape, **params)``; parameters typed in config/models.py;
- ``custom``: ``factory(**args)`` from the user's file (training/usercode.py runs it);
- ``torchvision``: ``torchvision.models.get_model(arch)``, weights from the torch hub cache or a
  file, one input channel and a ``num_classes`` head (``adapt_torchvision``).

``check_model`` is what ``config validate``, ``submit`` and ``train`` run before anything is
written: count on the meta device (no memory) against ``MAX_PARAMS``, then one forward pass of a
tiny batch to check the output is (N, num_classes), each failure one line in the user's terms.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mnist_hpc.config.datasets import MNIST_SHAPE, DataShape
from mnist_hpc.config.models import MAX_PARAMS, MODEL_SPECS, CustomModel, ModelSection
from mnist_hpc.errors import ConfigError, UserError
from mnist_hpc.training import usercode
from mnist_hpc.training.usercode import ModelCode, UserCodeError

_ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU}


def mlp(shape: DataShape, hidden, activation, dropout) -> nn.Module:
    """784 -> hidden... -> 10. ``hidden=[128]`` is the workshop's Keras Dense(128, relu) net."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = shape.channels * shape.size * shape.size
    for h in hidden:
        layers += [nn.Linear(width, h), _ACT[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, shape.num_classes))
    return nn.Sequential(*layers)


def cnn(shape: DataShape, channels, hidden, dropout1, dropout2) -> nn.Module:
    """The classic PyTorch MNIST example net (the cluster case study's submit_job.sh)."""
    c1, c2 = channels
    side = (shape.size - 4) // 2
    return nn.Sequential(
        nn.Conv2d(shape.channels, c1, 3),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(dropout1),
        nn.Flatten(),
        nn.Linear(c2 * side * side, hidden),
        nn.ReLU(),
        nn.Dropout(dropout2),
        nn.Linear(hidden, shape.num_classes),
    )


def lenet5(shape: DataShape, activation) -> nn.Module:
    """LeNet-5: the 32x32 input of the paper is had by padding the first convolution."""
    act = _ACT[activation]
    side = (shape.size // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(shape.channels, 6, 5, padding=2),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        act(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120),
        act(),
        nn.Linear(120, 84),
        act(),
        nn.Linear(84, shape.num_classes),
    )


def resnet18(shape: DataShape) -> nn.Module:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem for one-channel 28x28 images.

    The ImageNet stem (7x7 stride 2 + max-pool) would shrink 28 px to 7 before the first block;
    with this stem and the max-pool kept, stage 1 runs at 14x14 and stage 4 at 2x2.
    """
    from torchvision.models import resnet18 as tv_resnet18

    m = tv_resnet18(num_classes=shape.num_classes)
    m.conv1 = nn.Conv2d(shape.channels, 64, 3, 1, 1, bias=False)
    return m


def fast(shape: DataShape, width, depth, channels=(), head="max", downsample="maxpool", convs=1) -> nn.Module:
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
    widths = list(channels) or [width * 2**i for i in range(depth)]
    layers: list[nn.Module] = []
    c_in, size = shape.channels, shape.size
    for c_out in widths:
        for _ in range(convs - 1):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
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
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c_in, shape.num_classes)]
    else:
        layers += [nn.Flatten(), nn.Linear(c_in * size * size, shape.num_classes)]
    return nn.Sequential(*layers)


# The built-in nets: name -> builder(shape, **the section's params). A new built-in is a section
# class in config/models.py (listed in MODEL_SPECS) and its builder here.
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "lenet5": lenet5,
    "resnet18": resnet18,
    "fast": fast,
}
assert set(BUILDERS) == {n for n, s in MODEL_SPECS.items() if s.section.source == "builtin"}, (
    "config/models.py and training/models.py must name the same built-in models"
)


# --------------------------------------------------------------------------- torchvision


def torchvision_arches() -> list[str]:
    """The classification architectures of torchvision.models."""
    from torchvision import models as tvm

    return sorted(tvm.list_models(module=tvm))


def _tv_weights_enum(arch: str, name: str):
    from torchvision import models as tvm

    enum = tvm.get_model_weights(arch)
    try:
        return enum.DEFAULT if name == "DEFAULT" else enum[name.split(".")[-1]]
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise ConfigError(
            f"model.weights: {name!r} is not a weights name of {arch}; expected one of {names} "
            f"(or null, or a .pth file)"
        ) from None


def hub_weights_path(arch: str, name: str) -> tuple[Path, Any]:
    """Where torch.hub keeps the file of ``arch``'s weights ``name``, and the weights enum value
    (a torchvision ``WeightsEnum`` member; torchvision ships no type information)."""
    import os

    weights = _tv_weights_enum(arch, name)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url), weights


def weights_path(model_cfg) -> Path:
    """The file a torchvision section's ``weights`` names: a .pth file, or the torch hub cache's
    file of a weights name (DEFAULT, IMAGENET1K_V1...); refused when it is not there."""
    if model_cfg.weights_file():
        path = Path(model_cfg.weights_file())
        if not path.is_file():
            raise UserError(f"model.weights: {path}: not found")
        return path
    path, enum = hub_weights_path(model_cfg.arch, model_cfg.weights)
    if not path.is_file():
        raise UserError(
            f"model.weights: {model_cfg.arch} {enum} is not in the torch hub cache ({path}); "
            f"compute nodes have no internet: run `mnist-hpc models download {model_cfg.arch} "
            f"--weights {model_cfg.weights}` on a login node, with $TORCH_HOME set to the "
            f"place the job reads"
        )
    return path


def _load_weights_file(path: Path, key: str = "model.weights") -> dict:
    if not path.is_file():
        raise UserError(f"{key}: {path}: not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(
            f"{key}: {path}: not a loadable weights file ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else 'unreadable'})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a checkpoint of this tool, or a training script's {"model": ...}
    if not isinstance(state, dict):
        raise UserError(f"{key}: {path}: expected a state_dict (a mapping of tensors)")
    return state


def _first_rgb_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d] | None:
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and mod.in_channels == 3:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr, mod
        if isinstance(mod, nn.Conv2d):
            return None
    return None


def _last_head(model: nn.Module, width: int) -> tuple[nn.Module, str, nn.Linear | nn.Conv2d] | None:
    """The classifier layer: the last Linear (or 1x1 Conv, SqueezeNet) with ``width`` outputs."""
    found: tuple[str, nn.Linear | nn.Conv2d] | None = None
    for name, mod in model.named_modules():
        if (isinstance(mod, nn.Linear) and mod.out_features == width) or (
            isinstance(mod, nn.Conv2d) and mod.out_channels == width
        ):
            found = (name, mod)
    if found is None:
        return None
    name, mod = found
    parent_name, _, attr = name.rpartition(".")
    return model.get_submodule(parent_name) if parent_name else model, attr, mod


class Resized(nn.Module):
    """Resize each batch to ``size`` x ``size`` on its device before the wrapped net (bilinear)."""

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x):
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        return self.net(x)


def adapt_torchvision(net: nn.Module, shape: DataShape, n_out: int) -> nn.Module:
    """Fit an ImageNet-shaped net to ``shape``: a one-channel first conv whose weights are the sum
    of the RGB weights (a grey image fed as three equal channels gives the same output, for a
    third of that layer's work), and a new head of ``num_classes`` outputs."""
    if shape.channels == 1:
        found = _first_rgb_conv(net)
        if found is not None:
            parent, attr, conv = found
            new = nn.Conv2d(
                1,
                conv.out_channels,
                _pair(conv.kernel_size),
                _pair(conv.stride),
                conv.padding if isinstance(conv.padding, str) else _pair(conv.padding),
                _pair(conv.dilation),
                conv.groups,
                conv.bias is not None,
                padding_mode=conv.padding_mode,
            )
            with torch.no_grad():
                new.weight.copy_(conv.weight.sum(1, keepdim=True))
                if conv.bias is not None and new.bias is not None:  # new has a bias when conv has
                    new.bias.copy_(conv.bias)
            setattr(parent, attr, new)
        else:  # no leading RGB conv to adapt: repeat the grey channel instead
            net = nn.Sequential(_Repeat3(), net)
    head = _last_head(net, n_out)
    if head is None:
        raise ConfigError(f"model.arch: cannot find the classifier layer ({n_out} outputs) to replace")
    parent, attr, old = head
    if shape.num_classes != n_out:
        if isinstance(old, nn.Linear):
            setattr(parent, attr, nn.Linear(old.in_features, shape.num_classes, bias=old.bias is not None))
        else:
            setattr(
                parent,
                attr,
                nn.Conv2d(old.in_channels, shape.num_classes, _pair(old.kernel_size), _pair(old.stride)),
            )
    return net


def _pair(v: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's kernel_size, stride, padding or dilation: torch stores two ints (``_pair``) but
    types the attributes ``tuple[int, ...]``."""
    return cast("tuple[int, int]", v)


class _Repeat3(nn.Module):
    def forward(self, x):
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def torchvision_model(model_cfg, shape: DataShape, *, load_weights: bool = True) -> nn.Module:
    from torchvision import models as tvm

    arch = model_cfg.arch
    if arch not in torchvision_arches():
        from mnist_hpc.config.validate import did_you_mean

        raise ConfigError(
            f"model.arch: {arch!r} is not a classification model of torchvision.models"
            f"{did_you_mean(arch, torchvision_arches())}; `mnist-hpc models --torchvision` lists them"
        )
    kwargs = {"aux_logits": False, "init_weights": False} if arch in ("googlenet", "inception_v3") else {}
    try:
        net = tvm.get_model(arch, weights=None, **kwargs)
    except TypeError:
        net = tvm.get_model(arch, weights=None)
    weights = model_cfg.weights
    if weights:
        path = weights_path(model_cfg)  # an unknown name or a missing file is refused even unloaded
        if load_weights:
            try:
                state = _load_weights_file(path)
                net.load_state_dict(state, strict=False) if kwargs else net.load_state_dict(state)
            except RuntimeError as e:
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                raise UserError(
                    f"model.weights: {weights}: does not fit {arch} "
                    f"({(lines[1] if len(lines) > 1 else lines[0] if lines else '')[:160]})"
                ) from None
    net = adapt_torchvision(net, shape, 1000)
    return Resized(net, model_cfg.resize) if model_cfg.resize else net


def download_weights(arch: str, name: str = "DEFAULT") -> tuple[Path, bool]:
    """Fetch ``arch``'s weights ``name`` into the torch hub cache (checked against the digest in
    the file's name, as torch.hub does); (the file, whether it was downloaded now)."""
    if arch not in torchvision_arches():
        from mnist_hpc.config.validate import did_you_mean

        raise ConfigError(
            f"{arch!r} is not a classification model of torchvision.models"
            f"{did_you_mean(arch, torchvision_arches())}"
        )
    path, weights = hub_weights_path(arch, name)
    if path.is_file():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(
            weights.url, str(path), hash_prefix=_hash_prefix(path.name), progress=True
        )
    except Exception as e:
        raise UserError(
            f"{arch} {name}: download from {weights.url} failed ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'}); this needs internet (a "
            f"login node); or copy the file to {path}"
        ) from None
    return path, True


def _hash_prefix(filename: str) -> str | None:
    """torch.hub's convention: ``name-<first digits of the sha256>.pth``."""
    import re

    m = re.search(r"-([a-f0-9]{8,})\.", filename)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- one entry


def model_code(model_cfg) -> ModelCode | None:
    """The code a custom model section points at, read (None for the other sources)."""
    if getattr(model_cfg, "source", "builtin") != "custom":
        return None
    return usercode.read_code(model_cfg.file)


def build_model(
    model_cfg: ModelSection | dict[str, Any],
    shape: DataShape = MNIST_SHAPE,
    *,
    code: ModelCode | None = None,
    factory: Callable[..., Any] | None = None,
    load_weights: bool = True,
) -> nn.Module:
    """The torch module for ``cfg.model`` (or a plain ``{"name": ..., **params}`` dict) and data of
    ``shape``. A custom model runs ``factory`` (a class or function given from Python) or the
    section's factory from ``code`` (default: the section's file, read now)."""
    if isinstance(model_cfg, dict):
        from mnist_hpc.config.validate import build_tagged

        built: ModelSection = build_tagged(ModelSection, model_cfg, "model")
        model_cfg = built
    source = model_cfg.source
    if source == "builtin":
        return BUILDERS[model_cfg.name](shape, **model_cfg.params())
    if source == "torchvision":
        return torchvision_model(model_cfg, shape, load_weights=load_weights)
    assert isinstance(model_cfg, CustomModel)  # the one section whose source is "custom"
    if factory is None:
        code = code or usercode.read_code(model_cfg.file)
        factory = usercode.find_factory(code, model_cfg.factory)
    label = f"{getattr(factory, '__name__', 'the factory')}({_kwargs_text(model_cfg.args)})"
    model = usercode.call_user(factory, label, code, **model_cfg.args)
    if not isinstance(model, nn.Module):
        raise UserCodeError(f"model.factory: {label} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _kwargs_text(args: dict) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= 80 else text[:77] + "..."


def _describe_output(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}"
    return f"a {type(out).__name__}"


def check_model(
    model_cfg,
    shape: DataShape,
    *,
    code: ModelCode | None = None,
    factory=None,
    model: nn.Module | None = None,
) -> int:
    """Build the model on the meta device and count its parameters (refused over MAX_PARAMS or
    with none to train), then run one forward of a batch of 2 on the CPU and check the output is
    (2, num_classes). Returns the parameter count. Each failure is one line in the user's terms;
    built-in models are checked by the config validator and skip the forward."""
    if model is None:
        meta = _build_on_meta(model_cfg, shape, code, factory)
    else:
        meta = model
    n = sum(p.numel() for p in meta.parameters())
    trainable = sum(p.numel() for p in meta.parameters() if p.requires_grad)
    what = f"model {model_cfg.name}" + (f" {model_cfg.factory}" if getattr(model_cfg, "factory", "") else "")
    if n > MAX_PARAMS:
        raise ConfigError(
            f"{what}: {n:,} parameters; the cap is {MAX_PARAMS:,} (MAX_PARAMS in mnist_hpc/config/models.py)"
        )
    if trainable == 0:
        raise ConfigError(
            f"{what}: has no trainable parameters (requires_grad is off for all of them, or "
            f"the network defines no layers); nothing would learn"
        )
    if model_cfg.source == "builtin" and model is None:
        return n
    real = (
        model
        if model is not None
        else build_model(model_cfg, shape, code=code, factory=factory, load_weights=False)
    )
    probe_forward(real, shape, code, what)
    return n


def _build_on_meta(model_cfg, shape: DataShape, code, factory) -> nn.Module:
    """The model built on the meta device (shapes only, no memory). Code that reads tensor values
    while building (RegNet's initialisation does, as may a user's) cannot run there: then it is
    built on the CPU, which allocates its weights."""
    try:
        with torch.device("meta"):
            return build_model(model_cfg, shape, code=code, factory=factory, load_weights=False)
    except UserCodeError as e:
        if "meta tensor" not in str(e) and "meta device" not in str(e):
            raise
    except NotImplementedError:
        pass
    return build_model(model_cfg, shape, code=code, factory=factory, load_weights=False)


def probe_forward(model: nn.Module, shape: DataShape, code: ModelCode | None, what: str) -> None:
    """One forward pass of a (2, C, H, W) batch: the output must be (2, num_classes). A layer that
    refuses its input is named with the data's image size."""
    entered: list = []
    hooks = []
    for name, mod in model.named_modules():
        if not list(mod.children()):
            hooks.append(
                mod.register_forward_pre_hook(
                    lambda m, inp, name=name: entered.append(
                        (name, m, tuple(inp[0].shape) if inp and isinstance(inp[0], torch.Tensor) else None)
                    )
                )
            )
    was_training = model.training
    model.eval()
    x = torch.zeros(2, *shape.input_shape)
    try:
        with torch.no_grad():
            try:
                out = model(x)
            except UserCodeError:
                raise
            except Exception as e:
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                image = f"{shape.channels}x{shape.size}x{shape.size}"
                if entered:
                    name, mod, in_shape = entered[-1]
                    layer = f"layer {name or '(top)'} ({_layer_text(mod)})"
                    raise UserCodeError(
                        f"{what}: forward failed in {layer} on input {in_shape}: {first}; the "
                        f"data's images are {image} (batch, channels, height, width = "
                        f"{(2, *shape.input_shape)})",
                        usercode._frames(e, code) if code else "",
                    ) from None
                raise UserCodeError(
                    f"{what}: forward of a batch {(2, *shape.input_shape)} ({image} images) raised "
                    f"{type(e).__name__}: {first}",
                    usercode._frames(e, code) if code else "",
                ) from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if not (isinstance(out, torch.Tensor) and tuple(out.shape) == (2, shape.num_classes)):
        raise UserCodeError(
            f"{what}: forward must return logits of shape (N, {shape.num_classes}) (N images, "
            f"{shape.num_classes} classes); for a batch of 2 it returned {_describe_output(out)}"
        )


def _layer_text(mod: nn.Module) -> str:
    if isinstance(mod, nn.Linear):
        return f"Linear expecting {mod.in_features} input features"
    if isinstance(mod, nn.Conv2d):
        return f"Conv2d expecting {mod.in_channels} input channels"
    return type(mod).__name__


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


def summary_text(model: nn.Module, title: str, input_shape=(1, 1, 28, 28)) -> str:
    """A Keras ``model.summary()``-like table."""
    rows = summary_rows(model, input_shape)
    w1 = max([len("Layer (type)")] + [len(f"{n} ({t})") for n, t, _, _ in rows])

    def fmt(shape):
        return "(None, " + ", ".join(str(d) for d in shape[1:]) + ")" if isinstance(shape, tuple) else shape

    w2 = max([len("Output Shape")] + [len(fmt(s)) for _, _, s, _ in rows])
    line = "-" * (w1 + w2 + 16)
    out = [
        f"Model: {title}",
        line,
        f"{'Layer (type)':<{w1}}  {'Output Shape':<{w2}}  {'Param #':>10}",
        "=" * len(line),
    ]
    for n, t, s, p in rows:
        out.append(f"{n + ' (' + t + ')':<{w1}}  {fmt(s):<{w2}}  {p:>10,}")
    total = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out += [
        "=" * len(line),
        f"Total params: {total:,} ({size_mb(model):.2f} MB)",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        line,
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- a run's model


class PreparedModel:
    """The model a run trains, checked before the run folder is touched: its config section, the
    data shape, the user's code (custom) or Python object (``train(cfg, model=...)``), and the
    parameter count. ``build()`` makes the module; ``record()`` is what run.json keeps."""

    def __init__(
        self,
        model_cfg,
        shape: DataShape,
        *,
        code: ModelCode | None = None,
        factory=None,
        instance: nn.Module | None = None,
    ):
        self.cfg, self.shape, self.code, self.factory, self.instance = (
            model_cfg,
            shape,
            code,
            factory,
            instance,
        )
        self.params = check_model(model_cfg, shape, code=code, factory=factory, model=instance)

    def build(self) -> nn.Module:
        if self.instance is not None:
            return self.instance
        return build_model(self.cfg, self.shape, code=self.code, factory=self.factory)

    @property
    def in_session_only(self) -> bool:
        """Defined in Python without a file (a notebook cell): later processes cannot rebuild it."""
        return self.cfg.source == "custom" and self.code is None

    def record(self) -> dict | None:
        if self.code is not None:
            return self.code.record(self.cfg.factory)
        if self.in_session_only:
            return {"file": None, "factory": self.cfg.factory, "sha256": None, "origin": "python"}
        return None


IN_PYTHON = "<python>"  # model.file of a network given as a Python object without a source file


def _python_source(obj) -> tuple[str | None, str]:
    """(the file defining ``obj``'s class or function, or None for __main__/a notebook; its name)."""
    import inspect

    target = obj if (inspect.isclass(obj) or inspect.isfunction(obj)) else type(obj)
    name = getattr(target, "__qualname__", getattr(target, "__name__", "model"))
    if getattr(target, "__module__", "__main__") == "__main__" or "." in name:
        return None, name.split(".")[-1]
    try:
        path = inspect.getsourcefile(target)
    except TypeError:
        path = None
    return (path if path and Path(path).is_file() else None), name


def prepare_model(cfg, shape: DataShape, model=None) -> PreparedModel:
    """Check the run's model before anything is written. ``model`` (Python API): an ``nn.Module``
    instance, a class or a factory; it replaces ``cfg.model`` with a custom section (its file when
    it comes from one, so that later processes can rebuild it)."""
    import dataclasses

    from mnist_hpc.config.models import CustomModel

    if model is not None:
        path, name = _python_source(model)
        args = dict(cfg.model.args) if cfg.model.source == "custom" else {}
        instance = model if isinstance(model, nn.Module) else None
        if instance is None and not callable(model):
            raise UserError(
                f"model=: expected an nn.Module, a class or a function returning one; got "
                f"{type(model).__name__}"
            )
        cfg.model = CustomModel(file=path or IN_PYTHON, factory=name, args=args)
        if path and instance is None:
            code = usercode.read_code(path)
            usercode.trust(code)
            return PreparedModel(cfg.model, shape, code=code, factory=model)
        return PreparedModel(
            cfg.model, shape, factory=None if instance is not None else model, instance=instance
        )
    if cfg.model.source == "custom":
        if cfg.model.file == IN_PYTHON:
            raise UserError(
                f"model: {cfg.model.factory} was defined in Python (a notebook cell) and has no "
                f"file; pass it again (mnist_hpc.train(cfg, model={cfg.model.factory})), or move "
                f"the class into a file (e.g. nets/mynet.py) and set model.file and model.factory"
            )
        code = usercode.read_code(cfg.model.file)
        usercode.trust(code)
        return PreparedModel(cfg.model, shape, code=code)
    del dataclasses
    return PreparedModel(cfg.model, shape)
