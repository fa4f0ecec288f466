"""The `mnist-hpc` command line: parse, call the public API (``mnist_hpc.api``), print.

torch is imported only inside the commands that need it, so `--help`, `config`, `status`,
`logs`, `submit --dry-run`, `sweep plan` and `report` answer fast. A ``UserError`` becomes one
line on stderr and its exit code (2 for config/usage errors); anything else is a bug.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

import click

from mnist_hpc import __version__
from mnist_hpc.cli.completion import complete_config, complete_set
from mnist_hpc.errors import EXIT_INTERRUPTED, ConfigError, Interrupted, UserError

SET_HELP = "Override a config value, e.g. --set optim.lr=0.01 --set model.hidden=[256,64] (repeatable)."


def set_option(f):
    return click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP, shell_complete=complete_set
    )(f)


def data_dir_option(f):
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Dataset folder (beats $MNIST_HPC_DATA_DIR and data.root).",
    )(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mnist-hpc")
def cli():
    """Train MNIST-family classifiers from YAML configs, on a laptop, a GPU or a Slurm cluster.

    \b
    First run:   mnist-hpc train configs/quickstart.yaml
    Exercises:   mnist-hpc train configs/mlp_keras.yaml --set optim.lr=0.01
    Cluster:     mnist-hpc submit configs/quickstart.yaml --cluster narval --account def-you
    """


# --------------------------------------------------------------------------- train


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False), shell_complete=complete_config)
@set_option
@data_dir_option
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the run into exactly this folder (default: <output_dir>/<name>-<time>).",
)
@click.option(
    "--resume",
    default=None,
    metavar="auto|PATH",
    help="Continue the same run from a checkpoint: 'auto' takes the newest valid one of the run. "
    "Only epochs, checkpointing, device/threads and logging may change.",
)
@click.option(
    "--init-from",
    default=None,
    metavar="RUN_OR_CHECKPOINT",
    type=click.Path(exists=True),
    help="Start a NEW run from the weights (only) of a run folder or checkpoint.",
)
@click.option(
    "--nproc",
    type=click.IntRange(1, 512),
    default=1,
    show_default=True,
    help="Processes on this node (DDP through torchrun; one per GPU).",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="After the result, where the time went: start-up (interpreter, imports), set-up, data, "
    "build, training, test, plots, summary.",
)
def train(config, overrides, data_dir, run_dir, resume, init_from, nproc, verbose):
    """Train the model described by CONFIG (a YAML file or a shipped config name)."""
    from mnist_hpc.training import stopflag

    stopflag.install()  # before torch loads: a time-limit signal during start-up is not fatal
    try:
        cfg = _load(config, overrides)
        if nproc > 1:
            _relaunch_torchrun(nproc)
        from mnist_hpc import api

        api.train(
            cfg,
            data_dir=data_dir,
            run_dir=run_dir,
            resume=resume,
            init_from=init_from,
            progress=None,
            verbose=verbose,
        )
    finally:
        stopflag.uninstall()  # exact: callers that run the CLI in-process get their handlers back


def _load(source, overrides):
    """``load_config`` plus its notes (e.g. keys a model switch dropped) on stderr."""
    from mnist_hpc.api import load_config

    cfg = load_config(source, overrides)
    for note in cfg.notes:
        click.echo(f"note: {note}", err=True)
    return cfg


def _relaunch_torchrun(nproc: int):
    """Re-run this very command under torchrun with ``nproc`` processes (minus --nproc)."""
    import subprocess

    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "mnist_hpc",
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    raise SystemExit(subprocess.call(argv, env=env))


# --------------------------------------------------------------------------- config


@cli.group()
def config():
    """Show or check experiment configs."""


@config.command("show")
@click.argument(
    "config_file", metavar="CONFIG", type=click.Path(dir_okay=False), shell_complete=complete_config
)
@set_option
def config_show(config_file, overrides):
    """Print the resolved config (extends: merged, --set applied, defaults filled), each key with
    its one-line comment."""
    click.echo(_load(config_file, overrides).to_yaml(), nl=False)


@cli.command()
def configs():
    """List the shipped configs (usable by name anywhere, e.g. `mnist-hpc train quickstart`)."""
    from mnist_hpc import api

    for line in api.list_configs().lines():
        click.echo(line)


@config.command("validate")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(dir_okay=False), shell_complete=complete_config
)
def config_validate(files):
    """Check config files and sweep files (every run a sweep makes); one line per file, exit 2 if
    any is invalid. A custom or torchvision model is also built on torch's meta device (its
    parameters counted against MAX_PARAMS, no memory) and run once on a tiny batch (its output
    must be (N, classes)); built-in models are checked without torch."""
    from mnist_hpc import api

    bad = 0
    for f in files:
        found = api.check_config(f)
        click.echo(str(found), err=not found.ok)
        if found.detail:  # a UserCodeError's frames of the user's code
            click.echo(found.detail, err=True)
        bad += not found.ok
    if bad:
        raise SystemExit(2)


# --------------------------------------------------------------------------- models


@cli.group(invoke_without_command=True)
@click.option(
    "--torchvision",
    "with_tv",
    is_flag=True,
    help="Also list torchvision.models classifiers that fit MAX_PARAMS (for 10 classes, 1x28x28).",
)
@click.pass_context
def models(ctx, with_tv):
    """List the models: the built-in nets with parameter counts (for MNIST), your own (`custom`)
    and torchvision's (`torchvision`); `models download ARCH` fetches pretrained weights."""
    if ctx.invoked_subcommand:
        return
    from mnist_hpc import api

    for line in api.list_models(torchvision=with_tv).lines():
        click.echo(line)


