"""Incremental identity (pipelines/identity/regions.py) on tiny hand-made observations: the regions, and a
resolution of the changed regions only that ends where a resolution of every record ends."""
from __future__ import annotations

import datetime as dt

from bronze_frames import at
from pyspark.sql import functions as F

from atende.pipelines.identity import resolve_identities_with_report
from atende.pipelines.identity.regions import (
    IdentityState,
    identity_regions,
    regions_to_resolve,
    resolve_identities_incrementally,
    whole_regions,
)
from atende.pipelines.identity.resolution import company_identifiers
from atende.pipelines.schemas import IDENTIFIER_OBSERVATIONS

UTC = dt.timezone.utc
RUN1 = dt.datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
RUN2 = dt.datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
FAMILY = "+5511955550000"


def crm(crm_id: str, name: str, phone: str | None = None, birth: str | None = None, when=None) -> list[tuple]:
    when = when or at(1, 1)
    return [
        ("crm", crm_id, "crm_id", crm_id, when),
        ("crm", crm_id, "name", name, when),
        *([("crm", crm_id, "phone", phone, when)] if phone else []),
        *([("crm", crm_id, "birth_date", birth, when)] if birth else []),
    ]


DAY1 = [
    # a family phone (two CRM customers: held back) and a chat whose typed name places it with one of them
    *crm("crm-carla", "carla prado", FAMILY, "1970-03-03"),
    *crm("crm-bruno", "bruno henrique prado", FAMILY, "1968-04-04"),
    ("conversations", "cv-bruno", "phone", FAMILY, at(2)),
    ("conversations", "cv-bruno", "name", "bruno prado", at(2)),
    # an Instagram-only customer placed by a full typed name with the one CRM customer of that name
    *crm("crm-helena", "helena maria costa duarte", "+5541977778888"),
    ("conversations", "ig-helena", "handle", "instagram:helena_d", at(2, 3)),
    ("conversations", "ig-helena", "name", "helena maria duarte", at(2, 3)),
    # a call, the survey about it naming a CRM id, and an e-mail thread whose agent reply has no identifier
    *crm("crm-lia", "lia souza"),
    ("calls", "call-lia", "phone", "+5531955556666", at(3)),
    ("calls", "call-lia", "interaction", "call-lia", at(3)),
    ("surveys", "s-lia", "interaction", "call-lia", at(3, 2)),
    ("surveys", "s-lia", "crm_id", "crm-lia", at(3, 2)),
    ("email", "m-1", "email", "lia@x.com", at(3, 4)),
    ("email", "m-1", "email_thread", "m-1", at(3, 4)),
    ("email", "m-2", "email_thread", "m-1", at(3, 5)),
    # two strangers who will turn out to be one, and a customer nothing will touch
    ("conversations", "cv-x1", "email", "x1@example.org", at(4)),
    ("conversations", "cv-x2", "phone", "+5511988880001", at(4, 2)),
    *crm("crm-rui", "rui costa", "+5511933334444"),
    ("calls", "call-rui", "phone", "+5511933334444", at(4, 3)),
    ("whatsapp", "wamid.gone", "phone", "+5511977771111", at(4, 4)),
    ("whatsapp", "wamid.gone", "device_id", "dev-9", at(4, 4)),
    ("conversations", "cv-dev", "device_id", "dev-9", at(4, 5)),
]

DAY2 = [
    # a second CRM customer of Helena's first and last name: the name no longer points to one customer
    *crm("crm-helena2", "helena duarte", "+5541911110000", when=at(5)),
    # the strangers: one record carrying both identifiers (a merge), with an address seen earlier
    ("surveys", "s-x", "email", "x1@example.org", at(5, 2)),
    ("surveys", "s-x", "phone", "+5511988880001", at(5, 2)),
    ("surveys", "s-x", "email", "x.old@example.org", at(1, 0)),
    # Lia's e-mail thread gets a message from her phone's owner: the call and the thread are one customer
    ("email", "m-3", "email", "lia@x.com", at(5, 3)),
    ("email", "m-3", "phone", "+5531955556666", at(5, 3)),
    ("email", "m-3", "email_thread", "m-1", at(5, 3)),
    # a third CRM customer on the family phone: still held back, the chat stays with Bruno
    *crm("crm-davi", "davi prado", FAMILY, "2001-01-01", when=at(5, 4)),
]


def obs(spark, rows):
    return spark.createDataFrame(rows, IDENTIFIER_OBSERVATIONS)


def rows_of(df, drop=("run_id", "_written_at", "merged_at")):
    return sorted(tuple(r[c] for c in df.columns if c not in drop) for r in df.collect())


def state_after(spark, settings, rows):
    o = obs(spark, rows)
    whole = resolve_identities_with_report(o, None, settings, "run-1", RUN1)
    stamped = whole.record_keys.withColumn("run_id", F.lit("run-1"))
    return whole, IdentityState(
        identity_map=whole.identity_map, record_keys=stamped, exceptions=whole.exceptions,
        regions=whole_regions(o, company_identifiers(o, settings.identity), settings))


