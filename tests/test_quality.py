"""Quality gates: clean tables pass, each kind of defect is a hard failure naming table and
expectation, thin customer coverage only warns, and every run leaves Data Docs HTML.

GE contexts are slow to start, so each scenario runs the gates once (module scope) and
several tests read its results.
"""
from __future__ import annotations

import datetime as dt
import logging
import socket

import pytest

from atende.jobs.quality import GateResult, QualityGateFailed, enforce, run_quality_gates
from atende.pipelines import schemas

T0 = dt.datetime(2024, 5, 1, 12, 0)
DAY = dt.date(2024, 5, 1)


def _rows(schema, rows, **defaults):
    """Full rows of `schema` from partial dicts: missing columns are null or the defaults."""
    names = schema.fieldNames()
    return [tuple({**defaults, **row}.get(n) for n in names) for row in rows]


def _interactions(spark, rows):
    return spark.createDataFrame(
        _rows(schemas.INTERACTIONS, rows, _arrival_date=DAY, run_id="r1", _written_at=T0), schemas.INTERACTIONS)


def _responses(spark, rows):
    return spark.createDataFrame(
        _rows(schemas.SURVEY_RESPONSES, rows, _arrival_date=DAY, run_id="r1", _written_at=T0),
        schemas.SURVEY_RESPONSES)


def _identity(spark, rows):
    return spark.createDataFrame(
        _rows(schemas.IDENTITY_MAP, rows, first_seen_at=T0, last_seen_at=T0, run_id="r1", _written_at=T0),
        schemas.IDENTITY_MAP)


def _calls(spark, rows):
    return spark.createDataFrame(
        _rows(schemas.BRONZE_CALLS, rows, _source_file="calls/2024-05-01/a.csv", _arrival_date=DAY,
              _ingested_at=T0, run_id="r1"),
        schemas.BRONZE_CALLS)


def _recommendations(spark, rows):
    from atende.pipelines.schemas_gold import RECOMMENDATIONS

    defaults = dict(tone="formal", tone_confidence=0.6, products=[], next_best_action="kb_article", nba_score=1.5,
                    reasons=["rule: eligible"], model_versions={"tone": "1"}, holdout=False, as_of=T0, valid_from=T0,
                    valid_until=T0 + dt.timedelta(days=1), run_id="r1", _written_at=T0)
    return spark.createDataFrame(_rows(RECOMMENDATIONS, rows, **defaults), RECOMMENDATIONS)


def _merges(spark, rows):
    return spark.createDataFrame(rows, schemas.IDENTITY_MERGES)


def _clean_tables(spark):
    return {
        "bronze.calls": _calls(spark, [
            {"call_id": "k1", "started_at": T0, "ani": "+5511988887777"},
            # a re-delivered call: bronze keeps it, so no uniqueness failure here
            {"call_id": "k1", "started_at": T0, "ani": "+5511988887777"},
            {"call_id": "k2", "started_at": T0, "ani": "+5511977776666"},
        ]),
        "silver.interactions": _interactions(spark, [
            {"interaction_id": "c1", "channel": "webchat", "started_at": T0, "customer_key": "K1"},
            {"interaction_id": "c2", "channel": "whatsapp", "started_at": T0, "customer_key": "K1"},
            {"interaction_id": "k1", "channel": "voice", "started_at": T0, "customer_key": "K2"},
        ]),
        "silver.survey_responses": _responses(spark, [
            {"response_id": "s1", "submitted_at": T0, "survey": "csat", "score": 5, "customer_key": "K1"},
            {"response_id": "s2", "submitted_at": T0, "survey": "nps", "score": 10, "customer_key": "K2"},
            {"response_id": "s3", "submitted_at": T0, "survey": "ces", "score": 7, "customer_key": "K2"},
        ]),
        "silver.identity_map": _identity(spark, [
            {"identifier_type": "email", "identifier": "ana@x.com", "customer_key": "K1"},
            {"identifier_type": "phone", "identifier": "+5511988887777", "customer_key": "K2"},
            # same value, other type: not a duplicate
            {"identifier_type": "handle", "identifier": "ana@x.com", "customer_key": "K1"},
        ]),
        "silver.identity_merges": _merges(spark, [("K9", "K1", "merge", T0, "older-run")]),
        "gold.recommendations": _recommendations(spark, [
            {"customer_key": "K1", "products": [("P1", 0.9, 1), ("P2", 0.5, 2)]},
            {"customer_key": "K2", "tone": "friendly", "next_best_action": "no_action"},
        ]),
        "gold.something_unknown": _calls(spark, []),  # unknown keys are ignored
    }


