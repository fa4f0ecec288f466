"""`submit`, `status`, `logs`, `cancel`, `push`, `data pack` and cluster profiles, without a
real Slurm: dry runs, fake Slurm commands on PATH, and the user's mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mnist_hpc.cli import cluster as commands
from mnist_hpc.cluster import datapack, slurm
from mnist_hpc.cluster.profiles import get_profile, load_profiles
from mnist_hpc.cluster.push import push_commands
from mnist_hpc.cluster.units import format_time, parse_time
from mnist_hpc.errors import ConfigError, UserError
from tests.paths import ROOT

QUICKSTART = ROOT / "configs" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def registered(monkeypatch, tmp_path):
    """The cluster commands on the main CLI; no user profile files; a clean working folder."""
    from mnist_hpc.cli.main import cli

    commands.register(cli)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("MNIST_HPC_CLUSTERS", "SBATCH_ACCOUNT", "SLURM_ACCOUNT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def gz_data(tmp_path, monkeypatch) -> Path:
    """A data root with the four .gz files of MNIST (contents do not matter for packing)."""
    root = tmp_path / "datasets"
    for f in datapack.dataset_files(root, "mnist"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"fake " + f.name.encode())
    monkeypatch.setenv("MNIST_HPC_DATA_DIR", str(root))
    return root


def fake_command(tmp_path, name: str, body: str) -> Path:
    """Put an executable ``name`` (a shell script) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return path


@pytest.fixture
def keep_path(monkeypatch):
    monkeypatch.setenv("PATH", os.environ["PATH"])


# --------------------------------------------------------------------------- dry runs


def test_narval_dry_run_asks_for_an_a100(cli, tmp_path):
    r = cli("submit", QUICKSTART, "--cluster", "narval", "--account", "def-x", "--dry-run")
    assert r.code == 0, r
    assert "#SBATCH --gpus-per-node=a100:1\n" in r.out
    assert "#SBATCH --account=def-x\n" in r.out and "#SBATCH --cpus-per-task=12\n" in r.out
    assert "dry run: nothing submitted" in r.err
    assert not (tmp_path / "runs").exists()  # a dry run creates nothing


def test_fir_dry_run_asks_for_an_h100(cli):
    r = cli("submit", QUICKSTART, "--cluster", "fir", "--account", "def-x", "--gpus", "2", "--dry-run")
    assert r.code == 0, r
    assert "#SBATCH --gpus-per-node=h100:2\n" in r.out and "#SBATCH --ntasks-per-node=2\n" in r.out
    assert "exec srun" in r.out  # two GPUs: one task per GPU


def test_narval_mig_slice(cli):
    r = cli(
        "submit",
        QUICKSTART,
        "--cluster",
        "narval",
        "--account",
        "def-x",
        "--gpus",
        "a100_2g.10gb:1",
        "--dry-run",
    )
    assert r.code == 0, r
    assert "#SBATCH --gpus-per-node=a100_2g.10gb:1\n" in r.out


def test_cedar_warns_and_uses_fir(cli):
    r = cli("submit", QUICKSTART, "--cluster", "cedar", "--account", "def-x", "--dry-run")
    assert r.code == 0, r
    assert "Cedar was retired on 12 September 2025" in r.err and "fir" in r.err
    assert "#SBATCH --gpus-per-node=h100:1\n" in r.out


@pytest.mark.parametrize(
    "old,new", [("graham", "nibi"), ("beluga", "rorqual"), ("niagara", "trillium"), ("mist", "trillium")]
)
def test_other_retired_names(old, new):
    profile, warning = get_profile(old)
    assert profile.name == new and new in warning


@pytest.mark.parametrize("old,when", [("niagara", "30 September 2025"), ("mist", "16 September 2025")])
def test_niagara_and_mist_redirect_to_trillium(cli, old, when):
    """[Infrastructure renewal] Niagara and Mist were retired; Trillium replaced both."""
    r = cli("submit", QUICKSTART, "--cluster", old, "--account", "def-x", "--dry-run")
    assert r.code == 0, r
    assert f"was retired on {when}; using its successor trillium instead" in r.err
    assert "cluster profile trillium" in r.out


def test_beluga_note_says_its_data_access_ended():
    assert "access to its data ended on 20 June 2026" in get_profile("beluga")[1]


def test_trillium_refuses_two_gpus_and_renders_a_whole_node_for_four(cli):
    """[Trillium Quickstart] 1 GPU or whole nodes of 4; the script loads StdEnv/2023 first."""
    r = cli("submit", QUICKSTART, "--cluster", "trillium", "--gpus", "2", "--dry-run", "--account", "def-x")
    assert r.code == 1 and r.out == ""
    assert "error: --gpus 2: cluster trillium takes 1 or 4 GPUs per node (4 = a whole node)" in r.err
    r = cli("submit", QUICKSTART, "--cluster", "trillium", "--gpus", "4", "--dry-run", "--account", "def-x")
    assert r.code == 0, r
    assert "#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=4\n#SBATCH --cpus-per-task=24\n" in r.out
    assert "#SBATCH --gpus-per-node=h100:4\n" in r.out and "exec srun" in r.out
    assert "MODULES=(StdEnv/2023 python/3.13)\n" in r.out


