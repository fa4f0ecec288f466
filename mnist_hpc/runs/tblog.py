"""Optional TensorBoard logging: per-epoch metrics into ``<run_dir>/tensorboard/``.

Enabled by ``experiment.tensorboard: true``; needs the extra (``pip install 'mnist-hpc[tensorboard]'``).
Point TensorBoard at a sweep folder (``tensorboard --logdir runs/sweeps/learning_rate``) and
every run of the sweep appears as one curve of the same dashboard.
"""

from __future__ import annotations

from pathlib import Path

from mnist_hpc.errors import UserError


# metrics.csv columns -> TensorBoard tags (train and validation side by side in one chart)
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
        "val_acc": "accuracy/val", "lr": "optim/lr", "seconds": "speed/epoch_seconds",
        "images_per_s": "speed/images_per_s"}


class TensorBoardLogger:
    def __init__(self, run_dir):
        try:
            import tensorboard  # noqa: F401 - SummaryWriter needs it, and says so less clearly
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("experiment.tensorboard needs the tensorboard package: "
                            "pip install 'mnist-hpc[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """Write every numeric metric (e.g. a metrics.csv row) as a scalar at step ``epoch``."""
        for name, value in metrics.items():
            if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(TAGS.get(name, name), value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
