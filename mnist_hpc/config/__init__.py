"""Experiment configuration: typed schema, YAML loading with ``extends:``, ``--set`` overrides.

One dataclass per concern (``schema.py``, and one per model in ``models.py``); every field has
a default and a one-line comment. Loading is strict: unknown keys, wrong types and out-of-range
values raise ``ConfigError`` naming the file, the key path and what was expected (with a
did-you-mean for typos). YAML is read by one bounded safe loader (``yamlio.py``), mappings are
checked by one validator (``validate.py``), ``extends:`` is resolved by one resolver
(``loading.py``). This package never imports torch.

    from mnist_hpc.config import load_config
    cfg = load_config("quickstart", ["train.epochs=1", "model.name=cnn"])
    cfg.model.name, cfg.model.params(), cfg.to_dict()
"""

from mnist_hpc.config.loading import (
    MAX_EXTENDS_DEPTH,
    apply_overrides,
    config_from_dict,
    flatten,
    load_config,
    load_raw,
    merge,
    merge_configs,
    parse_override,
    resolve_extends,
)
from mnist_hpc.config.models import (
    MAX_PARAMS,
    MODEL_SPECS,
    CNNModel,
    FastModel,
    LeNet5Model,
    MLPModel,
    ModelSection,
    ModelSpec,
    ResNet18Model,
)
from mnist_hpc.config.schema import (
    OPTIMIZERS,
    SECTIONS,
    AugmentConfig,
    CheckpointConfig,
    Config,
    DataConfig,
    EarlyStoppingConfig,
    ExperimentConfig,
    OptimConfig,
    RuntimeConfig,
    TrainConfig,
)
from mnist_hpc.config.shipped import SHIPPED_DIR, find_config, shipped_configs
from mnist_hpc.config.validate import Tagged, build_section, coerce, did_you_mean, show
from mnist_hpc.config.yamlio import MAX_BYTES, MAX_DEPTH, MAX_NODES, cut, read_yaml, yaml_load
from mnist_hpc.errors import ConfigError

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_EXTENDS_DEPTH",
    "MAX_NODES",
    "MAX_PARAMS",
    "MODEL_SPECS",
    "OPTIMIZERS",
    "SECTIONS",
    "SHIPPED_DIR",
    "AugmentConfig",
    "CNNModel",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EarlyStoppingConfig",
    "ExperimentConfig",
    "FastModel",
    "LeNet5Model",
    "MLPModel",
    "ModelSection",
    "ModelSpec",
    "OptimConfig",
    "ResNet18Model",
    "RuntimeConfig",
    "Tagged",
    "TrainConfig",
    "apply_overrides",
    "build_section",
    "coerce",
    "config_from_dict",
    "cut",
    "did_you_mean",
    "find_config",
    "flatten",
    "load_config",
    "load_raw",
    "merge",
    "merge_configs",
    "parse_override",
    "read_yaml",
    "resolve_extends",
    "shipped_configs",
    "show",
    "yaml_load",
]
