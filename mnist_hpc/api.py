"""The public Python API: what `import mnist_hpc` offers (re-exported lazily by the package).

The CLI is a thin layer over these functions; notebooks and scripts call them directly:

    import mnist_hpc
    run = mnist_hpc.train("quickstart", overrides=["train.epochs=1"])
    run.summary.test_accuracy, run.plots, run.predict(["digit.png"])

Nothing here imports torch at import time; each function imports what it needs.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_hpc.errors import UserError
from mnist_hpc.experiments.sweepfile import MAX_RUNS as MAX_SWEEP_RUNS  # larger sweeps need allow_large

if TYPE_CHECKING:
    import numpy as np

    from mnist_hpc.training.export import Exported

PLOT_NAMES = ("learning_curves", "confusion_matrix", "misclassified")


def _echo(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- runs


class Run:
    """One run folder: its config, summary, per-epoch metrics, checkpoints and plots.

    ``Run.load(path)`` opens any run folder (finished or not); ``train()`` returns one. A run of
    a custom model carries its source code: loading the model runs that code, so a run folder
    that you did not train on this machine needs ``trust_code=True`` (``--trust-code``)."""

    def __init__(self, path, *, trust_code: bool = False, python_model=None):
        self.path = Path(path)
        self.trust_code = trust_code
        self._python_model = python_model  # a network given to train() as a Python object

    @classmethod
    def load(cls, path, *, trust_code: bool = False) -> Run:
        p = Path(path)
        if not p.is_dir():
            raise UserError(f"{p}: no such run folder")
        if not (p / "config.yaml").is_file():
            raise UserError(f"{p}: not a run folder (no config.yaml)")
        return cls(p, trust_code=trust_code)

    def _code(self) -> dict:
        return {"trust_code": self.trust_code, "python_model": self._python_model}

    def __repr__(self) -> str:
        s = self.summary
        acc = f", test_accuracy={s.test_accuracy:.4f}" if s and s.test_accuracy is not None else ""
        return f"Run('{self.path}'{acc})"

    # -- what the folder holds ----------------------------------------------------------------

    @property
    def config(self):
        """The resolved config the run was trained with (``config.yaml``)."""
        from mnist_hpc.config import config_from_dict, read_yaml

        return config_from_dict(read_yaml(self.path / "config.yaml"), source=str(self.path / "config.yaml"))

    @property
    def summary(self):
        """The ``RunSummary`` of a finished run, or None while it has none."""
        from mnist_hpc.runs.summary import read_summary

        return read_summary(self.path)

    @property
    def state(self):
        """How the run stands: a ``RunState`` (``.state``: running, completed, failed or
        interrupted; ``.describe()`` in words, e.g. "interrupted by SIGUSR1 at epoch 2, step 14"),
        or None for a folder that holds no run."""
        from mnist_hpc.runs.state import read_state

        return read_state(self.path)

    @property
    def metrics(self) -> list:
        """One dict per finished epoch (``metrics.csv``): epoch, train_loss, train_acc, val_loss, ..."""
        from mnist_hpc.runs.folder import read_metrics_csv

        return [row.to_dict() for row in read_metrics_csv(self.path / "metrics.csv")]

    @property
    def plots(self) -> dict:
        """{name: path} of the figures the run wrote (learning curves, confusion matrix, misclassified)."""
        return {
            n: self.path / "plots" / f"{n}.png"
            for n in PLOT_NAMES
            if (self.path / "plots" / f"{n}.png").exists()
        }

    def checkpoint(self, which: str = "best") -> Path:
        """The checkpoint file: ``best`` (falls back to the newest when there is no best.pt, or
        when best.pt is damaged: not the bytes whose sha256 was recorded, saying so) or ``last``."""
        from mnist_hpc.training.checkpoint import list_checkpoints, usable

        if which not in ("best", "last"):
            raise UserError(f"which={which!r}: expected 'best' or 'last'")
        cdir = self.path / "checkpoints"
        if not cdir.is_dir():
            found = None
        elif which == "best":  # best.pt, else the newest last-*; a damaged one is skipped, saying so
            found = usable(cdir, warn=lambda m: print(m, file=sys.stderr))
        else:
            found = next(iter(list_checkpoints(cdir)), None)
        if found is None:
            raise UserError(f"{self.path}: no checkpoint in {cdir}")
        return found

    # -- using the model ----------------------------------------------------------------------

    def model(self, which: str = "best", device: str = "cpu"):
        """The trained ``torch.nn.Module`` (in eval mode) from the best or last checkpoint."""
        from mnist_hpc.config.validate import check_device
        from mnist_hpc.training.inference import load_model

        check_device(device, "device")
        return load_model(self.checkpoint(which), device, **self._code()).model

    def evaluate(self, tta: bool = False, *, data_dir=None, device: str = "auto") -> dict:
        """Test accuracy and loss of the best (else newest) checkpoint: {"test_accuracy",
        "test_loss", "checkpoint"}; ``mnist_hpc.evaluate([run])`` (and `mnist-hpc evaluate`)."""
        found = _evaluate([self.path], tta=tta, data_dir=data_dir, device=device, **self._code())
        return found.results[0]

    def predict(
        self, images, *, which: str = "best", top: int = 3, device: str = "cpu", errors: str = "raise"
    ) -> list[Prediction]:
        """Classify images with the best (or last) checkpoint: ``mnist_hpc.predict`` (and
        `mnist-hpc predict`) on this run. Images: file paths, PIL images or arrays (any size;
        prepared the MNIST way). An array is one image (H×W; H×W×3/4 or C×H×W colour) or, on its
        own, a batch (N×H×W, N×1×H×W, N×3×H×W, N×H×W×3); any other shape is refused naming the
        accepted ones.

        Returns one ``Prediction`` per image (label, probability, top-k list), in input order.
        A bad image (missing, not an image, blank, ...): with ``errors="raise"`` (the default)
        the first one raises a one-line UserError naming it, before anything is classified;
        with ``errors="skip"`` each image is judged on its own and a bad one gets a
        ``Prediction`` whose ``label`` is None and ``error`` the one-line reason (nothing
        raises, even when every image is bad: check ``.error``)."""
        return _predict(
            lambda: self.checkpoint(which), images, top=top, device=device, errors=errors, **self._code()
        )

    def export(self, format: str = "onnx", out=None, *, which: str = "best") -> Path:
        """Write the model as ``format`` (``"onnx"``, ``"torchscript"`` or ``"state_dict"``) to
        ``out`` (a file or folder; default ``<run>/exports/model.<format>``) with a model card
        ``<file>.card.json`` beside it; return the file's path. ``predict``/``evaluate`` take it.
        ``mnist_hpc.export`` (and `mnist-hpc export`) on this run's best (or last) checkpoint."""
        return _export(self.checkpoint(which), format, out, **self._code()).path

    # -- notebooks ----------------------------------------------------------------------------

    def _repr_markdown_(self) -> str:
        s = self.summary
        if s is None:
            return f"**{self.path.name}** — no summary yet (running, failed or interrupted)"
        return (
            f"**{self.path.name}** — test accuracy **{s.test_accuracy * 100:.2f}%** · "
            f"{s.model} ({s.params:,} params) on {s.dataset} · {s.train_seconds:.1f} s training"
        )

    def show(self) -> None:
        """Display the summary line and every plot inline (Jupyter), or print their paths."""
        try:
            from IPython.display import Image, Markdown, display
        except ImportError:
            print(self._repr_markdown_())
            for name, p in self.plots.items():
                print(f"{name}: {p}")
            return
        display(Markdown(self._repr_markdown_()))
        for p in self.plots.values():
            display(Image(filename=str(p)))


