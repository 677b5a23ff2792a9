"""Gold service_kpis: CONTRACTS.md section 4 worked out by hand on a few interactions.

Business time zone America/Sao_Paulo (UTC-3 all year); FCR window 7 days; extra dimensions
agent_id, queue, topic (conf/local.yaml).
"""
from __future__ import annotations

import datetime as dt

import pytest

from pipelines.kpis import build_service_kpis
from pipelines.schemas import INTERACTIONS, SURVEY_RESPONSES
from pipelines.schemas_gold import SERVICE_KPIS

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 20, 6, 0, tzinfo=UTC)
DAY = dt.date(2026, 3, 10)
FOLLOW_UP_DAY = dt.date(2026, 3, 17)


def utc(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def interaction(**fields) -> tuple:
    base = {"_arrival_date": DAY, "run_id": "r", "_written_at": NOW, "handed_off": False, "has_bot": False}
    return tuple({**base, **fields}.get(f.name) for f in INTERACTIONS.fields)


def response(response_id: str, submitted_at: dt.datetime, survey: str, score: int, interaction_id: str | None) -> tuple:
    return (response_id, submitted_at, survey, score, interaction_id, None, DAY, "r", NOW)


@pytest.fixture(scope="module")
def kpis(spark, settings):
    interactions = spark.createDataFrame([
        # 12:00 in Sao Paulo; bot then agent; a follow-up on the same topic 6 days 23 hours later
        interaction(interaction_id="i1", channel="webchat", started_at=utc(10, 15), customer_key="c1", topic="billing",
                    resolved=True, has_bot=True, handed_off=True, first_response_seconds=2.0, handle_seconds=510.0,
                    agent_id="ag-1"),
        # contained by the bot
        interaction(interaction_id="i2", channel="webchat", started_at=utc(10, 18), customer_key="c2", topic="delivery",
                    resolved=True, has_bot=True, bot_only=True, first_response_seconds=4.0),
        # 01:30 UTC on the 11th is 22:30 on the 10th in Sao Paulo
        interaction(interaction_id="i3", channel="webchat", started_at=utc(11, 1, 30), customer_key="c3", topic="other",
                    resolved=False, first_response_seconds=10.0, handle_seconds=300.0, agent_id="ag-2"),
        # answered call; a follow-up on the same topic 7 days 1 hour later does not count
        interaction(interaction_id="v1", channel="voice", started_at=utc(10, 13), customer_key="c4", topic="billing",
                    resolved=True, disposition="answered", wait_seconds=30.0, first_response_seconds=30.0,
                    talk_seconds=200.0, hold_seconds=20.0, handle_seconds=220.0, queue="q1", agent_id="ag-5"),
        interaction(interaction_id="v2", channel="voice", started_at=utc(10, 14), resolved=False, disposition="abandoned",
                    wait_seconds=95.0, queue="q1"),
        interaction(interaction_id="f1", channel="voice", started_at=utc(17, 14), customer_key="c1", topic="billing",
                    disposition="answered", talk_seconds=60.0, hold_seconds=0.0),
        interaction(interaction_id="f2", channel="webchat", started_at=utc(17, 14), customer_key="c4", topic="billing"),
    ], INTERACTIONS)
    responses = spark.createDataFrame([
        response("n1", utc(10, 16), "nps", 10, "i1"),
        response("n2", utc(10, 16), "nps", 9, "i1"),
        response("n3", utc(10, 19), "nps", 6, "i2"),
        response("n4", utc(10, 19), "nps", 8, "i2"),
        response("c1", utc(10, 19), "csat", 5, "i2"),
        response("c2", utc(10, 19), "csat", 3, "i2"),
        response("c3", utc(12, 9), "csat", 4, "i3"),  # two days later: still the interaction's day
        response("e1", utc(10, 19), "ces", 2, "i2"),
        response("p1", utc(10, 19), "sps", 4, "i2"),
        response("p2", utc(10, 19), "sps", 5, "i2"),
        # names no interaction: its own day (23:00 on the 10th in Sao Paulo), channel unknown
        response("x1", utc(11, 2), "nps", 9, None),
    ], SURVEY_RESPONSES)
    frame = build_service_kpis(interactions, responses, settings, "run-1", NOW)
    rows = {(r.date, r.channel, r.grouping_level, r.dimension_value): r.asDict() for r in frame.collect()}
    return {"frame": frame, "rows": rows}


def base(kpis, day, channel) -> dict:
    return kpis["rows"][(day, channel, "date,channel", None)]


def test_schema_and_groups(kpis):
    assert kpis["frame"].schema.fieldNames() == SERVICE_KPIS.fieldNames()
    assert sorted((d, c) for d, c, level, _ in kpis["rows"] if level == "date,channel") == [
        (DAY, "unknown"), (DAY, "voice"), (DAY, "webchat"), (FOLLOW_UP_DAY, "voice"), (FOLLOW_UP_DAY, "webchat"),
    ]


def test_interaction_at_0130_utc_belongs_to_the_previous_day_in_sao_paulo(kpis):
    assert base(kpis, DAY, "webchat")["interactions"] == 3
    assert (dt.date(2026, 3, 11), "webchat", "date,channel", None) not in kpis["rows"]


def test_survey_scores(kpis):
    row = base(kpis, DAY, "webchat")
    # nps 10, 9, 6, 8: 2 promoters, 1 detractor of 4
    assert (row["nps"], row["nps_responses"]) == (25.0, 4)
    # csat 5, 3, 4: two of three score 4 or 5
    assert row["csat_pct"] == pytest.approx(200 / 3) and row["csat_avg"] == 4.0 and row["csat_responses"] == 3
    assert (row["ces_avg"], row["ces_responses"], row["sps_avg"], row["sps_responses"]) == (2.0, 1, 4.5, 2)


def test_survey_naming_no_interaction_counts_under_unknown_on_its_own_day(kpis):
    row = base(kpis, DAY, "unknown")
    assert (row["interactions"], row["nps"], row["nps_responses"], row["csat_pct"]) == (0, 100.0, 1, None)


def test_fcr_window_is_strictly_seven_days(kpis):
    # i1 followed up after 6 d 23 h: not FCR; i2 FCR; i3 not resolved
    assert (base(kpis, DAY, "webchat")["fcr_rate"], base(kpis, DAY, "webchat")["fcr_eligible"]) == (pytest.approx(1 / 3), 3)
    # v1 followed up only after 7 d 1 h: FCR; v2 not resolved
    assert (base(kpis, DAY, "voice")["fcr_rate"], base(kpis, DAY, "voice")["fcr_eligible"]) == (0.5, 2)
    # resolution unknown: not eligible, so no rate
    assert (base(kpis, FOLLOW_UP_DAY, "webchat")["fcr_rate"], base(kpis, FOLLOW_UP_DAY, "webchat")["fcr_eligible"]) == (None, 0)


def test_response_times_bot_and_handling(kpis):
    row = base(kpis, DAY, "webchat")
    # 2, 4, 10: median 4; p90 at rank 1.8 -> 4 + 0.8 * (10 - 4)
    assert (row["first_response_seconds_p50"], row["first_response_count"]) == (4.0, 3)
    assert row["first_response_seconds_p90"] == pytest.approx(8.8)
    assert (row["bot_handled"], row["bot_containment_rate"], row["handoff_rate"]) == (2, 0.5, 0.5)
    assert (row["aht_seconds"], row["aht_count"]) == (405.0, 2)  # (510 + 300) / 2


def test_calls(kpis):
    row = base(kpis, DAY, "voice")
    assert (row["calls"], row["answered_calls"], row["abandonment_rate"]) == (2, 1, 0.5)
    assert (row["aht_seconds"], row["aht_count"], row["first_response_seconds_p50"]) == (220.0, 1, 30.0)


def test_empty_groups_are_null_not_zero(kpis):
    voice, webchat = base(kpis, DAY, "voice"), base(kpis, DAY, "webchat")
    assert (voice["bot_handled"], voice["bot_containment_rate"], voice["handoff_rate"]) == (0, None, None)
    assert (voice["nps_responses"], voice["nps"], voice["csat_pct"], voice["ces_avg"], voice["sps_avg"]) == (0, None, None, None, None)
    assert (webchat["calls"], webchat["abandonment_rate"]) == (0, None)
    f2 = base(kpis, FOLLOW_UP_DAY, "webchat")
    assert (f2["first_response_seconds_p50"], f2["aht_seconds"], f2["aht_count"]) == (None, None, 0)


def test_extra_dimension_rows(kpis):
    rows = kpis["rows"]
    by_agent = {value: r for (d, c, level, value), r in rows.items() if (d, c, level) == (DAY, "webchat", "date,channel,agent_id")}
    assert {value: r["interactions"] for value, r in by_agent.items()} == {"ag-1": 1, "ag-2": 1, None: 1}
    assert (by_agent["ag-1"]["nps"], by_agent["ag-1"]["nps_responses"]) == (100.0, 2)  # 10 and 9 about i1
    by_queue = rows[(DAY, "voice", "date,channel,queue", "q1")]
    assert (by_queue["calls"], by_queue["abandonment_rate"]) == (2, 0.5)
    by_topic = rows[(DAY, "voice", "date,channel,topic", "billing")]
    assert (by_topic["interactions"], by_topic["fcr_rate"]) == (1, 1.0)
