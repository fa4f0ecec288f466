"""Cluster commands: submit, status, logs, cancel, push, data pack and sweep submit.

The CLI registers them (``cli.add_command(submit)``, ``data.add_command(pack)``,
``sweep.add_command(sweep_submit)``). None imports torch. Every mistake a user can make
ends in a ``UserError``/``ConfigError``: one line, a non-zero exit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import click

from mnist_hpc.errors import DataError, UserError
from mnist_hpc.cluster import datapack
from mnist_hpc.cluster import slurm
from mnist_hpc.cluster.profiles import Profile, get_profile
from mnist_hpc.cluster.render import JobSpec, render

FOLLOW_HINT = "follow it with: mnist-hpc status · mnist-hpc logs {job} -f · sq"


# --------------------------------------------------------------------------- shared options


def resource_options(f):
    """--cluster, --gpus, --nodes, ... shared by `submit` and `sweep submit`."""
    options = [
        click.option("--cluster", "-c", required=True, metavar="NAME",
                     help="Cluster profile: fir, nibi, rorqual, trillium, narval, alliance, generic, "
                          "local, or one of yours (~/.config/mnist-hpc/clusters.yaml)."),
        click.option("--gpus", default=None, metavar="N|TYPE:N",
                     help="GPUs per node, optionally typed (narval: a100_3g.20gb:1). "
                          "Default: 1 on GPU clusters, 0 on CPU-only ones."),
        click.option("--nodes", type=click.IntRange(1), default=1, show_default=True, help="Nodes."),
        click.option("--tasks", type=click.IntRange(1), default=None,
                     help="Processes per node (default: one per GPU; >1 without GPUs: CPU DDP)."),
        click.option("--time", "time_limit", default="1:00:00", show_default=True,
                     help="Time limit: minutes, H:MM:SS or D-HH:MM:SS."),
        click.option("--account", default=None, metavar="ACCOUNT",
                     help="Slurm account, e.g. def-yourpi (default: $SBATCH_ACCOUNT, $SLURM_ACCOUNT)."),
        click.option("--mail", default=None, metavar="ADDRESS", help="Mail at the end or on failure."),
        click.option("--cpus", type=click.IntRange(1), default=None,
                     help="CPU cores per task (default: the cluster's share per GPU)."),
        click.option("--mem", default=None, help="Memory per node, e.g. 16G (default: the profile's)."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Dataset folder to pack from (and to use when a job has no $SLURM_TMPDIR)."),
        click.option("--dry-run", is_flag=True, help="Print the job script; create and submit nothing."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _warn(text: str) -> None:
    click.secho(f"warning: {text}", fg="yellow", err=True)


def _profile(name: str) -> Profile:
    profile, warning = get_profile(name)
    if warning:
        _warn(warning)
    return profile


def _parse_gpus(text: Optional[str], profile: Profile) -> tuple[int, Optional[str]]:
    if text is None:
        return (1 if profile.gpus_per_node else 0), None
    kind, _, count = text.rpartition(":")
    if not count.isdigit():
        raise UserError(f"--gpus {text}: expected a number or TYPE:NUMBER, e.g. 2 or a100_3g.20gb:1")
    return int(count), (kind or None)


def _account(account: Optional[str]) -> Optional[str]:
    return account or os.environ.get("SBATCH_ACCOUNT") or os.environ.get("SLURM_ACCOUNT") or None


def _template(nodes: int, gpus: int, tasks: Optional[int]) -> str:
    if nodes > 1:
        return "multi_node"
    if (tasks or gpus) > 1:
        return "multi_gpu"
    return "submit_job" if gpus else "cpu_only"


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _stage_data(profile: Profile, data_dir, needed: list[str], archive: Path) -> Path:
    """Make sure the data archive holds the datasets the job needs (packing it if not)."""
    from mnist_hpc.config.datasets import resolve_data_root

    root, why = resolve_data_root(data_dir, None)
    try:
        path, written = datapack.ensure(archive, root, needed)
    except DataError as e:
        if profile.internet:
            _warn(f"{e}; the job will have to download the data itself")
            return archive
        raise DataError(f"{e} (on a login node: compute nodes on {profile.name} have no internet)") from None
    if written:
        click.echo(f"data: packed {', '.join(datapack.contents(path))} from {root} ({why}) into {path}", err=True)
    return path


def _submit_script(run_dir: Path, script: str, cwd: Path, record: dict) -> str:
    """Write job.sh, sbatch it, write job.json; remove the folder again if sbatch fails."""
    script_path = run_dir / "job.sh"
    script_path.write_text(script)
    script_path.chmod(0o755)
    try:
        job_id = slurm.sbatch(str(script_path), cwd=str(cwd))
    except UserError:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    from mnist_hpc.runs.folder import write_json

    write_json(run_dir / "job.json", {"job_id": job_id, **record, "script": str(script_path),
                                      "submitted_at": _now(),
                                      "argv": ["sbatch", "--parsable", str(script_path)]})
    return job_id


# --------------------------------------------------------------------------- submit


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@resource_options
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value (repeatable), as for `train`.")
def submit(config, cluster, gpus, nodes, tasks, time_limit, account, mail, cpus, mem, data_dir,
           dry_run, overrides):
    """Submit CONFIG as a Slurm job on CLUSTER and record it in a new run folder.

    \b
    The run folder <output_dir>/<name>-<time>/ gets the resolved config, the job script
    (job.sh), the job id (job.json) and the job's log (slurm-JOBID.out); the job trains into
    it and resumes there after a requeue.
      mnist-hpc submit configs/quickstart.yaml --cluster narval --account def-you --time 0:30:00
      mnist-hpc submit configs/quickstart.yaml --cluster local
    """
    from mnist_hpc.config import load_config
    from mnist_hpc.runs.folder import new_run_dir

    profile = _profile(cluster)
    cfg = load_config(config, overrides)
    n_gpus, gpu_type = _parse_gpus(gpus, profile)
    cwd = Path.cwd()
    run_dir = new_run_dir(str(cwd / cfg.experiment.output_dir), cfg.experiment.name).resolve()
    spec = JobSpec(
        template=_template(nodes, n_gpus, tasks), profile=profile, job_name=cfg.experiment.name,
        config=str(run_dir / "config.yaml"), run_dir=str(run_dir), time=time_limit, nodes=nodes,
        gpus_per_node=n_gpus, gpu_type=gpu_type, tasks_per_node=tasks, cpus_per_task=cpus, mem=mem,
        account=_account(account), mail_user=mail, output=str(run_dir / "slurm-%j.out"),
        requeue_signal=cfg.runtime.requeue_signal, workdir=str(cwd),
        data_archive=str(cwd / datapack.DEFAULT_ARCHIVE),
        data_dir=str(Path(data_dir).resolve()) if data_dir else "",
        script_name=str(run_dir / "job.sh"))
    script = render(spec)
    if dry_run:
        click.echo(script, nl=False)
        click.echo(f"dry run: nothing submitted; the job would run in {run_dir}", err=True)
        return
    _stage_data(profile, data_dir, [cfg.data.dataset], cwd / datapack.DEFAULT_ARCHIVE)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        f"# resolved config, as submitted (source: {config})\n" + cfg.to_yaml())
    job_id = _submit_script(run_dir, script, cwd, {
        "cluster": profile.name, "template": spec.template, "run_dir": str(run_dir),
        "output": spec.output, "config": str(config), "overrides": list(overrides)})
    click.echo(f"submitted job {job_id} to {profile.name}: {_short(run_dir)}/")
    click.echo(FOLLOW_HINT.format(job=job_id))


def _short(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- sweep submit


@click.command("submit")
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@resource_options
@click.option("--parallel", type=click.IntRange(1), default=4, show_default=True,
              help="Array tasks running at the same time (the %K of --array=0-N%K).")
def sweep_submit(sweep_file, cluster, gpus, nodes, tasks, time_limit, account, mail, cpus, mem,
                 data_dir, dry_run, parallel):
    """Submit every run of SWEEP_FILE as one Slurm job array (task I runs run I).

    A sweep larger than the cluster's largest array becomes several arrays, each starting
    when the previous one has ended, so that no more than --parallel runs at once.
    """
    from mnist_hpc.runs.folder import new_run_dir
    from mnist_hpc.experiments.sweep import load_sweep

    if nodes > 1 or (tasks or 1) > 1:
        raise UserError("sweep array tasks run on one node with one process; drop --nodes/--tasks")
    profile = _profile(cluster)
    sweep = load_sweep(sweep_file)
    n_gpus, gpu_type = _parse_gpus(gpus, profile)
    cwd = Path.cwd()
    folder = new_run_dir(str(cwd / "runs"), f"{sweep.name}-sweep").resolve()
    chunk = max(profile.max_array_size, 1)  # array indices must stay below MaxArraySize
    total = len(sweep.runs)
    scripts = []
    for k, offset in enumerate(range(0, total, chunk)):
        size = min(chunk, total - offset)
        spec = JobSpec(
            template="sweep_array", profile=profile, job_name=sweep.name, sweep=str(Path(sweep_file).resolve()),
            time=time_limit, gpus_per_node=n_gpus, gpu_type=gpu_type, cpus_per_task=cpus, mem=mem,
            account=_account(account), mail_user=mail, output=str(folder / "slurm-%A_%a.out"),
            array=f"0-{size - 1}%{min(parallel, size)}", index_offset=offset, workdir=str(cwd),
            data_archive=str(cwd / datapack.DEFAULT_ARCHIVE),
            data_dir=str(Path(data_dir).resolve()) if data_dir else "",
            script_name=str(folder / f"job-{k}.sh"))
        scripts.append((spec, render(spec)))
    if dry_run:
        for spec, script in scripts:
            click.echo(script, nl=False)
        click.echo(f"dry run: nothing submitted; {total} runs in {len(scripts)} job array(s)", err=True)
        return
    needed = sorted({run.config.data.dataset for run in sweep.runs})
    _stage_data(profile, data_dir, needed, cwd / datapack.DEFAULT_ARCHIVE)
    folder.mkdir(parents=True)
    jobs, previous = [], None
    try:
        for k, (spec, script) in enumerate(scripts):
            path = folder / f"job-{k}.sh"
            path.write_text(script)
            path.chmod(0o755)
            extra = (f"--dependency=afterany:{previous}",) if previous else ()
            previous = slurm.sbatch(str(path), extra=extra, cwd=str(cwd))
            jobs.append({"job_id": previous, "script": str(path), "array": spec.array,
                         "index_offset": spec.index_offset})
    finally:
        if jobs:
            from mnist_hpc.runs.folder import write_json

            write_json(folder / "job.json", {
                "job_id": jobs[0]["job_id"], "cluster": profile.name, "template": "sweep_array",
                "sweep": str(sweep_file), "runs": total, "run_dir": str(folder),
                "output": str(folder / "slurm-%A_%a.out"), "script": jobs[0]["script"],
                "jobs": jobs, "submitted_at": _now(), "argv": ["sbatch", "--parsable", jobs[0]["script"]]})
        else:
            shutil.rmtree(folder, ignore_errors=True)
    ids = ", ".join(j["job_id"] for j in jobs)
    click.echo(f"submitted sweep {sweep.name}: {total} runs as job array {ids} on {profile.name} "
               f"({parallel} at a time); scripts in {_short(folder)}/")
    click.echo(FOLLOW_HINT.format(job=f"{jobs[0]['job_id']}_0"))


# --------------------------------------------------------------------------- run folders of jobs


def submitted_jobs(runs_dir) -> dict[str, dict]:
    """job id -> its job.json record (with the folder), for every job.json under ``runs_dir``."""
    found = {}
    root = Path(runs_dir)
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("job.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        record["folder"] = str(path.parent)
        for job in record.get("jobs") or [record]:
            if job.get("job_id"):
                found[str(job["job_id"])] = record
    return found


def _run_folder(job_id: str, records: dict, runs_dir) -> Optional[str]:
    base = job_id.split("_")[0]
    if job_id in records:
        return records[job_id]["folder"]
    if base in records:
        return records[base]["folder"]
    # scripts submitted with plain sbatch train into <output_dir>/<name>-job<JOBID>[_<TASK>]/
    matches = sorted(Path(runs_dir).glob(f"*-job{job_id}")) if Path(runs_dir).is_dir() else []
    return str(matches[0]) if matches else None


# --------------------------------------------------------------------------- status


@click.command()
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where to look for the run folders of your jobs.")
def status(runs_dir):
    """Your jobs in the Slurm queue (like `sq`) with their run folders, then recent finished ones."""
    jobs = slurm.squeue()
    records = submitted_jobs(runs_dir)
    rows = [(j.job_id, j.name, j.state, j.elapsed, j.time_limit, j.reason,
             _short(Path(f)) if (f := _run_folder(j.job_id, records, runs_dir)) else "-") for j in jobs]
    if rows:
        _table(("JOBID", "NAME", "STATE", "TIME", "LIMIT", "NODES/REASON", "RUN FOLDER"), rows)
    else:
        click.echo(f"no jobs of {slurm.current_user()} in the queue")
    queued = {j.job_id.split("_")[0] for j in jobs}
    done = [(job_id, r) for job_id, r in records.items() if job_id not in queued]
    done = sorted(done, key=lambda item: item[1].get("submitted_at", ""))[-10:]
    if done:
        click.echo("\nrecently submitted, no longer queued:")
        _table(("JOBID", "RESULT", "RUN FOLDER"),
               [(job_id, _result(job_id, Path(r["folder"]), r), _short(Path(r["folder"]))) for job_id, r in done])


def _result(job_id: str, folder: Path, record: dict) -> str:
    if record.get("template") == "sweep_array":
        return f"sweep of {record.get('runs', '?')} runs (mnist-hpc report {record.get('sweep', '')})"
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        info = slurm.scontrol_show_job(job_id) if shutil.which("scontrol") else None
        if info and info.get("JobState"):  # Slurm remembers finished jobs for a few minutes
            return f"{info['JobState']} (exit {info.get('ExitCode', '?')}), no summary.json"
        return "no summary.json (failed or cancelled? see mnist-hpc logs)"
    acc = summary.get("test_accuracy")
    return f"{summary.get('status', '?')}" + (f", test accuracy {acc:.2%}" if isinstance(acc, float) else "")


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())


# --------------------------------------------------------------------------- logs


def find_log(job_id: str, runs_dir="runs") -> tuple[Optional[Path], list[str]]:
    """The job's output file (it may not exist yet) and the places looked at."""
    looked = []
    records = submitted_jobs(runs_dir)
    base, _, task = job_id.partition("_")
    record = records.get(job_id) or records.get(base)
    if record and record.get("output"):
        pattern = record["output"]
        path = Path(pattern.replace("%A", base).replace("%a", task or "0").replace("%j", job_id))
        looked.append(str(path))
        if path.exists() or "%" not in pattern:
            return path, looked
    info = slurm.scontrol_show_job(job_id) if shutil.which("scontrol") else None
    if info and info.get("StdOut"):
        looked.append(info["StdOut"])
        return Path(info["StdOut"]), looked
    for candidate in (Path(f"slurm-{job_id}.out"),):
        looked.append(str(candidate))
        if candidate.exists():
            return candidate, looked
    return None, looked


