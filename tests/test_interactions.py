"""Silver interactions and survey_responses on tiny hand-made bronze frames."""
from __future__ import annotations

import datetime as dt

import pytest
from bronze_frames import at, bronze
from pyspark.testing import assertDataFrameEqual

from atende.pipelines.identity import RECORD_KEYS
from atende.pipelines.interactions import build_interactions
from atende.pipelines.schemas import INTERACTIONS, SURVEY_RESPONSES
from atende.pipelines.surveys import build_survey_responses

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 20, 6, 0, tzinfo=UTC)



def msg(sent_at, author, text, agent_id=None):
    return (sent_at, author, agent_id, text)


def record_keys(spark, rows):
    return spark.createDataFrame(rows, RECORD_KEYS)


@pytest.fixture(scope="module")
def interactions(spark, settings):
    conversations = bronze(spark, "conversations", [
        # bot answers in 2 s, hands off at 12:01:10, agent answers at 12:02:30, chat ends 12:09:40
        {"conversation_id": "wc-1", "channel": "webchat", "started_at": at(1, 12, 0, 5), "ended_at": at(1, 12, 9, 40),
         "customer": (None, "ana@x.com", None, "Ana Souza", None, None),
         "messages": [msg(at(1, 12, 2, 30), "agent", "Posso ajudar", "ag-17"),  # out of order on purpose
                      msg(at(1, 12, 0, 5), "customer", "Oi, minha fatura veio errada"),
                      msg(at(1, 12, 0, 7), "bot", "Vou transferir"),
                      msg(at(1, 12, 3, 0), "customer", "Obrigada")],
         "handoff_at": at(1, 12, 1, 10), "resolved": True, "topic": "billing", "language": "pt"},
        # the same conversation re-delivered the next day
        {"conversation_id": "wc-1", "channel": "webchat", "started_at": at(1, 12, 0, 5), "ended_at": at(1, 12, 9, 40),
         "customer": (None, "ana@x.com", None, "Ana Souza", None, None), "messages": [],
         "_arrival_date": dt.date(2026, 3, 2), "_source_file": "conversations/2026-03-02/part-0"},
        # the customer wrote, nobody ever answered
        {"conversation_id": "cb-2", "channel": "chatbot", "started_at": at(2, 9), "ended_at": at(2, 9, 5),
         "customer": (None, None, None, None, None, "d-1"),
         "messages": [msg(at(2, 9), "customer", "alô?")], "resolved": False, "topic": "other"},
        # an agent took it directly, no hand-off
        {"conversation_id": "ap-3", "channel": "app", "started_at": at(3, 10), "ended_at": at(3, 10, 20),
         "customer": None,
         "messages": [msg(at(3, 10), "customer", "oi"), msg(at(3, 10, 1), "agent", "olá", "ag-2")],
         "resolved": True, "topic": "delivery"},
    ])
    whatsapp = bronze(spark, "whatsapp", [
        {"payload_kind": "messages", "messages": [
            ("wamid.A", "5511998765432", "Ana", at(1, 8), "text", "bom dia", "pn"),
            ("wamid.B", "5511998765432", "Ana", at(2, 7), "text", "ainda aí?", "pn"),  # 23 h later: same conversation
        ]},
        # wamid.C comes 24 h 1 min after B: a new conversation; wamid.B re-delivered in another payload
        {"payload_kind": "messages", "_arrival_date": dt.date(2026, 3, 3), "messages": [
            ("wamid.C", "5511998765432", "Ana S.", at(3, 7, 1), "text", "voltei", "pn"),
            ("wamid.B", "5511998765432", "Ana", at(2, 7), "text", "ainda aí?", "pn"),
        ]},
        {"payload_kind": "statuses", "messages": None, "status_count": 3},
    ])
    email = bronze(spark, "email", [
        {"message_id": "t1-a@x.com", "from_address": "Bia <bia@x.com>", "from_name": "Bia", "sent_at": at(4, 9), "body_text": "Pedido atrasado"},
        {"message_id": "t1-b@atende.com.br", "in_reply_to": "t1-a@x.com", "references": ["t1-a@x.com"],
         "from_address": "suporte@atende.com.br", "sent_at": at(4, 10), "body_text": "Verificando"},
        {"message_id": "t1-c@x.com", "references": ["t1-a@x.com", "t1-b@atende.com.br"],
         "from_address": "bia@x.com", "sent_at": at(4, 11), "body_text": "Obrigada"},
        # two replies to a message we never received still form one thread
        {"message_id": "t2-b@x.com", "in_reply_to": "lost@x.com", "from_address": "caio@x.com", "sent_at": at(5, 9)},
        {"message_id": "t2-a@x.com", "in_reply_to": "lost@x.com", "from_address": "caio@x.com", "sent_at": at(5, 8)},
    ])
    calls = bronze(spark, "calls", [
        {"call_id": "call-1", "started_at": at(6, 14), "ani": "11998765432", "queue": "billing", "wait_seconds": 30.0,
         "talk_seconds": 200.0, "hold_seconds": 20.0, "agent_id": "ag-5", "disposition": "answered", "resolved": True,
         "topic": "billing", "via": "whatsapp"},
        {"call_id": "call-2", "started_at": at(6, 15), "queue": "billing", "wait_seconds": 95.0,
         "disposition": "abandoned", "via": "pstn"},
    ])
    keys = record_keys(spark, [
        ("conversations", "wc-1", "c-ana"),
        ("conversations", "cb-2", "c-dev"),
        ("conversations", "ap-3", None),
        ("whatsapp", "wamid.A", "c-ana"), ("whatsapp", "wamid.B", "c-ana"), ("whatsapp", "wamid.C", "c-ana"),
        ("email", "t1-a@x.com", "c-bia"), ("email", "t1-b@atende.com.br", "c-bia"), ("email", "t1-c@x.com", "c-bia"),
        ("email", "t2-a@x.com", "c-caio"), ("email", "t2-b@x.com", "c-caio"),
        ("calls", "call-1", "c-ana"),
    ])
    bronze_frames = {"conversations": conversations, "whatsapp": whatsapp, "email": email, "calls": calls}
    frame = build_interactions(bronze_frames, keys, settings, "run-1", NOW)
    rows = {r.interaction_id: r for r in frame.collect()}
    return {"frame": frame, "rows": rows}


