"""The model registry's torch-free half: names, descriptions and one typed section per model.

``cfg.model`` is one of the sections below, picked by ``model.name``: ``cfg.model.name`` and
``cfg.model.params()`` (that model's parameters as a dict). Validation needs every model's
parameters without importing torch (so that `mnist-hpc config show` stays fast);
``mnist_hpc.training.models`` builds the torch modules from these sections.

Three sources of models share one section base: the built-in nets (``mlp``, ``cnn``, ``lenet5``,
``resnet18``, ``fast``), the user's own ``nn.Module`` in a file (``custom``: file, factory, args)
and any classification architecture of ``torchvision.models`` (``torchvision``: arch, weights,
resize). Each built-in section counts its model's parameters from the shapes alone
(``param_count(shape)``: the dataset decides the classes, channels and image size), and
validation refuses a model over ``MAX_PARAMS``: a config, a ``--set`` or the config stored in a
checkpoint asking for ``hidden: [1000000000]`` is one line, not a 3 TB allocation. A custom or
torchvision model can only be counted by building it, on torch's meta device (no memory):
``mnist_hpc.training.models.check_model`` does that for ``config validate``, ``submit`` and
``train``, before anything is written.

Adding a built-in model: a section class here (its parameters with defaults and comments, its
``param_count``) and a builder in ``training/models.py``, registered together with ``@builtin``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from mnist_hpc.config.datasets import MNIST_SHAPE, DataShape
from mnist_hpc.config.validate import Err, Tagged

Activation = Literal["relu", "tanh", "sigmoid", "gelu", "silu"]

# The largest model a config may ask for. The biggest shipped net (resnet18) has 11.2 M
# parameters and a sensible MNIST net well under 1 M, so no real experiment comes near; 100 M
# float32 parameters are 400 MB, about 1.6 GB while training with Adam (weights, gradients, two
# moments), which a laptop still holds, while a typo or a crafted file (hidden: [1000000000] is
# 795 G parameters, 3 TB) is refused before anything is allocated.
MAX_PARAMS = 100_000_000
# A single width this large cannot be built at all (torch sizes are int64); it is refused
# without counting, so that a crafted integer of a million digits costs nothing.
_MAX_WIDTH = 2**63 - 1
_WHERE = "MAX_PARAMS in mnist_hpc/config/models.py"  # where a refusal points the user


def _positive_ints(values: Iterable[object]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


def _conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _batchnorm(c: int) -> int:
    return 2 * c  # weight and bias; the running statistics are buffers, not parameters


@dataclass
class ModelSection(Tagged):
    """``name`` plus the named model's parameters; the subclasses are the models."""

    name: str = ""  # which model: mlp | cnn | lenet5 | resnet18 | fast (see `mnist-hpc models`)

    tag = "name"
    default = "cnn"
    # the parameters that set the model's size (blamed when it is too big)
    size_keys: ClassVar[tuple[str, ...]] = ()
    source: ClassVar[str] = "builtin"  # builtin | custom | torchvision

    @classmethod
    def variants(cls) -> dict[str, type[ModelSection]]:
        return {name: spec.section for name, spec in MODEL_SPECS.items()}

    def params(self) -> dict[str, Any]:
        """This model's parameters (everything but ``name``), as plain values."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params()}

    def param_count(self, shape: DataShape = MNIST_SHAPE) -> int | None:
        """The model's trainable parameters for data of ``shape``, counted from the section without
        building it (equal to ``count_params(build_model(self, shape))`` in training/models.py);
        None where only building the model can tell (custom, torchvision)."""
        return None

    def check(self, err: Err) -> None:
        self.check_values(err)
        self.check_widths(err)

    def check_values(self, err: Err) -> None:
        """Range checks of this model's parameters (types are checked by the validator)."""

    def check_widths(self, err: Err) -> None:
        """Widths too large to count at all (run after ``check_values``: the values are sane)."""
        for key in self.size_keys:
            value = getattr(self, key)
            for v in value if isinstance(value, list) else [value]:
                if v > _MAX_WIDTH:
                    digits = int(v.bit_length() * math.log10(2)) + 1
                    err(
                        key,
                        problem=f"a width of about {digits:,} digits cannot be built; the cap is "
                        f"{MAX_PARAMS:,} parameters ({_WHERE})",
                    )

    def check_size(self, err: Err, shape: DataShape = MNIST_SHAPE) -> None:
        """Refuse a model over ``MAX_PARAMS`` for data of ``shape`` (the config-level check: the
        dataset is another section)."""
        n = self.param_count(shape)
        if n is not None and n > MAX_PARAMS:
            err(
                self._blame(shape),
                problem=f"the model would have {n:,} parameters; the cap is {MAX_PARAMS:,} ({_WHERE})",
            )

    def _blame(self, shape: DataShape) -> str:
        """The size key whose default value would shrink the model most."""
        defaults = type(self)()

        def count_with_default(key: str) -> int:
            n = dataclasses.replace(self, **{key: getattr(defaults, key)}).param_count(shape)
            assert n is not None  # check_size counted this model, so the same model with a default counts
            return n

        return min(self.size_keys, default="name", key=count_with_default)


