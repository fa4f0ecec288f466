"""What one job asks for (``JobSpec``) and the rules that refuse what its cluster would refuse.

A ``JobSpec`` is plain data: the kind of job (one of ``KINDS``), the cluster profile, the
resources and the files it runs. ``check_spec`` says no, in one clear line, to a job that makes
no sense or that the profile's cluster does not accept; ``render`` runs it before any script is
written.
"""

from __future__ import annotations

from dataclasses import dataclass

from mnist_hpc.cluster.profiles import MigSlice, Profile
from mnist_hpc.cluster.units import check_mem, parse_time, times_mem
from mnist_hpc.config import did_you_mean
from mnist_hpc.config.extras import BASE_PACKAGES
from mnist_hpc.errors import UserError

# the kinds of job script; the first three run one process in the batch shell, the last two
# start one task per GPU with srun
KINDS = ("submit_job", "multi_gpu", "multi_node", "sweep_array", "cpu_only", "sweep_report")
SRUN_KINDS = ("multi_gpu", "multi_node")
SIGNALS = ("USR1", "USR2")
DEFAULT_ARCHIVE = "data/mnist-hpc-data.tar"


@dataclass(frozen=True)
class JobSpec:
    template: str  # the kind of job, one of KINDS
    profile: Profile
    job_name: str
    config: str = "configs/quickstart.yaml"  # the experiment (training jobs)
    sweep: str = ""  # the sweep file (sweep_array)
    run_dir: str = ""  # "" = let `train` choose <output_dir>/<name>-job<JOBID>/
    time: str = "1:00:00"
    nodes: int = 1
    gpus_per_node: int = 0
    gpu_type: str | None = None  # None = the profile's default specifier
    tasks_per_node: int | None = None  # None = one per GPU (at least one)
    cpus_per_task: int | None = None  # None = the profile's share per GPU / for CPU jobs
    mem: str | None = None  # per node; None = the profile's default
    account: str | None = None
    mail_user: str | None = None
    mail_type: str = "END,FAIL"
    output: str = "slurm-%j.out"
    array: str | None = None  # e.g. "0-9%4" (sweep_array)
    index_offset: int = 0  # added to $SLURM_ARRAY_TASK_ID (sweep_array)
    pack: int = 1  # runs per array task, one after another (sweep_array; cluster.packed)
    dependency: str = ""  # e.g. "afterok:123" (submit --after) or "afterany:123" (sweep submit --then report)
    requeue_signal: str = "USR1"
    signal_seconds: int = 90  # how long before the time limit the signal comes
    workdir: str | None = None  # None = "$SLURM_SUBMIT_DIR" (the folder sbatch ran in)
    data_archive: str = DEFAULT_ARCHIVE  # "" = no staging
    data_dir: str = ""
    script_name: str = "job.sh"  # how the header tells to submit it
    code: str = ""  # the folder holding the mnist_hpc package ("" = the project of the job script)
    python: str = ""  # the submitting python, for clusters without modules ("" = none recorded)
    packages: tuple[str, ...] = BASE_PACKAGES  # what the job's virtualenv installs from the wheelhouse

    @property
    def srun(self) -> bool:
        return self.template in SRUN_KINDS

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(self.gpus_per_node, 1)

    @property
    def mig_slice(self) -> MigSlice | None:
        """The MIG instance type asked for, if ``gpu_type`` names one."""
        return self.profile.mig.get(self.gpu_type) if self.gpu_type else None

    @property
    def cpus(self) -> int:
        if self.cpus_per_task:
            return self.cpus_per_task
        if self.gpus_per_node:
            return self.mig_slice.cpus if self.mig_slice else self.profile.cpus_per_gpu
        return self.profile.cpus_cpu_job

    @property
    def memory(self) -> str | None:
        if self.mem:
            return self.mem
        if self.gpus_per_node:
            if self.mig_slice:
                return self.mig_slice.mem
            mem = self.profile.mem_per_gpu
            return None if mem is None else times_mem(mem, self.gpus_per_node)
        return self.profile.mem_cpu_job


def kind_for(nodes: int, gpus: int, tasks: int | None) -> str:
    """The kind of training job for a request: srun across nodes or GPUs, else one process."""
    if nodes > 1:
        return "multi_node"
    if (tasks or gpus) > 1:
        return "multi_gpu"
    return "submit_job" if gpus else "cpu_only"


def _check_text(spec: JobSpec) -> None:
    for what, value in [
        ("job name", spec.job_name),
        ("account", spec.account),
        ("mail", spec.mail_user),
        ("config", spec.config),
        ("run folder", spec.run_dir),
        ("output", spec.output),
        ("working folder", spec.workdir),
        ("data archive", spec.data_archive),
        ("data folder", spec.data_dir),
        ("script", spec.script_name),
        ("sweep file", spec.sweep),
        ("code folder", spec.code),
        ("python", spec.python),
        *(("package", p) for p in spec.packages),
    ]:
        if value and any(ord(c) < 32 for c in value):
            raise UserError(f"{what} {value!r}: control characters (such as newlines) are not allowed")
    if not spec.job_name.strip():
        raise UserError("the job name is empty")


