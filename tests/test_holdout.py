"""The global holdout (models/holdout.py) and the baseline its customers get in gold/recommendations."""
from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from pyspark.sql import functions as F

from atende.jobs import modeling
from atende.lakehouse.tables import Lakehouse
from atende.models.holdout import HOLDOUT_VERSION, holdout_flag, in_holdout, threshold
from atende.pipelines.schemas_gold import RECOMMENDATIONS

KEYS = [f"c-{i:06d}" for i in range(4000)]


def test_the_rule_is_the_documented_hash():
    # docs/CONTRACTS.md: bucket = the first 15 hex digits of SHA-256("<salt>:<customer_key>")
    digest = hashlib.sha256(b"atende-holdout-1:c-000042").hexdigest()
    bucket = int(digest[:15], 16)
    assert in_holdout("c-000042", bucket / 16 ** 15 + 1e-9, "atende-holdout-1")
    assert not in_holdout("c-000042", bucket / 16 ** 15 - 1e-9, "atende-holdout-1")
    assert threshold(0.0) == 0 and threshold(1.0) == 16 ** 15
    with pytest.raises(ValueError, match="between 0 and 1"):
        threshold(1.5)


def test_spark_and_python_agree_and_the_group_is_stable(spark):
    frame = spark.createDataFrame([(k,) for k in KEYS] + [(None,)], "customer_key string")
    for share, salt in ((0.02, "atende-holdout-1"), (0.3, "atende-holdout-1"), (0.3, "another-salt")):
        flagged = {r["customer_key"]: r["h"] for r in frame.select(
            "customer_key", holdout_flag("customer_key", share, salt).alias("h")).collect()}
        assert flagged.pop(None) is False, "a null key is never held out"
        assert flagged == {k: in_holdout(k, share, salt) for k in KEYS}, (share, salt)
        held = sum(flagged.values())
        # binomial: within 4 standard deviations of share x n
        sd = (len(KEYS) * share * (1 - share)) ** 0.5
        assert abs(held - share * len(KEYS)) < 4 * sd, (share, held)
    small = {k for k in KEYS if in_holdout(k, 0.02, "atende-holdout-1")}
    large = {k for k in KEYS if in_holdout(k, 0.3, "atende-holdout-1")}
    other = {k for k in KEYS if in_holdout(k, 0.3, "another-salt")}
    assert small < large, "a larger share keeps everyone held out before"
    assert len(large & other) < 0.5 * len(large), "a new salt draws a new group"
    assert frame.select(holdout_flag("customer_key", 0.0, "s").alias("h")).where("h").count() == 0


def _context(spark, settings, tmp_path, share: float):
    models = settings.models.model_copy(update={"holdout": settings.models.holdout.model_copy(update={"share": share})})
    settings = settings.model_copy(update={"models": models})
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage)
    return modeling.ModelContext(spark, settings, lake, "run-1", dt.datetime(2026, 3, 15, 12), progress=lambda m: None)


def _parts(spark, keys, held):
    product = RECOMMENDATIONS["products"].dataType.simpleString()
    rows = [(k, "friendly", 0.7, "model says friendly", [("p1", 0.9, 1)], None, "product_offer", 4.2,
             ["rule: highest propensity x value"], k in held, [("p9", 5.0, 1)] if k in held else None,
             None) for k in keys]
    return spark.createDataFrame(rows, (
        f"customer_key string, tone string, tone_confidence double, tone_reason string, products {product}, "
        "offer_reason array<string>, next_best_action string, nba_score double, reasons array<string>, "
        f"holdout boolean, _baseline_products {product}, _baseline_offer_reason array<string>"))


def test_held_out_customers_get_the_baseline_and_say_so(spark, settings, tmp_path):
    ctx = _context(spark, settings, tmp_path, share=0.5)
    as_of = dt.datetime(2026, 3, 15, 3, tzinfo=dt.timezone.utc)
    versions = {"personas": "3", "tone": "2", "products": "fallback", "next_best_action": "5"}
    rows = modeling._recommendation_rows(ctx, _parts(spark, ["a", "b"], held={"b"}), versions,
                                         ["products: fallback: popularity"], as_of)
    assert [f.name for f in rows.schema.fields] == [f.name for f in RECOMMENDATIONS.fields]
    got = {r["customer_key"]: r.asDict() for r in rows.collect()}
    treated, held = got["a"], got["b"]
    assert (treated["holdout"], treated["tone"], treated["next_best_action"], treated["nba_score"]) == \
        (False, "friendly", "product_offer", 4.2)
    assert [p["product_id"] for p in treated["products"]] == ["p1"]
    assert treated["reasons"] == ["tone: model says friendly", "rule: highest propensity x value",
                                  "products: fallback: popularity"]
    assert treated["model_versions"] == versions
    assert treated["as_of"].replace(tzinfo=dt.timezone.utc) == as_of
    cfg = ctx.settings.models
    baseline = cfg.nba.actions[cfg.holdout.baseline_action]
    assert held["holdout"] is True
    assert (held["tone"], held["tone_confidence"]) == (cfg.tone.fallback_tone, 0.0)
    assert (held["next_best_action"], held["nba_score"]) == ("no_action", baseline.value * baseline.business_weight)
    assert [p["product_id"] for p in held["products"]] == ["p9"], "everyone's best sellers, not the model's"
    assert held["reasons"][0].startswith("tone: holdout: default tone")
    assert held["reasons"][1].startswith("holdout: no_action: this customer is in the global control group (50.0% of customers")
    assert held["reasons"][-1] == "products: holdout: everyone's best sellers"
    assert held["model_versions"] == {"personas": "3", "tone": HOLDOUT_VERSION, "products": HOLDOUT_VERSION,
                                      "next_best_action": HOLDOUT_VERSION}


def test_without_a_holdout_every_customer_gets_the_recommendations(spark, settings, tmp_path):
    ctx = _context(spark, settings, tmp_path, share=0.0)
    parts = _parts(spark, ["a", "b"], held=set()).drop("_baseline_products", "_baseline_offer_reason")
    rows = modeling._recommendation_rows(ctx, parts, {"tone": "2"}, [], dt.datetime(2026, 3, 15, 3))
    assert rows.where(F.col("holdout") | (F.col("tone") != "friendly")).count() == 0
    assert rows.where(F.size("reasons") != 2).count() == 0


def test_a_holdout_needs_a_baseline_action_in_the_catalogue(settings):
    from atende.conf.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="holdout.baseline_action 'nothing' is not in the action catalogue"):
        load_settings("local", environ={"ATENDE__MODELS__HOLDOUT__BASELINE_ACTION": "nothing"})
    unheld = load_settings("local", environ={"ATENDE__MODELS__HOLDOUT__BASELINE_ACTION": "nothing",
                                             "ATENDE__MODELS__HOLDOUT__SHARE": "0"})
    assert unheld.models.holdout.share == 0.0
