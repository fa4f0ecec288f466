"""The path every real Alliance job takes, executed: jobs on the Alliance-like mode of the sandbox
(LOCAL_SLURM_ALLIANCE=1 scripts/local_slurm.sh: Lmod's `module`, `virtualenv`, a wheelhouse
behind a pip configuration file, $SLURM_TMPDIR, no network), with no MNIST_HPC_PYTHON: every
job builds its virtualenv from the wheelhouse and unpacks the data archive, as on a cluster.
And jobs that do not depend on where `submit` ran, on the sandbox started with no settings.

Both sandboxes are this module's own (their own folders and ports; /etc/slurm is left alone)
and are stopped at its end. Skipped with the reason where Slurm cannot start or the wheelhouse
cannot be built (it needs the internet once: about 3 GB, cached in /var/cache/mnist-hpc). The
jobs of each sandbox are submitted together and run side by side: a few minutes in all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mnist_hpc.cluster.slurm import parse_scontrol
from tests.paths import ROOT
from tests.slurm_support import SCRIPT, TERMINAL, _cannot_start, _free_ports

WHEELHOUSE = Path(os.environ.get("LOCAL_SLURM_CACHE", "/var/cache/mnist-hpc")) / "wheelhouse"
JOB_TIMEOUT = 900  # a virtualenv of torch & co. takes about a minute to install, training 1-2 min more


class Sandbox:
    """A running sandbox of scripts/local_slurm.sh in ``folder``: Slurm commands pointed at it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {**os.environ, "SLURM_CONF": str(folder / "etc" / "slurm.conf")}
        for name in ("MNIST_HPC_PYTHON", "PYTHONPATH", "MNIST_HPC_WHEELHOUSE"):
            self.env.pop(name, None)  # the jobs find their python and code themselves

    def sbatch(self, *args, cwd, env=None) -> str:
        proc = subprocess.run(
            ["sbatch", "--parsable", *map(str, args)],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict:
        """scontrol's fields of the job, else its line in the record of finished jobs."""
        proc = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", job_id],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        if proc.returncode == 0 and proc.stdout.strip():
            return parse_scontrol(proc.stdout.splitlines()[0])
        jobcomp = self.folder / "log" / "jobcomp.log"
        found = {}
        for line in (jobcomp.read_text(errors="replace") if jobcomp.exists() else "").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields.get("JobId") == job_id:
                found = fields  # the last: job ids start again from 1 when the sandbox does
        return found

    def wait(self, job_id: str, timeout: float = JOB_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job(job_id).get("JobState", "")
            if state in TERMINAL:
                return state
            time.sleep(2)
        raise AssertionError(f"job {job_id} not done after {timeout:.0f} s")

    def queued(self) -> list[str]:
        out = subprocess.run(
            ["squeue", "--noheader", "--format=%i"], capture_output=True, text=True, env=self.env, timeout=60
        ).stdout
        return out.split()


def start_sandbox(folder: str, first_port: int, **knobs):
    """Start (or reuse) a sandbox in ``folder``; yields a ``Sandbox``, stops one it started."""
    reason = _cannot_start()
    if reason:
        pytest.skip(f"no Slurm sandbox: {reason}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_SLURM_") and k != "SLURM_CONF"}
    running = subprocess.run(["bash", str(SCRIPT), "status", folder], capture_output=True, text=True, env=env)
    env.update({"LOCAL_SLURM_PORT": str(_free_ports(first_port)), "LOCAL_SLURM_LINK_ETC": "0", **knobs})
    if running.returncode == 0:  # its port is taken by itself; reused only if started the same way
        conf = Path(folder, "etc", "slurm.conf").read_text()
        env["LOCAL_SLURM_PORT"] = next(
            line.split("=")[1] for line in conf.splitlines() if line.startswith("SlurmctldPort=")
        )
    proc = subprocess.run(
        ["bash", str(SCRIPT), "start", folder], capture_output=True, text=True, env=env, timeout=1200
    )
    if proc.returncode != 0:
        pytest.skip(f"the sandbox in {folder} did not start: {(proc.stderr or proc.stdout).strip()[-600:]}")
    try:
        yield Sandbox(Path(folder))
    finally:
        if running.returncode != 0:
            subprocess.run(
                ["bash", str(SCRIPT), "stop", folder], capture_output=True, text=True, env=env, timeout=300
            )


def cli(*args, cwd, env, site=ROOT, check=True) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, importing mnist_hpc from ``site`` without putting it in the
    environment that sbatch hands on to the job (no PYTHONPATH)."""
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r}); from mnist_hpc.cli.main import main; "
        "sys.argv[0] = 'mnist-hpc'; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mnist-hpc {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def submitted(proc) -> str:
    return proc.stdout.split("submitted job ", 1)[1].split()[0]


def run_folder(where: Path, job_id: str) -> Path:
    for record in where.glob("runs/*/job.json"):
        if json.loads(record.read_text())["job_id"] == job_id:
            return record.parent
    raise AssertionError(f"no run folder of job {job_id} under {where}/runs")


def make_project(folder: Path) -> Path:
    """A project folder as a user has it (the package, configs, the slurm/ scripts), with the
    account and mail of the handout scripts edited as the README says."""
    folder.mkdir(parents=True)
    (folder / "mnist_hpc").symlink_to(ROOT / "mnist_hpc")
    shutil.copytree(ROOT / "configs", folder / "configs")
    shutil.copytree(ROOT / "slurm", folder / "slurm")
    script = folder / "slurm" / "submit_job.sh"
    text = script.read_text()
    assert text.count("def-someuser") == 1 and text.count("someone@example.com") == 1
    script.write_text(
        text.replace("def-someuser", "def-tester").replace("someone@example.com", "me@example.org")
    )
    return folder


@pytest.fixture(scope="module")
def workspace():
    """Outside pytest's basetemp, which other sessions prune (under running jobs)."""
    folder = Path(tempfile.mkdtemp(prefix="mnist-hpc-alliance-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- the module command


def lmod(*commands: str) -> subprocess.CompletedProcess:
    script = f'module() {{ eval "$({ROOT}/scripts/lmod.sh bash "$@")"; }}\n' + "\n".join(commands)
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ALLIANCE_SOFTWARE": "/nonexistent", "LOADEDMODULES": "StdEnv/2023"},
    )


def test_module_command_speaks_lmod():
    proc = lmod(
        "module load StdEnv/2023 python/3.11 cuda/12.6", 'echo "loaded=$LOADEDMODULES"', "module list"
    )
    assert proc.returncode == 0, proc.stderr
    assert "loaded=StdEnv/2023:python/3.11.5:cuda/12.6" in proc.stdout
    assert "1) StdEnv/2023 (S)" in proc.stderr and "2) python/3.11.5" in proc.stderr
    proc = lmod("set -e", "module load StdEnv/2023 pyton/3.11", "echo not reached")
    assert proc.returncode != 0 and "not reached" not in proc.stdout
    assert (
        'Lmod has detected the following error:  The following module(s) are unknown: "pyton/3.11"'
        in proc.stderr
    )
    proc = lmod("module load python cuda", "module purge", 'echo "left=$LOADEDMODULES"')
    assert "left=StdEnv/2023" in proc.stdout and 'Use "module --force purge"' in proc.stderr


# --------------------------------------------------------------------------- what submit decides


def test_job_packages_follow_the_config():
    from mnist_hpc.cluster.nodeenv import job_packages
    from mnist_hpc.config import load_config

    base = ("torch", "torchvision", "numpy", "pyyaml", "click", "tqdm", "matplotlib")
    assert job_packages([load_config("quickstart")]) == base
    tracked = load_config("quickstart", ["experiment.tensorboard=true"])
    assert job_packages([tracked, load_config("quickstart")]) == (*base, "tensorboard")


def test_wheelhouse_check(tmp_path):
    from mnist_hpc.cluster.nodeenv import check_wheelhouse
    from mnist_hpc.cluster.profiles import get_profile
    from mnist_hpc.errors import UserError

    for name in (
        "torch-2.15.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "PyYAML-6.0.2-cp311-cp311-linux.whl",
        "tensorboard_data_server-0.7.2-py3-none-any.whl",
        "click-8.1.0.tar.gz",
    ):
        (tmp_path / name).write_bytes(b"")
    local, _ = get_profile("local")
    check_wheelhouse(
        ["torch", "pyyaml", "tensorboard-data-server"], local, {"MNIST_HPC_WHEELHOUSE": str(tmp_path)}
    )
    with pytest.raises(
        UserError, match=r"the job needs click, which \$MNIST_HPC_WHEELHOUSE .* does not have"
    ):
        check_wheelhouse(
            ["torch", "click"], local, {"MNIST_HPC_WHEELHOUSE": str(tmp_path)}
        )  # an sdist is no wheel
    with pytest.raises(UserError, match="no such folder"):
        check_wheelhouse(["torch"], local, {"MNIST_HPC_WHEELHOUSE": str(tmp_path / "nope")})
    check_wheelhouse(["anything"], local, {})  # no wheelhouse known: nothing to check


def test_submit_refuses_a_package_the_wheelhouse_lacks(tmp_path, monkeypatch):
    from mnist_hpc.cluster.jobs import submit
    from mnist_hpc.errors import UserError

    (tmp_path / "torch-2.15.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    monkeypatch.setenv("MNIST_HPC_WHEELHOUSE", str(tmp_path))
    with pytest.raises(UserError, match="the job needs torchvision, numpy, pyyaml, click, tqdm, matplotlib"):
        submit("quickstart", cluster="local", dry_run=True, cwd=tmp_path)


def test_job_script_names_its_code_and_python(tmp_path, monkeypatch):
    """A checkout's jobs import it in place; an installed mnist_hpc is copied into the run folder."""
    from mnist_hpc.cluster import nodeenv
    from mnist_hpc.cluster.jobs import submit

    job = submit("quickstart", ["experiment.tensorboard=true"], cluster="local", dry_run=True, cwd=tmp_path)
    assert f"CODE_DIR={ROOT} " in job.script and f"SUBMIT_PYTHON={sys.executable} " in job.script
    assert "PACKAGES=(torch torchvision numpy pyyaml click tqdm matplotlib tensorboard)" in job.script
    monkeypatch.setattr(nodeenv, "_package_root", lambda: (ROOT, False))  # as if pip-installed
    assert nodeenv.code_dir(tmp_path / "run") == str(tmp_path / "run" / "code")
    copied = nodeenv.copy_code(tmp_path / "run")
    assert (copied / "mnist_hpc" / "cluster" / "templates" / "_setup.sh").is_file()
    assert not list(copied.rglob("__pycache__"))


# --------------------------------------------------------------------------- the default sandbox


@pytest.fixture(scope="module")
def plain():
    """The sandbox as `scripts/local_slurm.sh start` makes it with no settings (only its folder
    and port differ, to stand beside another)."""
    yield from start_sandbox("/tmp/mnist-hpc-plain", 6837)


@pytest.fixture(scope="module")
def plain_jobs(plain, slurm_data, workspace):
    """Jobs whose submitter stands outside any clone, submitted together."""
    env = {**plain.env, "MNIST_HPC_DATA_DIR": str(slurm_data)}
    short = ["--set", "train.epochs=1", "--set", "data.subset=6000"]
    # 1. the checkout's mnist-hpc, from a folder outside the clone
    outside = workspace / "outside"
    outside.mkdir()
    anywhere = submitted(cli("submit", "quickstart", "--cluster", "local", *short, cwd=outside, env=env))
    # 2. a pip-installed mnist-hpc (a wheel built from this checkout, installed into a folder of
    #    its own): no clone anywhere
    src, site = workspace / "src", workspace / "site"
    shutil.copytree(ROOT / "mnist_hpc", src / "mnist_hpc", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q"]
    for command in (
        ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", workspace / "wheel", src],
        ["install", "--no-deps", "--no-index", "--target", site, workspace / "wheel" / "*.whl"],
    ):
        command = [str(c) for c in command]
        command[-1:] = [str(p) for p in Path(command[-1]).parent.glob(Path(command[-1]).name)] or command[-1:]
        proc = subprocess.run(pip + command, capture_output=True, text=True, cwd=workspace, timeout=300)
        assert proc.returncode == 0, proc.stderr
    installed = workspace / "installed"
    installed.mkdir()
    from_pip = submitted(
        cli("submit", "quickstart", "--cluster", "local", *short, cwd=installed, env=env, site=site)
    )
    # 3. the handout script submitted from the folder above the project (it used to fail with
    #    configs/quickstart.yaml: no such file), its experiment changed to the one-epoch fast.yaml;
    #    the node is smaller than an Alliance node's share
    parent = workspace / "parent"
    project = make_project(parent / "mnist")
    (project / ".venv").symlink_to(sys.prefix)  # the clone's .venv (`make train` makes it)
    script = project / "slurm" / "submit_job.sh"
    script.write_text(
        script.read_text().replace("CONFIG=configs/quickstart.yaml ", "CONFIG=configs/fast.yaml ")
    )
    handout = plain.sbatch("--cpus-per-task=2", "--mem=3G", "mnist/slurm/submit_job.sh", cwd=parent, env=env)
    return {"anywhere": (anywhere, outside), "pip": (from_pip, installed), "handout": (handout, parent)}


@pytest.mark.slurm
@pytest.mark.slow
def test_default_sandbox_accepts_the_handout_script(plain, workspace):
    """[issue 13] its typed GPU, 12 cores and 32G fit the default node (pretend GPUs, CPUs)."""
    project = make_project(workspace / "test-only")
    proc = subprocess.run(
        ["sbatch", "--test-only", "slurm/submit_job.sh"],
        cwd=project,
        capture_output=True,
        text=True,
        env=plain.env,
        timeout=120,
    )
    assert proc.returncode == 0 and "to start at" in proc.stderr, proc.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_submit_from_a_folder_outside_the_clone(plain, plain_jobs):
    job, where = plain_jobs["anywhere"]
    state = plain.wait(job)
    run = run_folder(where, job)
    assert state == "COMPLETED", (run / f"slurm-{job}.out").read_text()[-3000:]
    assert json.loads((run / "summary.json").read_text())["test_accuracy"] > 0.9
    script = (run / "job.sh").read_text()
    assert f"CODE_DIR={ROOT} " in script and f"SUBMIT_PYTHON={sys.executable} " in script
    assert f"code {ROOT}," in (run / f"slurm-{job}.out").read_text()


@pytest.mark.slurm
@pytest.mark.slow
def test_submit_from_a_pip_installed_mnist_hpc(plain, plain_jobs):
    job, where = plain_jobs["pip"]
    state = plain.wait(job)
    run = run_folder(where, job)
    log = (run / f"slurm-{job}.out").read_text()
    assert state == "COMPLETED", log[-3000:]
    assert (run / "code" / "mnist_hpc" / "__init__.py").is_file()  # the copy the job ran
    assert f"code {run / 'code'}," in log
    assert json.loads((run / "summary.json").read_text())["test_accuracy"] > 0.9


@pytest.mark.slurm
@pytest.mark.slow
def test_handout_script_from_the_parent_folder(plain, plain_jobs):
    job, parent = plain_jobs["handout"]
    state = plain.wait(job)
    log = (parent / f"slurm-{job}.out").read_text()
    assert state == "COMPLETED", log[-3000:]
    assert f"python {parent / 'mnist' / '.venv' / 'bin' / 'python'}, code {parent / 'mnist'}," in log
    assert (
        json.loads((parent / "runs" / f"fast-job{job}" / "summary.json").read_text())["test_accuracy"]
        >= 0.985
    )


# --------------------------------------------------------------------------- the Alliance-like sandbox


@pytest.fixture(scope="module")
def alliance():
    yield from start_sandbox("/tmp/mnist-hpc-alliance", 6827, LOCAL_SLURM_ALLIANCE="1", LOCAL_SLURM_CPUS="8")


@pytest.fixture(scope="module")
def alliance_jobs(alliance, slurm_data, workspace):
    """The jobs on the Alliance-like node, submitted together: none is told which python to use,
    and none sees $MNIST_HPC_DATA_DIR (the data comes from the archive)."""
    project = make_project(workspace / "alliance" / "mnist")
    cli("data", "pack", "mnist", cwd=project, env={**alliance.env, "MNIST_HPC_DATA_DIR": str(slurm_data)})
    env = {**alliance.env, "MNIST_HPC_WHEELHOUSE": str(WHEELHOUSE)}  # what `source DIR/env.sh` sets
    env.pop("MNIST_HPC_DATA_DIR", None)
    # 1. the workshop flow: edit account and mail, sbatch (cores and memory lowered on the
    #    command line: the sandbox node is smaller than an Alliance node)
    handout = alliance.sbatch("--cpus-per-task=2", "--mem=3G", "slurm/submit_job.sh", cwd=project, env=env)
    # 2. the tool's flow, with a logger whose package the base list lacks
    quick = submitted(
        cli(
            "submit",
            "quickstart",
            "--cluster",
            "local",
            "--cpus",
            "2",
            "--set",
            "train.epochs=1",
            "--set",
            "experiment.loggers=[csv,tensorboard]",
            cwd=project,
            env=env,
        )
    )
    # 3. two tasks under srun, joined by DDP
    ddp = submitted(
        cli(
            "submit",
            "quickstart",
            "--cluster",
            "local",
            "--tasks",
            "2",
            "--cpus",
            "1",
            "--set",
            "data.subset=2000",
            "--set",
            "train.epochs=1",
            "--set",
            "experiment.name=ddp",
            cwd=project,
            env=env,
        )
    )
    # 4. a misspelled module
    typo = project / "slurm" / "typo.sh"
    typo.write_text(
        (project / "slurm" / "submit_job.sh")
        .read_text()
        .replace("MODULES=(StdEnv/2023 python/3.13)", "MODULES=(StdEnv/2023 pyton/3.13)")
    )
    bad = alliance.sbatch("--cpus-per-task=1", "--mem=1G", "slurm/typo.sh", cwd=project, env=env)
    return {"project": project, "env": env, "handout": handout, "quick": quick, "ddp": ddp, "typo": bad}


def _job_dir(sandbox: Sandbox, job: str) -> str:
    return f"{sandbox.folder}/tmp/job_{job}"


@pytest.mark.slurm
@pytest.mark.slow
def test_misspelled_module_fails_in_the_first_seconds(alliance, alliance_jobs):
    job, project = alliance_jobs["typo"], alliance_jobs["project"]
    assert alliance.wait(job, 300) == "FAILED"
    log = (project / f"slurm-{job}.out").read_text()
    assert 'The following module(s) are unknown: "pyton/3.13"' in log, log
    assert "virtualenv" not in log and "mnist-hpc:" not in log
    elapsed = alliance.job(job).get("RunTime") or alliance.job(job).get("Elapsed", "")
    assert elapsed.startswith("00:00:"), elapsed


@pytest.mark.slurm
@pytest.mark.slow
def test_package_missing_from_the_wheelhouse_is_refused_before_queueing(alliance, alliance_jobs, tmp_path):
    lean = tmp_path / "wheelhouse"  # the sandbox's wheelhouse without tensorboard
    lean.mkdir()
    for wheel in WHEELHOUSE.glob("*.whl"):
        if not wheel.name.startswith("tensorboard-"):
            (lean / wheel.name).symlink_to(wheel)
    project = alliance_jobs["project"]
    runs_before, queued_before = sorted(project.glob("runs/*")), alliance.queued()
    proc = cli(
        "submit",
        "quickstart",
        "--cluster",
        "local",
        "--set",
        "experiment.loggers=[csv,tensorboard]",
        cwd=project,
        env={**alliance_jobs["env"], "MNIST_HPC_WHEELHOUSE": str(lean)},
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (
        proc.stderr.startswith("error: the job needs tensorboard, which $MNIST_HPC_WHEELHOUSE")
        and proc.stderr.count("\n") == 1
    ), proc.stderr
    assert sorted(project.glob("runs/*")) == runs_before and len(alliance.queued()) <= len(queued_before)


def _check_alliance_run(sandbox: Sandbox, job: str, log: str, summary: dict, packages: str) -> None:
    tmp = _job_dir(sandbox, job)
    assert f": virtualenv {tmp}/env with {packages} (" in log  # built on the node, from the wheelhouse
    assert f"python {tmp}/env/bin/python," in log  # the interpreter of the job's own virtualenv
    assert f"data from {tmp}/data ($MNIST_HPC_DATA_DIR)" in log  # the unpacked archive
    assert summary["status"] == "completed", summary


@pytest.mark.slurm
@pytest.mark.slow
def test_handout_script_runs_as_on_a_cluster(alliance, alliance_jobs):
    job, project = alliance_jobs["handout"], alliance_jobs["project"]
    state = alliance.wait(job)
    log = (project / f"slurm-{job}.out").read_text()
    assert state == "COMPLETED", log[-3000:]
    summary = json.loads((project / "runs" / f"quickstart-job{job}" / "summary.json").read_text())
    _check_alliance_run(alliance, job, log, summary, "torch torchvision numpy pyyaml click tqdm matplotlib")
    assert summary["test_accuracy"] >= 0.985, summary


@pytest.mark.slurm
@pytest.mark.slow
def test_submit_installs_what_the_config_needs(alliance, alliance_jobs):
    job, project = alliance_jobs["quick"], alliance_jobs["project"]
    state = alliance.wait(job)
    run = run_folder(project, job)
    log = (run / f"slurm-{job}.out").read_text()
    assert state == "COMPLETED", log[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    _check_alliance_run(
        alliance, job, log, summary, "torch torchvision numpy pyyaml click tqdm matplotlib tensorboard"
    )
    assert summary["test_accuracy"] >= 0.985, summary
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slurm
@pytest.mark.slow
def test_two_task_srun_job_sets_up_one_environment_per_node(alliance, alliance_jobs):
    job, project = alliance_jobs["ddp"], alliance_jobs["project"]
    state = alliance.wait(job)
    run = run_folder(project, job)
    log = (run / f"slurm-{job}.out").read_text()
    assert state == "COMPLETED", log[-3000:]
    assert "exec srun" in (run / "job.sh").read_text()
    assert log.count(f"virtualenv {_job_dir(alliance, job)}/env with") == 1, log
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed", summary
