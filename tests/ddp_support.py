"""Launching `mnist-hpc train` as DDP ranks on this machine's CPU (gloo) for the distributed tests:
its command line, an environment without Slurm's or a launcher's variables, a free port, one rank's
environment."""

import os
import socket
import sys


def train_argv(tiny_config, synth_root, *extra):
    return [
        sys.executable,
        "-m",
        "mnist_hpc",
        "train",
        str(tiny_config),
        "--data-dir",
        str(synth_root),
        *extra,
    ]


def clean_env(**extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SLURM_")
        and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank, port, addr="127.0.0.1"):
    return clean_env(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR=addr, MASTER_PORT=str(port)
    )
