"""Sweep files: a base config plus axes, expanded into a list of runs; and the local runner.

A sweep file is YAML::

    base: ../quickstart.yaml        # the config every run starts from (relative to this file)
    name: learning_rate             # optional; default: the file name without .yaml
    set: {train.epochs: 3}          # optional: overrides shared by every run
    grid: {optim.lr: [0.1, 0.01]}   # cartesian product of the lists
    zip: {model.name: [...], optim.lr: [...]}   # lists of equal length, varied together
    random: {count: 8, seed: 0, params: {optim.lr: {loguniform: [1e-4, 1e-1]}}}
    seeds: [0, 1, 2]                # or {repeat: 3}: repeat every run with these experiment.seed

Axes combine as a product (grid x zip x random x seeds, the seed varying fastest). Every run is
a list of ``--set`` overrides on the base config, validated at load time with the config's own
rules, and a readable folder name made from its values (``lr=0.01_bs=64_seed=1``). Runs go to
``<experiment.output_dir>/sweeps/<sweep name>/<run name>/``. This module never imports torch.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from mnist_hpc.config import (
    Config, ConfigError, apply_overrides, config_from_dict, did_you_mean, load_raw, read_yaml,
)

SWEEP_KEYS = ("base", "name", "set", "grid", "zip", "random", "seeds")
RANDOM_KEYS = ("count", "seed", "params")
DISTRIBUTIONS = ("loguniform", "uniform", "int_uniform", "choice")
SEED_KEY = "experiment.seed"

# Short labels for run names; any other key is named by its last part (``model.hidden`` ->
# ``hidden``), or in full where two axes of a sweep would share that last part.
SHORT_NAMES = {
    "optim.lr": "lr",
    "data.batch_size": "bs",
    "optim.weight_decay": "wd",
    "experiment.seed": "seed",
    "data.dataset": "data",
    "optim.name": "optim",
    "model.name": "model",
}
MAX_NAME_LENGTH = 120  # run folder names stay far below the usual 255-byte limit

# The command that trains one run; tests point it at a stand-in script.
TRAIN_COMMAND = [sys.executable, "-m", "mnist_hpc", "train"]


@dataclass(frozen=True, eq=False)
class SweepRun:
    index: int  # position in the sweep, 0-based (the Slurm array task id)
    name: str  # readable, filesystem-safe and unique within the sweep
    params: dict  # the axis values of this run, {dotted key: value}, in axis order
    overrides: list  # every --set KEY=VALUE for `train BASE`: the shared ones, then the params
    run_dir: Path  # <sweep output_dir>/<name>
    config: Config = field(repr=False)  # the resolved config of this run


@dataclass(eq=False)
class Sweep:
    name: str
    path: Path  # the sweep file
    base: Path  # the base config file
    fixed: list  # overrides shared by every run: the file's `set:`, then the command line's --set
    axes: list  # the dotted keys that vary
    runs: list  # [SweepRun]
    output_dir: Path  # <base experiment.output_dir>/sweeps/<name>

    def train_argv(self, run: SweepRun, data_dir=None, extra_overrides=()) -> list[str]:
        """The argv that trains ``run`` into its own folder (an argv list, never a shell string)."""
        argv = [*TRAIN_COMMAND, str(self.base)]
        for text in [*run.overrides, *extra_overrides]:
            argv += ["--set", text]
        argv += ["--run-dir", str(run.run_dir)]
        if data_dir:
            argv += ["--data-dir", str(data_dir)]
        return argv


# --------------------------------------------------------------------------- values


def dump_value(value) -> str:
    """A value as compact YAML for ``--set KEY=VALUE`` (it reads back as the same value)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False)
    text = text.strip()
    return text[: -len("...")].strip() if text.endswith("\n...") else text