def test_output_follows_the_silver_schema(interactions):
    assert interactions["frame"].schema.fieldNames() == INTERACTIONS.fieldNames()
    assert sorted(interactions["rows"]) == [
        "ap-3", "call-1", "call-2", "cb-2", "email:t1-a@x.com", "email:t2-a@x.com", "wa:wamid.A", "wa:wamid.C", "wc-1",
    ]


def test_conversation_times_flags_and_texts(interactions):
    wc = interactions["rows"]["wc-1"]
    assert (wc.channel, wc.customer_key, wc.topic, wc.language, wc.resolved) == ("webchat", "c-ana", "billing", "pt", True)
    assert wc.first_response_seconds == 2.0  # customer 12:00:05 -> bot 12:00:07
    assert wc.wait_seconds == 80.0  # hand-off 12:01:10 -> agent 12:02:30
    assert wc.handle_seconds == 510.0  # hand-off 12:01:10 -> end 12:09:40
    assert (wc.handed_off, wc.bot_only, wc.has_bot, wc.agent_id, wc.message_count) == (True, False, True, "ag-17", 4)
    assert wc.customer_text == "Oi, minha fatura veio errada\nObrigada"
    assert wc.agent_text == "Posso ajudar"
    assert wc.customer_name == "Ana Souza"
    # re-delivered next day: collapsed, first arrival kept
    assert (wc._arrival_date, wc.run_id) == (dt.date(2026, 3, 1), "run-1")


