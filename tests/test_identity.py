"""Identifier normalisation and identity resolution on tiny hand-made frames."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from pipelines.identity import (
    build_identifier_observations,
    connected_components,
    derived_key,
    resolve_identities,
    resolve_identities_with_report,
)
from bronze_frames import at, bronze
from pipelines.schemas import IDENTIFIER_OBSERVATIONS

UTC = dt.timezone.utc
RUN1 = dt.datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
RUN2 = dt.datetime(2026, 3, 9, 6, 0, tzinfo=UTC)



def observations(spark, rows: list[tuple]):
    """(source, record_id, identifier_type, identifier, seen_at) rows."""
    return spark.createDataFrame(rows, IDENTIFIER_OBSERVATIONS)


def keys_of(record_keys) -> dict[tuple[str, str], str | None]:
    return {(r.source, r.record_id): r.customer_key for r in record_keys.collect()}


def crm_row(crm_id: str, email: str | None, phone: str | None, updated: dt.datetime) -> dict:
    return {"crm_id": crm_id, "email": email, "phone": phone, "full_name": crm_id.upper(), "updated_at": updated}


# ---------------------------------------------------------------- normalisation
def test_same_phone_in_five_formats_is_one_identifier(spark, settings):
    formats = ["+55 11 99876-5432", "(11) 99876-5432", "011998765432", "5511998765432", "0 21 11 99876-5432"]
    calls = bronze(spark, "calls", [
        {"call_id": f"call-{i}", "started_at": at(1, 10 + i), "ani": ani} for i, ani in enumerate(formats)
    ] + [{"call_id": "call-bad", "started_at": at(1, 20), "ani": "12"}])

    obs = build_identifier_observations({"calls": calls}, settings).where("identifier_type = 'phone'")

    assert {(r.identifier_type, r.identifier) for r in obs.collect()} == {("phone", "+5511998765432")}
    assert obs.count() == 5  # the unparseable ani is not an identifier


def test_email_handle_and_blocklist_normalisation(spark, settings):
    conv = bronze(spark, "conversations", [
        {"conversation_id": "cv-1", "channel": "instagram", "started_at": at(1),
         "customer": (None, "  Ana.Souza@Example.COM ", "+5511999999999", "Ana", "@Ana_S", "d-1")},
        {"conversation_id": "cv-2", "channel": "webchat", "started_at": at(1),
         "customer": ("crm-9", "not an address", None, None, None, None)},
        {"conversation_id": "cv-3", "channel": "webchat", "started_at": at(1),
         "customer": (None, "teste@teste.com", None, None, None, None)},
    ])

    got = {(r.record_id, r.identifier_type, r.identifier) for r in build_identifier_observations({"conversations": conv}, settings).collect()}

    # +5511999999999 and teste@teste.com are blocklisted in conf/local.yaml; "interaction" rows group, never link
    assert got == {
        ("cv-1", "interaction", "cv-1"), ("cv-2", "interaction", "cv-2"), ("cv-3", "interaction", "cv-3"),
        ("cv-1", "email", "ana.souza@example.com"),
        ("cv-1", "handle", "instagram:ana_s"),
        ("cv-1", "device_id", "d-1"),
        ("cv-2", "crm_id", "crm-9"),
    }


# ---------------------------------------------------------------- graph algorithm
def test_connected_components_of_a_long_chain_and_an_island(spark):
    chain = [(f"n{i:02d}", f"n{i + 1:02d}") for i in range(12)][::-1]
    edges = spark.createDataFrame(chain + [("x2", "x1"), ("solo", "solo")], "src string, dst string")

    got = {r.node: r.component for r in connected_components(edges).collect()}

    assert got == {**{f"n{i:02d}": "n00" for i in range(13)}, "x1": "x1", "x2": "x1", "solo": "solo"}


# ---------------------------------------------------------------- resolution
FAMILY_PHONE = "+5511987654321"


# Limits stated here, not taken from conf/: a phone may reach up to 3 CRM customers, an e-mail 2.
TOWN_LIMITS = {"crm_id": 1, "email": 2, "phone": 3, "handle": 2, "device_id": 1}


@pytest.fixture(scope="module")
def town(spark, settings):
    """One resolution over several small, unconnected cases (one Spark run for all of them)."""
    settings = settings.model_copy(update={"identity": settings.identity.model_copy(
        update={"max_customers_per_identifier": TOWN_LIMITS})})
    crm = bronze(spark, "crm", [crm_row("crm-ana", "ana@x.com", "(11) 99876-5432", at(1, 8))])
    wa = bronze(spark, "whatsapp", [{
        "payload_kind": "messages",
        # an old account's wa_id: no ninth digit
        "messages": [("wamid.1", "551198765432", "Ana", at(1, 9), "text", "oi", "pn-1")],
    }])
    email = bronze(spark, "email", [
        {"message_id": "<m1@y.com>", "from_address": "Edu <edu@y.com>", "sent_at": at(1, 9)},
        {"message_id": "m2@atende.com.br", "in_reply_to": "m1@y.com", "from_address": "suporte@atende.com.br", "sent_at": at(1, 10)},
        {"message_id": "m3@atende.com.br", "references": ["m1@y.com"], "from_address": "suporte@atende.com.br", "sent_at": at(1, 11)},
    ])
    calls = bronze(spark, "calls", [{"call_id": "call-ana", "started_at": at(2, 9), "ani": "+55 11 99876-5432"}])
    surveys = bronze(spark, "surveys", [
        {"response_id": "s-ana", "submitted_at": at(2, 10), "survey": "nps", "score": 9, "contact_id": "call-ana"},
    ])
    conversations = bronze(spark, "conversations", [
        {"conversation_id": "cv-anon", "channel": "webchat", "started_at": at(2, 11), "customer": None},
    ])
    hand_made = observations(spark, [
        # four CRM customers give the same family phone; a call comes from it
        *[("crm", f"fam-{i}", "crm_id", f"fam-{i}", at(1, i)) for i in range(1, 5)],
        *[("crm", f"fam-{i}", "email", f"fam{i}@x.com", at(1, i)) for i in range(1, 5)],
        *[("crm", f"fam-{i}", "phone", FAMILY_PHONE, at(1, i)) for i in range(1, 5)],
        ("calls", "call-fam", "phone", FAMILY_PHONE, at(2)),
        # two CRM customers chat on one family tablet, each chat also naming its person's e-mail
        ("crm", "crm-bia", "crm_id", "crm-bia", at(1, 1)),
        ("crm", "crm-bia", "email", "bia@x.com", at(1, 1)),
        ("crm", "crm-caio", "crm_id", "crm-caio", at(1, 2)),
        ("crm", "crm-caio", "email", "caio@x.com", at(1, 2)),
        ("conversations", "cv-bia", "email", "bia@x.com", at(2)),
        ("conversations", "cv-bia", "device_id", "tablet", at(2)),
        ("conversations", "cv-caio", "email", "caio@x.com", at(3)),
        ("conversations", "cv-caio", "device_id", "tablet", at(3)),
        ("conversations", "cv-tablet", "device_id", "tablet", at(4)),
        # one person, two CRM records sharing an e-mail (allowed: up to 2 per e-mail): their phone's
        # device reaches 2 crm_ids (> 1 allowed per device) but everything it touches is one customer
        ("crm", "crm-dani", "crm_id", "crm-dani", at(1, 1)),
        ("crm", "crm-dani", "email", "dani@x.com", at(1, 1)),
        ("crm", "crm-dani2", "crm_id", "crm-dani2", at(1, 2)),
        ("crm", "crm-dani2", "email", "dani@x.com", at(1, 2)),
        ("conversations", "cv-dani", "email", "dani@x.com", at(2)),
        ("conversations", "cv-dani", "device_id", "dani-phone", at(2)),
        ("conversations", "cv-dani-app", "device_id", "dani-phone", at(3)),
    ])
    obs = build_identifier_observations(
        {"crm": crm, "whatsapp": wa, "email": email, "calls": calls, "surveys": surveys, "conversations": conversations},
        settings,
    ).unionByName(hand_made)
    resolution = resolve_identities_with_report(obs, None, settings, "run-1", RUN1)
    return {
        "keys": keys_of(resolution.record_keys),
        "map": {(r.identifier_type, r.identifier): r.customer_key for r in resolution.identity_map.collect()},
        "merges": resolution.merges.count(),
        "exceptions": sorted((r.kind, r.identifier, r.size) for r in resolution.exceptions.collect()),
    }


def test_wa_id_without_ninth_digit_joins_the_crm_customer(town):
    keys = town["keys"]
    assert keys[("whatsapp", "wamid.1")] == keys[("crm", "crm-ana")] is not None
    assert town["map"][("phone", "+5511998765432")] == keys[("crm", "crm-ana")]
    assert town["merges"] == 0


def test_phone_shared_by_several_crm_customers_does_not_merge_them(town):
    keys = town["keys"]
    crm_keys = {keys[("crm", f"fam-{i}")] for i in range(1, 5)}
    assert len(crm_keys) == 4  # at most 3 CRM customers per phone: 4 do not merge
    # the phone reaches four customers: it, and the call carrying only it, get a key of their own
    phone_key = town["map"][("phone", FAMILY_PHONE)]
    assert keys[("calls", "call-fam")] == phone_key
    assert phone_key not in crm_keys


def test_shared_device_does_not_merge_two_crm_customers(town):
    keys = town["keys"]
    assert keys[("crm", "crm-bia")] == keys[("conversations", "cv-bia")]
    assert keys[("crm", "crm-caio")] == keys[("conversations", "cv-caio")]
    assert keys[("crm", "crm-bia")] != keys[("crm", "crm-caio")]
    tablet_key = town["map"][("device_id", "tablet")]
    assert keys[("conversations", "cv-tablet")] == tablet_key
    assert tablet_key not in (keys[("crm", "crm-bia")], keys[("crm", "crm-caio")])


def test_held_back_device_keys_its_records_when_they_resolve_to_one_customer(town):
    keys = town["keys"]
    dani = {keys[("crm", "crm-dani")], keys[("crm", "crm-dani2")], keys[("conversations", "cv-dani")],
            keys[("conversations", "cv-dani-app")], town["map"][("device_id", "dani-phone")]}
    assert len(dani) == 1


def test_guards_report_what_they_held_back(town):
    assert town["exceptions"] == [
        ("shared_identifier", FAMILY_PHONE, 4),
        ("shared_identifier", "dani-phone", 2),
        ("shared_identifier", "tablet", 2),
    ]


def test_agent_email_inherits_its_threads_customer(town):
    keys = town["keys"]
    assert keys[("email", "m1@y.com")] == town["map"][("email", "edu@y.com")]
    assert keys[("email", "m2@atende.com.br")] == keys[("email", "m3@atende.com.br")] == keys[("email", "m1@y.com")]
    assert ("email", "suporte@atende.com.br") not in town["map"]


def test_survey_without_identifiers_inherits_the_call_it_names(town):
    keys = town["keys"]
    assert keys[("surveys", "s-ana")] == keys[("calls", "call-ana")] == keys[("crm", "crm-ana")]
    # a record with no identifier and nothing to inherit from is listed, without a key
    assert keys[("conversations", "cv-anon")] is None


@pytest.fixture(scope="module")
def two_runs(spark, settings):
    first = [
        ("crm", "crm-1", "crm_id", "crm-1", at(1, 8)),
        ("crm", "crm-1", "email", "ana@x.com", at(1, 8)),
        ("conversations", "cv-1", "email", "ana@x.com", at(1, 9)),
        ("conversations", "cv-2", "email", "ana.work@x.com", at(3, 9)),
    ]
    map1, merges1, keys1 = resolve_identities(observations(spark, first), None, settings, "run-1", RUN1)
    second = first + [
        # late-arriving: a sighting of Ana's phone older than anything seen before
        ("calls", "call-7", "phone", "+5511998765432", at(1, 1)),
        ("calls", "call-7", "email", "ana@x.com", at(1, 1)),
        # a new customer
        ("calls", "call-8", "phone", "+5521988887777", at(5)),
        # a chat shows both of Ana's addresses: the two customers of run 1 are one
        ("conversations", "cv-3", "email", "ana@x.com", at(6)),
        ("conversations", "cv-3", "email", "ana.work@x.com", at(6)),
    ]
    map2, merges2, keys2 = resolve_identities(observations(spark, second), map1, settings, "run-2", RUN2)
    return {
        "keys1": keys_of(keys1),
        "keys2": keys_of(keys2),
        "map1": {r.identifier: r.customer_key for r in map1.collect()},
        "map2": {r.identifier: r.customer_key for r in map2.collect()},
        "merges1": merges1.count(),
        "merges2": merges2,
    }


def test_first_key_is_derived_from_the_earliest_identifier(spark, two_runs):
    # crm-1 and ana@x.com are seen at the same instant: crm_id sorts before email
    expected = spark.range(1).select(derived_key(F.lit("crm_id"), F.lit("crm-1")).alias("k")).first().k
    assert two_runs["keys1"][("crm", "crm-1")] == two_runs["map1"]["crm-1"] == expected
    assert two_runs["keys1"][("conversations", "cv-2")] != expected
    assert two_runs["merges1"] == 0


def test_keys_survive_a_second_run_with_new_data(two_runs):
    ana = two_runs["keys1"][("crm", "crm-1")]
    keys = two_runs["keys2"]
    assert keys[("crm", "crm-1")] == keys[("calls", "call-7")] == keys[("conversations", "cv-1")] == ana
    assert two_runs["map2"]["+5511998765432"] == ana
    assert keys[("calls", "call-8")] not in (None, ana)


def test_merge_keeps_the_older_key_and_is_logged(spark, two_runs):
    older = two_runs["keys1"][("crm", "crm-1")]
    newer = two_runs["keys1"][("conversations", "cv-2")]
    assert two_runs["keys2"][("conversations", "cv-2")] == two_runs["keys2"][("conversations", "cv-3")] == older
    assert two_runs["map2"]["ana.work@x.com"] == older
    merges = two_runs["merges2"]
    assertDataFrameEqual(merges, spark.createDataFrame([(newer, older, RUN2, "run-2")], merges.schema))


def test_oversized_component_is_not_merged(spark, settings):
    small = settings.model_copy(update={"identity": settings.identity.model_copy(update={"max_component_size": 2})})
    obs = observations(spark, [
        ("conversations", "cv-1", "email", "a@x.com", at(1, 1)),
        ("conversations", "cv-1", "device_id", "d-1", at(1, 1)),
        ("conversations", "cv-2", "device_id", "d-1", at(1, 2)),
        ("conversations", "cv-2", "handle", "telegram:a", at(1, 2)),
    ])

    resolution = resolve_identities_with_report(obs, None, small, "run-1", RUN1)

    keys = keys_of(resolution.record_keys)
    # each record takes its most specific identifier's own key
    assert keys[("conversations", "cv-1")] != keys[("conversations", "cv-2")]
    assert resolution.identity_map.select("customer_key").distinct().count() == 3
    assert [(r.kind, r.size) for r in resolution.exceptions.collect()] == [("oversized_component", 3)]