@dataclass
class Prediction:
    source: str  # the file name, or "image N" for in-memory images
    label: str | None  # the most likely class name (None for a bad image)
    probability: float | None
    top: list  # [(class name, probability), ...] best first
    error: str | None = None  # predict(errors="skip"): why this image could not be classified

    def __str__(self) -> str:
        if self.error:
            return f"error: {self.error}"
        return f"{self.source}: " + "  ".join(f"{name} {p * 100:.1f}%" for name, p in self.top)


def predict(
    source,
    images,
    *,
    top: int = 3,
    device: str = "cpu",
    errors: str = "raise",
    trust_code: bool = False,
) -> list[Prediction]:
    """Classify images with the model of a run folder (its best, else newest checkpoint), a
    checkpoint file or an exported model (ONNX, TorchScript, state_dict with its card), as
    `mnist-hpc predict` does; ``source`` may be a ``Run``. ``images`` and ``errors`` as in
    ``Run.predict``: one ``Prediction`` per image, in input order; with ``errors="skip"`` a bad
    image gets its one-line reason in ``.error`` (what the command prints on stderr). A source
    that holds no usable model raises its one-line UserError, whatever the images."""
    where, code = _model_of(source, trust_code)
    return _predict(lambda: where, images, top=top, device=device, errors=errors, **code)


