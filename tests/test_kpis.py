"""Gold service_kpis: docs/CONTRACTS.md section 4 worked out by hand on a few interactions.

Business time zone America/Sao_Paulo (UTC-3 all year); FCR window 7 days; extra dimensions
agent_id, queue, topic (conf/local.yaml).
"""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from atende.pipelines.kpis import build_channel_overview, build_service_kpis
from atende.pipelines.schemas import INTERACTIONS, SURVEY_RESPONSES
from atende.pipelines.schemas_gold import SERVICE_KPIS

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
    return (response_id, submitted_at, survey, score, interaction_id, None, None, DAY, "r", NOW)


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


# --- edge cases on a day of their own -------------------------------------------------------------

EDGE_DAY = dt.date(2026, 3, 5)


def edge_utc(day: int, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture(scope="module")
def edge(spark, settings):
    interactions = spark.createDataFrame([
        # whatsapp: one conversation never got a reply; it counts as an interaction, not as a response time
        interaction(interaction_id="w1", channel="whatsapp", started_at=edge_utc(5, 12), customer_key="c20"),
        interaction(interaction_id="w2", channel="whatsapp", started_at=edge_utc(5, 13), customer_key="c21",
                    first_response_seconds=5.0),
        interaction(interaction_id="w3", channel="whatsapp", started_at=edge_utc(5, 14), customer_key="c22",
                    first_response_seconds=7.0),
        # instagram: the day's only conversation never got a reply
        interaction(interaction_id="g1", channel="instagram", started_at=edge_utc(5, 12), customer_key="c23"),
        # chatbot channel: bot-handled even without a bot message seen; an unknown outcome is not contained
        interaction(interaction_id="b1", channel="chatbot", started_at=edge_utc(5, 12), customer_key="c24",
                    resolved=True, has_bot=False, first_response_seconds=1.0),
        interaction(interaction_id="b2", channel="chatbot", started_at=edge_utc(5, 13), customer_key="c25",
                    resolved=None, has_bot=True, first_response_seconds=1.0),
        # calls: a transferred call is a call (and responded) but not an answered one
        interaction(interaction_id="t1", channel="voice", started_at=edge_utc(5, 12), customer_key="c26", resolved=True,
                    disposition="transferred", wait_seconds=20.0, first_response_seconds=20.0, talk_seconds=100.0,
                    hold_seconds=10.0),
        interaction(interaction_id="a1", channel="voice", started_at=edge_utc(5, 13), customer_key="c27", resolved=True,
                    disposition="answered", wait_seconds=10.0, first_response_seconds=10.0, talk_seconds=50.0),
        # FCR: follow-ups at exactly 7 x 24 h, of another customer, on another topic, and 1 s later
        interaction(interaction_id="k1", channel="telegram", started_at=edge_utc(5, 12), customer_key="c7",
                    topic="billing", resolved=True),
        interaction(interaction_id="k1-later", channel="email", started_at=edge_utc(12, 12), customer_key="c7",
                    topic="billing"),
        interaction(interaction_id="k2", channel="telegram", started_at=edge_utc(5, 13), customer_key="c8",
                    topic="billing", resolved=True),
        interaction(interaction_id="k2-other-customer", channel="email", started_at=edge_utc(6, 13), customer_key="c9",
                    topic="billing"),
        interaction(interaction_id="k2-other-topic", channel="email", started_at=edge_utc(6, 13), customer_key="c8",
                    topic="delivery"),
        interaction(interaction_id="k3", channel="telegram", started_at=edge_utc(5, 14), customer_key="c10",
                    topic="returns", resolved=True),
        interaction(interaction_id="k3-again", channel="email", started_at=edge_utc(5, 14, 0, 1), customer_key="c10",
                    topic="returns"),
    ], INTERACTIONS)
    responses = spark.createDataFrame([
        # about w1, sent 2 days later at 01:00 UTC (22:00 on the 6th in Sao Paulo): counted on w1's day and channel
        response("s1", edge_utc(8, 1), "csat", 1, "w1"),
    ], SURVEY_RESPONSES)
    frame = build_service_kpis(interactions, responses, settings, "run-2", NOW)
    return {(r.date, r.channel): r.asDict() for r in frame.where("grouping_level = 'date,channel'").collect()}


def test_a_conversation_that_never_got_a_reply_has_no_response_time(edge):
    whatsapp = edge[(EDGE_DAY, "whatsapp")]
    assert (whatsapp["interactions"], whatsapp["first_response_count"]) == (3, 2)
    # 5 and 7: the median interpolates halfway; p90 at rank 0.9 -> 5 + 0.9 * (7 - 5)
    assert whatsapp["first_response_seconds_p50"] == 6.0
    assert whatsapp["first_response_seconds_p90"] == pytest.approx(6.8)
    instagram = edge[(EDGE_DAY, "instagram")]
    assert (instagram["interactions"], instagram["first_response_count"]) == (1, 0)
    assert (instagram["first_response_seconds_p50"], instagram["first_response_seconds_p90"]) == (None, None)


def test_survey_about_an_interaction_days_earlier_counts_on_that_interactions_day(edge):
    assert (edge[(EDGE_DAY, "whatsapp")]["csat_responses"], edge[(EDGE_DAY, "whatsapp")]["csat_pct"]) == (1, 0.0)
    assert not [key for key in edge if key[0] != EDGE_DAY and key[1] in ("whatsapp", "unknown")]


def test_chatbot_conversations_are_bot_handled(edge):
    chatbot = edge[(EDGE_DAY, "chatbot")]
    # b1 contained; b2 not known to be resolved, so not contained; no hand-off: a rate of 0, not null
    assert (chatbot["bot_handled"], chatbot["bot_containment_rate"], chatbot["handoff_rate"]) == (2, 0.5, 0.0)
    # chatbot conversations have no agent: no handling time
    assert (chatbot["aht_seconds"], chatbot["aht_count"]) == (None, 0)


def test_aht_counts_answered_calls_only(edge):
    voice = edge[(EDGE_DAY, "voice")]
    assert (voice["calls"], voice["answered_calls"], voice["abandonment_rate"]) == (2, 1, 0.0)
    # a1: 50 talk + no hold; t1 (transferred) is not an answered call
    assert (voice["aht_seconds"], voice["aht_count"]) == (50.0, 1)
    assert (voice["first_response_seconds_p50"], voice["first_response_count"]) == (15.0, 2)  # waits 10 and 20


def test_fcr_follow_ups_must_be_same_customer_same_topic_strictly_within_the_window(edge):
    telegram = edge[(EDGE_DAY, "telegram")]
    # k1 (follow-up at exactly 7 days: outside) and k2 (other customer / other topic) are FCR; k3 is not
    assert (telegram["fcr_rate"], telegram["fcr_eligible"]) == (pytest.approx(2 / 3), 3)


def test_business_date_does_not_depend_on_the_session_time_zone(spark):
    from atende.pipelines.kpis import business_date

    frame = spark.createDataFrame(
        [(edge_utc(11, 1, 30),), (edge_utc(11, 2, 59, 59),), (edge_utc(11, 3),)], "ts timestamp"
    )
    previous = spark.conf.get("spark.sql.session.timeZone")
    try:
        for session_zone in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
            spark.conf.set("spark.sql.session.timeZone", session_zone)
            dates = [r.d for r in frame.select(business_date(F.col("ts"), "America/Sao_Paulo").alias("d")).collect()]
            assert dates == [dt.date(2026, 3, 10), dt.date(2026, 3, 10), dt.date(2026, 3, 11)], session_zone
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)


