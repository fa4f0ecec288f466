"""A sweep as submitted: its file and its base config copied into the sweep's job folder.

The array tasks of ``sweep submit`` read the copy (``<folder>/sweep.yaml``, whose ``base:`` is
``<folder>/base.yaml``), never the user's files, so editing those after submitting cannot
change a task that has not started yet. The command line's ``--set`` values are folded into the
copy's ``set:``, so a task needs nothing beyond its index. Before anything is queued the copy is
loaded back and checked to make exactly the runs of the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mnist_hpc.config import apply_overrides, read_yaml
from mnist_hpc.config.schema import Config
from mnist_hpc.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a sweep is read only when one is submitted
    from mnist_hpc.experiments.sweepfile import Sweep
    from mnist_hpc.training.usercode import ModelCode

SWEEP_FILE = "sweep.yaml"
BASE_FILE = "base.yaml"


def _dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)


def _covered(key: str, later: str) -> bool:
    """Whether setting ``later`` replaces everything setting ``key`` did."""
    return key == later or key.startswith(later + ".")


def _shared_values(sweep: Sweep) -> dict[str, Any]:
    """The sweep's shared overrides (the file's ``set:``, then ``--set``) as ``{dotted key: value}``,
    each value as applying it stored it (``--set experiment.name=on`` stays the string 'on')."""
    applied = apply_overrides(sweep.base_raw, sweep.fixed)
    keys = [text.partition("=")[0].strip() for text in sweep.fixed]
    out: dict[str, Any] = {}
    for i, key in enumerate(keys):
        if any(_covered(key, later) for later in keys[i + 1 :]):
            continue  # a later override replaces this one as a whole
        node = applied
        for part in key.split("."):
            node = node[part]
        out.pop(key, None)  # keep the order of application: a repeated key goes last
        out[key] = node
    return out


def texts(sweep: Sweep, overrides: Sequence[str] = ()) -> dict[str, str]:
    """``{file name: text}`` of the snapshot of ``sweep`` (a loaded ``Sweep``; ``overrides``: the
    command line's --set values it was loaded with, for the header)."""
    data = read_yaml(sweep.path)
    when = datetime.now().astimezone().isoformat(timespec="seconds")
    copy: dict[str, Any] = {"base": BASE_FILE, "name": sweep.name}
    copy.update({k: v for k, v in data.items() if k not in ("base", "name", "set")})
    carried = _axis_code(sweep, data)
    for section in ("grid", "zip"):
        values = copy.get(section, {}).get("model.file") if isinstance(copy.get(section), dict) else None
        if isinstance(values, list):  # each model file the axes name, read from its copy beside sweep.yaml
            copy[section] = {
                **copy[section],
                "model.file": [carried[v][1] if v in carried else v for v in values],
            }
    shared = _shared_values(sweep)
    if shared:
        copy["set"] = shared
    given = "".join(f" --set {text}" for text in overrides)
    sweep_text = (
        f"# The sweep {sweep.name} as submitted at {when}: a copy of {sweep.path}{given}\n"
        f"# (command-line --set folded into set:). The job array reads this file and\n"
        f"# {BASE_FILE} beside it; edits to the originals do not change it.\n" + _dump(copy)
    )
    base = sweep.base_raw
    code = _base_code(sweep)
    if code is not None:  # the job reads the model file's copy beside base.yaml
        base = {**base, "model": {**base["model"], "file": f"{CODE_DIR}/{code.name}"}}
    base_text = (
        f"# The base config of the sweep {sweep.name} as submitted at {when}:\n"
        f"# {sweep.base} with its extends: merged.\n" + _dump(base)
    )
    return {SWEEP_FILE: sweep_text, BASE_FILE: base_text}


CODE_DIR = "model"  # a custom model's file, copied beside base.yaml


def _axis_code(sweep: Sweep, data: dict[str, Any]) -> dict[str, tuple[ModelCode, str]]:
    """{a model.file value of the sweep file's grid/zip: (its code, the copy's path beside sweep.yaml)}."""
    import os

    from mnist_hpc.training.usercode import read_code

    out: dict[str, tuple[ModelCode, str]] = {}
    for section in ("grid", "zip"):
        values = (data.get(section) or {}).get("model.file") if isinstance(data.get(section), dict) else None
        for v in values if isinstance(values, list) else []:
            if isinstance(v, str) and v not in out:
                code = read_code(
                    os.path.join(os.path.dirname(os.path.abspath(sweep.path)), os.path.expanduser(v))
                )
                out[v] = (code, f"{CODE_DIR}/{code.sha256[:12]}/{code.name}")
    return out


def _base_code(sweep: Sweep) -> ModelCode | None:
    """The custom model file the sweep's base config names (None for other models)."""
    model = sweep.base_raw.get("model") if isinstance(sweep.base_raw, dict) else None
    if not (isinstance(model, dict) and model.get("name") == "custom" and model.get("file")):
        return None
    from mnist_hpc.training.usercode import read_code

    return read_code(model["file"])


def write(sweep: Sweep, folder: str | Path, overrides: Sequence[str] = ()) -> Path:
    """Write the snapshot of ``sweep`` into ``folder``, check it, return the sweep file's path.
    Raises ``ConfigError`` if the copy would make other runs than the original (a bug)."""
    from mnist_hpc.experiments.sweepfile import load_sweep
    from mnist_hpc.runs.folder import atomic_write

    folder = Path(folder)
    code = _base_code(sweep)
    if code is not None:
        (folder / CODE_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write(folder / CODE_DIR / code.name, code.text)
    for axis_code, rel in _axis_code(sweep, read_yaml(sweep.path)).values():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / rel, axis_code.text)
    for name, text in texts(sweep, overrides).items():
        atomic_write(folder / name, text)
    path = folder / SWEEP_FILE
    copy = load_sweep(path, validate=False)
    check_same(sweep, copy)
    return path


def _comparable(cfg: Config) -> dict[str, Any]:
    """A run's config with a custom model's file as its content's digest (the copy is elsewhere)."""
    data = cfg.to_dict()
    if data.get("model", {}).get("name") == "custom" and data["model"].get("file"):
        from mnist_hpc.training.usercode import read_code

        data["model"] = {**data["model"], "file": read_code(data["model"]["file"]).sha256}
    return data


def check_same(original: Sweep, copy: Sweep) -> None:
    """Refuse a snapshot that would not run the same runs into the same folders."""
    problem = None
    if (copy.name, copy.count, copy.output_dir) != (original.name, original.count, original.output_dir):
        problem = (
            f"{copy.name}: {copy.count} runs into {copy.output_dir} instead of {original.name}: "
            f"{original.count} into {original.output_dir}"
        )
    else:
        for a, b in zip(original.runs, copy.runs, strict=False):
            if a.name != b.name or _comparable(a.config) != _comparable(b.config):
                problem = f"run {a.index} ({a.name}) differs"
                break
    if problem:
        raise ConfigError(
            f"{original.path}: the copy of the sweep for the job array would not run the "
            f"same runs ({problem}); please report this"
        )
