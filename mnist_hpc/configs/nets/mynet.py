"""A network of your own, as a student writes it: the same layers as the built-in `fast` net of
configs/fast.yaml (three conv blocks 16/32/64, each conv 3x3 -> 2x2 max-pool -> batch norm -> ReLU,
then the flattened 3x3x64 map into one linear layer), in plain PyTorch.

Use it with `model: {name: custom, file: nets/mynet.py, factory: MyNet, args: {...}}` (configs/own.yaml),
or copy this file next to your own config and change it. A model file holds one network and
imports only installed packages (torch, ...): the run folder keeps a copy of this one file.
"""

import torch
from torch import nn


class MyNet(nn.Module):
    def __init__(self, widths=(16, 32, 64), num_classes=10, in_channels=1, image_size=28):
        super().__init__()
        blocks, c_in, side = [], in_channels, image_size
        for c_out in widths:
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in, side = c_out, side // 2
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c_in * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
