"""The one validator: build a typed dataclass from a plain mapping, or fail with one clear line.

Used for experiment configs, model parameters, cluster profiles and sweep files alike. A schema
is a dataclass whose fields are annotated with ``int``, ``float``, ``bool``, ``str``,
``Optional[...]``, ``Literal[...]``, ``list``/``list[X]``, ``tuple``/``tuple[X, ...]``,
``dict``/``dict[str, X]``, ``Any``, another dataclass, or a ``Tagged`` base whose variants are
picked by a field (``model.name``). Unknown keys, wrong types and out-of-range values (a
section's ``check(err)`` method) raise ``ConfigError("<source>: <key path>: <what is wrong>")``
with a did-you-mean for typos; every quoted value is cut to a sane length.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import reprlib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol, TypeGuard, TypeVar, Union, cast

from mnist_hpc.config.yamlio import MAX_QUOTE, cut
from mnist_hpc.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

S = TypeVar("S", bound="DataclassInstance")  # a schema: a dataclass
T = TypeVar("T", bound="Tagged")


class _Repr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 200:  # repr() refuses ints of over 4,300 digits (and needn't show them)
            return f"<an integer of {int(x.bit_length() * math.log10(2)) + 1:,} digits>"
        return super().repr_int(x, level)


_repr = _Repr()
_repr.maxstring = _repr.maxother = MAX_QUOTE
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxlevel = 3


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A schema class's resolved annotations (cached: resolving them dominated big sweeps' checks)."""
    return typing.get_type_hints(cls)


def show(value: object) -> str:
    """``repr(value)`` for a message: bounded in length and depth, whatever the value."""
    return cut(_repr.repr(value))


