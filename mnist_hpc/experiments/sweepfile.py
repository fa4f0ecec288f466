"""Sweep files: the schema, loading and validation, and the runs they describe.

A sweep file is YAML::

    base: ../quickstart.yaml        # the config every run starts from: a path relative to this
                                    # file, or the name of a shipped config (quickstart)
    name: learning_rate             # optional; default: the file name without .yaml
    set: {train.epochs: 3}          # optional: overrides shared by every run
    grid: {optim.lr: [0.1, 0.01]}   # cartesian product of the lists
    zip: {model.name: [...], optim.lr: [...]}   # lists of equal length, varied together
    random: {count: 8, seed: 0, params: {optim.lr: {loguniform: [1e-4, 1e-1]}}}
    seeds: [0, 1, 2]                # or {repeat: 3}: repeat every run with these experiment.seed
    method: optuna                  # instead of the axes: an adaptive search (``space``, ``search``)

Axes combine as a product (grid x zip x random x seeds, the seed varying fastest). Every run is
a list of ``--set`` overrides on the base config, validated with the config's own rules, and a
readable folder name made from its values (``lr=0.01_bs=64_seed=1``). Runs go to
``<experiment.output_dir>/sweeps/<sweep name>/<run name>/``. The file is read by the shared
bounded YAML loader and checked by the shared validator; runs are made one at a time (see
``axes``), and a sweep of more than ``MAX_RUNS`` runs is refused unless ``allow_large``
(``--allow-large``) says it is meant. This module never imports torch.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from mnist_hpc.config import (
    Config,
    ConfigError,
    apply_overrides,
    build_section,
    config_from_dict,
    cut,
    find_config,
    load_raw,
    read_yaml,
    show,
)
from mnist_hpc.config.extras import check_extras
from mnist_hpc.experiments import axes as ax
from mnist_hpc.experiments import space

# A sweep of more runs than this is refused unless asked for (``--allow-large``): it is more
# often a typo (a list pasted twice, a count with three zeros too many) than a plan, and
# checking every run's config costs about a millisecond each.
MAX_RUNS = 10_000
AXIS_SECTIONS = ("grid", "zip", "random", "seeds")


# --------------------------------------------------------------------------- the schema


@dataclass
class SeedsRepeat:
    repeat: int | None = None  # this many seeds, counting up from the base config's seed


@dataclass
class SweepFile:
    base: str | None = None  # the base config: a path relative to the sweep file, or a shipped name
    name: str | None = None  # the sweep's folder name (default: the file name without .yaml)
    set: dict[str, Any] = field(default_factory=dict)  # overrides shared by every run
    grid: dict[str, list] = field(default_factory=dict)  # every combination of these values
    zip: dict[str, list] = field(default_factory=dict)  # lists of equal length, varied together
    # runs drawn at random (no Optional[...]: a mistake inside gets its own message)
    random: ax.RandomSection = None  # type: ignore[assignment]
    seeds: list[int] | dict | None = None  # [0, 1, 2] or {repeat: 3}
    # method: optuna, an adaptive search instead of the axes (experiments/space.py says each key)
    method: str | None = None
    n_trials: int | None = None  # trials in the whole study
    sampler: str | None = None  # tpe (default) | random | cmaes | grid
    seed: int | None = None  # the sampler's seed
    metric: str | None = None  # val_acc (default) | test_acc | val_loss | time_to_target
    target: float | None = None  # time_to_target: the validation accuracy to reach
    direction: str | None = None  # maximize | minimize (default: what suits the metric)
    pruner: str | None = None  # median (default) | hyperband | none
    params: dict[str, space.SearchParam] = field(default_factory=dict)  # the search space


def looks_like_sweep(data) -> bool:
    """A parsed YAML document that is a sweep file rather than a config (configs have no such keys)."""
    return isinstance(data, dict) and any(k in data for k in ("base", "method", *AXIS_SECTIONS))


def is_sweep_file(path) -> bool:
    """Whether the YAML file at ``path`` is a sweep file (False when it cannot be read)."""
    try:
        return looks_like_sweep(read_yaml(Path(path)))
    except ConfigError:
        return False


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True, eq=False)
class SweepRun:
    index: int  # position in the sweep, 0-based (the Slurm array task id)
    name: str  # readable, filesystem-safe and unique within the sweep
    params: dict  # the axis values of this run, {dotted key: value}, in axis order
    overrides: list  # every --set KEY=VALUE for `train BASE`: the shared ones, then the params
    run_dir: Path  # <sweep output_dir>/<name>
    config: Config = field(repr=False)  # the resolved config of this run


class SweepRuns(Sequence):
    """The runs of a sweep, made (and validated) when asked for; kept once listed if few."""

    def __init__(self, sweep: Sweep):
        self._sweep = sweep
        self._kept: list | None = None

    def __len__(self) -> int:
        return self._sweep.count

    def __iter__(self):
        if self._kept is not None:
            yield from self._kept
            return
        keep: list[SweepRun] | None = [] if len(self) <= MAX_RUNS else None
        namer = ax.Namer(self._sweep.axes)
        for index, params in enumerate(ax.iter_params(self._sweep.dims)):
            run = self._sweep.make_run(index, namer.name(params), params)
            if keep is not None:
                keep.append(run)
            yield run
        if keep is not None:
            self._kept = keep

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"run {index} of a sweep of {len(self)}")
        if self._kept is not None:
            return self._kept[index]
        namer = ax.Namer(self._sweep.axes)  # a name depends on the names before it
        for i, params in enumerate(ax.iter_params(self._sweep.dims)):
            name = namer.name(params)
            if i == index:
                return self._sweep.make_run(index, name, params)


@dataclass(eq=False)
class Sweep:
    name: str
    path: Path  # the sweep file
    base: Path  # the base config file
    fixed: list  # overrides shared by every run: the file's `set:`, then the command line's --set
    axes: list  # the dotted keys that vary
    output_dir: Path  # <base experiment.output_dir>/sweeps/<name>
    dims: list = field(repr=False)  # [axes.Dimension]
    base_raw: dict = field(repr=False)  # the base config as read (extends: merged)
    origins: dict = field(repr=False)  # axis key -> where the sweep file gives it, for messages
    study: space.StudySpec | None = None  # method: optuna (then no dims: the runs are its trials)
    shared_config: Config | None = field(default=None, repr=False)  # the base with the shared overrides
    runs: Sequence[SweepRun] = field(init=False, repr=False)  # SweepRuns; a study: ()

    def __post_init__(self):
        self.runs = SweepRuns(self) if self.study is None else ()

    @property
    def count(self) -> int:
        return 0 if self.study is not None else ax.count(self.dims)

    def configs(self) -> Iterable[Config]:
        """The configs the sweep runs (a study: the shared one, then one at each probe of its space)."""
        if self.study is None:
            return (run.config for run in self.runs)
        assert self.shared_config is not None  # load_sweep gives every study its shared config
        return [self.shared_config, *self._probe_configs()]

    def _probe_configs(self) -> list:
        assert self.study is not None  # called for a study only
        out = []
        for key, p in self.study.params.items():
            for value in p.probes():
                text = f"{key}={dump_value(value)}"
                raw = _apply(self.path, self.base_raw, [*self.fixed, text], {text: f"params.{key}"})
                out.append(config_from_dict(raw, f"{self.path}: params.{key} = {show(value)}"))
        return out

    def trial_run(self, number: int, params: dict) -> SweepRun:
        """Trial ``number`` of a study with these ``params`` ({dotted key: value}): a run like any other,
        in ``trial-NNN_<params>`` (the same name whenever it is made again, so a trial resumes there)."""
        assert self.study is not None, "trial_run: not a study"
        width = max(3, len(str(self.study.n_trials - 1)))
        name = f"trial-{number:0{width}d}_" + ax.Namer(self.axes).name(params)
        return self.make_run(number, ax.safe_name(name)[: ax.MAX_NAME_LENGTH], params)

    def validate(self) -> int:
        """Make (and so check) every run; returns how many there are (a study: its n_trials, each key
        of its space checked at its bounds and choices)."""
        if self.study is not None:
            self._probe_configs()
            return self.study.n_trials
        return sum(1 for _ in self.runs)

    def make_run(self, index: int, name: str, params: dict) -> SweepRun:
        """Run ``index``: the overrides `train BASE` gets, and the config they give (validated)."""
        axis_overrides = [f"{k}={dump_value(v)}" for k, v in params.items()]
        where = dict(zip(axis_overrides, (self.origins[k] for k in params), strict=False))
        raw = _apply(self.path, self.base_raw, self.fixed + axis_overrides, where)
        cfg = config_from_dict(raw, f"{self.path}: run {index} ({name})")
        return SweepRun(index, name, params, self.fixed + axis_overrides, self.output_dir / name, cfg)


def dump_value(value) -> str:
    """A value as compact YAML for ``--set KEY=VALUE`` (it reads back as the same value)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        kind: type = type(value)  # 1, 1.0 and True hash alike: the type keeps them apart
        return _dump_scalar(value, kind)
    return _dump(value)


