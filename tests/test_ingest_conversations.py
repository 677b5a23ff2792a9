"""Bronze ingest of conversations (JSON Lines)."""
from __future__ import annotations

import json
from datetime import datetime

import pytest
from test_ingest_support import DAY, counts_of, ingest, land

GOOD = {
    "conversation_id": "wc-000123", "channel": "webchat",
    "started_at": "2026-03-01T12:00:05-03:00", "ended_at": "2026-03-01T12:09:40-03:00",
    "customer": {"crm_id": None, "email": "Ana.Souza@Example.com", "phone": "+55 11 99876-5432",
                 "name": "Ana Souza", "handle": None, "device_id": "d-77f1", "loyalty": {"tier": 2}},
    "messages": [
        {"sent_at": "2026-03-01T12:00:05-03:00", "author": "customer", "agent_id": None, "text": "Oi, minha fatura veio errada"},
        {"sent_at": "2026-03-01T12:00:07-03:00", "author": "bot", "agent_id": None, "text": "..."},
        {"sent_at": "2026-03-01T12:02:30-03:00", "author": "agent", "agent_id": "ag-17", "text": "...", "sentiment": -0.2},
    ],
    "handoff_at": "2026-03-01T12:01:10-03:00", "resolved": True, "topic": "billing", "language": "pt",
    "nps_hint": 9,
}


def line(**changes) -> str:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...}, ensure_ascii=False)


@pytest.fixture(scope="module")
def outcome(spark, settings, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing")
    land(landing, "conversations", "a.jsonl",
         line() + "\r\n\r\n" + line(conversation_id="wc-2", channel="WhatsApp") + "\r\n", bom=True)
    land(landing, "conversations", "b.jsonl",
         line(conversation_id="wc-3", ended_at=None, messages=[]) + "\n", gz=True, bom=True)
    hostile = [
        line(conversation_id="wc-fine"),
        line(conversation_id="wc-trunc")[:60],                               # truncated line
        line(conversation_id="wc-types", started_at="yesterday", resolved="maybe"),
        line(conversation_id="wc-fax", channel="fax"),
        line(conversation_id=...),                                           # missing id
        line(conversation_id="wc-future", started_at="2027-01-01T00:00:00Z"),
        line(conversation_id="wc-old", started_at="1970-01-01T00:00:00Z"),
        line(conversation_id="wc-author", messages=[{"sent_at": "2026-03-01T12:00:05Z", "author": "robot", "text": "x"}]),
        line(conversation_id="wc-cust", customer="Ana"),
        '["not", "an", "object"]',
        '{"conversation_id": "wc-dup", "conversation_id": "wc-dup2", "channel": "app", "started_at": "2026-03-01T12:00:00Z"}',
    ]
    land(landing, "conversations", "hostile.jsonl", "\n".join(hostile) + "\n")
    big = '{"conversation_id": "wc-big", "pad": "' + "x" * (10 * 1024 * 1024) + '"}'
    land(landing, "conversations", "big.jsonl", line(conversation_id="wc-ok") + "\n" + big + "\n")
    land(landing, "conversations", "binary.jsonl",
         b"\x00\xff\xfe\x01garbage\x9c\n" + line(conversation_id="wc-ok2").encode() + b"\n")
    land(landing, "conversations", "empty.jsonl", "")
    return ingest(spark, settings, landing, "conversations")


def test_real_shaped_lines_with_bom_crlf_and_gzip_are_typed(outcome):
    out = outcome
    assert counts_of(out, "a.jsonl") == (2, 2, 0)  # the blank line is not a record
    assert counts_of(out, "b.jsonl.gz") == (1, 1, 0)
    by_id = {r.conversation_id: r for r in out.accepted}
    first = by_id["wc-000123"]
    assert first.started_at == datetime(2026, 3, 1, 15, 0, 5)  # -03:00 → UTC
    assert first.handoff_at == datetime(2026, 3, 1, 15, 1, 10)
    assert first.resolved is True and first.topic == "billing" and first.language == "pt"
    assert first.customer.email == "Ana.Souza@Example.com" and first.customer.crm_id is None
    assert [m.author for m in first.messages] == ["customer", "bot", "agent"]
    assert first.messages[2].agent_id == "ag-17"
    assert first._extra == {"nps_hint": "9", "customer.loyalty": '{"tier":2}', "messages[2].sentiment": "-0.2"}
    assert first._arrival_date == DAY
    assert by_id["wc-2"].channel == "whatsapp"  # enumerations are lower-cased
    assert by_id["wc-3"].messages == [] and by_id["wc-3"].ended_at is None


def test_hostile_lines_are_quarantined_with_reasons(outcome, settings):
    out = outcome
    assert counts_of(out, "hostile.jsonl") == (11, 1, 10)
    assert counts_of(out, "big.jsonl") == (2, 1, 1)
    assert counts_of(out, "binary.jsonl") == (2, 1, 1)
    assert counts_of(out, "empty.jsonl") == (0, 0, 0)
    assert sorted(r.conversation_id for r in out.accepted) == ["wc-000123", "wc-2", "wc-3", "wc-fine", "wc-ok", "wc-ok2"]
    assert out.reason_of('"wc-trunc"') == "invalid JSON"
    assert out.reason_of("wc-types") == (
        "unparseable timestamp in started_at: 'yesterday'; unparseable boolean in resolved: 'maybe'"
    )
    assert out.reason_of("wc-fax") == "unknown channel 'fax'"
    no_id = [r.reason for r in out.quarantined if r.raw.startswith('{"channel"')]
    assert no_id == ["missing required field conversation_id"]
    assert out.reason_of("wc-future").startswith(
        "timestamp in the future: started_at '2027-01-01T00:00:00Z' is later than arrival date 2026-03-01 + 48 h"
    )
    assert out.reason_of("wc-old") == (
        "timestamp before earliest valid date 2000-01-01: started_at '1970-01-01T00:00:00Z'"
    )
    assert out.reason_of("wc-author") == "unknown messages[0].author 'robot'"
    assert out.reason_of("wc-cust") == "customer is not a JSON object"
    assert out.reason_of('["not"') == "invalid JSON: not an object"
    assert out.reason_of("wc-dup") == "invalid JSON: duplicate key in the record: conversation_id"
    big_row = next(r for r in out.quarantined if r.raw.startswith('{"conversation_id": "wc-big"'))
    assert big_row.reason == (
        f"record larger than {settings.ingest.max_record_bytes} bytes (raw truncated to its first 65536 characters)"
    )
    assert len(big_row.raw) == 65536
    assert out.reason_of("garbage") == "not valid UTF-8 / binary content"
