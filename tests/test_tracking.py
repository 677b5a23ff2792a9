"""MLflow registry: the champion alias moves only to a version that is not worse than it (beyond the interval
of the measures gated on, else on the held-out metric)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, settings):
    import mlflow

    from atende.jobs import tracking

    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    tracking.configure(settings, root / "lake")  # one store for the module: creating one takes seconds
    yield root
    mlflow.set_tracking_uri(previous)


@pytest.fixture()
def store(store_root, request):
    """A fresh model directory; each test registers under its own model name."""
    model_dir = store_root / request.node.name
    model_dir.mkdir()
    return model_dir


def _train(model_dir, value: float, *, version_note: str, higher_is_better: bool = True,
           champion_value: float | None = None, metrics: dict[str, float] | None = None,
           gate: dict[str, bool] | None = None):
    import mlflow

    from atende.jobs import tracking

    (model_dir / "weights.json").write_text(json.dumps({"note": version_note}))
    with mlflow.start_run():
        tracking.log_metrics({"ndcg@10": value, **(metrics or {})})
        return tracking.log_and_register(_name(model_dir), model_dir, metric="ndcg_at_10",
                                         higher_is_better=higher_is_better, champion_value=champion_value,
                                         gate=gate)


def _name(model_dir) -> str:
    return "atende-" + model_dir.name.replace("_", "-")[:60]


@pytest.mark.slow
def test_worse_model_is_not_promoted(store):
    from atende.jobs import tracking

    first = _train(store, 0.30, version_note="first")
    assert first.promoted and first.champion_value is None
    worse = _train(store, 0.20, version_note="worse")
    assert not worse.promoted and worse.champion_value == pytest.approx(0.30)
    directory, version = tracking.load_champion_dir(_name(store))
    assert version == first.version
    assert json.loads((__import__("pathlib").Path(directory) / "weights.json").read_text())["note"] == "first"
    better = _train(store, 0.40, version_note="better")
    assert better.promoted
    directory, version = tracking.load_champion_dir(_name(store))
    assert version == better.version
    assert json.loads((__import__("pathlib").Path(directory) / "weights.json").read_text())["note"] == "better"


@pytest.mark.slow
@pytest.mark.slow
def test_champion_measured_on_the_same_held_out_data_decides(store):
    # the champion logged 0.30 on its own data; re-measured on this run's held-out rows it scores 0.10,
    # so a new version at 0.20 beats it there; one at 0.05 does not
    first = _train(store, 0.30, version_note="first")
    assert first.promoted
    beaten = _train(store, 0.20, version_note="second", champion_value=0.10)
    assert beaten.promoted and beaten.champion_value == pytest.approx(0.10)
    kept = _train(store, 0.05, version_note="third", champion_value=0.15)
    assert not kept.promoted


def test_lower_is_better_metric_and_nan_never_promotes(store):
    first = _train(store, 5.0, version_note="a", higher_is_better=False)
    assert first.promoted
    assert _train(store, 4.0, version_note="b", higher_is_better=False).promoted
    unmeasured = _train(store, float("nan"), version_note="c", higher_is_better=False)
    assert not unmeasured.promoted
    assert unmeasured.reason == ("not promoted: this run could not measure ndcg_at_10 (too little held-out data); "
                                 f"champion v{int(first.version) + 1} keeps serving")


@pytest.mark.slow
def test_first_version_is_promoted_even_without_a_held_out_value(store):
    first = _train(store, float("nan"), version_note="tiny data")
    assert first.promoted
    measured = _train(store, 0.1, version_note="measured")
    assert measured.promoted  # a measured value beats an unmeasured champion
    assert measured.reason == f"promoted: ndcg_at_10 0.1, where champion v{first.version} had no measure"


def test_no_champion_is_a_clear_error(store):
    from atende.jobs import tracking

    with pytest.raises(tracking.NoChampion, match="train it first"):
        tracking.load_champion_dir("never-trained")


@pytest.mark.slow
def test_paired_measures_decide_beyond_their_interval_not_the_point_metric(store):
    from atende.models.comparison import paired_metrics

    gate = {"uplift": True}
    first = _train(store, 0.30, version_note="first", gate=gate)
    assert first.promoted and first.reason == "the first version: promoted"
    # a higher held-out metric, but worse than the champion on the same rows beyond the paired interval
    worse = _train(store, 0.40, version_note="worse", gate=gate, metrics=paired_metrics("uplift", -0.05, -0.08, -0.02))
    assert not worse.promoted
    assert worse.reason.startswith(f"not promoted: worse than champion v{first.version} beyond the interval")
    assert "uplift worse beyond its interval: -0.05 (-0.08 to -0.02; paired" in worse.reason
    # a lower held-out metric, and not worse beyond the interval: the newer model serves
    tied = _train(store, 0.20, version_note="tied", gate=gate, metrics=paired_metrics("uplift", -0.01, -0.04, 0.02))
    assert tied.promoted and tied.reason.startswith(f"promoted: not worse than champion v{first.version}")
    from mlflow import MlflowClient
    tags = MlflowClient().get_model_version(_name(store), worse.version).tags
    assert tags["promoted"] == "false" and tags["promotion"] == worse.reason


@pytest.mark.slow
def test_unpaired_measures_use_the_challenger_s_interval_against_the_champion_s_logged_value(store):
    import mlflow
    from mlflow import MlflowClient

    gate = {"ratio": True, "rmse": False}
    first = _train(store, 0.3, version_note="first", gate=gate,
                   metrics={"ratio": 1.5, "ratio_low": 1.3, "ratio_high": 1.7, "rmse": 0.30})
    assert first.promoted
    # ratio 1.4 (1.2-1.6) against the champion's 1.5: not worse beyond; rmse has no interval, not judged
    second = _train(store, 0.1, version_note="second", gate=gate,
                    metrics={"ratio": 1.4, "ratio_low": 1.2, "ratio_high": 1.6, "rmse": 0.30})
    assert second.promoted
    logged = MlflowClient().get_run(second.run_id).data.metrics
    assert logged["challenge_ratio_improvement"] == pytest.approx(-0.1)
    assert logged["challenge_ratio_improvement_low"] == pytest.approx(-0.3)
    assert logged["challenge_ratio_improvement_high"] == pytest.approx(0.1)
    # the error, lower is better, worse beyond its interval: 0.40 (0.36-0.44) against the champion's 0.30
    third = _train(store, 0.9, version_note="third", gate=gate,
                   metrics={"ratio": 1.45, "ratio_low": 1.3, "ratio_high": 1.6,
                            "rmse": 0.40, "rmse_low": 0.36, "rmse_high": 0.44})
    assert not third.promoted and "rmse worse beyond its interval" in third.reason
    assert mlflow.active_run() is None