@models.command("download")
@click.argument("arches", nargs=-1, required=True, metavar="ARCH...")
@click.option("--weights", default="DEFAULT", show_default=True, help="A weights name of the architecture.")
def models_download(arches, weights):
    """Fetch pretrained weights into the torch hub cache ($TORCH_HOME/hub/checkpoints) on a machine
    with internet (a login node): jobs read them from there and never download."""
    from mnist_hpc import api

    for arch in arches:
        click.echo(str(api.download_weights(arch, weights)))


@cli.command()
@click.argument(
    "config_file", metavar="CONFIG", type=click.Path(dir_okay=False), shell_complete=complete_config
)
@set_option
def summary(config_file, overrides):
    """Print a layer table of CONFIG's model (output shapes, parameters, size)."""
    from mnist_hpc import api

    click.echo(api.model_summary(_load(config_file, overrides)).text)


# --------------------------------------------------------------------------- data


@cli.group()
def data():
    """Download, verify and list datasets (compute nodes have no internet: download on a login node)."""


def _dataset_names(ctx, param, value):
    from mnist_hpc import api

    try:
        return api.list_datasets().check(value)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None


dataset_option = click.option(
    "--dataset",
    "datasets",
    multiple=True,
    callback=_dataset_names,
    help="Dataset name (repeatable; default: mnist and fashion-mnist).",
)


@data.command("list")
def data_list():
    """List the datasets the registry knows."""
    from mnist_hpc import api

    for line in api.list_datasets().lines():
        click.echo(line)


@data.command("download")
@dataset_option
@data_dir_option
def data_download(datasets, data_dir):
    """Download (or unpack local archives of) datasets, MD5-checked by torchvision."""
    from mnist_hpc import api

    # inside a job (compute nodes: no internet) only local archives are unpacked
    for ready in api.prepare_data(datasets, data_dir=data_dir):
        click.echo(str(ready))


@data.command("verify")
@dataset_option
@data_dir_option
def data_verify(datasets, data_dir):
    """Check archives against their MD5 sums and that the unpacked files load."""
    from mnist_hpc import api

    found = api.verify_data(datasets, data_dir=data_dir, echo=click.echo)
    if found.problem:
        raise UserError(found.problem)


# --------------------------------------------------------------------------- evaluate / predict


@cli.command()
@click.argument(
    "runs", nargs=-1, required=True, type=click.Path(exists=True), metavar="RUN_CHECKPOINT_OR_EXPORT..."
)
@click.option("--ensemble", is_flag=True, help="Also average the runs' predictions (an ensemble).")
@click.option("--tta", is_flag=True, help="Test-time augmentation: average 1-pixel shifted views.")
@data_dir_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--trust-code",
    is_flag=True,
    help="Run the model code a run folder carries although you did not train it here (read it first).",
)
def evaluate(runs, ensemble, tta, data_dir, device, trust_code):
    """Re-evaluate run folders, checkpoints or exported models (ONNX, TorchScript) on the test set."""
    from mnist_hpc import api

    if len(runs) > 1 and not ensemble:
        click.echo("(several runs: evaluating each; add --ensemble to average them)")
    found = api.evaluate(
        list(runs), tta=tta, data_dir=data_dir, device=device, trust_code=trust_code, what="--device"
    )
    results, ens = found.results, found.ensemble
    for r in results:
        click.echo(
            f"test accuracy {r['test_accuracy'] * 100:.2f}%  loss {r['test_loss']:.4f}  {r['checkpoint']}"
        )
    if ensemble and ens:
        click.echo(
            f"ensemble of {ens['members']}: test accuracy {ens['test_accuracy'] * 100:.2f}%  "
            f"loss {ens['test_loss']:.4f}"
        )


