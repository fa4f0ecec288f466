"""The model registry's torch-free half: names, descriptions and one typed section per model.

``cfg.model`` is one of the sections below, picked by ``model.name``: ``cfg.model.name`` and
``cfg.model.params()`` (that model's parameters as a dict). Validation needs every model's
parameters without importing torch (so that `mnist-hpc config show` stays fast);
``mnist_hpc.training.models`` builds the torch modules from these sections.

Each section also counts its model's parameters (``param_count()``, from the shapes alone), and
validation refuses a model over ``MAX_PARAMS``: a config, a ``--set`` or the config stored in a
checkpoint asking for ``hidden: [1000000000]`` is one line, not a 3 TB allocation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from mnist_hpc.config.validate import Tagged

Activation = Literal["relu", "tanh", "sigmoid", "gelu", "silu"]

NUM_CLASSES = 10  # every dataset in config/datasets.py has ten classes of 1x28x28 images
IMAGE_SIZE = 28

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


def _positive_ints(values) -> bool:
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
    size_keys: ClassVar[tuple] = ()  # the parameters that set the model's size (blamed when it is too big)

    @classmethod
    def variants(cls) -> dict[str, type]:
        return {name: spec.section for name, spec in MODEL_SPECS.items()}

    def params(self) -> dict:
        """This model's parameters (everything but ``name``), as plain values."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}

    def to_dict(self) -> dict:
        return {"name": self.name, **self.params()}

    def param_count(self) -> int:
        """The model's trainable parameters, counted from the section without building it:
        equal to ``count_params(build_model(self))`` in ``mnist_hpc.training.models``."""
        raise NotImplementedError

    def check(self, err):
        self.check_values(err)
        self.check_size(err)

    def check_values(self, err):
        """Range checks of this model's parameters (types are checked by the validator)."""

    def check_size(self, err):
        """Refuse a model over ``MAX_PARAMS`` (run after ``check_values``: the values are sane)."""
        for key in self.size_keys:
            value = getattr(self, key)
            for v in value if isinstance(value, list) else [value]:
                if v > _MAX_WIDTH:
                    digits = int(v.bit_length() * math.log10(2)) + 1
                    err(key, problem=f"a width of about {digits:,} digits cannot be built; the cap is "
                                     f"{MAX_PARAMS:,} parameters ({_WHERE})")
        n = self.param_count()
        if n > MAX_PARAMS:
            err(self._blame(), problem=f"the model would have {n:,} parameters; the cap is "
                                        f"{MAX_PARAMS:,} ({_WHERE})")

    def _blame(self) -> str:
        """The size key whose default value would shrink the model most."""
        defaults = type(self)()
        return min(self.size_keys, default="name",
                   key=lambda k: dataclasses.replace(self, **{k: getattr(defaults, k)}).param_count())


@dataclass
class MLPModel(ModelSection):
    name: str = "mlp"
    hidden: list = field(default_factory=lambda: [128])  # hidden layer widths; [] = logistic regression
    activation: Activation = "relu"  # after each hidden layer
    dropout: float = 0.0  # dropout after each hidden layer

    size_keys = ("hidden",)

    def check_values(self, err):
        if not _positive_ints(self.hidden):
            err("hidden", "a list of positive integers, e.g. [256, 64]", self.hidden)
        if not 0 <= self.dropout < 1:
            err("dropout", "a number in [0, 1)", self.dropout)

    def param_count(self) -> int:
        widths = [IMAGE_SIZE * IMAGE_SIZE, *self.hidden, NUM_CLASSES]
        return sum(_linear(a, b) for a, b in zip(widths, widths[1:]))