def _active(job_id: str) -> bool:
    return bool(slurm.squeue(job_ids=(job_id,)))


@click.command()
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--runs", "runs_dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where to look for the run folders of your jobs.")
def logs(job_id, follow, runs_dir):
    """Print the output of job JOB_ID (its slurm-JOBID.out), like `cat slurm-JOBID.out`."""
    job_id = slurm.check_job_id(job_id)
    path, looked = find_log(job_id, runs_dir)
    if path is None or (not path.exists() and not follow):
        state = "is still pending" if shutil.which("squeue") and _active(job_id) else "has no log"
        raise UserError(f"job {job_id} {state}: nothing at {', '.join(looked) or 'any known place'}")
    if not follow:
        sys.stdout.write(path.read_text(errors="replace"))
        return
    _follow(path, job_id)


def _follow(path: Path, job_id: str, poll: float = 1.0) -> None:
    """Print ``path`` as it grows, until the job has left the queue and the file is read."""
    position = 0
    try:
        while True:
            active = _active(job_id)
            if path.exists():
                with open(path, "rb") as f:
                    f.seek(position)
                    chunk = f.read()
                position += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            if not active:
                return
            time.sleep(poll)
    except KeyboardInterrupt:
        return


# --------------------------------------------------------------------------- cancel


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
def cancel(job_ids):
    """Cancel Slurm jobs (scancel), e.g. mnist-hpc cancel 123456."""
    for job_id in job_ids:
        job_id = slurm.check_job_id(job_id)
        if not _active(job_id):
            raise UserError(f"job {job_id} is not in the queue of {slurm.current_user()} "
                            "(finished, cancelled, or someone else's)")
        slurm.scancel(job_id)
        click.echo(f"cancelled job {job_id}")


