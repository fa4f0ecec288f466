"""The training loop: the step, the epoch end, checkpoints, and stopping on a signal.

Data sits on the device; the step loop never synchronises with the host except at sync points.
Under DDP every rank trains on its shard of one permutation; losses are scaled so that the
averaged gradient equals a one-process step on the global batch; metrics are reduced as sums.
Signals only set a flag (stopflag.py). Whether to stop or checkpoint is decided at sync points
that every rank reaches at the same optimizer step (a step count, never a clock or a signal), on
flags summed over the ranks; so every rank enters every collective at the same step, whichever
rank saw the signal or whose clock said a checkpoint was due. After the checkpoint of a stop,
rank 0 asks ``on_preempt`` (the cluster layer may requeue the job) and the run raises Interrupted.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mnist_hpc.errors import CheckpointError, Interrupted, UserError
from mnist_hpc.runs.loggers import Trackers
from mnist_hpc.training import checkpoint as ckpt
from mnist_hpc.training import distributed as distmod
from mnist_hpc.training.context import PreemptInfo
from mnist_hpc.training.evaluate import evaluate

SYNC_EVERY_DDP = 20  # optimizer steps between the ranks' stop/checkpoint agreements under DDP


@dataclass
class State:
    """Everything about the run's progress that a checkpoint carries."""

    epoch: int = 0  # epoch in progress (or next to start)
    step: int = 0  # next step within that epoch
    global_step: int = 0
    history: list = field(default_factory=list)  # one dict per finished epoch
    best_val: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    partial: dict = field(default_factory=dict)  # accumulators of the epoch in progress, over all ranks
    requeues: list = field(default_factory=list)
    train_seconds: float = 0.0
    images_seen: int = 0
    step_seconds: float = 0.0
    wall_seconds: float = 0.0  # wall time of the earlier starts of this run, up to their last checkpoint


RESTORED = [f for f in State.__dataclass_fields__ if f != "wall_seconds"]  # wall_seconds: newer files only


@dataclass
class EpochSums:
    """The epoch in progress on this rank: its sums (device tensors: no host sync per step) and clock."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int
    seconds: float  # the epoch's training seconds before t_start (an earlier start's, from its checkpoint)
    bad_step: torch.Tensor  # the first step with a non-finite loss, -1 = none (mark_nonfinite)
    t_start: float  # when this start's share of the epoch's clock began
    warm_images: int = 0  # the images of this epoch's warm-up step (not in its images/s)


def sync_device(device) -> None:
    """Wait for the device's queued work, so that a clock read afterwards counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# --------------------------------------------------------------------------- the step


def train_step(parts, cfg, xb, yb, gsize: int):
    """One optimizer step on this rank's batch (``train.grad_accum`` micro-batches) of a global
    batch of ``gsize`` images; returns the summed loss and the correct count as device tensors."""
    accum = cfg.train.grad_accum
    denv = parts.denv
    chunks = list(zip(xb.tensor_split(accum), yb.tensor_split(accum), strict=False))
    scale = denv.world_size / gsize  # DDP averages over ranks: this makes it a global mean
    loss_sum = torch.zeros((), device=xb.device)
    correct = torch.zeros((), device=xb.device, dtype=torch.long)
    for i, (xc, yc) in enumerate(chunks):
        last = i == len(chunks) - 1
        with parts.ddp_model.no_sync() if (denv.distributed and not last) else nullcontext():
            with parts.autocast():
                out = parts.model(xc)
                loss = F.cross_entropy(
                    out.float(), yc, reduction="sum", label_smoothing=cfg.train.label_smoothing
                )
            if parts.scaler is not None:
                parts.scaler.scale(loss * scale).backward()
            else:
                (loss * scale).backward()
        loss_sum += loss.detach()
        correct += (out.detach().argmax(1) == yc).sum()
    if cfg.train.grad_clip:
        if parts.scaler is not None:
            parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.raw_model.parameters(), cfg.train.grad_clip)
    if parts.scaler is not None:
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scheduler.step()
    return loss_sum, correct


