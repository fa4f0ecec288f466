"""The experiment config's schema: one dataclass per section, every field with a default and a
one-line comment (what ``config show`` prints). Range checks live in each section's
``check(err)``; types are checked by ``validate.build_section`` from the annotations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from mnist_hpc.config.datasets import DATASETS, FOLDER, data_shape
from mnist_hpc.config.dump import commented_yaml
from mnist_hpc.config.extras import LoggerName
from mnist_hpc.config.models import CNNModel, ModelSection
from mnist_hpc.config.validate import DEVICES_TEXT, Err, choices, valid_device

MAX_NAME = 100  # characters of experiment.name (a folder name gets a timestamp or job id after it)


def name_problem(name: str) -> str | None:
    """What is wrong with ``experiment.name``, which becomes part of folder names and job
    scripts: empty, '/' or '\\', '..', control characters (a newline, a tab, ...), too long."""
    import unicodedata

    if not name.strip():
        return "not empty or blank"
    if any(c in name for c in "/\\"):
        return "without '/' or '\\'"
    if ".." in name or name.startswith("."):
        return "without '..', not starting with '.'"
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
        return "without control characters: newline, tab, ..."
    if len(name) > MAX_NAME:
        return f"at most {MAX_NAME} characters"
    return None


@dataclass
class ExperimentConfig:
    name: str = "experiment"  # run folder prefix: <output_dir>/<name>-<timestamp>/
    seed: int = 0  # seeds python, numpy, torch, the data order and augmentation
    output_dir: str = "./runs"  # where run folders are created (relative to the working directory)
    loggers: list[LoggerName] = field(
        default_factory=lambda: ["csv"]
    )  # csv (always) + tensorboard, wandb, mlflow (extra: tracking)
    tensorboard: bool = False  # older spelling of adding tensorboard to loggers (still accepted)

    def check(self, err: Err) -> None:
        if name_problem(self.name):
            err("name", f"a name for run folders and job scripts ({name_problem(self.name)})", self.name)
        if self.seed < 0:
            err("seed", "an integer >= 0", self.seed)
        # csv first and always; `tensorboard: true` means the same as listing it
        wanted: list[LoggerName] = [*self.loggers, *(("tensorboard",) if self.tensorboard else ())]
        self.loggers = ["csv", *(x for x in dict.fromkeys(wanted) if x != "csv")]


@dataclass
class AugmentConfig:
    shift: float = 0.0  # max random translation in pixels (0 = off)
    rotate: float = 0.0  # max random rotation in degrees (0 = off)
    scale: float = 0.0  # max random zoom as a fraction, e.g. 0.1 -> [0.9, 1.1] (0 = off)
    hflip: bool = (
        False  # mirror half the images left-right (fashion-mnist only: a mirrored 2 or 7 is not a digit)
    )

    def check(self, err: Err) -> None:
        if not 0 <= self.shift <= 14:
            err("shift", "a number of pixels in [0, 14]", self.shift)
        if not 0 <= self.rotate <= 180:
            err("rotate", "degrees in [0, 180]", self.rotate)
        if not 0 <= self.scale < 1:
            err("scale", "a fraction in [0, 1)", self.scale)

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.rotate or self.scale or self.hflip)


@dataclass
class DataConfig:
    dataset: str = (
        "mnist"  # see `mnist-hpc data list`: mnist, fashion-mnist, kmnist, emnist-*, qmnist, folder
    )
    root: str | None = (
        None  # data folder (--data-dir and $MNIST_HPC_DATA_DIR take precedence); for folder: the image folder, one subfolder per class
    )
    image_size: int = 28  # folder only: images are resized to this side
    channels: Literal[1, 3] = 1  # folder only: 1 = greyscale, 3 = colour
    val_split: float | None = 0.1  # fraction of train held out for validation (null = none)
    batch_size: int = 128  # global training batch (split across ranks under DDP)
    eval_batch_size: int = 2000  # evaluation batch (no gradients: large is fast on a GPU; a CPU
    # evaluates in chunks of at most 512: training.evaluate.CPU_EVAL_CHUNK)
    subset: int | None = None  # train on the first N shuffled training images (quick runs)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # batched, on the device

    def check(self, err: Err) -> None:
        if self.dataset not in DATASETS and self.dataset != FOLDER:
            err("dataset", choices([*DATASETS, FOLDER]), self.dataset, [*DATASETS, FOLDER])
        if self.dataset == FOLDER and not self.root:
            err(
                "root",
                problem="dataset: folder needs data.root: the folder of images, one subfolder per class",
            )
        if self.dataset != FOLDER and (self.image_size, self.channels) != (28, 1):
            err(
                "image_size" if self.image_size != 28 else "channels",
                problem=f"only for dataset: folder ({self.dataset} images are 1x28x28)",
            )
        if not 8 <= self.image_size <= 512:
            err("image_size", "a side in pixels in [8, 512]", self.image_size)
        if self.val_split is not None and not 0 < self.val_split < 1:
            err("val_split", "a fraction strictly between 0 and 1 (or null for none)", self.val_split)
        if self.batch_size <= 0:
            err("batch_size", "a positive integer", self.batch_size)
        if self.eval_batch_size <= 0:
            err("eval_batch_size", "a positive integer", self.eval_batch_size)
        if self.subset is not None and self.subset <= 0:
            err("subset", "a positive number of images (or null for all)", self.subset)
        if self.augment.hflip and self.dataset in DATASETS and not DATASETS[self.dataset].mirror_safe:
            err(
                "augment.hflip",
                "false for " + self.dataset + " (a mirrored image changes its label); "
                "only " + ", ".join(n for n, d in DATASETS.items() if d.mirror_safe) + " may flip",
                True,
            )


@dataclass
class OptimConfig:
    name: str = "adamw"  # sgd | adam | adamw | adadelta
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0  # L2 (sgd, adam, adadelta) or decoupled (adamw)
    schedule: Literal["none", "step", "cosine", "onecycle"] = (
        "none"  # learning-rate shape: none | step | cosine | onecycle
    )
    step_size: int = 1  # step: epochs between decays
    gamma: float = 0.7  # step: decay factor
    pct_start: float = 0.25  # onecycle: fraction of training spent rising to lr
    warmup_epochs: float = 0.0  # linear warmup (none/step/cosine), may be fractional

    def check(self, err: Err) -> None:
        if self.name not in OPTIMIZERS:
            err("name", choices(OPTIMIZERS), self.name, OPTIMIZERS)
        if self.lr <= 0:
            err("lr", "a learning rate > 0", self.lr)
        if not 0 <= self.momentum < 1:
            err("momentum", "a number in [0, 1)", self.momentum)
        if self.weight_decay < 0:
            err("weight_decay", "a number >= 0", self.weight_decay)
        if self.step_size <= 0:
            err("step_size", "a positive number of epochs", self.step_size)
        if not 0 < self.gamma <= 1:
            err("gamma", "a factor in (0, 1]", self.gamma)
        if not 0 < self.pct_start < 1:
            err("pct_start", "a fraction in (0, 1)", self.pct_start)
        if self.warmup_epochs < 0:
            err("warmup_epochs", "a number of epochs >= 0", self.warmup_epochs)


OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta")


@dataclass
class EarlyStoppingConfig:
    patience: int | None = None  # epochs without improvement of val accuracy (null = off)
    min_delta: float = 0.0  # improvement smaller than this (in accuracy points, 0-1) does not count

    def check(self, err: Err) -> None:
        if self.patience is not None and self.patience <= 0:
            err("patience", "a positive number of epochs (or null to disable)", self.patience)
        if self.min_delta < 0:
            err("min_delta", "a number >= 0", self.min_delta)


@dataclass
class CheckpointConfig:
    every: float = 1  # save a checkpoint every N units (0 = only at the end)
    unit: Literal["epochs", "steps", "minutes"] = "epochs"  # what `every` counts: epochs | steps | minutes
    keep: int = 2  # how many recent checkpoints to keep (besides best.pt)

    def check(self, err: Err) -> None:
        if self.every < 0:
            err("every", "a number >= 0", self.every)
        if self.keep < 1:
            err("keep", "at least 1", self.keep)


@dataclass
class TrainConfig:
    epochs: int = 3  # passes over the training set
    amp: Literal["none", "bf16", "fp16", "auto"] = (
        "none"  # autocast precision: none | bf16 | fp16 (CUDA only, with a scaler) | auto (bf16 where the device computes it natively, else none)
    )
    compile: bool = False  # torch.compile the model (pays a compile time up front)
    grad_clip: float | None = None  # clip the gradient norm to this value (null = off)
    grad_accum: int = 1  # micro-batches per optimizer step (keeps a global batch on fewer devices)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    tta: bool = False  # test-time augmentation at the final test evaluation
    early_stopping: EarlyStoppingConfig = field(
        default_factory=EarlyStoppingConfig
    )  # stop when val accuracy stalls
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # when to save, how many to keep

    def check(self, err: Err) -> None:
        if self.epochs <= 0:
            err("epochs", "a positive integer", self.epochs)
        if self.grad_clip is not None and self.grad_clip <= 0:
            err("grad_clip", "a norm > 0 (or null)", self.grad_clip)
        if self.grad_accum < 1:
            err("grad_accum", "an integer >= 1", self.grad_accum)
        if not 0 <= self.label_smoothing < 1:
            err("label_smoothing", "a number in [0, 1)", self.label_smoothing)


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    threads: int | None = None  # CPU threads; null = $SLURM_CPUS_PER_TASK or the affinity mask
    deterministic: bool = False  # bit-reproducible runs (slower kernels on GPU)
    channels_last: bool = False  # NHWC memory format for conv nets (helps on tensor cores)
    requeue_signal: Literal["USR1", "USR2"] = (
        "USR1"  # USR1 | USR2: the signal that asks for checkpoint + requeue
    )
    max_requeues: int = 5  # automatic Slurm requeues before giving up
    dist_timeout: float = 300  # seconds before a hung collective (or rendezvous) fails

    def check(self, err: Err) -> None:
        if not valid_device(self.device):
            err("device", DEVICES_TEXT, self.device)
        if self.threads is not None and self.threads <= 0:
            err("threads", "a positive integer (or null for automatic)", self.threads)
        if self.max_requeues < 0:
            err("max_requeues", "an integer >= 0", self.max_requeues)
        if self.dist_timeout <= 0:
            err("dist_timeout", "seconds > 0", self.dist_timeout)


class LoadInfo:
    """What loading records about a config besides the config itself: instance attributes with
    class defaults, declared on this plain base class so that they are no dataclass fields of
    ``Config`` (not in its ``__init__``, ``to_dict()`` or comparisons)."""

    # What loading changed that the user did not write (e.g. keys dropped by a model switch);
    # one line each, set by ``load_config``; not part of the config itself.
    notes: tuple[str, ...] = ()
    source: str = "python"  # where it was loaded from (a path or a shipped name)


@dataclass
class Config(LoadInfo):
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(
        default_factory=CNNModel
    )  # the model: name + its parameters (`mnist-hpc models`)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def check(self, err: Err) -> None:
        """The rules that span sections."""
        shape = data_shape(self.data)
        if shape is not None:  # the head's width comes from the dataset
            self.model.check_size(lambda key, *a, **k: err(f"model.{key}", *a, **k), shape)
        if self.train.early_stopping.patience and not self.data.val_split:
            err(
                "train.early_stopping.patience",
                problem="early stopping needs a validation split: set "
                "data.val_split (e.g. 0.1) or train.early_stopping.patience: null",
            )

    def to_dict(self) -> dict[str, Any]:
        """The plain nested dict (``model`` as ``{"name": ..., **params}``), as run folders store it."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """Block YAML with each field's one-line comment (loads back to ``to_dict()``)."""
        return commented_yaml(self)


SECTIONS = [f.name for f in dataclasses.fields(Config)]
