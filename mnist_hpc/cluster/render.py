"""Job scripts from templates: a pure function of a ``JobSpec``, pinned by golden files.

Templates are shell files in ``mnist_hpc/templates/`` with ``{{name}}`` placeholders and
``{{> fragment.sh}}`` includes. Every value put into the shell part is quoted with
``shlex.quote``; values in ``#SBATCH`` lines (read by sbatch, not by the shell) are quoted the
way sbatch's own parser expects: double quotes, with ``\\`` and ``"`` escaped.

``python -m mnist_hpc.cluster.render --write-slurm-dir slurm/`` writes the ready-to-edit
``slurm/*.sh`` scripts; a test keeps them identical to what this module renders.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

from mnist_hpc.errors import UserError
from mnist_hpc.cluster.profiles import Profile, check_mem, format_time, get_profile, parse_time

TEMPLATES = ("submit_job", "multi_gpu", "multi_node", "sweep_array", "cpu_only")
SRUN_TEMPLATES = ("multi_gpu", "multi_node")  # one task per GPU; the signal goes to the tasks
SIGNALS = ("USR1", "USR2")
DEFAULT_ARCHIVE = "data/mnist-hpc-data.tar"


@dataclass(frozen=True)
class JobSpec:
    template: str  # one of TEMPLATES
    profile: Profile
    job_name: str
    config: str = "configs/quickstart.yaml"  # the experiment (train templates)
    sweep: str = ""  # the sweep file (sweep_array)
    run_dir: str = ""  # "" = let `train` choose <output_dir>/<name>-job<JOBID>/
    time: str = "1:00:00"
    nodes: int = 1
    gpus_per_node: int = 0
    gpu_type: Optional[str] = None  # None = the profile's default specifier
    tasks_per_node: Optional[int] = None  # None = one per GPU (at least one)
    cpus_per_task: Optional[int] = None  # None = the profile's share per GPU / for CPU jobs
    mem: Optional[str] = None  # per node; None = the profile's default
    account: Optional[str] = None
    mail_user: Optional[str] = None
    mail_type: str = "END,FAIL"
    output: str = "slurm-%j.out"
    array: Optional[str] = None  # e.g. "0-9%4" (sweep_array)
    index_offset: int = 0  # added to $SLURM_ARRAY_TASK_ID (sweep_array)
    requeue_signal: str = "USR1"
    signal_seconds: int = 90  # how long before the time limit the signal comes
    workdir: Optional[str] = None  # None = "$SLURM_SUBMIT_DIR" (the folder sbatch ran in)
    data_archive: str = DEFAULT_ARCHIVE  # "" = no staging
    data_dir: str = ""
    script_name: str = "job.sh"  # how the header tells to submit it
    extra_directives: tuple = field(default=())  # more "--option=value" strings

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(self.gpus_per_node, 1)

    @property
    def cpus(self) -> int:
        if self.cpus_per_task:
            return self.cpus_per_task
        if self.gpus_per_node:
            return self.profile.cpus_per_gpu
        return self.profile.cpus_cpu_job

    @property
    def memory(self) -> Optional[str]:
        if self.mem:
            return self.mem
        if self.gpus_per_node:
            mem = self.profile.mem_per_gpu
            if mem is None:
                return None
            number, unit = re.match(r"^(\d+)([KMGT]?)$", mem).groups()
            return f"{int(number) * self.gpus_per_node}{unit}"
        return self.profile.mem_cpu_job


# --------------------------------------------------------------------------- checks


def check_spec(spec: JobSpec) -> None:
    """Refuse a job the cluster would refuse (or that makes no sense), with a clear message."""
    p = spec.profile
    if spec.template not in TEMPLATES:
        raise UserError(f"unknown job template {spec.template!r}; expected one of {', '.join(TEMPLATES)}")
    for what, value in [("job name", spec.job_name), ("account", spec.account),
                        ("mail", spec.mail_user), ("config", spec.config), ("run folder", spec.run_dir),
                        ("output", spec.output), ("working folder", spec.workdir),
                        ("data archive", spec.data_archive), ("data folder", spec.data_dir),
                        ("script", spec.script_name), ("sweep file", spec.sweep)]:
        if value and any(ord(c) < 32 for c in value):
            raise UserError(f"{what} {value!r}: control characters (such as newlines) are not allowed")
    if not spec.job_name.strip():
        raise UserError("the job name is empty")
    if p.account_required and not spec.account:
        raise UserError(f"cluster {p.name} needs a Slurm account: pass --account def-yourpi (or set "
                        "$SBATCH_ACCOUNT); `sshare -U` on the cluster lists yours")
    if spec.nodes < 1:
        raise UserError(f"--nodes {spec.nodes}: expected at least 1")
    if spec.gpus_per_node < 0:
        raise UserError(f"--gpus {spec.gpus_per_node}: expected 0 or more")
    if spec.gpus_per_node > p.gpus_per_node:
        have = f"{p.gpus_per_node} GPUs per node" if p.gpus_per_node else "no GPUs"
        more = " (use --nodes for more)" if p.gpus_per_node else ""
        raise UserError(f"--gpus {spec.gpus_per_node}: cluster {p.name} has {have}{more}")
    if spec.gpu_type and spec.gpu_type not in p.gpu_types:
        from mnist_hpc.config import did_you_mean

        known = ", ".join(p.gpu_types) or "none (untyped requests only)"
        raise UserError(f"GPU type {spec.gpu_type!r}{did_you_mean(spec.gpu_type, p.gpu_types)} is not "
                        f"known on cluster {p.name}; known types: {known}")
    if spec.tasks < 1 or spec.cpus < 1:
        raise UserError("tasks and CPUs per task must be at least 1")
    if spec.gpus_per_node and spec.tasks_per_node and spec.tasks_per_node != spec.gpus_per_node:
        raise UserError(f"{spec.tasks_per_node} tasks for {spec.gpus_per_node} GPUs per node: "
                        "use one task per GPU")
    seconds = parse_time(spec.time)
    if seconds > p.max_seconds:
        raise UserError(f"--time {spec.time}: above the {p.max_time} maximum of cluster {p.name}")
    if spec.memory is not None:
        check_mem(spec.memory)
    if spec.requeue_signal not in SIGNALS:
        raise UserError(f"requeue signal {spec.requeue_signal!r}: expected one of {', '.join(SIGNALS)}")
    if spec.template == "sweep_array" and not (spec.array and spec.sweep):
        raise UserError("a sweep array job needs a sweep file and an --array range")
    if spec.template != "sweep_array" and not spec.config:
        raise UserError("a training job needs a config file")
    if spec.template == "multi_node" and spec.nodes < 2:
        raise UserError("the multi_node template is for 2 or more nodes")
    if spec.template != "multi_node" and spec.nodes > 1:
        raise UserError(f"the {spec.template} template runs on one node; use multi_node for --nodes {spec.nodes}")


# --------------------------------------------------------------------------- quoting


_PLAIN = re.compile(r"^[A-Za-z0-9_.,:%@/=+-]+$")


def directive_quote(value: str) -> str:
    """Quote a value for an ``#SBATCH`` line (sbatch splits on spaces, honours "..." and \\)."""
    value = str(value)
    if _PLAIN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sh(value) -> str:
    return shlex.quote(str(value)) if value != "" else "''"