def name_value(value) -> str:
    """A value as it appears in a run name: 0.001 -> 0.001, [256, 64] -> 256-64, {name: mlp} -> mlp."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(name_value(v) for v in value) or "none"
    if isinstance(value, dict):
        return "-".join(name_value(v) for v in value.values()) or "none"
    if value is None:
        return "null"
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]+", "-", text).strip("-") or "run"


def _short_names(keys: list[str]) -> dict[str, str]:
    short = {k: SHORT_NAMES.get(k, k.rsplit(".", 1)[-1]) for k in keys}
    clashing = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {k: (k if s in clashing else s) for k, s in short.items()}


def _run_names(params_list: list[dict], keys: list[str]) -> list[str]:
    short = _short_names(keys)
    names = []
    for params in params_list:
        name = _safe("_".join(f"{short[k]}={name_value(v)}" for k, v in params.items()))
        names.append(name[:MAX_NAME_LENGTH])
    seen: dict[str, int] = {}
    unique = []
    for name in names:  # repeated values (e.g. a random choice drawn twice) get a suffix
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


# --------------------------------------------------------------------------- loading


class _Reader:
    """Checks the parts of one sweep file; every message names the file."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, msg: str):
        raise ConfigError(f"{self.path}: {where}: {msg}")

    def mapping(self, where: str, value, what: str) -> dict:
        if not isinstance(value, dict) or not value:
            self.fail(where, f"expected a mapping of {what}, got {value!r}")
        for key in value:
            if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
                self.fail(where, f"{key!r} is not a dotted config key such as optim.lr")
        return value

    def values(self, where: str, value) -> list:
        if not isinstance(value, list):
            self.fail(where, f"expected a list of values, got {value!r}")
        if not value:
            self.fail(where, "empty list: give at least one value")
        return value


def _flatten_set(value: dict, prefix: str = "") -> dict:
    """``set: {train: {epochs: 1}}`` and ``set: {train.epochs: 1}`` mean the same."""
    out = {}
    for key, v in value.items():
        dotted = f"{prefix}{key}"
        if isinstance(v, dict) and dotted != "model":
            out.update(_flatten_set(v, dotted + "."))
        else:
            out[dotted] = v
    return out


def _grid(reader: _Reader, spec) -> list[dict]:
    spec = reader.mapping("grid", spec, "config keys to lists of values")
    lists = {k: reader.values(f"grid: {k}", v) for k, v in spec.items()}
    return [dict(zip(lists, combo)) for combo in itertools.product(*lists.values())]


def _zip(reader: _Reader, spec) -> list[dict]:
    spec = reader.mapping("zip", spec, "config keys to lists of equal length")
    lists = {k: reader.values(f"zip: {k}", v) for k, v in spec.items()}
    lengths = {k: len(v) for k, v in lists.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        reader.fail("zip", f"the lists must have the same length ({detail})")
    return [dict(zip(lists, row)) for row in zip(*lists.values())]


def _bounds(reader: _Reader, where: str, value, integer: bool = False) -> tuple:
    kind = "integers" if integer else "numbers"
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
          and (not integer or all(isinstance(v, int) for v in value)))
    if not ok:
        reader.fail(where, f"expected [low, high] ({kind}), got {value!r}")
    low, high = value
    if low > high:
        reader.fail(where, f"low must not exceed high, got {value!r}")
    return low, high


def _sampler(reader: _Reader, key: str, spec) -> Callable[[random.Random], Any]:
    where = f"random: params: {key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        reader.fail(where, f"expected one of {{{': ..., '.join(DISTRIBUTIONS)}: ...}}, got {spec!r}")
    (kind, arg), = spec.items()
    if kind == "choice":
        options = reader.values(f"{where}: choice", arg)
        return lambda rng: rng.choice(options)
    if kind == "int_uniform":
        low, high = _bounds(reader, f"{where}: int_uniform", arg, integer=True)
        return lambda rng: rng.randint(low, high)
    if kind == "uniform":
        low, high = _bounds(reader, f"{where}: uniform", arg)
        return lambda rng: _round(rng.uniform(low, high))
    if kind == "loguniform":
        low, high = _bounds(reader, f"{where}: loguniform", arg)
        if low <= 0:
            reader.fail(f"{where}: loguniform", f"the bounds must be > 0, got {arg!r}")
        return lambda rng: _round(math.exp(rng.uniform(math.log(low), math.log(high))))
    reader.fail(where, f"unknown distribution {kind!r}{did_you_mean(kind, DISTRIBUTIONS)}; "
                       f"expected one of {', '.join(DISTRIBUTIONS)}")


