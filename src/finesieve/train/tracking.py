"""Experiment tracking in MLflow: parameters, validation curves and test metrics of every fine-tune.

By default runs go to a local file store beside the run directories (`<out>/../mlruns`), so no server is
needed; `tracking_uri` points anywhere MLflow can (a server, `sqlite:///mlflow.db`, Databricks), and
`tracking_uri="none"` turns tracking off. A missing or failing MLflow never fails a training run: the run
directory is the record of truth, tracking is a convenience beside it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from finesieve.models.finetune_config import FinetuneConfig


class Tracker:
    def __init__(self, config: FinetuneConfig, out: str | Path):
        self.config = config
        self.out = Path(out)
        self.uri = config.tracking_uri or (self.out.resolve().parent / "mlruns").as_uri()
        self._mlflow = None
        self._run = None

    def __enter__(self) -> Tracker:
        if self.config.tracking_uri == "none":
            return self
        # MLflow 3 refuses a file store unless allowed, and phones home unless told not to.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        try:
            import mlflow

            mlflow.set_tracking_uri(self.uri)
            mlflow.set_experiment(self.config.experiment)
            self._run = mlflow.start_run(run_name=self.out.name)
            self._mlflow = mlflow
        except Exception as err:  # tracking must never cost a training run
            warnings.warn(
                f"MLflow tracking is off for this run ({err}); the run directory still records everything", stacklevel=2
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._mlflow is not None:
            self._mlflow.end_run(status="FAILED" if exc[0] else "FINISHED")

    def log_params(self, params: dict) -> None:
        if self._mlflow is not None:
            self._mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self._mlflow is not None:
            self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path) -> None:
        if self._mlflow is not None:
            self._mlflow.log_artifact(str(path))

    def info(self) -> dict:
        if self._run is None:
            return {"tracking_uri": None}
        return {"tracking_uri": self.uri, "experiment": self.config.experiment, "run_id": self._run.info.run_id}
