"""The project root, defined once for the test files and their helpers: ``from tests.paths import ROOT``
(tests/conftest.py puts this folder on sys.path, so ``tests.*`` imports from any test file)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
