"""Job scripts from templates: a pure function of a ``JobSpec``, pinned by golden files.

Two templates in ``templates/``: ``single.sh`` (one process in the batch shell: submit_job,
cpu_only, sweep_array) and ``srun.sh`` (one task per GPU: multi_gpu, multi_node); what differs
between the kinds of one template is data here (``ABOUT``) and ``{{#flag}}...{{/flag}}``
sections (``{{^flag}}`` when the flag is off). ``{{name}}`` is a value, ``{{> file}}`` includes
a fragment. Every value put into the shell part is quoted with ``shlex.quote``; values in
``#SBATCH`` lines (read by sbatch, not by the shell) are quoted the way sbatch's own parser
expects: double quotes, with ``\\`` and ``"`` escaped.
"""

from __future__ import annotations

import re
import shlex
from importlib import resources

from mnist_hpc.cluster.nodeenv import venv_stamp
from mnist_hpc.cluster.spec import JobSpec, check_spec
from mnist_hpc.cluster.units import format_time, parse_time

# what the header of each kind of script says it does
ABOUT = {
    "submit_job": "Train one model on one node (one GPU, or CPU only).",
    "cpu_only": "Train one model on CPU cores only: to check a config, or on the local Slurm sandbox\n"
    "(scripts/local_slurm.sh).",
    "sweep_array": "A sweep as one job array: task I runs run I + INDEX_OFFSET of the sweep file.",
    "multi_gpu": "Data-parallel training on one node: one task per GPU, started by srun, joined by PyTorch\n"
    "DDP.",
    "sweep_report": "A sweep's report, after its job array has ended (sweep submit --then report): a small CPU\n"
    "job writing report.md into the sweep folder, naming the runs that did not complete.",
    "multi_node": "Data-parallel training across nodes: one task per GPU on every node, started by srun,\n"
    "joined by PyTorch DDP.",
}


# --------------------------------------------------------------------------- quoting


_PLAIN = re.compile(r"^[A-Za-z0-9_.,:%@/=+-]+$")


PACKED_ABOUT = (
    "A packed sweep as one job array: task I runs the {k} runs from (I + INDEX_OFFSET) * {k} of the\n"
    "sweep file, one after another, each in its own run folder; a requeued task skips the\n"
    "completed runs and resumes the interrupted one."
)


def directive_quote(value: str | int) -> str:
    """Quote a value for an ``#SBATCH`` line (sbatch splits on spaces, honours "..." and \\)."""
    value = str(value)
    if _PLAIN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sh(value: str) -> str:
    return shlex.quote(str(value)) if value != "" else "''"


# --------------------------------------------------------------------------- rendering


