"""What a sweep varies: its dimensions, their product (never expanded up front) and run names.

A sweep's runs are the product of its dimensions, in file order: one dimension per ``grid:``
key, one for the ``zip:`` rows, one for the ``random:`` draws and one for the ``seeds:`` (the
last varies fastest, as in ``itertools.product``). The number of runs is a product of lengths
and run ``i`` is found from its mixed-radix digits, so a sweep of a billion runs costs nothing
until runs are asked for, and then only what is asked for.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn

from mnist_hpc.config import show

SEED_KEY = "experiment.seed"

# Short labels for run names; any other key is named by its last part (``model.hidden`` ->
# ``hidden``), or in full where two axes of a sweep would share that last part.
SHORT_NAMES = {
    "optim.lr": "lr",
    "data.batch_size": "bs",
    "optim.weight_decay": "wd",
    "experiment.seed": "seed",
    "data.dataset": "data",
    "optim.name": "optim",
    "model.name": "model",
}
MAX_NAME_LENGTH = 120  # run folder names stay far below the usual 255-byte limit


class Dimension:
    """One thing that varies: ``d.size`` points, ``d.point(i)`` -> ``{dotted key: value}``."""

    keys: tuple = ()
    section = ""  # the part of the sweep file it comes from: grid, zip, random, seeds

    @property
    def size(self) -> int:  # not __len__: a count written in a file may exceed what len() allows
        raise NotImplementedError

    def point(self, i: int) -> dict:
        raise NotImplementedError


class Values(Dimension):
    """One key of ``grid:``: its list of values."""

    section = "grid"

    def __init__(self, key: str, values: list):
        self.keys, self.values = (key,), values

    @property
    def size(self) -> int:
        return len(self.values)

    def point(self, i: int) -> dict:
        return {self.keys[0]: self.values[i]}


class Rows(Dimension):
    """``zip:``: lists of equal length, the i-th values taken together."""

    section = "zip"

    def __init__(self, lists: dict):
        self.keys, self.lists = tuple(lists), lists

    @property
    def size(self) -> int:
        return len(next(iter(self.lists.values())))

    def point(self, i: int) -> dict:
        return {k: v[i] for k, v in self.lists.items()}


class Draws(Dimension):
    """``random:``: ``count`` draws from one seeded generator, never stored.

    Draw ``i`` is the ``i``-th of the sequence (each draws every key once, in order), so it is
    the same whether the draws are listed or one is asked for alone. Going forward continues
    the generator; going back restarts it from the seed.
    """

    section = "random"

    def __init__(self, samplers: dict[str, Callable[[random.Random], Any]], count: int, seed: int):
        self.keys, self.samplers, self.count, self.seed = tuple(samplers), samplers, count, seed
        self._rng, self._next = random.Random(seed), 0
        self._last: dict[str, Any] = {}  # the draws of point self._next - 1

    @property
    def size(self) -> int:
        return self.count

    def point(self, i: int) -> dict:
        if not 0 <= i < self.count:
            raise IndexError(i)
        if i < self._next - 1:
            self._rng, self._next = random.Random(self.seed), 0
        while self._next <= i:
            self._last = {k: draw(self._rng) for k, draw in self.samplers.items()}
            self._next += 1
        return dict(self._last)


class Seeds(Dimension):
    """``seeds:``: a list of seeds, or ``repeat`` seeds counting up from ``first``."""

    section = "seeds"
    keys = (SEED_KEY,)

    def __init__(self, seeds: list | None = None, repeat: int = 0, first: int = 0):
        self.seeds, self.repeat, self.first = seeds, repeat, first

    @property
    def size(self) -> int:
        return len(self.seeds) if self.seeds is not None else self.repeat

    def point(self, i: int) -> dict:
        if not 0 <= i < self.size:
            raise IndexError(i)
        return {SEED_KEY: self.seeds[i] if self.seeds is not None else self.first + i}


# --------------------------------------------------------------------------- the product


def count(dims: Sequence[Dimension]) -> int:
    """The number of runs: the product of the dimensions' lengths (computed, not expanded)."""
    return math.prod(d.size for d in dims)


def params_at(dims: Sequence[Dimension], index: int) -> dict:
    """The axis values of run ``index``."""
    digits = []
    for d in reversed(dims):
        index, digit = divmod(index, d.size)
        digits.append(digit)
    out: dict = {}
    for d, digit in zip(dims, reversed(digits), strict=False):
        out.update(d.point(digit))
    return out


def iter_params(dims: Sequence[Dimension]) -> Iterator[dict]:
    """The axis values of every run, in order, one at a time (an odometer over the digits)."""
    if not dims or count(dims) == 0:
        return
    digits = [0] * len(dims)
    points = [d.point(0) for d in dims]
    while True:
        out: dict = {}
        for p in points:
            out.update(p)
        yield out
        k = len(dims) - 1
        while k >= 0:
            digits[k] += 1
            if digits[k] < dims[k].size:
                points[k] = dims[k].point(digits[k])
                break
            digits[k] = 0
            points[k] = dims[k].point(0)
            k -= 1
        if k < 0:
            return