def _check_gpus(spec: JobSpec) -> None:
    p = spec.profile
    if spec.gpus_per_node < 0:
        raise UserError(f"--gpus {spec.gpus_per_node}: expected 0 or more")
    if spec.gpus_per_node > p.gpus_per_node:
        have = f"{p.gpus_per_node} GPUs per node" if p.gpus_per_node else "no GPUs"
        more = " (use --nodes for more)" if p.gpus_per_node else ""
        raise UserError(f"--gpus {spec.gpus_per_node}: cluster {p.name} has {have}{more}")
    types = [*p.gpu_types, *p.mig]
    if spec.gpu_type and spec.gpu_type not in types:
        known = ", ".join(types) or "none (untyped requests only)"
        raise UserError(
            f"GPU type {spec.gpu_type!r}{did_you_mean(spec.gpu_type, types)} is not "
            f"known on cluster {p.name}; known types: {known}"
        )
    if spec.gpus_per_node and spec.tasks_per_node and spec.tasks_per_node != spec.gpus_per_node:
        raise UserError(
            f"{spec.tasks_per_node} tasks for {spec.gpus_per_node} GPUs per node: use one task per GPU"
        )
    if spec.mig_slice and (spec.gpus_per_node > 1 or spec.nodes > 1):
        # "requesting more than one MIG instance in a job is not permitted" [Multi-Instance GPU]
        whole = p.gpu_type or "a full GPU type"
        raise UserError(
            f"--gpus {spec.gpu_type}:{spec.gpus_per_node}"
            f"{f' on {spec.nodes} nodes' if spec.nodes > 1 else ''}: a job may use one MIG "
            f"instance only, on one node (Multi-Instance GPU); ask for {spec.gpu_type}:1, "
            f"or for whole GPUs ({whole}:{spec.gpus_per_node})"
        )
    if spec.gpus_per_node and p.gpu_counts:
        counts = " or ".join(str(n) for n in p.gpu_counts)
        if spec.gpus_per_node not in p.gpu_counts:
            raise UserError(
                f"--gpus {spec.gpus_per_node}: cluster {p.name} takes {counts} GPUs per node "
                f"({p.gpus_per_node} = a whole node); {spec.gpus_per_node} cannot be requested there"
            )
        if spec.nodes > 1 and spec.gpus_per_node != p.gpus_per_node:
            raise UserError(
                f"--gpus {spec.gpus_per_node} on {spec.nodes} nodes: on cluster {p.name} a job "
                f"on several nodes takes whole nodes: --gpus {p.gpus_per_node}"
            )


def _check_cpus(spec: JobSpec) -> None:
    p = spec.profile
    if spec.tasks < 1 or spec.cpus < 1:
        raise UserError("tasks and CPUs per task must be at least 1")
    if not spec.gpus_per_node and p.cpu_node_cores and spec.tasks * spec.cpus != p.cpu_node_cores:
        raise UserError(
            f"{spec.tasks} task(s) x {spec.cpus} CPUs: cluster {p.name} runs CPU-only jobs on "
            f"whole {p.cpu_node_cores}-core nodes; ask for --cpus {p.cpu_node_cores // spec.tasks} "
            f"(tasks x CPUs = {p.cpu_node_cores}), or for a GPU"
        )


def _check_shape(spec: JobSpec) -> None:
    if spec.template == "sweep_array" and not (spec.array and spec.sweep):
        raise UserError("a sweep array job needs a sweep file and an --array range")
    if spec.template == "sweep_report" and (not spec.sweep or spec.gpus_per_node):
        raise UserError("a sweep report job needs the sweep file and no GPU")
    if spec.template not in ("sweep_array", "sweep_report") and not spec.config:
        raise UserError("a training job needs a config file")
    if not spec.srun and spec.gpus_per_node > 1:
        raise UserError(
            f"--gpus {spec.gpus_per_node}: a {spec.template} job runs one process: one GPU at most "
            "(several GPUs take one task each: multi_gpu, or --gpus N with `submit`)"
        )
    if spec.template == "multi_node" and spec.nodes < 2:
        raise UserError("the multi_node template is for 2 or more nodes")
    if spec.template != "multi_node" and spec.nodes > 1:
        raise UserError(
            f"the {spec.template} template runs on one node; use multi_node for --nodes {spec.nodes}"
        )


def check_spec(spec: JobSpec) -> None:
    """Refuse a job the cluster would refuse (or that makes no sense), with a clear message."""
    p = spec.profile
    if spec.template not in KINDS:
        raise UserError(f"unknown job template {spec.template!r}; expected one of {', '.join(KINDS)}")
    _check_text(spec)
    if p.account_required and not spec.account:
        example = f"{p.account_prefixes[0]}yourpi" if p.account_prefixes else "def-yourpi"
        raise UserError(
            f"cluster {p.name} needs a Slurm account: pass --account {example} (or set "
            "$SBATCH_ACCOUNT); `sshare -U` on the cluster lists yours"
        )
    if spec.account and p.account_prefixes and not spec.account.startswith(p.account_prefixes):
        raise UserError(
            f"--account {spec.account}: cluster {p.name} runs jobs of "
            f"{' or '.join(a + '...' for a in p.account_prefixes)} accounts only"
        )
    if spec.nodes < 1:
        raise UserError(f"--nodes {spec.nodes}: expected at least 1")
    _check_gpus(spec)
    _check_cpus(spec)
    if parse_time(spec.time) > p.max_seconds:
        raise UserError(f"--time {spec.time}: above the {p.max_time} maximum of cluster {p.name}")
    if spec.memory is not None:
        check_mem(spec.memory)
    if spec.requeue_signal not in SIGNALS:
        raise UserError(f"requeue signal {spec.requeue_signal!r}: expected one of {', '.join(SIGNALS)}")
    _check_shape(spec)
