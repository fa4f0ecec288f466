"""Job-script rendering: golden files for every template x profile, slurm/*.sh kept identical
to the generator, shellcheck on everything, quoting of hostile names and paths.

Regenerate the golden files after an intended change of a template or a profile with
    MNIST_HPC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_job_script_render.py
and review the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_hpc.cluster import handouts
from mnist_hpc.cluster import render as R
from mnist_hpc.cluster.profiles import get_profile, load_profiles
from mnist_hpc.cluster.spec import KINDS, JobSpec
from mnist_hpc.errors import UserError
from tests.paths import ROOT

GOLDEN = Path(__file__).resolve().parent / "golden"
PROFILES = [
    "fir",
    "nibi",
    "rorqual",
    "trillium",
    "narval",
    "tamia",
    "killarney",
    "killarney-h100",
    "vulcan",
    "alliance",
    "generic",
    "local",
]
UPDATE = os.environ.get("MNIST_HPC_UPDATE_GOLDEN") == "1"


def example_spec(template: str, cluster: str) -> JobSpec:
    """A typical job of ``template`` on ``cluster``, as `mnist-hpc submit` would describe it."""
    profile, _ = get_profile(cluster)
    wanted = {
        "submit_job": 1,
        "multi_gpu": 2,
        "multi_node": 4,
        "sweep_array": 1,
        "cpu_only": 0,
        "sweep_report": 0,
    }[template]
    gpus = min(wanted, profile.gpus_per_node)
    if gpus and profile.gpu_counts:  # the smallest count the cluster takes (Trillium: 1 or 4)
        gpus = min((n for n in profile.gpu_counts if n >= gpus), default=gpus)
    run = "/home/someone/scratch/mnist-hpc/runs/golden-20260101-120000"
    return JobSpec(
        template=template,
        profile=profile,
        job_name="golden",
        config=f"{run}/config.yaml",
        run_dir=run if template not in ("sweep_array", "sweep_report") else "",
        sweep="/home/someone/scratch/mnist-hpc/configs/sweeps/learning_rate.yaml",
        time="2:00:00",
        nodes=2 if template == "multi_node" else 1,
        gpus_per_node=gpus,
        tasks_per_node=2 if template == "multi_gpu" and not gpus else None,
        account=f"{(profile.account_prefixes or ('def-',))[0]}someone" if profile.account_required else None,
        mail_user="someone@example.com",
        output=f"{run}/slurm-%A_%a.out" if template == "sweep_array" else f"{run}/slurm-%j.out",
        array="0-9%4" if template == "sweep_array" else None,
        dependency="afterany:1234" if template == "sweep_report" else "",
        workdir="/home/someone/scratch/mnist-hpc",
        data_archive="/home/someone/scratch/mnist-hpc/data/mnist-hpc-data.tar",
        script_name=f"{run}/job.sh",
    )


# one process with one GPU cannot run where jobs take whole nodes only (pinned by a refusal test)
REFUSED = {("submit_job", "tamia"), ("sweep_array", "tamia")}
CASES = [(t, c) for t in KINDS for c in PROFILES if (t, c) not in REFUSED]


def test_every_builtin_profile_is_covered():
    assert sorted(load_profiles()[0]) == sorted(PROFILES)


@pytest.mark.parametrize("template,cluster", CASES, ids=[f"{t}-{c}" for t, c in CASES])
def test_golden(template, cluster):
    text = R.render(example_spec(template, cluster))
    path = GOLDEN / f"{template}--{cluster}.sh"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with MNIST_HPC_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{path} differs: review, then MNIST_HPC_UPDATE_GOLDEN=1"


PACKED = ("narval", "local")  # sweep submit --pack 3: task I runs 3 runs one after another (cluster.packed)


@pytest.mark.parametrize("cluster", PACKED)
def test_golden_packed_sweep(cluster):
    from dataclasses import replace

    spec = replace(example_spec("sweep_array", cluster), pack=3, array="0-3%4")
    text = R.render(spec)
    assert 'args=(sweep task "$SWEEP" --task "$(( SLURM_ARRAY_TASK_ID + INDEX_OFFSET ))" --pack 3)' in text
    assert "sweep run" not in text
    path = GOLDEN / f"sweep_packed--{cluster}.sh"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with MNIST_HPC_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{path} differs: review, then MNIST_HPC_UPDATE_GOLDEN=1"


def test_no_golden_file_is_orphaned():
    expected = {f"{t}--{c}.sh" for t, c in CASES} | {f"sweep_packed--{c}.sh" for c in PACKED}
    assert {p.name for p in GOLDEN.glob("*.sh")} == expected


# The README tells users to put their account and mail address into slurm/*.sh: those two
# lines may differ from the generator's placeholders without the scripts being stale.
_USER_LINES = re.compile(r"^(#SBATCH --(?:account|mail-user)=).*$", re.MULTILINE)


def stale_handouts(folder: Path, rendered: Path) -> list[str]:
    """The scripts of ``folder`` that differ from the generator's (in ``rendered``), the
    account and mail lines aside."""
    return [
        name
        for name in handouts.handout_specs()
        if _USER_LINES.sub(r"\1...", (folder / name).read_text())
        != _USER_LINES.sub(r"\1...", (rendered / name).read_text())
    ]


def test_slurm_dir_matches_generator(tmp_path):
    handouts.write_slurm_dir(tmp_path)
    stale = stale_handouts(ROOT / "slurm", tmp_path)
    assert not stale, (
        f"slurm/{', '.join(stale)} stale: run python -m mnist_hpc.cluster.handouts --write-slurm-dir slurm/"
    )
    assert sorted(p.name for p in (ROOT / "slurm").glob("*.sh")) == sorted(handouts.handout_specs())


def test_handouts_with_account_and_mail_edited_are_not_stale(tmp_path):
    """As the README says: edit --account and --mail-user in slurm/*.sh, then `make test`."""
    rendered, copy = tmp_path / "rendered", tmp_path / "slurm"
    handouts.write_slurm_dir(rendered)
    shutil.copytree(ROOT / "slurm", copy)
    for path in copy.glob("*.sh"):
        text = path.read_text()
        text = re.sub(r"^#SBATCH --account=.*$", "#SBATCH --account=def-mypi", text, flags=re.MULTILINE)
        path.write_text(
            re.sub(r"^#SBATCH --mail-user=.*$", "#SBATCH --mail-user=me@uni.ca", text, flags=re.MULTILINE)
        )
    assert "#SBATCH --account=def-mypi\n" in (copy / "submit_job.sh").read_text()
    assert stale_handouts(copy, rendered) == []
    # any other change still counts
    text = (copy / "cpu_only.sh").read_text()
    (copy / "cpu_only.sh").write_text(text.replace("#SBATCH --time=", "#SBATCH --time=9", 1))
    assert stale_handouts(copy, rendered) == ["cpu_only.sh"]


def test_handout_script_is_ready_to_edit(tmp_path):
    handouts.write_slurm_dir(tmp_path)  # as generated; the user may have filled in slurm/ already
    text = (tmp_path / "submit_job.sh").read_text()
    assert "#SBATCH --account=def-someuser\n" in text
    assert "#SBATCH --mail-user=someone@example.com\n" in text
    shipped = (ROOT / "slurm" / "submit_job.sh").read_text()
    assert "#SBATCH --account=" in shipped and "#SBATCH --mail-user=" in shipped
    text = shipped
    assert 'cd "$SLURM_SUBMIT_DIR"\n' in text
    assert "CONFIG=configs/quickstart.yaml " in text
    # typed: untyped requests "may be rejected or sent to an arbitrary GPU instance" [Using GPUs with Slurm]
    assert "#SBATCH --gpus-per-node=h100:1\n" in text and "#SBATCH --signal=B:USR1@90\n" in text
    assert "MODULES=(StdEnv/2023 python/3.13)\n" in text
    assert "# On Narval (A100 GPUs) change h100 to a100 in the GPU request. [Narval]\n" in text
    # a whole node: what Trillium (1 GPU or whole nodes of 4) and every other cluster accept
    multi = (ROOT / "slurm" / "multi_gpu.sh").read_text()
    assert "#SBATCH --gpus-per-node=h100:4\n" in multi and "#SBATCH --ntasks-per-node=4\n" in multi
    for name in handouts.handout_specs():
        text = (ROOT / "slurm" / name).read_text()
        gpu = [line for line in text.splitlines() if line.startswith("#SBATCH --gpus-per-node=")]
        assert all(line.split("=")[1].startswith("h100:") for line in gpu), (name, gpu)


def test_gpu_requests_follow_the_profile():
    text = R.render(example_spec("submit_job", "narval"))
    assert "#SBATCH --gpus-per-node=a100:1\n" in text and "#SBATCH --cpus-per-task=12\n" in text
    # StdEnv/2023 first everywhere; no cuda module (PyTorch page: python only)
    assert "MODULES=(StdEnv/2023 python/3.13)\n" in text
    text = R.render(example_spec("multi_gpu", "rorqual"))
    assert "#SBATCH --gpus-per-node=h100:2\n" in text and "#SBATCH --ntasks-per-node=2\n" in text
    assert "#SBATCH --cpus-per-task=16\n" in text and "#SBATCH --mem=128G\n" in text
    assert "#SBATCH --signal=USR1@90\n" in text  # srun tasks get it, not the batch shell
    assert "#SBATCH --gres=gpu:1\n" in R.render(example_spec("submit_job", "generic"))
    local = R.render(example_spec("cpu_only", "local"))
    assert "gpu" not in "".join(line for line in local.splitlines() if line.startswith("#SBATCH"))
    # the sandbox loads modules only in its Alliance-like mode, where `module` exists
    assert "--account" not in local and "MODULES=(StdEnv/2023 python/3.11)\n" in local
    assert "MODULES=()\n" in R.render(example_spec("cpu_only", "generic"))
    mig = R.render(JobSpec(**{**example_spec("submit_job", "narval").__dict__, "gpu_type": "a100_1g.5gb"}))
    assert "#SBATCH --gpus-per-node=a100_1g.5gb:1\n" in mig


def _spec(*example, **change) -> JobSpec:
    """``example_spec(*example)`` with some fields changed."""
    return JobSpec(**{**example_spec(*example).__dict__, **change})


@pytest.mark.parametrize(
    "cluster,slice_,cpus,mem",
    [
        # the recommended cores and memory per slice [Allocations and compute scheduling § Ratios in bundles]
        ("narval", "a100_1g.5gb", 1, "15G"),
        ("narval", "a100_3g.20gb", 6, "62G"),
        ("nibi", "h100_1g.10gb", 2, "31G"),
        ("rorqual", "h100_3g.40gb", 8, "62G"),
        ("fir", "nvidia_h100_80gb_hbm3_2g.20gb", 3, "70G"),
        # the long names Nibi and Rorqual list beside the short ones [Nibi, Rorqual § GPU instances]
        ("nibi", "nvidia_h100_80gb_hbm3_1g.10gb", 2, "31G"),
        ("rorqual", "nvidia_h100_80gb_hbm3_3g.40gb", 8, "62G"),
    ],
)
def test_mig_slice_gets_its_own_cores_and_memory(cluster, slice_, cpus, mem):
    text = R.render(_spec("submit_job", cluster, gpu_type=slice_))
    assert f"#SBATCH --gpus-per-node={slice_}:1\n" in text
    assert f"#SBATCH --cpus-per-task={cpus}\n" in text and f"#SBATCH --mem={mem}\n" in text


@pytest.mark.parametrize(
    "change,message",
    [
        # "requesting more than one MIG instance in a job is not permitted" [Multi-Instance GPU]
        ({"gpu_type": "a100_1g.5gb", "gpus_per_node": 2}, "one MIG instance only, on one node"),
        ({"template": "multi_node", "gpu_type": "a100_1g.5gb", "nodes": 2}, "one MIG instance only"),
        ({"gpu_type": "h100_1g.10gb"}, "not known on cluster narval"),
    ],
)
def test_mig_rules(change, message):
    with pytest.raises(UserError, match=message):
        R.render(_spec("submit_job", "narval", **change))
    assert (
        "trillium" in get_profile("trillium")[0].name and not get_profile("trillium")[0].mig
    )  # no MIG there


def test_trillium_takes_one_gpu_or_whole_nodes():
    """[Trillium Quickstart] exactly 1 GPU or a multiple of 4; --gpus-per-node=4 on several nodes."""
    one = R.render(example_spec("submit_job", "trillium"))
    assert "#SBATCH --gpus-per-node=h100:1\n" in one and "#SBATCH --cpus-per-task=24\n" in one
    assert "--mem" not in one and "MODULES=(StdEnv/2023 python/3.13)\n" in one
    assert "# Trillium: submit from $SCRATCH ($HOME is read-only on compute nodes)" in one
    whole = R.render(example_spec("multi_gpu", "trillium"))
    assert "#SBATCH --gpus-per-node=h100:4\n" in whole and "#SBATCH --ntasks-per-node=4\n" in whole
    for gpus in (2, 3):
        with pytest.raises(UserError, match=f"--gpus {gpus}: cluster trillium takes 1 or 4 GPUs per node"):
            R.render(_spec("multi_gpu", "trillium", gpus_per_node=gpus))
    with pytest.raises(UserError, match="a job on several nodes takes whole nodes: --gpus 4"):
        R.render(_spec("multi_node", "trillium", gpus_per_node=1))


def test_trillium_cpu_jobs_take_whole_nodes():
    """[Trillium] CPU resources are "scheduled by whole 192-core node"; --mem is ignored."""
    text = R.render(example_spec("cpu_only", "trillium"))
    assert "#SBATCH --cpus-per-task=192\n" in text and "--mem" not in text
    assert "#SBATCH --ntasks-per-node=2\n" in R.render(
        _spec("multi_gpu", "trillium", gpus_per_node=0, tasks_per_node=2, cpus_per_task=96)
    )
    with pytest.raises(UserError, match="runs CPU-only jobs on whole 192-core nodes; ask for --cpus 192"):
        R.render(_spec("cpu_only", "trillium", cpus_per_task=4))


def test_tamia_takes_whole_nodes_and_aip_accounts():
    """[TamIA] all 4 GPUs of a node; aip- accounts."""
    assert "#SBATCH --gpus-per-node=h100:4\n" in R.render(example_spec("multi_gpu", "tamia"))
    for template, cluster in REFUSED:
        with pytest.raises(UserError, match="--gpus 1: cluster tamia takes 4 GPUs per node"):
            R.render(_spec(template, cluster, gpus_per_node=1))
        with pytest.raises(UserError, match="runs one process: one GPU at most"):
            R.render(_spec(template, cluster, gpus_per_node=4))
    with pytest.raises(UserError, match=r"runs jobs of aip-... accounts only"):
        R.render(_spec("multi_gpu", "tamia", account="def-someone"))


def test_nibi_has_eight_gpus_per_node():
    """[Nibi § Node characteristics] 8 x H100 per node; 14 cores per GPU."""
    text = R.render(_spec("multi_gpu", "nibi", gpus_per_node=8))
    assert "#SBATCH --gpus-per-node=h100:8\n" in text and "#SBATCH --cpus-per-task=14\n" in text


def test_sweep_array_runs_the_task_index_plus_offset():
    spec = JobSpec(**{**example_spec("sweep_array", "fir").__dict__, "index_offset": 999})
    text = R.render(spec)
    assert "#SBATCH --array=0-9%4\n" in text and "INDEX_OFFSET=999 " in text
    assert 'args=(sweep run "$SWEEP" --index "$(( SLURM_ARRAY_TASK_ID + INDEX_OFFSET ))")' in text


def test_requeue_signal_follows_the_spec():
    spec = JobSpec(**{**example_spec("submit_job", "fir").__dict__, "requeue_signal": "USR2"})
    text = R.render(spec)
    assert "#SBATCH --signal=B:USR2@90\n" in text and "REQUEUE_SIGNAL=USR2 " in text


@pytest.mark.parametrize(
    "change,message",
    [
        ({"account": None}, "needs a Slurm account"),
        ({"gpus_per_node": 5}, "has 4 GPUs per node"),
        ({"time": "7-00:00:01"}, "above the 7-00:00:00 maximum"),
        ({"time": "soon"}, "expected a Slurm time"),
        ({"gpu_type": "v100"}, "not known on cluster fir"),
        ({"mem": "lots"}, "expected a size"),
        ({"job_name": "two\nlines"}, "control characters"),
        ({"nodes": 2}, "use multi_node"),
    ],
)
def test_bad_specs_are_refused(change, message):
    spec = JobSpec(**{**example_spec("submit_job", "fir").__dict__, **change})
    with pytest.raises(UserError, match=message):
        R.render(spec)


def test_cpu_only_cluster_refuses_gpus():
    spec = JobSpec(**{**example_spec("cpu_only", "local").__dict__, "gpus_per_node": 1})
    with pytest.raises(UserError, match="cluster local has no GPUs"):
        R.render(spec)


HOSTILE = '/tmp/it\'s a "job" $(touch pwned) `x` \\ dir'


def hostile_spec(tmp: str = HOSTILE) -> JobSpec:
    profile, _ = get_profile("local")
    return JobSpec(
        template="cpu_only",
        profile=profile,
        job_name='it\'s a "job" $HOME',
        config=f"{tmp}/config.yaml",
        run_dir=tmp,
        output=f"{tmp}/slurm-%j.out",
        workdir=tmp,
        data_archive=f"{tmp}/data.tar",
        data_dir=f"{tmp}/data",
    )


def test_hostile_values_are_quoted():
    text = R.render(hostile_spec())
    assert '#SBATCH --job-name="it\'s a \\"job\\" $HOME"\n' in text
    assert '#SBATCH --output="/tmp/it\'s a \\"job\\" $(touch pwned) `x` \\\\ dir/slurm-%j.out"\n' in text
    # the shell reads every assignment back as exactly the value given
    lines = [
        line.split("  #")[0]
        for line in text.splitlines()
        if line.split("=")[0] in ("CONFIG", "RUN_DIR", "DATA_ARCHIVE", "DATA_DIR")
    ]
    script = "\n".join(lines) + '\nprintf "%s\\n" "$CONFIG" "$RUN_DIR" "$DATA_ARCHIVE" "$DATA_DIR"\n'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"{HOSTILE}/config.yaml", HOSTILE, f"{HOSTILE}/data.tar", f"{HOSTILE}/data"]
    cd = next(line for line in text.splitlines() if line.startswith("cd "))
    out = subprocess.run(["bash", "-c", cd.replace("cd ", "printf %s ", 1)], capture_output=True, text=True)
    assert out.stdout == HOSTILE


def test_rendered_scripts_parse():
    for t, c in CASES:
        proc = subprocess.run(
            ["bash", "-n"], input=R.render(example_spec(t, c)), text=True, capture_output=True
        )
        assert proc.returncode == 0, (t, c, proc.stderr)


@pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck not installed (apt-get install shellcheck; .ci/run installs it)",
)
def test_shellcheck_clean(tmp_path):
    files = [str(p) for p in sorted((ROOT / "slurm").glob("*.sh"))]
    files += [str(p) for p in sorted((ROOT / "scripts").glob("*.sh"))]
    files += [str(p) for p in sorted(GOLDEN.glob("*.sh"))]
    proc = subprocess.run(["shellcheck", "--severity=style", *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The hostile values hold a literal $(...) on purpose; SC2016 ("expressions don't expand in
    # single quotes") is the point there, so only that note is allowed.
    hostile = tmp_path / "hostile.sh"
    hostile.write_text(R.render(hostile_spec()))
    proc = subprocess.run(
        ["shellcheck", "--severity=style", "--exclude=SC2016", str(hostile)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- the batch shell at run time


def _fake_python(tmp_path, body: str) -> Path:
    """A stand-in for python that logs its arguments, then runs ``body``."""
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/bin/bash\necho "args: $*" >> "$FAKE_LOG"\n{body}\n')
    fake.chmod(0o755)
    return fake


def _run_script(tmp_path, fake: Path, **env) -> subprocess.Popen:
    spec = JobSpec(
        **{
            **example_spec("cpu_only", "local").__dict__,
            "workdir": str(tmp_path),
            "run_dir": str(tmp_path / "run dir"),
            "config": str(tmp_path / "my config.yaml"),
            "data_archive": "",
            "data_dir": "",
        }
    )
    script = tmp_path / "job.sh"
    script.write_text(R.render(spec))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.Popen(
        ["bash", str(script)],
        env={
            **clean,
            "MNIST_HPC_PYTHON": str(fake),
            "FAKE_LOG": str(tmp_path / "log"),
            "SLURM_JOB_ID": "7",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_job_script_runs_train_and_returns_its_exit_status(tmp_path):
    proc = _run_script(tmp_path, _fake_python(tmp_path, "exit 3"))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3, out
    log = (tmp_path / "log").read_text()
    assert (
        log
        == f"args: -m mnist_hpc train {tmp_path}/my config.yaml --resume auto --run-dir {tmp_path}/run dir\n"
    )


def test_job_script_forwards_the_requeue_signal(tmp_path):
    """Slurm's B:USR1 reaches only the batch shell; the trap must pass it to the trainer."""
    import signal
    import time

    fake = _fake_python(
        tmp_path,
        'trap \'echo "got USR1" >> "$FAKE_LOG"; exit 75\' USR1\n'
        'echo ready >> "$FAKE_LOG"\nwhile true; do sleep 0.1; done',
    )
    proc = _run_script(tmp_path, fake)
    log = tmp_path / "log"
    deadline = time.monotonic() + 20
    while "ready" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert "got USR1" in log.read_text(), out
    assert proc.returncode == 75, out  # the trainer's exit status, not bash's 128+10


def test_one_place_decides_the_alliance_software_stack():
    """Every Alliance profile loads fir's modules (StdEnv/2023, then a python the wheelhouse has
    torch wheels for [Python; Wheels3.13]) and names the Alliance wheelhouse; jobs purge first and
    give OpenMP one thread per core of the task."""
    profiles = {
        n: get_profile(n)[0] for n in ("fir", "nibi", "rorqual", "narval", "trillium", "tamia", "alliance")
    }
    assert {p.modules for p in profiles.values()} == {("StdEnv/2023", "python/3.13")}
    assert {p.wheelhouse for p in profiles.values()} == {
        ("/cvmfs/soft.computecanada.ca/custom/python/wheelhouse",)
    }
    text = R.render(example_spec("submit_job", "nibi"))
    assert text.index("  module purge") < text.index('  module load "${MODULES[@]}"')
    assert "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-" in text


def test_trillium_job_refuses_a_missing_or_stale_home_virtualenv(tmp_path):
    """[Trillium Quickstart; Data management at Trillium] the job activates the virtualenv made
    once in $HOME (its $SLURM_TMPDIR is a RAM disk): missing or stale, it stops with the fix."""
    from mnist_hpc.cluster import nodeenv

    spec = _spec("submit_job", "trillium")
    text = R.render(spec)
    assert "HOME_VENV=$HOME/.virtualenvs/mnist-hpc\n" in text
    assert "HOME_VENV" not in R.render(example_spec("submit_job", "fir"))
    # run the script's venv check only: everything up to the node setup
    head = text[: text.index("# ---- node setup")] + 'echo "python=$MNIST_HPC_PYTHON"\n'
    head = head.replace("cd /home/someone/scratch/mnist-hpc", f"cd {tmp_path}")
    script = tmp_path / "job.sh"
    script.write_text(head)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}

    def run():
        return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)

    r = run()
    assert r.returncode == 1 and "error: no virtualenv at" in r.stderr
    assert "mnist-hpc setup --cluster trillium" in r.stderr
    venv = tmp_path / ".virtualenvs" / "mnist-hpc"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / nodeenv.STAMP_FILE).write_text(
        "mnist-hpc 0.0.1; modules StdEnv/2023 python/3.11; packages torch\n"
    )
    r = run()
    assert r.returncode == 1 and "is stale" in r.stderr and "mnist-hpc setup --cluster trillium" in r.stderr
    with pytest.raises(UserError, match="is stale"):
        nodeenv.check_home_venv(spec.profile, spec.packages, home=tmp_path)
    (venv / nodeenv.STAMP_FILE).write_text(nodeenv.venv_stamp(spec.profile.modules, spec.packages) + "\n")
    r = run()
    assert r.returncode == 0 and f"python={venv}/bin/python" in r.stdout, r.stderr
    nodeenv.check_home_venv(spec.profile, spec.packages, home=tmp_path)  # submit accepts it too


def test_ai_clusters_follow_their_pages():
    """[Killarney; Vulcan; Using GPUs with Slurm] L40S nodes of 4 GPUs and 64 cores (Killarney's
    performance nodes: 8 x H100, 48 cores), specifiers l40s and h100, aip- accounts; Vulcan's
    jobs last at most 7 days."""
    k, kh, v = (get_profile(n)[0] for n in ("killarney", "killarney-h100", "vulcan"))
    assert (k.gpu_type, k.gpus_per_node, k.cpus_per_gpu) == ("l40s", 4, 16)
    assert (kh.gpu_type, kh.gpus_per_node, kh.cpus_per_gpu) == ("h100", 8, 6)
    assert (v.gpu_type, v.gpus_per_node, v.cpus_per_gpu, v.max_time) == ("l40s", 4, 16, "7-00:00:00")
    assert all(p.account_prefixes == ("aip-",) and not p.mig and not p.internet for p in (k, kh, v))
    text = R.render(example_spec("submit_job", "vulcan"))
    assert "#SBATCH --gpus-per-node=l40s:1\n" in text and "#SBATCH --account=aip-someone\n" in text