def mark_nonfinite(bad_step, loss_sum, step_id: int):
    """``bad_step`` (a device tensor, -1 = none yet) set to ``step_id`` at the first non-finite loss,
    without a host synchronisation."""
    bad = ~torch.isfinite(loss_sum)
    return torch.where(bad & (bad_step < 0), torch.full_like(bad_step, step_id), bad_step)


def first_nonfinite(bad_step, denv) -> int | None:
    """The step at which some rank's loss became non-finite, or None (a collective: every rank calls it)."""
    b = bad_step.clone()
    if denv.distributed:
        import torch.distributed as dist

        dist.all_reduce(b, op=dist.ReduceOp.MAX)
    b = int(b.item())
    return b if b >= 0 else None


# --------------------------------------------------------------------------- the loop


def rate_of(images: int, seconds: float, warm_images: int = 0, warm_seconds: float = 0.0) -> float:
    """Images per second of the steps after the warm-up step; with nothing after it, the whole."""
    if images > warm_images:
        return (images - warm_images) / max(seconds, 1e-9)
    return images / max(seconds + warm_seconds, 1e-9)


def shows_progress() -> bool:
    """Whether a progress bar is wanted by default: in a notebook (Jupyter, Colab), or where both
    stdout and stderr (the bar's stream) are a terminal; never into a log file or a pipe."""
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    if ip is not None and type(ip).__name__ in ("ZMQInteractiveShell", "Shell"):  # Jupyter, Colab
        return True
    return all(getattr(f, "isatty", lambda: False)() for f in (sys.stdout, sys.stderr))


