"""`mnist-hpc bench ...`: the benchmarks of ``benchmarks/`` (a folder of the source tree, not part
of the installed package) behind the CLI.

Each subcommand hands its arguments to ``benchmarks.<name>.main`` unchanged, so
``mnist-hpc bench tta --seeds 3`` and ``python -m benchmarks.tta --seeds 3`` are the same run and
``mnist-hpc bench tta --help`` lists the benchmark's own options. The package is looked up in the
current directory first, then next to this source tree (an editable install). Nothing here imports
torch: the benchmark does, once it runs.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from mnist_hpc.errors import UserError

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
ORDER = ("pipeline", "throughput", "side_by_side", "tta")


def _candidates():
    yield Path.cwd()
    yield Path(__file__).resolve().parents[2]  # the source tree of an editable install


def load_benchmark(name: str):
    """Import ``benchmarks.<name>`` from the current directory or the source tree."""
    for root in _candidates():
        if (root / "benchmarks" / "__init__.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            try:
                return importlib.import_module(f"benchmarks.{name}")
            except ModuleNotFoundError as e:
                if e.name and e.name.startswith("benchmarks"):
                    raise UserError(f"benchmark {name!r} not found in {root / 'benchmarks'}") from None
                raise
    raise UserError(
        "the benchmarks live in the project's source tree (benchmarks/), which is not installed "
        "with the package: run `mnist-hpc bench ...` from the root of a clone of mnist-hpc "
        "(the folder that holds benchmarks/ and configs/)"
    )


def _run(name: str, args) -> None:
    code = load_benchmark(name).main(list(args))
    if code:
        raise SystemExit(code)


@click.group()
def bench():
    """Benchmarks: time to accuracy, throughput, side by side with a DataLoader, the data pipeline.

    \b
    Run from the project root (benchmarks/ is part of the source tree). Each command writes
    benchmarks/results/<name>.json; `mnist-hpc bench NAME --help` lists its options.
      mnist-hpc bench tta --quick
      mnist-hpc bench throughput --models fast cnn
      mnist-hpc bench side-by-side
      mnist-hpc bench pipeline
      mnist-hpc bench overhead configs/fast.yaml --baseline HEAD~1
      mnist-hpc bench scale
      mnist-hpc bench all --quick
    """


def _passthrough(name: str, module: str, help_text: str):
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args):
        _run(module, args)

    command.__doc__ = help_text
    bench.command(name, context_settings=PASSTHROUGH, add_help_option=False, help=help_text)(command)


_passthrough(
    "tta",
    "tta",
    "Seconds to 99.0% / 99.5% test accuracy (fast, fast995, best on a GPU), mean ± sd over seeds.",
)
_passthrough("throughput", "throughput", "Training images/s of every registry model at a few batch sizes.")
_passthrough(
    "side-by-side",
    "side_by_side",
    "The classic cnn through torchvision DataLoader vs through mnist-hpc, in one run, with the ratio.",
)
_passthrough(
    "pipeline", "pipeline", "The data pipeline alone: ResidentLoader (± augmentation) vs DataLoader."
)
_passthrough(
    "overhead",
    "overhead",
    "The whole `mnist-hpc train` command against its training (start-up, finish, exit; --baseline REF).",
)
_passthrough(
    "peer",
    "peer",
    "pytorch/examples' mnist/main.py for one epoch vs mnist-hpc's cnn_classic and fast, in one run.",
)
_passthrough(
    "scale", "scale", "DDP with 2 processes vs 1 on this machine; a checkpoint's cost (ms, MB) per model."
)


@bench.command("all", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Each benchmark's --quick mode.")
def bench_all(quick):
    """Every benchmark in turn (pipeline, throughput, side-by-side, tta)."""
    for name in ORDER:
        click.echo(f"\n=== {name.replace('_', '-')} ===")
        _run(name, ["--quick"] if quick else [])