@functools.lru_cache(maxsize=4096)
def _dump_scalar(value, kind) -> str:
    return _dump(value)


def _dump(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False).strip()
    return text[: -len("...")].strip() if text.endswith("\n...") else text


def _apply(path: Path, data: dict, overrides: list, where: dict) -> dict:
    """``apply_overrides`` in one call, as `train` applies them; an error names where the key
    came from (``where``: override text -> place in the sweep file; absent: the command line)."""
    try:
        return apply_overrides(data, overrides)
    except ConfigError as e:
        message = str(e)
        for text in overrides:
            prefix = f"--set {cut(text)}: "
            if message.startswith(prefix) and text in where:
                raise ConfigError(f"{path}: {where[text]}: {message.removeprefix(prefix)}") from None
        raise ConfigError(f"{path}: {message}") from None


# --------------------------------------------------------------------------- loading


def load_sweep(path, overrides=(), *, allow_large: bool = False, validate: bool = True) -> Sweep:
    """Read a sweep file; with ``validate`` (the default) every run's config is checked.

    Raises ``ConfigError`` (one line naming the file and the place in it) for a mistake, and for
    a sweep of more than ``MAX_RUNS`` runs unless ``allow_large``. ``validate=False`` checks the
    file and the shared config only (a Slurm array task checks its own run when it makes it).
    """
    path = Path(path)
    spec = build_section(SweepFile, read_yaml(path), "", str(path))
    _anchor_file_values(spec, path.parent)
    base = _base_file(path, spec.base)
    name = spec.name if spec.name is not None else path.stem
    if ax.safe_name(name) != name:
        _fail(path, "name", f"expected a name of letters, digits, '.', '_', '-', got {show(name)}")

    # The shared overrides: the file's set:, then the command line's --set (which wins).
    shared = _flatten_set(path, spec.set)
    cli_keys = {text.partition("=")[0].strip() for text in overrides}
    from_file = [f"{k}={dump_value(v)}" for k, v in shared.items() if k not in cli_keys]
    where = {text: f"set.{text.partition('=')[0]}" for text in from_file}
    fixed = from_file + list(overrides)
    base_raw = load_raw(base)
    if looks_like_sweep(base_raw):
        _fail(path, "base", f"{base} is a sweep file; base: names the config every run starts from")
    shared_cfg = config_from_dict(
        _apply(path, base_raw, fixed, where), f"{path}: {base} with the shared overrides"
    )
    check_extras(shared_cfg, str(path))  # a logger's missing package: before any run or job starts

    study = None
    if spec.method is not None:
        study = space.study_spec(spec, functools.partial(_fail, path))
        for key in study.params:
            _dotted(path, "params", key)
        dims: list[ax.Dimension] = []
        origins = _check_keys(path, [_SpaceKeys(study.params)], shared, overrides)
        if shared_cfg.data.val_split is None and (study.pruner != "none" or study.metric != "test_acc"):
            _fail(
                path,
                "metric" if study.metric != "test_acc" else "pruner",
                "needs each epoch's validation metric, and the base config has no validation "
                "split: set data.val_split (e.g. set: {data.val_split: 0.1})",
            )
        output_dir = Path(shared_cfg.experiment.output_dir) / "sweeps" / name
        sweep = Sweep(
            name,
            path,
            base,
            fixed,
            list(origins),
            output_dir,
            dims,
            base_raw,
            origins,
            study=study,
            shared_config=shared_cfg,
        )
        if validate:
            sweep.validate()
        return sweep
    for key in space.STUDY_KEYS:
        if getattr(spec, key) not in (None, {}):
            _fail(path, key, "belongs to an adaptive search: add method: optuna (or drop it)")
    dims = _dimensions(path, spec, shared_cfg.experiment.seed)
    origins = _check_keys(path, dims, shared, overrides)
    total = ax.count(dims)
    if total > MAX_RUNS and (not allow_large or total > sys.maxsize):
        sizes = f" ({' x '.join(f'{d.size:,}' for d in dims)})" if len(dims) > 1 else ""
        advice = (
            "too many to list, even with --allow-large"
            if allow_large
            else "check the lists and counts, or pass --allow-large if you mean it"
        )
        raise ConfigError(f"{path}: {total:,} runs{sizes}, more than {MAX_RUNS:,}: {advice}")
    output_dir = Path(shared_cfg.experiment.output_dir) / "sweeps" / name
    sweep = Sweep(name, path, base, fixed, list(origins), output_dir, dims, base_raw, origins)
    if validate:
        sweep.validate()
    return sweep


