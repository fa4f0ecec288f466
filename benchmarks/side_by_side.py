"""Side by side, in one run: the classic two-conv net (``cnn``, Adadelta lr 1.0, batch 64) trained
on the same number of images

  (a) the way users write it — ``torchvision.datasets.MNIST`` with
      ``Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])``, ``DataLoader(batch_size=64,
      shuffle=True)`` and the PyTorch MNIST example's loop (``.to(device)``, ``zero_grad``, forward,
      loss, backward, step, ``loss.item()`` every 10 batches), with ``num_workers`` 0 and 1 (and
      ``pin_memory`` on CUDA, as the example does);
  (b) through mnist-hpc: the resident loader and the engine's training step.

The variants alternate, ``--repeats`` times each, so that machine noise hits them alike; the
figure is the median images/s; the ratio is mnist-hpc over the best DataLoader variant. A timed
window includes creating the DataLoader iterator (its workers start there), as every epoch does.

    python -m benchmarks.side_by_side
    python -m benchmarks.side_by_side --images 6400 --repeats 5 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import time

from benchmarks import common

MEAN, STD = 0.1307, 0.3081


def engine_cfg(batch_size: int, device, overrides=(), seed: int = 0):
    from mnist_hpc.config import apply_overrides, config_from_dict

    raw = {
        "experiment": {"seed": seed},
        "model": {"name": "cnn"},
        "data": {"batch_size": batch_size, "val_split": None},
        "optim": {"name": "adadelta", "lr": 1.0, "schedule": "none"},
        "runtime": {"device": device.type},
    }
    return config_from_dict(apply_overrides(raw, list(overrides)), source="side-by-side")


def run_dataloader(root, device, n_images, batch_size, workers, seed):
    """The PyTorch MNIST example's pipeline and loop; returns (seconds, images)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from mnist_hpc.training.models import build_model

    torch.manual_seed(seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    ds = datasets.MNIST(root, train=True, download=False, transform=transform)
    kw = {"num_workers": workers, "shuffle": True}
    if device.type == "cuda":
        kw["pin_memory"] = True
    model = build_model(
        {"name": "cnn", "channels": [32, 64], "hidden": 128, "dropout1": 0.25, "dropout2": 0.5}
    ).to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    common.sync(device)
    t = time.perf_counter()
    loader = DataLoader(ds, batch_size=batch_size, **kw)
    model.train()
    seen = 0
    for batch_idx, (data, target) in enumerate(loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.cross_entropy(output, target)  # the example: log_softmax in the net + nll_loss
        loss.backward()
        optimizer.step()
        if batch_idx % 10 == 0:
            loss.item()  # the example prints it
        seen += len(target)
        if seen >= n_images:
            break
    common.sync(device)
    secs = time.perf_counter() - t
    del loader
    return secs, seen


def run_engine(x, y, device, n_images, batch_size, seed, overrides=()):
    """mnist-hpc: resident loader + the engine's step (same model, optimizer, batch)."""
    import torch

    torch.manual_seed(seed)
    cfg = engine_cfg(batch_size, device, overrides, seed)
    runner = common.StepRunner(cfg, device, x, y, MEAN, STD)
    loader = runner.loader
    common.sync(device)
    t = time.perf_counter()
    seen = 0
    for _, xb, yb, gs in loader.batches(0):
        runner.step(xb, yb, gs)
        seen += len(yb)
        if seen >= n_images:
            break
    common.sync(device)
    return time.perf_counter() - t, seen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="mnist-hpc bench side-by-side",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--images", type=int, default=None, help="images per timed run (default 12800; --quick 3200)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=None, help="runs of each variant (default 3; --quick 2)")
    p.add_argument("--workers", type=int, nargs="*", default=[0, 1], help="DataLoader num_workers variants")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for the mnist-hpc side only, e.g. runtime.channels_last=true",
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    n_images = args.images or (3200 if args.quick else 12800)
    repeats = args.repeats or (2 if args.quick else 3)

    device = common.setup_device(args.device, args.threads)
    root = common.data_root(args.data_dir)  # the DataLoader baseline reads the same files
    x, y = common.mnist_train(device, args.data_dir)

    variants = [(f"DataLoader, num_workers={w}", "dl", w) for w in args.workers] + [
        ("mnist-hpc engine", "engine", None)
    ]
    runs = {name: [] for name, _, _ in variants}
    # one untimed short pass of each: first-call costs (allocator, oneDNN primitives) hit nobody
    for _name, kind, w in variants:
        if kind == "dl":
            run_dataloader(root, device, 4 * args.batch_size, args.batch_size, w, 0)
        else:
            run_engine(x, y, device, 4 * args.batch_size, args.batch_size, 0, args.set)
    for r in range(repeats):
        for name, kind, w in variants:
            if kind == "dl":
                secs, n = run_dataloader(root, device, n_images, args.batch_size, w, r)
            else:
                secs, n = run_engine(x, y, device, n_images, args.batch_size, r, args.set)
            runs[name].append(n / secs)
            print(
                f"  repeat {r + 1}/{repeats} · {name:28s} {common.rate(n / secs)} img/s ({secs:.2f} s)",
                flush=True,
            )
    med = {name: common.median(v) for name, v in runs.items()}
    best_dl = max((k for k in med if k.startswith("DataLoader")), key=lambda k: med[k])
    ratio = med["mnist-hpc engine"] / med[best_dl]
    rows = [
        [
            name,
            common.rate(med[name]),
            f"{common.rate(min(v))}–{common.rate(max(v))}",
            f"{med[name] / med[best_dl]:.2f}×",
        ]
        for name, v in runs.items()
    ]
    env = common.environment(device)
    print()
    print(
        f"classic cnn (Adadelta lr 1.0, batch {args.batch_size}), {n_images} training images per run · {device} · "
        f"{env.get('gpu') or env.get('cpu')} · {env.get('torch_threads')} threads · median of {repeats}"
    )
    print(common.table(["pipeline + loop", "images/s", "range", "vs best DataLoader"], rows))
    print(f"mnist-hpc / best DataLoader ({best_dl}): {ratio:.2f}×")
    path = common.write_results(
        "side_by_side",
        {
            "benchmark": "side-by-side",
            "model": "cnn",
            "optimizer": "adadelta lr 1.0",
            "batch_size": args.batch_size,
            "images_per_run": n_images,
            "repeats": repeats,
            "engine_overrides": args.set,
            "environment": env,
            "images_per_s": runs,
            "median_images_per_s": med,
            "best_dataloader": best_dl,
            "ratio": ratio,
        },
        args.out,
    )
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
