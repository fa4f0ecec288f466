"""Training throughput: images/s of every registry model at a few batch sizes.

Each (model, batch size) runs the engine's own training step on batches from the resident loader
(real MNIST when present, synthetic uint8 images otherwise): warm-up steps first (not timed),
then ``--repeats`` timed windows of about ``--seconds`` each; the figure is the median window.
The device is synchronised around every window.

    python -m benchmarks.throughput
    python -m benchmarks.throughput --models fast cnn --batch-sizes 128 512 --set train.amp=bf16
"""

from __future__ import annotations

import argparse

from benchmarks import common

DEFAULT_BATCHES = (64, 256, 1024)


def measure(model_name, batch_size, x, y, device, args, model_params=None, extra=(), label=None) -> dict:
    raw = {
        "experiment": {"seed": 0},
        "model": {"name": model_name, **(model_params or {})},
        "data": {"batch_size": batch_size},
        "optim": {"name": "sgd", "lr": 0.01},
        "runtime": {"device": str(device.type)},
    }
    cfg = _with_overrides(raw, list(extra) + list(args.set))
    runner = common.StepRunner(cfg, device, x, y)
    loader = runner.loader

    def batches():
        epoch = 0
        while True:
            for _, xb, yb, gs in loader.batches(epoch):
                yield xb, yb, gs
            epoch += 1

    it = batches()

    def run(n):
        for _ in range(n):
            runner.step(*next(it))

    first = common.timed(lambda: run(1), device)  # first-call costs (allocator, kernels, autotuning)
    if args.warmup > 1:
        run(args.warmup - 1 if first < args.seconds else 1)  # slow models (resnet18 on a CPU): one more
    one = max(common.timed(lambda: run(1), device), 1e-6)
    n = max(1, min(2000, int(args.seconds / one)))
    repeats = args.repeats if one < args.seconds else min(args.repeats, 3)
    rates = [n * batch_size / common.timed(lambda: run(n), device) for _ in range(repeats)]
    return {
        "model": label or model_name,
        "params": cfg.model.to_dict(),
        "batch_size": batch_size,
        "channels_last": cfg.runtime.channels_last,
        "amp": cfg.train.amp,
        "steps_per_window": n,
        "images_per_s": rates,
        "median_images_per_s": common.median(rates),
    }


def _with_overrides(raw: dict, overrides):
    from mnist_hpc.config import apply_overrides, config_from_dict

    return config_from_dict(apply_overrides(raw, overrides), source="benchmark")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mnist-hpc bench throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=None, help="registry names (default: all)")
    p.add_argument("--batch-sizes", nargs="*", type=int, default=None, help=f"default {DEFAULT_BATCHES}")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="also measure this config's model (with its channels_last and amp), e.g. configs/fast.yaml",
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="length of one timed window")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    p.add_argument("--quick", action="store_true", help="batch sizes 256 only, 3 repeats of 0.5 s")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override applied to every run, e.g. train.amp=bf16 or runtime.channels_last=true",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.seconds = min(args.repeats, 3), min(args.seconds, 0.5)
    batch_sizes = args.batch_sizes or ([256] if args.quick else list(DEFAULT_BATCHES))

    from mnist_hpc.config.models import MODEL_SPECS

    models = [(m, None, (), None) for m in (MODEL_SPECS if args.models is None else args.models)]
    for path in args.config:
        from pathlib import Path

        from mnist_hpc.config import load_config

        c = load_config(path)
        params = c.model.params()
        extra = [f"runtime.channels_last={str(c.runtime.channels_last).lower()}", f"train.amp={c.train.amp}"]
        models.append((c.model.name, params, extra, f"{c.model.name} ({Path(path).name})"))
    device = common.setup_device(args.device, args.threads)
    x, y, source = _train_data(device, args.data_dir)
    rows, results = [], []
    for m, params, extra, label in models:
        for bs in batch_sizes:
            r = measure(m, bs, x, y, device, args, params, extra, label)
            results.append(r)
            rates = r["images_per_s"]
            rows.append(
                [
                    r["model"],
                    bs,
                    common.rate(r["median_images_per_s"]),
                    f"{common.rate(min(rates))}–{common.rate(max(rates))}",
                    r["steps_per_window"],
                ]
            )
            print(
                f"  {r['model']:9s} batch {bs:5d}: {common.rate(r['median_images_per_s'])} img/s", flush=True
            )
    env = common.environment(device)
    print()
    print(
        f"training throughput · {device} · {env.get('gpu') or env.get('cpu')} · {env.get('torch_threads')} threads "
        f"· data: {source} · overrides: {args.set or 'none'} · median of {args.repeats} windows"
    )
    print(common.table(["model", "batch", "images/s", "range", "steps/window"], rows))
    path = common.write_results(
        "throughput",
        {
            "benchmark": "throughput",
            "data": source,
            "overrides": args.set,
            "environment": env,
            "results": results,
        },
        args.out,
    )
    print(f"\nwritten {path}")
    return 0


def _train_data(device, data_dir):
    from mnist_hpc.config.datasets import DATASETS
    from mnist_hpc.errors import DataError
    from mnist_hpc.training import data as datamod

    try:
        x, y = datamod.read_split(DATASETS["mnist"], common.data_root(data_dir), True)
        return x.to(device), y.to(device), "MNIST train"
    except DataError:
        x, y = common.synthetic_mnist(60000, device)
        return x, y, "synthetic"


if __name__ == "__main__":
    raise SystemExit(main())
