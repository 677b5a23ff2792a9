"""Silver CRM: the CRM's history, one row per registration and update, keyed to its customer."""
from __future__ import annotations

import datetime as dt

from atende.pipelines.crm import build_crm
from atende.pipelines.customers import surviving_values
from atende.pipelines.schemas import BRONZE, CRM, IDENTITY_MAP

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 20, tzinfo=UTC)


def ts(day: int) -> dt.datetime:
    return dt.datetime(2026, 3, day, 12, tzinfo=UTC)


def bronze_crm(spark, rows: list[dict]):
    base = {"_source_file": "crm/f.csv", "_arrival_date": dt.date(2026, 3, 1), "_ingested_at": ts(1), "run_id": "r0"}
    schema = BRONZE["crm"]
    return spark.createDataFrame([tuple({**base, **r}.get(f.name) for f in schema.fields) for r in rows], schema)


def test_one_row_per_crm_id_and_update_keyed_to_the_customer(spark, settings):
    crm = bronze_crm(spark, [
        {"crm_id": " CRM-1 ", "full_name": "Ana", "updated_at": ts(1), "marketing_consent": False},
        # the same state delivered again a day later, with a fix the export made: the latest delivery wins
        {"crm_id": "CRM-1", "full_name": "Ana Souza", "updated_at": ts(1), "marketing_consent": False,
         "_arrival_date": dt.date(2026, 3, 2), "_source_file": "crm/g.csv"},
        # an update: a row of its own
        {"crm_id": "CRM-1", "full_name": "Ana Souza", "updated_at": ts(5), "marketing_consent": True,
         "_arrival_date": dt.date(2026, 3, 5)},
        {"crm_id": "CRM-2", "full_name": "Bia", "updated_at": ts(2)},
        {"crm_id": "  ", "full_name": "nobody", "updated_at": ts(2)},  # no id: nothing to key
    ])
    identity_map = spark.createDataFrame([
        ("crm_id", "CRM-1", "K1", ts(1), ts(5), "r", NOW),
    ], IDENTITY_MAP)

    got = build_crm(crm, identity_map, "run-1", NOW)

    assert [(f.name, f.dataType) for f in got.schema] == [(f.name, f.dataType) for f in CRM]
    rows = sorted((r.crm_id, r.updated_at, r.full_name, r.marketing_consent, r.customer_key, r._arrival_date)
                  for r in got.collect())
    assert rows == [
        ("CRM-1", ts(1).replace(tzinfo=None), "Ana Souza", False, "K1", dt.date(2026, 3, 1)),
        ("CRM-1", ts(5).replace(tzinfo=None), "Ana Souza", True, "K1", dt.date(2026, 3, 5)),
        ("CRM-2", ts(2).replace(tzinfo=None), "Bia", None, None, dt.date(2026, 3, 1)),
    ]
    # what survives for the customer is the latest update (silver/customers' rules)
    (values,) = surviving_values(settings, ["display_name", "marketing_consent"], crm=got).collect()
    assert (values.customer_key, values.display_name, values.marketing_consent) == ("K1", "Ana Souza", True)