def test_regions_follow_identifiers_groups_and_the_name_blocks_a_full_name_looks_at(spark, settings):
    o = obs(spark, DAY1)
    regions = identity_regions(o, company_identifiers(o, settings.identity), settings.identity)
    region = {(r.source, r.record_id): r.region for r in regions.records.collect()}
    # the family phone joins both registrations and the chat, held back or not
    assert region[("crm", "crm-carla")] == region[("crm", "crm-bruno")] == region[("conversations", "cv-bruno")]
    # a full name typed outside the CRM joins the CRM registrations of its first and last name
    assert region[("conversations", "ig-helena")] == region[("crm", "crm-helena")]
    # the survey joins the call it names; the agent's reply joins its thread
    assert region[("calls", "call-lia")] == region[("surveys", "s-lia")] == region[("crm", "crm-lia")]
    assert region[("email", "m-1")] == region[("email", "m-2")] != region[("crm", "crm-lia")]
    # nothing joins a CRM registration whose name block no full name looks at, nor the two strangers (yet)
    assert len({region[("crm", "crm-rui")], region[("crm", "crm-helena")], region[("conversations", "cv-x1")],
                region[("conversations", "cv-x2")]}) == 4
    ids = {(r.identifier_type, r.identifier): r.region for r in regions.identifiers.collect()}
    assert ids[("phone", FAMILY)] == region[("crm", "crm-carla")]
    assert len(region) == len({(r[0], r[1]) for r in DAY1})


def test_a_changed_record_reopens_its_old_region_and_its_new_one(spark):
    schema = "source string, record_id string, region long, fingerprint long"
    stored = spark.createDataFrame([("s", "a", 1, 10), ("s", "b", 1, 11), ("s", "c", 2, 12), ("s", "d", 3, 13),
                                    ("s", "gone", 4, 14), ("s", "e", 4, 15)], schema)
    # a left b's region for c's; d is untouched; `gone` left the data, so its old region (e) is reopened
    current = spark.createDataFrame([("s", "a", 20, 99), ("s", "b", 21, 11), ("s", "c", 20, 12),
                                     ("s", "d", 3, 13), ("s", "e", 22, 15), ("s", "new", 23, 16)], schema)
    touched = {r.region for r in regions_to_resolve(current, stored).collect()}
    assert touched == {20, 21, 22, 23}


def test_resolving_the_changed_regions_ends_where_resolving_every_record_ends(spark, settings):
    _, state = state_after(spark, settings, DAY1)
    # day 2 adds records, and one record of day 1 is gone (a re-delivered day without it)
    day2 = [r for r in DAY1 if r[1] != "wamid.gone"] + DAY2
    o = obs(spark, day2)
    expected = resolve_identities_with_report(o, state.identity_map, settings, "run-2", RUN2)
    done = resolve_identities_incrementally(o, state, settings, "run-2", RUN2)
    got = done.resolution
    assert rows_of(got.identity_map) == rows_of(expected.identity_map)
    assert rows_of(got.record_keys) == rows_of(expected.record_keys)
    assert rows_of(got.exceptions) == rows_of(expected.exceptions)
    assert rows_of(got.merges) == rows_of(expected.merges)
    assert rows_of(done.regions) == rows_of(whole_regions(o, company_identifiers(o, settings.identity), settings))
    # what the day changed, and only that, was resolved again: Rui's region was left as it was
    keys = {(r.source, r.record_id): r.customer_key for r in got.record_keys.collect()}
    assert keys[("crm", "crm-helena")] != keys[("conversations", "ig-helena")], "two Helenas: no name-only link"
    assert keys[("conversations", "cv-x1")] == keys[("conversations", "cv-x2")] == keys[("surveys", "s-x")]
    assert keys[("email", "m-2")] == keys[("calls", "call-lia")] == keys[("crm", "crm-lia")]
    assert keys[("conversations", "cv-bruno")] == keys[("crm", "crm-bruno")]
    assert ("whatsapp", "wamid.gone") not in keys
    assert 0 < done.records_resolved < done.records
    assert done.records == len({(r[0], r[1]) for r in day2})


def test_unchanged_data_resolves_nothing_and_a_new_company_number_reopens_its_records(spark, settings):
    _, state = state_after(spark, settings, DAY1)
    unchanged = resolve_identities_incrementally(obs(spark, DAY1), state, settings, "run-2", RUN2)
    assert unchanged.records_resolved == 0
    assert rows_of(unchanged.resolution.record_keys) == rows_of(state.record_keys.drop("run_id"))
    # the data now names Rui's phone as the company's own: his records' fingerprints change
    o = obs(spark, DAY1 + [("company", "company", "company_phone", "+5511933334444", at(5))])
    done = resolve_identities_incrementally(o, state, settings, "run-2", RUN2)
    expected = resolve_identities_with_report(o, state.identity_map, settings, "run-2", RUN2)
    assert rows_of(done.resolution.record_keys) == rows_of(expected.record_keys)
    assert rows_of(done.resolution.exceptions) == rows_of(expected.exceptions)
    assert rows_of(done.resolution.identity_map) == rows_of(expected.identity_map)
    # crm-rui; the call carried that phone alone, so it is no customer's record any more
    assert done.records_resolved == 1
    assert ("calls", "call-rui") not in {(r.source, r.record_id) for r in done.resolution.record_keys.collect()}