def _round(x: float) -> float:
    """Three significant digits: readable names, and the name says exactly what was run."""
    return float(f"{x:.3g}")


def _random(reader: _Reader, spec) -> list[dict]:
    if not isinstance(spec, dict):
        reader.fail("random", f"expected a mapping with count, seed and params, got {spec!r}")
    for key in spec:
        if key not in RANDOM_KEYS:
            reader.fail(f"random: {key}", f"unknown key{did_you_mean(key, RANDOM_KEYS)}; "
                                          f"expected one of {', '.join(RANDOM_KEYS)}")
    count = spec.get("count")
    if count is None:
        reader.fail("random", "count is missing: how many runs to sample, e.g. count: 8")
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        reader.fail("random: count", f"expected a positive integer, got {count!r}")
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        reader.fail("random: seed", f"expected an integer, got {seed!r}")
    params = reader.mapping("random: params", spec.get("params"),
                            "config keys to distributions, e.g. optim.lr: {loguniform: [1e-4, 1e-1]}")
    samplers = {k: _sampler(reader, k, v) for k, v in params.items()}
    rng = random.Random(seed)
    return [{k: draw(rng) for k, draw in samplers.items()} for _ in range(count)]


def _seeds(reader: _Reader, spec, base_seed: int) -> list[dict]:
    if isinstance(spec, dict):
        if set(spec) != {"repeat"}:
            reader.fail("seeds", f"expected a list of seeds or {{repeat: N}}, got {spec!r}")
        n = spec["repeat"]
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            reader.fail("seeds: repeat", f"expected a positive integer, got {n!r}")
        seeds = [base_seed + i for i in range(n)]
    else:
        seeds = reader.values("seeds", spec)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            reader.fail("seeds", f"expected integers >= 0, got {seeds!r}")
    return [{SEED_KEY: s} for s in seeds]


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _apply(path: Path, data: dict, items: list) -> dict:
    """Apply ``[(where, "KEY=VALUE")]`` one by one, so that an error names where the key came from."""
    for where, text in items:
        try:
            data = apply_overrides(data, [text])
        except ConfigError as e:
            if where is None:  # a --set from the command line: its message already says so
                raise ConfigError(f"{path}: {e}") from None
            raise ConfigError(f"{path}: {where}: {str(e).removeprefix(f'--set {text}: ')}") from None
    return data


