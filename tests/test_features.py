"""The customer feature table on hand-made frames, including the point-in-time cut."""
from __future__ import annotations

import datetime as dt

import pytest

from atende.features.customer import build_customer_features, numeric_feature_columns
from atende.pipelines.crm import build_crm
from atende.pipelines.rules import normalised_score
from atende.pipelines.schemas import ACTIONS, BRONZE, IDENTITY_MAP, INTERACTIONS, ORDERS, PRODUCTS, SURVEY_RESPONSES

UTC = dt.timezone.utc
W = dt.datetime(2026, 3, 20, tzinfo=UTC)  # written at


def ts(day: int, hour: int = 15) -> dt.datetime:
    """An instant in March 2026, UTC (15:00 UTC is 12:00 in São Paulo: afternoon)."""
    return dt.datetime(2026, 3, day, hour, tzinfo=UTC)


def rows(schema, records: list[dict]) -> list[tuple]:
    base = {"_arrival_date": dt.date(2026, 3, 1), "run_id": "r", "_written_at": W,
            "_source_file": "f", "_ingested_at": W}
    return [tuple({**base, **r}.get(f.name) for f in schema.fields) for r in records]


@pytest.fixture(scope="module")
def tables(spark):
    identity_map = spark.createDataFrame(rows(IDENTITY_MAP, [
        {"identifier_type": "crm_id", "identifier": "crm-1", "customer_key": "K1", "first_seen_at": ts(1), "last_seen_at": ts(9)},
        {"identifier_type": "phone", "identifier": "+5511998765432", "customer_key": "K1", "first_seen_at": ts(2), "last_seen_at": ts(9)},
        {"identifier_type": "email", "identifier": "bia@x.com", "customer_key": "K2", "first_seen_at": ts(3), "last_seen_at": ts(3)},
        # first seen after the cut used below: K3 does not exist yet at day 6
        {"identifier_type": "email", "identifier": "caio@x.com", "customer_key": "K3", "first_seen_at": ts(8), "last_seen_at": ts(8)},
    ]), IDENTITY_MAP)
    crm = spark.createDataFrame(rows(BRONZE["crm"], [
        {"crm_id": "crm-1", "full_name": "Ana", "birth_date": dt.date(1990, 1, 15), "gender": "F", "income_band": "B1",
         "profession": "Engenheira", "state": "SP", "marketing_consent": False, "updated_at": ts(1)},
        # a later CRM row: consent given on day 7, invisible at a day-6 cut
        {"crm_id": "crm-1", "full_name": "Ana", "birth_date": dt.date(1990, 1, 15), "gender": "F", "income_band": "A",
         "profession": "Engenheira", "state": "SP", "marketing_consent": True, "updated_at": ts(7)},
    ]), BRONZE["crm"])
    crm = build_crm(crm, identity_map, "r", dt.datetime(2026, 3, 20, tzinfo=dt.timezone.utc))  # silver CRM

    def inter(iid, key, channel, day, hour=15, topic="billing", resolved=True, language="pt"):
        return {"interaction_id": iid, "customer_key": key, "channel": channel, "started_at": ts(day, hour),
                "topic": topic, "resolved": resolved, "language": language, "bot_only": False, "has_bot": False,
                "handed_off": False, "message_count": 4, "wait_seconds": 30.0}

    interactions = spark.createDataFrame(rows(INTERACTIONS, [
        inter("i1", "K1", "whatsapp", 2, topic="billing", resolved=True),
        # same topic within 7 days: i1 was not a first-contact resolution
        inter("i2", "K1", "whatsapp", 4, topic="billing", resolved=False),
        inter("i3", "K1", "voice", 5, hour=23, topic="delivery", resolved=True),  # 20:00 local: evening
        inter("i4", "K1", "email", 8, topic="billing", resolved=True),  # after the day-6 cut
        inter("i5", "K2", "webchat", 3, topic="account", resolved=None, language="es"),
    ]), INTERACTIONS)
    responses = spark.createDataFrame(rows(SURVEY_RESPONSES, [
        {"response_id": "s1", "submitted_at": ts(2, 16), "survey": "nps", "score": 10, "interaction_id": "i1", "customer_key": "K1"},
        {"response_id": "s2", "submitted_at": ts(5, 16), "survey": "ces", "score": 7, "interaction_id": "i3", "customer_key": "K1"},
        {"response_id": "s3", "submitted_at": ts(8, 16), "survey": "csat", "score": 1, "interaction_id": "i4", "customer_key": "K1"},
    ]), SURVEY_RESPONSES)
    products = spark.createDataFrame(rows(PRODUCTS, [
        {"product_id": "p-cheap", "name": "A", "category": "games", "price": 10.0, "active": True},
        {"product_id": "p-mid", "name": "B", "category": "games", "price": 50.0, "active": True},
        {"product_id": "p-dear", "name": "C", "category": "games", "price": 90.0, "active": True},
    ]), PRODUCTS)
    orders = spark.createDataFrame(rows(ORDERS, [
        {"order_id": "o1", "ordered_at": ts(3), "customer_key": "K1", "product_id": "p-dear", "category": "games",
         "quantity": 2, "unit_price": 90.0, "amount": 180.0, "channel": "app"},
        {"order_id": "o2", "ordered_at": ts(9), "customer_key": "K1", "product_id": "p-cheap", "category": "games",
         "quantity": 1, "unit_price": 10.0, "amount": 10.0, "channel": "web"},
    ]), ORDERS)
    actions = spark.createDataFrame(rows(ACTIONS, [
        {"action_id": "a1", "sent_at": ts(1), "action": "product_offer", "customer_key": "K1", "responded": True},
        {"action_id": "a2", "sent_at": ts(5), "action": "kb_article", "customer_key": "K1", "responded": False},
        {"action_id": "a3", "sent_at": ts(9), "action": "kb_article", "customer_key": "K1", "responded": False},
    ]), ACTIONS)
    return identity_map, interactions, responses, crm, orders, products, actions