def test_trillium_refuses_a_run_folder_under_the_read_only_home(cli, tmp_path, monkeypatch):
    """[Transition from Niagara to Trillium] $HOME is read-only on compute nodes: submit from $SCRATCH."""
    monkeypatch.setenv("HOME", str(tmp_path))  # the working folder (tmp_path) is now under $HOME
    r = cli("submit", QUICKSTART, "--cluster", "trillium", "--dry-run", "--account", "def-x")
    assert r.code == 1 and "$HOME is read-only on compute nodes" in r.err and "submit from $SCRATCH" in r.err
    r = cli("submit", QUICKSTART, "--cluster", "fir", "--dry-run", "--account", "def-x")
    assert r.code == 0, r


def test_tamia_defaults_to_a_whole_node(cli):
    """[TamIA] every job uses all 4 GPUs of its nodes; aip- accounts."""
    r = cli("submit", QUICKSTART, "--cluster", "tamia", "--account", "aip-x", "--dry-run")
    assert r.code == 0 and "#SBATCH --gpus-per-node=h100:4\n" in r.out and "exec srun" in r.out, r
    r = cli("submit", QUICKSTART, "--cluster", "tamia", "--account", "def-x", "--dry-run")
    assert r.code == 1 and "runs jobs of aip-... accounts only" in r.err


def test_narval_refuses_two_mig_slices(cli):
    """[Multi-Instance GPU] one MIG instance per job."""
    r = cli(
        "submit",
        QUICKSTART,
        "--cluster",
        "narval",
        "--account",
        "def-x",
        "--gpus",
        "a100_1g.5gb:2",
        "--dry-run",
    )
    assert r.code == 1 and "a job may use one MIG instance only" in r.err, r


def test_missing_account_is_refused(cli):
    r = cli("submit", QUICKSTART, "--cluster", "fir", "--dry-run")
    assert r.code == 1 and r.out == ""
    assert "cluster fir needs a Slurm account: pass --account" in r.err
    assert "Traceback" not in r.err


def test_account_from_the_environment(cli, monkeypatch):
    monkeypatch.setenv("SBATCH_ACCOUNT", "def-env")
    r = cli("submit", QUICKSTART, "--cluster", "rorqual", "--dry-run")
    assert r.code == 0 and "#SBATCH --account=def-env\n" in r.out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--cluster", "fir", "--account", "a", "--gpus", "5"], "--gpus 5: cluster fir has 4 GPUs per node"),
        (["--cluster", "trillium", "--account", "a", "--time", "1-00:00:01"], "above the 1-00:00:00 maximum"),
        (["--cluster", "fir", "--account", "a", "--time", "8-00:00:00"], "above the 7-00:00:00 maximum"),
        (["--cluster", "fir", "--account", "a", "--time", "half an hour"], "expected a Slurm time"),
        (["--cluster", "fir", "--account", "a", "--gpus", "two"], "expected a number or TYPE:NUMBER"),
        (["--cluster", "narval", "--account", "a", "--gpus", "h100:1"], "not known on cluster narval"),
        (["--cluster", "local", "--gpus", "1"], "cluster local has no GPUs"),
        (["--cluster", "narwal"], "unknown cluster 'narwal' (did you mean 'narval'?)"),
        (["--cluster", "fir", "--account", "a", "--set", "optim.lr=-1"], "optim.lr"),
    ],
)
def test_bad_requests_are_refused(cli, args, message):
    r = cli("submit", QUICKSTART, *args, "--dry-run")
    assert r.code in (1, 2) and message in r.err, r
    assert "Traceback" not in r.err


def test_config_errors_exit_2(cli):
    r = cli("submit", QUICKSTART, "--cluster", "local", "--set", "optim.lrr=1", "--dry-run")
    assert r.code == 2 and "did you mean 'lr'" in r.err


# --------------------------------------------------------------------------- sweep submit

SWEEP = ROOT / "configs" / "sweeps" / "learning_rate.yaml"


def test_sweep_submit_dry_run(cli, tmp_path):
    r = cli(
        "sweep", "submit", SWEEP, "--cluster", "narval", "--account", "def-x", "--parallel", "2", "--dry-run"
    )
    assert r.code == 0, r
    assert r.out.count("#!/bin/bash") == 1 and "#SBATCH --array=0-4%2\n" in r.out
    assert f"SWEEP={tmp_path}/runs/learning_rate-sweep-" in r.out and "INDEX_OFFSET=0 " in r.out
    assert (
        "/sweep.yaml " in r.out
    )  # the tasks read the sweep's snapshot (tests/test_sweep_submit_snapshot.py)
    assert "5 runs in 1 job array(s)" in r.err and not (tmp_path / "runs").exists()


