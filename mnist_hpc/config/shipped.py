"""The configs shipped with mnist-hpc (package data), and how a config source becomes a file.

A source is a path, or the bare name of a shipped config (``quickstart``: no slash, no
``.yaml``). A path that exists always wins; a bare name that is no file falls back to the
shipped config of that name, so ``mnist-hpc train quickstart`` and ``extends: quickstart``
work from any folder, after a plain ``pip install``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mnist_hpc.config.yamlio import cut
from mnist_hpc.errors import ConfigError

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "configs"  # mnist_hpc/configs/
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_name(source: object) -> bool:
    """A bare config name (``quickstart``), not a path (``./quickstart``, ``x/y.yaml``, ``a.yaml``)."""
    text = str(source)
    return bool(_NAME.match(text)) and not text.endswith((".yaml", ".yml"))


def shipped_path(name: str) -> Path | None:
    """The shipped config called ``name``, or None."""
    if not is_name(name):
        return None
    path = SHIPPED_DIR / f"{name}.yaml"
    return path if path.is_file() else None


def shipped_configs() -> dict[str, str]:
    """``{name: one-line purpose}`` of the shipped configs, sorted by name.

    The purpose is the file's first comment line, without a leading ``name:``.
    """
    out: dict[str, str] = {}
    for path in sorted(SHIPPED_DIR.glob("*.yaml")):
        out[path.stem] = _purpose(path)
    return out


def _purpose(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") and line.strip("#").strip():
                    text = line.strip("#").strip()
                    if text.lower().startswith(path.stem.lower() + ":"):
                        text = text[len(path.stem) + 1 :].strip()
                    return text
                if line.strip() and not line.startswith("#"):
                    break
    except OSError:
        pass
    return ""


def missing_hint(source: str | os.PathLike[str]) -> str:
    """What to try when config ``source`` is no file: the shipped name, or where paths start."""
    stem = Path(str(source)).stem
    if shipped_path(stem) is not None and str(source) != stem:
        return f"the shipped config '{stem}' is used by its name alone: {stem}"
    names = ", ".join(shipped_configs()) or "none installed"
    return (
        f"paths are relative to the current folder (run from the project folder), "
        f"or name a shipped config: {names}"
    )


def find_config(source: str | os.PathLike[str], relative_to: str | os.PathLike[str] | None = None) -> Path:
    """The file a config source names: ``source`` as a path (relative to the folder
    ``relative_to``, else the current folder) if that is a file, else the shipped config of that
    name. Raises ``ConfigError`` with a hint when neither exists."""
    path = Path(relative_to) / str(source) if relative_to is not None else Path(source)
    if path.is_file():
        return path
    shipped = shipped_path(str(source))
    if shipped is not None:
        return shipped
    if path.exists():  # a folder, a device...: the reader says what is wrong with it
        return path
    where = f"looked for {path}" if relative_to is not None else f"in {os.getcwd()}"
    raise ConfigError(f"{cut(source)}: no such file ({where}); {missing_hint(source)}")