@dataclass
class CNNModel(ModelSection):
    name: str = "cnn"
    channels: list = field(default_factory=lambda: [32, 64])  # the two 3x3 conv widths
    hidden: int = 128  # fully connected width
    dropout1: float = 0.25  # after the max-pool
    dropout2: float = 0.5  # after the hidden layer

    size_keys = ("channels", "hidden")

    def check_values(self, err):
        if len(self.channels) != 2 or not _positive_ints(self.channels):
            err("channels", "two positive integers, e.g. [32, 64]", self.channels)
        if self.hidden <= 0:
            err("hidden", "a positive integer", self.hidden)
        for k in ("dropout1", "dropout2"):
            if not 0 <= getattr(self, k) < 1:
                err(k, "a number in [0, 1)", getattr(self, k))

    def param_count(self) -> int:
        c1, c2 = self.channels
        side = (IMAGE_SIZE - 4) // 2  # two unpadded 3x3 convs, then a 2x2 max-pool: 12
        return (_conv(1, c1, 3) + _conv(c1, c2, 3) + _linear(c2 * side * side, self.hidden)
                + _linear(self.hidden, NUM_CLASSES))


@dataclass
class LeNet5Model(ModelSection):
    name: str = "lenet5"
    activation: Activation = "relu"  # LeCun used tanh

    def param_count(self) -> int:
        return (_conv(1, 6, 5) + _conv(6, 16, 5) + _linear(16 * 5 * 5, 120) + _linear(120, 84)
                + _linear(84, NUM_CLASSES))


@dataclass
class ResNet18Model(ModelSection):
    """torchvision's ResNet-18 as it is (no parameters): only the stem is adapted."""

    name: str = "resnet18"

    def param_count(self) -> int:
        total = _conv(1, 64, 3, bias=False) + _batchnorm(64)  # the 3x3 stem (its max-pool has none)
        c_in = 64
        for c_out in (64, 128, 256, 512):  # four stages of two basic blocks
            for _ in range(2):
                total += 2 * _batchnorm(c_out) + _conv(c_in, c_out, 3, False) + _conv(c_out, c_out, 3, False)
                if c_in != c_out:  # a stage's first block widens: 1x1 projection shortcut + BN
                    total += _conv(c_in, c_out, 1, False) + _batchnorm(c_out)
                c_in = c_out
        return total + _linear(512, NUM_CLASSES)


@dataclass
class FastModel(ModelSection):
    name: str = "fast"
    width: int = 32  # channels of the first block; blocks double it
    depth: int = 3  # conv blocks (each: conv 3x3, 2x2 downsampling, batch norm, ReLU)
    channels: list = field(default_factory=list)  # explicit block widths, e.g. [12, 24, 32] (overrides width/depth)
    head: Literal["max", "flatten"] = "max"  # global max-pool, or flatten the last feature map, before the linear layer
    downsample: Literal["maxpool", "stride"] = "maxpool"  # 2x2 max-pool after each conv, or stride-2 convs (cheaper)
    convs: int = 1  # conv layers per block: 2 or 3 add full-resolution conv -> BN -> ReLU before the downsampling one

    size_keys = ("width", "channels")

    def check_values(self, err):
        if self.width <= 0:
            err("width", "a positive integer", self.width)
        if not 1 <= self.depth <= 4:
            err("depth", "an integer in [1, 4] (28 px halves 4 times at most)", self.depth)
        if not 1 <= self.convs <= 3:
            err("convs", "an integer in [1, 3]", self.convs)
        if self.channels and (len(self.channels) > 4 or not _positive_ints(self.channels)):
            err("channels", "1 to 4 positive integers, e.g. [12, 24, 32] (or [] to use width/depth)",
                self.channels)

    def widths(self) -> list[int]:
        """The blocks' widths: ``channels`` when given, else ``depth`` doublings of ``width``."""
        return list(self.channels) or [self.width * 2**i for i in range(self.depth)]

    def param_count(self) -> int:
        total, c_in, side = 0, 1, IMAGE_SIZE
        for c_out in self.widths():  # bias-free convs: the batch norm after each has the shift
            for _ in range(self.convs):
                total += _conv(c_in, c_out, 3, bias=False) + _batchnorm(c_out)
                c_in = c_out
            side = (side + 1) // 2 if self.downsample == "stride" else side // 2
        features = c_in if self.head == "max" else c_in * side * side
        return total + _linear(features, NUM_CLASSES)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    section: type  # the ModelSection subclass holding its parameters
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
    ]
}