def export(source, format: str = "onnx", out=None, *, trust_code: bool = False) -> Exported:
    """Write the model of a run folder (its best, else newest checkpoint) or of a checkpoint file
    as ``format`` (``"onnx"``, ``"torchscript"`` or ``"state_dict"``) to ``out`` (a file or a
    folder; default ``<run>/exports/model.<format>``) with its model card beside it, as
    `mnist-hpc export` does; ``source`` may be a ``Run``. Returns an ``Exported``: ``.path``
    (the file ``predict`` and ``evaluate`` take), ``.card``, ``.format``, ``.checkpoint``."""
    where, code = _model_of(source, trust_code)
    return _export(where, format, out, **code)


def _model_of(source, trust_code: bool) -> tuple:
    """(what to load, the code settings) for ``predict``/``export``: a path as given, or a
    ``Run``'s folder with its own network and trust."""
    if isinstance(source, Run):
        return source.path, {
            "trust_code": trust_code or source.trust_code,
            "python_model": source._python_model,
        }
    return source, {"trust_code": trust_code, "python_model": None}


def _predict(
    model_path: Callable[[], object],
    images,
    *,
    top: int,
    device: str,
    errors: str,
    trust_code: bool,
    python_model=None,
) -> list[Prediction]:
    """The one classifier behind ``predict``, ``Run.predict`` and `mnist-hpc predict`: the
    arguments and every image checked first, then the model (``model_path()``) loaded once."""
    from mnist_hpc.config.validate import check_device
    from mnist_hpc.training.inference import load_model, predict_arrays

    if errors not in ("raise", "skip"):
        raise UserError(f"errors={errors!r}: expected 'raise' or 'skip'")
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 1:
        raise UserError(f"top={top!r}: expected a whole number of classes, 1 or more")
    check_device(device, "device")  # before any image is read
    if _is_array(images):
        images = _array_images(images)  # one image, or a batch of them
    elif isinstance(images, (str, Path)) or not isinstance(images, Iterable):
        images = [images]
    prepared: list[tuple[str, np.ndarray | None, str | None]] = []  # (name, array or None, error or None)
    for i, img in enumerate(images):
        name = str(img) if isinstance(img, (str, Path)) else f"image {i}"
        try:
            prepared.append((name, _to_mnist_array(img, i), None))
        except UserError as e:
            if errors == "raise":
                raise
            prepared.append((name, None, str(e)))
        except Exception as e:  # a reader's own failure: one line naming the image, no traceback
            detail = str(e).splitlines()[0][:120] if str(e) else "no detail"
            reason = f"{name}: cannot prepare the image ({type(e).__name__}: {detail})"
            if errors == "raise":
                raise UserError(reason) from None
            prepared.append((name, None, reason))
    where = model_path()
    code = {"trust_code": trust_code, "python_model": python_model}
    good = [a for _, a, err in prepared if err is None]
    if good:
        ranked = iter(predict_arrays(where, good, device=device, top=int(top), **code))
    else:  # every image bad: a source without a usable model is still the first error
        load_model(where, device, **code)
        ranked = iter([])
    return [
        Prediction(n, None, None, [], err) if err else _prediction(n, next(ranked)) for n, _, err in prepared
    ]