def _loopback_only(connect):
    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost", "::1") and not str(host).startswith("/"):
            raise OSError(f"test is offline: connection to {address!r} refused")
        return connect(sock, address)
    return guarded


@pytest.fixture(scope="module")
def clean(spark, settings, tmp_path_factory):
    docs = tmp_path_factory.mktemp("quality") / "run-clean"
    # the gates and their Data Docs must work with no network (analytics off, no version check)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _loopback_only(socket.socket.connect))
        results = run_quality_gates(spark, settings, _clean_tables(spark), "run-clean", docs)
    return results, docs


@pytest.fixture(scope="module", params=["pandas", "spark"])
def defective(request, spark, settings, tmp_path_factory):
    """The same defective tables through both of GE's engines: collected in memory (the default for small
    tables) and validated on Spark (`quality.in_memory_max_rows: 0`, what large tables get)."""
    in_memory = settings.quality.in_memory_max_rows if request.param == "pandas" else 0
    tight = settings.model_copy(update={
        "identity": settings.identity.model_copy(update={"max_component_size": 2}),
        "quality": settings.quality.model_copy(update={"in_memory_max_rows": in_memory}),
    })
    tables = {
        "silver.interactions": _interactions(spark, [
            {"interaction_id": "c1", "channel": "webchat", "started_at": T0, "customer_key": "K1"},
            {"interaction_id": "c1", "channel": "webchat", "started_at": T0, "customer_key": "K1"},
            {"interaction_id": "c2", "channel": "carrier-pigeon", "started_at": T0, "customer_key": "K1"},
            {"interaction_id": "c3", "channel": "voice", "started_at": dt.datetime(2199, 1, 1),
             "customer_key": "K1"},
        ]),
        "silver.survey_responses": _responses(spark, [
            {"response_id": "s1", "submitted_at": T0, "survey": "csat", "score": 9, "customer_key": "K1"},
            {"response_id": "s2", "submitted_at": T0, "survey": "nps", "score": 9, "customer_key": "K1"},
        ]),
        "silver.identity_map": _identity(spark, [
            {"identifier_type": "email", "identifier": "ana@x.com", "customer_key": "K1"},
            {"identifier_type": "email", "identifier": "ana@x.com", "customer_key": "K2"},
            {"identifier_type": "phone", "identifier": "+5511988887777", "customer_key": "K1"},
            {"identifier_type": "handle", "identifier": "ana", "customer_key": "K1"},
        ]),
        "gold.recommendations": _recommendations(spark, [
            {"customer_key": "K1", "tone": "sarcastic", "tone_confidence": 1.5},
            {"customer_key": "K1", "next_best_action": "telepathy", "reasons": []},
            {"customer_key": "K3", "products": [("P1", 0.9, 1), ("P1", 0.8, 1)]},
            {"customer_key": "K4", "valid_until": T0 - dt.timedelta(hours=1)},
        ]),
    }
    docs = tmp_path_factory.mktemp("quality") / "run-bad"
    return {r.table: r for r in run_quality_gates(spark, tight, tables, "run-bad", docs)}


@pytest.mark.slow
def test_clean_tables_pass_without_warnings(clean):
    results, _ = clean
    assert {r.table for r in results} == {
        "bronze.calls", "silver.interactions", "silver.survey_responses", "silver.identity_map",
        "gold.recommendations"}
    for result in results:
        assert result.passed, result.hard_failures
        assert result.hard_failures == [] and result.warnings == [], result
    enforce(results)  # no exception


@pytest.mark.slow
def test_data_docs_html_is_written_per_run(clean):
    _, docs = clean
    assert (docs / "index.html").is_file()
    pages = list((docs / "validations").rglob("*.html"))
    names = " ".join(str(p) for p in pages)
    assert "silver.interactions" in names and "silver.identity_map.health" in names
    assert "run-clean" in names  # the run id names the folder of each result


def _failure(result: GateResult, expectation: str, *fragments: str) -> str:
    hits = [m for m in result.hard_failures if f"[{expectation}]" in m and all(f in m for f in fragments)]
    assert hits, f"no {expectation} failure with {fragments} in {result.hard_failures}"
    assert hits[0].startswith(f"{result.table}: ")
    assert "\n" not in hits[0]
    return hits[0]


