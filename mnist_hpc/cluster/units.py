"""Slurm's spellings of time limits and memory sizes: parse, check and format them."""

from __future__ import annotations

import re

from mnist_hpc.errors import UserError

_TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM_RE = re.compile(r"^([0-9]+)([KMGT]?)$")


def parse_time(text: str) -> int:
    """Seconds in a Slurm time limit: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S."""
    m = _TIME_RE.match(str(text).strip())
    if not m:
        raise UserError(
            f"time {text!r}: expected a Slurm time such as 30 (minutes), 0:30:00, 12:00:00 or 2-00:00:00"
        )
    days, a, b, c = m.groups()
    a, b, c = int(a), int(b) if b else None, int(c) if c else None
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = int(days) * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif b is not None and c is not None:  # H:M:S (the regex fills c only after b)
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # M:S
        seconds = a * 60 + b
    else:  # M
        seconds = a * 60
    if seconds <= 0:
        raise UserError(f"time {text!r}: must be longer than zero")
    return seconds


def is_time(text: str) -> bool:
    try:
        parse_time(text)
    except UserError:
        return False
    return True


def format_time(seconds: int) -> str:
    """A Slurm time limit: H:MM:SS, or D-HH:MM:SS from one day on."""
    days, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h}:{m:02d}:{s:02d}"


def is_mem(text: object) -> bool:
    return isinstance(text, str) and _MEM_RE.match(text) is not None


def check_mem(text: str, what: str = "--mem") -> str:
    if not is_mem(str(text)):
        raise UserError(f"{what} {text!r}: expected a size such as 4G, 500M or 16000 (MB)")
    return str(text)


def times_mem(text: str, factor: int) -> str:
    """``16G`` times ``factor``, in the same unit."""
    m = _MEM_RE.match(text)
    if m is None:
        raise ValueError(f"not a Slurm memory size: {text!r}")
    number, unit = m.groups()
    return f"{int(number) * factor}{unit}"