@cli.command()
@click.argument("checkpoint", type=click.Path(exists=True), metavar="RUN_CHECKPOINT_OR_EXPORT")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option(
    "--trust-code",
    is_flag=True,
    help="Run the model code a run folder carries although you did not train it here (read it first).",
)
def predict(checkpoint, images, trust_code):
    """Classify image files (PNG/JPEG, any size; preprocessed the MNIST way). Each image is judged
    on its own: a bad one gets an error line on stderr, the others are still classified (exit 1
    if any failed)."""
    from mnist_hpc import api

    found = api.predict(checkpoint, list(images), errors="skip", trust_code=trust_code)
    for p in found:
        click.echo(str(p), err=bool(p.error))  # "PATH: 7 98.1%  1 0.9%  ..." or "error: ..."
    if any(p.error for p in found):
        raise SystemExit(1)


# --------------------------------------------------------------------------- other groups
# (each module imports no torch at import time, so `--help` stays fast)

from mnist_hpc.cli import cluster as hpc_commands  # noqa: E402
from mnist_hpc.cli import export as export_commands  # noqa: E402
from mnist_hpc.cli.bench import bench  # noqa: E402
from mnist_hpc.cli.experiments import report_command, runs_command, sweep_group  # noqa: E402

cli.add_command(sweep_group)  # mnist-hpc sweep plan|run
cli.add_command(report_command)  # mnist-hpc report
cli.add_command(runs_command)  # mnist-hpc runs
hpc_commands.register(cli)  # submit, status, logs, cancel, push; data pack
export_commands.register(cli)  # export, sync
sweep_group.add_command(hpc_commands.sweep_submit_command)  # mnist-hpc sweep submit
cli.add_command(bench)  # mnist-hpc bench tta|throughput|side-by-side|pipeline|all


# --------------------------------------------------------------------------- entry point


def main(argv=None):
    """The `mnist-hpc` command. ``argv=None`` means this process is the command (console script,
    `python -m mnist_hpc`, torchrun, srun): its runs count their total from the process's start,
    a late time-limit warning after the command is ignored, and the process ends as soon as the
    command is done (``exit_now``)."""
    if argv is None:
        from mnist_hpc import clock

        clock.mark_command_process()
    try:
        _main(argv)
    except SystemExit as e:
        if argv is None:
            exit_now(e.code)
        raise
    finally:
        if argv is None:
            from mnist_hpc.training import stopflag

            stopflag.ignore_late_warnings()
    if argv is None:
        exit_now(0)


def exit_now(code) -> NoReturn:
    """End this command's process the way Python would, minus its last step: wait for the
    threads, run the atexit handlers (trackers, loggers), flush the output, then ``os._exit``.
    What is skipped is the interpreter's teardown of every module, 1.3-1.5 s after torch was
    imported on 2 cores: the time between the result line and the prompt. Everything the run
    writes is on disk before (atomic writes). Under a profiler or tracer (cProfile, a debugger),
    which may write its results after the command returns, the process exits as usual."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        raise SystemExit(code)
    import atexit
    import threading

    from mnist_hpc.training import stopflag

    stopflag.ignore_late_warnings()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # SystemExit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        status = 1
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(status)


def _main(argv):
    try:
        cli.main(args=argv, prog_name="mnist-hpc", standalone_mode=False)
    except click.exceptions.Abort as e:  # click turns Ctrl-C into Abort: say what training kept
        cause = e.__cause__
        ctrl_c = str(cause) if isinstance(cause, KeyboardInterrupt) and str(cause) else ""
        click.echo(ctrl_c or "aborted", err=True)
        raise SystemExit(130) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(e.exit_code) from None
    except click.exceptions.Exit as e:
        raise SystemExit(e.exit_code) from None
    except Interrupted:
        raise SystemExit(EXIT_INTERRUPTED) from None
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        detail = getattr(e, "detail", "")  # the user's own traceback frames (a model file's mistake)
        if detail:
            click.echo(detail, err=True)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt as e:  # training says which checkpoint it kept and how to resume
        click.echo(str(e) if str(e) else "interrupted (Ctrl-C); nothing already saved was lost", err=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
