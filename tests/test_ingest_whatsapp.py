"""Bronze ingest of WhatsApp Business Cloud API webhook payloads."""
from __future__ import annotations

import copy
import json
from datetime import datetime

import pytest

from test_ingest_support import counts_of, ingest, land

# The shape Meta posts (Cloud API webhook, field "messages"), trimmed to one change.
MESSAGES_PAYLOAD = {
    "object": "whatsapp_business_account",
    "entry": [{
        "id": "102290129340398",
        "changes": [{
            "field": "messages",
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "551140040000", "phone_number_id": "106540352242922"},
                "contacts": [{"profile": {"name": "Ana Souza"}, "wa_id": "5511998765432"}],
                "messages": [
                    {"from": "5511998765432", "id": "wamid.HBgNNTUxMTk5ODc2NTQzMhUCABIYFjNFQjBDMA==",
                     "timestamp": "1772377205", "type": "text", "text": {"body": "Oi, minha fatura veio errada"}},
                    {"from": "5511998765432", "id": "wamid.HBgNNTUxMTk5ODc2NTQzMhUCABIYFjNFQjBDMQ==",
                     "timestamp": "1772377215", "type": "image",
                     "image": {"id": "1479537139650973", "mime_type": "image/jpeg", "sha256": "abc"}},
                ],
            },
        }],
    }],
}
STATUS_PAYLOAD = {
    "object": "whatsapp_business_account",
    "entry": [{
        "id": "102290129340398",
        "changes": [{
            "field": "messages",
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "551140040000", "phone_number_id": "106540352242922"},
                "statuses": [{"id": "wamid.HBgNNTUxMTk5ODc2NTQzMhEAEhggQ0E=", "status": "delivered",
                              "timestamp": "1772377300", "recipient_id": "5511998765432",
                              "pricing": {"billable": True, "category": "service"}}],
            },
        }],
    }],
}


def payload(base: dict, **message_changes) -> str:
    doc = copy.deepcopy(base)
    message = doc["entry"][0]["changes"][0]["value"]["messages"][0]
    for key, value in message_changes.items():
        if value is ...:
            message.pop(key, None)
        else:
            message[key] = value
    return json.dumps(doc)


@pytest.fixture(scope="module")
def outcome(spark, settings, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing")
    mixed = copy.deepcopy(MESSAGES_PAYLOAD)
    mixed["entry"][0]["changes"][0]["value"]["statuses"] = STATUS_PAYLOAD["entry"][0]["changes"][0]["value"]["statuses"]
    mixed["entry"][0]["changes"][0]["value"]["messages"] = mixed["entry"][0]["changes"][0]["value"]["messages"][:1]
    land(landing, "whatsapp", "webhooks.jsonl",
         "\n".join([json.dumps(MESSAGES_PAYLOAD), json.dumps(STATUS_PAYLOAD), "", json.dumps(mixed)]) + "\n", bom=True)
    land(landing, "whatsapp", "webhooks-2.jsonl.gz", json.dumps(STATUS_PAYLOAD) + "\n", gz=True)
    hostile = [
        payload(MESSAGES_PAYLOAD, id="wamid.BADTS", timestamp="yesterday"),
        payload(MESSAGES_PAYLOAD, id="wamid.FUTURE", timestamp="4102444800"),
        payload(MESSAGES_PAYLOAD, id=..., text={"body": "no id here"}),
        json.dumps({"object": "page", "entry": [], "marker": "wrong-object"}),
        json.dumps({"object": "whatsapp_business_account", "marker": "no-entry"}),
        # a messages change with nothing in it (an account-level change is accepted: see test_account_updates...)
        json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": [
            {"field": "messages", "value": {"messaging_product": "whatsapp", "marker": "nothing"}}]}]}),
        json.dumps(MESSAGES_PAYLOAD)[:120],
        "\x00\x01\x02 binary junk",
    ]
    land(landing, "whatsapp", "hostile.jsonl", "\n".join(hostile) + "\n")
    land(landing, "whatsapp", "empty.jsonl", "")
    # a 10 MB line: a real-shaped payload whose message text is padded, next to a good payload
    huge = payload(MESSAGES_PAYLOAD, id="wamid.HUGE", text={"body": "x" * (10 * 1024 * 1024)})
    land(landing, "whatsapp", "huge.jsonl", json.dumps(STATUS_PAYLOAD) + "\n" + huge + "\n")
    return ingest(spark, settings, landing, "whatsapp")


def test_message_payload_is_flattened_with_contacts(outcome):
    rows = [r for r in outcome.accepted if r.payload_kind == "messages"]
    assert len(rows) == 1
    text, image = rows[0].messages
    assert text.message_id == "wamid.HBgNNTUxMTk5ODc2NTQzMhUCABIYFjNFQjBDMA=="
    assert text.wa_id == "5511998765432" and text.profile_name == "Ana Souza"
    assert text.sent_at == datetime(2026, 3, 1, 15, 0, 5)  # Unix seconds → UTC
    assert text.type == "text" and text.text == "Oi, minha fatura veio errada"
    assert text.phone_number_id == "106540352242922"
    assert image.type == "image" and image.text is None
    assert json.loads(rows[0]._extra["messages[1].image"])["id"] == "1479537139650973"
    assert rows[0].status_count == 0


def test_status_only_payloads_are_accepted_with_no_messages(outcome):
    statuses = [r for r in outcome.accepted if r.payload_kind == "statuses"]
    assert len(statuses) == 3  # one plain, one from the gzip file, one next to the 10 MB line
    for row in statuses:
        assert row.messages == [] and row.status_count == 1
        assert json.loads(row._extra["statuses"])[0]["status"] == "delivered"
    mixed = [r for r in outcome.accepted if r.payload_kind == "mixed"]
    assert len(mixed) == 1 and len(mixed[0].messages) == 1 and mixed[0].status_count == 1


def test_every_file_reconciles(outcome):
    assert counts_of(outcome, "webhooks.jsonl") == (3, 3, 0)
    assert counts_of(outcome, "webhooks-2.jsonl.gz") == (1, 1, 0)
    assert counts_of(outcome, "hostile.jsonl") == (8, 0, 8)
    assert counts_of(outcome, "empty.jsonl") == (0, 0, 0)
    assert counts_of(outcome, "huge.jsonl") == (2, 1, 1)


def test_hostile_payloads_have_reasons(outcome):
    assert outcome.reason_of("wamid.BADTS") == "unparseable timestamp in messages[0].timestamp: 'yesterday'"
    assert outcome.reason_of("wamid.FUTURE") == (
        "timestamp in the future: messages[0].timestamp '4102444800' is later than arrival date 2026-03-01 + 48 h"
    )
    assert outcome.reason_of("no id here") == "missing required field messages[0].id"
    assert outcome.reason_of("wrong-object") == "not a WhatsApp Business webhook payload: object is 'page'"
    assert outcome.reason_of("no-entry") == "WhatsApp payload has no entry[].changes[].value"
    assert outcome.reason_of('"marker": "nothing"') == "WhatsApp payload carries neither messages nor statuses"
    truncated = [r.reason for r in outcome.quarantined if r.raw == json.dumps(MESSAGES_PAYLOAD)[:120]]
    assert truncated == ["invalid JSON"]
    assert outcome.reason_of("binary junk") == "not valid UTF-8 / binary content"
    assert outcome.reason_of("wamid.HUGE").startswith("record larger than ")
