"""The public Python API of what a user does before training (re-exported by ``mnist_hpc.api`` and,
lazily, by ``mnist_hpc``): the configs, models and datasets commands, `mnist-hpc config show`
(``load_config``), `configs`, `config validate`, `models [--torchvision]`, `models download`,
`summary`, `data list`, `data download` and `data verify`, as functions that return what the
command prints (``str()`` of a result is its line, ``.lines()`` its lines). ``mnist_hpc.api``'s
``train`` and ``submit`` take a config as ``_as_config`` / ``_validated_again`` here make it.

Each function raises the same one-line ``UserError`` (``ConfigError`` for config and usage
mistakes) the command prints. Nothing here imports torch at import time: each function imports
what it needs, when it is called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_hpc.errors import ConfigError, UserError

if TYPE_CHECKING:
    from mnist_hpc.config.datasets import DatasetSpec
    from mnist_hpc.config.schema import Config

DEFAULT_DATASETS = ("mnist", "fashion-mnist")  # what `data download`/`data verify` take by default


# --------------------------------------------------------------------------- configs


def load_config(source, overrides: Sequence[str] = ()):
    """A validated ``Config`` from a YAML path or a shipped config name (``"quickstart"``),
    with ``--set``-style ``overrides`` such as ``["optim.lr=0.01", "model.hidden=[256,64]"]``."""
    from mnist_hpc.config import load_config as _load
    from mnist_hpc.config.loading import as_overrides

    return _load(source, as_overrides(overrides))


def _as_config(config_or_source, overrides: Sequence[str]):
    """A validated ``Config`` from a Config, a plain dict, a path or a shipped config name;
    ``cfg.source`` says where it came from and ``cfg.notes`` what loading changed."""
    from mnist_hpc.config import Config, apply_overrides, config_from_dict
    from mnist_hpc.config.loading import as_overrides

    overrides = as_overrides(overrides)  # one string is one override, never its characters
    if isinstance(config_or_source, Config) and not overrides:
        return config_or_source
    if isinstance(config_or_source, (Config, dict)):
        base = config_or_source.to_dict() if isinstance(config_or_source, Config) else config_or_source
        origin = config_or_source.source if isinstance(config_or_source, Config) else "python dict"
        notes: list = []
        data = apply_overrides(base, tuple(overrides), notes)
        cfg = config_from_dict(data, source=origin + (" (with overrides)" if overrides else ""))
        cfg.notes, cfg.source = tuple(notes), origin
        return cfg
    return load_config(config_or_source, overrides)


def _validated_again(cfg):
    """A caller's ``Config`` checked again as a whole: fields set after loading (``cfg.model.hidden
    = [10**9]``) pass the same rules (types, ranges, MAX_PARAMS) as a file would."""
    from mnist_hpc.config import config_from_dict

    fresh = config_from_dict(cfg.to_dict(), source=f"{cfg.source} (as changed after loading)")
    fresh.notes, fresh.source = cfg.notes, cfg.source
    return fresh


@dataclass(frozen=True)
class ConfigList:
    """The shipped configs: ``.configs`` ({name: one-line purpose}, sorted by name; each usable by
    name anywhere a config is asked for) and the ``.folder`` they are in (sweeps in ``sweeps/``)."""

    configs: dict[str, str]
    folder: Path

    def lines(self) -> Iterator[str]:
        """What `mnist-hpc configs` prints."""
        for name, purpose in self.configs.items():
            yield f"{name:<12} {purpose}"
        yield f"(files in {self.folder}; sweeps in {self.folder / 'sweeps'})"


def list_configs() -> ConfigList:
    """The shipped configs, as `mnist-hpc configs` lists them."""
    from mnist_hpc.config import SHIPPED_DIR, shipped_configs

    return ConfigList(shipped_configs(), SHIPPED_DIR)


@dataclass(frozen=True)
class ConfigCheck:
    """What ``check_config`` found in one file: ``.ok``; for a sweep file ``.runs`` (how many runs
    it makes, each checked); for a custom or torchvision model ``.model`` and ``.params`` (built
    on the meta device); else ``.error`` (the one-line reason) and ``.detail`` (the frames of the
    user's own model code that failed, or ""). ``str()`` is the line `config validate` prints."""

    path: str
    ok: bool
    runs: int | None = None
    model: str | None = None
    params: int | None = None
    error: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        if not self.ok:
            return f"error {self.error}"
        if self.runs is not None:
            return f"ok    {self.path} ({self.runs:,} run{'' if self.runs == 1 else 's'})"
        return f"ok    {self.path}" + (
            f" ({self.model} model: {self.params:,} parameters)" if self.params else ""
        )


def check_config(path) -> ConfigCheck:
    """Check a config file or a sweep file (every run it makes), as `mnist-hpc config validate`
    does for each file it is given: a ``ConfigCheck`` (nothing raises for a bad file: ``.ok``,
    ``.error``). A custom or torchvision model is also built on torch's meta device (its
    parameters counted against MAX_PARAMS, no memory) and run once on a tiny batch (its output
    must be (N, classes)); built-in models are checked without torch."""
    from mnist_hpc.experiments.sweepfile import is_sweep_file, validate_sweep_file

    f = str(path)
    try:
        if is_sweep_file(path):
            return ConfigCheck(f, True, runs=validate_sweep_file(path))
        cfg = load_config(path)
        return ConfigCheck(f, True, model=cfg.model.name, params=_model_params(cfg))
    except ConfigError as e:  # its message names the file already
        return ConfigCheck(f, False, error=str(e), detail=getattr(e, "detail", ""))
    except UserError as e:
        return ConfigCheck(f, False, error=f"{f}: {e}")


def config_keys(model: str | None = None) -> dict[str, str]:
    """Every key a config (and ``--set``) takes, dotted, with its one-line comment; under
    ``model.`` the parameters of ``model`` (every model's when None or unknown). What the shell
    completion of ``--set`` offers."""
    import dataclasses

    from mnist_hpc.config import MODEL_SPECS, Config
    from mnist_hpc.config.dump import field_comments
    from mnist_hpc.config.models import ModelSection
    from mnist_hpc.config.validate import field_type

    keys: dict[str, str] = {}

    def walk(cls, prefix: str) -> None:
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            tp = field_type(cls, f.name)
            if isinstance(tp, type) and issubclass(tp, ModelSection):
                keys[f"{prefix}{f.name}.name"] = field_comments(ModelSection).get("name", "")
                chosen = [MODEL_SPECS[model]] if model in MODEL_SPECS else list(MODEL_SPECS.values())
                for spec in chosen:
                    walk_params(spec.section, f"{prefix}{f.name}.")
            elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                keys[f"{prefix}{f.name}"] = comments.get(f.name, "")

    def walk_params(section, prefix: str) -> None:
        comments = field_comments(section)
        for f in dataclasses.fields(section):
            if f.name != "name":
                keys.setdefault(f"{prefix}{f.name}", comments.get(f.name, ""))

    walk(Config, "")
    return keys


def config_model(source=None, sweep_file=None) -> str | None:
    """The model name a config file (or shipped config name) ``source`` trains, or else that of
    ``sweep_file``'s base config, read without validating (the default model where the file names
    none); None when neither is given or a sweep file has no ``base:``."""
    from mnist_hpc.config import find_config, load_raw, read_yaml
    from mnist_hpc.config.models import ModelSection

    if not source and sweep_file:
        sweep = read_yaml(Path(sweep_file))
        if not isinstance(sweep, dict) or "base" not in sweep:
            return None
        source = find_config(sweep["base"], relative_to=Path(sweep_file).parent)
    if not source:
        return None
    model = load_raw(source).get("model")
    return model.get("name", ModelSection.default) if isinstance(model, dict) else ModelSection.default


def list_clusters() -> dict[str, str]:
    """The cluster profiles ``--cluster`` takes (built in, and the user's
    ~/.config/mnist-hpc/clusters.yaml), each with its one-line description, sorted by name."""
    from mnist_hpc.cluster.profiles import load_profiles

    profiles, _ = load_profiles()
    return {name: p.description or "" for name, p in sorted(profiles.items())}


def _model_params(cfg: Config) -> int | None:
    """Build and probe a custom/torchvision model (None for built-ins: the validator counted them)."""
    if cfg.model.source == "builtin":
        return None
    return _prepared(cfg)[0].params


def _prepared(cfg: Config):
    """(the ``PreparedModel`` of ``cfg``, its data shape), refused for an image folder that is not there."""
    from mnist_hpc.config.datasets import data_shape
    from mnist_hpc.training.models import prepare_model

    shape = data_shape(cfg.data)
    if shape is None:
        raise ConfigError(f"data.root: {cfg.data.root}: not a folder of class subfolders")
    return prepare_model(cfg, shape), shape


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelInfo:
    """One model: its ``name`` (``model.name``), ``params`` (for MNIST; None for ``custom`` and
    ``torchvision``, counted once built) and ``description``."""

    name: str
    params: int | None
    description: str

    def __str__(self) -> str:
        return f"{self.name:<12} {f'{self.params:,}' if self.params is not None else '(built)':>12}  {self.description}"


@dataclass(frozen=True)
class ModelList:
    """The models: ``.models`` (the built-in nets, ``custom`` and ``torchvision``) and, when asked
    for, ``.torchvision`` ({arch: parameters} of the torchvision.models classifiers that fit
    MAX_PARAMS for 10 classes of 1x28x28, counted on the meta device) and ``.uncounted`` (the
    arches whose set-up needs real weights, so not counted unbuilt)."""

    models: list[ModelInfo]
    torchvision: dict[str, int] | None = None
    uncounted: list[str] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        """What `mnist-hpc models [--torchvision]` prints."""
        yield f"{'name':<12} {'params':>12}  description"
        yield from map(str, self.models)
        if self.torchvision is None:
            return
        yield (
            "\ntorchvision.models that fit MAX_PARAMS (model: {name: torchvision, arch: ARCH}), for 10 "
            "classes of 1x28x28, counted on the meta device; cost per epoch: not measured here "
            "(`mnist-hpc bench throughput` measures a config):"
        )
        for arch, n in self.torchvision.items():
            yield f"  {arch:<28} {n:>12,}"
        if self.uncounted:
            yield (
                f"  not counted here (their set-up needs real weights; `mnist-hpc config validate` builds "
                f"them): {', '.join(self.uncounted)}"
            )


def list_models(torchvision: bool = False) -> ModelList:
    """The models a config can name, as `mnist-hpc models` lists them (torch-free);
    ``torchvision``: also the torchvision.models classifiers that fit (`models --torchvision`)."""
    from mnist_hpc.config.models import MODEL_SPECS

    found = [
        ModelInfo(name, spec.section().param_count(), spec.description) for name, spec in MODEL_SPECS.items()
    ]
    if not torchvision:
        return ModelList(found)
    fit, uncounted = _torchvision_fit()
    return ModelList(found, fit, uncounted)


def _torchvision_fit() -> tuple[dict[str, int], list[str]]:
    """({arch: parameters} of those that fit MAX_PARAMS, the arches not countable unbuilt)."""
    import torch

    from mnist_hpc.config.datasets import MNIST_SHAPE
    from mnist_hpc.config.models import MAX_PARAMS, TorchvisionModel
    from mnist_hpc.training.models import build_model, torchvision_arches

    fit: dict[str, int] = {}
    skipped = []
    for arch in torchvision_arches():
        try:
            with torch.device("meta"):
                m = build_model(TorchvisionModel(arch=arch), MNIST_SHAPE, load_weights=False)
        except NotImplementedError:  # its initialisation reads values (RegNet): not countable unbuilt
            skipped.append(arch)
            continue
        n = sum(p.numel() for p in m.parameters())
        if n <= MAX_PARAMS:
            fit[arch] = n
    return fit, skipped


@dataclass(frozen=True)
class Weights:
    """What ``download_weights`` did: the ``arch``, the ``weights`` name, the file in the torch hub
    cache (``.path``) and whether it was ``.downloaded`` now (False: already there)."""

    arch: str
    weights: str
    path: Path
    downloaded: bool

    def __str__(self) -> str:
        return f"{'downloaded' if self.downloaded else 'already there'}: {self.arch} {self.weights} -> {self.path}"


def download_weights(arch: str, weights: str = "DEFAULT") -> Weights:
    """Fetch the pretrained ``weights`` of torchvision's ``arch`` into the torch hub cache
    ($TORCH_HOME/hub/checkpoints), checked against the digest in the file's name, as `mnist-hpc
    models download` does (on a machine with internet: jobs read them from there and never
    download). An unknown arch or weights name is a ConfigError naming what exists."""
    from mnist_hpc.training import models

    path, fetched = models.download_weights(arch, weights)
    return Weights(arch, weights, path, fetched)


@dataclass(frozen=True)
class ModelSummary:
    """The layer table of a config's model (``.text``, what `mnist-hpc summary` prints: output
    shapes, parameters, size), its ``.title`` and ``.params``."""

    text: str
    title: str
    params: int

    def __str__(self) -> str:
        return self.text


def model_summary(config_or_source, overrides: Sequence[str] = ()) -> ModelSummary:
    """The layer table of the model a config describes, as `mnist-hpc summary` prints it (the
    model is built on the CPU, run once on one image). ``config_or_source``: a ``Config``, a dict,
    a YAML path or a shipped config name, with ``--set``-style ``overrides``."""
    from mnist_hpc.training.models import summary_text

    cfg = _as_config(config_or_source, overrides)
    if cfg is config_or_source:  # a caller's Config: its fields may have changed after loading
        cfg = _validated_again(cfg)
    prepared, shape = _prepared(cfg)
    model = prepared.build()
    title = f"{cfg.model.name} ({cfg.experiment.name})"
    return ModelSummary(summary_text(model, title, (1, *shape.input_shape)), title, prepared.params)


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetList:
    """The datasets the registry knows (``.datasets``, each with ``.name``, ``.description``,
    ``.classes``); ``check(names)`` refuses an unknown name as `--dataset` does."""

    datasets: list[DatasetSpec]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datasets]

    def lines(self) -> Iterator[str]:
        """What `mnist-hpc data list` prints."""
        for d in self.datasets:
            yield f"{d.name:<14} {d.description}"

    def check(self, names: Sequence[str] = ()) -> tuple[str, ...]:
        """``names`` (default: mnist and fashion-mnist), each a known dataset, else a ConfigError
        naming the closest one and every one there is."""
        from mnist_hpc.config import did_you_mean

        if isinstance(names, str):
            names = (names,)
        known = self.names
        for v in names:
            if v not in known:
                raise ConfigError(
                    f"unknown dataset {v!r}{did_you_mean(v, known)}; expected one of {', '.join(known)}"
                )
        return tuple(names) or DEFAULT_DATASETS