def directives(spec: JobSpec) -> list[str]:
    p = spec.profile
    opts: list[tuple[str, str | int | None]] = [("--job-name", spec.job_name)]
    if spec.account:
        opts.append(("--account", spec.account))
    if spec.mail_user:
        opts += [("--mail-user", spec.mail_user), ("--mail-type", spec.mail_type)]
    opts += [
        ("--time", format_time(parse_time(spec.time))),
        ("--nodes", spec.nodes),
        ("--ntasks-per-node", spec.tasks),
        ("--cpus-per-task", spec.cpus),
    ]
    if spec.memory:
        opts.append(("--mem", spec.memory))
    gpu = p.gpu_directive(spec.gpus_per_node, spec.gpu_type)
    if gpu:
        option, value = gpu.split("=", 1)
        opts.append((option, value))
    if p.partition:
        opts.append(("--partition", p.partition))
    if spec.array:
        opts.append(("--array", spec.array))
    if spec.dependency:
        opts.append(("--dependency", spec.dependency))
    opts.append(("--output", spec.output))
    # the warning must come after the start: a short job gets it halfway through its time
    lead = min(spec.signal_seconds, max(10, parse_time(spec.time) // 2))
    signal = f"{spec.requeue_signal}@{lead}" if spec.srun else f"B:{spec.requeue_signal}@{lead}"
    opts += [("--signal", signal), ("--requeue", None), ("--open-mode", "append")]
    return [f"#SBATCH {k}" if v is None else f"#SBATCH {k}={directive_quote(v)}" for k, v in opts]


def _template_text(name: str) -> str:
    # one name per joinpath: Traversable.joinpath takes several only from Python 3.11
    return resources.files("mnist_hpc.cluster").joinpath("templates").joinpath(name).read_text()


_SECTION = re.compile(r"\{\{([#^])(\w+)\}\}\n(.*?)\{\{/\2\}\}\n", re.S)


def _expand(text: str) -> str:
    """The template with its ``{{> fragment}}`` includes put in (recursively)."""
    return re.sub(r"\{\{> *([\w.]+) *\}\}", lambda m: _expand(_template_text(m.group(1)).rstrip("\n")), text)


def _fill(text: str, values: dict[str, str], flags: dict[str, bool]) -> str:
    """Sections, then values, each in one pass (a value holding ``{{x}}`` stays as it is)."""
    text = _expand(text)

    def section(m: re.Match[str]) -> str:
        if m.group(2) not in flags:
            raise KeyError(f"template section {{{{{m.group(1)}{m.group(2)}}}}} has no flag")
        return m.group(3) if flags[m.group(2)] == (m.group(1) == "#") else ""

    text = _SECTION.sub(section, text)

    def value(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise KeyError(f"template placeholder {{{{{m.group(1)}}}}} has no value")
        return values[m.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", value, text)


def render(spec: JobSpec) -> str:
    """The job script for ``spec`` (validated first; raises UserError)."""
    check_spec(spec)
    p = spec.profile
    modules = list(p.modules) + (list(p.gpu_modules) if spec.gpus_per_node else [])
    values = {
        "directives": "\n".join(directives(spec)),
        "about": "\n".join(
            f"# {line}"
            for line in (
                PACKED_ABOUT.format(k=spec.pack)
                if spec.pack > 1 and spec.template == "sweep_array"
                else ABOUT[spec.template]
            ).splitlines()
        ),
        "generated": f"Made by mnist-hpc for the cluster profile {p.name} ({p.description}).",
        "script_name": _sh(spec.script_name),
        "log": _sh(spec.output.replace("%A", "JOBID").replace("%a", "TASK").replace("%j", "JOBID")),
        "config": _sh(spec.config),
        "sweep_file": _sh(spec.sweep),
        "index_offset": str(int(spec.index_offset)),
        "pack": str(int(spec.pack)),
        "run_dir": _sh(spec.run_dir),
        "data_archive": _sh(spec.data_archive),
        "data_dir": _sh(spec.data_dir),
        "modules": " ".join(_sh(m) for m in modules),
        "packages": " ".join(_sh(name) for name in spec.packages),
        "code": _sh(spec.code),
        "python": _sh(spec.python),
        "signal": spec.requeue_signal,
        "workdir": _sh(spec.workdir) if spec.workdir else '"$SLURM_SUBMIT_DIR"',
        "notes": "\n".join(f"# {line}" for line in p.notes),
        "cluster": _sh(p.name),
        "home_venv": _sh(p.home_venv),
        "venv_stamp": _sh(venv_stamp(p.modules, spec.packages)),
    }
    sweep = spec.template == "sweep_array"
    report = spec.template == "sweep_report"
    flags = {
        "sweep": sweep or report,
        "sweep_array": sweep,
        "sweep_report": report,
        "sweep_one": sweep and spec.pack <= 1,
        "sweep_packed": sweep and spec.pack > 1,
        "multi_node": spec.template == "multi_node",
        "notes": bool(p.notes),
        "home_venv": bool(p.home_venv),
    }
    return _fill(_template_text("srun.sh" if spec.srun else "single.sh"), values, flags)
