"""TensorBoard: ``<run>/tensorboard/``, one folder per run.

Point TensorBoard at the folder that holds the runs (``tensorboard --logdir runs/``, or a sweep's
folder) and every run appears as one curve of the same dashboard, its hyperparameters in the
HPARAMS tab. Epoch metrics use the epoch as their x axis, step scalars (``step/...``) the
optimizer step; the test figures (``test/...``) sit at the last epoch. A resumed run appends a new
event file to the same folder.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_hpc.config import flatten
from mnist_hpc.runs.loggers.base import TAGS, Logger, Session, numbers

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

HPARAM_METRICS = ("test/accuracy", "accuracy/val", "test/loss")


class TensorBoardLogger(Logger):
    name = "tensorboard"

    def __init__(self, session: Session) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(session.run_dir) / "tensorboard"
        new = not any(self.dir.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(log_dir=str(self.dir))
        if new:  # the hyperparameters once per run, not once per start
            self._hparams(session.config)
        self.writer.flush()

    def _hparams(self, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        values = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flatten(config).items()
        }
        # torch leaves hparams unannotated, and types file_writer as None (its __init__ sets None
        # before _get_file_writer makes the writer)
        for summary in hparams(values, dict.fromkeys(HPARAM_METRICS, 0.0)):  # type: ignore[no-untyped-call]
            self.writer.file_writer.add_summary(summary)  # type: ignore[attr-defined]

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"step/{name}", value, step)

    def log_epoch(
        self, epoch: int, step: int, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]]
    ) -> None:
        for name, value in numbers(row).items():
            if name != "epoch":
                self.writer.add_scalar(TAGS.get(name, name), value, epoch)
        self.writer.flush()

    def log_summary(self, summary: Mapping[str, Any], plots: Mapping[str, Path], step: int) -> None:
        at = summary.get("epochs_run") or 0
        for key, value in numbers(
            {k: summary.get(k) for k in ("test_accuracy", "test_loss", "macro_f1")}
        ).items():
            self.writer.add_scalar("test/" + key.removeprefix("test_"), value, at)
        for name, path in plots.items():
            self.writer.add_image(f"plots/{name}", _png(path), at, dataformats="HWC")
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()

    def lines(self) -> list[str]:
        return [
            f"TensorBoard: tensorboard --logdir {shlex.quote(str(self.dir.parent.parent))}  "
            "(every run in that folder)"
        ]


def _png(path: Path) -> NDArray[np.uint8]:
    """An RGB uint8 (H, W, 3) array of a PNG file."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))