@dataclass
class MLPModel(ModelSection):
    name: str = "mlp"
    hidden: list[Any] = field(default_factory=lambda: [128])  # hidden layer widths; [] = logistic regression
    activation: Activation = "relu"  # after each hidden layer
    dropout: float = 0.0  # dropout after each hidden layer

    size_keys = ("hidden",)

    def check_values(self, err: Err) -> None:
        if not _positive_ints(self.hidden):
            err("hidden", "a list of positive integers, e.g. [256, 64]", self.hidden)
        if not 0 <= self.dropout < 1:
            err("dropout", "a number in [0, 1)", self.dropout)

    def param_count(self, shape: DataShape = MNIST_SHAPE) -> int:
        widths = [shape.channels * shape.size * shape.size, *self.hidden, shape.num_classes]
        return sum(_linear(a, b) for a, b in itertools.pairwise(widths))


@dataclass
class CNNModel(ModelSection):
    name: str = "cnn"
    channels: list[Any] = field(default_factory=lambda: [32, 64])  # the two 3x3 conv widths
    hidden: int = 128  # fully connected width
    dropout1: float = 0.25  # after the max-pool
    dropout2: float = 0.5  # after the hidden layer

    size_keys = ("channels", "hidden")

    def check_values(self, err: Err) -> None:
        if len(self.channels) != 2 or not _positive_ints(self.channels):
            err("channels", "two positive integers, e.g. [32, 64]", self.channels)
        if self.hidden <= 0:
            err("hidden", "a positive integer", self.hidden)
        for k in ("dropout1", "dropout2"):
            if not 0 <= getattr(self, k) < 1:
                err(k, "a number in [0, 1)", getattr(self, k))

    def param_count(self, shape: DataShape = MNIST_SHAPE) -> int:
        c1, c2 = self.channels
        side = (shape.size - 4) // 2  # two unpadded 3x3 convs, then a 2x2 max-pool: 12 for 28 px
        return (
            _conv(shape.channels, c1, 3)
            + _conv(c1, c2, 3)
            + _linear(c2 * side * side, self.hidden)
            + _linear(self.hidden, shape.num_classes)
        )


