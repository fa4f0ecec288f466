"""The model registry's torch-free half: names, descriptions and typed parameters.

Config validation needs to know every model's parameters without importing torch (so that
`mnist-hpc config show` stays fast); ``mnist_hpc.training.models`` builds the torch modules from these.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Literal

from mnist_hpc.errors import ConfigError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "silu")


@dataclass
class MLPParams:
    hidden: list = field(default_factory=lambda: [128])  # hidden layer widths; [] = logistic regression
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "silu"] = "relu"  # after each hidden layer
    dropout: float = 0.0  # dropout after each hidden layer

    def check(self):
        if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in self.hidden):
            return "hidden", "a list of positive integers, e.g. [256, 64]", self.hidden
        if not 0 <= self.dropout < 1:
            return "dropout", "a number in [0, 1)", self.dropout
        return None


@dataclass
class CNNParams:
    channels: list = field(default_factory=lambda: [32, 64])  # the two 3x3 conv widths
    hidden: int = 128  # fully connected width
    dropout1: float = 0.25  # after the max-pool
    dropout2: float = 0.5  # after the hidden layer

    def check(self):
        if (len(self.channels) != 2
                or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in self.channels)):
            return "channels", "two positive integers, e.g. [32, 64]", self.channels
        if self.hidden <= 0:
            return "hidden", "a positive integer", self.hidden
        for k in ("dropout1", "dropout2"):
            if not 0 <= getattr(self, k) < 1:
                return k, "a number in [0, 1)", getattr(self, k)
        return None


@dataclass
class LeNet5Params:
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "silu"] = "relu"  # LeCun used tanh

    def check(self):
        return None


@dataclass
class ResNet18Params:
    """torchvision's ResNet-18 as it is (no parameters): only the stem is adapted."""

    def check(self):
        return None


@dataclass
class FastParams:
    width: int = 32  # channels of the first block; blocks double it
    depth: int = 3  # conv blocks (each: conv 3x3, 2x2 downsampling, batch norm, ReLU)
    channels: list = field(default_factory=list)  # explicit block widths, e.g. [12, 24, 32] (overrides width/depth)
    head: Literal["max", "flatten"] = "max"  # global max-pool, or flatten the last feature map, before the linear layer
    downsample: Literal["maxpool", "stride"] = "maxpool"  # 2x2 max-pool after each conv, or stride-2 convs (cheaper)

    def check(self):
        if self.width <= 0:
            return "width", "a positive integer", self.width
        if not 1 <= self.depth <= 4:
            return "depth", "an integer in [1, 4] (28 px halves 4 times at most)", self.depth
        if self.channels and (len(self.channels) > 4 or not all(
                isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in self.channels)):
            return "channels", "1 to 4 positive integers, e.g. [12, 24, 32] (or [] to use width/depth)", self.channels
        return None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: type
    description: str

    def param_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.params)]


MODEL_SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("mlp", MLPParams, "multilayer perceptron (the workshop Keras nets: 784-128-10)"),
        ModelSpec("cnn", CNNParams, "the classic PyTorch MNIST net: 2 convs, max-pool, dropout, FC 128"),
        ModelSpec("lenet5", LeNet5Params, "LeNet-5 (LeCun 1998), padded 28x28 input"),
        ModelSpec("resnet18", ResNet18Params, "torchvision ResNet-18, 3x3 stem for 1x28x28 input"),
        ModelSpec("fast", FastParams, "small conv net with batch norm, tuned for time-to-accuracy"),
    ]
}


def validate_model_params(name: str, params: dict) -> dict:
    """Check ``params`` against the model's parameter dataclass; return them with defaults."""
    spec = MODEL_SPECS[name]
    cls = spec.params
    hints = typing.get_type_hints(cls)
    names = spec.param_names()
    for key, value in params.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            expected = ", ".join(["name", *names])
            raise ConfigError(f"model.{key}: unknown key for model '{name}'{hint}; expected one of {expected}")
        _check_type(f"model.{key}", value, hints[key])
    obj = cls(**params)
    problem = obj.check()
    if problem:
        key, expected, got = problem
        raise ConfigError(f"model.{key}: expected {expected}, got {got!r}")
    return dataclasses.asdict(obj)


def _check_type(path, value, tp):
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            opts = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{path}: expected one of {opts}, got {value!r}")
        return
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        list: isinstance(value, list),
        str: isinstance(value, str),
    }.get(tp, True)
    if not ok:
        names = {int: "an integer", float: "a number", bool: "true or false", list: "a list", str: "a string"}
        raise ConfigError(f"{path}: expected {names[tp]}, got {value!r}")
