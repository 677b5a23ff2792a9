"""Bronze ingest of WhatsApp Business Cloud API webhook payloads."""
from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path

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


# ---------------------------------------------------------------- real-shaped payloads (tests/fixtures/whatsapp)
FIXTURES = Path(__file__).parent / "fixtures" / "whatsapp"
FIXTURE_FILES = ("messages.jsonl", "echoes.jsonl", "statuses.jsonl", "account.jsonl", "username.jsonl", "groups.jsonl")
CUSTOMER_BSUID = "US.13491208655302741918"


@pytest.fixture(scope="module")
def real(spark, settings, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing-real")
    for name in FIXTURE_FILES:
        land(landing, "whatsapp", name, (FIXTURES / name).read_text(encoding="utf-8"))
    hostile = [
        # a username sender must still name themselves: from_user_id
        json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": {
            "contacts": [{"profile": {"name": "Nobody"}}],
            "messages": [{"id": "wamid.NOSENDER", "timestamp": "1739321024", "type": "text", "text": {"body": "?"}}]}}]}]}),
        # an echo must name its recipient
        json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "smb_message_echoes", "value": {
            "message_echoes": [{"from": "972123456789", "id": "wamid.NOTO", "timestamp": "1697043300", "type": "text",
                                "text": {"body": "to whom?"}}]}}]}]}),
    ]
    land(landing, "whatsapp", "hostile-real.jsonl", "\n".join(hostile) + "\n")
    # Meta's echo syntax for a user whose number is hidden: `to_user_id` only
    echo = json.loads((FIXTURES / "echoes.jsonl").read_text(encoding="utf-8"))
    value = echo["entry"][0]["changes"][0]["value"]
    value["contacts"] = [{"profile": {"name": "Maria Lopez", "username": "@maria.lopez"}, "user_id": "BR.1502576394655843"}]
    value["message_echoes"][0].update(id="wamid.ECHO.USERNAME", to_user_id="BR.1502576394655843")
    value["message_echoes"][0].pop("to")
    land(landing, "whatsapp", "echo-username.jsonl", json.dumps(echo) + "\n")
    outcome = ingest(spark, settings, landing, "whatsapp")
    messages = {m.message_id: (m, row) for row in outcome.accepted for m in row.messages}
    return outcome, messages


def _msg(real, message_id):
    return real[1][message_id][0]


def _extra_of(real, message_id):
    return real[1][message_id][1]._extra


def test_real_payload_files_are_accepted_whole(real):
    outcome, _ = real
    for name in FIXTURE_FILES:
        lines = len((FIXTURES / name).read_text(encoding="utf-8").splitlines())
        assert counts_of(outcome, name) == (lines, lines, 0), name


def test_text_message_keeps_sender_business_line_and_user_id(real):
    text = _msg(real, "wamid.pywa.text")
    assert (text.type, text.text, text.direction) == ("text", "Body Text", "inbound")
    assert (text.wa_id, text.user_id, text.profile_name, text.username) == ("972987654321", CUSTOMER_BSUID, "Test Name", None)
    assert (text.display_phone_number, text.phone_number_id) == ("972123456789", "1122334455667")
    assert text.sent_at == datetime(2023, 10, 11, 16, 53, 43)
    assert text.caption is None and text.media_id is None and text.group_id is None


@pytest.mark.parametrize("case, kind, media_id, mime_type, caption, filename", [
    ("image", "image", "65463453", "image/jpeg", None, None),
    ("media_with_url", "image", "65463453", "image/jpeg", None, None),
    ("video", "video", "765756756", "video/mp4", "caption", None),
    ("document", "document", "1234567890987654321", "application/pdf", "caption", "filename.pdf"),
    ("audio", "audio", "1234567890987654321", "audio/ogg; codecs=opus", None, None),
    ("voice", "audio", "1234567890987654321", "audio/ogg; codecs=opus", None, None),
    ("static_sticker", "sticker", "1234567890987654321", "image/webp", None, None),
    ("animated_sticker", "sticker", "1234567890987654321", "image/webp", None, None),
])
def test_media_messages_keep_media_id_mime_type_caption_and_filename(real, case, kind, media_id, mime_type, caption, filename):
    m = _msg(real, f"wamid.pywa.{case}")
    assert (m.type, m.media_id, m.mime_type, m.caption, m.filename, m.text) == (kind, media_id, mime_type, caption, filename, None)
    assert m.wa_id == "972987654321"
    # the whole media object stays in _extra (sha256, url, voice, animated are not typed)
    assert json.loads(_extra_of(real, f"wamid.pywa.{case}")[f"messages[0].{kind}"])["id"] == media_id


