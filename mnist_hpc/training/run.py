"""The entry point of a training run: config -> build -> train -> evaluate -> the run folder.

``run_training`` sets up the host (ranks, device, threads, precision, stop flag), decides and
claims the run folder (resume.py: a new run, the same run continued, or a new run from another's
checkpoint), loads the data, builds the components, trains (trainer.py), evaluates on the test
set and writes summary.json and the plots. The run's state (running, completed, failed with the
error, interrupted by which signal where) is kept in its state.json. Only rank 0 writes the run
folder. Everything it needs to know about a scheduler arrives in a ``TrainContext``.
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mnist_hpc import clock
from mnist_hpc.config.datasets import FOLDER, data_shape, resolve_data_root
from mnist_hpc.config.extras import check_extras
from mnist_hpc.errors import ConfigError, Interrupted, UserError
from mnist_hpc.runs import folder
from mnist_hpc.runs.loggers import open_trackers
from mnist_hpc.runs.state import RunState, record_state, write_state
from mnist_hpc.runs.summary import RunSummary, read_summary, write_summary
from mnist_hpc.training import checkpoint as ckpt
from mnist_hpc.training import data as datamod
from mnist_hpc.training import distributed as distmod
from mnist_hpc.training import resume as resumemod
from mnist_hpc.training import stopflag
from mnist_hpc.training.build import Precision, build_components, seed_everything, setup_host
from mnist_hpc.training.context import TrainContext
from mnist_hpc.training.evaluate import evaluate
from mnist_hpc.training.models import PreparedModel, count_params, prepare_model, size_mb
from mnist_hpc.training.trainer import Trainer, rate_of
from mnist_hpc.training.usercode import SNAPSHOT_DIR


def echo_line(msg: str) -> None:
    print(msg, flush=True)


def _silent(*_args, **_kwargs) -> None:
    pass


def run_training(
    cfg,
    *,
    ctx: TrainContext | None = None,
    data_dir=None,
    run_dir=None,
    resume=None,
    echo: Callable[[str], None] = echo_line,
    source=None,
    progress: bool | None = None,
    init_from=None,
    model=None,
    verbose: bool = False,
) -> RunSummary | None:
    """Train ``cfg`` end to end; rank 0 returns the run's ``RunSummary`` (``.run_dir`` is its
    folder), the other ranks None. Raises ``Interrupted`` after the checkpoint of a stop signal.

    ``resume``: None, "auto" (the newest valid checkpoint of the run folder) or a checkpoint /
    run folder path: the same run continued (rules in ``training/resume.py``). ``init_from``: a
    run folder or checkpoint whose weights a new run starts from. ``progress``: a progress bar
    per epoch; None = only when stdout is a terminal. The run's state (running, completed,
    failed, interrupted) is kept in its folder's state.json. ``model``: the network as a Python
    object (an ``nn.Module``, a class or a factory) instead of ``cfg.model``. ``verbose``: after
    the result line, one line of where the time went (``Phases``)."""
    phases = Phases(clock.run_start())
    phases.mark("start-up")  # a command's interpreter, imports and config; nothing from Python
    ctx = ctx or TrainContext()
    check_extras(cfg)  # a logger's missing package: one line before anything starts
    denv = distmod.detect({**os.environ, **ctx.launch_env}, launcher=ctx.launcher_name())
    shape = data_shape(cfg.data, resolve_data_root(data_dir, None)[0])
    if shape is None:
        raise datamod.DataError(
            f"data.root: {cfg.data.root}: not a folder of class subfolders; dataset: folder "
            f"needs one subfolder of images per class"
        )
    prepared = prepare_model(cfg, shape, model)  # the user's code checked before any folder is touched
    if cfg.data.batch_size % (denv.world_size * cfg.train.grad_accum):
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} must be divisible by world size "
            f"{denv.world_size} x train.grad_accum {cfg.train.grad_accum}"
        )
    device, precision = setup_host(
        cfg.runtime.device,
        threads=cfg.runtime.threads,
        cpus=ctx.cpus,
        denv=denv,
        amp=cfg.train.amp,
        deterministic=cfg.runtime.deterministic,
        warn=echo if denv.is_main else None,
    )
    stop, owned = ctx.stop, False
    if stop is None:
        owned = not stopflag.installed()  # the CLI installs it early; otherwise it is ours to remove
        stop = stopflag.install()
    try:
        with distmod.process_group(denv, device.type, cfg.runtime.dist_timeout):
            job = _RankTraining(cfg, ctx, denv, device, echo if denv.is_main else _silent, prepared)
            job.phases, job.verbose = phases, verbose
            return job.run(
                data_dir=data_dir,
                run_dir=run_dir,
                resume=resume,
                init_from=init_from,
                source=source,
                precision=precision,
                stop=stop,
                progress=progress,
            )
    finally:
        if owned:
            stopflag.uninstall()


class Phases:
    """Where one start of a run spent its wall time: named, consecutive spans from the run's
    start (``clock.run_start``) to the last mark; `train --verbose` prints them, summary.json
    keeps them as ``phase_seconds``."""

    def __init__(self, start: float):
        self.start = self.last = start
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        """The span since the previous mark was ``name`` (added up, should a name come twice)."""
        now = time.time()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.last
        self.last = now

    def total(self) -> float:
        return self.last - self.start

    def line(self) -> str:
        spans = " · ".join(f"{name} {sec:.2f} s" for name, sec in self.seconds.items())
        return f"time: {spans} = {self.total():.2f} s"


class _RankTraining:
    """One start of a run on one rank: set-up, the trainer, the end (test, summary, plots)."""

    def __init__(self, cfg, ctx: TrainContext, denv, device, echo, prepared: PreparedModel):
        self.cfg, self.ctx, self.denv, self.device, self.echo = cfg, ctx, denv, device, echo
        self.prepared = prepared
        self.main = denv.is_main
        self.phases, self.verbose = Phases(time.time()), False  # run_training sets both

    def run(
        self,
        *,
        data_dir: str | Path | None,
        run_dir: str | Path | None,
        resume: str | Path | None,
        init_from: str | Path | None,
        source: str | None,
        precision: Precision,
        stop: stopflag.StopFlag,
        progress: bool | None,
    ) -> RunSummary | None:
        """Plan the start (new, resumed, or initialised from another run's weights), train, test
        and summarise: the run's summary on rank 0, None on the other ranks."""
        self.stop = stop
        self.trainer: Trainer | None = None  # made by _train
        self.start: resumemod.Start | None = None  # rank 0's, made by _plan
        start = self._plan(run_dir, resume, init_from, source)
        self.phases.mark("set-up")
        self.run_dir = Path(start["run_dir"])
        if start["done"]:  # a completed run with nothing more to train
            return read_summary(self.run_dir) if self.main else None
        try:
            return self._train(data_dir, start, precision, stop, progress)
        except BaseException as e:
            final = self._ended(e) if self.main else e
            if final is e:
                raise
            raise final from None
        finally:
            if self.start is not None:
                self.start.release()

    def _plan(self, run_dir, resume, init_from, source) -> dict:
        """Rank 0 decides and claims the run folder (training/resume.py); every rank learns it."""
        info, error = None, None
        if self.main:
            try:
                self.start = resumemod.plan(
                    self.cfg,
                    run_dir=run_dir,
                    resume=resume,
                    init_from=init_from,
                    job_suffix=self.ctx.run_name_suffix,
                    job_id=self.ctx.job_id,
                    echo=self.echo,
                    code=self.prepared.code,
                )
                info = self.start.shared()
            except UserError as e:
                if not self.denv.distributed:
                    raise
                info, error = {"error": str(e)}, e
        info = distmod.broadcast_object(self.denv, info)
        if "error" in info:
            raise error or UserError(f"rank 0 could not start the run: {info['error']}")
        if self.main and not info["done"]:
            start = self.start
            assert start is not None  # rank 0 planned the run above
            try:
                write_state(
                    start.run_dir,
                    RunState(
                        "running",
                        start.identity.get("run_id"),
                        pid=os.getpid(),
                        host=socket.gethostname(),
                    ),
                )
                folder.atomic_write(
                    start.run_dir / "config.yaml",
                    "# resolved config of this run "
                    f"(source: {source or 'python'})\n" + self._stored_config().to_yaml(),
                )
                self._snapshot_code()
            except BaseException:
                start.release()
                raise
            if self.ctx.on_start is not None:  # the job's environment, per start (cluster/envrecord)
                self.ctx.on_start(start.run_dir)
        return info

    # -- the user's model code: one copy in the run folder, its digest in run.json ----------

    def _stored_config(self):
        """The config as the run folder keeps it: a custom model's file is the run's own copy."""
        code = self.prepared.code
        if code is None:
            return self.cfg
        import copy

        stored = copy.deepcopy(self.cfg)
        stored.model.file = f"{SNAPSHOT_DIR}/{code.name}"
        return stored

    def _snapshot_code(self) -> None:
        code, record = self.prepared.code, self.prepared.record()
        if record is None:
            return
        start = self.start
        assert start is not None  # rank 0's, planned before
        run_dir = start.run_dir
        if code is not None:
            target = run_dir / SNAPSHOT_DIR / code.name
            if not (target.is_file() and target.read_bytes() == code.text.encode("utf-8")):
                target.parent.mkdir(exist_ok=True)
                folder.atomic_write(target, code.text)
        identity = dict(start.identity or {})
        if identity.get("model_code") != record:
            from mnist_hpc.runs.state import write_identity

            identity["model_code"] = record
            write_identity(run_dir, identity)
            start.identity = identity

    def _train(self, data_dir, start, precision, stop, progress):
        """Load the data, build the trainer (resumed or initialised as planned), say what trains
        where, then fit, test and summarise."""
        root, why = self._load_data(data_dir)
        trainer = self._build_trainer(precision, stop, progress)
        resumed_from = trainer.resume(start["resume"] and Path(start["resume"]), self.ctx.restart_count)
        if resumed_from:
            self._record_resume(resumed_from)
        if start["init_from"]:
            self._init_weights(Path(start["init_from"]))
        params = count_params(self.parts.raw_model)
        self._announce(params, root, why, resumed_from, start["init_from"])
        return self._fit(params)

    def _load_data(self, data_dir) -> tuple:
        """The splits (on this rank's device); returns where the data came from and why."""
        cfg, ctx = self.cfg, self.ctx
        folder_data = cfg.data.dataset == FOLDER
        root, why = resolve_data_root(data_dir, None if folder_data else cfg.data.root)
        if not folder_data:
            datamod.prepare_per_node(
                datamod.DATASETS[cfg.data.dataset], root, self.denv, download=not ctx.offline
            )
        t0 = time.time()
        self.splits = datamod.load(
            cfg.data.dataset,
            root,
            val_split=cfg.data.val_split,
            subset=cfg.data.subset,
            seed=cfg.experiment.seed,
            device=self.device,
            download=not ctx.offline,
            data_cfg=cfg.data,
        )
        if folder_data:
            root, why = cfg.data.root, "data.root"
        self.data_seconds = time.time() - t0
        self.phases.mark("data")
        return root, why

    def _build_trainer(self, precision, stop, progress) -> Trainer:
        """Model, optimizer and the rest (seeded), and the trainer that runs them."""
        cfg, splits = self.cfg, self.splits
        seed_everything(cfg.experiment.seed)
        self.parts = build_components(
            cfg,
            self.device,
            self.denv,
            splits.train_x,
            splits.train_y,
            mean=splits.mean,
            std=splits.std,
            precision=precision,
            make_model=self.prepared.build,
        )
        self.trainer = Trainer(
            cfg,
            self.parts,
            splits,
            self.run_dir,
            stop=stop,
            on_preempt=self.ctx.on_preempt,
            echo=self.echo,
            progress=progress,
            started=self.phases.start,
        )
        self.trainer.extra_state = {"data_info": splits.info()}
        record = self.prepared.record()
        if record is not None:
            self.trainer.extra_state["model_code"] = {
                **record,
                "text": self.prepared.code.text if self.prepared.code else None,
            }
        return self.trainer

    def _announce(self, params: int, root, why: str, resumed_from, init_from) -> None:
        """The two lines that open a run: what trains on what, and where it is kept."""
        cfg, splits = self.cfg, self.splits
        label = cfg.model.name + (
            f" {cfg.model.factory}"
            if cfg.model.source == "custom"
            else f" {cfg.model.arch}"
            if cfg.model.source == "torchvision"
            else ""
        )
        self.echo(
            f"mnist-hpc: {label} ({params:,} params) on {cfg.data.dataset} "
            f"({len(splits.train_x):,} train / {0 if splits.val_x is None else len(splits.val_x):,} val / "
            f"{len(splits.test_x):,} test) · {self._device_text()} · data from {root} ({why})"
        )
        came = (
            f" · resumed from {resumed_from}"
            if resumed_from
            else f" · weights from {init_from}"
            if init_from
            else ""
        )
        self.echo(f"run folder: {self.run_dir}" + came)

    def _fit(self, params: int):
        """Train to the end (trackers open on rank 0 for the whole of it), test, summarise."""
        assert self.trainer is not None  # built by _build_trainer
        ctx = self.ctx
        if self.main:  # only rank 0 logs; a resumed run continues its tracker runs (trackers.json)
            self.trainer.trackers = open_trackers(
                self.cfg,
                self.run_dir,
                job_id=ctx.job_id,
                echo=self.echo,
                run_id=self.start.identity.get("run_id") if self.start else None,
            )
        status = "failed"
        self.phases.mark("build")
        if self.main:
            from mnist_hpc.runs import plots

            plots.warm_up()  # matplotlib loads while the run trains
        try:
            self.trainer.fit()
            self.phases.mark("training")
            summary = self._finish(params)
            status = "completed"
            return summary
        except (Interrupted, KeyboardInterrupt):
            status = "interrupted"
            raise
        finally:
            if self.main:
                self.trainer.trackers.close(status)

    def _peak_gpu_memory_mb(self) -> float | None:
        """The most memory this process's tensors held on its GPU (CUDA only), in MiB."""
        if self.device.type != "cuda":
            return None
        return round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)

    def _device_text(self) -> str:
        d, denv = self.device, self.denv
        name = torch.cuda.get_device_name(d) if d.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
        ws = f" × {denv.world_size} ranks ({denv.launcher})" if denv.distributed else ""
        precision = self.parts.precision.name
        amp = f" · {precision}" if precision != "fp32" else ""
        return f"{d.type} ({name}){ws}{amp}"

    # -- where the run came from --------------------------------------------------------

    def _record_resume(self, path: Path) -> None:
        """The resume entry of the history says what changed and, for a new folder, from where."""
        assert self.trainer is not None  # resumed by it
        s = self.trainer.state
        # checkpoints of earlier versions carry no wall time: the time trained is a lower bound
        s.wall_seconds = max(s.wall_seconds, s.train_seconds + (s.partial or {}).get("seconds", 0.0))
        if not self.main or not s.requeues:
            return
        entry = s.requeues[-1]
        changes = self.start.changes if self.start else {}
        if changes:
            entry["changes"] = changes
        if self.start and self.start.parent_run and self.start.resume:
            entry["from"] = str(path)

    def _init_weights(self, path: Path) -> None:
        """--init-from: the checkpoint's weights only (every rank loads them: DDP has already
        broadcast its initial weights)."""
        state = ckpt.load(path, map_location=self.device)
        config = state.get("config")
        stored = config if isinstance(config, dict) else {}
        theirs = stored.get("model", {}).get("name") if isinstance(stored.get("model"), dict) else None
        ours = self.cfg.model.name
        try:
            self.parts.raw_model.load_state_dict(state["model"])
        except (RuntimeError, KeyError, ValueError) as e:
            if theirs and theirs != ours:
                raise UserError(
                    f"--init-from {path}: the checkpoint holds a `{theirs}` net; this config "
                    f"builds `{ours}`: start from a run of the same model, or train "
                    f"with --set model.name={theirs} (and that run's model settings)"
                ) from None
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            why = next(
                (ln for ln in lines if not ln.startswith("Error(s) in loading")), lines[0] if lines else ""
            )
            held = f" (the checkpoint holds a `{theirs}` net with other settings)" if theirs else ""
            raise UserError(
                f"--init-from {path}: its weights do not fit this config's model "
                f"`{ours}`{held}: {why[:160]}; use the model settings of the run it "
                f"came from (its config.yaml)"
            ) from None

    # -- how the run ended, when not normally ----------------------------------------------

    def _ended(self, e: BaseException) -> BaseException:
        """Record the run's state for ``e`` (rank 0) and return what to raise: a full disk as
        one line, Ctrl-C with the checkpoint kept and the resume command."""
        if folder.is_disk_full(e):
            where = getattr(e, "filename", None)
            e = folder.disk_full_error(Path(where) if where else self.run_dir, e)
        s = self.trainer.state if self.trainer else None
        pos = {"epoch": s.epoch + 1, "step": s.step} if s else {}
        found = ckpt.list_checkpoints(self.run_dir / "checkpoints")
        kept = str(found[0]) if found else None
        run_id = self.start.identity.get("run_id") if self.start else None
        if isinstance(e, Interrupted):
            record_state(
                self.run_dir,
                RunState(
                    "interrupted",
                    run_id,
                    signal=self.stop.name,
                    checkpoint=kept,
                    requeued=str(e) == "requeued",
                    epoch=pos.get("epoch"),
                    step=pos.get("step"),
                ),
            )
        elif isinstance(e, KeyboardInterrupt):
            record_state(
                self.run_dir,
                RunState(
                    "interrupted",
                    run_id,
                    signal="SIGINT",
                    checkpoint=kept,
                    epoch=pos.get("epoch"),
                    step=pos.get("step"),
                ),
            )
            return KeyboardInterrupt(self._ctrl_c_text(kept, pos))
        else:
            text = str(e).splitlines()[0] if str(e) else ""
            error = text if isinstance(e, UserError) else f"{type(e).__name__}: {text}".rstrip(": ")
            record_state(self.run_dir, RunState("failed", run_id, error=error[:300]))
        return e

    def _ctrl_c_text(self, kept, pos) -> str:
        where = f" at epoch {pos['epoch']}, step {pos['step']}" if pos else ""
        if kept is None:
            return (
                f"interrupted (Ctrl-C){where}, before the first checkpoint: nothing to resume "
                f"(start the run again)"
            )
        run = shlex.quote(str(self.run_dir))
        config = shlex.quote(str(self.run_dir / "config.yaml"))
        return (
            f"interrupted (Ctrl-C){where}; kept the newest checkpoint {kept}; resume with: "
            f"mnist-hpc train {config} --run-dir {run} --resume auto"
        )

    # -- the end --------------------------------------------------------------------------

    def _finish(self, params) -> RunSummary | None:
        cfg, parts, splits, trainer = self.cfg, self.parts, self.splits, self.trainer
        assert trainer is not None  # it has trained
        s = trainer.state
        best_path = trainer.ckpt_dir / "best.pt"
        if cfg.data.val_split and best_path.exists() and cfg.train.early_stopping.patience:
            # early stopping: report the test figures of the best epoch's weights
            parts.raw_model.load_state_dict(ckpt.load(best_path, map_location=self.device)["model"])
        t0 = time.time()
        test = evaluate(
            parts.model,
            splits.test_x,
            splits.test_y,
            splits.mean,
            splits.std,
            cfg.data.eval_batch_size,
            denv=self.denv,
            autocast=parts.autocast,
            tta=cfg.train.tta,
            channels_last=cfg.runtime.channels_last,
            num_classes=len(splits.classes),
        )
        eval_seconds = time.time() - t0
        self.phases.mark("test")
        if not self.main:
            return None
        self._plots(test, list(splits.classes))
        self.phases.mark("plots")
        summary = self._summary(test, params, eval_seconds)  # its total: up to here
        write_summary(self.run_dir, summary)
        plots = {p.stem: p for p in sorted((self.run_dir / "plots").glob("*.png"))}
        trainer.trackers.log_summary(summary.to_dict(), plots, s.global_step)
        record_state(self.run_dir, RunState("completed", summary.run_id))
        self.phases.mark("summary")
        # the printed total: the wall time of every start so far, this one up to this line (a
        # command's process ends right after it: cli.main.exit_now)
        total, this_process = trainer.wall_seconds(), self.phases.total()
        timing = f"{s.train_seconds:.1f} s training · {total:.1f} s total"
        if s.requeues:  # total: every start of the run; this process: the last start only
            timing += f" over {len(s.requeues) + 1} starts ({this_process:.0f} s this process)"
        self.echo(
            f"test accuracy {test['accuracy'] * 100:.2f}% · loss {test['loss']:.4f} · "
            f"{timing} · {self.run_dir}/"
        )
        if self.verbose:
            self.echo(self.phases.line())
        return summary

    def _summary(self, test, params, eval_seconds) -> RunSummary:
        from mnist_hpc.training import metrics as M

        trainer = self.trainer
        assert trainer is not None  # it has trained
        cfg, s, denv, parts = self.cfg, trainer.state, self.denv, self.parts
        per_class = M.per_class_metrics(test["confusion"], list(self.splits.classes))
        prov = folder.provenance(self.ctx.job_id, self.ctx.array_task_id)
        return RunSummary(
            status="completed",
            test_accuracy=round(test["accuracy"], 6),
            test_loss=round(test["loss"], 6),
            best_val_accuracy=s.best_val if s.best_val >= 0 else None,
            best_epoch=s.best_epoch,
            epochs_run=len(s.history),
            macro_f1=round(M.macro_f1(per_class), 6),
            per_class=per_class,
            confusion_matrix=test["confusion"],
            params=params,
            model_size_mb=round(size_mb(parts.raw_model), 3),
            train_seconds=round(s.train_seconds, 3),
            eval_seconds=round(eval_seconds, 3),
            data_seconds=round(self.data_seconds, 3),
            total_seconds=round(trainer.wall_seconds(), 3),
            process_seconds=round(time.time() - self.phases.start, 3),
            images_per_s=round(
                rate_of(s.images_seen, s.step_seconds, trainer.warmup_images, trainer.warmup_seconds),
                1,
            ),
            warmup_seconds=round(trainer.warmup_seconds, 3),
            device=self._device_text(),
            peak_gpu_memory_mb=self._peak_gpu_memory_mb(),
            world_size=denv.world_size,
            launcher=denv.launcher,
            precision=parts.precision.name,
            global_batch_size=cfg.data.batch_size,
            per_rank_batch_size=cfg.data.batch_size // denv.world_size,
            grad_accum=cfg.train.grad_accum,
            tta=cfg.train.tta,
            dataset=cfg.data.dataset,
            model=cfg.model.name,
            config_name=cfg.experiment.name,
            seed=cfg.experiment.seed,
            requeues=s.requeues,
            run_id=self.start.identity.get("run_id") if self.start else None,
            parent_run=self.start.parent_run if self.start else None,
            **prov,
            started_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.phases.start)),
            phase_seconds={name: round(sec, 3) for name, sec in self.phases.seconds.items()},
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )

    def _plots(self, test, names):
        from mnist_hpc.runs import plots

        assert self.trainer is not None  # it has trained
        pdir = self.run_dir / "plots"
        pdir.mkdir(exist_ok=True)
        plots.learning_curves(self.trainer.state.history, pdir / "learning_curves.png")
        plots.confusion_matrix_plot(
            test["confusion"],
            names,
            pdir / "confusion_matrix.png",
            title=f"{self.cfg.experiment.name}: test confusion matrix",
        )
        cm = test["confusion"]
        mistakes = sum(map(sum, cm)) - sum(cm[i][i] for i in range(len(cm)))  # over every rank's shard
        wrong = (test["local_pred"] != test["local_y"]).nonzero().flatten()[:36]
        probs = test["local_probs"][wrong].max(1).values
        plots.misclassified_grid(
            test["local_x"][wrong].cpu().numpy(),
            test["local_y"][wrong].tolist(),
            test["local_pred"][wrong].tolist(),
            probs.tolist(),
            names,
            pdir / "misclassified.png",
            total=mistakes,
        )