def list_datasets() -> DatasetList:
    """The datasets a config can name (``data.dataset``), as `mnist-hpc data list` lists them."""
    from mnist_hpc.config.datasets import DATASETS

    return DatasetList(list(DATASETS.values()))


@dataclass(frozen=True)
class DatasetReady:
    """One dataset ``prepare_data`` made ready: its ``name``, its ``folder``, whether it was
    ``already`` there, and the data folder with why that one (``--data-dir``,
    ``$MNIST_HPC_DATA_DIR``, the user cache). ``str()`` is the line `data download` prints."""

    name: str
    folder: Path
    already: bool
    data_dir: str
    data_dir_from: str

    def __str__(self) -> str:
        if self.already:
            return f"{self.name}: already present in {self.folder}"
        return f"{self.name}: ready in {self.folder} ({self.data_dir_from})"


def prepare_data(
    datasets: Sequence[str] = (), *, data_dir=None, download: bool | None = None
) -> list[DatasetReady]:
    """Download (or unpack local archives of) ``datasets`` (default: mnist and fashion-mnist),
    MD5-checked by torchvision, as `mnist-hpc data download` does; ``data_dir`` beats
    $MNIST_HPC_DATA_DIR and the user cache. ``download``: None (default) = unless inside a Slurm
    job (compute nodes have no internet: there only local archives are unpacked)."""
    from mnist_hpc.config.datasets import resolve_data_root
    from mnist_hpc.training import data

    names = list_datasets().check(datasets)
    root, why = resolve_data_root(data_dir)
    if download is None:
        from mnist_hpc.cluster import env as job_env

        download = not job_env.current().in_job
    done = data.prepare_all(names, root, download=download, from_download=True)
    return [DatasetReady(name, Path(folder), present, root, why) for name, folder, present in done]


