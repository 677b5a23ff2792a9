"""Next best action: eligibility rules, ranking with reasons, response models, save/load."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math

import numpy as np
import pytest
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from atende.conf.settings import ActionSpec, NbaSettings
from atende.models.nba import (
    NEXT_BEST_ACTIONS,
    NbaModel,
    ResponseModel,
    build_response_training_set,
    eligible_actions,
    evaluate_response_models,
    load_nba_model,
    rules_only_next_best_action,
    save_nba_model,
    score_next_best_action,
    train_response_models,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 8, tzinfo=UTC)
FEATURE_COLS = ["interactions_count", "total_spend", "satisfaction_index"]

FEATURES = T.StructType([
    T.StructField("customer_key", T.StringType(), False),
    T.StructField("marketing_consent", T.BooleanType()),
    T.StructField("open_issue", T.BooleanType()),
    T.StructField("last_topic", T.StringType()),
    T.StructField("actions_recent", T.LongType()),
    T.StructField("has_whatsapp", T.BooleanType()),
    T.StructField("interactions_count", T.LongType()),
    T.StructField("total_spend", T.DoubleType()),
    T.StructField("satisfaction_index", T.DoubleType()),
])

ACTIONS = T.StructType([
    T.StructField("action_id", T.StringType(), False),
    T.StructField("sent_at", T.TimestampType(), False),
    T.StructField("action", T.StringType(), False),
    T.StructField("channel", T.StringType()),
    T.StructField("customer_key", T.StringType()),
    T.StructField("propensity", T.DoubleType()),
    T.StructField("responded", T.BooleanType()),
    T.StructField("converted", T.BooleanType()),
    T.StructField("revenue", T.DoubleType()),
])

# conversion rates of a hand-made model; priority = rate x value x weight under the default catalogue:
# product_offer 60.0, retention_call 20.0, whatsapp_followup 9.0, escalate_to_human 7.2, kb_article 2.1,
# satisfaction_survey 1.5, no_action 0.0
RATES = {"whatsapp_followup": 0.3, "product_offer": 0.3, "satisfaction_survey": 0.5, "kb_article": 0.2,
         "escalate_to_human": 0.1, "retention_call": 0.05, "no_action": 0.02}


def fixed_model(rates: dict[str, float]) -> NbaModel:
    return NbaModel(
        feature_cols=tuple(FEATURE_COLS), fill=(0.0,) * 3, center=(0.0,) * 3, scale=(1.0,) * 3,
        responses={a: ResponseModel("prior", math.log(p / (1 - p)), None, 100, round(100 * p)) for a, p in rates.items()},
        label="converted", trained_at="2026-03-08T00:00:00+00:00",
    )


@pytest.fixture(scope="module")
def nba(settings):
    return settings.models.nba


@pytest.fixture(scope="module")
def customers(spark):
    #        key   consent open   topic      recent whatsapp  interactions spend satisfaction
    return spark.createDataFrame([
        ("C1", True, False, "billing", 0, True, 2, 100.0, 0.8),      # everything allowed
        ("C2", False, False, "billing", 1, True, 3, 50.0, 0.5),      # no consent
        ("C3", True, False, None, 3, True, 1, 10.0, 0.7),            # fatigue cap reached
        ("C4", True, True, "complaint", 2, True, 6, 300.0, 0.2),     # open issue
        ("C5", None, None, None, None, None, None, None, None),      # nothing known
    ], FEATURES)


def test_eligibility_rules_are_named_columns_with_their_text(customers, nba):
    got = {(r.customer_key, r.action): r for r in eligible_actions(customers, nba).collect()}

    assert len(got) == 5 * len(nba.actions)
    # no marketing without consent (a missing consent is no consent)
    for key in ("C2", "C5"):
        for action in ("product_offer", "retention_call"):
            row = got[key, action]
            assert (row.eligible, row.blocked_by_consent, row.rule) == (False, True, "no marketing without consent")
    assert got["C1", "product_offer"].eligible and got["C1", "product_offer"].rule is None
    # the fatigue cap stops every contact, service or marketing; no_action stays
    assert {a for (k, a), r in got.items() if k == "C3" and r.eligible} == {"no_action"}
    assert got["C3", "kb_article"].rule == "fatigue cap: 3 actions in 7 days"
    assert got["C3", "kb_article"].blocked_by_fatigue
    # WhatsApp needs a known WhatsApp contact
    assert (got["C5", "whatsapp_followup"].eligible, got["C5", "whatsapp_followup"].rule) == (False, "no WhatsApp contact known")
    # escalation to a person only while an issue is open
    assert (got["C5", "escalate_to_human"].eligible, got["C5", "escalate_to_human"].rule) == (
        False, "only while an issue is open")
    assert got["C4", "escalate_to_human"].eligible and got["C5", "kb_article"].eligible
    # open issue: service actions are marked to rank first; marketing stays eligible behind them
    assert got["C4", "kb_article"].service_first and not got["C4", "product_offer"].service_first
    assert got["C4", "product_offer"].eligible
    assert all(r.eligible for (k, a), r in got.items() if a == "no_action")


def test_next_best_action_follows_rules_and_explains_them(spark, customers, nba):
    got = score_next_best_action(customers, fixed_model(RATES), nba, FEATURE_COLS)
    assert got.schema.simpleString() == NEXT_BEST_ACTIONS.simpleString()
    rows = {r.customer_key: r for r in got.collect()}

    assert len(rows) == 5
    best = {k: (r.next_best_action, round(r.nba_score, 6)) for k, r in rows.items()}
    assert best == {
        "C1": ("product_offer", 60.0),
        "C2": ("whatsapp_followup", 9.0),      # the offer scores higher but needs consent
        "C3": ("no_action", 0.0),
        "C4": ("whatsapp_followup", 9.0),      # open issue: service first although the offer scores 60
        "C5": ("kb_article", 2.1),             # no consent, no WhatsApp, no open issue to escalate
    }
    for r in rows.values():
        assert r.reasons and all(r.reasons)
    assert rows["C1"].reasons[0] == "highest priority among 6 eligible actions"
    assert rows["C1"].reasons[1] == "product_offer: propensity 0.300 × value 250.00 × weight 0.80 = 60.00"
    assert rows["C3"].reasons[0] == "only no_action eligible: fatigue cap: 3 actions in 7 days"
    assert "kb_article excluded: fatigue cap: 3 actions in 7 days" in rows["C3"].reasons
    assert rows["C4"].reasons[0] == (
        "open issue: service before offers (whatsapp_followup ranks first although product_offer scores 60.00)"
    )
    assert "product_offer excluded: no marketing without consent" in rows["C2"].reasons
    assert "retention_call excluded: no marketing without consent" in rows["C2"].reasons
    assert "whatsapp_followup excluded: no WhatsApp contact known" in rows["C5"].reasons
    assert "escalate_to_human excluded: only while an issue is open" in rows["C1"].reasons
    assert "whatsapp_followup propensity is its base rate (100 logged actions)" in rows["C2"].reasons


def test_rules_come_from_config(spark, customers, nba):
    """models.nba.channel_flags and issue_only_actions decide what the rules exclude."""
    loose = nba.model_copy(update={"channel_flags": {}, "issue_only_actions": ()})
    got = score_next_best_action(customers, fixed_model(RATES), loose, FEATURE_COLS, top_features=0)
    reasons = {r.customer_key: r.reasons for r in got.collect()}
    assert "whatsapp_followup excluded: no WhatsApp contact known" not in reasons["C5"]
    assert "escalate_to_human excluded: only while an issue is open" not in reasons["C1"]
    assert "escalate_to_human excluded: only while an issue is open" in score_next_best_action(
        customers, fixed_model(RATES), nba, FEATURE_COLS
    ).where("customer_key = 'C1'").first().reasons
    with pytest.raises(ValueError, match="issue_only_actions names actions not in the catalogue: fly"):
        NbaSettings(issue_only_actions=("fly",))


def test_ties_break_on_action_name(spark, customers):
    nba = NbaSettings(actions={
        "z_call": ActionSpec(kind="service", value=10.0),
        "a_mail": ActionSpec(kind="service", value=10.0),
        "no_action": ActionSpec(kind="none", value=0.0),
    })
    model = fixed_model({"z_call": 0.2, "a_mail": 0.2, "no_action": 0.1})

    got = score_next_best_action(customers.where("customer_key IN ('C1', 'C4')"), model, nba, FEATURE_COLS)

    assert {r.customer_key: r.next_best_action for r in got.collect()} == {"C1": "a_mail", "C4": "a_mail"}


def test_catalogue_needs_a_no_action(customers):
    nba = NbaSettings(actions={"offer": ActionSpec(kind="marketing", value=1.0)})
    with pytest.raises(ValueError, match="kind 'none'"):
        eligible_actions(customers, nba)


def test_training_set_takes_the_window_and_known_customers(spark, customers):
    actions = spark.createDataFrame([
        ("a1", T0 + dt.timedelta(days=1), "kb_article", "email", "C1", 0.1, True, False, None),
        ("a2", T0 - dt.timedelta(hours=1), "kb_article", "email", "C1", 0.1, True, False, None),   # before start
        ("a3", T0 + dt.timedelta(days=7), "kb_article", "email", "C1", 0.1, True, False, None),    # at end
        ("a4", T0 + dt.timedelta(days=2), "product_offer", "push", None, 0.3, False, False, None),  # no customer
        ("a5", T0 + dt.timedelta(days=2), "product_offer", "push", "C9", 0.3, True, True, 99.0),   # no features
        ("a6", T0 + dt.timedelta(days=3), "product_offer", "push", "C4", None, True, True, 120.0),
    ], ACTIONS)

    got = build_response_training_set(actions, customers, T0, T0 + dt.timedelta(days=7))

    assert sorted((r.action_id, r.customer_key, r.interactions_count) for r in got.collect()) == [
        ("a1", "C1", 2), ("a6", "C4", 6),
    ]
    assert set(FEATURE_COLS) <= set(got.columns)


def synthetic_log(spark, n_customers: int = 600, per_customer: int = 3, seed: int = 3):
    """A logging policy choosing uniformly among three actions; WhatsApp follow-ups convert far more,
    and more so for customers with many interactions; offers rarely convert."""
    rng = np.random.default_rng(seed)
    interactions = rng.poisson(3, n_customers)
    spend = rng.exponential(200, n_customers).round(2)
    satisfaction = rng.uniform(0, 1, n_customers).round(3)
    consent = rng.random(n_customers) < 0.7
    whatsapp = rng.random(n_customers) < 0.8
    feats, logs = [], []
    for i in range(n_customers):
        key = f"K{i:04d}"
        feats.append((key, bool(consent[i]), bool(rng.random() < 0.2), "billing", int(rng.integers(0, 3)),
                      bool(whatsapp[i]), int(interactions[i]), float(spend[i]), float(satisfaction[i])))
        menu = ["whatsapp_followup", "product_offer", "kb_article"] if whatsapp[i] else ["product_offer", "kb_article"]
        for j in range(per_customer):
            action = menu[int(rng.integers(len(menu)))]
            if action == "whatsapp_followup":
                p = 1 / (1 + math.exp(-(-0.6 + 0.9 * (interactions[i] - 3))))
            else:
                p = {"product_offer": 0.02, "kb_article": 0.1}[action]
            converted = bool(rng.random() < p)
            logs.append((f"A{i:04d}-{j}", T0 + dt.timedelta(hours=1 + j), action, "email", key,
                         1 / len(menu) if rng.random() < 0.9 else None, converted, converted,
                         150.0 if converted and action == "product_offer" else (0.0 if converted else None)))
    return spark.createDataFrame(feats, FEATURES), spark.createDataFrame(logs, ACTIONS)


@pytest.fixture(scope="module")
def trained(spark, nba):
    features, actions = synthetic_log(spark)
    training = build_response_training_set(actions, features, T0, T0 + dt.timedelta(days=7)).cache()
    model, metrics = train_response_models(training, nba, FEATURE_COLS, seed=7)
    yield features, model, metrics
    training.unpersist()


def test_training_returns_metrics_and_finds_the_better_action(trained):
    _, model, metrics = trained

    assert model.label == "converted"
    assert {r.kind for r in model.responses.values()} == {"logistic"}
    assert 0 < metrics["regularization_c"] <= 1.0
    assert set(model.responses) == {"whatsapp_followup", "product_offer", "kb_article"}
    assert metrics["positive_rate_train_whatsapp_followup"] > 3 * metrics["positive_rate_train_product_offer"]
    assert metrics["auc_whatsapp_followup"] > 0.75
    assert 0.5 < metrics["auc_overall"] <= 1.0
    assert metrics["rows_holdout"] > 200 and metrics["rows_train"] > 900
    # the learned policy sends the follow-up where it pays: worth more than the uniform logging policy
    assert 0 < metrics["ips_match_rate"] < 1
    assert metrics["ips_policy_value"] > metrics["logging_policy_value"]
    # doubly robust and self-normalised estimates, each inside its bootstrap interval
    for name in ("snips_conversion_rate", "dr_conversion_rate", "dr_policy_value", "logging_conversion_rate"):
        assert metrics[f"{name}_low"] <= metrics[name] <= metrics[f"{name}_high"], name
    assert metrics["dr_conversion_rate"] > metrics["logging_conversion_rate"]
    assert metrics["ope_rows_without_propensity"] > 0  # the log leaves a tenth of them out
    assert metrics["observed_revenue_per_conversion_product_offer"] == 150.0
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_off_policy_estimates_are_cross_fitted_over_every_logged_action(trained):
    _, _, metrics = trained

    # every logged action of the window is judged once, not only the held-out quarter
    assert metrics["crossfit_folds"] == 4.0
    total = metrics["rows_train"] + metrics["rows_holdout"]
    assert metrics["crossfit_rows"] == total
    assert metrics["crossfit_ips_rows"] + metrics["crossfit_ope_rows_without_propensity"] == total
    assert metrics["crossfit_ips_rows"] > 3 * metrics["ips_rows"]
    # four times the rows: a narrower interval, and the same finding (the follow-up where it pays)

    def width(prefix: str) -> float:
        return metrics[f"{prefix}dr_lift_conversion_rate_high"] - metrics[f"{prefix}dr_lift_conversion_rate_low"]

    assert width("crossfit_") < width("")
    assert metrics["crossfit_dr_conversion_rate"] > metrics["crossfit_logging_conversion_rate"]
    assert metrics["crossfit_snips_lift_conversion_rate_low"] <= metrics["crossfit_snips_lift_conversion_rate"]


def test_no_cross_fitted_policy_is_judged_on_its_own_training_customers(spark, nba, monkeypatch):
    import atende.models.nba as nba_module

    features, actions = synthetic_log(spark, n_customers=200)
    training = build_response_training_set(actions, features, T0, T0 + dt.timedelta(days=7))
    real_bounded, real_model, real_scored = nba_module._bounded, nba_module.NbaModel, nba_module._scored_actions
    last_sample: list[set[str]] = []
    trained_on: dict[int, set[str]] = {}
    judged: list[tuple[set[str], set[str]]] = []

    def bounded(*args, **kwargs):
        sample = real_bounded(*args, **kwargs)
        last_sample[:] = [set(sample["customer_key"])]
        return sample

    def model(*args, **kwargs):
        made = real_model(*args, **kwargs)
        trained_on[id(made)] = last_sample[0]
        return made

    def scored(rows, fitted, *args, **kwargs):
        judged.append((trained_on[id(fitted)], {r.customer_key for r in rows.select("customer_key").collect()}))
        return real_scored(rows, fitted, *args, **kwargs)

    monkeypatch.setattr(nba_module, "_bounded", bounded)
    monkeypatch.setattr(nba_module, "NbaModel", model)
    monkeypatch.setattr(nba_module, "_scored_actions", scored)
    _, metrics = train_response_models(training, nba, FEATURE_COLS, seed=7, crossfit_folds=4)

    # the hold-out once, then the four folds: each judged by a model that never saw its customers
    assert len(judged) == 5
    assert all(seen and scored_keys and not seen & scored_keys for seen, scored_keys in judged)
    assert set().union(*(keys for _, keys in judged[1:])) == {r.customer_key for r in training.collect()}
    _, without = train_response_models(training, nba, FEATURE_COLS, seed=7, crossfit_folds=0)
    assert not any(k.startswith("crossfit_") for k in without)
    assert {k: v for k, v in metrics.items() if not k.startswith("crossfit_")} == without


def test_the_champion_is_judged_paired_on_the_same_held_out_actions(spark, trained, nba):
    _, model, _ = trained
    features, actions = synthetic_log(spark, n_customers=400, seed=5)  # actions neither model was trained on
    rows = build_response_training_set(actions, features, T0, T0 + dt.timedelta(days=7)).cache()

    same = evaluate_response_models(model, rows, nba, champion=model)
    assert same["challenge_agreement"] == 1.0 and same["challenge_rows"] == same["ips_rows"]
    for name in ("conversion_rate", "policy_value"):
        assert same[f"challenge_snips_{name}_challenger"] == same[f"challenge_snips_{name}_champion"]
        assert same[f"challenge_snips_{name}_improvement"] == 0.0
        assert same[f"challenge_snips_{name}_improvement_low"] == same[f"challenge_snips_{name}_improvement_high"] == 0

    # a champion that offers products whenever it may: the learned policy's follow-ups convert far more,
    # beyond the paired interval; and the other way round, the offers are worse beyond it
    offers = fixed_model({"product_offer": 0.6, "kb_article": 0.01, "whatsapp_followup": 0.01})
    got = evaluate_response_models(model, rows, nba, champion=offers)
    assert got["challenge_snips_conversion_rate_improvement_low"] > 0
    assert got["challenge_snips_conversion_rate_challenger"] == pytest.approx(got["snips_conversion_rate"])
    back = evaluate_response_models(offers, rows, nba, champion=model)
    assert back["challenge_snips_conversion_rate_improvement_high"] < 0
    # the figures of the new model itself are the same with or without a champion beside it
    alone = evaluate_response_models(model, rows, nba)
    assert {k: v for k, v in got.items() if not k.startswith("challenge_")} == alone

    # a champion whose features are no longer built cannot be judged here: said, and left out
    stale = dataclasses.replace(offers, feature_cols=("interactions_count", "total_spend", "retired_feature"))
    unscored = evaluate_response_models(model, rows, nba, champion=stale)
    assert unscored["challenge_unscored"] == 1.0
    assert not any(k.startswith("challenge_snips") for k in unscored)
    rows.unpersist()


def test_reasons_name_the_strongest_features(spark, trained, nba):
    features, model, _ = trained
    chatty = features.where("has_whatsapp AND NOT open_issue AND actions_recent < 3").orderBy(
        "interactions_count", ascending=False).limit(1)

    (row,) = score_next_best_action(chatty, model, nba, FEATURE_COLS).collect()

    assert row.next_best_action == "whatsapp_followup"
    assert row.reasons[0].startswith("highest priority among")
    assert row.reasons[2].startswith("interactions_count high (+")
    # an action the model never saw is excluded by name
    assert "retention_call excluded: no response model for retention_call" in row.reasons or \
        "retention_call excluded: no marketing without consent" in row.reasons


def test_save_load_round_trip(spark, trained, nba, tmp_path):
    features, model, _ = trained

    save_nba_model(model, tmp_path / "nba")
    loaded = load_nba_model(tmp_path / "nba")

    assert sorted(p.name for p in (tmp_path / "nba").iterdir()) == ["metadata.json", "model.json"]
    for name in ("metadata.json", "model.json"):
        text = (tmp_path / "nba" / name).read_text()
        assert str(tmp_path) not in text
        json.loads(text)
    assert loaded == model and loaded.version == model.version
    sample = features.limit(40)
    assertDataFrameEqual(score_next_best_action(sample, loaded, nba, FEATURE_COLS),
                         score_next_best_action(sample, model, nba, FEATURE_COLS))


def test_rules_only_fallback_ranks_by_value_and_weight_and_says_why(customers, nba):
    got = rules_only_next_best_action(customers, nba, "no logged action reached a customer")
    assert got.schema.simpleString() == NEXT_BEST_ACTIONS.simpleString()
    rows = {r.customer_key: r for r in got.collect()}
    # value x business weight: retention_call 400, product_offer 200, escalate_to_human 72, whatsapp_followup 30,
    # kb_article 10.5, satisfaction_survey 3, no_action 0 -- after the same eligibility rules as the model
    best = {k: (r.next_best_action, round(r.nba_score, 6)) for k, r in rows.items()}
    assert best == {
        "C1": ("retention_call", 400.0),
        "C2": ("whatsapp_followup", 30.0),     # no consent: no marketing
        "C3": ("no_action", 0.0),              # fatigue cap
        "C4": ("escalate_to_human", 72.0),     # open issue: service first
        "C5": ("kb_article", 10.5),
    }
    for r in rows.values():
        assert r.reasons[0] == ("fallback: eligibility rules and business weight only, because "
                                "no logged action reached a customer")
    assert rows["C1"].reasons[1:3] == ["highest value × weight", "retention_call: value 400.00 × weight 1.00 = 400.00"]
    assert rows["C4"].reasons[1] == "open issue: service before offers"
    assert "product_offer excluded: no marketing without consent" in rows["C2"].reasons