def test_location_messages_keep_coordinates_name_and_address(real):
    chosen, current = _msg(real, "wamid.pywa.chosen_location"), _msg(real, "wamid.pywa.current_location")
    assert (chosen.type, chosen.latitude, chosen.longitude) == ("location", 37.4611978, -122.2164385)
    assert (chosen.location_name, chosen.location_address) == ("Facebook HQ", "1 Hacker Way, Menlo Park, CA 94025")
    assert (current.latitude, current.longitude, current.location_name, current.location_address) == (
        12.25089, 43.90539, None, None)


def test_replies_keep_their_id_and_title(real):
    expected = {
        "wamid.pywa.callback_button.button": ("interactive", "button_reply", "callback_data", "title"),
        "wamid.pywa.callback_button.quick_reply": ("button", "button", "callback_data", "title"),
        "wamid.pywa.callback_selection.callback": ("interactive", "list_reply", "callback_data", "title"),
        "wamid.pywa.callback_selection.description": ("interactive", "list_reply", "callback_data", "title"),
        "wamid.pywa.flow_completion.completion": ("interactive", "nfm_reply", "flow", "Sent"),
    }
    for message_id, fields in expected.items():
        m = _msg(real, message_id)
        assert (m.type, m.reply_kind, m.reply_id, m.reply_title) == fields, message_id
    # the Flow's answers stay in _extra, in the interactive object
    flow = json.loads(_extra_of(real, "wamid.pywa.flow_completion.completion")["messages[0].interactive"])
    assert json.loads(flow["nfm_reply"]["response_json"])["delivery_rating"] == "4"
    assert _msg(real, "wamid.pywa.callback_button.button").context_message_id == "wamid.xyzxyz"


def test_order_keeps_its_items(real):
    order = _msg(real, "wamid.pywa.order")
    assert order.type == "order" and order.caption is None  # the order's note is empty
    assert [tuple(i) for i in order.order_items] == [
        ("HAMBURGER", 3, 30.0, "ILS"), ("FRENCH_FRIES", 2, 35.0, "ILS"), ("SODA", 2, 10.0, "ILS"),
    ]


def test_reactions_keep_their_target_and_emoji(real):
    reaction, removed = _msg(real, "wamid.pywa.reaction"), _msg(real, "wamid.pywa.unreaction_empty")
    assert (reaction.type, reaction.reaction_message_id, reaction.reaction_emoji) == ("reaction", "wamid.yzxyzx=", "\U0001F62E")
    assert (removed.reaction_message_id, removed.reaction_emoji) == ("wamid.yzxyzx=", "")


def test_reply_context_contacts_system_and_unsupported_messages(real):
    assert _msg(real, "wamid.pywa.reply").context_message_id == "wamid.xyzxyz=="
    cards = json.loads(_extra_of(real, "wamid.pywa.contacts")["messages[0].contacts"])
    assert [c["name"]["formatted_name"] for c in cards] == ["Chandler Bing", "Monica", "Rachel Green"]
    system = _msg(real, "wamid.pywa.system.phone_number_change")
    assert (system.type, system.wa_id, system.profile_name) == ("system", "972987654321", None)  # no contacts[]
    assert json.loads(_extra_of(real, "wamid.pywa.system.phone_number_change")["messages[0].system"])["wa_id"] == "972912345678"
    unsupported = _msg(real, "wamid.pywa.unsupported_with_type")
    assert unsupported.type == "unsupported"
    assert json.loads(_extra_of(real, "wamid.pywa.unsupported_with_type")["messages[0].errors"])[0]["code"] == 131051
    assert _msg(real, "wamid.pywa.referral").text == "BODY"
    assert json.loads(_extra_of(real, "wamid.pywa.referral")["messages[0].referral"])["source_id"] == "ADID"


def test_extra_keeps_value_errors_and_contact_user_ids(real):
    extra = _extra_of(real, "wamid.pywa.interactive_message_with_err")
    assert json.loads(extra["values[0].errors"])[0]["code"] == 131000
    assert extra["values[0].contacts[0].user_id"] == CUSTOMER_BSUID
    assert extra["values[0].contacts[0].parent_user_id"] == "US.ENT.11815799212886844830"
    assert _extra_of(real, "wamid.username.text")["values[0].contacts[0].profile.username"] == "@maria.lopez"