def features_at(tables, settings, as_of):
    return {r["customer_key"]: r.asDict() for r in build_customer_features(*tables, settings=settings, as_of=as_of).collect()}


def test_point_in_time_cut_sees_nothing_after_it(tables, settings):
    f = features_at(tables, settings, ts(6, 0))
    assert set(f) == {"K1", "K2"}, "K3 was first seen after the cut"
    k1 = f["K1"]
    assert k1["interactions_count"] == 3  # i4 (day 8) is in the future
    assert k1["orders_count"] == 1 and k1["total_spend"] == pytest.approx(180.0)
    assert k1["income_band"] == "B1" and k1["income_level"] == pytest.approx(0.8)
    assert k1["marketing_consent"] is False  # the day-7 CRM row is not known yet
    assert k1["survey_count"] == 2 and k1["csat_avg"] is None
    assert k1["actions_recent"] == 2  # a1 (day 1) and a2 (day 5) are within 7 days of the cut
    assert k1["last_topic"] == "delivery" and k1["open_issue"] is False

    later = features_at(tables, settings, ts(10, 0))
    assert set(later) == {"K1", "K2", "K3"}
    assert later["K1"]["interactions_count"] == 4 and later["K1"]["orders_count"] == 2
    assert later["K1"]["marketing_consent"] is True and later["K1"]["income_band"] == "A"
    assert later["K1"]["csat_avg"] == pytest.approx(1.0)


def test_mixes_rates_and_scores(tables, settings):
    k1 = features_at(tables, settings, ts(6, 0))["K1"]
    assert k1["ch_whatsapp"] == pytest.approx(2 / 3) and k1["ch_voice"] == pytest.approx(1 / 3)
    assert k1["ch_webchat"] == 0.0
    assert k1["hour_afternoon"] == pytest.approx(2 / 3) and k1["hour_evening"] == pytest.approx(1 / 3)
    assert k1["topic_billing"] == pytest.approx(2 / 3) and k1["topic_delivery"] == pytest.approx(1 / 3)
    assert k1["resolved_rate"] == pytest.approx(2 / 3)
    # i1 resolved but followed by i2 on the same topic; i3 resolved and not followed; i2 unresolved
    assert k1["fcr_rate"] == pytest.approx(1 / 3)
    # nps 10 -> 1.0, ces 7 (very high effort) -> 0.0
    assert k1["satisfaction_index"] == pytest.approx(0.5)
    assert k1["effort_index"] == pytest.approx(1.0)
    assert k1["price_level"] == pytest.approx(1.0)  # bought the dearest of its category
    assert k1["ochan_app"] == 1.0
    assert k1["category_shares"] == {"games": 1.0}
    assert k1["age"] == 36.0 and k1["age_band"] == "35-44"
    assert k1["preferred_channel"] == "whatsapp"
    assert k1["has_whatsapp"] is True and k1["has_crm"] == 1.0

    k2 = features_at(tables, settings, ts(6, 0))["K2"]
    assert k2["has_crm"] == 0.0 and k2["age"] is None and k2["income_level"] is None
    assert k2["main_language"] == "es" and k2["resolved_rate"] is None
    assert k2["orders_count"] == 0 and k2["total_spend"] == 0.0 and k2["category_shares"] == {}


def test_open_issue_when_latest_interaction_unresolved(tables, settings):
    identity_map, interactions, *rest = tables
    f = {r["customer_key"]: r for r in build_customer_features(
        identity_map, interactions, *rest, settings=settings, as_of=ts(4, 18)).collect()}
    assert f["K1"]["open_issue"] is True and f["K1"]["last_topic"] == "billing"


def test_every_numeric_feature_is_a_column(tables, settings):
    df = build_customer_features(*tables, settings=settings, as_of=ts(6, 0))
    missing = set(numeric_feature_columns(settings)) - set(df.columns)
    assert not missing


def test_normalised_score_inverts_ces(spark):
    from pyspark.sql import functions as F

    df = spark.createDataFrame([("nps", 10), ("csat", 1), ("ces", 1), ("ces", 7), ("sps", 5)], "survey string, score int")
    got = [r[0] for r in df.select(normalised_score(F.col("survey"), F.col("score"))).collect()]
    assert got == pytest.approx([1.0, 0.0, 1.0, 0.0, 1.0])
