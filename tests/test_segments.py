"""Segment exports and the personas page for marketing: consent is a hard filter, contact data only on
request; read from Delta tables by DuckDB (no Spark) and, past the size threshold, by Spark — the same SQL."""
from __future__ import annotations

import datetime as dt
import re

import pandas as pd
import pytest

from atende.jobs.gold_query import open_tables
from atende.jobs.segments import (
    CONTACT_COLUMNS,
    ExportError,
    distinguishing_traits,
    export_query,
    leading_channel,
    persona_report_frames,
    render_persona_report,
)
from atende.lakehouse.tables import Lakehouse
from atende.pipelines.schemas_gold import CUSTOMER_PROFILES, PERSONA_SEGMENTS, PERSONAS

TABLES = {"customer_profiles": ("gold", "customer_profiles"), "persona_segments": ("gold", "persona_segments"),
          "personas": ("gold", "personas")}

NOW = dt.datetime(2026, 3, 20, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def gold(spark, settings, tmp_path_factory):
    """Three gold tables in a lakehouse, written by the session's engine."""
    def profile(key, consent, email, channels=None):
        base = {"customer_key": key, "crm_ids": [], "display_name": f"Name {key}", "primary_email": email,
                "primary_phone": "+5511998765432", "marketing_consent": consent, "first_seen_at": NOW,
                "last_seen_at": NOW, "interactions_total": 2, "interactions_by_channel": channels or {"whatsapp": 2},
                "orders_count": 0, "total_spend": 0.0, "age_band": "25-34", "nps_last": 10, "run_id": "r",
                "_written_at": NOW}
        return tuple(base.get(f.name) for f in CUSTOMER_PROFILES.fields)

    profiles = spark.createDataFrame([
        profile("K1", True, "a@x.com"),
        profile("K2", False, "b@x.com"),
        profile("K3", None, "c@x.com"),   # consent never recorded: not consent
        profile("K4", True, "d@x.com", {"voice": 3, "whatsapp": 1}),
    ], CUSTOMER_PROFILES)
    segments = spark.createDataFrame([
        (k, p, 0.9, "1", "r", NOW) for k, p in (("K1", "persona-01"), ("K2", "persona-01"), ("K3", "persona-01"),
                                                ("K4", "persona-02"))
    ], PERSONA_SEGMENTS)
    personas = spark.createDataFrame([
        ("persona-01", "WhatsApp-first young adults", "d1", 3, {"age": 25.0, "ch_whatsapp": 0.9}, "1", "r", NOW),
        ("persona-02", "Phone-first seniors", "d2", 1, {"age": 70.0, "ch_whatsapp": 0.3}, "1", "r", NOW),
    ], PERSONAS)
    root = tmp_path_factory.mktemp("gold") / "lake"
    lake = Lakehouse(spark, root, settings.storage)
    for name, frame in (("customer_profiles", profiles), ("persona_segments", segments), ("personas", personas)):
        lake.write("gold", name, frame, mode="overwrite")
    return root


@pytest.fixture(params=["duckdb", "spark"])
def engine(request, gold, spark, settings):
    """DuckDB over the Delta files, and Spark (reports.spark_above_rows 0): the same queries on both."""
    chosen = settings if request.param == "duckdb" else settings.model_copy(
        update={"reports": settings.reports.model_copy(update={"spark_above_rows": 0})})
    with open_tables(chosen, gold, TABLES, spark=spark) as opened:
        assert opened.name == request.param
        yield opened


def test_only_consenting_customers_are_exported(engine):
    rows = engine.sql(export_query("all", with_contacts=False))
    assert sorted(rows["customer_key"]) == ["K1", "K4"]  # K2 said no, K3's consent was never recorded
    assert not set(CONTACT_COLUMNS) & set(rows.columns)
    assert set(rows["persona_name"]) == {"WhatsApp-first young adults", "Phone-first seniors"}


def test_one_persona_and_contacts_on_request(engine):
    rows = engine.sql(export_query("persona-01", with_contacts=True))
    assert list(rows["customer_key"]) == ["K1"]
    assert rows.loc[0, "primary_email"] == "a@x.com"
    for hostile in ("persona-01' OR '1'='1", "x\\' OR 1=1 --"):
        with pytest.raises(ExportError, match="a persona id is"):
            export_query(hostile, with_contacts=False)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_writes_one_file(engine, tmp_path, fmt):
    out = tmp_path / f"segment.{fmt}"
    n = engine.export(export_query("all", with_contacts=False), out, fmt)
    assert out.is_file() and n == 2
    frame = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert sorted(frame["customer_key"]) == ["K1", "K4"]
    assert not list(tmp_path.glob(".*tmp")), "the staging file is cleaned up"


def test_export_into_a_folder_fails_and_leaves_nothing(engine, tmp_path):
    with pytest.raises((IsADirectoryError, ValueError), match="directory"):
        engine.export(export_query("all", with_contacts=False), tmp_path, "csv")
    assert not list(tmp_path.iterdir())


def test_report_frames_are_the_same_on_both_engines(gold, spark, settings):
    frames = {}
    for limit in (settings.reports.spark_above_rows, 0):
        chosen = settings.model_copy(update={"reports": settings.reports.model_copy(update={"spark_above_rows": limit})})
        with open_tables(chosen, gold, TABLES, spark=spark) as engine:
            frames[engine.name] = persona_report_frames(engine)
    for name, duck in frames["duckdb"].items():
        on_spark = frames["spark"][name]
        key = [c for c in ("persona_id", "value", "trait") if c in duck.columns]
        pd.testing.assert_frame_equal(duck.sort_values(key).reset_index(drop=True),
                                      on_spark.sort_values(key).reset_index(drop=True)[duck.columns.tolist()],
                                      check_dtype=False)


def test_consent_share_counts_an_unknown_consent_as_no(engine):
    size = persona_report_frames(engine)["size"].set_index("persona_id")
    assert size.loc["persona-01", "consent_share"] == pytest.approx(1 / 3)  # K1 yes, K2 no, K3 never asked
    assert size.loc["persona-01", "nps"] == pytest.approx(100.0) and isinstance(size.loc["persona-01", "nps"], float)


def test_persona_report_is_one_page_with_a_card_per_persona(engine, tmp_path):
    out = render_persona_report(persona_report_frames(engine), tmp_path / "p.html")
    page = out.read_text(encoding="utf-8")
    assert page.count('<div class="card" data-persona=') == 2
    assert "Phone-first seniors" in page and "Channel mix" in page
    assert not re.search(r'<(script|link|img)[^>]*(src|href)="(https?:)?//', page)
    card = page.split('data-persona="persona-02"')[1].split("</div></div>")[0]
    # K4's contacts: 3 by phone, 1 by WhatsApp
    assert "leading channel: <b>phone</b> (75% of their contacts)" in card


def test_leading_channel_counts_contacts_not_customers():
    channels = pd.DataFrame({"persona_id": ["p1", "p1", "p1"], "value": ["whatsapp", "email", "voice"],
                             "count": [10, 30, 5]})
    assert leading_channel(channels) == {"p1": ("email", 30 / 45)}


def test_distinguishing_traits_rank_by_lift_against_the_base():
    traits = pd.DataFrame([
        ("p1", "age", 30.0), ("p2", "age", 60.0),
        ("p1", "ch_whatsapp", 0.6), ("p2", "ch_whatsapp", 0.2),
        ("p1", "ch_linkedin", 0.01), ("p2", "ch_linkedin", 0.0),   # base share under 2%: noise, left out
        ("p1", "total_spend", 100.0), ("p2", "total_spend", 500.0),
    ], columns=["persona_id", "trait", "value"])
    found = distinguishing_traits(traits, pd.Series({"p1": 3, "p2": 1}))
    # base: age 37.5, whatsapp 0.5, spend 200
    assert [t for t, _ in found["p2"]] == ["total_spend", "age", "ch_whatsapp"]
    assert found["p2"][0][1] == pytest.approx(2.5) and found["p2"][2][1] == pytest.approx(0.4)
    assert [t for t, _ in found["p1"]] == ["ch_whatsapp", "total_spend", "age"]  # over-represented first


def test_the_commands_answer_without_spark(gold, tmp_path, capsys, monkeypatch):
    """`segments export` and `report personas` as a user runs them: no SparkSession is started."""
    from atende.jobs import cli
    from atende.lakehouse import spark as spark_factory

    def no_spark(*args, **kwargs):
        raise AssertionError("a report started Spark")

    monkeypatch.setattr(spark_factory, "build_spark_session", no_spark)
    out = tmp_path / "segment.csv"
    assert cli.main(["segments", "export", "--lakehouse", str(gold), "--persona", "all", "--out", str(out)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert said == f"2 customers with marketing consent, of every persona, written to {out}"
    assert sorted(pd.read_csv(out)["customer_key"]) == ["K1", "K4"]
    assert cli.main(["-q", "report", "personas", "--lakehouse", str(gold), "--out", str(tmp_path / "p.html")]) == 0
    assert capsys.readouterr().out == "", "--quiet prints errors only"
    assert (tmp_path / "p.html").is_file()
    assert cli.main(["segments", "export", "--lakehouse", str(gold), "--persona", "persona-9", "--out", str(out)]) == 1
    assert "unknown persona 'persona-9'; known: persona-01, persona-02 or all" in capsys.readouterr().err
