"""Checks on what the `cli` fixture (tests/conftest.py) returns, shared by several test files."""

from __future__ import annotations


def one_line(result) -> str:
    lines = result.err.strip().splitlines()
    assert result.code != 0 and len(lines) == 1 and "Traceback" not in result.err, result
    return lines[0]