def test_username_sender_without_from_is_identified_by_user_id(real):
    text, image = _msg(real, "wamid.username.text"), _msg(real, "wamid.username.image")
    assert (text.wa_id, text.user_id, text.username, text.profile_name) == (
        None, "BR.1502576394655843", "@maria.lopez", "Maria Lopez")
    assert (image.wa_id, image.user_id, image.caption) == (None, "BR.1502576394655843", "Este modelo")
    phone = _msg(real, "wamid.username.phone")
    assert (phone.wa_id, phone.user_id, phone.username) == ("5511987654321", "BR.1502576394655843", None)
    assert _msg(real, "wamid.pywa.callback_button.quick_reply_without_context").user_id == CUSTOMER_BSUID


def test_group_messages_keep_their_group_id(real):
    group_id = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD"
    first = _msg(real, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=")
    assert (first.group_id, first.wa_id, first.profile_name, first.text) == (
        group_id, "16505551234", "Sheena Nelson", "What do you all think about this?")
    assert _msg(real, "wamid.group.second").group_id == group_id
    assert _msg(real, "wamid.group.direct").group_id is None
    assert first.display_phone_number == "15550783881"


def test_echoes_are_flattened_as_outbound_to_the_customer(real):
    echo = _msg(real, "wamid.pywa.echo.text")
    row = real[1]["wamid.pywa.echo.text"][1]
    assert (row.payload_kind, row.change_fields, row.status_count) == ("echoes", ["smb_message_echoes"], 0)
    assert (echo.direction, echo.wa_id, echo.user_id, echo.profile_name, echo.text) == (
        "echo", "972987654321", CUSTOMER_BSUID, "Test Name", "Test message")
    assert echo.display_phone_number == "972123456789"
    assert row._extra["message_echoes[0].from"] == "972123456789"
    assert row._extra["message_echoes[0].to_parent_user_id"] == "US.ENT.11815799212886844830"


def test_template_and_account_updates_are_accepted_as_account_updates(real):
    outcome, _ = real
    rows = [r for r in outcome.accepted if r._source_file.endswith("account.jsonl")]
    assert len(rows) == 8
    assert {r.payload_kind for r in rows} == {"account_update"}
    assert all(r.messages == [] and r.status_count == 0 for r in rows)
    assert sorted(f for r in rows for f in r.change_fields) == sorted([
        "message_template_status_update", "message_template_status_update", "message_template_quality_update",
        "template_category_update", "account_update", "account_update", "account_update", "user_preferences",
    ])
    by_event = {r._extra.get("values[0].event"): r for r in rows}
    assert by_event["APPROVED"]._extra["values[0].message_template_name"] == "order_confirmation"
    assert by_event["ACCOUNT_VIOLATION"]._extra["entry[0].time"] == "1743451903"  # the change's instant
    assert json.loads(by_event["REJECTED"]._extra["values[0].rejection_info"])["reason"].startswith("Your template")
    assert json.loads(by_event["PARTNER_ADDED"]._extra["values[0].waba_info"])["waba_id"] == "980198427658004"


def test_status_payloads_are_counted(real):
    outcome, _ = real
    rows = [r for r in outcome.accepted if r._source_file.endswith("statuses.jsonl")]
    assert [(r.payload_kind, r.status_count, r.messages) for r in rows] == [("statuses", 1, [])] * 3


def test_senderless_message_and_recipientless_echo_are_quarantined(real):
    outcome, _ = real
    assert counts_of(outcome, "hostile-real.jsonl") == (2, 0, 2)
    assert outcome.reason_of("wamid.NOSENDER") == "missing required field messages[0].from"
    assert outcome.reason_of("wamid.NOTO") == "missing required field message_echoes[0].to"


def test_echo_to_a_username_is_addressed_by_user_id(real):
    outcome, _ = real
    assert counts_of(outcome, "echo-username.jsonl") == (1, 1, 0)
    echo = _msg(real, "wamid.ECHO.USERNAME")
    assert (echo.direction, echo.wa_id, echo.user_id, echo.username, echo.profile_name) == (
        "echo", None, "BR.1502576394655843", "@maria.lopez", "Maria Lopez")
