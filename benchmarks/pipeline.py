"""The data pipeline alone, no model: images/s delivered to the training device by

  - mnist-hpc's ResidentLoader (uint8 on the device, normalised per batch), without and with
    batched on-device augmentation (shift 2 px, rotate 10°, scale 0.1);
  - ``torchvision.datasets.MNIST`` + ``ToTensor`` + ``Normalize`` + ``DataLoader(shuffle=True)``
    with ``num_workers`` 0 and 1, batches moved ``.to(device)`` as a training loop does.

Each variant delivers ``--images`` images (iterator creation included, device synchronised);
variants alternate over ``--repeats`` rounds; figures are medians.

    python -m benchmarks.pipeline
    python -m benchmarks.pipeline --batch-sizes 64 512 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import time

from benchmarks import common

MEAN, STD = 0.1307, 0.3081
AUG = {"shift": 2.0, "rotate": 10.0, "scale": 0.1}


def resident(x, y, device, n_images, batch_size, augment: bool) -> float:
    from mnist_hpc.config import AugmentConfig
    from mnist_hpc.training import data as datamod

    aug = AugmentConfig(**AUG) if augment else None
    common.sync(device)
    t = time.perf_counter()
    loader = datamod.ResidentLoader(x, y, batch_size=batch_size, mean=MEAN, std=STD, seed=0, augment_cfg=aug)
    seen, epoch = 0, 0
    while seen < n_images:
        for _, _xb, yb, _ in loader.batches(epoch):
            seen += len(yb)
            if seen >= n_images:
                break
        epoch += 1
    common.sync(device)
    return seen / (time.perf_counter() - t)


def dataloader(root, device, n_images, batch_size, workers) -> float:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    ds = datasets.MNIST(root, train=True, download=False, transform=tf)
    kw = {"pin_memory": True} if device.type == "cuda" else {}
    common.sync(device)
    t = time.perf_counter()
    seen = 0
    while seen < n_images:
        for data, target in DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, **kw):
            data, target = data.to(device), target.to(device)
            seen += len(target)
            if seen >= n_images:
                break
    common.sync(device)
    return seen / (time.perf_counter() - t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="mnist-hpc bench pipeline",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--images", type=int, default=None, help="images per timed run (default 20000; --quick 6400)"
    )
    p.add_argument(
        "--resident-images",
        type=int,
        default=None,
        help="images per resident-loader run (default: 5x --images; it is much faster)",
    )
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[64, 512])
    p.add_argument("--workers", type=int, nargs="*", default=[0, 1])
    p.add_argument("--repeats", type=int, default=None, help="default 3; --quick 2")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    n = args.images or (6400 if args.quick else 20000)
    n_res = args.resident_images or 5 * n
    repeats = args.repeats or (2 if args.quick else 3)

    device = common.setup_device(args.device, args.threads)
    root = common.data_root(args.data_dir)  # the DataLoader baseline reads the same files
    x, y = common.mnist_train(device, args.data_dir)

    variants = []
    for bs in args.batch_sizes:
        variants.append(
            (f"ResidentLoader, batch {bs}", lambda bs=bs: resident(x, y, device, n_res, bs, False))
        )
        variants.append(
            (f"ResidentLoader + augment, batch {bs}", lambda bs=bs: resident(x, y, device, n_res, bs, True))
        )
        for w in args.workers:
            variants.append(
                (f"DataLoader workers={w}, batch {bs}", lambda bs=bs, w=w: dataloader(root, device, n, bs, w))
            )
    runs = {name: [] for name, _ in variants}
    for r in range(repeats):
        for name, fn in variants:
            runs[name].append(fn())
            print(f"  repeat {r + 1}/{repeats} · {name:36s} {common.rate(runs[name][-1])} img/s", flush=True)
    med = {k: common.median(v) for k, v in runs.items()}
    rows = []
    for bs in args.batch_sizes:
        base = max(med[k] for k in med if k.startswith("DataLoader") and k.endswith(f"batch {bs}"))
        for k in med:
            if k.endswith(f"batch {bs}"):
                rows.append(
                    [
                        k,
                        common.rate(med[k]),
                        f"{common.rate(min(runs[k]))}–{common.rate(max(runs[k]))}",
                        f"{med[k] / base:.1f}×",
                    ]
                )
    env = common.environment(device)
    print()
    print(
        f"data pipeline alone (no model) · {device} · {env.get('gpu') or env.get('cpu')} · "
        f"{env.get('torch_threads')} threads · median of {repeats} · augment = {AUG}"
    )
    print(common.table(["pipeline", "images/s", "range", "vs best DataLoader (same batch)"], rows))
    path = common.write_results(
        "pipeline",
        {
            "benchmark": "pipeline",
            "augment": AUG,
            "images_per_run": n,
            "resident_images_per_run": n_res,
            "environment": env,
            "images_per_s": runs,
            "median_images_per_s": med,
        },
        args.out,
    )
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