def _export(source, format: str, out, *, trust_code: bool, python_model=None) -> Exported:
    """The one exporter behind ``export``, ``Run.export`` and `mnist-hpc export`."""
    from mnist_hpc.training.export import export_model

    return export_model(source, format, out, trust_code=trust_code, python_model=python_model)


def _prediction(name: str, ranked: list) -> Prediction:
    return Prediction(name, ranked[0][0], ranked[0][1], ranked)


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


ARRAY_LAYOUTS = (
    "H×W (grayscale), H×W×3 or H×W×4 (colour, channels last), 1×H×W or C×H×W (channels "
    "first); a batch: N×H×W, N×1×H×W, N×3×H×W or N×H×W×3"
)


def _array_images(a) -> list:
    """The images of one array passed to ``Run.predict``: one image (H×W, H×W×C, 1×H×W) or a
    batch (N×H×W, N×C×H×W, N×H×W×C). A 3×H×W or 4×H×W array (three digits, or one colour
    image with its channels first?) is refused as ambiguous."""
    import numpy as np

    a = np.asarray(a)
    if a.ndim == 2 or (a.ndim == 3 and (a.shape[-1] in (3, 4) or a.shape[0] == 1)):
        return [a]
    if a.ndim == 3 and a.shape[0] in (3, 4):
        raise UserError(
            f"an array of shape {'×'.join(map(str, a.shape))} is ambiguous ({a.shape[0]} grayscale "
            f"images, or one colour image with its channels first?): pass a list of images, "
            f"or a 1×{a.shape[0]}×{a.shape[1]}×{a.shape[2]} batch for one colour image"
        )
    if a.ndim in (3, 4):
        return list(a)
    raise UserError(
        f"an array of shape {'×'.join(map(str, a.shape)) or 'scalar'}: not an image; predict takes "
        f"{ARRAY_LAYOUTS}"
    )


def _to_mnist_array(img, index: int) -> np.ndarray:
    """A 28x28 uint8 array (white on black) from a path, a PIL image or an array."""
    import numpy as np
    from PIL import Image

    from mnist_hpc.training import imageprep

    if isinstance(img, (str, Path)):
        return imageprep.prepare(img)
    if isinstance(img, Image.Image):
        return imageprep.to_mnist(img, name=f"image {index}")
    if _is_array(img):
        a = np.asarray(img)
        if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            a = np.moveaxis(a, 0, -1)  # channels first -> channels last
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))) or min(a.shape[:2], default=0) < 1:
            raise UserError(
                f"image {index}: an array of shape {'×'.join(map(str, a.shape)) or 'scalar'} is not "
                f"an image; predict takes {ARRAY_LAYOUTS}"
            )
        if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise UserError(
                f"image {index}: an array of {a.dtype} is not an image; give numbers (0-255, or 0-1 floats)"
            )
        if a.shape == (28, 28) and a.dtype == np.uint8:
            return a  # already an MNIST-style digit
        if a.dtype != np.uint8:
            a = np.nan_to_num(a.astype(np.float64))
            a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return imageprep.to_mnist(Image.fromarray(np.ascontiguousarray(a)), name=f"image {index}")
    raise UserError(f"image {index}: expected a file path, a PIL image or an array, got {type(img).__name__}")


