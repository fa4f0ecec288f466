"""The training loop: parse config -> build -> train -> evaluate -> write the run folder.

Data sits on the device (see data.py); the step loop never synchronises with the host except at
log points. Under DDP every rank trains on its shard of one permutation; losses are scaled so
that the averaged gradient equals a one-process step on the global batch; metrics are reduced as
sums. Only rank 0 writes the run folder. Signals (USR1/USR2/TERM) only set a flag: the loop
checkpoints at the next step boundary, then requeues the Slurm job or exits with code 75.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mnist_hpc.training import checkpoint as ckpt
from mnist_hpc.training import data as datamod
from mnist_hpc.training import distributed as distmod
from mnist_hpc.runs import folder as rundir
from mnist_hpc.training import stopflag
from mnist_hpc.config import Config, config_from_dict
from mnist_hpc.config.datasets import resolve_data_root
from mnist_hpc.errors import ConfigError, EXIT_INTERRUPTED, Interrupted, UserError
from mnist_hpc.training.models import build_model, count_params, size_mb

from mnist_hpc import PROCESS_START  # set when the package was first imported (before torch)


# --------------------------------------------------------------------------- setup helpers


def cpu_threads(requested, local_world: int = 1) -> int:
    """runtime.threads, else $SLURM_CPUS_PER_TASK, else the affinity mask; split over local ranks."""
    if requested:
        return requested
    env = os.environ.get("SLURM_CPUS_PER_TASK")
    if env and env.isdigit():
        return max(1, int(env))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, n // max(1, local_world))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"runtime.device={name}: CUDA is not available on this machine "
                            f"(use runtime.device=auto or cpu)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"runtime.device={name}: MPS is not available on this machine")
    return dev


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


def make_optimizer(cfg: Config, params):
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                               weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adadelta":
        return torch.optim.Adadelta(params, lr=o.lr, weight_decay=o.weight_decay)
    raise ConfigError(f"optim.name: unknown optimizer {o.name!r}")


def lr_factor(cfg: Config, step: int, steps_per_epoch: int) -> float:
    """Multiplier of optim.lr at optimizer step ``step`` (0-based)."""
    o = cfg.optim
    total = max(1, cfg.train.epochs * steps_per_epoch)
    if o.schedule == "onecycle":
        peak = max(1, int(o.pct_start * total))
        if step < peak:
            return 0.04 + 0.96 * step / peak  # from lr/25 up to lr
        return max(0.0, (total - step) / max(1, total - peak))  # linearly down to 0
    warm = o.warmup_epochs * steps_per_epoch
    factor = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
    if o.schedule == "step":
        factor *= o.gamma ** ((step // steps_per_epoch) // o.step_size)
    elif o.schedule == "cosine":
        factor *= 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return factor


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_logits(model, x_u8, mean, std, batch_size, *, amp_ctx=None, tta=False, channels_last=False):
    """Softmax probabilities (N, 10) for uint8 images; ``tta`` averages 1-px shifted views."""
    model.eval()
    out = []
    shifts = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)] if tta else [(0, 0)]
    for i in range(0, len(x_u8), batch_size):
        xb = datamod.normalize(x_u8[i:i + batch_size], mean, std)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        probs = 0
        for dy, dx in shifts:
            view = xb if (dy, dx) == (0, 0) else torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            with amp_ctx or nullcontext():
                logits = model(view)
            probs = probs + logits.float().softmax(1)
        out.append(probs / len(shifts))
    return torch.cat(out) if out else torch.zeros(0, 10, device=x_u8.device)


def evaluate(model, x_u8, y, mean, std, batch_size, *, denv=None, amp_ctx=None, tta=False,
             channels_last=False, num_classes=10):
    """Sharded evaluation reduced over ranks: loss, accuracy, confusion matrix, and (this rank's)
    predictions for the misclassified grid."""
    denv = denv or distmod.DistEnv("single")
    idx = torch.arange(len(x_u8), device=x_u8.device).tensor_split(denv.world_size)[denv.rank]
    xs, ys = x_u8[idx], y[idx]
    probs = predict_logits(model, xs, mean, std, batch_size, amp_ctx=amp_ctx, tta=tta, channels_last=channels_last)
    pred = probs.argmax(1)
    nll = F.nll_loss(probs.clamp_min(1e-12).log(), ys, reduction="sum") if len(ys) else torch.zeros((), device=y.device)
    cm = torch.bincount(ys * num_classes + pred, minlength=num_classes * num_classes).double()
    stats = torch.cat([nll.double().reshape(1), cm])
    distmod.all_sum(denv, stats)
    n = len(x_u8)
    cm = stats[1:].reshape(num_classes, num_classes).long()
    return {"loss": stats[0].item() / n, "accuracy": cm.diag().sum().item() / n, "confusion": cm.tolist(),
            "local_x": xs, "local_y": ys, "local_pred": pred, "local_probs": probs}


# --------------------------------------------------------------------------- the trainer


@dataclass
class State:
    epoch: int = 0  # epoch in progress (or next to start)
    step: int = 0  # next step within that epoch
    global_step: int = 0
    history: list = field(default_factory=list)  # one dict per finished epoch
    best_val: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    partial: dict = field(default_factory=dict)  # accumulators of the epoch in progress
    requeues: list = field(default_factory=list)
    train_seconds: float = 0.0
    images_seen: int = 0
    step_seconds: float = 0.0


def _resolve_run_dir(cfg: Config, run_dir, resume) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None)."""
    out = Path(cfg.experiment.output_dir)
    resume_file = None
    if resume and resume != "auto":
        p = Path(resume)
        if p.is_dir():  # a run folder
            run_dir = run_dir or p
            resume = "auto"
        elif p.is_file():
            resume_file = p
            if run_dir is None:
                run_dir = p.parent.parent if p.parent.name == "checkpoints" else None
        else:
            raise UserError(f"--resume {resume}: no such checkpoint or run folder")
    if run_dir is None:
        slurm_name = rundir.slurm_run_name(cfg.experiment.name)
        if slurm_name:
            run_dir = out / slurm_name
            if (run_dir / "checkpoints").is_dir() and resume is None:
                resume = "auto"  # a requeued job continues in its folder
        elif resume == "auto":
            candidates = sorted((d for d in out.glob(f"{cfg.experiment.name}-*")
                                 if (d / "checkpoints").is_dir() and not (d / "summary.json").exists()),
                                key=lambda d: d.stat().st_mtime)
            run_dir = candidates[-1] if candidates else None
    if run_dir is None:
        run_dir = rundir.new_run_dir(str(out), cfg.experiment.name)
    return Path(run_dir), resume_file if resume_file else ("auto" if resume == "auto" else None)


def _echo(msg: str) -> None:
    print(msg, flush=True)


def train(cfg: Config, *, data_dir=None, run_dir=None, resume=None, echo=_echo, source=None) -> dict:
    """Train ``cfg`` end to end; return the summary dict (rank 0) or {} (other ranks)."""
    denv = distmod.detect()
    if cfg.train.early_stopping.patience and not cfg.data.val_split:
        raise ConfigError("train.early_stopping.patience needs a validation split (data.val_split)")
    if cfg.data.batch_size % (denv.world_size * cfg.train.grad_accum):
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} must be divisible by world size "
                          f"{denv.world_size} x train.grad_accum {cfg.train.grad_accum}")
    device = pick_device(cfg.runtime.device, denv.local_rank)
    if cfg.train.amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.amp=fp16 needs CUDA (device is {device.type}); use bf16")
    torch.set_num_threads(cpu_threads(cfg.runtime.threads, denv.local_world_size))
    set_deterministic(cfg.runtime.deterministic)
    owned = not stopflag.installed()  # the CLI installs it early; otherwise it is ours to remove
    stopflag.install()
    try:
        with distmod.process_group(denv, device.type, cfg.runtime.dist_timeout):
            return _Trainer(cfg, denv, device, echo).run(data_dir, run_dir, resume, source)
    finally:
        if owned:
            stopflag.uninstall()