def test_sweep_larger_than_the_array_limit_is_split(cli, tmp_path, gz_data, keep_path, monkeypatch):
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text("profiles:\n  tiny:\n    extends: local\n    max_array_size: 2\n")
    monkeypatch.setenv("MNIST_HPC_CLUSTERS", str(clusters))
    calls = tmp_path / "sbatch-calls"
    fake_command(tmp_path, "sbatch", f'echo "$*" >> "{calls}"\nn=$(wc -l < "{calls}")\necho $((500 + n))\n')
    r = cli("sweep", "submit", SWEEP, "--cluster", "tiny", "--parallel", "3")
    assert r.code == 0, r
    lines = calls.read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("--parsable ") and "--dependency" not in lines[0]
    assert "--dependency=afterany:501" in lines[1] and "--dependency=afterany:502" in lines[2]
    (folder,) = (tmp_path / "runs").iterdir()
    record = json.loads((folder / "job.json").read_text())
    assert [j["job_id"] for j in record["jobs"]] == ["501", "502", "503"]
    assert [j["index_offset"] for j in record["jobs"]] == [0, 2, 4]
    assert [j["array"] for j in record["jobs"]] == ["0-1%2", "0-1%2", "0-0%1"]
    assert "INDEX_OFFSET=4 " in (folder / "job-2.sh").read_text()


# --------------------------------------------------------------------------- time strings


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("30", 1800),
        ("5:30", 330),
        ("0:30:00", 1800),
        ("2-00", 172800),
        ("1-02:03", 93780),
        ("7-00:00:00", 604800),
    ],
)
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


def test_format_time():
    assert format_time(1800) == "0:30:00" and format_time(90061) == "1-01:01:01"


# --------------------------------------------------------------------------- real submission, fake sbatch


def test_submit_records_the_job(cli, tmp_path, gz_data, keep_path):
    log = tmp_path / "sbatch-args"
    fake_command(tmp_path, "sbatch", f'echo "$PWD $*" > "{log}"\necho "4242;local"\n')
    r = cli("submit", QUICKSTART, "--cluster", "local", "--set", "train.epochs=1")
    assert r.code == 0, r
    assert "submitted job 4242 to local" in r.out and "mnist-hpc logs 4242 -f" in r.out
    (run,) = (tmp_path / "runs").iterdir()
    record = json.loads((run / "job.json").read_text())
    assert record["job_id"] == "4242" and record["cluster"] == "local"
    assert record["script"] == str(run / "job.sh") and record["output"] == str(run / "slurm-%j.out")
    assert log.read_text().split() == [str(tmp_path), "--parsable", str(run / "job.sh")]
    script = (run / "job.sh").read_text()
    assert f"CONFIG={run}/config.yaml " in script and f"RUN_DIR={run} " in script
    # the job runs exactly the config validated at submit time
    from mnist_hpc.config import load_config

    assert load_config(run / "config.yaml").train.epochs == 1
    # the data archive was staged
    assert datapack.contents(tmp_path / "data" / "mnist-hpc-data.tar") == ["mnist"]


def test_sbatch_failing_shows_its_stderr(cli, tmp_path, gz_data, keep_path):
    fake_command(
        tmp_path, "sbatch", 'echo "sbatch: error: Batch job submission failed: Invalid account" >&2\nexit 1\n'
    )
    r = cli("submit", QUICKSTART, "--cluster", "local")
    assert r.code == 1
    assert "sbatch failed: sbatch: error: Batch job submission failed: Invalid account" in r.err
    assert not any((tmp_path / "runs").iterdir())  # no half-made run folder is left


