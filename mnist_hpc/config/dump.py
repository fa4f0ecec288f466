"""A config as readable YAML: block style, one key a line, each with its field's one-line comment.

The comments are the ones written next to the fields in ``schema.py`` and ``models.py`` (read
from the source, so they are never out of step). The output loads back to ``to_dict()``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_FIELD_COMMENT = re.compile(r"^    (\w+)\s*:[^#]*?\s#\s?(.*)$")
MAX_COMMENT_COLUMN = 36  # comments line up at this column or right after a longer line
_COMMENTS: dict[type, dict[str, str]] = {}  # field_comments' cache


def field_comments(cls: type) -> dict[str, str]:
    """``{field: its one-line comment}`` of a dataclass, base classes included (cached)."""
    cached = _COMMENTS.get(cls)
    if cached is not None:
        return cached
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):  # no source (a frozen install): no comments, same YAML
            continue
        for line in lines:
            m = _FIELD_COMMENT.match(line)
            if m:
                out[m.group(1)] = m.group(2).strip()
    _COMMENTS[cls] = out
    return out


def _value(value: object) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...")


def commented_yaml(obj: DataclassInstance) -> str:
    """Block YAML of dataclass ``obj`` (sections nested, lists inline) with field comments."""
    blocks: list[list[tuple[str, str]]] = []
    for f in dataclasses.fields(obj):
        rows: list[tuple[str, str]] = []
        _rows(f.name, getattr(obj, f.name), field_comments(type(obj)).get(f.name, ""), 0, rows)
        blocks.append(rows)
    out: list[str] = []
    for rows in blocks:
        column = min(MAX_COMMENT_COLUMN, max(len(text) for text, _ in rows) + 2)
        for text, comment in rows:
            out.append(f"{text:<{column - 2}}  # {comment}" if comment else text)
    return "\n".join(out) + "\n"


def _rows(name: str, value: object, comment: str, depth: int, rows: list[tuple[str, str]]) -> None:
    pad = "  " * depth
    if dataclasses.is_dataclass(value):
        rows.append((f"{pad}{name}:", comment))
        comments = field_comments(type(value))
        for f in dataclasses.fields(value):
            _rows(f.name, getattr(value, f.name), comments.get(f.name, ""), depth + 1, rows)
    else:
        rows.append((f"{pad}{name}: {_value(value)}", comment))