# --------------------------------------------------------------------------- training


def _train_context(cfg, echo):
    """What training needs from the scheduler, read by the cluster layer (the only SLURM_* reader)."""
    from mnist_hpc.cluster import env as job_env
    from mnist_hpc.cluster import envrecord
    from mnist_hpc.training.context import TrainContext

    job = job_env.current()
    launch = job_env.srun_launch_env()
    return TrainContext(
        on_preempt=job_env.requeue_on_preempt(job, cfg.runtime.max_requeues, echo),
        on_start=envrecord.on_start(job, echo),
        job_id=job.job_id,
        array_job_id=job.array_job_id,
        array_task_id=job.array_task_id,
        run_name_suffix=job.run_name_suffix,
        restart_count=job.restart_count,
        cpus=job.cpus_per_task,
        offline=job.in_job,
        launch_env=launch,
        launcher="slurm" if launch else None,
    )


def train(
    config_or_source,
    overrides: Sequence[str] = (),
    *,
    data_dir=None,
    run_dir=None,
    resume=None,
    init_from=None,
    progress: bool | None = None,
    echo: Callable[[str], None] = _echo,
    model=None,
    verbose: bool = False,
) -> Run | None:
    """Train a model; return its ``Run`` (None on the non-zero ranks of a DDP job).

    ``config_or_source``: a ``Config``, a dict, a YAML path or a shipped config name. ``resume``:
    ``"auto"`` (newest valid checkpoint of the run) or a checkpoint/run folder path: the same run
    continued (only epochs, checkpointing, device/threads and logging may change; a completed
    run is continued in a new folder). ``init_from``: a run folder or checkpoint whose weights
    (only) a new run starts from; its summary records ``parent_run``. ``progress``: a progress
    bar: True, False, or None (default) = only in a notebook (a widget) or on a terminal, never
    into a log file. ``model``: your own network as an ``nn.Module`` instance, a class or a
    function returning one (called with ``model.args`` of a custom config, else with none); it
    replaces the config's model. A class or function from a file is recorded with that file (a new
    process can resume, export and submit it); one defined in a notebook cell trains, resumes,
    evaluates and predicts within this session only (docs/own-model.md). ``verbose``: one more
    line after the result, where the time went (start-up, set-up, data, build, training, test,
    plots, summary; also in ``summary.json``'s ``phase_seconds``)."""
    from mnist_hpc.training.run import run_training

    cfg = _as_config(config_or_source, overrides)
    if cfg is not config_or_source:  # loaded here: say what loading changed (a caller's Config said it)
        for note in cfg.notes:
            echo(f"note: {note}")
    else:
        cfg = _validated_again(cfg)
    result = run_training(
        cfg,
        ctx=_train_context(cfg, echo),
        data_dir=data_dir,
        run_dir=run_dir,
        resume=resume,
        echo=echo,
        source=cfg.source,
        progress=progress,
        init_from=init_from,
        model=model,
        verbose=verbose,
    )
    return Run(result.run_dir, python_model=model) if result is not None else None


# --------------------------------------------------------------------------- many runs


class SweepResult(list):
    """What ``sweep`` returns: the ``Run`` of each finished run (a list, in sweep order), with
    what `mnist-hpc sweep run` prints after the runs and exits with: ``.after`` (the comparison of
    the completed runs, a study's best trial), ``.problems`` (its stderr lines: failed, requeued or
    busy runs), ``.exit_code`` (0; 75 requeued; else the failure's) and ``.outcomes`` (one
    ``SweepRunOutcome`` per run, or a study's ``TrialResult`` per trial)."""

    def __init__(self, runs, done):
        super().__init__(runs)
        self.outcomes, self.after, self.problems = done.outcomes, done.after, done.problems
        self.exit_code = done.exit_code


