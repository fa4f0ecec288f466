"""MLflow: a file store inside the run folder (``<run>/mlruns``) unless $MLFLOW_TRACKING_URI names
another tracking server or store.

The file store needs no server and no network (a compute node has neither), and moves with the
run folder. MLflow 3 keeps file stores in maintenance mode and refuses them unless
$MLFLOW_ALLOW_FILE_STORE is true: this process sets it for the store it chose itself. To browse,
on a machine with the full ``mlflow`` package: ``MLFLOW_ALLOW_FILE_STORE=true mlflow ui
--backend-store-uri <run>/mlruns`` (or ``mlflow migrate-filestore`` to a database). Experiment:
$MLFLOW_EXPERIMENT_NAME or ``experiment.name``; run name: the run folder's name. Epoch metrics
use the epoch as their step, step scalars (``step/...``) the optimizer step; the summary's
numbers keep summary.json's names (``test_accuracy``...).
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnist_hpc.config import flatten
from mnist_hpc.runs.folder import StrPath
from mnist_hpc.runs.loggers.base import SUMMARY_KEYS, TAGS, Logger, Session, numbers

STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
ARTIFACTS = ("summary.json", "config.yaml", "metrics.csv")


def own_store(run_dir: StrPath) -> str:
    """The file-store URI inside the run folder."""
    return (Path(run_dir) / "mlruns").resolve().as_uri()


class MlflowLogger(Logger):
    name = "mlflow"

    def __init__(self, session: Session) -> None:
        from mlflow.tracking import MlflowClient

        self.session = session
        known = session.ids.get("mlflow") or {}
        # a resumed run stays in the store it started in; None = the run folder's own store
        uri: str | None = (
            known.get("tracking_uri") if known else os.environ.get("MLFLOW_TRACKING_URI") or None
        )
        self.own = uri is None
        if self.own:
            uri = own_store(session.run_dir)
            os.environ.setdefault(
                "MLFLOW_ALLOW_FILE_STORE", "true"
            )  # MLflow 3 refuses a file store otherwise
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        run_id = self._continue(known.get("run_id"))
        if run_id is None:
            run_id = self._create(session)
            session.remember("mlflow", {"run_id": run_id, "tracking_uri": None if self.own else uri})
        self.run_id: str = run_id

    def _continue(self, run_id: str | None) -> str | None:
        if not run_id:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:  # the store was deleted or moved: start a new MLflow run
            return None
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _create(self, session: Session) -> str:
        from mlflow.entities import Param

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or session.experiment
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(name)
        tags = {
            "mnist_hpc.run_dir": str(session.run_dir),
            "mnist_hpc.run_id": session.run_id or "",
            "mnist_hpc.slurm_job_id": session.job_id or "",
        }
        run_id: str = self.client.create_run(exp_id, run_name=session.name, tags=tags).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flatten(session.config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=params[i : i + 100])
        return run_id

    def _metrics(self, values: Mapping[str, object], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(step)) for k, v in numbers(values).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        self._metrics({f"step/{k}": v for k, v in values.items()}, step)

    def log_epoch(
        self, epoch: int, step: int, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]]
    ) -> None:
        self._metrics({TAGS.get(k, k): v for k, v in row.items() if k != "epoch"}, epoch)

    def log_summary(self, summary: Mapping[str, Any], plots: Mapping[str, Path], step: int) -> None:
        self._metrics({k: summary.get(k) for k in SUMMARY_KEYS}, summary.get("epochs_run") or 0)
        for path in plots.values():
            self.client.log_artifact(self.run_id, str(path), "plots")
        for name in ARTIFACTS:
            path = Path(self.session.run_dir) / name
            if path.exists():
                self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FAILED"))

    def lines(self) -> list[str]:
        if not self.own:
            return [f"MLflow: run {self.run_id} in {self.uri}"]
        store = shlex.quote(str(Path(self.session.run_dir) / "mlruns"))
        return [
            f"MLflow: run {self.run_id} in {store}; browse it with: MLFLOW_ALLOW_FILE_STORE=true "
            f"mlflow ui --backend-store-uri {store}  (needs the full mlflow package)"
        ]