@pytest.mark.slow
def test_duplicate_interaction_id_is_a_hard_failure(defective):
    message = _failure(defective["silver.interactions"], "expect_column_values_to_be_unique", "interaction_id")
    assert "2 of 4 rows" in message and "'c1'" in message


@pytest.mark.slow
def test_unknown_channel_is_a_hard_failure(defective):
    message = _failure(defective["silver.interactions"], "expect_column_values_to_be_in_set", "channel")
    assert "carrier-pigeon" in message


@pytest.mark.slow
def test_timestamp_in_2199_is_a_hard_failure(defective):
    message = _failure(defective["silver.interactions"], "expect_column_values_to_be_between", "started_at")
    assert "2199" in message


@pytest.mark.slow
def test_csat_score_of_9_is_a_hard_failure_but_nps_9_is_fine(defective):
    result = defective["silver.survey_responses"]
    _failure(result, "expect_column_values_to_be_between", "csat score between 1 and 5", "9")
    assert not [m for m in result.hard_failures if "nps" in m]


@pytest.mark.slow
def test_identity_duplicates_and_oversized_components_are_hard_failures(defective):
    result = defective["silver.identity_map"]
    _failure(result, "expect_compound_columns_to_be_unique", "identifier_type + identifier")
    _failure(result, "expect_column_values_to_be_between", "more than 2 identifiers", "3")


@pytest.mark.slow
def test_recommendations_off_contract_are_hard_failures(defective):
    result = defective["gold.recommendations"]
    assert not result.passed
    _failure(result, "expect_column_values_to_be_unique", "one row per customer_key", "'K1'")
    _failure(result, "expect_column_values_to_be_in_set", "catalogue's tones", "sarcastic")
    _failure(result, "expect_column_values_to_be_between", "tone_confidence is a probability", "1.5")
    _failure(result, "expect_column_values_to_be_in_set", "action catalogue", "telepathy")
    _failure(result, "expect_column_values_to_be_in_set", "ranked 1..n, each product once")
    _failure(result, "expect_column_values_to_be_between", "carries its reasons")
    _failure(result, "expect_column_pair_values_a_to_be_greater_than_b", "valid_until is after valid_from")


@pytest.mark.slow
def test_enforce_raises_one_line_naming_tables_and_expectations(defective):
    with pytest.raises(QualityGateFailed) as raised:
        enforce(list(defective.values()))
    message = str(raised.value)
    assert "\n" not in message
    for table in ("silver.interactions", "silver.survey_responses", "silver.identity_map"):
        assert table in message
    assert "expect_column_values_to_be_unique" in message


@pytest.mark.slow
def test_many_missing_customer_keys_warn_but_pass(spark, settings, tmp_path, caplog):
    interactions = _interactions(spark, [
        {"interaction_id": f"c{i}", "channel": "webchat", "started_at": T0,
         "customer_key": "K1" if i == 0 else None}
        for i in range(5)
    ])
    calls = _calls(spark, [{"call_id": "k1", "started_at": T0, "ani": None},
                           {"call_id": "k2", "started_at": T0, "ani": None}])
    results = {r.table: r for r in run_quality_gates(
        spark, settings, {"silver.interactions": interactions, "bronze.calls": calls}, "run-warn", tmp_path)}
    assert results["silver.interactions"].passed and results["bronze.calls"].passed
    [warning] = results["silver.interactions"].warnings
    assert warning.startswith("silver.interactions: expected at least 80% of rows have a customer_key")
    assert "4 of 5 rows" in warning
    [bronze_warning] = results["bronze.calls"].warnings
    assert "carry an identifier" in bronze_warning
    with caplog.at_level(logging.WARNING, logger="atende.jobs.quality"):
        enforce(list(results.values()))
    assert "have a customer_key" in caplog.text


def test_enforce_logs_warnings_and_raises_only_on_hard_failures(caplog):
    ok = GateResult("silver.interactions", True, [], ["silver.interactions: expected at least 80% ..."])
    bad = GateResult("silver.survey_responses", False,
                     ["silver.survey_responses: expected csat score between 1 and 5 [expect_column_values_"
                      "to_be_between]: 1 of 2 rows fail (e.g. 9)"], [])
    with caplog.at_level(logging.WARNING, logger="atende.jobs.quality"):
        enforce([ok])
    assert "at least 80%" in caplog.text
    with pytest.raises(QualityGateFailed, match=r"^quality gate failed for silver.survey_responses: .*csat"):
        enforce([ok, bad])


