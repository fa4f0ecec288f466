"""DDP on this machine's CPU (gloo): 2 ranks match 1 process, one run folder, failures end the job
in bounded time, and a bad launch environment is a clear error."""

import json
import socket
import subprocess
import time

import pytest
import torch

from mnist_hpc.cluster.env import srun_launch_env
from mnist_hpc.errors import UserError
from mnist_hpc.training import checkpoint as ckpt
from mnist_hpc.training.distributed import detect
from tests.ddp_support import _free_port, _rank_env, clean_env, train_argv


@pytest.mark.slow  # a real multi-process or multi-run training: ~20-50 s on 2 cores
def test_two_ranks_match_one_process(tiny_config, synth_root, tmp_path):
    sets = [
        "--set",
        "optim={name: sgd, lr: 0.05, momentum: 0.9}",
        "--set",
        "data.batch_size=64",
        "--set",
        "train.epochs=2",
    ]
    runs = {}
    for n in (1, 2):
        out_dir = tmp_path / f"out{n}"
        r = subprocess.run(
            train_argv(
                tiny_config, synth_root, "--nproc", str(n), *sets, "--set", f"experiment.output_dir={out_dir}"
            ),
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        folders = list(out_dir.iterdir())
        assert len(folders) == 1, folders  # exactly one run folder, whatever the number of ranks
        s = json.loads((folders[0] / "summary.json").read_text())
        last = ckpt.load(ckpt.list_checkpoints(folders[0] / "checkpoints")[0])
        runs[n] = (s, last)
    (s1, c1), (s2, c2) = runs[1], runs[2]
    assert s2["world_size"] == 2 and s2["per_rank_batch_size"] == 32 and s2["global_batch_size"] == 64
    assert c1["global_step"] == c2["global_step"]  # same number of optimizer steps
    assert abs(s1["test_accuracy"] - s2["test_accuracy"]) <= 0.003
    # the loss is a global mean: the two runs agree closely, not just roughly
    for a, b in zip(c1["history"], c2["history"], strict=False):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3, abs=1e-5)
    w1, w2 = c1["model"], c2["model"]
    assert all(torch.allclose(w1[k], w2[k], atol=1e-4) for k in w1)


def test_detect_launchers():
    assert detect({}).launcher == "single"
    d = detect({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1234"})
    assert (d.launcher, d.rank, d.world_size, d.master_port) == ("torchrun", 1, 2, 1234)
    # training reads no SLURM_* itself: an srun step reaches it as torchrun-style variables that
    # the cluster layer derives (TrainContext.launch_env), merged over the environment
    srun = {
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "nodeA",
        "SLURM_JOB_ID": "12345",
        "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    }
    assert detect(srun).launcher == "single"
    d = detect({**srun, **srun_launch_env(srun)}, launcher="slurm")
    assert (d.launcher, d.rank, d.local_rank, d.world_size, d.local_world_size) == ("slurm", 3, 1, 4, 2)
    assert d.master_addr == "nodeA" and d.master_port == 20000 + 12345 % 20000
    # a batch script with --ntasks=2 that runs python without srun: one process, not DDP
    batch = {"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}
    assert srun_launch_env(batch) == {} and detect({**batch, **srun_launch_env(batch)}).launcher == "single"


@pytest.mark.parametrize(
    "env,message",
    [
        ({"WORLD_SIZE": "2"}, "$WORLD_SIZE set but $RANK, $LOCAL_RANK, $MASTER_ADDR, $MASTER_PORT missing"),
        (
            {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "x", "MASTER_ADDR": "a", "MASTER_PORT": "1"},
            "must be an integer",
        ),
        (
            {"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"},
            "is not in [0, WORLD_SIZE=2)",
        ),
    ],
)
def test_inconsistent_environment_is_refused(env, message):
    with pytest.raises(UserError, match=None) as e:
        detect(env)
    assert message in str(e.value)


def test_port_in_use_is_a_clear_error(tiny_config, synth_root):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            train_argv(tiny_config, synth_root, "--set", "runtime.dist_timeout=10"),
            capture_output=True,
            text=True,
            env=_rank_env(0, port),
            timeout=120,
        )
    assert r.returncode == 1, r.stderr
    assert f"port {port} is in use" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_master_times_out_clearly(tiny_config, synth_root):
    t0 = time.time()
    r = subprocess.run(
        train_argv(tiny_config, synth_root, "--set", "runtime.dist_timeout=5"),
        capture_output=True,
        text=True,
        env=_rank_env(1, _free_port()),
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    assert "distributed launch failed (rank 1 of 2" in r.stderr and "Traceback" not in r.stderr
    assert time.time() - t0 < 60


def test_a_failing_rank_ends_the_job_in_bounded_time(tiny_config, synth_root, tmp_path):
    """Rank 1 cannot read its data; rank 0 must not wait forever."""
    port = _free_port()
    args = ["--set", "runtime.dist_timeout=15", "--set", f"experiment.output_dir={tmp_path}/runs"]
    t0 = time.time()
    p0 = subprocess.Popen(
        train_argv(tiny_config, synth_root, *args),
        env=_rank_env(0, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    bad = tmp_path / "nodata"
    p1 = subprocess.Popen(
        train_argv(tiny_config, bad, *args),
        env=dict(_rank_env(1, port), MNIST_HPC_OFFLINE="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out1 = p1.communicate(timeout=120)[0]
    out0 = p0.communicate(timeout=120)[0]
    assert p1.returncode == 1 and "not found" in out1, out1
    assert p0.returncode != 0, out0
    assert time.time() - t0 < 100


def test_bf16_on_cpu_trains(cli, tiny_config, synth_root, tmp_path):
    r = cli(
        "train",
        tiny_config,
        "--data-dir",
        synth_root,
        "--run-dir",
        tmp_path / "bf16",
        "--set",
        "train.amp=bf16",
    )
    assert r.code == 0, r
    s = json.loads((tmp_path / "bf16" / "summary.json").read_text())
    assert s["precision"] == "bf16" and s["test_accuracy"] > 0.9


def test_fp16_needs_cuda(cli, tiny_config, synth_root):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: fp16 is allowed")
    r = cli("train", tiny_config, "--data-dir", synth_root, "--set", "train.amp=fp16")
    assert r.code == 2 and "needs CUDA" in r.err, r


def test_grad_accum_matches_full_batch(cli, tiny_config, synth_root, tmp_path):
    sets = [
        "--set",
        "optim={name: sgd, lr: 0.05}",
        "--set",
        "train.epochs=1",
        "--set",
        "runtime.deterministic=true",
    ]
    for acc in (1, 4):
        assert (
            cli(
                "train",
                tiny_config,
                "--data-dir",
                synth_root,
                "--run-dir",
                tmp_path / f"a{acc}",
                *sets,
                "--set",
                f"train.grad_accum={acc}",
            ).code
            == 0
        )
    w = [ckpt.load(ckpt.list_checkpoints(tmp_path / f"a{a}" / "checkpoints")[0])["model"] for a in (1, 4)]
    assert all(torch.allclose(w[0][k], w[1][k], atol=1e-5) for k in w[0])
