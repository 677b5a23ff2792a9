"""Segment exports for marketing: consent is a hard filter, contact data only on request."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from atende.jobs.segments import (
    CONTACT_COLUMNS,
    build_segment_export,
    persona_report_frames,
    render_persona_report,
    write_export,
)
from atende.pipelines.schemas_gold import CUSTOMER_PROFILES, PERSONA_SEGMENTS, PERSONAS

NOW = dt.datetime(2026, 3, 20, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def gold(spark):
    def profile(key, consent, email):
        base = {"customer_key": key, "crm_ids": [], "display_name": f"Name {key}", "primary_email": email,
                "primary_phone": "+5511998765432", "marketing_consent": consent, "first_seen_at": NOW,
                "last_seen_at": NOW, "interactions_total": 2, "interactions_by_channel": {"whatsapp": 2},
                "orders_count": 0, "total_spend": 0.0, "age_band": "25-34", "run_id": "r", "_written_at": NOW}
        return tuple(base.get(f.name) for f in CUSTOMER_PROFILES.fields)

    profiles = spark.createDataFrame([
        profile("K1", True, "a@x.com"),
        profile("K2", False, "b@x.com"),
        profile("K3", None, "c@x.com"),   # consent never recorded: not consent
        profile("K4", True, "d@x.com"),
    ], CUSTOMER_PROFILES)
    segments = spark.createDataFrame([
        (k, p, 0.9, "1", "r", NOW) for k, p in (("K1", "persona-01"), ("K2", "persona-01"), ("K3", "persona-01"),
                                                ("K4", "persona-02"))
    ], PERSONA_SEGMENTS)
    personas = spark.createDataFrame([
        ("persona-01", "WhatsApp-first young adults", "d1", 3, {"age": 25.0}, "1", "r", NOW),
        ("persona-02", "Phone-first seniors", "d2", 1, {"age": 70.0}, "1", "r", NOW),
    ], PERSONAS)
    return profiles, segments, personas


def test_only_consenting_customers_are_exported(gold):
    rows = build_segment_export(*gold, persona="all", with_contacts=False).toPandas()
    assert sorted(rows["customer_key"]) == ["K1", "K4"]
    assert not set(CONTACT_COLUMNS) & set(rows.columns)
    assert set(rows["persona_name"]) == {"WhatsApp-first young adults", "Phone-first seniors"}


def test_one_persona_and_contacts_on_request(gold):
    rows = build_segment_export(*gold, persona="persona-01", with_contacts=True).toPandas()
    assert list(rows["customer_key"]) == ["K1"]
    assert rows.loc[0, "primary_email"] == "a@x.com"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_writes_one_file(gold, tmp_path, fmt):
    out = tmp_path / f"segment.{fmt}"
    n = write_export(build_segment_export(*gold, persona="all", with_contacts=False), out, fmt)
    assert out.is_file() and n == 2
    frame = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert sorted(frame["customer_key"]) == ["K1", "K4"]
    assert not list(tmp_path.glob(".*tmp")), "the staging folder is cleaned up"


def test_persona_report_is_one_html_page(gold, tmp_path):
    profiles, segments, personas = gold
    out = render_persona_report(persona_report_frames(profiles, segments, personas), tmp_path / "p.html")
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 5
    assert "Phone-first seniors" in page and "Channel mix" in page
