"""The `mnist-hpc` command line: thin click commands over the Python API (nothing below imports click)."""

from mnist_hpc.cli.main import cli, main

__all__ = ["cli", "main"]
