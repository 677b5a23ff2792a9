"""Silver customers: contact points and survivorship, one rule per field, on hand-made frames."""
from __future__ import annotations

import datetime as dt

import pytest
import yaml

from atende.conf.settings import ConfigError, Settings, load_settings
from atende.pipelines.customers import build_customers, surviving_values
from atende.pipelines.schemas import CRM, CUSTOMERS, IDENTITY_MAP, stats_properties

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 20, tzinfo=UTC)


def ts(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, tzinfo=UTC)


def naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def crm_rows(spark, rows: list[dict]):
    base = {"_arrival_date": dt.date(2026, 3, 1), "run_id": "r", "_written_at": NOW}
    return spark.createDataFrame([tuple({**base, **r}.get(f.name) for f in CRM.fields) for r in rows], CRM)


def interactions(spark, rows: list[tuple]):
    return spark.createDataFrame(rows, "customer_key string, customer_name string, started_at timestamp")


def identity(spark, rows: list[tuple]):
    return spark.createDataFrame([(t, i, k, first, last, "r", NOW) for t, i, k, first, last in rows], IDENTITY_MAP)


def with_fields(tmp_path, fields: dict) -> Settings:
    path = tmp_path / "survivorship.yaml"
    path.write_text(yaml.safe_dump({"survivorship": {"fields": fields}}), encoding="utf-8")
    return load_settings("local", conf_file=path, environ={})


@pytest.fixture()
def sources(spark):
    crm = crm_rows(spark, [
        # K1 has two CRM registrations; the newest row of either is the newest row of K1
        {"crm_id": "CRM-1", "updated_at": ts(1), "full_name": "Ana Silva", "city": "Recife", "gender": "F",
         "marketing_consent": True, "consent_updated_at": ts(1), "customer_key": "K1"},
        {"crm_id": "CRM-1", "updated_at": ts(5), "full_name": "Ana Souza", "city": None, "gender": "F",
         "marketing_consent": None, "consent_updated_at": None, "customer_key": "K1"},
        {"crm_id": "CRM-9", "updated_at": ts(3), "full_name": "Ana S.", "city": "Olinda", "profession": "nurse",
         "customer_key": "K1"},
        # a registration identity resolution did not keep: no key, nobody's values
        {"crm_id": "CRM-X", "updated_at": ts(9), "full_name": "Zé", "customer_key": None},
    ])
    chats = interactions(spark, [
        ("K1", "ana", ts(2)),
        ("K2", "Bia", ts(2)), ("K2", " Bia ", ts(3)), ("K2", "Beatriz", ts(4)), ("K2", "", ts(6)),
        (None, "ghost", ts(2)),
    ])
    ids = identity(spark, [
        ("crm_id", "CRM-1", "K1", ts(1), ts(5)), ("crm_id", "CRM-9", "K1", ts(3), ts(3)),
        ("email", "ana@a.com", "K1", ts(1), ts(2)), ("email", "ana@b.com", "K1", ts(3), ts(4)),
        ("phone", "+5581999990000", "K1", ts(1), ts(1)),
        ("email", "bia@a.com", "K2", ts(2), ts(4)),
        ("whatsapp_user_id", "5521988887777", "K3", ts(6), ts(6)),
    ])
    return crm, chats, ids


