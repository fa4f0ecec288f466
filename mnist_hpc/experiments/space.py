"""An adaptive search's part of a sweep file (``method: optuna``): the schema and its checks.

A sweep file that says ``method: optuna`` has no grid/zip/random/seeds axes; it names a search::

    base: ../quickstart.yaml
    set: {train.epochs: 2}
    method: optuna
    n_trials: 12            # trials in the whole study, over every worker (required)
    sampler: tpe            # tpe | random | cmaes | grid
    seed: 0                 # the sampler's seed (default: none, a fresh one per worker)
    metric: val_acc         # val_acc | test_acc | val_loss | time_to_target
    target: 0.98            # time_to_target only: the validation accuracy to reach
    direction: maximize     # default: what suits the metric
    pruner: median          # median | hyperband | none, fed by each epoch's validation metric
    params:                 # the search space: any dotted config key
      optim.lr: {float: [1.0e-4, 0.1], log: true}
      model.hidden: {int: [16, 64], step: 16}
      model.name: {categorical: [mlp, cnn]}

The keys are checked as any sweep axis is: each one, at its bounds and at every categorical
value, is applied to the base config and validated (``sweepfile``). This module imports neither
torch nor optuna; ``search`` is the Optuna backend that runs the study.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

METHODS = ("optuna",)
SAMPLERS = ("tpe", "random", "cmaes", "grid")
PRUNERS = ("median", "hyperband", "none")
# metric -> (the direction that suits it, what each epoch reports to the pruner, in that direction)
METRICS = {
    "val_acc": ("maximize", "val_acc"),  # the best epoch's validation accuracy
    "test_acc": ("maximize", "val_acc"),  # test accuracy at the end (epochs report val_acc)
    "val_loss": ("minimize", "val_loss"),  # the best epoch's validation loss
    "time_to_target": ("minimize", "val_error"),  # training seconds until val_acc >= target
}
DIRECTIONS = ("maximize", "minimize")
MAX_GRID = 10_000  # a grid sampler's grid larger than this is a typo more often than a plan


@dataclass
class SearchParam:
    """One key of ``params:``: give exactly one of float, int, categorical."""

    float: list[builtins.float] | None = None  # [low, high]
    int: list[builtins.int] | None = None  # [low, high], both included
    categorical: list | None = None  # one of these values
    log: bool = False  # float/int: draw evenly on a log scale (low > 0)
    step: builtins.float | None = None  # float/int: only low + k * step (the grid sampler needs it for float)

    @property
    def kind(self) -> str:
        return next(k for k in ("float", "int", "categorical") if getattr(self, k) is not None)

    def probes(self) -> list:
        """Values that stand for the whole range when checking the config: bounds and choices."""
        if self.kind == "categorical":
            assert self.categorical is not None  # what kind says
            return list(self.categorical)
        low, high = getattr(self, self.kind)
        return [low, high] if low != high else [low]

    def grid(self) -> list:
        """Every value, for the grid sampler."""
        if self.kind == "categorical":
            assert self.categorical is not None  # what kind says
            return list(self.categorical)
        low, high = getattr(self, self.kind)
        step = self.step if self.step is not None else 1
        n = math.floor((high - low) / step + 1e-9) + 1
        values = [low + i * step for i in range(n)]
        return [builtins.int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]


@dataclass
class StudySpec:
    """A checked search: what ``search`` needs to make and run the Optuna study."""

    n_trials: builtins.int
    sampler: str
    seed: builtins.int | None
    metric: str
    target: builtins.float | None
    direction: str
    pruner: str
    params: dict  # dotted key -> SearchParam

    @property
    def report_key(self) -> str:
        """What each epoch reports to the pruner: val_acc, val_loss or val_error."""
        return METRICS[self.metric][1]


def check_param(key: str, p: SearchParam, fail: Callable[[str, str], NoReturn]) -> None:
    where = f"params.{key}"
    given = [k for k in ("float", "int", "categorical") if getattr(p, k) is not None]
    if len(given) != 1:
        fail(
            where, f"expected one of float, int, categorical, got {' and '.join(given) if given else 'none'}"
        )
    kind = given[0]
    if kind == "categorical":
        if not p.categorical:
            fail(f"{where}.categorical", "empty list: give at least one value")
        if p.log or p.step is not None:
            fail(where, "log and step are for float and int ranges")
        return
    bounds = getattr(p, kind)
    if len(bounds) != 2 or bounds[0] > bounds[1]:
        fail(f"{where}.{kind}", f"expected [low, high] with low <= high, got {bounds!r}")
    if p.log and bounds[0] <= 0:
        fail(f"{where}.{kind}", f"log: true needs bounds > 0, got {bounds!r}")
    if p.step is not None:
        if p.step <= 0:
            fail(f"{where}.step", f"expected a positive number, got {p.step!r}")
        if p.log:
            fail(where, "give log or step, not both (Optuna draws a stepped range evenly)")
        if kind == "int" and p.step != builtins.int(p.step):
            fail(f"{where}.step", f"an int range needs a whole step, got {p.step!r}")


def study_spec(file, fail: Callable[[str, str], NoReturn]) -> StudySpec:
    """The checked search of a parsed ``SweepFile`` that says ``method: optuna``."""
    if file.method not in METHODS:
        fail(
            "method",
            f"expected {' or '.join(METHODS)} (leave it out for grid/zip/random/seeds), got {file.method!r}",
        )
    for section in ("grid", "zip", "random", "seeds"):
        if getattr(file, section):
            fail(section, "method: optuna draws its runs from params:; drop the axis sections")
    if file.n_trials is None or file.n_trials <= 0:
        fail("n_trials", f"expected a positive number of trials for the whole study, got {file.n_trials!r}")
    sampler = file.sampler or "tpe"
    if sampler not in SAMPLERS:
        fail("sampler", f"expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    metric = file.metric or "val_acc"
    if metric not in METRICS:
        fail("metric", f"expected one of {', '.join(METRICS)}, got {metric!r}")
    if metric == "time_to_target":
        if file.target is None or not 0 < file.target <= 1:
            fail(
                "target",
                "metric: time_to_target needs target: the validation accuracy to reach, "
                "a fraction such as 0.98",
            )
    elif file.target is not None:
        fail("target", "only metric: time_to_target has a target")
    direction = file.direction or METRICS[metric][0]
    if direction not in DIRECTIONS:
        fail("direction", f"expected maximize or minimize, got {direction!r}")
    pruner = file.pruner or "median"
    if pruner not in PRUNERS:
        fail("pruner", f"expected one of {', '.join(PRUNERS)}, got {pruner!r}")
    if not file.params:
        fail("params", "missing: the search space, e.g. optim.lr: {float: [1.0e-4, 0.1], log: true}")
    for key, p in file.params.items():
        check_param(key, p, fail)
    if sampler == "grid":
        size = 1
        for key, p in file.params.items():
            if p.kind == "float" and p.step is None:
                fail(f"params.{key}", "sampler: grid needs a step for a float range (or categorical values)")
            size *= len(p.grid())
        if size > MAX_GRID:
            fail("params", f"sampler: grid over {size:,} points, more than {MAX_GRID:,}: give fewer values")
        if file.n_trials > size:
            fail(
                "n_trials",
                f"{file.n_trials} trials, but the grid has {size} points: set n_trials: {size} "
                f"(each point once)",
            )
    return StudySpec(
        file.n_trials, sampler, file.seed, metric, file.target, direction, pruner, dict(file.params)
    )


STUDY_KEYS = ("method", "n_trials", "sampler", "seed", "metric", "target", "direction", "pruner", "params")
