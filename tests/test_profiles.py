"""Gold customer_profiles on a two-customer identity map."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.testing import assertDataFrameEqual

from atende.pipelines.crm import build_crm
from atende.pipelines.customers import build_customers
from atende.pipelines.profiles import build_customer_profiles
from atende.pipelines.schemas import BRONZE, IDENTITY_MAP, INTERACTIONS, ORDERS, SURVEY_RESPONSES
from atende.pipelines.schemas_gold import CUSTOMER_PROFILES

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 20, 6, 0, tzinfo=UTC)


def ts(year: int, month: int, day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=UTC)


def bronze(spark, source: str, rows: list[dict]):
    lineage = {"_source_file": f"{source}/f", "_arrival_date": dt.date(2026, 3, 1), "_ingested_at": ts(2026, 3, 1), "run_id": "r0"}
    schema = BRONZE[source]
    return spark.createDataFrame([tuple({**lineage, **r}.get(f.name) for f in schema.fields) for r in rows], schema)


def interaction(interaction_id: str, key: str, channel: str, started_at: dt.datetime, name: str | None = None) -> tuple:
    fields = {"interaction_id": interaction_id, "customer_key": key, "channel": channel, "started_at": started_at,
              "customer_name": name, "_arrival_date": dt.date(2026, 3, 1), "run_id": "r", "_written_at": NOW}
    return tuple(fields.get(f.name) for f in INTERACTIONS.fields)


@pytest.fixture(scope="module")
def inputs(spark):
    identity_map = spark.createDataFrame([
        (t, i, k, first, last, "r", NOW) for t, i, k, first, last in [
            ("crm_id", "crm-1", "K1", ts(2026, 1, 1), ts(2026, 3, 1)),
            ("crm_id", "crm-0", "K1", ts(2025, 6, 1), ts(2025, 6, 1)),
            ("email", "ana@x.com", "K1", ts(2026, 1, 1), ts(2026, 3, 1)),
            ("email", "ana.old@x.com", "K1", ts(2025, 6, 1), ts(2025, 12, 1)),
            ("phone", "+5511998765432", "K1", ts(2026, 2, 1), ts(2026, 3, 5)),
            ("email", "bia@x.com", "K2", ts(2026, 3, 1), ts(2026, 3, 2)),
            ("device_id", "d-9", "K2", ts(2026, 3, 1), ts(2026, 3, 3)),
        ]
    ], IDENTITY_MAP)
    crm = bronze(spark, "crm", [
        {"crm_id": "crm-1", "full_name": "Ana Souza", "birth_date": dt.date(1991, 3, 21), "gender": "F", "city": "Campinas",
         "state": "SP", "income_band": "B", "profession": "engenheira", "marketing_consent": True, "updated_at": ts(2026, 1, 1)},
        # supersedes the row above
        {"crm_id": "crm-1", "full_name": "Ana Souza", "birth_date": dt.date(1991, 3, 21), "gender": "F", "city": "São Paulo",
         "state": "SP", "income_band": "B", "profession": "engenheira", "marketing_consent": False, "updated_at": ts(2026, 2, 1)},
        # an older CRM record of the same person
        {"crm_id": "crm-0", "full_name": "Ana S. Old", "city": "Santos", "updated_at": ts(2025, 6, 1)},
    ])
    interactions = spark.createDataFrame([
        interaction("i1", "K1", "webchat", ts(2026, 3, 1), "Ana"),
        interaction("i2", "K1", "whatsapp", ts(2026, 3, 2), "Aninha"),
        interaction("i3", "K1", "whatsapp", ts(2026, 3, 3), "Aninha"),
        interaction("i4", "K1", "webchat", ts(2026, 3, 4)),
        interaction("i5", "K1", "voice", ts(2026, 3, 5)),
        interaction("j1", "K2", "email", ts(2026, 3, 1, 10), "Bia"),
        interaction("j2", "K2", "email", ts(2026, 3, 2, 10), "Bia"),
        interaction("j3", "K2", "webchat", ts(2026, 3, 2, 12), "Beatriz"),
        interaction("z1", None, "webchat", ts(2026, 3, 2, 12), "Anon"),
    ], INTERACTIONS)
    surveys = spark.createDataFrame([
        (rid, at, survey, score, None, key, None, dt.date(2026, 3, 1), "r", NOW) for rid, at, survey, score, key in [
            ("s1", ts(2026, 3, 2), "nps", 7, "K1"),
            ("s2", ts(2026, 3, 4), "nps", 9, "K1"),
            ("s3", ts(2026, 3, 4), "csat", 4, "K1"),
            ("s4", ts(2026, 3, 5), "csat", 5, "K1"),
            ("s5", ts(2026, 3, 2), "ces", 3, "K2"),
        ]
    ], SURVEY_RESPONSES)
    # silver orders: one row per order, keyed by identity resolution, amount = rules.order_amount
    orders = spark.createDataFrame([
        (oid, at, key, product, None, quantity, price, amount, "web", dt.date(2026, 3, 1), "r", NOW)
        for oid, at, key, product, quantity, price, amount in [
            ("o1", ts(2026, 3, 1), "K1", "p1", 2, 10.0, 20.0),
            ("o2", ts(2026, 3, 2), "K1", "p2", 1, 5.5, 5.5),
            ("o3", ts(2026, 3, 2), None, "p2", 1, 7.0, 7.0),  # an order nobody could be found for
        ]
    ], ORDERS)
    return identity_map, interactions, surveys, crm, orders


def expected_row(key: str, **fields) -> tuple:
    return tuple({"customer_key": key, "run_id": "run-1", "_written_at": NOW, **fields}.get(f.name) for f in CUSTOMER_PROFILES.fields)


def test_customer_profiles(spark, settings, inputs):
    identity_map, interactions, surveys, crm, orders = inputs
    customers = build_customers(identity_map, build_crm(crm, identity_map, "r", NOW), interactions, settings, "r", NOW)
    got = build_customer_profiles(customers, interactions, surveys, orders, settings, "run-1", NOW)

    expected = spark.createDataFrame([
        expected_row(
            "K1", crm_ids=["crm-0", "crm-1"], display_name="Ana Souza", primary_email="ana@x.com",
            primary_phone="+5511998765432", birth_date=dt.date(1991, 3, 21),
            age_band="25-34",  # 34 until tomorrow
            gender="F", city="São Paulo", state="SP", income_band="B", profession="engenheira", marketing_consent=False,
            first_seen_at=ts(2025, 6, 1), last_seen_at=ts(2026, 3, 5), interactions_total=5,
            interactions_by_channel={"voice": 1, "webchat": 2, "whatsapp": 2},
            preferred_channel="webchat",  # tied with whatsapp, used more recently
            last_channel="voice", nps_last=9, csat_avg=4.5, orders_count=2, total_spend=25.5,  # o1 once, o2 by e-mail
        ),
        expected_row(
            "K2", crm_ids=[], display_name="Bia",  # no CRM: the name given most often
            primary_email="bia@x.com", first_seen_at=ts(2026, 3, 1), last_seen_at=ts(2026, 3, 3), interactions_total=3,
            interactions_by_channel={"email": 2, "webchat": 1}, preferred_channel="email", last_channel="webchat",
            ces_avg=3.0, orders_count=0, total_spend=0.0,
        ),
    ], CUSTOMER_PROFILES)
    assert got.schema.fieldNames() == CUSTOMER_PROFILES.fieldNames()
    assertDataFrameEqual(got, expected, checkRowOrder=False)