def test_sbatch_missing(cli, tmp_path, gz_data, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    r = cli("submit", QUICKSTART, "--cluster", "local")
    assert r.code == 1 and "sbatch not found:" in r.err, r


def test_sbatch_without_a_job_id(tmp_path, keep_path):
    fake_command(tmp_path, "sbatch", 'echo "Submitted batch job"\n')
    with pytest.raises(UserError, match="sbatch printed no job id"):
        slurm.sbatch("job.sh")


def test_missing_data_on_a_cluster_without_internet(cli, tmp_path, monkeypatch, keep_path):
    monkeypatch.setenv("MNIST_HPC_DATA_DIR", str(tmp_path / "nothing-here"))
    fake_command(tmp_path, "sbatch", "echo 1\n")
    r = cli("submit", QUICKSTART, "--cluster", "narval", "--account", "def-x")
    assert r.code == 1 and "mnist-hpc data download mnist" in r.err
    assert "compute nodes on narval have no internet" in r.err


# --------------------------------------------------------------------------- status, logs, cancel


def test_status_lists_jobs_with_their_run_folders(cli, tmp_path, keep_path):
    run = tmp_path / "runs" / "quickstart-20260101-000000"
    run.mkdir(parents=True)
    (run / "job.json").write_text(json.dumps({"job_id": "77", "output": str(run / "slurm-%j.out")}))
    done = tmp_path / "runs" / "old-20250101-000000"
    done.mkdir()
    (done / "job.json").write_text(json.dumps({"job_id": "70", "submitted_at": "2025"}))
    (done / "summary.json").write_text(json.dumps({"status": "completed", "test_accuracy": 0.9912}))
    fake_command(tmp_path, "squeue", 'echo "77|quickstart|RUNNING|1:02|1:00:00|1|node1"\n')
    fake_command(tmp_path, "scontrol", "exit 1\n")
    r = cli("status")
    assert r.code == 0, r
    line = next(x for x in r.out.splitlines() if x.startswith("77 "))
    assert "RUNNING" in line and "runs/quickstart-20260101-000000" in line
    assert "completed, test accuracy 99.12%" in r.out


def test_logs_reads_the_recorded_output(cli, tmp_path, keep_path):
    run = tmp_path / "runs" / "q-1"
    run.mkdir(parents=True)
    (run / "job.json").write_text(json.dumps({"job_id": "78", "output": str(run / "slurm-%j.out")}))
    (run / "slurm-78.out").write_text("epoch 1/1\ntest accuracy 99.0%\n")
    r = cli("logs", "78")
    assert r.code == 0 and r.out == "epoch 1/1\ntest accuracy 99.0%\n"
    fake_command(tmp_path, "squeue", "true\n")  # the job is no longer queued: -f stops at the end
    r = cli("logs", "78", "-f")
    assert r.code == 0 and r.out.endswith("test accuracy 99.0%\n")


def test_logs_falls_back_to_the_submit_folder(cli, tmp_path, keep_path):
    fake_command(tmp_path, "scontrol", 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1\n')
    fake_command(tmp_path, "squeue", "true\n")
    (tmp_path / "slurm-79.out").write_text("hello\n")
    assert cli("logs", "79").out == "hello\n"
    r = cli("logs", "80")
    assert r.code == 1 and "job 80 has no log" in r.err


def test_logs_and_cancel_check_the_job_id(cli):
    for command in ("logs", "cancel"):
        r = cli(command, "12; rm -rf ~")
        assert r.code == 1 and "is not a Slurm job id" in r.err


def test_cancel_calls_scancel(cli, tmp_path, keep_path):
    log = tmp_path / "scancel-args"
    fake_command(tmp_path, "squeue", 'echo "81|x|RUNNING|0:01|1:00|1|n"\n')
    fake_command(tmp_path, "scancel", f'echo "$*" > "{log}"\n')
    r = cli("cancel", "81")
    assert r.code == 0 and "cancelled job 81" in r.out and log.read_text().strip() == "81"


def test_cancel_of_a_job_not_queued(cli, tmp_path, keep_path):
    fake_command(tmp_path, "squeue", "true\n")
    r = cli("cancel", "82")
    assert r.code == 1 and "not in the queue" in r.err


def test_parse_scontrol_values_with_spaces():
    info = slurm.parse_scontrol(
        'JobId=5 JobName=my "job" x UserId=root(0) JobState=COMPLETED '
        "StdOut=/tmp/a b/slurm-5.out StdIn=/dev/null"
    )
    assert info["JobName"] == 'my "job" x' and info["StdOut"] == "/tmp/a b/slurm-5.out"
    assert info["JobState"] == "COMPLETED"


# --------------------------------------------------------------------------- data pack


def test_data_pack(cli, tmp_path, gz_data):
    r = cli("data", "pack")
    assert r.code == 0, r
    archive = tmp_path / "data" / "mnist-hpc-data.tar"
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted(
            f"MNIST/raw/{p.name}" for p in datapack.dataset_files(gz_data, "mnist")
        )


def test_data_pack_of_a_missing_dataset(cli, gz_data):
    r = cli("data", "pack", "fashion-mnist")
    assert r.code == 1 and "mnist-hpc data download fashion-mnist" in r.err
    r = cli("data", "pack", "fashion")
    assert r.code == 1 and "did you mean" in r.err


def test_ensure_repacks_when_a_dataset_is_missing(tmp_path, gz_data):
    archive = tmp_path / "a.tar"
    assert datapack.ensure(archive, gz_data, ["mnist"]) == (archive, True)
    assert datapack.ensure(archive, gz_data, ["mnist"]) == (archive, False)


# --------------------------------------------------------------------------- push


def test_push_with_rsync_excludes_the_heavy_folders(tmp_path):
    (cmd,) = push_commands(ROOT, "me@narval.alliancecan.ca", False, have_rsync=True)
    assert cmd[:2] == ["rsync", "-a"] and cmd[-2:] == [
        f"{ROOT}/",
        f"me@narval.alliancecan.ca:scratch/{ROOT.name}/",
    ]
    for name in (".venv", "runs", "__pycache__", ".git"):
        assert f"--exclude={name}" in cmd
    assert "--exclude=/data/" in cmd
    (cmd,) = push_commands(ROOT, "me@fir:proj", True, have_rsync=True)
    assert "--include=/data/mnist-hpc-data.tar" in cmd and cmd[-1] == "me@fir:proj/"


def test_push_rsync_really_copies(tmp_path):
    import shutil

    if not shutil.which("rsync"):
        pytest.skip("rsync not installed")
    project = tmp_path / "proj"
    for rel in (
        "mnist_hpc/x.py",
        "configs/a.yaml",
        ".venv/bin/python",
        "runs/r/summary.json",
        "mnist_hpc/__pycache__/x.pyc",
        "data/mnist-hpc-data.tar",
        "data/MNIST/raw/x.gz",
    ):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("x")
    dest = tmp_path / "dest"
    for with_data in (False, True):
        (cmd,) = push_commands(project, "host:unused", with_data, have_rsync=True)
        cmd[-1] = f"{dest}/"  # a local destination: same rules, no ssh
        subprocess.run(cmd, check=True)
        copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
        expected = ["configs/a.yaml", "mnist_hpc/x.py"] + (["data/mnist-hpc-data.tar"] if with_data else [])
        assert copied == sorted(expected)


def test_push_falls_back_to_scp():
    cmds = push_commands(ROOT, "me@fir:my~dir", True, have_rsync=False)  # (a space is refused: issue 27)
    assert cmds[0] == ["ssh", "me@fir", "mkdir -p -- 'my~dir' 'my~dir/data'"]
    assert cmds[1][:3] == ["scp", "-r", "-p"] and cmds[1][-1] == "me@fir:my~dir/"
    copied = {Path(p).name for p in cmds[1][3:-1]}
    assert "mnist_hpc" in copied and not copied & {".venv", "runs", ".git", "data"}
    assert cmds[2][-1] == "me@fir:my~dir/data/"


@pytest.mark.parametrize("target", ["-oProxyCommand=x", ":dir", ""])
def test_push_refuses_a_bad_target(target):
    with pytest.raises(UserError, match="expected USER@HOST"):
        push_commands(ROOT, target, False, have_rsync=True)


def test_push_dry_run(cli):
    r = cli("push", "me@fir", "--project", ROOT, "--dry-run")
    assert r.code == 0 and ("$ rsync -a" in r.err or "$ ssh me@fir" in r.err)


def test_push_to_trillium_goes_to_scratch(cli):
    """[Trillium Quickstart] $HOME is read-only for jobs; $HOME/links/scratch leads to $SCRATCH."""
    for args in (["me@trillium-gpu.alliancecan.ca"], ["me@tri", "--cluster", "trillium"]):
        r = cli("push", *args, "--project", ROOT, "--dry-run")
        assert r.code == 0 and f":links/scratch/{ROOT.name}/" in r.err, r
    r = cli("push", "me@narval.alliancecan.ca", "--project", ROOT, "--dry-run")
    assert f":scratch/{ROOT.name}/" in r.err


def test_push_script_wrapper(tmp_path):
    check = subprocess.run(
        [sys.executable, "-c", "from mnist_hpc.cli.main import cli; print('push' in cli.commands)"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if check.stdout.strip() != "True":
        pytest.skip("mnist_hpc/cli.py does not register the cluster commands yet (commands.register)")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "push.sh"), "me@fir", "--project", str(ROOT), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MNIST_HPC_PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr
    assert "me@fir:scratch/" in proc.stderr


# --------------------------------------------------------------------------- user profiles


def test_user_profile_file(tmp_path, monkeypatch):
    path = tmp_path / "clusters.yaml"
    path.write_text(
        "profiles:\n  mylab:\n    extends: generic\n    gpu_type: rtx6000\n"
        "    gpu_types: [rtx6000]\n    gpus_per_node: 2\n    partition: gpu\n"
    )
    monkeypatch.setenv("MNIST_HPC_CLUSTERS", str(path))
    profile, warning = get_profile("mylab")
    assert warning is None and profile.gpu_directive(2) == "--gres=gpu:rtx6000:2"
    assert profile.partition == "gpu" and profile.max_time == "7-00:00:00"


def test_user_profiles_from_the_config_home(tmp_path):
    folder = tmp_path / "xdg" / "mnist-hpc"
    folder.mkdir(parents=True)
    (folder / "clusters.yaml").write_text("profiles:\n  fir:\n    extends: fir\n    partition: debug\n")
    with pytest.raises(ConfigError, match="loop"):
        load_profiles()
    (folder / "clusters.yaml").write_text("profiles:\n  myfir:\n    extends: fir\n    partition: debug\n")
    assert get_profile("myfir")[0].partition == "debug"


@pytest.mark.parametrize(
    "body,message",
    [
        ("profiles:\n  x:\n    gpus_per_nod: 2\n", "unknown key (did you mean 'gpus_per_node'?)"),
        ("profiles:\n  x:\n    gpus_per_node: two\n", "expected an integer"),
        ("profiles:\n  x:\n    max_time: forever\n", "expected a Slurm time"),
        ("profiles:\n  x:\n    mem_per_gpu: lots\n", "expected a memory size"),
        ("profiles:\n  x:\n    gpu_request: gpu\n", "expected one of gpus-per-node, gres"),
        ("profiles:\n  x:\n    extends: nowhere\n", "unknown profile 'nowhere'"),
        ("profile:\n  x: {}\n", "unknown key (did you mean 'profiles'?)"),
    ],
)
def test_bad_user_profiles_are_refused(tmp_path, monkeypatch, body, message):
    path = tmp_path / "clusters.yaml"
    path.write_text(body)
    monkeypatch.setenv("MNIST_HPC_CLUSTERS", str(path))
    with pytest.raises(ConfigError) as info:
        load_profiles()
    assert message in str(info.value) and str(path) in str(info.value)


def test_clusters_file_named_but_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_HPC_CLUSTERS", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="no such file"):
        load_profiles()


def test_alliance_profiles_follow_the_documentation():
    """Each fact is cited beside it in clusters.yaml."""
    profiles, _ = load_profiles()
    alliance = ("fir", "nibi", "rorqual", "trillium", "narval", "tamia", "alliance")
    for name in alliance:
        p = profiles[name]
        assert p.account_required and p.gpu_request == "gpus-per-node" and p.gpu_type in ("h100", "a100")
        assert p.modules[0] == "StdEnv/2023" and "python/3.13" in p.modules and not p.gpu_modules
    # internet on compute nodes: Fir and Nibi yes [Fir; Nibi], the others no
    assert [n for n in alliance if profiles[n].internet] == ["fir", "nibi"]
    assert {n: profiles[n].gpus_per_node for n in alliance} == {
        "fir": 4,
        "nibi": 8,
        "rorqual": 4,
        "trillium": 4,
        "narval": 4,
        "tamia": 4,
        "alliance": 4,
    }
    assert [profiles[n].cpus_per_gpu for n in ("fir", "narval", "nibi", "rorqual", "trillium")] == [
        12,
        12,
        14,
        16,
        24,
    ]
    assert profiles["narval"].gpu_type == "a100" and profiles["fir"].gpu_type == "h100"
    # per-user job limits, array tasks counted [Job scheduling policies; Running jobs; Trillium Quickstart]
    assert [profiles[n].max_jobs for n in ("fir", "narval", "nibi", "rorqual")] == [1000] * 4
    assert (profiles["trillium"].max_jobs, profiles["trillium"].max_running) == (500, 150)
    assert not profiles["trillium"].mig and profiles["trillium"].gpu_counts == (1, 4)
    assert profiles["trillium"].home_read_only and profiles["trillium"].push_dir == "links/scratch"
    assert profiles["trillium"].max_time == "1-00:00:00" and profiles["fir"].max_time == "7-00:00:00"
    assert profiles["local"].gpus_per_node == 0 and not profiles["local"].account_required


def test_every_alliance_fact_names_its_documentation_page():
    """Issue 17: each fact in the profiles has the wiki page it comes from beside it, as [Page]."""
    import re

    facts = (
        "gpu_type",
        "gpus_per_node",
        "gpu_counts",
        "mig",
        "cpus_per_gpu",
        "cpu_node_cores",
        "internet",
        "max_time",
        "max_jobs",
        "max_running",
        "home_read_only",
        "push_dir",
        "account_prefixes",
    )
    text = (ROOT / "mnist_hpc" / "cluster" / "clusters.yaml").read_text()
    profile, bare = None, []
    for line in text.splitlines():
        if re.match(r"^  [\w.-]+:\s*$", line):
            profile = line.strip(" :")
        key = re.match(r"^    (\w+):", line)
        if (
            key
            and key.group(1) in facts
            and profile in ("fir", "nibi", "rorqual", "trillium", "narval", "tamia")
            and not re.search(r"#.*\[[^\]]+\]", line)
        ):
            bare.append(f"{profile}: {line.strip()}")
    assert not bare, bare


def test_sweep_above_the_per_user_job_limit_is_refused(cli, tmp_path, monkeypatch):
    """Every array task counts against the per-user limit [Job scheduling policies § Number of jobs]."""
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text("profiles:\n  small:\n    extends: local\n    max_jobs: 4\n    max_running: 2\n")
    monkeypatch.setenv("MNIST_HPC_CLUSTERS", str(clusters))
    r = cli("sweep", "submit", SWEEP, "--cluster", "small", "--dry-run")
    assert r.code == 1 and "sweep of 5 runs: cluster small accepts at most 4 jobs per user" in r.err, r
    clusters.write_text("profiles:\n  small:\n    extends: local\n    max_jobs: 5\n    max_running: 2\n")
    r = cli("sweep", "submit", SWEEP, "--cluster", "small", "--parallel", "4", "--dry-run")
    assert r.code == 0, r
    assert "--parallel 4 lowered to 2: cluster small runs at most 2 jobs per user at once" in r.err
    assert "#SBATCH --array=0-4%2\n" in r.out


def test_trillium_sweep_parallel_is_capped_at_150(cli):
    r = cli(
        "sweep",
        "submit",
        SWEEP,
        "--cluster",
        "trillium",
        "--account",
        "def-x",
        "--parallel",
        "200",
        "--dry-run",
    )
    assert r.code == 0 and "--parallel 200 lowered to 150" in r.err and "#SBATCH --array=0-4%5\n" in r.out


def test_sweep_counts_the_jobs_already_queued(cli, tmp_path, gz_data, keep_path, monkeypatch):
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text("profiles:\n  small:\n    extends: local\n    max_jobs: 6\n")
    monkeypatch.setenv("MNIST_HPC_CLUSTERS", str(clusters))
    fake_command(tmp_path, "squeue", 'printf "10\\n11_1\\n"\n')  # two jobs queued already
    fake_command(tmp_path, "sbatch", "echo 600\n")
    r = cli("sweep", "submit", SWEEP, "--cluster", "small")
    assert r.code == 1 and "and 2 of yours are queued or running already" in r.err, r


def test_sweep_job_carries_the_configs_requeue_signal(cli, tmp_path):
    """The job's --signal comes from the sweep's base config, as for `submit`."""
    sweep = tmp_path / "usr2.yaml"
    sweep.write_text(
        f"base: {QUICKSTART}\nset: {{runtime.requeue_signal: USR2}}\ngrid: {{optim.lr: [0.1, 0.01]}}\n"
    )
    r = cli("sweep", "submit", sweep, "--cluster", "local", "--dry-run", "--time", "0:10:00")
    assert r.code == 0, r
    assert "#SBATCH --signal=B:USR2@90\n" in r.out and "REQUEUE_SIGNAL=USR2 " in r.out
    sweep.write_text(f"base: {QUICKSTART}\ngrid: {{runtime.requeue_signal: [USR1, USR2]}}\n")
    r = cli("sweep", "submit", sweep, "--cluster", "local", "--dry-run")
    assert r.code == 1 and "a job array has one --signal" in r.err


# --------------------------------------------------------------------------- no torch


def test_cluster_commands_do_not_import_torch(tmp_path):
    code = (
        "import sys; from mnist_hpc.cli.main import cli, main; from mnist_hpc.cli.cluster import register; "
        "register(cli); sys.argv=['mnist-hpc','submit',sys.argv[1],'--cluster','local','--dry-run'];"
        "\ntry: main()\nexcept SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(QUICKSTART)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH" in proc.stdout


# --------------------------------------------------------------------------- Trillium's rules, the wheelhouse


def test_trillium_refuses_project_and_data_under_read_only_file_systems(cli, tmp_path, monkeypatch):
    """[Trillium Quickstart § Storage; Data management at Trillium] $HOME and $PROJECT are
    read-only on compute nodes: a run folder or data folder there is refused, with $SCRATCH."""
    project = tmp_path / "project" / "def-x"
    work = project / "mnist-hpc"
    work.mkdir(parents=True)
    monkeypatch.setenv("PROJECT", str(project))
    monkeypatch.chdir(work)
    r = cli("submit", QUICKSTART, "--cluster", "trillium", "--dry-run", "--account", "def-x")
    assert (
        r.code == 1 and "$PROJECT is read-only on compute nodes" in r.err and "submit from $SCRATCH" in r.err
    )
    assert len(r.err.strip().splitlines()) == 1
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    r = cli(
        "submit",
        QUICKSTART,
        "--cluster",
        "trillium",
        "--dry-run",
        "--account",
        "def-x",
        "--data-dir",
        str(project / "data"),
    )
    assert r.code == 1 and "data" in r.err and "$PROJECT is read-only" in r.err
    r = cli("submit", QUICKSTART, "--cluster", "trillium", "--dry-run", "--account", "def-x")
    assert r.code == 0, r
    r = cli(
        "submit",
        QUICKSTART,
        "--cluster",
        "narval",
        "--dry-run",
        "--account",
        "def-x",
        "--data-dir",
        str(project / "data"),
    )
    assert r.code == 0, r  # Narval's project space is writable in jobs


def test_trillium_submit_refuses_without_the_home_virtualenv(cli, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    r = cli("submit", QUICKSTART, "--cluster", "trillium", "--account", "def-x")
    assert r.code == 1 and "virtualenv" in r.err and "does not exist" in r.err
    assert "mnist-hpc setup --cluster trillium" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (scratch / "runs").exists()  # nothing made, nothing queued


def test_setup_prints_the_login_node_commands(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    r = cli("setup", "--cluster", "trillium", "--dry-run")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines.index("module purge") < lines.index("module load StdEnv/2023 python/3.13")
    venv = tmp_path / ".virtualenvs" / "mnist-hpc"
    assert f"virtualenv --no-download {venv}" in r.out and "pip install --no-index" in r.out
    assert "mnist-hpc-env.txt" in r.out
    r = subprocess.run(["bash", "-n"], input=r.out, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr
    r = cli("setup", "--cluster", "narval")
    assert r.code == 0 and "nothing to set up" in r.out
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no `module`, no bash on PATH either way
    r = cli("setup", "--cluster", "trillium")
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1


def _wheel(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"")


def test_alliance_wheelhouse_check_is_real_with_a_fake_wheelhouse(cli, tmp_path, monkeypatch):
    """[Python § Available wheels] the profiles name /cvmfs/.../wheelhouse; submit refuses a job
    whose packages have no wheel there for the profile's python (python/3.13: cp313 or py3)."""
    from mnist_hpc.cluster.nodeenv import check_wheelhouse, wheel_fits

    fir = get_profile("fir")[0]
    assert fir.wheelhouse == ("/cvmfs/soft.computecanada.ca/custom/python/wheelhouse",)
    house = tmp_path / "wheelhouse"
    # laid out as on CVMFS: pure wheels in generic/, compiled ones per environment and architecture
    for name in (
        "click-8.1.7+computecanada-py3-none-any.whl",
        "tqdm-4.66.4+computecanada-py3-none-any.whl",
        "PyYAML-6.0.2+computecanada-cp313-cp313-linux_x86_64.whl",
    ):
        _wheel(house / "generic", name)
    for name in (
        "torch-2.13.0+computecanada-cp313-cp313-linux_x86_64.whl",
        "numpy-2.2.2+computecanada-cp313-cp313-linux_x86_64.whl",
        "matplotlib-3.10.0+computecanada-cp313-cp313-linux_x86_64.whl",
        "torchvision-0.22.1+computecanada-cp311-cp311-linux_x86_64.whl",
    ):  # not for 3.13
        _wheel(house / "gentoo2023" / "x86-64-v3", name)
    profile_file = tmp_path / "clusters.yaml"
    profile_file.write_text(f"profiles:\n  fir-here: {{extends: fir, wheelhouse: [{house}]}}\n")
    monkeypatch.setenv("MNIST_HPC_CLUSTERS", str(profile_file))
    r = cli("submit", QUICKSTART, "--cluster", "fir-here", "--dry-run", "--account", "def-x")
    assert r.code == 1 and "the job needs torchvision" in r.err and "for Python 3.13" in r.err, r
    _wheel(
        house / "gentoo2023" / "x86-64-v3", "torchvision-0.22.1+computecanada-cp313-cp313-linux_x86_64.whl"
    )
    r = cli("submit", QUICKSTART, "--cluster", "fir-here", "--dry-run", "--account", "def-x")
    assert r.code == 0, r
    assert wheel_fits("x-1-cp39-abi3-linux_x86_64.whl", (3, 13)) and not wheel_fits(
        "x-1-cp312-cp312-l.whl", (3, 13)
    )
    check_wheelhouse(["anything"], fir, {})  # no /cvmfs here: nothing to check


def _dummy_wheel(folder: Path, name: str) -> None:
    """A minimal pure wheel named ``name`` (an empty package), for pip --no-index to install."""
    import zipfile

    dist = f"{name}-0.0.1.dist-info"
    files = {
        f"{name}/__init__.py": "",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-0.0.1-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


def test_setup_builds_the_home_virtualenv_that_submit_then_accepts(tmp_path, monkeypatch):
    """`mnist-hpc setup --cluster trillium` for real, with a stand-in `module` and a wheelhouse of
    empty wheels: the virtualenv appears in $HOME with its stamp; submit's check accepts it, and
    refuses it once the job needs another package."""
    from mnist_hpc.cluster import jobs, nodeenv
    from mnist_hpc.config.extras import BASE_PACKAGES

    house = tmp_path / "wheelhouse"
    house.mkdir()
    for name in BASE_PACKAGES:
        _dummy_wheel(house, name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))  # as the clusters' pip configuration does
    monkeypatch.setenv("BASH_FUNC_module%%", '() {  echo "module $*" >> "$HOME/modules.log"; }')
    out = jobs.setup("trillium", home=home, warn=lambda line: None)
    venv = home / ".virtualenvs" / "mnist-hpc"
    assert out.done and out.venv == venv and (venv / "bin" / "python").exists()
    assert (home / "modules.log").read_text() == "module purge\nmodule load StdEnv/2023 python/3.13\n"
    profile = get_profile("trillium")[0]
    nodeenv.check_home_venv(profile, BASE_PACKAGES, home=home)
    with pytest.raises(UserError, match="is stale"):
        nodeenv.check_home_venv(profile, (*BASE_PACKAGES, "tensorboard"), home=home)
    (venv / "bin" / "python").unlink()
    with pytest.raises(UserError, match="does not exist"):
        nodeenv.check_home_venv(profile, BASE_PACKAGES, home=home)
