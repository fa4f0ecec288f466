"""Shared helpers of the benchmarks: device/threads set-up, the trainer's step, timing (with
device synchronisation), statistics, tables and the JSON results files.

The benchmarks build through training's public pieces (``build_components``: model, optimizer,
schedule, precision policy and ``ResidentLoader``; ``train_step``; ``evaluate``), so what is
measured is what ``mnist-hpc train`` runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
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
    out = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells[0], widths, strict=False))
        ),
        line,
    ]
    for r in cells[1:]:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))
            )
        )
    return "\n".join(out)


def environment(device=None) -> dict:
    """Hardware and software the figures were measured on (stored with every result)."""
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
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
    for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    cpus = _job_cpus()
    if cpus:
        env["SLURM_CPUS_PER_TASK"] = str(cpus)
    return env


def _job_cpus():
    """The CPUs per task of the Slurm job this runs in (None outside one)."""
    from mnist_hpc.cluster.env import current

    return current().cpus_per_task


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_results(name: str, payload: dict, out=None) -> Path:
    """Write ``benchmarks/results/<name>.json`` (or ``out``) atomically; return the path."""
    from mnist_hpc.runs.folder import atomic_write

    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(payload, indent=1, default=str) + "\n")


# --------------------------------------------------------------------------- torch set-up


def setup_device(name: str = "auto", threads=None):
    """This process readied as ``mnist-hpc train`` readies its own (``training.build.setup_host``:
    device, threads, allocator, numeric policy), so that baselines measured beside training run
    under the same settings; returns the torch.device."""
    from mnist_hpc.training.build import setup_host

    return setup_host(name, threads=threads, cpus=_job_cpus())[0]


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
    from mnist_hpc.config.datasets import DATASETS
    from mnist_hpc.training import data as datamod

    root = data_root(data_dir)
    datamod.prepare(DATASETS["mnist"], root, download=False)
    x, y = datamod.read_split(DATASETS["mnist"], root, True)
    return x.to(device), y.to(device)


def load_splits(cfg, device, data_dir=None):
    from mnist_hpc.training import data as datamod

    return datamod.load(
        cfg.data.dataset,
        data_root(data_dir or cfg.data.root),
        val_split=cfg.data.val_split,
        subset=cfg.data.subset,
        seed=cfg.experiment.seed,
        device=device,
    )


class StepRunner:
    """Training's own step on components built the way ``mnist-hpc train`` builds them (one
    process): ``build_components`` over the training tensors ``x``/``y``; ``.loader`` batches them."""

    def __init__(self, cfg, device, x, y, mean=0.1307, std=0.3081):
        import torch

        from mnist_hpc.training.build import build_components

        self.parts = build_components(cfg, device, None, x, y, mean=mean, std=std)
        self.device, self.cfg = device, cfg
        self.bad_step = torch.tensor(-1, device=device)
        self.global_step = 0

    @property
    def model(self):
        return self.parts.model

    @property
    def loader(self):
        return self.parts.loader

    def step(self, xb, yb, gsize=None):
        from mnist_hpc.training.trainer import mark_nonfinite, train_step

        self.parts.model.train()
        loss, correct = train_step(self.parts, self.cfg, xb, yb, gsize or len(yb))
        self.bad_step = mark_nonfinite(self.bad_step, loss, self.global_step)
        self.global_step += 1
        return loss, correct

    def check_finite(self) -> None:
        """Raise if a step's loss was NaN/infinite (one host synchronisation)."""
        from mnist_hpc.training.trainer import first_nonfinite

        bad = first_nonfinite(self.bad_step, self.parts.denv)
        if bad is not None:
            raise RuntimeError(f"the loss became NaN/infinite at optimizer step {bad}")

    def evaluate(self, x_u8, y, mean, std):
        from mnist_hpc.training.evaluate import evaluate

        return evaluate(
            self.parts.model,
            x_u8,
            y,
            mean,
            std,
            self.cfg.data.eval_batch_size,
            autocast=self.parts.autocast,
            channels_last=self.cfg.runtime.channels_last,
            num_classes=10,
        )  # the benchmarks train on MNIST


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