def load_sweep(path, overrides=()) -> Sweep:
    """Read a sweep file and expand it into runs; every run's config is validated."""
    path = Path(path)
    reader = _Reader(path)
    spec = read_yaml(path)
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected a mapping with base: and at least one of "
                          f"grid:, zip:, random:, seeds:")
    for key in spec:
        if key not in SWEEP_KEYS:
            reader.fail(str(key), f"unknown key{did_you_mean(key, SWEEP_KEYS)}; "
                                  f"expected one of {', '.join(SWEEP_KEYS)}")
    if not isinstance(spec.get("base"), str):
        reader.fail("base", "expected the path of the base config, relative to the sweep file")
    base = Path(os.path.normpath(path.parent / spec["base"]))
    if not base.is_file():
        reader.fail("base", f"{spec['base']}: no such file (looked for {base})")
    name = spec.get("name", path.stem)
    if not isinstance(name, str) or _safe(name) != name:
        reader.fail("name", f"expected a name of letters, digits, '.', '_', '-', got {name!r}")

    # The shared overrides: the file's set:, then the command line's --set (which wins).
    shared = _flatten_set(reader.mapping("set", spec["set"], "config keys to values")) \
        if "set" in spec else {}
    cli_keys = {text.partition("=")[0].strip() for text in overrides}
    from_file = [(f"set: {k}", f"{k}={dump_value(v)}") for k, v in shared.items() if k not in cli_keys]
    fixed = [text for _, text in from_file] + list(overrides)
    raw = load_raw(base)
    shared_raw = _apply(path, raw, from_file + [(None, text) for text in overrides])
    shared_cfg = config_from_dict(shared_raw, f"{path}: {base} with the shared overrides")

    # Each axis is a list of points ({key: value}); the runs are their product.
    axes: list[tuple[str, list[dict]]] = []
    for section, expand in (("grid", _grid), ("zip", _zip), ("random", _random)):
        if section in spec:
            axes.append((section, expand(reader, spec[section])))
    if "seeds" in spec:
        axes.append(("seeds", _seeds(reader, spec["seeds"], shared_cfg.experiment.seed)))
    if not axes:
        reader.fail("axes", "nothing varies: add grid:, zip:, random: or seeds:")

    given = {key: "set" for key in shared}  # key -> the part of the file that gives it
    for section, points in axes:
        for key in points[0]:
            for other, where in given.items():
                if _overlap(key, other):
                    both = (f"in {where}: and {section}:" if where != section
                            else f"twice in {section}: ({other} and {key})")
                    reader.fail(key, f"given {both}; give each key in one place")
            given[key] = section
    keys = [key for key in given if key not in shared]
    for text in overrides:
        key = text.partition("=")[0].strip()
        for axis in keys:
            if _overlap(key, axis):
                raise ConfigError(f"--set {text}: {axis} is an axis of the sweep {path}; "
                                  f"change its values in the sweep file")
    params_list = [{k: v for point in combo for k, v in point.items()}
                   for combo in itertools.product(*(points for _, points in axes))]
    names = _run_names(params_list, keys)
    output_dir = Path(shared_cfg.experiment.output_dir) / "sweeps" / name
    runs = []
    for index, (run_name, params) in enumerate(zip(names, params_list)):
        axis_overrides = [f"{k}={dump_value(v)}" for k, v in params.items()]
        origins = [_origin(given[k], k) for k in params]
        run_raw = _apply(path, shared_raw, list(zip(origins, axis_overrides)))
        cfg = config_from_dict(run_raw, f"{path}: run {index} ({run_name})")
        runs.append(SweepRun(index, run_name, params, fixed + axis_overrides,
                             output_dir / run_name, cfg))
    return Sweep(name, path, base, fixed, keys, runs, output_dir)


def _origin(section: str, key: str) -> str:
    """Where an axis key is written in the sweep file, for messages."""
    return {"seeds": "seeds", "random": f"random: params: {key}"}.get(section, f"{section}: {key}")


# --------------------------------------------------------------------------- running


