"""A short timed probe for ``mnist-hpc estimate``: seconds per training step of a config's model
and batch on this machine's device, measured once and stored
(``$XDG_CACHE_HOME/mnist-hpc/probes.json``, keyed by the model section, batch size, image shape
and host: ``cluster.estimate.probe_key``), then reused, also by the torch-free dry runs. Random tensors of the dataset's shape stand
in for the data (no dataset needed); the step is forward, loss, backward and the optimizer step.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime

from mnist_hpc.cluster.estimate import Probe, probe_key, read_store, store_path

WARMUP, STEPS, MAX_STEPS, MIN_SECONDS = 3, 5, 50, 1.0  # at least 5 timed steps, up to 50 within ~1 s


def _device_and_name():
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), f"cuda ({torch.cuda.get_device_name(0)})"
    return torch.device("cpu"), f"cpu ({torch.get_num_threads()} threads)"


def probe(cfg, *, reuse: bool = True) -> Probe:
    """Seconds per training step of ``cfg``'s model at ``cfg.data.batch_size`` here."""
    import torch

    from mnist_hpc.config.datasets import MNIST_SHAPE, data_shape
    from mnist_hpc.training.build import make_optimizer
    from mnist_hpc.training.models import build_model

    shape = data_shape(cfg.data) or MNIST_SHAPE
    device, name = _device_and_name()
    key = probe_key(cfg)
    stored = read_store()
    if reuse and isinstance(stored.get(key), dict):
        s = stored[key]
        return Probe(float(s["step_seconds"]), s["device"], f"stored probe of {s['when']}")
    model = build_model(cfg.model, shape, load_weights=False).to(device)
    model.train()
    optimizer = make_optimizer(cfg, model.parameters())
    x = torch.randn(cfg.data.batch_size, *shape.input_shape, device=device)
    y = torch.randint(0, shape.num_classes, (cfg.data.batch_size,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    for _ in range(WARMUP):
        step()
    times: list[float] = []  # each step timed alone; the median resists a busy machine's outliers
    began = time.perf_counter()
    while len(times) < STEPS or (len(times) < MAX_STEPS and time.perf_counter() - began < MIN_SECONDS):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    stored[key] = {
        "step_seconds": seconds,
        "device": name,
        "when": when,
        "batch": cfg.data.batch_size,
        "steps": len(times),
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    path = store_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stored, indent=1) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # not stored: measured again next time
    return Probe(seconds, name, f"median of {len(times)} probe steps just now")