@dataclass
class LeNet5Model(ModelSection):
    name: str = "lenet5"
    activation: Activation = "relu"  # LeCun used tanh

    def param_count(self, shape: DataShape = MNIST_SHAPE) -> int:
        side = (shape.size // 2 - 4) // 2  # padded 5x5 conv, pool, 5x5 conv, pool: 5 for 28 px
        return (
            _conv(shape.channels, 6, 5)
            + _conv(6, 16, 5)
            + _linear(16 * side * side, 120)
            + _linear(120, 84)
            + _linear(84, shape.num_classes)
        )


@dataclass
class ResNet18Model(ModelSection):
    """torchvision's ResNet-18 as it is (no parameters): only the stem is adapted."""

    name: str = "resnet18"

    def param_count(self, shape: DataShape = MNIST_SHAPE) -> int:
        total = _conv(shape.channels, 64, 3, bias=False) + _batchnorm(
            64
        )  # the 3x3 stem (its max-pool has none)
        c_in = 64
        for c_out in (64, 128, 256, 512):  # four stages of two basic blocks
            for _ in range(2):
                total += 2 * _batchnorm(c_out) + _conv(c_in, c_out, 3, False) + _conv(c_out, c_out, 3, False)
                if c_in != c_out:  # a stage's first block widens: 1x1 projection shortcut + BN
                    total += _conv(c_in, c_out, 1, False) + _batchnorm(c_out)
                c_in = c_out
        return total + _linear(512, shape.num_classes)


@dataclass
class FastModel(ModelSection):
    name: str = "fast"
    width: int = 32  # channels of the first block; blocks double it
    depth: int = 3  # conv blocks (each: conv 3x3, 2x2 downsampling, batch norm, ReLU)
    channels: list[Any] = field(
        default_factory=list
    )  # explicit block widths, e.g. [12, 24, 32] (overrides width/depth)
    head: Literal["max", "flatten"] = (
        "max"  # global max-pool, or flatten the last feature map, before the linear layer
    )
    downsample: Literal["maxpool", "stride"] = (
        "maxpool"  # 2x2 max-pool after each conv, or stride-2 convs (cheaper)
    )
    convs: int = (
        1  # conv layers per block: 2 or 3 add full-resolution conv -> BN -> ReLU before the downsampling one
    )

    size_keys = ("width", "channels")

    def check_values(self, err: Err) -> None:
        if self.width <= 0:
            err("width", "a positive integer", self.width)
        if not 1 <= self.depth <= 4:
            err("depth", "an integer in [1, 4] (28 px halves 4 times at most)", self.depth)
        if not 1 <= self.convs <= 3:
            err("convs", "an integer in [1, 3]", self.convs)
        if self.channels and (len(self.channels) > 4 or not _positive_ints(self.channels)):
            err(
                "channels",
                "1 to 4 positive integers, e.g. [12, 24, 32] (or [] to use width/depth)",
                self.channels,
            )

    def widths(self) -> list[int]:
        """The blocks' widths: ``channels`` when given, else ``depth`` doublings of ``width``."""
        return list(self.channels) or [self.width * 2**i for i in range(self.depth)]

    def param_count(self, shape: DataShape = MNIST_SHAPE) -> int:
        total, c_in, side = 0, shape.channels, shape.size
        for c_out in self.widths():  # bias-free convs: the batch norm after each has the shift
            for _ in range(self.convs):
                total += _conv(c_in, c_out, 3, bias=False) + _batchnorm(c_out)
                c_in = c_out
            side = (side + 1) // 2 if self.downsample == "stride" else side // 2
        features = c_in if self.head == "max" else c_in * side * side
        return total + _linear(features, shape.num_classes)


@dataclass
class CustomModel(ModelSection):
    """The user's own network: a class or function in a Python file, called with ``args``."""

    name: str = "custom"
    file: str = ""  # the Python file (relative to the config file's folder; absolute paths too)
    factory: str = ""  # the class or function in that file that returns an nn.Module
    args: dict[str, Any] = field(
        default_factory=dict
    )  # keyword arguments for the factory (sweepable: model.args.width)

    source = "custom"

    def check_values(self, err: Err) -> None:
        if not self.file:
            err("file", problem="the Python file that defines your network, e.g. file: nets/tiny.py")
        elif self.file != "<python>" and not self.file.endswith(".py"):
            err("file", "a Python file ending in .py", self.file)
        if not self.factory.isidentifier():
            err(
                "factory", "the name of a class or function in that file, e.g. factory: TinyNet", self.factory
            )
        for k in self.args:
            if not (isinstance(k, str) and k.isidentifier()):
                err("args", problem=f"keys are keyword argument names; {k!r} is not one")


@dataclass
class TorchvisionModel(ModelSection):
    """A classification architecture of ``torchvision.models``, adapted to the data: one input
    channel (the first conv's RGB weights summed: the same as feeding the grey image three
    times, at a third of that layer's work), a new ``num_classes`` head, the batch resized on
    the device when ``resize`` is set."""

    name: str = "torchvision"
    arch: str = "resnet18"  # a classification model of torchvision.models (`mnist-hpc models --torchvision`)
    weights: str | None = (
        None  # null (random init) | DEFAULT | a weights name (IMAGENET1K_V1) | a .pth file (relative to the config)
    )
    resize: int | None = (
        None  # resize each batch to this side on the device (pretrained ImageNet nets like 64-224); null = as stored
    )

    source = "torchvision"

    def check_values(self, err: Err) -> None:
        if not self.arch.isidentifier():
            err("arch", "a torchvision.models architecture name, e.g. resnet18", self.arch)
        if self.resize is not None and not 8 <= self.resize <= 512:
            err("resize", "a side in pixels in [8, 512] (or null)", self.resize)

    def weights_file(self) -> str | None:
        """The weights as a file path, when ``weights`` names one (not DEFAULT or an enum name)."""
        w = self.weights
        return w if w and (w.endswith((".pth", ".pt")) or os.sep in w or "/" in w) else None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    section: type[ModelSection]  # the ModelSection subclass holding its parameters
    description: str

    def param_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.section) if f.name != "name"]


MODEL_SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("mlp", MLPModel, "multilayer perceptron (the workshop Keras nets: 784-128-10)"),
        ModelSpec("cnn", CNNModel, "the classic PyTorch MNIST net: 2 convs, max-pool, dropout, FC 128"),
        ModelSpec("lenet5", LeNet5Model, "LeNet-5 (LeCun 1998), padded 28x28 input"),
        ModelSpec("resnet18", ResNet18Model, "torchvision ResNet-18, 3x3 stem for 1x28x28 input"),
        ModelSpec("fast", FastModel, "small conv net with batch norm, tuned for time-to-accuracy"),
        ModelSpec(
            "custom", CustomModel, "your own nn.Module from a file: model.file, model.factory, model.args"
        ),
        ModelSpec(
            "torchvision",
            TorchvisionModel,
            "any torchvision.models classifier (model.arch), optional pretrained weights, model.resize",
        ),
    ]
}
BUILTIN_MODELS = tuple(n for n, s in MODEL_SPECS.items() if s.section.source == "builtin")
