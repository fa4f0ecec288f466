"""Experiment configuration: typed schema, YAML loading with ``extends:``, ``--set`` overrides.

One dataclass per concern; every field has a default and a one-line comment. Loading is strict:
unknown keys, wrong types and out-of-range values raise ``ConfigError`` naming the file, the
key path and what was expected (with a did-you-mean for typos). Only ``yaml.safe_load`` is used,
so tags that would construct Python objects are refused. This module never imports torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from mnist_hpc.errors import ConfigError
from mnist_hpc.config.models import MODEL_SPECS, validate_model_params


@dataclass
class ExperimentConfig:
    name: str = "experiment"  # run folder prefix: <output_dir>/<name>-<timestamp>/
    seed: int = 0  # seeds python, numpy, torch, the data order and augmentation
    output_dir: str = "./runs"  # where run folders are created (relative to the working directory)
    tensorboard: bool = False  # also log per-epoch metrics to <run>/tensorboard (needs the extra)

    def check(self, err):
        if not self.name or any(c in self.name for c in "/\\\0"):
            err("name", "a non-empty name without '/'", self.name)
        if self.seed < 0:
            err("seed", "an integer >= 0", self.seed)


@dataclass
class AugmentConfig:
    shift: float = 0.0  # max random translation in pixels (0 = off)
    rotate: float = 0.0  # max random rotation in degrees (0 = off)
    scale: float = 0.0  # max random zoom as a fraction, e.g. 0.1 -> [0.9, 1.1] (0 = off)
    # never flips: a mirrored 2 or 7 is not a digit

    def check(self, err):
        if not 0 <= self.shift <= 14:
            err("shift", "a number of pixels in [0, 14]", self.shift)
        if not 0 <= self.rotate <= 180:
            err("rotate", "degrees in [0, 180]", self.rotate)
        if not 0 <= self.scale < 1:
            err("scale", "a fraction in [0, 1)", self.scale)

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.rotate or self.scale)


@dataclass
class DataConfig:
    dataset: str = "mnist"  # see `mnist-hpc data list`: mnist, fashion-mnist, kmnist, ...
    root: Optional[str] = None  # data folder; --data-dir and $MNIST_HPC_DATA_DIR take precedence
    val_split: Optional[float] = 0.1  # fraction of train held out for validation (null = none)
    batch_size: int = 128  # global training batch (split across ranks under DDP)
    eval_batch_size: int = 2000  # evaluation batch (no gradients: large is fast)
    subset: Optional[int] = None  # train on the first N shuffled training images (quick runs)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # batched, on the device

    def check(self, err):
        from mnist_hpc.config.datasets import DATASETS

        if self.dataset not in DATASETS:
            err("dataset", _choices(DATASETS), self.dataset, DATASETS)
        if self.val_split is not None and not 0 < self.val_split < 1:
            err("val_split", "a fraction strictly between 0 and 1 (or null for none)", self.val_split)
        if self.batch_size <= 0:
            err("batch_size", "a positive integer", self.batch_size)
        if self.eval_batch_size <= 0:
            err("eval_batch_size", "a positive integer", self.eval_batch_size)
        if self.subset is not None and self.subset <= 0:
            err("subset", "a positive number of images (or null for all)", self.subset)


@dataclass
class OptimConfig:
    name: str = "adamw"  # sgd | adam | adamw | adadelta
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0  # L2 (sgd, adam, adadelta) or decoupled (adamw)
    schedule: Literal["none", "step", "cosine", "onecycle"] = "none"  # learning-rate shape
    step_size: int = 1  # step: epochs between decays
    gamma: float = 0.7  # step: decay factor
    pct_start: float = 0.25  # onecycle: fraction of training spent rising to lr
    warmup_epochs: float = 0.0  # linear warmup (none/step/cosine), may be fractional

    def check(self, err):
        if self.name not in OPTIMIZERS:
            err("name", _choices(OPTIMIZERS), self.name, OPTIMIZERS)
        if self.lr <= 0:
            err("lr", "a learning rate > 0", self.lr)
        if not 0 <= self.momentum < 1:
            err("momentum", "a number in [0, 1)", self.momentum)
        if self.weight_decay < 0:
            err("weight_decay", "a number >= 0", self.weight_decay)
        if self.step_size <= 0:
            err("step_size", "a positive number of epochs", self.step_size)
        if not 0 < self.gamma <= 1:
            err("gamma", "a factor in (0, 1]", self.gamma)
        if not 0 < self.pct_start < 1:
            err("pct_start", "a fraction in (0, 1)", self.pct_start)
        if self.warmup_epochs < 0:
            err("warmup_epochs", "a number of epochs >= 0", self.warmup_epochs)


OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")


@dataclass
class EarlyStoppingConfig:
    patience: Optional[int] = None  # epochs without improvement of val accuracy (null = off)
    min_delta: float = 0.0  # improvement smaller than this (in accuracy points, 0-1) does not count

    def check(self, err):
        if self.patience is not None and self.patience <= 0:
            err("patience", "a positive number of epochs (or null to disable)", self.patience)
        if self.min_delta < 0:
            err("min_delta", "a number >= 0", self.min_delta)


@dataclass
class CheckpointConfig:
    every: float = 1  # save a checkpoint every N units (0 = only at the end)
    unit: Literal["epochs", "steps", "minutes"] = "epochs"  # what `every` counts
    keep: int = 2  # how many recent checkpoints to keep (besides best.pt)

    def check(self, err):
        if self.every < 0:
            err("every", "a number >= 0", self.every)
        if self.keep < 1:
            err("keep", "at least 1", self.keep)


@dataclass
class TrainConfig:
    epochs: int = 3  # passes over the training set
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast precision (fp16: CUDA only, with a scaler)
    compile: bool = False  # torch.compile the model (pays a compile time up front)
    grad_clip: Optional[float] = None  # clip the gradient norm to this value (null = off)
    grad_accum: int = 1  # micro-batches per optimizer step (keeps a global batch on fewer devices)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    tta: bool = False  # test-time augmentation at the final test evaluation
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def check(self, err):
        if self.epochs <= 0:
            err("epochs", "a positive integer", self.epochs)
        if self.grad_clip is not None and self.grad_clip <= 0:
            err("grad_clip", "a norm > 0 (or null)", self.grad_clip)
        if self.grad_accum < 1:
            err("grad_accum", "an integer >= 1", self.grad_accum)
        if not 0 <= self.label_smoothing < 1:
            err("label_smoothing", "a number in [0, 1)", self.label_smoothing)


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    threads: Optional[int] = None  # CPU threads; null = $SLURM_CPUS_PER_TASK or the affinity mask
    deterministic: bool = False  # bit-reproducible runs (slower kernels on GPU)
    channels_last: bool = False  # NHWC memory format for conv nets (helps on tensor cores)
    requeue_signal: Literal["USR1", "USR2"] = "USR1"  # signal that asks for checkpoint + requeue
    max_requeues: int = 5  # automatic Slurm requeues before giving up
    dist_timeout: float = 300  # seconds before a hung collective (or rendezvous) fails

    def check(self, err):
        d = self.device
        if not (d in ("auto", "cpu", "cuda", "mps") or (d.startswith("cuda:") and d[5:].isdigit())):
            err("device", "auto, cpu, cuda, cuda:N or mps", d)
        if self.threads is not None and self.threads <= 0:
            err("threads", "a positive integer (or null for automatic)", self.threads)
        if self.max_requeues < 0:
            err("max_requeues", "an integer >= 0", self.max_requeues)
        if self.dist_timeout <= 0:
            err("dist_timeout", "seconds > 0", self.dist_timeout)


@dataclass
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=lambda: {"name": "cnn"})  # name + that model's params
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


SECTIONS = [f.name for f in dataclasses.fields(Config)]


# --------------------------------------------------------------------------- helpers


def _choices(options) -> str:
    return "one of " + ", ".join(sorted(options))


def did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(inner)}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


class _Ctx:
    """Where a value came from, for messages: 'configs/x.yaml: optim.lr: expected ...'."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, msg: str):
        raise ConfigError(f"{self.source}: {path}: {msg}")


