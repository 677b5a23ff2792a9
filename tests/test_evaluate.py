"""`atende evaluate` (jobs/evaluate.py): the personas' differences worked out by hand, the page and the
figures MLflow gets. The whole command over a generated lakehouse is in test_e2e."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from atende.jobs.evaluate import Evaluation, persona_outcomes, render_evaluation_page
from atende.jobs.uplift import OUTCOMES, Comparison, Uplift


def test_persona_outcomes_and_the_share_of_variance_between_personas(spark):
    # spend: 10, 10 | 30, 30 -> all of its variance is between the personas (eta² 1);
    # satisfaction: 0.2, 0.8 | 0.2, 0.8 -> none of it (eta² 0)
    features = spark.createDataFrame(
        [("a", 10.0, 0.2), ("b", 10.0, 0.8), ("c", 30.0, 0.2), ("d", 30.0, 0.8), ("e", 99.0, 0.5)],
        "customer_key string, total_spend double, satisfaction_index double")
    segments = spark.createDataFrame([("a", "p1"), ("b", "p1"), ("c", "p2"), ("d", "p2")],
                                     "customer_key string, persona_id string")
    personas = spark.createDataFrame([("p1", "Savers"), ("p2", "Spenders")], "persona_id string, persona_name string")
    stats, separation = persona_outcomes(features, segments, personas)
    assert list(stats["persona_id"]) == ["p1", "p2"] and list(stats["persona_name"]) == ["Savers", "Spenders"]
    assert list(stats["customers"]) == [2, 2] and list(stats["share"]) == [0.5, 0.5]
    assert list(stats["total_spend_mean"]) == [10.0, 30.0]
    assert separation["total_spend"] == pytest.approx(1.0)
    assert separation["satisfaction_index"] == pytest.approx(0.0)
    # the mean's interval: 0.5 ± 1.96 × sqrt(0.18 / 2)
    assert stats.loc[0, "satisfaction_index_high"] - 0.5 == pytest.approx(1.959964 * (0.18 / 2) ** 0.5, rel=1e-5)
    assert "action_response_rate" not in separation, "outcomes the table lacks are left out"


def _evaluation(with_uplift: bool) -> Evaluation:
    personas = pd.DataFrame({"persona_id": ["p1", "p2"], "persona_name": ["Savers", "Spenders"],
                             "customers": [60, 40], "share": [0.6, 0.4],
                             "total_spend_mean": [10.0, 30.0], "total_spend_low": [8.0, 27.0],
                             "total_spend_high": [12.0, 33.0]})
    uplift = Uplift(dt.date(2026, 3, 8), dt.date(2026, 3, 14), 0.02, 4000, 90,
                    tuple(Comparison(o, 4000, 90, 10.0, 9.0, 0.2, 1.0) for o in OUTCOMES)) if with_uplift else None
    return Evaluation(
        versions={"personas": "3", "tone": "1", "products": None, "next_best_action": "2"},
        stability={"ari": [0.9, 0.7, 0.8], "ari_mean": 0.8, "ari_min": 0.7, "ks": [5, 5, 6], "k_mode": 5,
                   "k_agreement": 2 / 3, "customers": 1500},
        personas=personas, separation={"total_spend": 0.4},
        nba={"logging_conversion_rate": 0.10, "snips_conversion_rate": 0.16, "snips_conversion_rate_low": 0.12,
             "snips_conversion_rate_high": 0.2, "snips_lift_conversion_rate": 1.6,
             "snips_lift_conversion_rate_low": 1.2, "snips_lift_conversion_rate_high": 2.0, "ips_rows": 3000.0,
             "ips_match_rate": 0.3},
        tone={"policy_holdout_rmse": 0.41}, uplift=uplift,
        uplift_note=None if with_uplift else "no outcomes after the first recommendations yet")


def test_the_page_says_what_each_figure_means(tmp_path):
    page = render_evaluation_page(_evaluation(with_uplift=False), tmp_path / "e.html").read_text()
    assert "Champions: personas v3, tone v1, products: none, next_best_action v2" in page
    assert "adjusted Rand index of 0.80 on average (lowest pair 0.70" in page and "chose k = 5, 5, 6" in page
    assert "The personas differ most in spend" in page
    assert "1.60× as often as the logging policy" in page and "lower end is above 1" in page
    assert "No time-split figures: no product model is registered." in page
    assert "Not measured yet: no outcomes after the first recommendations yet" in page
    with_uplift = render_evaluation_page(_evaluation(with_uplift=True), tmp_path / "u.html").read_text()
    assert "4,000 treated and 90 held-out customers" in with_uplift and with_uplift.count("<b>") == len(OUTCOMES)


def test_mlflow_gets_finite_figures_with_their_names():
    metrics = _evaluation(with_uplift=True).metrics()
    assert metrics["persona_stability_ari_mean"] == 0.8 and metrics["persona_k_agreement"] == pytest.approx(2 / 3)
    assert metrics["persona_eta2_total_spend"] == 0.4 and metrics["persona_smallest_share"] == 0.4
    assert metrics["nba_snips_lift_conversion_rate_low"] == 1.2 and metrics["tone_policy_holdout_rmse"] == 0.41
    assert metrics["uplift_spend_difference"] == 1.0 and metrics["uplift_holdout_customers"] == 90
    assert metrics["uplift_spend_low"] < 1.0 < metrics["uplift_spend_high"]
    assert not any(k.startswith("uplift") for k in _evaluation(with_uplift=False).metrics())
