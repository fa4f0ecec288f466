"""Loading a config: ``extends:`` chains, ``--set`` overrides, validation into a ``Config``.

    load_config("quickstart", ["train.epochs=1"])      # a shipped config by name
    load_config("configs/mlp_keras.yaml", ["model.name=cnn"])

``resolve_extends`` is the one ``extends:`` resolver (config files here, named entries of a
cluster profile file there). ``--set model.name=X`` switches models: the old model's keys are
dropped (X starts from its own defaults) unless set in the same command, and ``cfg.notes``
says which were dropped. A ``--set`` value for a string field keeps its text (``on``, ``2024``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from mnist_hpc.config.extras import check_extras
from mnist_hpc.config.models import MODEL_SPECS, ModelSection
from mnist_hpc.config.schema import SECTIONS, Config
from mnist_hpc.config.shipped import find_config
from mnist_hpc.config.validate import build_section, did_you_mean, field_names, field_type, show
from mnist_hpc.config.yamlio import cut, read_yaml, yaml_load, yaml_problem
from mnist_hpc.errors import ConfigError

MAX_EXTENDS_DEPTH = 32  # files (or profiles) extending each other in one chain

K = TypeVar("K")  # what names an entry of an ``extends:`` chain (a file's real path, a profile name)
Merge = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def flatten(data: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys: {"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}."""
    out: dict[str, Any] = {}
    for key, value in (data or {}).items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = {k: merge({}, v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in over.items():
        if isinstance(v, dict):  # a copy: callers change the result in place (apply_overrides)
            out[k] = merge(out[k], v) if isinstance(out.get(k), dict) else merge({}, v)
        else:
            out[k] = v
    return out


def _model_name(data: dict[str, Any]) -> object:
    model = data.get("model")
    return model.get("name", ModelSection.default) if isinstance(model, dict) else ModelSection.default


def merge_configs(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``merge`` for config files: a model section naming another model replaces the parent's."""
    model = over.get("model")
    if isinstance(model, dict) and "name" in model and model["name"] != _model_name(base):
        base = {k: v for k, v in base.items() if k != "model"}
    return merge(base, over)


# --------------------------------------------------------------------------- extends:


def resolve_extends(
    key: K,
    lookup: Callable[[K], tuple[dict[str, Any], list[K]]],
    *,
    merge: Merge = merge,
    label: Callable[[K], str] = str,
    where: Callable[[K], str] | None = None,
    _chain: tuple[K, ...] = (),
) -> dict[str, Any]:
    """``key``'s data merged over its parents', depth first, parents in the order listed.

    ``lookup(key) -> (data, parents)``: the entry without its ``extends`` and the keys of its
    parents (already resolved and checked to exist). ``label(key)`` names a key in the loop
    message, ``where(key)`` starts it (default: the label): ``a.yaml: extends: loop: a -> b -> a``.
    """
    if key in _chain or len(_chain) >= MAX_EXTENDS_DEPTH:
        at = (where or label)(_chain[-1])
        if key not in _chain:
            raise ConfigError(f"{at}: extends: more than {MAX_EXTENDS_DEPTH} levels")
        raise ConfigError(f"{at}: extends: loop: {' -> '.join(label(k) for k in (*_chain, key))}")
    data, parents = lookup(key)
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = merge(
            merged,
            resolve_extends(parent, lookup, merge=merge, label=label, where=where, _chain=(*_chain, key)),
        )
    return merge(merged, data)


def _is_weights_path(value: object) -> bool:
    return isinstance(value, str) and (value.endswith((".pth", ".pt")) or "/" in value or os.sep in value)


def anchor_paths(data: dict[str, Any], base: str | os.PathLike[str]) -> dict[str, Any]:
    """Make the file paths a config names for code and weights (``model.file``, a torchvision
    ``model.weights`` file) absolute, relative to ``base``: the folder of the config file that
    wrote them (``--set`` values: the working directory), so a config runs the same from any folder."""
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        return data
    for key in ("file", "weights"):
        value = model.get(key)
        if isinstance(value, str) and value and (key == "file" or _is_weights_path(value)):
            expanded = os.path.expanduser(value)
            if not os.path.isabs(expanded):
                model[key] = os.path.normpath(os.path.join(os.path.abspath(base), expanded))
    return data


def load_raw(source: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a config file (a path or a shipped name) and the files it ``extends:``, merged, as a
    plain dict (unvalidated)."""
    shown: dict[str, str] = {}  # real path -> the path as the user wrote it

    def key_of(path: Path) -> str:
        key = os.path.realpath(path)
        shown.setdefault(key, str(path))
        return key

    def lookup(key: str) -> tuple[dict[str, Any], list[str]]:
        path = Path(shown[key])
        data = read_yaml(path)
        if data is None:
            raise ConfigError(
                f"{path}: the file is empty; expected a mapping of sections ({', '.join(SECTIONS)})"
            )
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path}: the top level must be a mapping of sections "
                f"({', '.join(SECTIONS)}), got {type(data).__name__}"
            )
        anchor_paths(data, path.parent)
        parents = data.pop("extends", None)
        if parents is None:
            return data, []
        if isinstance(parents, str):
            parents = [parents]
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise ConfigError(
                f"{path}: extends: expected a file name or a list of file names, got {show(parents)}"
            )
        keys: list[str] = []
        for parent in parents:
            try:
                keys.append(key_of(find_config(parent, relative_to=path.parent)))
            except ConfigError as e:
                raise ConfigError(f"{path}: extends: {e}") from None
        return data, keys

    return resolve_extends(key_of(find_config(source)), lookup, merge=merge_configs, label=lambda k: shown[k])


# --------------------------------------------------------------------------- --set


def _parse(text: str) -> tuple[list[str], Any, str]:
    if "=" not in text:
        raise ConfigError(f"--set {cut(text)}: expected KEY=VALUE, e.g. --set optim.lr=0.01")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {cut(text)}: expected KEY=VALUE with a dotted key such as optim.lr")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problem = yaml_problem(e)  # "invalid YAML (line 1, column 2): ..." or a limit's own words
        problem = (
            problem.removeprefix("invalid YAML") if problem.startswith("invalid YAML") else ": " + problem
        )
        raise ConfigError(f"--set {cut(text)}: the value is not valid YAML{problem}") from None
    return key.split("."), value, raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``--set a.b=value`` (value read as YAML, so lists and numbers work)."""
    parts, value, _ = _parse(text)
    return parts, value


def as_overrides(overrides: object, what: str = "overrides") -> tuple[str, ...]:
    """``--set``-style overrides as a tuple of strings: a list/tuple of ``"key=value"`` texts, or
    one such text on its own (taken as one override, never as its characters); None: none."""
    if overrides is None:
        return ()
    if isinstance(overrides, str):
        return (overrides,)
    if isinstance(overrides, dict) or not hasattr(overrides, "__iter__"):
        raise ConfigError(
            f'{what}={show(overrides)}: expected a list of "key=value" strings, such as ["train.epochs=1"]'
        )
    items = tuple(overrides)
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(
                f'{what}: {show(item)} is not a "key=value" string; give a list of them, '
                f'such as ["train.epochs=1", "optim.lr=0.01"]'
            )
    return items


def apply_overrides(
    data: dict[str, Any], overrides: object, notes: list[str] | None = None
) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw config dict; a key must exist in the schema.

    A change of ``model.name`` drops the old model's keys that this call did not set (the new
    model starts from its defaults); one line saying so is appended to ``notes`` when given.
    """
    data = merge({}, data)
    parsed = [(text, *_parse(text)) for text in as_overrides(overrides)]
    old = _model_name(data)
    target = old
    for _, parts, value, _ in parsed:
        if parts == ["model", "name"]:
            target = value
        elif parts == ["model"]:
            target = value.get("name", ModelSection.default) if isinstance(value, dict) else value
    explicit: set[str] = set()
    for text, parts, value, raw in parsed:
        tp = _override_type(parts, text, target)
        if (
            tp is not None
            and _wants_text(tp)
            and value is not None
            and not isinstance(value, (str, list, dict))
        ):
            value = raw.strip()  # `on` and `2024` stay the strings they were typed as
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
        if parts in (["model", "file"], ["model", "weights"]):  # typed on the command line: from here
            node[parts[-1]] = anchor_paths({"model": {parts[1]: value}}, os.getcwd())["model"][parts[1]]
        if parts[0] == "model" and len(parts) > 1:
            explicit.add(parts[1])
        elif parts == ["model"] and isinstance(value, dict):  # a whole section: all of it is meant
            explicit.update(value)
    if target != old and isinstance(data.get("model"), dict):
        dropped = [k for k in data["model"] if k != "name" and k not in explicit]
        for k in dropped:
            del data["model"][k]
        if dropped and notes is not None:
            keys = ", ".join(f"model.{cut(k, 40)}" for k in dropped)
            notes.append(
                f"model.name changed {cut(old, 40)} -> {cut(target, 40)}; dropped {keys} "
                f"({cut(target, 40)} starts from its own defaults)"
            )
    _name_after_model(data, parsed, old, target)
    return data


def _name_after_model(
    data: dict[str, Any], parsed: list[tuple[str, list[str], Any, str]], old: object, target: object
) -> None:
    """A ``model.name`` override that changes the model also names it in ``experiment.name``
    (the run folder's prefix: ``mlp_keras-cnn-<time>``, not ``mlp_keras-<time>`` for a cnn),
    unless the same overrides set the name themselves."""
    if target == old or not isinstance(target, str) or not isinstance(data.get("experiment", {}), dict):
        return
    if any(
        parts[:2] == ["experiment", "name"]
        or (parts == ["experiment"] and isinstance(value, dict) and "name" in value)
        for _, parts, value, _ in parsed
    ):
        return
    experiment = data.setdefault("experiment", {})
    name = experiment.get("name")
    if not isinstance(name, str) or not name or name.endswith(f"-{target}"):
        return
    experiment["name"] = f"{name}-{target}"  # no note: the run folder's name shows it


def _override_type(parts: list[str], text: str, model_name: object) -> object:
    """The annotation of the field ``parts`` names (None for a whole section or an unknown
    model's parameter); refuses keys the schema does not have, with a did-you-mean."""
    cls: Any = Config
    for i, p in enumerate(parts):
        where = ".".join(parts[: i + 1])
        if cls is ModelSection:  # the model section: name + the chosen model's params
            spec = MODEL_SPECS.get(model_name) if isinstance(model_name, str) else None
            if spec is None:
                return None  # validation names the unknown model
            cls = spec.section
        names = field_names(cls)
        if p not in names:
            owner = f" for model '{model_name}'" if issubclass(cls, ModelSection) else ""
            raise ConfigError(
                f"--set {cut(text)}: unknown key {cut(where)}{owner}"
                f"{did_you_mean(p, names)}; expected one of {', '.join(names)}"
            )
        tp = field_type(cls, p)
        if (tp is dict or typing.get_origin(tp) is dict) and i < len(parts) - 1:
            return None  # a free mapping (model.args of a custom model): any key, any value
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # a section (the model's too)
            cls = tp
        elif i != len(parts) - 1:
            raise ConfigError(f"--set {cut(text)}: {where} is a value, not a section")
        else:
            return tp
    return None


def _wants_text(tp: object) -> bool:
    """A field typed as a string (or a choice of strings, or an optional string)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return any(_wants_text(a) for a in typing.get_args(tp) if a is not type(None))
    return tp is str


# --------------------------------------------------------------------------- load


def load_config(source: str | os.PathLike[str], overrides: object = ()) -> Config:
    """Load ``source`` (a path or a shipped config name), merge ``extends:``, apply ``--set``
    overrides and validate. Raises ConfigError. ``cfg.notes`` lists what loading changed on
    its own (one line each: print them as ``note: ...``)."""
    overrides = as_overrides(overrides)
    data = load_raw(source)
    notes: list[str] = []
    data = apply_overrides(data, overrides, notes)
    cfg = config_from_dict(data, str(source) + (" (with --set)" if overrides else ""))
    cfg.notes = tuple(notes)
    cfg.source = str(source)
    check_extras(cfg)  # a logger whose package is missing fails here, before any job is queued
    return cfg


def config_from_dict(data: object, source: str = "<config>") -> Config:
    """Validate a plain dict (e.g. the config stored in a checkpoint or a run folder)."""
    return build_section(Config, merge({}, data) if isinstance(data, dict) else data, "", source)
