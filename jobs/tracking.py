"""MLflow plumbing shared by the training and scoring jobs.

Every model of atende is saved by its own module as a directory (scikit-learn pipelines with
joblib, Spark MLlib models with their own writer, JSON for the rest). The job logs that
directory as a pyfunc model whose artefact is the directory, registers it, and moves the
`champion` alias to the new version only when it beats the current champion on the held-out
metric. Scoring loads `models:/NAME@champion` and hands the directory back to the module's loader.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atende.conf.settings import Settings
from atende.lakehouse.locations import is_storage_uri
from atende.lakehouse.storage import Storage, join
from atende.lakehouse.storage import location as lakehouse_location

log = logging.getLogger(__name__)
_STDERR_REDIRECT = threading.Lock()  # see log_and_register

CHAMPION = "champion"


class RemoteStoreNeeded(ValueError):
    """A lakehouse on an object store with no MLflow store configured; the message says what to set."""


class NoChampion(LookupError):
    """No version of the registered model carries the champion alias yet."""


def tracking_uri(settings: Settings, lakehouse_root: str | Path) -> str:
    """The configured tracking URI, else a SQLite store beside the tables (`<lakehouse>/_mlflow`)."""
    if settings.mlflow.tracking_uri:
        return settings.mlflow.tracking_uri
    if is_storage_uri(str(lakehouse_root)):
        raise RemoteStoreNeeded(
            f"the lakehouse {lakehouse_root} is not a local folder, so MLflow's SQLite store cannot sit beside it: "
            "set mlflow.tracking_uri (a tracking server, or sqlite:////a/local/mlflow.db) and, for the models' "
            "files, mlflow.artifact_location (e.g. s3://bucket/mlflow)"
        )
    folder = join(lakehouse_location(lakehouse_root), "_mlflow")
    Storage().makedirs(folder)
    return f"sqlite:///{join(folder, 'mlflow.db')}"


def configure(settings: Settings, lakehouse_root: str | Path) -> str:
    """Point MLflow at the store and the experiment; returns the experiment id."""
    import mlflow

    uri = tracking_uri(settings, lakehouse_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = settings.mlflow.experiment
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        location = settings.mlflow.artifact_location
        if location is None and not settings.mlflow.tracking_uri:
            location = Path(join(lakehouse_location(lakehouse_root), "_mlflow", "artifacts")).as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _model_class():
    import mlflow.pyfunc

    class SavedModelDirectory(mlflow.pyfunc.PythonModel):
        """A model saved by its atende module as a directory; `predict` is not the way to score it
        (the scoring jobs run in Spark and load the directory with the module's loader)."""

        def load_context(self, context):
            self.model_dir = context.artifacts["model"]

        def predict(self, context, model_input: list[str], params=None) -> list[str]:
            return [self.model_dir for _ in model_input]

    return SavedModelDirectory


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    promoted: bool
    metric: str
    value: float
    champion_value: float | None  # the champion's value before this version (None: there was none)


def log_and_register(
    name: str,
    model_dir: str | Path,
    *,
    metric: str,
    higher_is_better: bool = True,
    extra_artifacts: Mapping[str, str | Path] | None = None,
    champion_value: float | None = None,
    force_promote: bool = False,
) -> Registered:
    """Inside an active MLflow run: log `model_dir` as the run's model, register it as a new version
    of `name`, and give it the champion alias if its `metric` (already logged on the run) beats the
    champion's. A NaN metric promotes only when there is no champion yet.

    `champion_value`: the champion's `metric` measured by the caller on this run's own held-out data
    (a fairer comparison); without it, the value the champion's run logged is used. `force_promote`: the new
    version becomes champion whatever its score (after an erasure, the champion was fitted on erased data)."""
    import mlflow
    from mlflow import MlflowClient

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_and_register needs an active MLflow run")
    for artifact_path, path in (extra_artifacts or {}).items():
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    # MLflow prints "Successfully registered model ..." / "Created version ..." straight to stderr: routed
    # to this module's log (shown with --verbose) instead of the terminal
    chatter = io.StringIO()
    # sys.stderr is the process's: models trained side by side (jobs/modeling.py) take turns here, or one
    # thread's redirect could outlive another's and swallow the terminal's stderr
    with _STDERR_REDIRECT, contextlib.redirect_stderr(chatter):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_model_class()(),
            artifacts={"model": str(model_dir)},
            # the project's own pins: inferring them would import every module of the process
            pip_requirements=["atende"],
            registered_model_name=name,
        )
    for line in chatter.getvalue().splitlines():
        if line.strip():
            log.info("mlflow: %s", line.strip())
    client = MlflowClient()
    version = str(info.registered_model_version)
    value = float(client.get_run(run.info.run_id).data.metrics.get(metric, math.nan))
    if champion_value is None or champion_version(name) is None:
        champion_value = champion_metric(name, metric)
    # the first version is promoted even without a held-out value (data too small to hold any out):
    # serving a model beats serving nothing; after that a version must beat the champion
    better = force_promote or champion_value is None or (not math.isnan(value) and (
        math.isnan(champion_value)
        or (value > champion_value if higher_is_better else value < champion_value)
    ))
    if better:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promoted", str(better).lower())
    client.set_model_version_tag(name, version, metric, repr(value))
    mlflow.set_tag(f"{name}.promoted", str(better).lower())
    log.info("%s v%s %s=%.4f champion=%s -> promoted=%s", name, version, metric, value, champion_value, better)
    return Registered(name, version, run.info.run_id, better, metric, value, champion_value)


def champion_version(name: str):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def champion_metric(name: str, metric: str) -> float | None:
    """The champion's value of `metric` (from the run that produced it); None when no champion."""
    from mlflow import MlflowClient

    current = champion_version(name)
    if current is None:
        return None
    metrics = MlflowClient().get_run(current.run_id).data.metrics
    return float(metrics.get(metric, math.nan))


def load_champion_dir(name: str) -> tuple[str, str]:
    """(local directory of the champion's saved model, its version)."""
    import mlflow

    current = champion_version(name)
    if current is None:
        raise NoChampion(f"no '{CHAMPION}' version of model {name!r} is registered: train it first (atende train)")
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    return loaded.unwrap_python_model().model_dir, str(current.version)


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}
    mlflow.log_params(flat)


def log_metrics(metrics: Mapping[str, Any]) -> None:
    import mlflow

    clean = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        clean[key.replace("@", "_at_")] = float(value)
    mlflow.log_metrics(clean)