def service_kpis_row(day: dt.date, channel: str, level: str = "date,channel", value: str | None = None, **metrics) -> tuple:
    counts = {f.name: 0 for f in SERVICE_KPIS.fields if f.dataType.typeName() == "long"}
    fields = {**counts, "date": day, "channel": channel, "grouping_level": level, "dimension_value": value,
              "run_id": "r", "_written_at": NOW, **metrics}
    return tuple(fields.get(f.name) for f in SERVICE_KPIS.fields)


def test_channel_overview_weights_each_day_by_the_counts_behind_it(spark):
    frame = spark.createDataFrame([
        # day 1: nps 50 over 2 responses (+1 net promoter); day 2: -100 over 1 (-1): 0 over the 3 responses
        service_kpis_row(EDGE_DAY, "email", interactions=4, nps=50.0, nps_responses=2, fcr_rate=0.75, fcr_eligible=4),
        service_kpis_row(DAY, "email", interactions=2, nps=-100.0, nps_responses=1, fcr_rate=0.0, fcr_eligible=1),
        service_kpis_row(FOLLOW_UP_DAY, "email", interactions=1),  # no responses: its nulls weigh nothing
        # a dimension row must not be counted twice
        service_kpis_row(DAY, "email", "date,channel,agent_id", "ag-1", interactions=2, nps=-100.0, nps_responses=1),
        service_kpis_row(DAY, "chatbot", interactions=9, bot_containment_rate=1 / 3, bot_handled=9),
    ], SERVICE_KPIS)
    rows = [r.asDict() for r in build_channel_overview(frame).collect()]
    assert [r["channel"] for r in rows] == ["chatbot", "email"]
    email = rows[1]
    # fcr: (0.75 * 4 + 0 * 1) / 5
    assert (email["interactions"], email["nps"], email["fcr_rate"], email["csat_pct"]) == (7, 0.0, pytest.approx(0.6), None)
    assert rows[0]["bot_containment_rate"] == pytest.approx(1 / 3)
