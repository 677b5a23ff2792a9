"""Incremental silver (pipelines/increments.py): which units a run rebuilds, on hand-made frames; and the rows
rebuilt from those units alone equal the rows of a build over everything."""
from __future__ import annotations

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from atende.pipelines.identity import assign_email_threads, distinct_email_messages
from atende.pipelines.increments import (
    affected_units,
    changed_categories,
    delivered_since,
    key_differences,
    whole_rebuild_reason,
)
from atende.pipelines.interactions import build_interactions, whatsapp_sessions
from tests.bronze_frames import at, bronze

WATERMARK = at(2, 0)
# the fields a bronze row of these sources cannot lack
CONV = {"channel": "webchat", "started_at": at(1, 9)}
ORDER = {"ordered_at": at(1, 9), "product_id": "p1"}
SURVEY = {"submitted_at": at(1, 9), "survey": "nps", "score": 9}
WA = {"payload_kind": "messages"}


def _ids(frame, column="record_id"):
    return sorted(r[0] for r in frame.select(column).collect())


def _pairs(frame):
    return sorted((r["source"], r["record_id"]) for r in frame.collect())


def _wa(message_id, sent_at, wa_id="5511988880001", **more):
    return (message_id, wa_id, more.get("profile_name"), sent_at, more.get("type", "text"), more.get("text", "oi"),
            None, None, more.get("direction"))


def _email_zone(spark):
    """Two threads: a1 <- a2, and b1; then a late message c0 replying to both (it joins them)."""
    return bronze(spark, "email", [
        {"message_id": "<a1@x.com>", "from_address": "ana@x.com", "sent_at": at(1, 9), "body_text": "um",
         "kind": "message"},
        {"message_id": "<a2@atende.com.br>", "in_reply_to": "<a1@x.com>", "from_address": "sac@atende.com.br",
         "sent_at": at(1, 10), "body_text": "dois", "kind": "message"},
        {"message_id": "<b1@x.com>", "from_address": "ana@x.com", "sent_at": at(1, 11), "body_text": "tres",
         "kind": "message"},
        {"message_id": "<c0@x.com>", "references": ["<a1@x.com>", "<b1@x.com>"], "from_address": "ana@x.com",
         "sent_at": at(2, 8), "body_text": "quatro", "kind": "message", "_ingested_at": at(2, 23),
         "_arrival_date": at(2).date()},
    ])


def test_delivered_since_takes_every_record_ingested_after_the_watermark(spark):
    frames = {
        "conversations": bronze(spark, "conversations", [
            {"conversation_id": "c-old", **CONV}, {"conversation_id": "c-new", "_ingested_at": at(2, 23), **CONV}]),
        "email": _email_zone(spark),
        "whatsapp": bronze(spark, "whatsapp", [
            {"messages": [_wa("wamid.1", at(1, 9))], **WA},
            {"messages": [_wa("wamid.2", at(2, 9)), _wa("wamid.3", at(2, 10))], "_ingested_at": at(2, 23), **WA},
        ]),
        "orders": bronze(spark, "orders", [{"order_id": "o-1", "_ingested_at": at(2, 23), **ORDER},
                                           {"order_id": "o-0", **ORDER}]),
    }
    assert _pairs(delivered_since(frames, WATERMARK)) == [
        ("conversations", "c-new"), ("email", "c0@x.com"), ("orders", "o-1"),
        ("whatsapp", "wamid.2"), ("whatsapp", "wamid.3"),
    ]


def test_key_differences_compare_the_keys_silver_was_written_with(spark):
    schema = "source string, record_id string, customer_key string"
    old = spark.createDataFrame([("orders", "o1", "c-a"), ("orders", "o2", "c-b"), ("orders", "o3", None),
                                 ("orders", "gone", "c-a")], schema)
    new = spark.createDataFrame([("orders", "o1", "c-a"), ("orders", "o2", "c-a"), ("orders", "o3", None),
                                 ("orders", "o4", None)], schema)
    differences = key_differences(old, new)
    # o2 moved to another key, o4 is new; o3 keeps its null key (null equals null here); "gone" left bronze
    assert _pairs(differences.where(~F.col("vanished"))) == [("orders", "o2"), ("orders", "o4")]
    assert _pairs(differences.where(F.col("vanished"))) == [("orders", "gone")]


def test_changed_categories(spark):
    schema = "product_id string, category string"
    old = spark.createDataFrame([("p1", "casa"), ("p2", None), ("p3", "moda")], schema)
    new = spark.createDataFrame([("p1", "casa"), ("p2", None), ("p3", "esporte"), ("p4", "casa")], schema)
    assert _ids(changed_categories(old, new), "product_id") == ["p3", "p4"]