# --------------------------------------------------------------------------- push

PUSH_EXCLUDES = (".venv", "runs", "__pycache__", ".git", ".pytest_cache", "*.egg-info")


def push_commands(project: Path, target: str, with_data: bool, have_rsync: bool) -> list[list[str]]:
    """The argv lists that copy ``project`` to ``target`` (USER@HOST[:DIR])."""
    host, sep, remote = target.partition(":")
    if not host or host.startswith("-"):
        raise UserError(f"push {target}: expected USER@HOST[:DIR], e.g. you@narval.alliancecan.ca:scratch/mnist")
    remote = remote if sep and remote else f"scratch/{project.name}"
    remote = remote.rstrip("/")
    archive = project / datapack.DEFAULT_ARCHIVE
    if have_rsync:
        # the top-level data/ folder stays behind, except the archive with --with-data
        data_rules = ([f"--include=/{archive.parent.name}/", f"--include=/{datapack.DEFAULT_ARCHIVE}",
                       f"--exclude=/{archive.parent.name}/*"] if with_data
                      else [f"--exclude=/{archive.parent.name}/"])
        return [["rsync", "-a", *[f"--exclude={e}" for e in PUSH_EXCLUDES], *data_rules,
                 f"{project}/", f"{host}:{remote}/"]]
    import fnmatch
    import shlex

    entries = sorted(str(p) for p in project.iterdir()
                     if p.name != archive.parent.name and not any(fnmatch.fnmatch(p.name, e) for e in PUSH_EXCLUDES))
    # scp copies whole trees (no excludes below the top level) and needs the folders to exist
    folders = [remote] + ([f"{remote}/data"] if with_data else [])
    cmds = [["ssh", host, "mkdir -p -- " + " ".join(shlex.quote(f) for f in folders)],
            ["scp", "-r", "-p", *entries, f"{host}:{remote}/"]]
    if with_data:
        cmds.append(["scp", "-p", str(archive), f"{host}:{remote}/data/"])
    return cmds