def coerce(value, tp, path: str, ctx: _Ctx):
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, path, ctx)
            except ConfigError:
                pass
        ctx.fail(path, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        options = typing.get_args(tp)
        if value in options and type(value) is type(options[0]):
            return value
        # YAML reads `none` as a string but `no`/`off` never appear here; be precise
        ctx.fail(path, f"expected {_type_name(tp)}, got {value!r}{did_you_mean(value, options)}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            ctx.fail(path, f"expected {_type_name(tp)}, got {value!r}")
        return [coerce(v, inner, f"{path}[{i}]", ctx) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict or tp is Any:
        return value
    elif dataclasses.is_dataclass(tp):
        return build_section(tp, value, path, ctx)
    ctx.fail(path, f"expected {_type_name(tp)}, got {value!r}")


def build_section(cls, data, path: str, ctx: _Ctx):
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and checking ranges."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        ctx.fail(path, f"expected a mapping of {', '.join(f.name for f in dataclasses.fields(cls))}, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            ctx.fail(where, f"unknown key{did_you_mean(key, names)}; expected one of {', '.join(names)}")
        kwargs[key] = coerce(value, hints[key], f"{path}.{key}" if path else key, ctx)
    obj = cls(**kwargs)

    def err(key, expected, got, options=None):
        hint = did_you_mean(got, options) if options is not None else ""
        ctx.fail(f"{path}.{key}" if path else key, f"expected {expected}, got {got!r}{hint}")

    if hasattr(obj, "check"):
        obj.check(err)
    return obj


def _build_config(data: dict, source: str) -> Config:
    ctx = _Ctx(source)
    model = data.get("model", {"name": "cnn"})
    rest = {k: v for k, v in data.items() if k != "model"}
    cfg = build_section(Config, rest, "", ctx)
    if not isinstance(model, dict):
        ctx.fail("model", f"expected a mapping with 'name' and that model's parameters, got {model!r}")
    name = model.get("name", "cnn")
    if name not in MODEL_SPECS:
        ctx.fail("model.name", f"expected {_choices(MODEL_SPECS)}, got {name!r}{did_you_mean(name, MODEL_SPECS)}")
    params = {k: v for k, v in model.items() if k != "name"}
    try:
        cfg.model = {"name": name, **validate_model_params(name, params)}
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


# --------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """safe_load, plus: duplicate keys are an error (a silently lost value is a typo's twin)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 reads `1e-3` (no dot) as a string; learning rates are written that way, so read
# every decimal/exponent spelling as a float, as YAML 1.2 does.
_StrictLoader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def yaml_load(text: str):
    """``yaml.safe_load`` with duplicate-key errors and YAML 1.2 floats (``1e-3``)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: Path) -> Any:
    """Read one YAML file with the safe loader; errors name the file and line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        return yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if "could not determine a constructor" in str(e):
            problem = "YAML tags that construct Python objects are not allowed: " + problem
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None


def merge(base: dict, over: dict) -> dict:
    """Deep-merge ``over`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_raw(path, _chain: tuple = ()) -> dict:
    """Read a config file and the files it ``extends:``, merged, as a plain dict (unvalidated)."""
    path = Path(path)
    key = os.path.realpath(path)
    if key in _chain:
        loop = " -> ".join(str(p) for p in (*_chain, key))
        raise ConfigError(f"{path}: extends: loop: {loop}")
    data = read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected a mapping of sections "
                          f"({', '.join(SECTIONS)})")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections "
                          f"({', '.join(SECTIONS)}), got {type(data).__name__}")
    parents = data.pop("extends", None)
    if parents is None:
        return data
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: extends: expected a file name or a list of file names")
    merged: dict = {}
    for parent in parents:
        ppath = (path.parent / parent)
        if not ppath.exists():
            raise ConfigError(f"{path}: extends: {parent}: no such file (looked for {ppath})")
        merged = merge(merged, load_raw(ppath, (*_chain, key)))
    return merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``--set a.b=value`` (value read as YAML, so lists and numbers work)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. --set optim.lr=0.01")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: expected KEY=VALUE with a dotted key such as optim.lr")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--set {text}: the value is not valid YAML: {problem}") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides) -> dict:
    """Apply ``--set`` overrides to a raw config dict. A key must exist in the schema."""
    data = merge({}, data)
    for text in overrides or ():
        parts, value = parse_override(text)
        _check_override_path(parts, text, data)
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return data


def _check_override_path(parts: list[str], text: str, data: dict):
    """Refuse --set on keys the schema does not have (with a did-you-mean)."""
    cls = Config
    for i, p in enumerate(parts):
        where = ".".join(parts[: i + 1])
        if cls is dict:  # the model section: name + the chosen model's params
            name = (data.get("model") or {}).get("name", "cnn")
            spec = MODEL_SPECS.get(name)
            keys = ["name", *(spec.param_names() if spec else [])]
            if p not in keys:
                raise ConfigError(f"--set {text}: unknown key {where} for model '{name}'"
                                  f"{did_you_mean(p, keys)}; expected one of {', '.join(keys)}")
            if i != len(parts) - 1:
                raise ConfigError(f"--set {text}: {where} is not a section")
            return
        names = [f.name for f in dataclasses.fields(cls)]
        if p not in names:
            raise ConfigError(f"--set {text}: unknown key {where}{did_you_mean(p, names)}; "
                              f"expected one of {', '.join(names)}")
        tp = typing.get_type_hints(cls)[p]
        if dataclasses.is_dataclass(tp) or tp is dict:
            cls = tp
        elif i != len(parts) - 1:
            raise ConfigError(f"--set {text}: {where} is a value, not a section")


def load_config(path, overrides=()) -> Config:
    """Load, merge ``extends:``, apply ``--set`` overrides and validate. Raises ConfigError."""
    data = load_raw(path)
    data = apply_overrides(data, overrides)
    source = str(path) + (" (with --set)" if overrides else "")
    return _build_config(data, source)


def config_from_dict(data: dict, source: str = "<config>") -> Config:
    """Validate a plain dict (e.g. the config stored in a checkpoint or a run folder)."""
    return _build_config(merge({}, data), source)
