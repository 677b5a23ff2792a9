"""The business rules of pipelines/rules.py on hand-made rows, and the places that use them agreeing:
the KPI and the feature give the same first-contact resolution on the same rows, the profile and the
feature the same spend."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from atende.features.customer import build_customer_features
from atende.pipelines import rules
from atende.pipelines.customers import build_customers
from atende.pipelines.kpis import build_service_kpis
from atende.pipelines.profiles import build_customer_profiles
from atende.pipelines.schemas import ACTIONS, CRM, IDENTITY_MAP, INTERACTIONS, ORDERS, PRODUCTS, SURVEY_RESPONSES

UTC = dt.timezone.utc
W = dt.datetime(2026, 3, 30, tzinfo=UTC)
AS_OF = dt.datetime(2026, 3, 29, tzinfo=UTC)  # after every follow-up window below has closed


def ts(day: int, hour: int = 15, minute: int = 0, micro: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, 0, micro, tzinfo=UTC)


def rows(schema, records: list[dict]) -> list[tuple]:
    base = {"_arrival_date": dt.date(2026, 3, 1), "run_id": "r", "_written_at": W, "_source_file": "f",
            "_ingested_at": W, "has_bot": False, "handed_off": False}
    return [tuple({**base, **r}.get(f.name) for f in schema.fields) for r in records]


def inter(iid, key, channel, started, topic="billing", resolved=True):
    return {"interaction_id": iid, "customer_key": key, "channel": channel, "started_at": started,
            "topic": topic, "resolved": resolved}


# one customer's contacts: (interaction, expected first-contact resolution)
CASES = [
    # resolved, then the same topic again 6 days 23 h later: followed up
    (inter("a1", "K1", "webchat", ts(1), "billing", True), False),
    (inter("a2", "K1", "webchat", ts(8, 14), "billing", False), False),
    # resolved; the same topic again exactly 7 days later (to the microsecond) does not count
    (inter("b1", "K1", "voice", ts(10), "delivery", True), True),
    (inter("b2", "K1", "voice", ts(17), "delivery", None), None),   # a call with no outcome: not eligible
    # resolved; a contact on another topic next day is not a follow-up
    (inter("c1", "K1", "webchat", ts(20), "account", True), True),
    # WhatsApp and e-mail carry no resolution flag: resolved at first contact unless the customer comes back
    # within the window on any topic and channel
    (inter("w1", "K1", "whatsapp", ts(21), None, None), False),    # the e-mail a day later follows it up
    (inter("e1", "K1", "email", ts(22), None, None), True),         # nothing within 7 days after it
    # no customer: nobody to follow up; resolved counts, unknown stays unknown
    (inter("n1", None, "whatsapp", ts(21), None, None), None),
    (inter("n2", None, "webchat", ts(21), "billing", True), True),
]


@pytest.fixture(scope="module")
def interactions(spark):
    return spark.createDataFrame(rows(INTERACTIONS, [c for c, _ in CASES]), INTERACTIONS)


def test_first_contact_resolution_case_by_case(interactions, settings):
    fcr = rules.first_contact_resolution(settings.kpis.fcr_window_days, settings.kpis.repeat_contact_channels)
    got = {r.interaction_id: r.fcr for r in interactions.select("interaction_id", fcr.alias("fcr")).collect()}
    assert got == {c["interaction_id"]: expected for c, expected in CASES}


def test_without_repeat_contact_channels_whatsapp_and_email_are_not_eligible(interactions, settings):
    fcr = rules.first_contact_resolution(settings.kpis.fcr_window_days)
    got = {r.interaction_id: r.fcr for r in interactions.select("interaction_id", fcr.alias("fcr")).collect()}
    assert got["w1"] is None and got["e1"] is None and got["a1"] is False


def test_kpi_and_feature_agree_on_first_contact_resolution(spark, settings, interactions):
    keyed = interactions.where(F.col("customer_key") == "K1")
    kpis = build_service_kpis(keyed, spark.createDataFrame([], SURVEY_RESPONSES), settings, "r", W)
    totals = kpis.where(F.col("grouping_level") == "date,channel").agg(
        F.sum(F.col("fcr_rate") * F.col("fcr_eligible")).alias("fcr"), F.sum("fcr_eligible").alias("eligible")
    ).first()
    identity_map = spark.createDataFrame(rows(IDENTITY_MAP, [
        {"identifier_type": "email", "identifier": "k1@x.com", "customer_key": "K1", "first_seen_at": ts(1),
         "last_seen_at": ts(22)},
    ]), IDENTITY_MAP)

    def empty(schema):
        return spark.createDataFrame([], schema)

    features = build_customer_features(identity_map, keyed, empty(SURVEY_RESPONSES), empty(CRM),
                                       empty(ORDERS), empty(PRODUCTS), empty(ACTIONS), settings, AS_OF)
    (k1,) = features.collect()
    expected = [e for c, e in CASES if c["customer_key"] == "K1" and e is not None]
    assert totals["eligible"] == len(expected) == 6
    assert k1["fcr_rate"] == pytest.approx(totals["fcr"] / totals["eligible"]) == pytest.approx(sum(expected) / 6)


def test_profile_and_feature_agree_on_spend(spark, settings):
    identity_map = spark.createDataFrame(rows(IDENTITY_MAP, [
        {"identifier_type": "email", "identifier": "k1@x.com", "customer_key": "K1", "first_seen_at": ts(1),
         "last_seen_at": ts(2)},
    ]), IDENTITY_MAP)
    orders = spark.createDataFrame(rows(ORDERS, [
        {"order_id": "o1", "ordered_at": ts(2), "customer_key": "K1", "product_id": "p1", "quantity": 2,
         "unit_price": 10.0, "amount": 20.0},
        # no quantity: one unit (rules.order_amount), in both tables
        {"order_id": "o2", "ordered_at": ts(3), "customer_key": "K1", "product_id": "p1", "quantity": None,
         "unit_price": 7.5, "amount": 7.5},
    ]), ORDERS)
    empty_interactions = spark.createDataFrame([], INTERACTIONS)
    empty_responses = spark.createDataFrame([], SURVEY_RESPONSES)
    crm = spark.createDataFrame([], CRM)
    customers = build_customers(identity_map, crm, empty_interactions, settings, "r", W)
    profile = build_customer_profiles(customers, empty_interactions, empty_responses, orders, settings, "r", W)
    features = build_customer_features(identity_map, empty_interactions, empty_responses, crm, orders,
                                       spark.createDataFrame([], PRODUCTS), spark.createDataFrame([], ACTIONS),
                                       settings, AS_OF)
    (p,), (f,) = profile.collect(), features.collect()
    assert (p["orders_count"], p["total_spend"]) == (f["orders_count"], f["total_spend"]) == (2, 27.5)


def test_order_amount_counts_a_missing_quantity_as_one(spark):
    df = spark.createDataFrame([(2, 10.0), (None, 7.5), (3, None)], "quantity int, unit_price double")
    got = [r[0] for r in df.select(rules.order_amount(F.col("quantity"), F.col("unit_price"))).collect()]
    assert got == [20.0, 7.5, None]


def test_nps_classes_and_bot_handled(spark):
    df = spark.createDataFrame(
        [(0, "voice", True), (6, "chatbot", None), (7, "webchat", True), (9, "webchat", False), (10, "app", None)],
        "score int, channel string, has_bot boolean",
    )
    got = df.select(
        rules.promoter(F.col("score")).alias("p"), rules.detractor(F.col("score")).alias("d"),
        rules.bot_handled(F.col("channel"), F.col("has_bot")).alias("b"),
    ).collect()
    assert [(r.p, r.d, r.b) for r in got] == [
        (False, True, False),   # a call is never bot-handled
        (False, True, True),    # the chatbot channel is, with or without a bot message seen
        (False, False, True),
        (True, False, False),
        (True, False, False),   # no bot message known: not bot-handled
    ]


def test_channel_usage_prefers_the_most_frequent_then_the_most_recent(spark):
    df = spark.createDataFrame(rows(INTERACTIONS, [
        inter("x1", "K1", "whatsapp", ts(1)), inter("x2", "K1", "whatsapp", ts(2)),
        inter("x3", "K1", "webchat", ts(3)), inter("x4", "K1", "webchat", ts(4)),
        # two contacts at the same instant: the greater interaction_id is the last
        inter("x5", "K1", "voice", ts(5)), inter("x6", "K1", "email", ts(5)),
    ]), INTERACTIONS)
    (row,) = rules.channel_usage(df).collect()
    assert (row.interactions_total, row.preferred_channel, row.last_channel) == (6, "webchat", "email")