@pytest.mark.slow
def test_keyed_tables_fail_on_a_missing_or_repeated_key_and_pass_otherwise(spark, settings, tmp_path):
    orders = spark.createDataFrame(_rows(schemas.ORDERS, [
        {"order_id": "o1", "ordered_at": T0, "product_id": "p1"},
        {"order_id": "o1", "ordered_at": T0, "product_id": "p2"},   # delivered twice into silver
    ], _arrival_date=DAY, run_id="r1", _written_at=T0), schemas.ORDERS)
    keys = spark.createDataFrame([("orders", "o1", "K1", "r1", T0), ("orders", "o2", None, "r1", T0)],
                                 schemas.RECORD_KEYS)
    # the base level's null dimension_value is a value of its own: (day, webchat, base) and
    # (day, webchat, by queue q1) are two rows
    kpis = spark.createDataFrame([
        (DAY, "webchat", "date,channel", None), (DAY, "webchat", "date,channel,queue", "q1"),
    ], "date date, channel string, grouping_level string, dimension_value string")  # the key columns the gate reads
    results = {r.table: r for r in run_quality_gates(
        spark, settings, {"silver.orders": orders, "silver.record_keys": keys, "gold.service_kpis": kpis},
        "r1", tmp_path / "docs")}
    assert set(results) == {"silver.orders", "silver.record_keys", "gold.service_kpis"}
    assert not results["silver.orders"].passed
    assert any("order_id is unique" in f for f in results["silver.orders"].hard_failures)
    assert results["silver.record_keys"].passed and results["gold.service_kpis"].passed


@pytest.mark.slow
def test_tables_too_big_or_too_strange_for_memory_are_validated_on_spark(spark, settings, tmp_path, caplog):
    """Over `in_memory_max_rows` rows, or with a value pandas cannot hold (nanosecond timestamps end in 2262),
    a table is validated on Spark, with the same verdicts."""
    small = settings.model_copy(update={"quality": settings.quality.model_copy(update={"in_memory_max_rows": 2})})
    interactions = _interactions(spark, [
        {"interaction_id": f"c{i}", "channel": "webchat", "started_at": T0, "customer_key": "K1"} for i in range(3)
    ] + [{"interaction_id": "c0", "channel": "webchat", "started_at": T0, "customer_key": "K1"}])
    responses = _responses(spark, [
        {"response_id": "s1", "submitted_at": dt.datetime(2300, 1, 1), "survey": "nps", "score": 9,
         "customer_key": "K1"},
    ])
    with caplog.at_level(logging.DEBUG, logger="atende.jobs.quality"):
        results = {r.table: r for r in run_quality_gates(
            spark, small, {"silver.interactions": interactions, "silver.survey_responses": responses},
            "run-big", tmp_path)}
    assert "silver.survey_responses validated on Spark" in caplog.text
    message = _failure(results["silver.interactions"], "expect_column_values_to_be_unique", "interaction_id")
    assert "2 of 4 rows" in message and "'c0'" in message
    assert "2300" in _failure(results["silver.survey_responses"], "expect_column_values_to_be_between",
                              "submitted_at")


@pytest.mark.slow
def test_a_run_says_each_warning_once(spark, settings, tmp_path, caplog):
    """With a progress callback (the CLI's), a soft failure is shown there and not logged a second time;
    without one it is logged (issue #19)."""
    from atende.jobs.run import Runner

    interactions = _interactions(spark, [
        {"interaction_id": f"c{i}", "channel": "webchat", "started_at": T0, "customer_key": None} for i in range(3)
    ])
    shown: list[str] = []
    with caplog.at_level(logging.WARNING, logger="atende.jobs.quality"):
        Runner(spark, settings, None, tmp_path / "a", progress=shown.append)._gate(
            "silver", {"silver.interactions": interactions})
    assert [m for m in shown if "have a customer_key" in m] and "have a customer_key" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="atende.jobs.quality"):
        Runner(spark, settings, None, tmp_path / "b")._gate("silver", {"silver.interactions": interactions})
    assert caplog.text.count("have a customer_key") == 1