# --------------------------------------------------------------------------- names


def name_value(value) -> str:
    """A value as it appears in a run name: 0.001 -> 0.001, [256, 64] -> 256-64, {name: mlp} -> mlp."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(name_value(v) for v in value) or "none"
    if isinstance(value, dict):
        return "-".join(name_value(v) for v in value.values()) or "none"
    if value is None:
        return "null"
    return str(value)


def safe_name(text: str) -> str:
    """``text`` with anything but letters, digits and ``._+=-`` replaced: a folder name."""
    return re.sub(r"[^A-Za-z0-9._+=-]+", "-", text).strip("-") or "run"


def short_names(keys: Sequence[str]) -> dict[str, str]:
    short = {k: SHORT_NAMES.get(k, k.rsplit(".", 1)[-1]) for k in keys}
    clashing = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {k: (k if s in clashing else s) for k, s in short.items()}


def _file_label(key: str, value):
    """A model file is named by its file name in run names (``file=tiny.py``), not its whole path."""
    if key in ("model.file", "model.weights") and isinstance(value, str) and ("/" in value or "\\" in value):
        return value.replace("\\", "/").rsplit("/", 1)[-1]
    return value


class Namer:
    """Readable, unique run names (``lr=0.01_bs=64_seed=1``), given in run order.

    A name seen before (a value repeated in a list, a random choice drawn twice) gets a suffix:
    ``_2``, ``_3``... so names depend on the runs before; ``name`` must be called in order.
    """

    def __init__(self, keys: Sequence[str]):
        self.short = short_names(keys)
        self.seen: dict[str, int] = {}

    def name(self, params: dict) -> str:
        name = safe_name(
            "_".join(f"{self.short[k]}={name_value(_file_label(k, v))}" for k, v in params.items())
        )
        name = name[:MAX_NAME_LENGTH]
        self.seen[name] = self.seen.get(name, 0) + 1
        return name if self.seen[name] == 1 else f"{name}_{self.seen[name]}"


# --------------------------------------------------------------------------- random draws


@dataclass
class Distribution:
    """Where one key of ``random: params:`` draws its values from: give exactly one."""

    loguniform: list[float] | None = None  # [low, high], both > 0: even on a log scale
    uniform: list[float] | None = None  # [low, high]
    int_uniform: list[int] | None = None  # [low, high], both included
    choice: list | None = None  # one of these values


@dataclass
class RandomSection:
    """The sweep file's ``random:`` section (checked by the shared validator)."""

    count: int | None = None  # how many runs to draw (required)
    seed: int = 0  # the draws' own seed: the same seed draws the same runs
    params: dict[str, Distribution] = field(default_factory=dict)  # dotted key -> distribution


DISTRIBUTIONS = tuple(f.name for f in fields(Distribution))


def random_dimension(section: RandomSection, fail: Callable[[str, str], NoReturn]) -> Draws:
    """The ``random:`` dimension of a checked section; ``fail(where, message)`` raises.
    Nothing is drawn here."""
    if section.count is None:
        fail("random.count", "missing: how many runs to draw, e.g. count: 8")
    if section.count <= 0:
        fail("random.count", f"expected a positive integer, got {section.count!r}")
    if not section.params:
        fail("random.params", "missing: the keys to draw, e.g. optim.lr: {loguniform: [1.0e-4, 0.1]}")
    samplers = {key: _sampler(f"random.params.{key}", dist, fail) for key, dist in section.params.items()}
    return Draws(samplers, section.count, section.seed)


def _sampler(where: str, dist: Distribution, fail) -> Callable[[random.Random], Any]:
    given = {kind: getattr(dist, kind) for kind in DISTRIBUTIONS if getattr(dist, kind) is not None}
    if len(given) != 1:
        fail(
            where,
            f"expected one of {', '.join(DISTRIBUTIONS)}, got {' and '.join(given) if given else 'none'}",
        )
    ((kind, arg),) = given.items()
    where = f"{where}.{kind}"
    if kind == "choice":
        if not arg:
            fail(where, "empty list: give at least one value")
        return lambda rng: rng.choice(arg)
    if len(arg) != 2 or arg[0] > arg[1]:
        fail(where, f"expected [low, high] with low <= high, got {show(arg)}")
    low, high = arg
    if kind == "int_uniform":
        return lambda rng: rng.randint(low, high)
    if kind == "uniform":
        return lambda rng: _round(rng.uniform(low, high))
    if low <= 0:
        fail(where, f"the bounds must be > 0, got {show(arg)}")
    return lambda rng: _round(math.exp(rng.uniform(math.log(low), math.log(high))))


def _round(x: float) -> float:
    """Three significant digits: readable names, and the name says exactly what was run."""
    return float(f"{x:.3g}")
