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
        versions={"personas": "3", "tone": "1", "products": "4", "next_best_action": None},
        stability={"ari": [0.9, 0.7, 0.8], "ari_mean": 0.8, "ari_min": 0.7, "ks": [5, 5, 6], "k_mode": 5,
                   "k_agreement": 2 / 3, "customers": 1500},
        personas=personas, separation={"total_spend": 0.4},
        nba={"logging_conversion_rate": 0.10, "snips_conversion_rate": 0.16, "snips_conversion_rate_low": 0.12,
             "snips_conversion_rate_high": 0.2, "snips_lift_conversion_rate": 1.6,
             "snips_lift_conversion_rate_low": 1.2, "snips_lift_conversion_rate_high": 2.0, "ips_rows": 3000.0,
             "ips_match_rate": 0.3},
        products={"als_ndcg_at_10": 0.3, "popularity_ndcg_at_10": 0.2, "ndcg_ratio": 1.5, "ndcg_ratio_low": 1.2,
                  "ndcg_ratio_high": 1.8, "als_ndcg_at_10_low": 0.25, "als_ndcg_at_10_high": 0.35,
                  "category_price_ndcg_at_10": 0.48, "category_price_ratio": 2.4, "category_price_vs_als": 1.6,
                  "category_price_vs_als_low": 1.3, "category_price_vs_als_high": 1.9, "test_customers": 1200.0},
        tone={"policy_holdout_rmse": 0.41}, uplift=uplift,
        uplift_note=None if with_uplift else "no outcomes after the first recommendations yet",
        promotions={"personas": "promoted: not worse than champion v2 beyond the interval; holdout_loglik ..."})


def test_the_page_says_what_each_figure_means(tmp_path):
    page = render_evaluation_page(_evaluation(with_uplift=False), tmp_path / "e.html").read_text()
    assert "Champions: personas v3, tone v1, products v4, next_best_action: none" in page
    # why each champion serves: the sentence its promotion left, or a version from before they were kept
    assert "<b>personas v3.</b> promoted: not worse than champion v2 beyond the interval; holdout_loglik" in page
    assert "<b>tone v1.</b> promoted before promotion reasons were recorded" in page
    assert "next best action v" not in page
    assert "adjusted Rand index of 0.80 on average (lowest pair 0.70" in page and "chose k = 5, 5, 6" in page
    assert "The personas differ most in spend" in page
    assert "1.60× as often as the logging policy" in page and "lower end is above 1" in page
    assert "1,200 customers who bought in the held-out days, the served lists rank what they bought at 1.50×" in page
    assert "(95% interval 1.20× to 1.80×): better than showing everyone" in page and "(0.250 to 0.350)" in page
    # a champion trained before the served recommender was chosen: ALS
    assert "served: ALS (then persona, popularity)" in page and "not served: category × price ladder" in page
    assert "ranks what they bought at 1.60× ALS's NDCG@10 (95% interval 1.30× to 1.90×): this champion was trained " \
           "before the choice existed and serves ALS" in page
    chosen = _evaluation(with_uplift=False)
    chosen.products = {**chosen.products, "serves_category_price": 1.0, "category_price_ratio_low": 1.9,
                       "category_price_ratio_high": 2.9, "persona_popularity_ndcg_at_10": 0.24,
                       "category_price_over_persona_popularity": 2.0,
                       "category_price_over_persona_popularity_low": 1.6,
                       "category_price_over_persona_popularity_high": 2.5}
    page = render_evaluation_page(chosen, tmp_path / "c.html").read_text()
    assert "served: category × price ladder (then persona, popularity)" in page and "not served: ALS" in page
    assert "the served lists rank what they bought at 2.40× popularity's NDCG@10 (95% interval 1.90× to 2.90×)" in page
    assert "it beats ALS beyond the interval, so training chose it" in page
    assert "the persona's best sellers (then everyone's)" in page
    assert "Against each customer's persona's best sellers, the served lists reach 2.00× their NDCG@10 (95% " \
           "interval 1.60× to 2.50×)" in page
    page = render_evaluation_page(_evaluation(with_uplift=False), tmp_path / "e.html").read_text()
    assert "Not measured yet: no outcomes after the first recommendations yet" in page
    assert "Every logged action of the training window, cross-fitted" not in page  # a model logged without it
    crossfit = _evaluation(with_uplift=False)
    crossfit.nba = {**crossfit.nba, "crossfit_folds": 4.0, "crossfit_ips_rows": 12000.0, "crossfit_ips_match_rate": 0.25,
                    "crossfit_logging_conversion_rate": 0.1, "crossfit_snips_lift_conversion_rate": 1.1,
                    "crossfit_snips_lift_conversion_rate_low": 0.95, "crossfit_snips_lift_conversion_rate_high": 1.3,
                    "crossfit_snips_lift_policy_value": 2.5, "crossfit_snips_lift_policy_value_low": 2.1,
                    "crossfit_snips_lift_policy_value_high": 2.9}
    page = render_evaluation_page(crossfit, tmp_path / "x.html").read_text()
    assert "Judged on 12,000 logged actions, each by a model of the same training that did not see its customer " \
           "(4 folds of customers; it agrees with the logged action on 25% of them), the learned policy would " \
           "convert 1.10× as often as the logging policy (self-normalised IPS): its interval reaches 1 or below" in page
    assert "In value (the BRL the policy maximises) the ratio is 2.50× (interval from 2.10×)." in page
    assert page.index("cross-fitted (4 folds)") < page.index("Judged on 3,000 held-out logged actions")
    no_nba = _evaluation(with_uplift=False)
    no_nba.nba = {}
    assert "No off-policy figures: no next-best-action model is registered." in \
        render_evaluation_page(no_nba, tmp_path / "n.html").read_text()
    with_uplift = render_evaluation_page(_evaluation(with_uplift=True), tmp_path / "u.html").read_text()
    uplift_part = with_uplift[with_uplift.index('id="uplift"'):with_uplift.index('id="promotion"')]
    assert "4,000 treated and 90 held-out customers" in with_uplift and uplift_part.count("<b>") == len(OUTCOMES)


