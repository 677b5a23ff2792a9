"""LGPD erasure, access and suppression (jobs/privacy.py) on a hand-made lakehouse, on both engines.

Two customers: Ana (key c-ana: CRM-1, ana@x.com, +55 11 99876-5432) and Bob (c-bob: CRM-2, bob@x.com).
One survey response is keyed to Bob but carries Ana's address (Bob answered with his wife's e-mail): it
names Ana, so it goes too. A WhatsApp payload holds one message of each; a quarantined line names Ana's
address in capitals, another her phone as people write it.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from atende.jobs.bookkeeping import JobRecord, utc_now
from atende.jobs.privacy import (
    PrivacyError,
    Subject,
    export_subject,
    forget,
    mark_retrained,
    parse_subject,
    pending_retrains,
    read_subjects,
)
from atende.jobs.run import RunFailed, Runner
from atende.lakehouse.tables import DeltaRsEngine, DeltaSparkEngine, Lakehouse
from tests.bronze_frames import at, bronze

ENGINES = {"delta-spark": DeltaSparkEngine, "delta-rs": DeltaRsEngine}
ANA = ("ana@x.com", "+5511998765432", "5511998765432", "CRM-1", "ana souza")


def _payload(*messages):
    return {"payload_kind": "messages", "messages": list(messages)}


def _wa(message_id: str, wa_id: str, name: str, text: str):
    return (message_id, wa_id, name, at(2), "text", text)


def _fill(spark, lake: Lakehouse) -> None:
    day = {"_arrival_date": dt.date(2026, 3, 2)}
    tables = {
        ("bronze", "conversations"): bronze(spark, "conversations", [
            {"conversation_id": "c1", "channel": "webchat", "started_at": at(2),
             "customer": ("CRM-1", "ana@x.com", None, "Ana Souza"), "messages": [(at(2), "customer", None, "oi, sou a Ana")]},
            {"conversation_id": "c2", "channel": "webchat", "started_at": at(2),
             "customer": ("CRM-2", "bob@x.com", None, "Bob Lima"), **day},
        ]),
        ("bronze", "whatsapp"): bronze(spark, "whatsapp", [
            _payload(_wa("m1", "5511998765432", "Ana", "meu pedido?"), _wa("m2", "5521987654321", "Bob", "oi")),
            {"payload_kind": "statuses", "messages": [], "status_count": 1,
             "_extra": {"statuses": '[{"recipient_id": "5511998765432", "status": "read"}]', "object": "whatsapp"}},
            _payload(_wa("m3", "5511998765432", "Ana", "obrigada")),
        ]),
        ("bronze", "crm"): bronze(spark, "crm", [
            {"crm_id": "CRM-1", "full_name": "Ana Souza", "email": "ana@x.com", "phone": "(11) 99876-5432", "updated_at": at(1)},
            {"crm_id": "CRM-2", "full_name": "Bob Lima", "email": "bob@x.com", "updated_at": at(1)},
        ]),
        ("bronze", "surveys"): bronze(spark, "surveys", [
            {"response_id": "r1", "submitted_at": at(2), "survey": "nps", "score": 9, "email": "ana@x.com"},
            {"response_id": "r2", "submitted_at": at(2), "survey": "nps", "score": 3, "crm_id": "CRM-2"},
            {"response_id": "r3", "submitted_at": at(2), "survey": "csat", "score": 5, "crm_id": "CRM-2",
             "email": "ANA@x.com", **day},
        ]),
        ("bronze", "quarantine"): spark.createDataFrame([
            ("surveys", "f1", '{"email": "ANA@X.COM", "score": "ten"}', "bad score"),
            ("calls", "f2", "c9,2026-03-01,(11) 99876-5432,??", "bad row"),
            ("calls", "f2", "c8,2026-03-01,(21) 98765-4321,??", "bad row"),
            ("surveys", "f1", '{"email": "joana@x.com", "score": "dez"}', "bad score"),
        ], "source string, _source_file string, raw string, reason string").select(
            "*", F.lit(dt.date(2026, 3, 1)).alias("_arrival_date"), F.lit(at(1)).alias("_ingested_at"), F.lit("r0").alias("run_id")),
        ("silver", "identity_map"): spark.createDataFrame([
            ("crm_id", "CRM-1", "c-ana"), ("email", "ana@x.com", "c-ana"), ("phone", "+5511998765432", "c-ana"),
            ("crm_id", "CRM-2", "c-bob"), ("email", "bob@x.com", "c-bob"), ("phone", "+5521987654321", "c-bob"),
        ], "identifier_type string, identifier string, customer_key string"),
        ("silver", "identity_merges"): spark.createDataFrame(
            [("c-old", "c-ana", "merge"), ("c-older", "c-bob", "merge")], "retired_key string, surviving_key string, kind string"),
        ("silver", "record_keys"): spark.createDataFrame([
            ("conversations", "c1", "c-ana"), ("conversations", "c2", "c-bob"), ("whatsapp", "m1", "c-ana"),
            ("whatsapp", "m2", "c-bob"), ("whatsapp", "m3", "c-ana"), ("crm", "CRM-1", "c-ana"), ("crm", "CRM-2", "c-bob"),
            ("surveys", "r1", "c-ana"), ("surveys", "r2", "c-bob"), ("surveys", "r3", "c-bob"),
        ], "source string, record_id string, customer_key string"),
        ("silver", "crm"): spark.createDataFrame(
            [("CRM-1", "c-ana", "Ana Souza"), ("CRM-2", "c-bob", "Bob Lima")], "crm_id string, customer_key string, full_name string"),
        ("silver", "interactions"): spark.createDataFrame(
            [("c1", "c-ana", "oi, sou a Ana"), ("c2", "c-bob", None), ("wa:m1", "c-ana", "meu pedido?")],
            "interaction_id string, customer_key string, customer_text string"),
        ("silver", "survey_responses"): spark.createDataFrame(
            [("r1", "c-ana", 9), ("r2", "c-bob", 3), ("r3", "c-bob", 5)], "response_id string, customer_key string, score int"),
        ("gold", "customer_profiles"): spark.createDataFrame(
            [("c-ana", "Ana Souza"), ("c-bob", "Bob Lima")], "customer_key string, display_name string"),
        # her conversation's row without a key (written before her key was known): it goes by its id
        ("gold", "interaction_tones"): spark.createDataFrame(
            [("c1", None, "friendly"), ("c2", "c-bob", "concise"), ("wa:m1", "c-ana", "formal")],
            "interaction_id string, customer_key string, tone string"),
        ("gold", "service_kpis"): spark.createDataFrame([("2026-03-02", 0.5)], "date string, fcr double"),
    }
    for (layer, table), frame in tables.items():
        partition = ["_arrival_date"] if layer == "bronze" else []
        lake.write(layer, table, frame, mode="overwrite", partition_by=partition)


@pytest.fixture
def lake(spark, settings, tmp_path, request):
    """The hand-made lakehouse, on the delta-spark engine (the one test of the erasure itself takes both)."""
    name = getattr(request, "param", "delta-spark")
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=ENGINES[name](spark, settings.storage))
    _fill(spark, lake)
    return lake


def _holds(text: str, value: str) -> bool:
    """The value as a whole word (joana@x.com, a survivor, does not hold ana@x.com)."""
    return re.search(rf"(?<![a-z0-9]){re.escape(value.lower())}(?![a-z0-9])", text) is not None


def _texts_in_files_of(paths) -> str:
    return "\n".join(json.dumps(pq.read_table(p).to_pylist(), default=str) for p in paths).lower()


def _texts_in_files(folder: Path) -> str:
    """Every value of every Parquet file under a folder (every version still on disk), as one text."""
    return _texts_in_files_of(glob.glob(f"{folder}/**/*.parquet", recursive=True))


@pytest.mark.parametrize("lake", sorted(ENGINES), indirect=True)
def test_forget_removes_the_customer_everywhere_and_keeps_the_others(spark, settings, lake, monkeypatch):
    monkeypatch.setenv(settings.privacy.salt_env, "test-salt")
    report = forget(spark, settings, lake, [parse_subject("email: Ana@X.com ")], retention_hours=0)
    assert report.customer_keys == 1 and report.identifiers == 3 and not report.unknown
    assert report.models_to_retrain == []  # no model store beside these tables

    def ids(layer, table, column):
        return sorted(r[0] for r in lake.read(layer, table).select(column).collect())

    assert ids("bronze", "conversations", "conversation_id") == ["c2"]
    assert ids("bronze", "crm", "crm_id") == ["CRM-2"]
    assert ids("bronze", "surveys", "response_id") == ["r2"]  # r3 named Ana though keyed to Bob
    messages = lake.read("bronze", "whatsapp").select(F.explode("messages.message_id")).collect()
    assert [r[0] for r in messages] == ["m2"]
    assert lake.read("bronze", "whatsapp").count() == 2  # the payload of m3 alone is gone
    [status] = lake.read("bronze", "whatsapp").where(F.col("payload_kind") == "statuses").collect()
    assert status["_extra"] == {"object": "whatsapp"}  # the status naming her number left, the row stays
    # whole words only: joana@x.com is not ana@x.com
    assert sorted(r["raw"] for r in lake.read("bronze", "quarantine").collect()) == sorted([
        '{"email": "joana@x.com", "score": "dez"}', "c8,2026-03-01,(21) 98765-4321,??"])
    assert ids("silver", "identity_map", "customer_key") == ["c-bob"] * 3
    assert ids("silver", "identity_merges", "surviving_key") == ["c-bob"]
    assert ids("silver", "record_keys", "record_id") == ["CRM-2", "c2", "m2", "r2"]
    assert ids("silver", "survey_responses", "response_id") == ["r2"]
    assert ids("silver", "interactions", "interaction_id") == ["c2"]
    assert ids("silver", "crm", "crm_id") == ["CRM-2"]
    assert ids("gold", "customer_profiles", "customer_key") == ["c-bob"]
    assert ids("gold", "interaction_tones", "interaction_id") == ["c2"]
    assert lake.read("gold", "service_kpis").count() == 1
    # others' rows may hold her messages (a shared thread): the next run rebuilds silver whole
    from atende.jobs.bookkeeping import silver_state

    assert "erased" in silver_state(lake)["rebuild_reason"]
    # vacuumed at once: no file of any version still on disk holds her
    on_disk = _texts_in_files(lake.root)
    for value in (*ANA, "99876-5432", "sou a ana"):
        assert not _holds(on_disk, value), value
    assert "bob@x.com" in on_disk
    # nor any table's log: no statistics of personal columns, no identifier in a DELETE's logged predicate
    logs = "\n".join(Path(p).read_bytes().decode("latin-1") for p in glob.glob(f"{lake.root}/*/*/_delta_log/**/*", recursive=True)
                     if Path(p).is_file() and not p.endswith(".parquet")).lower()
    logs += _texts_in_files_of(glob.glob(f"{lake.root}/*/*/_delta_log/*.parquet"))
    for value in (*ANA, "99876-5432", "sou a ana"):
        assert not _holds(logs, value), value
    # the request is recorded, without personal data; her identifiers are suppressed, hashed
    [erasure] = lake.read("ops", "erasures").collect()
    assert erasure["customer_keys"] == 1 and erasure["rows_removed"]["bronze.surveys"] == 2
    assert erasure["vacuum_retention_hours"] == 0 and erasure["retrained_by_run"] is None
    assert "ana" not in json.dumps(erasure.asDict(), default=str).lower()
    hashes = lake.read("ops", "suppressed_identifiers").collect()
    assert sorted(h["identifier_type"] for h in hashes) == sorted(
        ["crm_id", "email", "phone", "record:conversations", "record:crm", "record:surveys", "record:surveys",
         "record:whatsapp", "record:whatsapp"])
    assert not {h["identifier_hash"] for h in hashes} & set(ANA)
    # asking again finds nothing more and changes nothing
    again = forget(spark, settings, lake, [parse_subject("email:ana@x.com")], retention_hours=0)
    assert again.rows_removed == {} and again.unknown == ["email:ana@x.com"]
    assert lake.read("ops", "suppressed_identifiers").count() == len(hashes)
    assert lake.read("ops", "erasures").count() == 2


@pytest.mark.parametrize("lake", ["delta-rs"], indirect=True)  # the faster engine; forget itself is tested on both
def test_a_later_delivery_naming_an_erased_customer_is_dropped_before_bronze(spark, settings, lake, monkeypatch):
    monkeypatch.setenv(settings.privacy.salt_env, "test-salt")
    forget(spark, settings, lake, [Subject(customer_key="c-ana")], retention_hours=0)
    runner = Runner(spark, settings, None, lake.root)
    batch = {
        "conversations": bronze(spark, "conversations", [
            {"conversation_id": "c1", "channel": "webchat", "started_at": at(2), "customer": (None, " ANA@x.com", None, "Ana")},
            {"conversation_id": "c7", "channel": "webchat", "started_at": at(2), "customer": (None, "carla@x.com", None, "Carla")},
        ]),
        "whatsapp": bronze(spark, "whatsapp", [_payload(_wa("m1", "5511998765432", "Ana", "oi"), _wa("m9", "5531988887777", "Carla", "oi")),
                                               _payload(_wa("m3", "5511998765432", "Ana", "obrigada"))]),
        # a response about her erased conversation, naming no identifier of hers
        "surveys": bronze(spark, "surveys", [
            {"response_id": "r8", "submitted_at": at(3), "survey": "csat", "score": 2, "contact_id": "c1"},
            {"response_id": "r9", "submitted_at": at(3), "survey": "csat", "score": 4, "contact_id": "c7"}]),
        "crm": bronze(spark, "crm", [{"crm_id": "CRM-1", "full_name": "Ana Souza", "updated_at": at(3)}]),
    }
    kept = runner._suppress(batch, JobRecord("ingest", utc_now()))
    assert [r[0] for r in kept["conversations"].select("conversation_id").collect()] == ["c7"]
    assert [r[0] for r in kept["whatsapp"].select(F.explode("messages.message_id")).collect()] == ["m9"]
    assert kept["whatsapp"].count() == 1  # the payload holding her message alone is dropped
    assert [r[0] for r in kept["surveys"].select("response_id").collect()] == ["r9"]
    assert kept["crm"].count() == 0
    counts = {(r["source"], r["records"]) for r in runner._suppressed_counts.collect()}
    assert counts == {("conversations", 1), ("whatsapp", 2), ("crm", 1), ("surveys", 1)}
    # malformed lines naming her address or her number, as written, stay out of the quarantine too
    lines = spark.createDataFrame([
        ("surveys", "f9", '{"email": "Ana@X.com", "score": "dez"}'), ("calls", "f9", "c1,2026-03-09,(11) 99876-5432,??"),
        ("surveys", "f9", '{"email": "joana@x.com", "score": "dez"}'), ("calls", "f9", "c2,2026-03-09,,??"),
    ], "source string, _source_file string, raw string")
    kept_lines = runner._suppress_lines(lines)
    assert sorted(r["raw"] for r in kept_lines.collect()) == sorted(['{"email": "joana@x.com", "score": "dez"}',
                                                                     "c2,2026-03-09,,??"])


@pytest.mark.parametrize("lake", ["delta-rs"], indirect=True)  # the faster engine; forget itself is tested on both
def test_a_suppression_list_hashed_with_another_salt_stops_the_run(spark, settings, lake, monkeypatch):
    monkeypatch.setenv(settings.privacy.salt_env, "first-salt")
    forget(spark, settings, lake, [Subject(customer_key="c-ana")], retention_hours=0)
    monkeypatch.setenv(settings.privacy.salt_env, "another-salt")
    with pytest.raises(RunFailed, match="hashed with another salt"):
        Runner(spark, settings, None, lake.root)._suppress({}, JobRecord("ingest", utc_now()))


@pytest.mark.parametrize("lake", ["delta-rs"], indirect=True)  # the faster engine; forget itself is tested on both
def test_without_a_salt_in_the_environment_the_lakehouse_keeps_one(spark, settings, lake, monkeypatch):
    monkeypatch.delenv(settings.privacy.salt_env, raising=False)
    forget(spark, settings, lake, [Subject(customer_key="c-ana")], retention_hours=1)
    salt = (lake.root / "ops" / "_suppression_salt").read_text().strip()
    assert len(salt) == 64
    forget(spark, settings, lake, [Subject(customer_key="c-bob")], retention_hours=1)  # the same salt again
    assert lake.read("ops", "suppressed_identifiers").select("salt_id").distinct().count() == 1


def test_export_subject_returns_every_row_held_about_one_customer(spark, settings, lake):
    document = export_subject(spark, settings, lake, parse_subject("phone:(21) 98765-4321"))
    assert document["customer_key"] == "c-bob"
    tables = document["tables"]
    # checked against the tables: every row of his key, and his bronze records
    for layer, table in (("silver", "identity_map"), ("silver", "interactions"), ("silver", "crm"),
                         ("gold", "customer_profiles"), ("silver", "identity_merges")):
        frame = lake.read(layer, table)
        column = "surviving_key" if table == "identity_merges" else "customer_key"
        assert len(tables[f"{layer}.{table}"]) == frame.where(F.col(column) == "c-bob").count() > 0
    assert sorted(r["response_id"] for r in tables["bronze.surveys"]) == ["r2", "r3"]
    assert [r["message_id"] for r in tables["bronze.whatsapp"]] == ["m2"]
    assert "gold.service_kpis" not in tables and "bronze.quarantine" not in tables
    with pytest.raises(PrivacyError, match="no customer"):
        export_subject(spark, settings, lake, parse_subject("email:nobody@x.com"))


def test_erasures_flag_the_models_until_a_run_retrains_them(spark, settings, lake):
    from atende.jobs.privacy import ERASURES

    now = utc_now()
    row = ("e1", now, 1, 1, 2, {"silver.crm": 1}, 0, now, ["atende-tone"], None)
    lake.write("ops", "erasures", spark.createDataFrame([row, ("e2", now, 1, 0, 1, {}, 0, now, [], None)], ERASURES),
               mode="append")
    assert pending_retrains(lake) == ["e1"]
    mark_retrained(spark, lake, ["e1"], "run-9")
    assert pending_retrains(lake) == []
    assert lake.read("ops", "erasures").where("erasure_id = 'e1'").first()["retrained_by_run"] == "run-9"


@pytest.mark.parametrize("text, expected", [
    ("email:ana@x.com", Subject(identifier_type="email", value="ana@x.com")),
    ("handle:instagram:@ana", Subject(identifier_type="handle", value="instagram:@ana")),
    ("customer_key:c-1234", Subject(customer_key="c-1234")),
    ("c-1234", Subject(customer_key="c-1234")),
])
def test_subjects_are_read_as_written(text, expected):
    assert parse_subject(text) == expected


def test_a_request_file_with_a_bad_line_names_the_line():
    with pytest.raises(PrivacyError, match="line 3: unknown identifier type 'mail'"):
        read_subjects(["# request 12", "email:a@x.com", "mail:b@x.com"])


def test_an_identifier_that_is_not_one_is_refused(spark, settings, lake):
    with pytest.raises(PrivacyError, match="not a valid identifier: email:not-an-address"):
        forget(spark, settings, lake, [parse_subject("email:not-an-address")], retention_hours=0)
    assert not lake.exists("ops", "erasures")


def test_the_forget_command_refuses_a_request_without_subjects(tmp_path):
    done = subprocess.run([sys.executable, "-m", "atende.jobs.cli", "forget", "--lakehouse", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "forget needs --customer-key, --identifier or --file" in done.stderr
