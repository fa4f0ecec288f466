"""Optional packages a config (or a command) needs, and the pip extra that brings them.

Experiment trackers (``experiment.loggers``) and model export need packages that a plain install
lacks. A config asking for a logger whose package is missing fails when it is loaded, before any
job is queued, with one line naming the extra to install; job scripts install what
``required_packages(cfg)`` lists. The table below is the one place that says which package a
feature needs (tests check that pyproject.toml's extras agree). Never imports the packages
themselves: ``importlib.util.find_spec`` only looks for them.
"""

from __future__ import annotations

import importlib.util
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mnist_hpc.errors import ConfigError, UserError

if TYPE_CHECKING:
    from mnist_hpc.config.schema import Config

# experiment.loggers' values: the one list (what each needs is in NEEDS below); csv is always on
LoggerName = Literal["csv", "tensorboard", "wandb", "mlflow"]
LOGGERS: tuple[LoggerName, ...] = typing.get_args(LoggerName)

# what ``pip install`` a compute node's job needs for any config (the project's dependencies)
BASE_PACKAGES = ("torch", "torchvision", "numpy", "pyyaml", "click", "tqdm", "matplotlib")


@dataclass(frozen=True)
class Need:
    module: str  # what is imported
    package: str  # what pip installs (a requirement name, no version)
    extra: str  # the mnist-hpc extra that brings it


NEEDS = {
    "tensorboard": (Need("tensorboard", "tensorboard", "tracking"),),
    # mlflow-skinny: the tracking client and the file store, without the server's ~800 MB of
    # dependencies (pandas, pyarrow, scikit-learn, flask, sqlalchemy...)
    "mlflow": (Need("mlflow", "mlflow-skinny", "tracking"),),
    "wandb": (Need("wandb", "wandb", "tracking"),),
    # torch.onnx.export (the dynamo exporter) writes through onnxscript; onnxruntime runs the file
    "onnx": (
        Need("onnx", "onnx", "export"),
        Need("onnxscript", "onnxscript", "export"),
        Need("onnxruntime", "onnxruntime", "export"),
    ),
    "onnxruntime": (Need("onnxruntime", "onnxruntime", "export"),),  # running an exported .onnx file
    # sweep files with method: optuna (the journal-file study), and its CMA-ES sampler
    "optuna": (Need("optuna", "optuna", "search"),),
    "cmaes": (Need("cmaes", "cmaes", "search"),),
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a module stubbed out with None
        return False


def missing(feature: str) -> list[Need]:
    """The packages ``feature`` (a logger or an export format) needs that are not installed."""
    return [n for n in NEEDS.get(feature, ()) if not installed(n.module)]


def install_hint(needs: list[Need]) -> str:
    """``pip install 'mnist-hpc[tracking]' (or just: pip install wandb)``."""
    extras = ",".join(dict.fromkeys(n.extra for n in needs))
    packages = " ".join(n.package for n in needs)
    return f"pip install 'mnist-hpc[{extras}]' (or just: pip install {packages})"


def require(feature: str, what: str) -> None:
    """Raise one line (a ``UserError``) when ``feature``'s packages are missing; ``what`` names
    the thing that needs them (``"experiment.loggers: wandb"``, ``"--format onnx"``)."""
    lacking = missing(feature)
    if lacking:
        names = ", ".join(n.module for n in lacking)
        raise UserError(
            f"{what} needs {names}, which {'is' if len(lacking) == 1 else 'are'} not installed: "
            f"{install_hint(lacking)}"
        )


def check_extras(cfg: Config, source: str | None = None) -> None:
    """Refuse a config whose loggers need packages that are not installed (one ``ConfigError``
    line naming the extra, after ``source``: default the config's). Called by ``load_config``,
    sweep files and training; call it before queueing a ``Config`` built another way."""
    source = source if source is not None else getattr(cfg, "source", "")
    for name in cfg.experiment.loggers:
        try:
            require(name, f"experiment.loggers: {name}")
        except UserError as e:
            raise ConfigError(f"{source}: {e}" if source and source != "python" else str(e)) from None


def extra_packages(cfg: Config) -> list[str]:
    """The packages beyond the base dependencies that ``cfg`` needs (e.g. ``["wandb"]``)."""
    return list(dict.fromkeys(n.package for name in cfg.experiment.loggers for n in NEEDS.get(name, ())))


def search_packages(sampler: str) -> list[str]:
    """What a job running workers of a ``method: optuna`` study installs beyond a config's needs."""
    return [
        n.package for name in ("optuna", "cmaes") if name == "optuna" or sampler == name for n in NEEDS[name]
    ]


def required_packages(cfg: Config) -> list[str]:
    """Everything a job running ``cfg`` must ``pip install``: the base dependencies, then the
    packages of the loggers it uses. (For the cluster layer's job scripts.)"""
    return [*BASE_PACKAGES, *extra_packages(cfg)]