def test_mlflow_gets_finite_figures_with_their_names():
    metrics = _evaluation(with_uplift=True).metrics()
    assert metrics["persona_stability_ari_mean"] == 0.8 and metrics["persona_k_agreement"] == pytest.approx(2 / 3)
    assert metrics["persona_eta2_total_spend"] == 0.4 and metrics["persona_smallest_share"] == 0.4
    assert metrics["nba_snips_lift_conversion_rate_low"] == 1.2 and metrics["tone_policy_holdout_rmse"] == 0.41
    assert metrics["uplift_spend_difference"] == 1.0 and metrics["uplift_holdout_customers"] == 90
    assert metrics["uplift_spend_low"] < 1.0 < metrics["uplift_spend_high"]
    assert not any(k.startswith("uplift") for k in _evaluation(with_uplift=False).metrics())
    # a lakehouse whose personas fell back (too few customers: gold/persona_segments empty) has no persona figures
    fallen_back = _evaluation(with_uplift=False)
    fallen_back.personas, fallen_back.separation = pd.DataFrame(), {}
    assert not any(k.startswith("persona_smallest") or k == "personas" for k in fallen_back.metrics())


def test_the_tone_experiment_compares_matched_and_other_habitual_tone_contacts(spark):
    from atende.jobs.evaluate import tone_experiment
    from atende.models.tone import habitual_tone_contacts

    at = dt.datetime(2026, 3, 10, 12)
    # agent A writes friendly three times, formal once (that one is not habitual); agent B always formal
    interactions = spark.createDataFrame(
        [(f"i{n}", f"c{n % 3}", agent, at, resolved) for n, (agent, resolved) in enumerate(
            [("A", True), ("A", True), ("A", False), ("A", True), ("B", False), ("B", True), ("B", False)])],
        "interaction_id string, customer_key string, agent_id string, started_at timestamp, resolved boolean")
    tones = spark.createDataFrame([("i0", "friendly"), ("i1", "friendly"), ("i2", "friendly"), ("i3", "formal"),
                                   ("i4", "formal"), ("i5", "formal"), ("i6", "formal")],
                                  "interaction_id string, tone string")
    contacts = habitual_tone_contacts(interactions, tones)
    assert sorted(r["interaction_id"] for r in contacts.collect()) == ["i0", "i1", "i2", "i4", "i5", "i6"]
    outcomes = spark.createDataFrame([("i0", 1.0), ("i1", 0.5), ("i4", 0.0), ("i5", 1.0)],
                                     "interaction_id string, outcome double")
    # customers: i0 c0, i1 c1, i2 c2, i4 c1, i5 c2, i6 c0; the recommender says c0 friendly, c1 formal, c2 formal
    recommended = spark.createDataFrame([("c0", "friendly"), ("c1", "formal"), ("c2", "formal")],
                                        "customer_key string, tone string")
    result = tone_experiment(contacts, outcomes, {"atende": recommended})
    resolved, outcome = result["atende"]
    # matched: i0 (c0 friendly, resolved), i4 (c1 formal, not), i5 (c2 formal, resolved); other: i1, i2, i6
    assert (resolved.treated_n, resolved.holdout_n) == (3, 3)
    assert resolved.treated == pytest.approx(200 / 3) and resolved.holdout == pytest.approx(100 / 3)
    assert (outcome.treated_n, outcome.holdout_n, outcome.treated, outcome.holdout) == (3, 1, pytest.approx(2 / 3), 0.5)
    assert outcome.interval is None, "one contact on one side: no interval"


def test_each_window_of_the_tone_experiment_is_judged_by_its_own_recommendations(spark):
    from atende.jobs.evaluate import tone_experiment

    # one customer, a contact in each of two windows, both in the formal tone; the model before window 0
    # recommended friendly, the one before window 1 (which had seen more) formal
    contacts = spark.createDataFrame(
        [("i0", "c0", "formal", True, 0), ("i1", "c0", "formal", False, 1)],
        "interaction_id string, customer_key string, tone string, resolved boolean, _window int")
    outcomes = spark.createDataFrame([], "interaction_id string, outcome double")
    recommended = spark.createDataFrame([("c0", 0, "friendly"), ("c0", 1, "formal")],
                                        "customer_key string, _window int, tone string")
    resolved, _ = tone_experiment(contacts, outcomes, {"atende": recommended}, on=("customer_key", "_window"))["atende"]
    # matched: i1 only (window 1's formal); i0 met window 0's friendly: other. Joined by customer alone, each
    # contact would count twice
    assert (resolved.treated_n, resolved.holdout_n) == (1, 1)
    assert (resolved.treated, resolved.holdout) == (0.0, 100.0)
