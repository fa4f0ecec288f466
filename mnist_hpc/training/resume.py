"""Where a training starts, decided before anything is written (a refusal leaves every folder
as it was): a new run, the same run continued, or a new run from another run's checkpoint.

The rules:

- A run folder belongs to one run (``run.json``, see ``runs/state.py``). ``--run-dir`` on a
  folder that holds another run is refused, unless that run is being resumed. A folder whose
  run left no checkpoint and no summary (it failed or was stopped early) may be reused.
- ``--resume`` continues the same run, in its folder, from its newest checkpoint. Only the keys
  of ``checkpoint.RESUMABLE_KEYS`` may differ from the checkpoint's config (train.epochs to
  extend, checkpointing, device/threads, logging); they apply and are recorded in the run's
  history (the resume entry's ``changes``). Any other difference is refused, naming the keys.
- A finished run's files are never rewritten: resuming a completed run to train longer, from a
  checkpoint that is not its run's newest, or into another ``--run-dir`` writes a new run folder
  that records the run it continues (``parent_run``). A completed run with nothing more to
  train is left alone ("already complete").
- ``--init-from RUN_OR_CHECKPOINT`` copies only the weights into a new run folder (fresh
  optimizer, schedule and epoch count) and records ``parent_run``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mnist_hpc.errors import CheckpointError, ConfigError, UserError
from mnist_hpc.runs import folder
from mnist_hpc.runs import state as runstate
from mnist_hpc.training import checkpoint as ckpt


@dataclass
class Start:
    """What ``plan`` decided (rank 0); ``shared()`` is what the other ranks need of it."""

    run_dir: Path
    identity: dict = field(default_factory=dict)
    lock: runstate.TrainingLock | None = None
    resume: Path | None = None  # a checkpoint whose full state the run continues from
    init_from: Path | None = None  # a checkpoint whose weights a new run starts from
    parent_run: str | None = None
    changes: dict = field(default_factory=dict)  # {key: [old, new]} that the resume applies
    done: bool = False  # a completed run with nothing more to train: nothing to do

    def shared(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "resume": self.resume and str(self.resume),
            "init_from": self.init_from and str(self.init_from),
            "done": self.done,
        }

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def plan(
    cfg,
    *,
    run_dir=None,
    resume=None,
    init_from=None,
    job_suffix=None,
    job_id=None,
    echo: Callable[[str], None] = print,
    code=None,
) -> Start:
    """Decide and claim the run folder for training ``cfg`` (see the module's rules). ``code``:
    the custom model's code (training/usercode.py): a run is continued only with the code it
    started with."""
    if resume and init_from:
        raise ConfigError(
            "--resume and --init-from: pick one (--resume continues a run; "
            "--init-from starts a new run from its weights)"
        )
    if init_from:
        return _init_from(cfg, init_from, run_dir, job_id, echo)
    path, kind, auto = folder.locate_run_dir(cfg, run_dir, resume, job_suffix)  # auto: a name we chose
    if kind is None:
        return claim(cfg, path, auto=auto, job_id=job_id, echo=echo)
    if kind == "auto":
        src, state = (
            ckpt.newest_valid(path / "checkpoints", warn=echo)
            if (path / "checkpoints").is_dir()
            else (None, None)
        )
        if src is None or state is None:  # both None: no loadable checkpoint
            echo(f"--resume auto: no checkpoint in {path / 'checkpoints'}; starting from scratch")
            return claim(cfg, path, auto=auto, job_id=job_id, echo=echo)
    else:
        src, state = Path(kind), ckpt.load(kind)
    return _continue(cfg, path, auto, src, state, job_id, echo, newest=kind == "auto", code=code)


def _check_same_code(state: dict, code, src: Path) -> None:
    """A run continued with other model code than its checkpoint's is refused, like a changed config."""
    before = (state.get("model_code") or {}).get("sha256")
    if code is None or not before or before == code.sha256:
        return
    run = ckpt.run_of(src)
    raise ConfigError(
        f"{src}: model.file {code.path} differs from the code this run was trained with (sha256 {before[:12]} "
        f"-> {code.sha256[:12]}); --resume continues the same run: resume with the run's own copy "
        f"(mnist-hpc train {run / 'config.yaml'} --run-dir {run} --resume auto), or start a new run from "
        f"its weights: mnist-hpc train CONFIG --init-from {run}"
    )


def _continue(
    cfg, path: Path, auto: bool, src: Path, state: dict, job_id, echo, newest=False, code=None
) -> Start:
    """Continue the run of checkpoint ``src``: in its folder, or in a new one. ``newest``: src
    is its run's newest valid checkpoint (newer unreadable files are overwritten as it goes)."""
    changes = ckpt.check_compatible(state, cfg.to_dict(), src)
    _check_same_code(state, code, src)
    src_run = ckpt.run_of(src)
    _check_belongs(state, src_run, src)
    completed = (src_run / "summary.json").is_file()
    if completed and not _more_to_train(state, cfg):
        echo(
            f"{src_run}: the run is complete ({state.get('epoch')} epochs); nothing to resume. To train "
            f"longer, raise train.epochs: that continues it in a new run folder"
        )
        return Start(src_run, done=True)
    newest = newest or ckpt.list_checkpoints(src.parent)[:1] == [src]
    same = path.exists() and src_run.is_dir() and path.resolve() == src_run.resolve()
    if same and not completed and newest:
        start = _in_place(path, job_id)
    else:
        target: Path | None = path
        if same:  # never rewrite a finished run, nor the checkpoints that follow src
            why = "the run is complete" if completed else "newer checkpoints follow the one resumed"
            echo(f"note: {src_run}: {why}, so its files are left as they are; continuing in a new run folder")
            target, auto = None, True
        start = claim(cfg, target, auto=auto, parent_run=src_run, job_id=job_id, echo=echo)
    start.resume, start.changes = src, changes
    return start


def _more_to_train(state: dict, cfg) -> bool:
    return cfg.train.epochs > int(state.get("epoch", 0)) or bool(state.get("step"))


def _check_belongs(state: dict, src_run: Path, src: Path) -> None:
    """Refuse a checkpoint stamped with another run's id than the folder it sits in."""
    theirs, ours = state.get("run_id"), runstate.read_identity(src_run)
    if theirs and ours and ours["run_id"] != theirs:
        raise CheckpointError(
            f"{src}: this checkpoint belongs to run {theirs}, but {src_run} holds run "
            f"{ours['run_id']} (copied from another run?); resume it from its own folder, "
            f"or start a new run from its weights with --init-from {src}"
        )


def _in_place(path: Path, job_id) -> Start:
    """The same run, continued in its own folder (adopting a folder of an earlier version)."""
    lock = _lock(path)
    identity = runstate.read_identity(path)
    if identity is None:
        try:
            identity = runstate.new_identity(path.name, job_id=job_id)
            runstate.write_identity(path, identity)
        except BaseException:
            lock.release()
            raise
    return Start(path, identity, lock, parent_run=identity.get("parent_run"))


def _init_from(cfg, source, run_dir, job_id, echo) -> Start:
    from mnist_hpc.config import config_from_dict
    from mnist_hpc.training.inference import find_checkpoint

    src = find_checkpoint(source)
    state = ckpt.load(src)
    stored = state.get("config")
    if isinstance(stored, dict):  # validated like any config (a crafted one is refused here)
        config_from_dict(stored, source=f"{src} (stored config)")
    path = Path(run_dir) if run_dir else None
    start = claim(cfg, path, auto=path is None, parent_run=ckpt.run_of(src), job_id=job_id, echo=echo)
    start.init_from = src
    return start


def claim(cfg, path: Path | None, *, auto: bool, parent_run=None, job_id=None, echo=print) -> Start:
    """Make ``path`` this new run's folder. ``auto``: a name of our choosing (``path``, or a fresh
    ``<output_dir>/<name>-<time>`` when None), created exclusively, the next free suffix when
    another process took it first. Otherwise the given folder, refused when it holds another
    run's checkpoints or summary."""
    if auto:
        path = folder.create_run_dir(cfg.experiment.output_dir, cfg.experiment.name, first=path)
        lock = _lock(path)
    else:
        assert path is not None  # only a name of our choosing (auto) may be left to claim
        _refuse_other_run(path, echo)  # before writing anything into it
        folder.ensure_writable(path)
        lock = _lock(path)
        try:
            _refuse_other_run(path, echo=lambda m: None)  # again, now that no one else can claim it
        except BaseException:
            lock.release()
            raise
    try:
        identity = runstate.new_identity(cfg.experiment.name, parent_run=parent_run, job_id=job_id)
        runstate.write_identity(path, identity)
    except BaseException:
        lock.release()
        raise
    return Start(path, identity, lock, parent_run=str(parent_run) if parent_run else None)


def _refuse_other_run(path: Path, echo) -> None:
    if not runstate.holds_run(path):
        return
    st = runstate.read_state(path)
    described = st.describe() if st else "no state recorded"
    if runstate.has_checkpoints(path) or (path / "summary.json").is_file():
        raise UserError(
            f"{path}: this folder holds another run ({described}); pick a new --run-dir, "
            f"continue that run with --resume auto, or start a new run from its weights "
            f"with --init-from {path}"
        )
    echo(f"note: {path}: reusing the folder of a run that left no checkpoint ({described})")


def _lock(path: Path) -> runstate.TrainingLock:
    lock = runstate.TrainingLock(path)
    try:
        took = lock.acquire()
    except OSError as e:
        if folder.is_disk_full(e):
            raise folder.disk_full_error(path / runstate.LOCK_FILE, e) from None
        raise UserError(f"{path}: cannot lock the run folder ({e.strerror or e})") from None
    if not took:
        st = runstate.read_state(path)
        raise UserError(
            f"{path}: another process is training this run now"
            + (f" ({st.describe()})" if st else "")
            + "; wait for it to end, or pick another --run-dir"
        )
    return lock