# --------------------------------------------------------------------------- rendering


def directives(spec: JobSpec) -> list[str]:
    p = spec.profile
    srun = spec.template in SRUN_TEMPLATES
    opts = [("--job-name", spec.job_name)]
    if spec.account:
        opts.append(("--account", spec.account))
    if spec.mail_user:
        opts += [("--mail-user", spec.mail_user), ("--mail-type", spec.mail_type)]
    opts += [("--time", format_time(parse_time(spec.time))), ("--nodes", spec.nodes),
             ("--ntasks-per-node", spec.tasks), ("--cpus-per-task", spec.cpus)]
    if spec.memory:
        opts.append(("--mem", spec.memory))
    gpu = p.gpu_directive(spec.gpus_per_node, spec.gpu_type)
    if gpu:
        opts.append(tuple(gpu.split("=", 1)))
    if p.partition:
        opts.append(("--partition", p.partition))
    if spec.array:
        opts.append(("--array", spec.array))
    opts.append(("--output", spec.output))
    # the warning must come after the start: a short job gets it halfway through its time
    lead = min(spec.signal_seconds, max(10, parse_time(spec.time) // 2))
    signal = f"{spec.requeue_signal}@{lead}" if srun else f"B:{spec.requeue_signal}@{lead}"
    opts += [("--signal", signal), ("--requeue", None), ("--open-mode", "append")]
    lines = [f"#SBATCH {k}" if v is None else f"#SBATCH {k}={directive_quote(v)}" for k, v in opts]
    lines += [f"#SBATCH {d}" for d in spec.extra_directives]
    return lines


def _template_text(name: str) -> str:
    return resources.files("mnist_hpc.cluster").joinpath("templates", name).read_text()


def _fill(text: str, values: dict) -> str:
    def include(m):
        return _fill(_template_text(m.group(1)).rstrip("\n"), values)

    text = re.sub(r"\{\{> *([\w.]+) *\}\}", include, text)

    def value(m):
        if m.group(1) not in values:
            raise KeyError(f"template placeholder {{{{{m.group(1)}}}}} has no value")
        return values[m.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", value, text)


def render(spec: JobSpec) -> str:
    """The job script for ``spec`` (validated first; raises UserError)."""
    check_spec(spec)
    p = spec.profile
    modules = list(p.modules) + (list(p.gpu_modules) if spec.gpus_per_node else [])
    if spec.template == "multi_node":
        setup = ("# once on every node (each has its own $SLURM_TMPDIR); $1 is for the inner bash\n"
                 "  # shellcheck disable=SC2016\n"
                 '  srun --nodes="$SLURM_NNODES" --ntasks="$SLURM_NNODES" --ntasks-per-node=1 '
                 'bash -c \'setup_node "$1"\' _ "$DATA_ARCHIVE"')
    else:
        setup = 'setup_node "$DATA_ARCHIVE"'
    values = {
        "directives": "\n".join(directives(spec)),
        "generated": f"Made by mnist-hpc for the cluster profile {p.name} ({p.description}).",
        "script_name": _sh(spec.script_name),
        "log": _sh(spec.output.replace("%A", "JOBID").replace("%a", "TASK").replace("%j", "JOBID")),
        "config": _sh(spec.config),
        "sweep": _sh(spec.sweep),
        "index_offset": str(int(spec.index_offset)),
        "run_dir": _sh(spec.run_dir),
        "data_archive": _sh(spec.data_archive),
        "data_dir": _sh(spec.data_dir),
        "modules": " ".join(_sh(m) for m in modules),
        "signal": spec.requeue_signal,
        "workdir": _sh(spec.workdir) if spec.workdir else '"$SLURM_SUBMIT_DIR"',
        "setup_command": setup,
    }
    return _fill(_template_text(f"{spec.template}.sh"), values)


# --------------------------------------------------------------------------- slurm/*.sh

HANDOUT_ACCOUNT = "def-someuser"
HANDOUT_MAIL = "someone@example.com"


def handout_specs() -> dict[str, JobSpec]:
    """The ready-to-edit scripts in slurm/: any Alliance cluster, placeholders to edit."""
    alliance, _ = get_profile("alliance")
    common = dict(profile=alliance, account=HANDOUT_ACCOUNT, mail_user=HANDOUT_MAIL,
                  config="configs/quickstart.yaml")
    return {
        "submit_job.sh": JobSpec("submit_job", job_name="mnist", time="0:30:00", gpus_per_node=1,
                                 script_name="slurm/submit_job.sh", **common),
        "multi_gpu.sh": JobSpec("multi_gpu", job_name="mnist-ddp", time="0:30:00", gpus_per_node=2,
                                script_name="slurm/multi_gpu.sh", **common),
        "multi_node.sh": JobSpec("multi_node", job_name="mnist-multinode", time="0:30:00", nodes=2,
                                 gpus_per_node=4, script_name="slurm/multi_node.sh", **common),
        "sweep_array.sh": JobSpec("sweep_array", job_name="mnist-sweep", time="0:30:00", gpus_per_node=1,
                                  sweep="configs/sweeps/learning_rate.yaml", array="0-4%2", output="slurm-%A_%a.out",
                                  script_name="slurm/sweep_array.sh", **common),
        "cpu_only.sh": JobSpec("cpu_only", job_name="mnist-cpu", time="1:00:00",
                               script_name="slurm/cpu_only.sh", **common),
    }


def write_slurm_dir(folder) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in handout_specs().items():
        path = folder / name
        path.write_text(render(spec))
        path.chmod(0o755)
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_hpc.cluster.render",
                                     description="Write the ready-to-edit job scripts of slurm/.")
    parser.add_argument("--write-slurm-dir", metavar="DIR", required=True,
                        help="folder to write submit_job.sh, multi_gpu.sh, ... into")
    args = parser.parse_args(argv)
    for path in write_slurm_dir(args.write_slurm_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