def sweep(
    source,
    overrides: Sequence[str] = (),
    *,
    parallel: int = 1,
    index: int | None = None,
    data_dir=None,
    allow_large: bool = False,
    force: bool = False,
    echo: Callable[[str], None] = _echo,
) -> SweepResult:
    """Run every run of a sweep file that has not completed, as `mnist-hpc sweep run` does
    (``index``: only that run, as a Slurm array task; ``force``: train anew the finished runs
    whose stored config differs; ``allow_large``: more than MAX_SWEEP_RUNS runs); ``echo`` gets the
    header and each run's progress. Returns a ``SweepResult``: the ``Run`` of each finished run.
    A ``method: optuna`` sweep runs ``parallel`` workers of its study (``index``: be worker N);
    its result holds the completed trials. Ctrl-C raises KeyboardInterrupt (its message: how to
    continue)."""
    from mnist_hpc.config.loading import as_overrides
    from mnist_hpc.experiments import sweepops
    from mnist_hpc.experiments.sweepfile import load_sweep

    # an array task checks only its own run: the whole sweep was checked when it was submitted
    sw = load_sweep(source, as_overrides(overrides), allow_large=allow_large, validate=index is None)
    done = sweepops.train(sw, parallel=parallel, index=index, data_dir=data_dir, echo=echo, force=force)
    return SweepResult([Run(d) for d in done.finished], done)


def sweep_plan(source, overrides: Sequence[str] = (), *, allow_large: bool = False):
    """The runs of a sweep file without running anything (every run's config checked first), as
    `mnist-hpc sweep plan` lists them: a ``SweepPlan`` (``.sweep``; ``.lines()`` yields the lines)."""
    from mnist_hpc.config.loading import as_overrides
    from mnist_hpc.experiments import sweepops
    from mnist_hpc.experiments.sweepfile import load_sweep

    return sweepops.plan(load_sweep(source, as_overrides(overrides), allow_large=allow_large, validate=False))


def sweep_status(source, overrides: Sequence[str] = (), *, allow_large: bool = False):
    """Where each run of a sweep file stands, from its folders alone (no scheduler call), as
    `mnist-hpc sweep status` says: a ``SweepStatus`` (``.states``: one ``SweepRunStatus`` per run
    with ``.index``, ``.name``, ``.state``, ``.detail``; ``.counts()``; ``.to_text()``). For a
    ``method: optuna`` sweep, its study's trials."""
    from mnist_hpc.config.loading import as_overrides
    from mnist_hpc.experiments import sweepops
    from mnist_hpc.experiments.sweepfile import load_sweep

    return sweepops.status(
        load_sweep(source, as_overrides(overrides), allow_large=allow_large, validate=False)
    )


def sweep_report(
    source,
    overrides: Sequence[str] = (),
    *,
    out=None,
    echo: Callable[[str], None] = _echo,
    warn: Callable[[str], None] | None = None,
):
    """Write the HTML report of a sweep file's runs, as `mnist-hpc sweep report` does, to ``out``
    (default: report.html in the sweep's folder): a ``SweepReport`` (``.path``, ``.comparison``).
    For a ``method: optuna`` study ``echo`` gets its progress and best trial first and the page
    holds its part (best trial, history, importance, slices, pruned trials); ``warn`` gets the
    notes on folders left out (also in ``.comparison.notes``)."""
    from mnist_hpc.config.loading import as_overrides
    from mnist_hpc.experiments import sweepops
    from mnist_hpc.experiments.sweepfile import load_sweep

    sw = load_sweep(source, as_overrides(overrides), allow_large=True, validate=False)
    return sweepops.report(sw, out, echo=echo, warn=warn)


