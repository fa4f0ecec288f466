"""The Slurm tests' clock-bound network: a small conv net whose every training step takes at least
``step_seconds`` (a sleep in forward, training mode only), so that a test's job lasts as long as the
test needs on any CPU. Without it a fast host finished the job before the time limit or the signal
the test is about (2026-12-05: 3 epochs of the quickstart net on 10,000 images ended after 61 s, the
signal due at 60 s). The sleep changes no number: a paced run and an unpaced one (step_seconds=0)
end with the same weights."""

import time

from torch import nn


class Paced(nn.Module):
    def __init__(self, step_seconds: float = 0.1, width: int = 8, num_classes: int = 10):
        super().__init__()
        self.step_seconds = step_seconds
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width * 7 * 7, num_classes)

    def forward(self, x):
        if self.training and self.step_seconds > 0:
            time.sleep(self.step_seconds)
        return self.head(self.body(x))