@click.command()
@click.argument("target", metavar="USER@HOST[:DIR]")
@click.option("--with-data", is_flag=True, help="Also copy the data archive (made by `data pack` if missing).")
@click.option("--project", type=click.Path(file_okay=False, exists=True), default=".", show_default=True,
              help="The project folder to copy.")
@click.option("--dry-run", is_flag=True, help="Print the commands; copy nothing.")
def push(target, with_data, project, dry_run):
    """Copy the project to a cluster (default DIR: scratch/<project folder name>).

    Uses rsync (scp when rsync is missing) and leaves out .venv, runs, data, .git and caches:
    on the cluster, build the environment there and run `mnist-hpc data download`, or pass
    --with-data to send the packed datasets along.
    """
    import shlex

    project_dir = Path(project).resolve()
    if not (project_dir / "mnist_hpc").is_dir():
        raise UserError(f"{project_dir} is not the mnist-hpc project folder (no mnist_hpc/ in it); "
                        "run push from the project folder or pass --project")
    have_rsync = shutil.which("rsync") is not None
    if with_data and not (project_dir / datapack.DEFAULT_ARCHIVE).is_file() and not dry_run:
        from mnist_hpc.config.datasets import resolve_data_root

        root, _ = resolve_data_root(None, None)
        click.echo(f"data: packing {datapack.pack(root, [], project_dir / datapack.DEFAULT_ARCHIVE)}", err=True)
    for argv in push_commands(project_dir, target, with_data, have_rsync):
        click.echo("$ " + shlex.join(argv), err=True)
        if dry_run:
            continue
        if shutil.which(argv[0]) is None:
            raise UserError(f"{argv[0]} not found: install openssh-client (and rsync)")
        proc = subprocess.run(argv)
        if proc.returncode != 0:
            raise UserError(f"{argv[0]} failed with exit status {proc.returncode}")
    if not dry_run:
        click.echo(f"copied {project_dir.name} to {target}")