def report(runs_or_dirs, *, title: str | None = None, warn: Callable[[str], None] | None = None):
    """A comparison of runs, as `mnist-hpc report` makes it: ``Run`` objects, folders holding run
    folders or sweep files; ``.rows``, ``.notes`` (what the command prints as notes; each also
    passed to ``warn``), ``.render(format, plots=, out=)`` (the command's text: table, markdown,
    csv or html), ``.to_markdown()``, ``.to_html(path)`` (the page `report --html` writes)."""
    from mnist_hpc.experiments.report import build_report

    if isinstance(runs_or_dirs, (str, Path, Run)):
        runs_or_dirs = [runs_or_dirs]
    return build_report([r if isinstance(r, Run) else Path(r) for r in runs_or_dirs], title=title, warn=warn)


@dataclass
class Evaluation:
    """What ``evaluate`` measured: one dict per run ({"test_accuracy", "test_loss", "checkpoint"})
    and, for several runs, their averaged predictions ({"members", "test_accuracy", "test_loss"})."""

    results: list
    ensemble: dict | None


def evaluate(
    runs,
    *,
    tta: bool = False,
    data_dir=None,
    device: str = "auto",
    trust_code: bool = False,
    what: str = "device",
) -> Evaluation:
    """Re-score run folders, checkpoints or exported models (ONNX, TorchScript) on the test set,
    each and (several) as an ensemble, as `mnist-hpc evaluate` does: inside a Slurm job it takes
    the job's CPUs and never downloads the dataset. ``runs``: a ``Run``, a path, or a list;
    ``what``: how messages name the device setting (the command line says ``--device``)."""
    if isinstance(runs, (str, Path, Run)):
        runs = [runs]
    return _evaluate(
        [r.path if isinstance(r, Run) else Path(r) for r in runs],
        tta=tta,
        data_dir=data_dir,
        device=device,
        trust_code=trust_code,
        what=what,
    )


def _evaluate(paths, *, tta, data_dir, device, trust_code, python_model=None, what="device") -> Evaluation:
    from mnist_hpc.cluster import env as job_env
    from mnist_hpc.training.inference import evaluate_runs

    job = job_env.current()
    results, ens = evaluate_runs(
        paths,
        data_dir=data_dir,
        tta=tta,
        device=device,
        cpus=job.cpus_per_task,
        offline=job.in_job,
        what=what,
        trust_code=trust_code,
        python_model=python_model,
    )
    return Evaluation(results, ens)


class RunList(list):
    """What ``list_runs`` returns: a ``Run`` per run folder, oldest first, with what `mnist-hpc
    runs` shows of them: ``.rows`` (one ``RunsRow`` each: name, state, detail, dataset, model,
    test_accuracy, epochs, train_seconds, started_at, finished_at), ``.damaged`` (one line per
    folder left out for a damaged record) and ``.to_table(width=None)`` (the table and the counts)."""

    def __init__(self, found):
        super().__init__(Run(row.path) for row in found.rows)
        self.rows, self.damaged, self._found = found.rows, found.damaged, found

    def to_table(self, width: int | None = None) -> str:
        return self._found.to_table(width)


def list_runs(dirs="runs") -> RunList:
    """A ``Run`` for every run folder under ``dirs`` (a folder or several, searched at any depth
    as ``report`` searches them), oldest first, finished or not (``run.state`` says how each
    stands), as `mnist-hpc runs` lists them; a folder with a damaged summary.json is left out
    (named in ``.damaged``); a folder that does not exist is a UserError."""
    from mnist_hpc.experiments.overview import runs_overview

    if isinstance(dirs, (str, Path)):
        dirs = [dirs]
    return RunList(runs_overview([Path(d) for d in dirs]))


def sync(runs, *, dry_run: bool = False, echo: Callable[[str], None] = _echo) -> list[int]:
    """Upload the offline W&B runs of run folders (``wandb sync``), as `mnist-hpc sync` does: run
    it where there is internet. Every folder is checked before anything is uploaded; ``echo`` gets
    each ``wandb sync`` command line; returns their exit codes (a failed one raises UserError)."""
    from mnist_hpc.runs.loggers.wandb_logger import sync_runs

    if isinstance(runs, (str, Path, Run)):
        runs = [runs]
    return sync_runs([r.path if isinstance(r, Run) else r for r in runs], dry_run, echo)