class Trainer:
    """Runs ``parts`` over the epochs of ``cfg``; rank 0 writes metrics.csv and checkpoints."""

    def __init__(
        self,
        cfg,
        parts,
        splits,
        run_dir,
        *,
        stop,
        on_preempt,
        echo,
        progress=None,
        trackers=None,
        started=None,
    ):
        self.cfg, self.parts, self.splits = cfg, parts, splits
        self.denv = parts.denv
        self.device = splits.train_x.device
        self.main = self.denv.is_main
        self.run_dir, self.ckpt_dir = run_dir, run_dir / "checkpoints"
        self.stop, self.on_preempt, self.echo = stop, on_preempt, echo
        self.progress = progress
        self.trackers = trackers or Trackers.csv_only(run_dir)  # rank 0's loggers (runs/loggers)
        self.mean, self.std = splits.mean, splits.std
        self.state = State()
        self.extra_state: dict = {}  # kept in every checkpoint: the data's classes/normalisation, the model's code
        self.step_lr = parts.optimizer.param_groups[0]["lr"]
        self.started = started or time.time()  # when this process started (for wall_seconds)
        # The first step a process takes pays one-time costs (lazy library loading, kernel
        # selection, allocator growth): it is timed apart, so that seconds and images/s compare
        # like with like between runs (the first of a sweep paid 5.9 s, the others 0.1 s).
        self.warmup_seconds = 0.0
        self.warmup_images = 0  # over all ranks
        self.last_ckpt_time = 0.0  # when the last checkpoint was saved (fit starts this clock)

    # -- checkpoints ----------------------------------------------------------------------

    def resume(self, resume, restart_count: int = 0):
        """Load ``resume`` ("auto": the newest valid checkpoint of the run; or a path); the
        checkpoint path, or None when there was nothing to resume."""
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
        self._check_layout(state, path)
        p = self.parts
        try:
            p.raw_model.load_state_dict(state["model"])
            p.optimizer.load_state_dict(state["optimizer"])
            p.scheduler.load_state_dict(state["scheduler"])
            if p.scaler is not None and state.get("scaler"):
                p.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(
                f"{path}: checkpoint does not fit this model/config: {str(e).splitlines()[0][:160]}"
            ) from None
        s = self.state
        for k in RESTORED:
            setattr(s, k, state[k])
        s.wall_seconds = state.get("wall_seconds", 0.0)
        ckpt.set_rng_state(state["rng"])
        now = time.time()
        stopped = state.get("saved_at", now)
        s.requeues.append(
            {
                "epoch": s.epoch,
                "step": s.step,
                "signal": state.get("signal"),
                "stopped_at": stopped,
                "resumed_at": now,
                "lost_seconds": round(now - stopped, 1),
                "slurm_restart_count": restart_count,
            }
        )
        self.step_lr = p.optimizer.param_groups[0]["lr"]
        return path

    def _check_layout(self, state: dict, path) -> None:
        """Refuse a world size that cuts the epoch into other steps than the checkpoint's (a last
        batch smaller than the world size is dropped): the position and the schedule would shift.
        Any other world size resumes exactly: batches are global, the partial sums are too."""
        saved, now = state.get("steps_per_epoch"), len(self.parts.loader)
        if saved is not None and saved != now:
            w_old, w = state.get("world_size", "?"), self.denv.world_size
            raise CheckpointError(
                f"{path}: saved by {w_old} rank(s) with {saved} steps per epoch, but with {w} "
                f"rank(s) an epoch has {now} (a last batch smaller than the world size is "
                f"dropped): resume with {w_old} rank(s)"
            )

    def wall_seconds(self) -> float:
        """Wall time of this run over every start (each earlier one up to its last checkpoint)."""
        return self.state.wall_seconds + (time.time() - self.started)

    def save(self, best=False, signal_name=None):
        distmod.barrier(self.denv)  # all ranks are at the same step
        if self.main:
            s, p = self.state, self.parts
            payload = {k: getattr(s, k) for k in s.__dataclass_fields__}
            payload.update(
                model=p.raw_model.state_dict(),
                optimizer=p.optimizer.state_dict(),
                scheduler=p.scheduler.state_dict(),
                scaler=p.scaler.state_dict() if p.scaler else None,
                rng=ckpt.rng_state(),
                config=self.cfg.to_dict(),
                saved_at=time.time(),
                signal=signal_name,
                wall_seconds=self.wall_seconds(),
                world_size=self.denv.world_size,
                steps_per_epoch=len(p.loader),
                **self.extra_state,
            )
            ckpt.save(payload, self.ckpt_dir, keep=self.cfg.train.checkpoint.keep, best=best)
        distmod.barrier(self.denv)

    def _check_finite(self, bad_step):
        """Raise if any rank saw a non-finite loss (one host sync: called at sync points)."""
        b = first_nonfinite(bad_step, self.denv)
        if b is not None:
            raise UserError(
                f"training diverged: the loss became NaN/infinite at optimizer step {b} "
                f"(epoch {b // len(self.parts.loader) + 1}); lower optim.lr or set train.grad_clip. "
                f"The last good checkpoint is kept in {self.ckpt_dir}"
            )

    def _partial(self, loss_sum, correct, seen: int, seconds: float) -> dict:
        """The epoch's accumulators so far, summed over the ranks (a collective; seconds: their
        mean), for the checkpoint: a resume with any world size counts every image once."""
        totals = torch.cat(
            [
                torch.stack([loss_sum.double(), correct.double()]),
                torch.tensor([float(seen), seconds], dtype=torch.float64, device=self.device),
            ]
        )
        loss, right, n, secs = distmod.all_sum(self.denv, totals).tolist()
        return {
            "loss_sum": loss,
            "correct": round(right),
            "seen": round(n),
            "seconds": secs / self.denv.world_size,
            "ranks": self.denv.world_size,
        }

    # -- the loop -------------------------------------------------------------------------

    def _agree(self, steps_due: bool, clock_due: bool):
        """(stop, checkpoint, requeue) as every rank sees them: one small all-reduce under DDP."""
        signalled = self.stop.received is not None
        requeue = self.stop.wants_requeue(self.cfg.runtime.requeue_signal)
        if not self.denv.distributed:  # one process: plain bools, no tensor built at every step
            return signalled, steps_due or clock_due, requeue
        flags = torch.tensor([float(signalled), float(clock_due), float(requeue)], device=self.device)
        flags = distmod.all_sum(self.denv, flags).cpu()
        return bool(flags[0] > 0), steps_due or bool(flags[1] > 0), bool(flags[2] > 0)

    def _bar(self, epoch, steps):
        show = self.progress if self.progress is not None else shows_progress()
        if not (show and self.main):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=steps,
            initial=self.state.step,
            desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
            leave=False,
            unit="step",
            dynamic_ncols=True,
        )

    def fit(self):
        """Train from the state's epoch and step to the last epoch, or to an early stop."""
        s = self.state
        self.last_ckpt_time = time.time()
        while s.epoch < self.cfg.train.epochs:
            epoch = s.epoch
            self.parts.model.train()
            ep = self._epoch_sums()
            stop = self._run_steps(epoch, ep)
            if stop is not None:
                self._stop(stop)
            sync_device(self.device)  # the clock counts the epoch's queued device work
            ep.seconds += time.time() - ep.t_start
            self._check_finite(ep.bad_step)
            row = self._end_epoch(epoch, ep.loss_sum, ep.correct, ep.seen, ep.seconds, ep.warm_images)
            if self._next_epoch(epoch, row):
                break

    def _epoch_sums(self) -> EpochSums:
        """The epoch's sums at its start, or carried on from a checkpoint taken inside it."""
        p = self.state.partial or {}
        # the saved sums are over all ranks: rank 0 carries them on, the others start at zero
        # (a checkpoint of an earlier version holds rank 0's share only: every rank restores it)
        mine = p if self.main or "ranks" not in p else {}
        return EpochSums(
            loss_sum=torch.tensor(mine.get("loss_sum", 0.0), device=self.device),
            correct=torch.tensor(mine.get("correct", 0), device=self.device, dtype=torch.long),
            seen=mine.get("seen", 0),
            seconds=p.get("seconds", 0.0),
            bad_step=torch.tensor(-1, device=self.device),
            t_start=time.time(),
        )

    def _run_steps(self, epoch: int, ep: EpochSums) -> bool | None:
        """The epoch's remaining steps, checkpointing at the sync points that ask for it; None at
        the epoch's end, else (after a stop signal's checkpoint) whether a requeue is wanted."""
        s, ck = self.state, self.cfg.train.checkpoint
        steps = len(self.parts.loader)
        sync_every = SYNC_EVERY_DDP if self.denv.distributed else 1
        bar = self._bar(epoch, steps)
        stop = None
        for step, xb, yb, gsize in self.parts.loader.batches(epoch, s.step):
            self._step(ep, step, xb, yb, gsize)
            if bar:
                bar.update(1)
            # a sync point is a step count every rank reaches; a signal or a clock only sets a flag
            steps_due = bool(ck.every and ck.unit == "steps" and s.global_step % int(ck.every) == 0)
            if s.global_step % sync_every and not steps_due:
                continue
            clock_due = bool(
                ck.every and ck.unit == "minutes" and time.time() - self.last_ckpt_time >= ck.every * 60
            )
            stop_now, ck_now, requeue = self._agree(steps_due, clock_due)
            if (stop_now or ck_now) and s.step < steps:
                self._save_inside_epoch(ep, stop_now)
                if stop_now:
                    stop = requeue
                    break
        if bar:
            bar.close()
        return stop

    def _step(self, ep: EpochSums, step: int, xb, yb, gsize: int) -> None:
        """One optimizer step, added to the epoch's sums; the process's first is timed apart (warm-up)."""
        s, parts = self.state, self.parts
        self.step_lr = parts.optimizer.param_groups[0]["lr"]  # the rate this step uses, for the log
        ls, c = train_step(parts, self.cfg, xb, yb, gsize)
        ep.bad_step = mark_nonfinite(ep.bad_step, ls, s.global_step)
        ep.loss_sum += ls
        ep.correct += c
        ep.seen += len(yb)
        s.step, s.global_step = step + 1, s.global_step + 1
        if not self.warmup_images:  # this process's first step: off the epoch's clock
            sync_device(self.device)
            now = time.time()
            self.warmup_seconds, ep.t_start = now - ep.t_start, now
            self.warmup_images = ep.warm_images = len(yb) * self.denv.world_size

    def _save_inside_epoch(self, ep: EpochSums, stop_now: bool) -> None:
        """A checkpoint at a sync point inside the epoch, its sums so far (over the ranks) in the state."""
        s = self.state
        self._check_finite(ep.bad_step)
        sync_device(self.device)
        s.partial = self._partial(ep.loss_sum, ep.correct, ep.seen, ep.seconds + time.time() - ep.t_start)
        if self.main:  # the trackers' step scalars: numbers already on the host
            self.trackers.log_progress(s.global_step, s.partial, self.step_lr)
        self.save(signal_name=self.stop.name if stop_now else None)
        self.last_ckpt_time = time.time()

    def _next_epoch(self, epoch: int, row: dict) -> bool:
        """After the epoch's row: the best epoch so far, the state at the next epoch, the checkpoint
        when one is due; True when early stopping ends the run."""
        cfg, s = self.cfg, self.state
        ck = cfg.train.checkpoint
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
        done = s.epoch >= cfg.train.epochs or early
        if (ck.unit == "epochs" and ck.every and s.epoch % int(ck.every) == 0) or done or improved:
            self.save(best=improved)
            self.last_ckpt_time = time.time()
        if early:
            self.echo(
                f"early stopping: validation accuracy has not improved for {patience} epochs "
                f"(best {s.best_val * 100:.2f}% at epoch {s.best_epoch})"
            )
        return early

    def _stop(self, requeue: bool):
        """After the checkpoint of a stop signal: rank 0 asks on_preempt; every rank raises Interrupted."""
        s = self.state
        info = PreemptInfo(
            epoch=s.epoch,
            step=s.step,
            run_dir=self.run_dir,
            checkpoint_dir=self.ckpt_dir,
            signal=self.stop.name,
            requeue_requested=requeue,
        )
        if self.main and self.on_preempt(info):
            raise Interrupted("requeued")
        self.echo(
            f"stopped by signal at epoch {s.epoch + 1}, step {s.step}; checkpoint saved in {self.ckpt_dir}. "
            f"Resume with: mnist-hpc train {self.run_dir / 'config.yaml'} --run-dir {self.run_dir} --resume auto"
        )
        raise Interrupted("interrupted")

    def _end_epoch(self, epoch, loss_sum, correct, seen, seconds, warm_images=0):
        cfg, s, denv = self.cfg, self.state, self.denv
        totals = torch.stack(
            [loss_sum.double(), correct.double(), torch.tensor(float(seen), device=self.device).double()]
        )
        distmod.all_sum(denv, totals)
        n = totals[2].item()
        train_loss, train_acc = totals[0].item() / n, totals[1].item() / n
        s.images_seen += int(n)
        s.step_seconds += seconds
        val = None
        if self.splits.val_x is not None:
            val = evaluate(
                self.parts.model,
                self.splits.val_x,
                self.splits.val_y,
                self.mean,
                self.std,
                cfg.data.eval_batch_size,
                denv=denv,
                autocast=self.parts.autocast,
                channels_last=cfg.runtime.channels_last,
                num_classes=len(self.splits.classes),
            )
        s.train_seconds += seconds
        lr = self.step_lr  # used by the epoch's last step (the scheduler has moved on since)
        row = {
            "epoch": epoch + 1,
            "train_loss": round(train_loss, 6),
            "train_acc": round(train_acc, 6),
            "val_loss": round(val["loss"], 6) if val else None,
            "val_acc": round(val["accuracy"], 6) if val else None,
            "lr": lr,
            "seconds": round(seconds, 3),
            "images_per_s": round(rate_of(int(n), seconds, warm_images, self.warmup_seconds), 1),
        }
        s.history.append(row)
        if self.main:
            self.trackers.log_epoch(epoch + 1, s.global_step, row, s.history)  # metrics.csv and trackers
        vtxt = f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc'] * 100:6.2f}%" if val else ""
        self.echo(
            f"epoch {epoch + 1:>3}/{cfg.train.epochs}  loss {train_loss:.4f}  acc {train_acc * 100:6.2f}%"
            f"{vtxt}  lr {lr:.2e}  {seconds:6.1f} s  {rate_text(row['images_per_s'])} img/s"
            + (f"  (+{self.warmup_seconds:.1f} s warm-up)" if warm_images else "")
        )
        return row


def rate_text(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"