# --------------------------------------------------------------------------- data pack


@click.command("pack")
@click.argument("datasets", nargs=-1)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder (beats $MNIST_HPC_DATA_DIR).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=str(datapack.DEFAULT_ARCHIVE),
              show_default=True, help="The archive to write.")
def pack(datasets, data_dir, output):
    """Pack datasets (default: every one present) into one archive for $SLURM_TMPDIR staging."""
    from mnist_hpc.config.datasets import resolve_data_root

    root, why = resolve_data_root(data_dir, None)
    path = datapack.pack(root, list(datasets), output)
    size = path.stat().st_size / 2**20
    click.echo(f"{path}: {', '.join(datapack.contents(path))} from {root} ({why}), {size:.1f} MiB")


# --------------------------------------------------------------------------- registration


def register(cli: click.Group) -> None:
    """Add the cluster commands to the main CLI (idempotent): submit, status, logs, cancel and
    push at the top, `pack` in the `data` group and `submit` in the `sweep` group, where those
    groups exist."""
    for command in (submit, status, logs, cancel, push):
        cli.commands.setdefault(command.name, command)
    if isinstance(cli.commands.get("data"), click.Group):
        cli.commands["data"].commands.setdefault("pack", pack)
    if isinstance(cli.commands.get("sweep"), click.Group):
        cli.commands["sweep"].commands.setdefault("submit", sweep_submit)