def read_summary(run_dir: Path) -> Optional[dict]:
    """The run's summary.json, or None when it is missing or unreadable (the run did not finish)."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def is_completed(run_dir: Path) -> bool:
    summary = read_summary(run_dir)
    return summary is not None and summary.get("status") == "completed"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass
class RunResult:
    run: SweepRun
    status: str  # "completed", "skipped" (already completed before) or "failed"
    returncode: Optional[int] = None
    seconds: float = 0.0

    @property
    def log(self) -> Path:
        return self.run.run_dir / "train.log"


def last_line(path: Path) -> str:
    """The last non-empty line of a log (usually the error), or ''."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def run_sweep(sweep: Sweep, runs=None, parallel: int = 1, data_dir=None,
              echo: Callable[[str], None] = print) -> list[RunResult]:
    """Train ``runs`` (default: all) as subprocesses, ``parallel`` at a time, skipping finished ones.

    Each child's output is saved to ``<run_dir>/train.log``; with one run at a time it is also
    echoed. A run whose folder holds checkpoints is resumed (``--resume auto``). SIGUSR1,
    SIGUSR2 and SIGTERM are passed on to the running trainers (which checkpoint) and no further
    run starts. Ctrl-C stops the children and re-raises KeyboardInterrupt; running the sweep
    again continues it.
    """
    runs = sweep.runs if runs is None else runs
    results: dict[int, RunResult] = {}
    todo = []
    for run in runs:
        if is_completed(run.run_dir):
            results[run.index] = RunResult(run, "skipped")
        else:
            todo.append(run)
    if results:
        echo(f"{len(results)} of {len(runs)} runs already completed, skipping them")
    if not todo:
        return [results[r.index] for r in runs]

    parallel = max(1, min(parallel, len(todo)))
    threads = max(1, available_cores() // parallel)
    lock = threading.Lock()
    children: set[subprocess.Popen] = set()
    stopping = threading.Event()
    received: list[int] = []  # signals passed on so far
    done = [0]

    def say(text: str):
        with lock:
            echo(text)

    def train(run: SweepRun) -> RunResult:
        if stopping.is_set():
            return RunResult(run, "failed")
        extra = []
        if parallel > 1 and run.config.runtime.threads is None:
            extra.append(f"runtime.threads={threads}")
        argv = sweep.train_argv(run, data_dir, extra)
        if any((run.run_dir / "checkpoints").glob("*.pt")):  # an interrupted run: continue it
            argv += ["--resume", "auto"]
        run.run_dir.mkdir(parents=True, exist_ok=True)
        say(f"[{run.index}] {run.name}: started")
        start = time.monotonic()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(run.run_dir / "train.log", "a") as log:
            log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} mnist-hpc sweep {sweep.name}: "
                      f"{shlex.join(argv)}\n")
            log.flush()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", env=env)
            with lock:
                children.add(proc)
            if received:  # a signal came while this run was starting
                proc.send_signal(received[-1])
            for line in proc.stdout:
                log.write(line)
                if parallel == 1:
                    say("    " + line.rstrip("\n"))
            code = proc.wait()
            with lock:
                children.discard(proc)
        seconds = time.monotonic() - start
        ok = code == 0 and is_completed(run.run_dir)
        with lock:
            done[0] += 1
            progress = f"({done[0]}/{len(todo)})"
        if ok:
            acc = (read_summary(run.run_dir) or {}).get("test_accuracy")
            result = f"test accuracy {100 * acc:.2f}%" if isinstance(acc, (int, float)) else "done"
            say(f"[{run.index}] {run.name}: {result} in {seconds:.0f} s {progress}")
            return RunResult(run, "completed", code, seconds)
        why = f"exit {code}" if code != 0 else "no completed summary.json"
        say(f"[{run.index}] {run.name}: FAILED ({why}) after {seconds:.0f} s {progress}, "
            f"see {run.run_dir / 'train.log'}")
        return RunResult(run, "failed", code, seconds)

    def pass_on(signum, frame):
        # Under Slurm the time-limit warning reaches only the batch shell, which passes it to
        # this process: hand it to the trainers (they checkpoint and requeue) and start no more.
        received.append(signum)
        stopping.set()
        for proc in list(children):
            proc.send_signal(signum)

    pool = ThreadPoolExecutor(max_workers=parallel)
    previous = _install(pass_on)
    try:
        for result in pool.map(train, todo):
            results[result.run.index] = result
    except KeyboardInterrupt:
        stopping.set()
        for proc in list(children):
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        _restore(previous)
    pool.shutdown()
    return [results[r.index] for r in runs]


FORWARDED_SIGNALS = [getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2", "SIGTERM")
                     if hasattr(signal, name)]


def _install(handler) -> dict:
    """Route the requeue/stop signals to ``handler`` (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in FORWARDED_SIGNALS}


def _restore(previous: dict) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)