_PATH_KEYS = ("model.file", "model.weights")  # values that name files: relative to the sweep file


def _anchor_file_values(spec, folder: Path) -> None:
    """Make the sweep file's relative model files (``set``, ``grid`` and ``zip`` values of
    ``model.file`` / a torchvision ``model.weights`` file) absolute, relative to the sweep file's
    folder, as a config's are: a sweep over several model files runs the same from any folder."""
    from mnist_hpc.config.loading import anchor_paths

    def anchored(key, value):
        if not isinstance(value, str):
            return value
        return anchor_paths({"model": {key.split(".", 1)[1]: value}}, folder)["model"][key.split(".", 1)[1]]

    for key in _PATH_KEYS:
        if key in spec.set:
            spec.set[key] = anchored(key, spec.set[key])
        for section in (spec.grid, spec.zip):
            if key in section and isinstance(section[key], list):
                section[key] = [anchored(key, v) for v in section[key]]


def validate_sweep_file(path, overrides=(), *, allow_large: bool = False) -> int:
    """Check a sweep file and the config of every run it makes; returns the number of runs."""
    return load_sweep(path, overrides, allow_large=allow_large, validate=False).validate()


def _fail(path: Path, where: str, msg: str) -> NoReturn:
    raise ConfigError(f"{path}: {where}: {msg}")