def test_first_response_is_null_when_nobody_replied(interactions):
    cb = interactions["rows"]["cb-2"]
    assert (cb.first_response_seconds, cb.wait_seconds, cb.handle_seconds, cb.agent_id) == (None, None, None, None)
    assert (cb.has_bot, cb.bot_only, cb.handed_off) == (True, False, False)  # chatbot channel, no bot message


def test_agent_handled_without_hand_off_counts_from_start(interactions):
    ap = interactions["rows"]["ap-3"]
    assert (ap.handle_seconds, ap.first_response_seconds, ap.customer_key, ap.has_bot) == (1200.0, 60.0, None, False)


def test_whatsapp_conversation_opens_after_24_hours_of_silence(interactions):
    rows = interactions["rows"]
    first, second = rows["wa:wamid.A"], rows["wa:wamid.C"]
    assert (first.channel, first.message_count, first.customer_text) == ("whatsapp", 2, "bom dia\nainda aí?")
    assert first.started_at.replace(tzinfo=UTC) == at(1, 8) and first.ended_at.replace(tzinfo=UTC) == at(2, 7)
    assert (second.message_count, second.customer_key, second.customer_name) == (1, "c-ana", "Ana S.")
    assert second._arrival_date == dt.date(2026, 3, 3)


def test_email_threads_rebuilt_from_references(interactions):
    rows = interactions["rows"]
    t1, t2 = rows["email:t1-a@x.com"], rows["email:t2-a@x.com"]
    assert (t1.message_count, t1.customer_key, t1.first_response_seconds) == (3, "c-bia", 3600.0)
    assert (t1.customer_text, t1.agent_text, t1.customer_name) == ("Pedido atrasado\nObrigada", "Verificando", "Bia")
    # the earliest message names the thread, whichever arrived first
    assert (t2.message_count, t2.customer_key, t2.first_response_seconds, t2.agent_text) == (2, "c-caio", None, None)


def test_calls_are_voice_with_switch_durations(interactions):
    rows = interactions["rows"]
    answered, abandoned = rows["call-1"], rows["call-2"]
    assert (answered.channel, answered.customer_key, answered.queue, answered.disposition) == ("voice", "c-ana", "billing", "answered")
    assert (answered.first_response_seconds, answered.wait_seconds, answered.handle_seconds) == (30.0, 30.0, 220.0)
    assert answered.ended_at.replace(tzinfo=UTC) == at(6, 14, 4, 10)  # 30 + 200 + 20 s
    assert (abandoned.first_response_seconds, abandoned.wait_seconds, abandoned.handle_seconds, abandoned.customer_key) == (None, 95.0, None, None)


def test_survey_responses_name_known_interactions(spark, interactions):
    surveys = bronze(spark, "surveys", [
        {"response_id": "s-1", "submitted_at": at(1, 13), "survey": "nps", "score": 9, "contact_id": "wc-1"},
        {"response_id": "s-1", "submitted_at": at(1, 13), "survey": "nps", "score": 9, "contact_id": "wc-1",
         "_arrival_date": dt.date(2026, 3, 2)},
        {"response_id": "s-2", "submitted_at": at(2, 10), "survey": "CSAT", "score": 4, "contact_id": "nope", "email": "x@x.com"},
        {"response_id": "s-3", "submitted_at": at(2, 11), "survey": "ces", "score": 2, "contact_id": " "},
    ])
    keys = record_keys(spark, [("surveys", "s-1", "c-other"), ("surveys", "s-2", "c-x")])

    got = build_survey_responses(surveys, interactions["frame"], keys, "run-1", NOW)

    expected = spark.createDataFrame([
        ("s-1", at(1, 13), "nps", 9, "wc-1", "c-ana", None, dt.date(2026, 3, 1), "run-1", NOW),
        ("s-2", at(2, 10), "csat", 4, None, "c-x", None, dt.date(2026, 3, 1), "run-1", NOW),
        ("s-3", at(2, 11), "ces", 2, None, None, None, dt.date(2026, 3, 1), "run-1", NOW),
    ], SURVEY_RESPONSES)
    assertDataFrameEqual(got, expected)