def test_affected_units_are_whole_threads_and_conversations_and_what_names_them(spark):
    email = _email_zone(spark)
    threads = assign_email_threads(distinct_email_messages(email))
    whatsapp = bronze(spark, "whatsapp", [{"messages": [
        _wa("wamid.1", at(1, 9)), _wa("wamid.2", at(1, 10)),  # one conversation
        _wa("wamid.9", at(5, 9)),  # days later: another
    ], **WA}])
    frames = {
        "email": email,
        "surveys": bronze(spark, "surveys", [
            {"response_id": "r-conv", "contact_id": " conv-1 ", **SURVEY},
            {"response_id": "r-mail", "contact_id": "email:a1@x.com", **SURVEY},
            {"response_id": "r-other", "contact_id": "conv-9", **SURVEY}, {"response_id": "r-self", **SURVEY}]),
        "orders": bronze(spark, "orders", [{"order_id": "o-p3", **ORDER, "product_id": "p3"},
                                           {"order_id": "o-p1", **ORDER, "product_id": "p1"}]),
    }
    changed = spark.createDataFrame(
        [("conversations", "conv-1"), ("email", "c0@x.com"), ("whatsapp", "wamid.2"), ("surveys", "r-self"),
         ("actions", "a-1")], "source string, record_id string")
    products = spark.createDataFrame([("p3",)], "product_id string")
    units = affected_units(changed, frames, threads, whatsapp_sessions(whatsapp), products).materialised()
    assert _ids(units.records["email"]) == ["a1@x.com", "a2@atende.com.br", "b1@x.com", "c0@x.com"]
    assert _ids(units.records["whatsapp"]) == ["wamid.1", "wamid.2"]
    assert _ids(units.records["conversations"]) == ["conv-1"]
    assert _ids(units.records["calls"]) == []
    assert _ids(units.records["actions"]) == ["a-1"]
    # a response naming a rebuilt interaction (trimmed, as silver reads contact_id), and a changed one
    assert _ids(units.records["surveys"]) == ["r-conv", "r-mail", "r-self"]
    assert _ids(units.records["orders"]) == ["o-p3"]
    assert _ids(units.replaced_interactions, "interaction_id") == [
        "conv-1", "email:a1@x.com", "email:a2@atende.com.br", "email:b1@x.com", "email:c0@x.com",
        "wa:wamid.1", "wa:wamid.2"]
    assert units.size == 12


def test_rows_rebuilt_from_their_units_alone_equal_the_full_build(spark, settings):
    """The rebuilt e-mail thread (joined by a late message) and WhatsApp conversation (a message added
    before its first) are the rows a build over every record writes for them; the stale ids are replaced."""
    email = _email_zone(spark)
    whatsapp = bronze(spark, "whatsapp", [
        {"messages": [_wa("wamid.5", at(1, 9), text="oi"), _wa("wamid.6", at(1, 9, 5), direction="echo", text="ola")],
         **WA},
        {"messages": [_wa("wamid.4", at(1, 8, 30), text="antes")], "_ingested_at": at(2, 23), **WA},
        {"messages": [_wa("wamid.8", at(9, 9), text="outro dia")], **WA},
    ])
    keys = spark.createDataFrame(
        [("email", m, "c-ana") for m in ("a1@x.com", "a2@atende.com.br", "b1@x.com", "c0@x.com")]
        + [("whatsapp", m, "c-wa") for m in ("wamid.4", "wamid.5", "wamid.6", "wamid.8")],
        "source string, record_id string, customer_key string")
    frames = {"email": email, "whatsapp": whatsapp}
    threads = assign_email_threads(distinct_email_messages(email))
    everything = build_interactions(frames, keys, settings, "r1", at(3))
    changed = delivered_since(frames, WATERMARK)
    units = affected_units(changed, frames, threads, whatsapp_sessions(whatsapp),
                           spark.createDataFrame([], "product_id string")).materialised()
    rebuilt = build_interactions(frames, keys, settings, "r1", at(3), email_threads=threads,
                                 only=units.only("email", "whatsapp"))
    assert _ids(rebuilt, "interaction_id") == ["email:a1@x.com", "wa:wamid.4"]
    assertDataFrameEqual(rebuilt, everything.where(F.col("interaction_id").isin("email:a1@x.com", "wa:wamid.4")))
    # the ids of the day before (b1's thread, wamid.5's conversation) are among those replaced
    replaced = set(_ids(units.replaced_interactions, "interaction_id"))
    assert {"email:b1@x.com", "wa:wamid.5"} <= replaced and "wa:wamid.8" not in replaced


def test_the_record_tables_are_rebuilt_whole_past_the_share_of_delivered_records():
    """The record tables are rebuilt whole once the records delivered since silver was written are more than
    `silver.incremental_max_share` of the records it is built from; at 1 never, at 0 whenever anything came."""
    assert whole_rebuild_reason(10, 1_000, 0.01) is None  # 1.00 %: at the share, incremental
    reason = whole_rebuild_reason(11, 1_000, 0.01)
    assert reason is not None and "1.10% of the 1,000" in reason and "silver.incremental_max_share (1.00%)" in reason
    assert whole_rebuild_reason(999, 1_000, 1.0) is None and whole_rebuild_reason(5_000, 1_000, 1.0) is None
    assert whole_rebuild_reason(0, 1_000, 0.0) is None
    assert "0.01% of the 10,000" in whole_rebuild_reason(1, 10_000, 0.0)
    assert "no record keyed" in whole_rebuild_reason(3, 0, 0.5)