def _base_file(path: Path, base: str | None) -> Path:
    if base is None:
        _fail(
            path,
            "base",
            "missing: the config every run starts from (a path relative to this "
            "file, or the name of a shipped config such as quickstart)",
        )
    try:
        found = find_config(base, relative_to=path.parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: base: {e}") from None
    if not found.is_file():
        _fail(path, "base", f"{cut(base)}: not a file")
    return Path(os.path.normpath(found))


def _dotted(path: Path, where: str, key) -> str:
    if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
        _fail(path, where, f"{show(key)} is not a dotted config key such as optim.lr")
    return key


def _flatten_set(path: Path, value: dict, prefix: str = "") -> dict:
    """``set: {train: {epochs: 1}}`` and ``set: {train.epochs: 1}`` mean the same."""
    out = {}
    for key, v in value.items():
        dotted = prefix + _dotted(path, "set", key)
        if isinstance(v, dict) and dotted != "model":
            out.update(_flatten_set(path, v, dotted + "."))
        else:
            out[dotted] = v
    return out


def _values(path: Path, where: str, values: list) -> list:
    if not values:
        _fail(path, where, "empty list: give at least one value")
    return values


def _dimensions(path: Path, spec: SweepFile, base_seed: int) -> list:
    """The sweep's dimensions, checked, in product order (grid keys, zip, random, seeds)."""
    dims: list = [
        ax.Values(_dotted(path, "grid", k), _values(path, f"grid.{k}", v)) for k, v in spec.grid.items()
    ]
    if spec.zip:
        lists = {_dotted(path, "zip", k): _values(path, f"zip.{k}", v) for k, v in spec.zip.items()}
        lengths = {k: len(v) for k, v in lists.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{k} has {n}" for k, n in lengths.items())
            _fail(path, "zip", f"the lists must have the same length ({detail})")
        dims.append(ax.Rows(lists))
    if spec.random is not None:
        for key in spec.random.params:
            _dotted(path, "random.params", key)
        dims.append(ax.random_dimension(spec.random, functools.partial(_fail, path)))
    if spec.seeds is not None:
        dims.append(_seeds(path, spec.seeds, base_seed))
    if not dims:
        _fail(path, "axes", "nothing varies: add grid:, zip:, random: or seeds:")
    return dims


def _seeds(path: Path, value, base_seed: int) -> ax.Seeds:
    if isinstance(value, dict):
        repeat = build_section(SeedsRepeat, value, "seeds", str(path)).repeat
        if repeat is None or repeat <= 0:
            _fail(path, "seeds.repeat", f"expected a positive integer, got {show(repeat)}")
        return ax.Seeds(repeat=repeat, first=base_seed)
    _values(path, "seeds", value)
    if any(s < 0 for s in value):
        _fail(path, "seeds", f"expected integers >= 0, got {show(value)}")
    return ax.Seeds(seeds=value)


class _SpaceKeys(ax.Dimension):
    """A study's search space as far as ``_check_keys`` sees it: keys given in params:."""

    section = "params"

    def __init__(self, params: dict):
        self.keys = tuple(params)


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _check_keys(path: Path, dims: list, shared: dict, overrides) -> dict:
    """Each key given in one place only; returns ``{axis key: where the file gives it}``."""
    given = dict.fromkeys(shared, "set")  # key -> the part of the file that gives it
    origins = {}
    for dim in dims:
        for key in dim.keys:
            for other, where in given.items():
                if _overlap(key, other):
                    both = (
                        f"in {where}: and {dim.section}:"
                        if where != dim.section
                        else f"twice in {dim.section}: ({other} and {key})"
                    )
                    _fail(path, key, f"given {both}; give each key in one place")
            given[key] = dim.section
            origins[key] = (
                "seeds"
                if dim.section == "seeds"
                else (f"random.params.{key}" if dim.section == "random" else f"{dim.section}.{key}")
            )
    for text in overrides:
        key = text.partition("=")[0].strip()
        for axis in origins:
            if _overlap(key, axis):
                raise ConfigError(
                    f"--set {cut(text)}: {axis} is an axis of the sweep {path}; "
                    f"change its values in the sweep file"
                )
    return origins
