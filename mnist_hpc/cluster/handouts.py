"""The ready-to-edit job scripts in ``slurm/``, rendered for any Alliance cluster.

``python -m mnist_hpc.cluster.handouts --write-slurm-dir slurm/`` writes them; a test keeps the
files in the repository identical to what this module renders.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

from mnist_hpc.cluster.profiles import Profile, get_profile
from mnist_hpc.cluster.render import render
from mnist_hpc.cluster.spec import JobSpec

HANDOUT_ACCOUNT = "def-someuser"
HANDOUT_MAIL = "someone@example.com"


class _Common(TypedDict):
    """The ``JobSpec`` fields every handout shares."""

    profile: Profile
    account: str
    mail_user: str
    config: str


def handout_specs() -> dict[str, JobSpec]:
    """The scripts of slurm/ by file name: the `alliance` profile, placeholders to edit."""
    alliance, _ = get_profile("alliance")
    common: _Common = {
        "profile": alliance,
        "account": HANDOUT_ACCOUNT,
        "mail_user": HANDOUT_MAIL,
        "config": "configs/quickstart.yaml",
    }
    return {
        "submit_job.sh": JobSpec(
            "submit_job",
            job_name="mnist",
            time="0:30:00",
            gpus_per_node=1,
            script_name="slurm/submit_job.sh",
            **common,
        ),
        # a whole node of 4 GPUs: what every Alliance cluster accepts (Trillium: 1 or whole nodes)
        "multi_gpu.sh": JobSpec(
            "multi_gpu",
            job_name="mnist-ddp",
            time="0:30:00",
            gpus_per_node=4,
            script_name="slurm/multi_gpu.sh",
            **common,
        ),
        "multi_node.sh": JobSpec(
            "multi_node",
            job_name="mnist-multinode",
            time="0:30:00",
            nodes=2,
            gpus_per_node=4,
            script_name="slurm/multi_node.sh",
            **common,
        ),
        "sweep_array.sh": JobSpec(
            "sweep_array",
            job_name="mnist-sweep",
            time="0:30:00",
            gpus_per_node=1,
            sweep="configs/sweeps/learning_rate.yaml",
            array="0-4%2",
            output="slurm-%A_%a.out",
            script_name="slurm/sweep_array.sh",
            **common,
        ),
        "cpu_only.sh": JobSpec(
            "cpu_only", job_name="mnist-cpu", time="1:00:00", script_name="slurm/cpu_only.sh", **common
        ),
    }


def write_slurm_dir(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in handout_specs().items():
        path = folder / name
        path.write_text(render(spec))
        path.chmod(0o755)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_hpc.cluster.handouts",
        description="Write the ready-to-edit job scripts of slurm/.",
    )
    parser.add_argument(
        "--write-slurm-dir",
        metavar="DIR",
        required=True,
        help="folder to write submit_job.sh, multi_gpu.sh, ... into",
    )
    args = parser.parse_args(argv)
    for path in write_slurm_dir(args.write_slurm_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
