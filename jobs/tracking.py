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
from atende.models import comparison

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
    reason: str = ""  # why the alias moved or stayed, in a sentence


def log_and_register(
    name: str,
    model_dir: str | Path,
    *,
    metric: str,
    higher_is_better: bool = True,
    extra_artifacts: Mapping[str, str | Path] | None = None,
    champion_value: float | None = None,
    force_promote: bool = False,
    gate: Mapping[str, bool] | None = None,
) -> Registered:
    """Inside an active MLflow run: log `model_dir` as the run's model, register it as a new version
    of `name`, and decide whether the champion alias moves to it.

    `gate`: the measures users judge the model by (name -> higher is better). Each one the run can be
    judged on (models.comparison.from_metrics: paired against the champion on the same held-out rows, or
    this run's interval against the champion's logged value) must not be worse beyond its interval; the
    improvements are logged as `challenge_<measure>_improvement` (`_low`, `_high`). When no gated measure
    can be judged, the new version must beat the champion on `metric` (already logged on the run); a NaN
    metric promotes only when there is no champion yet.

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
    metrics = dict(client.get_run(run.info.run_id).data.metrics)
    value = float(metrics.get(metric, math.nan))
    current = champion_version(name)
    champion_metrics = None if current is None else dict(client.get_run(current.run_id).data.metrics)
    if champion_metrics is None:
        champion_value = None
    elif champion_value is None:
        champion_value = float(champion_metrics.get(metric, math.nan))
    better, reason = _promotion(metrics, metric, value, higher_is_better, champion_value, force_promote, gate,
                                champion_metrics, None if current is None else str(current.version))
    if better:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promoted", str(better).lower())
    client.set_model_version_tag(name, version, "promotion", reason[:4900])
    client.set_model_version_tag(name, version, metric, repr(value))
    mlflow.set_tag(f"{name}.promoted", str(better).lower())
    mlflow.set_tag(f"{name}.promotion", reason[:4900])
    log.info("%s v%s %s=%.4f champion=%s -> promoted=%s (%s)", name, version, metric, value, champion_value,
             better, reason)
    return Registered(name, version, run.info.run_id, better, metric, value, champion_value, reason)


def _promotion(metrics: dict[str, float], metric: str, value: float, higher_is_better: bool,
               champion_value: float | None, force: bool, gate: Mapping[str, bool] | None,
               champion_metrics: dict[str, float] | None, champion: str | None) -> tuple[bool, str]:
    """(promote?, why) — see log_and_register."""
    import mlflow

    if force:
        return True, "promoted whatever its scores (the champion was fitted on data since erased)"
    if champion_value is None or champion is None:
        # the first version is promoted even without a held-out value (data too small to hold any out):
        # serving a model beats serving nothing
        return True, "the first version: promoted"
    judged = [m for m in (comparison.from_metrics(measure, up, metrics, champion_metrics)
                          for measure, up in (gate or {}).items()) if m is not None]
    if judged:
        # the paired ones are already on the run (the fit logged them); the unpaired ones are logged here
        mlflow.log_metrics({f"{comparison.PAIRED_PREFIX}{m.measure}_improvement{suffix}": v for m in judged
                            if not m.paired for suffix, v in (("", m.value), ("_low", m.low), ("_high", m.high))})
        worse = [m for m in judged if m.worse]
        verdict = (f"not promoted: worse than champion v{champion} beyond the interval" if worse else
                   f"promoted: not worse than champion v{champion} beyond the interval")
        return not worse, f"{verdict}; " + "; ".join(m.sentence() for m in judged)
    # no gated measure could be judged: the held-out metric decides, as a point
    if math.isnan(value):
        # a hold-out too small to score (a few customers): nothing says the new version is as good
        return False, (f"not promoted: this run could not measure {metric} (too little held-out data); "
                       f"champion v{champion} keeps serving")
    if math.isnan(champion_value):
        return True, f"promoted: {metric} {value:.4g}, where champion v{champion} had no measure"
    better = value > champion_value if higher_is_better else value < champion_value
    return better, (f"{'promoted' if better else 'not promoted'}: {metric} {value:.4g} against champion "
                    f"v{champion}'s {champion_value:.4g}")


def champion_version(name: str):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


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