def submit(
    config_or_source,
    cluster: str = "local",
    *,
    overrides: Sequence[str] = (),
    account=None,
    dry_run: bool = False,
    after: str | None = None,
    warn: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
    **resources,
):
    """Submit a config as a Slurm job on ``cluster`` (a profile name), as `mnist-hpc submit` does;
    return a ``Job`` with ``.job_id`` (None on a dry run), ``.script`` (the rendered job script)
    and ``.run_dir``.

    ``resources``: gpus (``1``, ``"a100:2"`` or ``"auto"``), nodes, tasks, time (``"0:30:00"``),
    mail, cpus, mem, data_dir. ``after``: ``"JOBID[:afterany]"``, start after that job (afterok
    by default). ``warn``/``note`` get the warnings and notes as lines (default: stderr). A sweep
    file is ``sweep_submit``'s."""
    from mnist_hpc.api_cluster import _echoes, _resources
    from mnist_hpc.cluster.jobs import submit as _submit
    from mnist_hpc.config import Config
    from mnist_hpc.config.extras import check_extras
    from mnist_hpc.config.loading import as_overrides

    if isinstance(config_or_source, Config):  # a loaded file was checked by load_config already
        config_or_source = _validated_again(config_or_source)
        check_extras(config_or_source)
    asked = _resources(account, resources)
    warned, noted = _echoes(warn, note)
    return _submit(
        config_or_source,
        as_overrides(overrides),
        cluster,
        asked,
        dry_run=dry_run,
        after=after,
        warn=warned,
        note=noted,
    )


# --------------------------------------------------------------------------- cluster (api_cluster.py)
# `sweep submit`, `estimate`, `status`, `logs`, `cancel`, `preempt`, `setup`, `push`, `data pack`.

from mnist_hpc.api_cluster import (  # noqa: E402
    STATUS_EVERY,
    DataPack,
    cancel,
    estimate,
    follow_log,
    jobs_status,
    log_file,
    pack_data,
    preempt,
    push,
    run_array_task,
    setup_cluster,
    sweep_submit,
    watch_jobs_status,
    write_array_report,
)

# --------------------------------------------------------------------------- before training (api_setup.py)
# `config show` (load_config), `configs`, `config validate`, `models`, `models download`, `summary`,
# `data list|download|verify`; and the config helpers train() and submit() use.
from mnist_hpc.api_setup import (  # noqa: E402
    ConfigCheck,
    DataCheck,
    _as_config,
    _validated_again,
    check_config,
    config_keys,
    config_model,
    download_weights,
    list_clusters,
    list_configs,
    list_datasets,
    list_models,
    load_config,
    model_summary,
    prepare_data,
    verify_data,
)

__all__ = [
    "MAX_SWEEP_RUNS",
    "STATUS_EVERY",
    "ConfigCheck",
    "DataCheck",
    "DataPack",
    "Evaluation",
    "Prediction",
    "Run",
    "RunList",
    "SweepResult",
    "cancel",
    "check_config",
    "config_keys",
    "config_model",
    "download_weights",
    "estimate",
    "evaluate",
    "export",
    "follow_log",
    "jobs_status",
    "list_clusters",
    "list_configs",
    "list_datasets",
    "list_models",
    "list_runs",
    "load_config",
    "log_file",
    "model_summary",
    "pack_data",
    "predict",
    "preempt",
    "prepare_data",
    "push",
    "report",
    "run_array_task",
    "setup_cluster",
    "submit",
    "sweep",
    "sweep_plan",
    "sweep_report",
    "sweep_status",
    "sweep_submit",
    "sync",
    "train",
    "verify_data",
    "watch_jobs_status",
    "write_array_report",
]