def did_you_mean(word: object, options: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or ``""``."""
    word = str(word)[: 2 * MAX_QUOTE]
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


DEVICES = ("auto", "cpu", "cuda", "mps")
DEVICES_TEXT = "auto, cpu, cuda, cuda:N or mps"


def valid_device(name: object) -> TypeGuard[str]:
    """A device string mnist-hpc takes: auto, cpu, cuda, cuda:N (N a GPU index) or mps."""
    return isinstance(name, str) and (name in DEVICES or (name.startswith("cuda:") and name[5:].isdigit()))


def check_device(name: object, what: str = "--device") -> str:
    """The one validator of device strings (runtime.device, --device, ``device=`` in Python):
    the name as a string, or one ConfigError line saying what is accepted. A ``torch.device``
    is taken as its string."""
    if type(name).__name__ == "device" and hasattr(name, "type"):  # torch.device, without importing torch
        name = str(name)
    if valid_device(name):
        return name
    text = str(name).strip().lower() if isinstance(name, str) else ""
    hint = (
        " (for a GPU write cuda, or cuda:N for GPU N)"
        if text.startswith(("gpu", "nvidia", "cuda"))
        else did_you_mean(text, DEVICES)
    )
    raise ConfigError(f"{what}={show(name)}: not a device{hint}; expected {DEVICES_TEXT}")


def choices(options: Iterable[object]) -> str:
    return "one of " + ", ".join(sorted(str(o) for o in options))


def fail(source: str, path: str, msg: str) -> NoReturn:
    """Raise the one-line error: ``source: path: msg`` (either may be empty)."""
    raise ConfigError(": ".join(part for part in (source, path, msg) if part))


def _join(path: str, key: object) -> str:
    return f"{path}.{cut(key)}" if path else cut(key)


class Tagged:
    """Base of a section whose ``tag`` field picks one of several schemas (``model.name``).

    Subclasses set ``tag`` and ``default`` and return ``{tag value: dataclass}`` from
    ``variants()``; each variant is a dataclass that subclasses the base.
    """

    tag = "name"
    default: str | None = None

    @classmethod
    def variants(cls) -> Mapping[str, type[DataclassInstance]]:
        raise NotImplementedError


class Err(Protocol):
    """The ``err`` that ``build_section`` hands a section's ``check(err)``: raises the one-line
    ``ConfigError`` for ``key`` (see ``build_section``)."""

    def __call__(
        self,
        key: str,
        expected: str = "",
        got: object = None,
        options: Iterable[object] | None = None,
        *,
        problem: str | None = None,
    ) -> NoReturn: ...


def type_name(tp: Any) -> str:
    """How a message names what an annotation accepts: 'an integer', 'one of 'a', 'b''..."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(type_name(a) for a in args) + " or null"
    if origin in (list, tuple) or tp in (list, tuple):
        # list[Any] is a plain list: any items
        args = [a for a in typing.get_args(tp) if a is not Ellipsis and a is not Any]
        return f"a list of {type_name(args[0])}" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    names: dict[object, str] = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(value: Any, tp: Any, path: str, source: str = "") -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return coerce(value, a, path, source)
                except ConfigError:
                    pass
        fail(source, path, f"expected {type_name(tp)}, got {show(value)}")
    if origin is Literal:
        options = typing.get_args(tp)
        if any(value == o and type(value) is type(o) for o in options):
            return value
        hint = did_you_mean(value, options) if isinstance(value, str) else ""
        fail(source, path, f"expected {type_name(tp)}, got {show(value)}{hint}")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail(source, path, f"expected {type_name(tp)}, got {show(value)}")
        # list[Any] is a plain list: its items are not checked
        item_types = [a for a in typing.get_args(tp) if a is not Ellipsis and a is not Any]
        items = (
            [coerce(v, item_types[0], f"{path}[{i}]", source) for i, v in enumerate(value)]
            if item_types
            else list(value)
        )
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            fail(source, path, f"expected a mapping, got {show(value)}")
        args = typing.get_args(tp)
        return {k: coerce(v, args[1], _join(path, k), source) for k, v in value.items()} if args else value
    if isinstance(tp, type) and issubclass(tp, Tagged):
        return build_tagged(tp, value, path, source)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build_section(tp, value, path, source)
    if tp is Any:
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            fail(source, path, f"expected a finite number, got {show(value)}")
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    fail(source, path, f"expected {type_name(tp)}, got {show(value)}")


def field_names(cls: DataclassInstance | type[DataclassInstance]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def field_type(cls: type, name: str) -> Any:
    """The resolved annotation of ``cls.name`` (string annotations evaluated)."""
    return _hints(cls)[name]


def build_section(cls: type[S], data: object, path: str = "", source: str = "") -> S:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and checking ranges.

    ``path`` is where the mapping sits (``"optim"``, ``"profiles.narval"``; ``""`` for the top),
    ``source`` what it was read from (a file name); both only shape the messages.
    """
    if data is None:
        data = {}
    names = field_names(cls)
    if not isinstance(data, dict):
        fail(source, path, f"expected a mapping of {', '.join(names)}, got {show(data)}")
    hints = _hints(cls)
    owner = ""
    if issubclass(cls, Tagged):  # "unknown key for model 'mlp'": the keys depend on the tag
        owner = f" for {path or cls.tag} {getattr(cls, cls.tag, '')!r}"
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            fail(
                source,
                _join(path, key),
                f"unknown key{owner}{did_you_mean(key, names)}; expected one of {', '.join(names)}",
            )
        kwargs[key] = coerce(value, hints[key], _join(path, key), source)
    obj = cls(**kwargs)

    def err(
        key: str,
        expected: str = "",
        got: object = None,
        options: Iterable[object] | None = None,
        *,
        problem: str | None = None,
    ) -> NoReturn:
        """``path.key: expected <expected>, got <got>``, or ``path.key: <problem>`` when given."""
        if problem is not None:
            fail(source, _join(path, key), problem)
        hint = did_you_mean(got, options) if options is not None and isinstance(got, str) else ""
        fail(source, _join(path, key), f"expected {expected}, got {show(got)}{hint}")

    if hasattr(obj, "check"):
        obj.check(err)
    return obj


def build_tagged(base: type[T], data: object, path: str = "", source: str = "") -> T:
    """Build the variant of ``base`` named by ``data[base.tag]`` (or ``base.default``).

    Its type is ``base``'s: the variants subclass their base (``Tagged``'s contract)."""
    if data is None:
        data = {}
    where = _join(path, base.tag)
    if not isinstance(data, dict):
        fail(source, path, f"expected a mapping with '{base.tag}' and its parameters, got {show(data)}")
    variants = base.variants()
    name = data.get(base.tag, base.default)
    if not (isinstance(name, str) and name in variants):
        hint = did_you_mean(name, variants) if isinstance(name, str) else ""
        fail(source, where, f"expected {choices(variants)}, got {show(name)}{hint}")
    return cast(T, build_section(variants[name], data, path, source))