@dataclass(frozen=True)
class DataFile:
    """One file (or unpacked folder) ``verify_data`` checked: its ``dataset``, ``path``, whether it
    is ``ok``, and the ``note`` (md5 ok, missing, the checksum found, ...). ``str()`` is its line."""

    dataset: str
    path: str
    ok: bool
    note: str

    def __str__(self) -> str:
        return f"{'ok ' if self.ok else 'BAD'}  {self.dataset:<14} {self.path}  {self.note}"


@dataclass(frozen=True)
class DataCheck:
    """What ``verify_data`` found: ``.files`` (one ``DataFile`` each), the data folder and why
    that one, and ``.problem``: None when everything is there and sound, else the one-line error
    `data verify` ends with (what is missing or damaged, and what to run)."""

    files: list[DataFile]
    data_dir: str
    data_dir_from: str
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def lines(self) -> Iterator[str]:
        """What `mnist-hpc data verify` prints on stdout (``.problem`` goes to stderr)."""
        return map(str, self.files)


def verify_data(
    datasets: Sequence[str] = (), *, data_dir=None, echo: Callable[[str], None] | None = None
) -> DataCheck:
    """Check the archives of ``datasets`` (default: mnist and fashion-mnist) against their MD5
    sums and that the unpacked files load, as `mnist-hpc data verify` does; ``echo`` gets each
    file's line as it is checked. Returns a ``DataCheck``; nothing raises for missing or damaged
    files: ``.problem`` says what they are (the command prints it as its error and exits 1)."""
    from mnist_hpc.config.datasets import DATASETS, resolve_data_root
    from mnist_hpc.training import data

    names = list_datasets().check(datasets)
    root, why = resolve_data_root(data_dir)
    files: list[DataFile] = []
    missing: list[str] = []
    damaged: list[str] = []
    memory = 0
    for name in names:
        for path, ok, note in data.verify(DATASETS[name], root):
            if not ok:
                if "ran out of memory" in note:
                    memory += 1  # the files were not judged
                else:
                    (missing if note == "missing" else damaged).append(name)
            files.append(DataFile(name, path, ok, note))
            if echo is not None:
                echo(str(files[-1]))
    return DataCheck(files, root, why, _data_problem(root, why, missing, damaged, memory))


def _data_problem(root: str, why: str, missing: list[str], damaged: list[str], memory: int) -> str | None:
    """The one line `data verify` ends with, or None when every file is there and sound."""
    if memory and not (missing or damaged):
        return (
            f"{root}: ran out of memory checking {memory} dataset(s), so their files were not "
            f"judged (nothing to delete): free memory and run `mnist-hpc data verify` again"
        )
    if not (missing or damaged):
        return None
    absent = sorted(set(missing) - set(damaged))
    fetch = " ".join(f"--dataset {n}" for n in sorted(set(missing) | set(damaged)))
    parts = (
        ([f"{', '.join(absent)} missing"] if absent else [])
        + (
            [f"{len(damaged)} damaged file(s) in {', '.join(sorted(set(damaged)))} (delete them first)"]
            if damaged
            else []
        )
        + ([f"{memory} not judged (out of memory: not damaged)"] if memory else [])
    )
    return (
        f"under {root} ({why}): {'; '.join(parts)}: run `mnist-hpc data download {fetch}` "
        f"(on a cluster, on a login node), or point --data-dir or $MNIST_HPC_DATA_DIR "
        f"at a folder that holds them"
    )