class _Trainer:
    def __init__(self, cfg: Config, denv, device, echo):
        self.cfg, self.denv, self.device = cfg, denv, device
        self.main = denv.is_main
        self.echo = echo if self.main else (lambda *a, **k: None)

    # -- building -------------------------------------------------------------------------

    def run(self, data_dir, run_dir, resume, source):
        cfg, denv = self.cfg, self.denv
        run_dir, resume = _resolve_run_dir(cfg, run_dir, resume)
        if self.main:
            rundir.ensure_writable(run_dir)
        self.run_dir = Path(distmod.broadcast_object(denv, str(run_dir)))
        self.ckpt_dir = self.run_dir / "checkpoints"

        root, why = resolve_data_root(data_dir, cfg.data.root)
        if self.main:  # one process unpacks; the others wait and read
            datamod.prepare(datamod.DATASETS[cfg.data.dataset], root)
        distmod.barrier(denv)
        t0 = time.time()
        self.splits = datamod.load(cfg.data.dataset, root, val_split=cfg.data.val_split, subset=cfg.data.subset,
                                   seed=cfg.experiment.seed, device=self.device)
        self.data_seconds = time.time() - t0
        spec = self.splits.spec
        self.mean, self.std = spec.mean, spec.std

        seed_everything(cfg.experiment.seed)
        self.raw_model = build_model(cfg.model).to(self.device)
        if cfg.runtime.channels_last:
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)
        model = self.raw_model
        if denv.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.ddp_model = model
        self.model = torch.compile(model) if cfg.train.compile else model
        self.opt = make_optimizer(cfg, self.raw_model.parameters())
        per_step = cfg.data.batch_size
        self.loader = datamod.ResidentLoader(
            self.splits.train_x, self.splits.train_y, batch_size=per_step, mean=self.mean, std=self.std,
            seed=cfg.experiment.seed, augment_cfg=cfg.data.augment, rank=denv.rank, world_size=denv.world_size,
            channels_last=cfg.runtime.channels_last)
        if len(self.loader) == 0:
            raise ConfigError(f"data.batch_size={per_step} leaves no full step over "
                              f"{len(self.splits.train_x)} training images")
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(cfg, s, len(self.loader)))
        self.scaler = torch.amp.GradScaler("cuda") if cfg.train.amp == "fp16" else None
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
        self.amp_ctx = (lambda: torch.autocast(self.device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
        self.state = State()
        resumed_from = self._resume(resume)
        self.step_lr = self.opt.param_groups[0]["lr"]

        if self.main:
            (self.run_dir / "config.yaml").write_text(
                f"# resolved config of this run (source: {source or 'python'})\n" + cfg.to_yaml())
        params = count_params(self.raw_model)
        self.echo(f"mnist-hpc: {cfg.model['name']} ({params:,} params) on {cfg.data.dataset} "
                  f"({len(self.splits.train_x):,} train / "
                  f"{0 if self.splits.val_x is None else len(self.splits.val_x):,} val / "
                  f"{len(self.splits.test_x):,} test) · {self._device_text()} · data from {root} ({why})")
        self.echo(f"run folder: {self.run_dir}" + (f" · resumed from {resumed_from}" if resumed_from else ""))
        self.tb = None
        if cfg.experiment.tensorboard and self.main:
            from mnist_hpc.runs.tblog import TensorBoardLogger

            self.tb = TensorBoardLogger(self.run_dir)
        try:
            self.signals = stopflag.install()  # already installed by train(): returns it
            self._loop()
            return self._finish(params)
        finally:
            if self.tb:
                self.tb.close()

    def _device_text(self) -> str:
        d = self.device
        name = torch.cuda.get_device_name(d) if d.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
        ws = f" × {self.denv.world_size} ranks ({self.denv.launcher})" if self.denv.distributed else ""
        amp = f" · {self.cfg.train.amp}" if self.cfg.train.amp != "none" else ""
        return f"{d.type} ({name}){ws}{amp}"

    # -- checkpoints ----------------------------------------------------------------------

    def _resume(self, resume):
        if resume is None:
            return None
        if resume == "auto":
            path, state = ckpt.newest_valid(self.ckpt_dir, warn=self.echo)
            if path is None:
                self.echo(f"--resume auto: no checkpoint in {self.ckpt_dir}; starting from scratch")
                return None
        else:
            path, state = resume, ckpt.load(resume)
        ckpt.check_compatible(state, self.cfg.to_dict(), path)
        try:
            self.raw_model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(f"{path}: checkpoint does not fit this model/config: "
                            f"{str(e).splitlines()[0][:160]}") from None
        s = self.state
        for k in ("epoch", "step", "global_step", "history", "best_val", "best_epoch", "bad_epochs",
                  "partial", "requeues", "train_seconds", "images_seen", "step_seconds"):
            setattr(s, k, state[k])
        ckpt.set_rng_state(state["rng"])
        now = time.time()
        stopped = state.get("saved_at", now)
        s.requeues.append({"epoch": s.epoch, "step": s.step, "signal": state.get("signal"),
                           "stopped_at": stopped, "resumed_at": now,
                           "lost_seconds": round(now - stopped, 1),
                           "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)})
        return path

    def _save(self, best=False, signal_name=None):
        distmod.barrier(self.denv)  # all ranks are at the same step
        if self.main:
            s = self.state
            payload = {k: getattr(s, k) for k in s.__dataclass_fields__}
            payload.update(model=self.raw_model.state_dict(), optimizer=self.opt.state_dict(),
                           scheduler=self.sched.state_dict(),
                           scaler=self.scaler.state_dict() if self.scaler else None,
                           rng=ckpt.rng_state(), config=self.cfg.to_dict(), saved_at=time.time(),
                           signal=signal_name)
            ckpt.save(payload, self.ckpt_dir, keep=self.cfg.train.checkpoint.keep, best=best)
        distmod.barrier(self.denv)

    # -- the loop -------------------------------------------------------------------------

    def _train_step(self, xb, yb, gsize, bad_step, step_id):
        cfg = self.cfg
        accum = cfg.train.grad_accum
        chunks = list(zip(xb.tensor_split(accum), yb.tensor_split(accum)))
        scale = self.denv.world_size / gsize  # DDP averages over ranks: this makes it a global mean
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for i, (xc, yc) in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = self.ddp_model.no_sync() if (self.denv.distributed and not last) else nullcontext()
            with sync:
                with self.amp_ctx():
                    out = self.model(xc)
                    loss = F.cross_entropy(out.float(), yc, reduction="sum",
                                           label_smoothing=cfg.train.label_smoothing)
                if self.scaler is not None:
                    self.scaler.scale(loss * scale).backward()
                else:
                    (loss * scale).backward()
            loss_sum += loss.detach()
            correct += (out.detach().argmax(1) == yc).sum()
        if cfg.train.grad_clip:
            if self.scaler is not None:
                self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.train.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step_lr = self.opt.param_groups[0]["lr"]  # the rate this step used, for the log
        self.sched.step()
        bad = ~torch.isfinite(loss_sum)
        bad_step = torch.where(bad & (bad_step < 0), torch.full_like(bad_step, step_id), bad_step)
        return loss_sum, correct, bad_step

    def _check_finite(self, bad_step):
        """Raise if any rank saw a non-finite loss (one host sync: called at log/save points)."""
        b = bad_step.clone()
        if self.denv.distributed:
            import torch.distributed as dist

            dist.all_reduce(b, op=dist.ReduceOp.MAX)
        b = int(b.item())
        if b >= 0:
            raise UserError(f"training diverged: the loss became NaN/infinite at optimizer step {b} "
                            f"(epoch {b // len(self.loader) + 1}); lower optim.lr or set train.grad_clip. "
                            f"The last good checkpoint is kept in {self.ckpt_dir}")

    def _loop(self):
        cfg, s, denv = self.cfg, self.state, self.denv
        E, steps = cfg.train.epochs, len(self.loader)
        ck = cfg.train.checkpoint
        last_ckpt_time = time.time()
        sync_every = 20 if denv.distributed else 1
        use_bar = self.main and sys.stdout.isatty()
        while s.epoch < E:
            epoch = s.epoch
            self.model.train()
            p = s.partial or {}
            loss_sum = torch.tensor(p.get("loss_sum", 0.0), device=self.device)
            correct = torch.tensor(p.get("correct", 0), device=self.device, dtype=torch.long)
            seen = p.get("seen", 0)
            ep_seconds = p.get("seconds", 0.0)
            bad_step = torch.tensor(-1, device=self.device)
            t_start = time.time()
            bar = None
            if use_bar:
                from tqdm import tqdm

                bar = tqdm(total=steps, initial=s.step, desc=f"epoch {epoch + 1}/{E}", leave=False,
                           unit="step", dynamic_ncols=True)
            stop = None
            for step, xb, yb, gsize in self.loader.batches(epoch, s.step):
                ls, c, bad_step = self._train_step(xb, yb, gsize, bad_step, s.global_step)
                loss_sum += ls
                correct += c
                seen += len(yb)
                s.step, s.global_step = step + 1, s.global_step + 1
                if bar:
                    bar.update(1)
                # every rank must agree on when to stop or checkpoint: decide on a shared tensor
                want_ckpt = (ck.every and ((ck.unit == "steps" and s.global_step % int(ck.every) == 0)
                                           or (ck.unit == "minutes" and time.time() - last_ckpt_time >= ck.every * 60)))
                if s.global_step % sync_every == 0 or self.signals.received or want_ckpt:
                    if denv.distributed:
                        flags = torch.tensor([float(self.signals.received is not None), float(bool(want_ckpt)),
                                              float(self.signals.wants_requeue(cfg.runtime.requeue_signal))])
                        flags = distmod.all_sum(denv, flags.to(self.device)).cpu()
                        stop_now, ck_now, requeue = flags[0] > 0, flags[1] > 0, flags[2] > 0
                    else:  # one process: plain bools, no tensor built and indexed at every step
                        stop_now, ck_now = self.signals.received is not None, bool(want_ckpt)
                        requeue = self.signals.wants_requeue(cfg.runtime.requeue_signal)
                    if (stop_now or ck_now) and s.step < steps:
                        self._check_finite(bad_step)
                        s.partial = self._partial(loss_sum, correct, seen, ep_seconds + time.time() - t_start)
                        self._save(signal_name=self.signals.name if stop_now else None)
                        last_ckpt_time = time.time()
                        if stop_now:
                            stop = bool(requeue)
                            break
            if bar:
                bar.close()
            if stop is not None:
                self._stop(stop)
            ep_seconds += time.time() - t_start
            self._check_finite(bad_step)
            row = self._end_epoch(epoch, loss_sum, correct, seen, ep_seconds)
            improved = False
            if row["val_acc"] is None:  # no validation split: the latest epoch is the one reported
                s.best_epoch = epoch + 1
            elif row["val_acc"] > s.best_val + cfg.train.early_stopping.min_delta:
                improved = True
                s.best_val, s.best_epoch, s.bad_epochs = row["val_acc"], epoch + 1, 0
            else:
                s.bad_epochs += 1
            s.epoch, s.step, s.partial = epoch + 1, 0, {}
            patience = cfg.train.early_stopping.patience
            early = bool(patience and s.bad_epochs >= patience)
            done = s.epoch >= E or early
            if (ck.unit == "epochs" and ck.every and s.epoch % int(ck.every) == 0) or done or improved:
                self._save(best=improved)
                last_ckpt_time = time.time()
            if early:
                self.echo(f"early stopping: validation accuracy has not improved for {patience} epochs "
                          f"(best {s.best_val * 100:.2f}% at epoch {s.best_epoch})")
                break

    def _partial(self, loss_sum, correct, seen, seconds):
        return {"loss_sum": float(loss_sum.item()), "correct": int(correct.item()), "seen": seen, "seconds": seconds}

    def _stop(self, requeue: bool):
        s = self.state
        where = f"epoch {s.epoch + 1}, step {s.step}"
        job = os.environ.get("SLURM_JOB_ID")
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)
        if requeue and job and self.main:
            if restarts >= self.cfg.runtime.max_requeues:
                self.echo(f"checkpoint saved at {where}; not requeueing: {restarts} requeues already "
                          f"(runtime.max_requeues={self.cfg.runtime.max_requeues})")
            else:
                r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
                if r.returncode == 0:
                    self.echo(f"checkpoint saved at {where}; requeued Slurm job {job} "
                              f"(restart {restarts + 1}); it will resume in {self.run_dir}")
                    raise Interrupted("requeued", requeued=True)
                self.echo(f"checkpoint saved at {where}; `scontrol requeue {job}` failed: "
                          f"{(r.stderr or r.stdout).strip()[:200]}")
        self.echo(f"stopped by signal at {where}; checkpoint saved in {self.ckpt_dir}. "
                  f"Resume with: mnist-hpc train CONFIG --run-dir {self.run_dir} --resume auto")
        raise Interrupted("interrupted", requeued=False)

    def _end_epoch(self, epoch, loss_sum, correct, seen, seconds):
        cfg, s, denv = self.cfg, self.state, self.denv
        totals = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), device=self.device).double()])
        distmod.all_sum(denv, totals)
        n = totals[2].item()
        train_loss, train_acc = totals[0].item() / n, totals[1].item() / n
        s.images_seen += int(n)
        s.step_seconds += seconds
        val = None
        if self.splits.val_x is not None:
            val = evaluate(self.model, self.splits.val_x, self.splits.val_y, self.mean, self.std,
                           cfg.data.eval_batch_size, denv=denv, amp_ctx=self.amp_ctx(),
                           channels_last=cfg.runtime.channels_last)
        s.train_seconds += seconds
        lr = self.step_lr  # used by the epoch's last step (the scheduler has moved on since)
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 6),
               "val_loss": round(val["loss"], 6) if val else None,
               "val_acc": round(val["accuracy"], 6) if val else None,
               "lr": lr, "seconds": round(seconds, 3), "images_per_s": round(n / max(seconds, 1e-9), 1)}
        s.history.append(row)
        if self.main:
            rundir.write_metrics_csv(self.run_dir / "metrics.csv", s.history)
            if self.tb:
                self.tb.log_epoch(epoch + 1, row)
        vtxt = f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc'] * 100:6.2f}%" if val else ""
        self.echo(f"epoch {epoch + 1:>3}/{cfg.train.epochs}  loss {train_loss:.4f}  acc {train_acc * 100:6.2f}%"
                  f"{vtxt}  lr {lr:.2e}  {seconds:6.1f} s  {_rate(row['images_per_s'])} img/s")
        return row

    # -- the end --------------------------------------------------------------------------

    def _finish(self, params):
        cfg, s = self.cfg, self.state
        best_path = self.ckpt_dir / "best.pt"
        if cfg.data.val_split and best_path.exists() and cfg.train.early_stopping.patience:
            # early stopping: report the test figures of the best epoch's weights
            self.raw_model.load_state_dict(ckpt.load(best_path, map_location=self.device)["model"])
        t0 = time.time()
        test = evaluate(self.model, self.splits.test_x, self.splits.test_y, self.mean, self.std,
                        cfg.data.eval_batch_size, denv=self.denv, amp_ctx=self.amp_ctx(), tta=cfg.train.tta,
                        channels_last=cfg.runtime.channels_last)
        eval_seconds = time.time() - t0
        if not self.main:
            return {}
        from mnist_hpc.training import metrics as M

        names = list(self.splits.spec.classes)
        per_class = M.per_class_metrics(test["confusion"], names)
        summary = {
            "status": "completed",
            "test_accuracy": round(test["accuracy"], 6),
            "test_loss": round(test["loss"], 6),
            "best_val_accuracy": s.best_val if s.best_val >= 0 else None,
            "best_epoch": s.best_epoch,
            "epochs_run": len(s.history),
            "macro_f1": round(M.macro_f1(per_class), 6),
            "per_class": per_class,
            "confusion_matrix": test["confusion"],
            "params": params,
            "model_size_mb": round(size_mb(self.raw_model), 3),
            "train_seconds": round(s.train_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "data_seconds": round(self.data_seconds, 3),
            "total_seconds": round(time.time() - PROCESS_START, 3),
            "images_per_s": round(s.images_seen / max(s.step_seconds, 1e-9), 1),
            "device": self._device_text(),
            "world_size": self.denv.world_size,
            "launcher": self.denv.launcher,
            "precision": cfg.train.amp if cfg.train.amp != "none" else "fp32",
            "global_batch_size": cfg.data.batch_size,
            "per_rank_batch_size": cfg.data.batch_size // self.denv.world_size,
            "grad_accum": cfg.train.grad_accum,
            "tta": cfg.train.tta,
            "dataset": cfg.data.dataset,
            "model": cfg.model["name"],
            "config_name": cfg.experiment.name,
            "seed": cfg.experiment.seed,
            "requeues": s.requeues,
            **rundir.provenance(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(PROCESS_START)),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._plots(test, names)
        rundir.write_json(self.run_dir / "summary.json", summary)
        self.echo(f"test accuracy {test['accuracy'] * 100:.2f}% · loss {test['loss']:.4f} · "
                  f"{s.train_seconds:.1f} s training · {summary['total_seconds']:.0f} s total · {self.run_dir}/")
        return summary

    def _plots(self, test, names):
        from mnist_hpc.runs import plots

        pdir = self.run_dir / "plots"
        pdir.mkdir(exist_ok=True)
        plots.learning_curves(self.state.history, pdir / "learning_curves.png")
        plots.confusion_matrix_plot(test["confusion"], names, pdir / "confusion_matrix.png",
                                    title=f"{self.cfg.experiment.name}: test confusion matrix")
        all_wrong = (test["local_pred"] != test["local_y"]).nonzero().flatten()
        wrong = all_wrong[:36]
        probs = test["local_probs"][wrong].max(1).values
        plots.misclassified_grid(test["local_x"][wrong].cpu().numpy(), test["local_y"][wrong].tolist(),
                                 test["local_pred"][wrong].tolist(), probs.tolist(), names,
                                 pdir / "misclassified.png", total=len(all_wrong))


def _rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


# --------------------------------------------------------------------------- evaluate / predict


def load_for_inference(path, device="cpu"):
    """A run folder or checkpoint file -> (model, config, checkpoint path)."""
    p = Path(path)
    if p.is_dir():
        cdir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        candidates = ([cdir / "best.pt"] if (cdir / "best.pt").exists() else []) + ckpt.list_checkpoints(cdir)
        if not candidates:
            raise UserError(f"{p}: no checkpoint found (expected {cdir}/best.pt or last-*.pt)")
        p = candidates[0]
    state = ckpt.load(p, map_location=device)
    cfg = config_from_dict(state.get("config", {}), source=f"{p} (stored config)")
    model = build_model(cfg.model).to(device)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"{p}: checkpoint weights do not fit model {cfg.model['name']}: "
                        f"{str(e).splitlines()[0][:160]}") from None
    model.eval()
    return model, cfg, p


def evaluate_runs(paths, *, data_dir=None, tta=False, device="auto", batch_size=2000):
    """Test accuracy of each run and (with several) of their averaged predictions."""
    dev = pick_device(device)
    torch.set_num_threads(cpu_threads(None))
    loaded = [load_for_inference(p, dev) for p in paths]
    datasets = {c.data.dataset for _, c, _ in loaded}
    if len(datasets) > 1:
        raise UserError(f"--ensemble: the runs were trained on different datasets ({', '.join(sorted(datasets))})")
    cfg = loaded[0][1]
    root, _ = resolve_data_root(data_dir, cfg.data.root)
    spec = datamod.DATASETS[cfg.data.dataset]
    datamod.prepare(spec, root)
    x, y = datamod.read_split(spec, root, False)
    x, y = x.to(dev), y.to(dev)
    results, total = [], 0
    for model, c, p in loaded:
        probs = predict_logits(model, x, spec.mean, spec.std, batch_size, tta=tta)
        total = total + probs
        results.append({"checkpoint": str(p), "test_accuracy": (probs.argmax(1) == y).float().mean().item(),
                        "test_loss": F.nll_loss(probs.clamp_min(1e-12).log(), y).item()})
    ens = None
    if len(loaded) > 1:
        probs = total / len(loaded)
        ens = {"test_accuracy": (probs.argmax(1) == y).float().mean().item(),
               "test_loss": F.nll_loss(probs.clamp_min(1e-12).log(), y).item(), "members": len(loaded)}
    return results, ens


def predict_images(checkpoint_path, images, device="cpu"):
    """Top-3 (class name, probability) for each image file."""
    from mnist_hpc.training import imageprep

    model, cfg, _ = load_for_inference(checkpoint_path, device)
    spec = datamod.DATASETS[cfg.data.dataset]
    arrays = [imageprep.to_mnist(imageprep.load_image(p)) for p in images]
    x = torch.stack([torch.from_numpy(a) for a in arrays]).to(device)
    probs = predict_logits(model, x, spec.mean, spec.std, 256)
    out = []
    for path, pr in zip(images, probs):
        top = pr.topk(3)
        out.append((path, [(spec.classes[i], v) for v, i in zip(top.values.tolist(), top.indices.tolist())]))
    return out


__all__ = ["train", "evaluate_runs", "predict_images", "EXIT_INTERRUPTED"]
