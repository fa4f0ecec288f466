"""Shared helpers of the benchmarks: device/threads set-up, the engine's training step, timing
(with CUDA synchronisation), statistics, tables and the JSON results files.

The benchmarks reuse the engine's building blocks (``ResidentLoader``, ``build_model``,
``make_optimizer``, ``lr_factor``, ``evaluate`` and the trainer's one ``_train_step``) so what
is measured is what ``mnist-hpc train`` runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- statistics / output


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def mean_sd(xs):
    """(mean, sample sd) of the values that are not None; (None, None) when there are none."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt_ms(m, s, unit="s", digits=2):
    if m is None:
        return "—"
    return f"{m:.{digits}f} ± {s:.{digits}f} {unit}".rstrip()


def rate(x) -> str:
    if x is None:
        return "—"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def table(headers, rows) -> str:
    cells = [[str(h) for h in headers]] + [["—" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells[0], widths))), line]
    for r in cells[1:]:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def environment(device=None) -> dict:
    """Hardware and software the figures were measured on (stored with every result)."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "host": platform.node(),
           "cpu": _cpu_name(), "logical_cpus": os.cpu_count(),
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        env["affinity_cpus"] = len(os.sched_getaffinity(0))
        env["load_average_1min"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        pass
    if "torch" in sys.modules:
        import torch

        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        if device is not None and device.type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(device)
        try:
            import torchvision

            env["torchvision"] = torchvision.__version__
        except ImportError:
            pass
    if device is not None:
        env["device"] = str(device)
    for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    return env


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_results(name: str, payload: dict, out=None) -> Path:
    """Write ``benchmarks/results/<name>.json`` (or ``out``) atomically; return the path."""
    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- torch set-up


def setup_device(name: str = "auto", threads=None):
    """The engine's device choice and CPU thread count; returns the torch.device."""
    import torch

    from mnist_hpc.training.engine import cpu_threads, pick_device

    device = pick_device(name)
    torch.set_num_threads(cpu_threads(threads))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def sync(device) -> None:
    """Wait for queued device work so a wall-clock reading means something."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def data_root(data_dir=None) -> str:
    from mnist_hpc.config.datasets import resolve_data_root

    return resolve_data_root(data_dir, None)[0]


def mnist_train(device, data_dir=None):
    """The real MNIST training images (uint8) and labels, on ``device``."""
    from mnist_hpc.training import data as datamod
    from mnist_hpc.config.datasets import DATASETS

    root = data_root(data_dir)
    datamod.prepare(DATASETS["mnist"], root, download=False)
    x, y = datamod.read_split(DATASETS["mnist"], root, True)
    return x.to(device), y.to(device)


def load_splits(cfg, device, data_dir=None):
    from mnist_hpc.training import data as datamod

    return datamod.load(cfg.data.dataset, data_root(data_dir or cfg.data.root), val_split=cfg.data.val_split,
                        subset=cfg.data.subset, seed=cfg.experiment.seed, device=device)


class StepRunner:
    """The engine's own training step (``_Trainer._train_step``) on a model/optimizer/schedule
    built the way ``mnist-hpc train`` builds them, for one process."""

    def __init__(self, cfg, device, steps_per_epoch: int):
        import torch

        from mnist_hpc.training import distributed as distmod
        from mnist_hpc.training.engine import _Trainer, make_optimizer, lr_factor
        from mnist_hpc.training.models import build_model

        t = _Trainer(cfg, distmod.DistEnv("single"), device, echo=lambda *a, **k: None)
        t.raw_model = build_model(cfg.model).to(device)
        if cfg.runtime.channels_last:
            t.raw_model = t.raw_model.to(memory_format=torch.channels_last)
        t.ddp_model = t.raw_model
        t.model = torch.compile(t.raw_model) if cfg.train.compile else t.raw_model
        t.opt = make_optimizer(cfg, t.raw_model.parameters())
        t.sched = torch.optim.lr_scheduler.LambdaLR(t.opt, lambda s: lr_factor(cfg, s, steps_per_epoch))
        t.scaler = torch.amp.GradScaler("cuda") if cfg.train.amp == "fp16" else None
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
        t.amp_ctx = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
        self.trainer, self.device, self.cfg = t, device, cfg
        self.bad_step = torch.tensor(-1, device=device)
        self.global_step = 0

    @property
    def model(self):
        return self.trainer.model

    def step(self, xb, yb, gsize=None):
        self.trainer.model.train()
        loss, correct, self.bad_step = self.trainer._train_step(xb, yb, gsize or len(yb), self.bad_step,
                                                                self.global_step)
        self.global_step += 1
        return loss, correct

    def evaluate(self, x_u8, y, mean, std):
        from mnist_hpc.training.engine import evaluate

        t = self.trainer
        return evaluate(t.model, x_u8, y, mean, std, self.cfg.data.eval_batch_size, amp_ctx=t.amp_ctx(),
                        channels_last=self.cfg.runtime.channels_last)


def synthetic_mnist(n: int, device, seed: int = 0):
    """uint8 images that look like MNIST's value distribution (mostly zeros) and labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 28, 28, generator=g) * 400 - 150).clamp(0, 255).to(torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return x.to(device), y.to(device)


def timed(fn, device) -> float:
    """Seconds of ``fn()``, device work included."""
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t