def test_one_row_per_key_with_contact_points_and_surviving_values(spark, settings, sources):
    crm, chats, ids = sources
    got = build_customers(ids, crm, chats, settings, "run-1", NOW)

    assert [(f.name, f.dataType) for f in got.schema] == [(f.name, f.dataType) for f in CUSTOMERS]
    rows = {r.customer_key: r for r in got.collect()}
    assert sorted(rows) == ["K1", "K2", "K3"]
    k1, k2, k3 = rows["K1"], rows["K2"], rows["K3"]
    assert (k1.crm_ids, k1.emails, k1.phones) == (["CRM-1", "CRM-9"], ["ana@a.com", "ana@b.com"], ["+5581999990000"])
    assert (k1.first_seen_at, k1.last_seen_at) == (naive(ts(1)), naive(ts(5)))
    # the CRM's newest non-empty name and city: the newest row (CRM-1 on day 5) has no city, CRM-9's day 3 has
    assert (k1.display_name, k1.city, k1.gender, k1.profession) == ("Ana Souza", "Olinda", "F", "nurse")
    # consent as the newest row states it: blank there, so none (the older "yes" does not survive)
    assert (k1.marketing_consent, k1.consent_updated_at) == (None, None)
    # the e-mail seen most recently
    assert (k1.email, k1.phone) == ("ana@b.com", "+5581999990000")
    assert k1.value_sources == {"display_name": "crm", "city": "crm", "gender": "crm", "profession": "crm",
                                "email": "identifiers", "phone": "identifiers"}
    # no CRM: the name given most often in chats (trimmed; blanks are not names)
    assert (k2.display_name, k2.value_sources["display_name"]) == ("Bia", "interactions")
    assert (k2.email, k2.city, k2.crm_ids) == ("bia@a.com", None, [])
    # a key with nothing but a WhatsApp id still has its row
    assert (k3.display_name, k3.emails, k3.value_sources) == (None, [], {})


def test_survivorship_is_configuration(spark, sources, tmp_path):
    crm, chats, ids = sources
    settings = with_fields(tmp_path, {
        # chat names first (most recent), then the CRM; city by the most frequent value
        "display_name": {"rule": "source_priority", "sources": ["interactions", "crm"]},
        "city": {"rule": "most_frequent", "sources": ["crm"]},
        "marketing_consent": {"rule": "most_recent", "sources": ["crm"]},
    })
    # fields not named keep their default rule
    assert settings.survivorship.fields["gender"].rule == "most_recent"
    got = {r.customer_key: r for r in surviving_values(
        settings, ["display_name", "city", "marketing_consent"], crm=crm, interactions=chats).collect()}
    assert got["K1"].display_name == "ana"
    assert got["K2"].display_name == "Beatriz"  # the most recent of K2's chat names now
    assert got["K1"].city in {"Recife", "Olinda"}  # one row each: a tie goes to the newest
    assert got["K1"].city == "Olinda"
    assert got["K1"].marketing_consent is True  # the newest non-empty consent, as configured


def test_a_cut_sees_the_customer_as_they_were(spark, settings, sources):
    crm, _, _ = sources
    (k1,) = surviving_values(settings, ["display_name", "city", "marketing_consent"],
                             crm=crm.where(crm.updated_at < naive(ts(3)))).collect()
    assert (k1.display_name, k1.city, k1.marketing_consent) == ("Ana Silva", "Recife", True)


@pytest.mark.parametrize("fields, message", [
    ({"shoe_size": {"rule": "latest", "sources": ["crm"]}}, "unknown field 'shoe_size'"),
    ({"city": {"rule": "latest", "sources": ["interactions"]}}, "source 'interactions' does not supply it"),
    ({"city": {"rule": "newest", "sources": ["crm"]}}, "survivorship.fields.city.rule"),
    ({"display_name": {"rule": "source_priority", "sources": ["crm"], "within": {"interactions": "most_frequent"}}},
     "not among its sources"),
])
def test_a_bad_rule_fails_at_load_naming_the_field(fields, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        with_fields(tmp_path, fields)


def test_defaults_cover_every_field(settings: Settings):
    assert set(settings.survivorship.fields) == {f.name for f in CUSTOMERS.fields} - {
        "customer_key", "crm_ids", "emails", "phones", "first_seen_at", "last_seen_at", "value_sources", "run_id",
        "_written_at"}


def test_contact_points_and_names_stay_out_of_the_delta_log():
    kept = stats_properties("silver", "customers", CUSTOMERS, ())["delta.dataSkippingStatsColumns"].split(",")
    assert "customer_key" in kept and "city" in kept
    for personal in ("crm_ids", "emails", "phones", "display_name", "email", "phone", "birth_date"):
        assert personal not in kept


def test_a_configured_field_replaces_its_default_rule_whole(tmp_path):
    # nothing of the default rule (its `within`) carries into the user's: a rule naming only the CRM loads
    settings = with_fields(tmp_path, {"display_name": {"rule": "most_recent", "sources": ["crm"]}})
    assert settings.survivorship.fields["display_name"].model_dump() == {
        "rule": "most_recent", "sources": ("crm",), "within": {}}
