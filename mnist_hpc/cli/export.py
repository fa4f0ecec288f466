"""`mnist-hpc export` (a trained model as ONNX, TorchScript or a state_dict, with its model card)
and `mnist-hpc sync` (upload offline W&B runs from a machine with internet, e.g. a login node).

Nothing here imports torch at import time.
"""

from __future__ import annotations

import click


@click.command("export")
@click.argument("source", metavar="RUN_OR_CHECKPOINT", type=click.Path())
@click.option(
    "--format",
    "fmt",
    default="onnx",
    show_default=True,
    metavar="onnx|torchscript|state_dict",
    help="onnx (onnxruntime, browsers, phones; needs `pip install 'mnist-hpc[export]'`), "
    "torchscript (torch.jit.load, C++) or state_dict (torch.load + the model's config).",
)
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="File or folder to write (default: RUN/exports/model.<format>); the model card goes beside it.",
)
@click.option(
    "--trust-code",
    is_flag=True,
    help="Run the model code a run folder carries although you did not train it here (read it first).",
)
def export_command(source, fmt, out, trust_code):
    """Export a run's model (its best, else newest checkpoint) or a checkpoint's for use outside
    mnist-hpc, with a model card (dataset, test accuracy, preprocessing, config) beside it.
    `mnist-hpc predict` and `evaluate` accept the exported file."""
    from mnist_hpc import api

    done = api.export(source, fmt, out, trust_code=trust_code)
    size = done.path.stat().st_size
    click.echo(f"exported {done.checkpoint} as {done.format}: {done.path} ({size / 1e3:,.1f} kB)")
    click.echo(f"model card: {done.card}")


@click.command("sync")
@click.argument("runs", nargs=-1, required=True, type=click.Path(), metavar="RUN...")
@click.option("--dry-run", is_flag=True, help="Show what wandb would upload, upload nothing.")
def sync_command(runs, dry_run):
    """Upload the offline W&B runs of run folders (`wandb sync`): run it where there is internet,
    e.g. a cluster's login node, after the jobs that trained them (compute nodes have none)."""
    from mnist_hpc import api

    api.sync(runs, dry_run=dry_run, echo=click.echo)


def register(cli) -> None:
    cli.add_command(export_command)
    cli.add_command(sync_command)
