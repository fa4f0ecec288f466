"""A user's own network for the custom-model tests: a model file (NET), a project whose config
trains it, and the one run folder a training made."""

from __future__ import annotations

import textwrap
from pathlib import Path

NET = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width=8, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def make_tiny(width=8):
    return TinyNet(width)
"""


def write_project(
    tmp_path: Path, net: str = NET, factory: str = "TinyNet", args: str = "{width: 8}", extra: str = ""
) -> Path:
    (tmp_path / "nets").mkdir(parents=True, exist_ok=True)
    (tmp_path / "nets" / "tiny.py").write_text(textwrap.dedent(net))
    cfg = tmp_path / "own.yaml"
    cfg.write_text(f"""
experiment: {{name: own, output_dir: {tmp_path / "runs"}}}
data: {{subset: 300, val_split: 0.2, batch_size: 50, eval_batch_size: 300}}
model: {{name: custom, file: nets/tiny.py, factory: {factory}, args: {args}}}
optim: {{name: adam, lr: 0.01}}
train: {{epochs: 1}}
runtime: {{threads: 1}}
{extra}""")
    return cfg


def only_run(tmp_path: Path) -> Path:
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1, folders
    return folders[0]
