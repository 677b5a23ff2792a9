"""WhatsApp in silver (identity observations and interactions) over the real-shaped webhook fixtures."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from test_ingest_support import ingest, land

from atende.pipelines.identity import build_identifier_observations, resolve_identities
from atende.pipelines.interactions import build_interactions
from atende.pipelines.schemas import BRONZE, INTERACTIONS

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures" / "whatsapp"
GROUP_FIRST = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
MARIA_BSUID = "BR.1502576394655843"


def utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


@pytest.fixture(scope="module")
def silver(spark, settings, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing-silver")
    for name in ("messages.jsonl", "echoes.jsonl", "statuses.jsonl", "account.jsonl", "username.jsonl", "groups.jsonl"):
        land(landing, "whatsapp", name, (FIXTURES / name).read_text(encoding="utf-8"))
    outcome = ingest(spark, settings, landing, "whatsapp")
    assert outcome.quarantined == []
    whatsapp = spark.createDataFrame(outcome.accepted, BRONZE["whatsapp"])
    observations = build_identifier_observations({"whatsapp": whatsapp}, settings).cache()
    _, _, record_keys = resolve_identities(observations, None, settings, "run-1", NOW)
    record_keys = record_keys.cache()
    frame = build_interactions({"whatsapp": whatsapp}, record_keys, settings, "run-1", NOW)
    return {
        "frame": frame,
        "rows": {r.interaction_id: r for r in frame.collect()},
        "observations": {(r.record_id, r.identifier_type): r.identifier for r in observations.collect()},
        "keys": {r.record_id: r.customer_key for r in record_keys.collect()},
    }


def test_every_conversation_and_nothing_else(silver):
    assert silver["frame"].schema.fieldNames() == INTERACTIONS.fieldNames()
    # statuses, template/account updates, reactions, revokes, edits and system notices open no conversation
    assert sorted(silver["rows"]) == sorted([
        "wa:wamid.pywa.text", "wa:wamid.pywa.callback_button.button", "wa:wamid.pywa.interactive_message_with_err",
        "wa:wamid.pywa.flow_completion.completion", "wa:wamid.username.text", "wa:wamid.username.phone",
        f"wa:{GROUP_FIRST}", "wa:wamid.group.direct",
    ])


def test_every_customer_message_type_is_counted_with_its_caption(silver):
    conv = silver["rows"]["wa:wamid.pywa.text"]
    # 17 customer messages (text, 2 images, voice, audio, document, 2 stickers, video, 2 locations, contact
    # cards, order, reply, 2 forwarded texts, ad referral) + the echo; not the 2 reactions, 2 unsupported,
    # the identity-change notice nor the revoke of the same hour
    assert conv.message_count == 18
    assert conv.customer_text == "Body Text\ncaption\ncaption\nreplied text\nforwarded text\ntext forwarded many times\nBODY"
    assert (conv.started_at, conv.ended_at) == (utc(1697043223), utc(1697045000))
    assert (conv.channel, conv.customer_name) == ("whatsapp", "Test Name")


def test_reply_titles_are_the_customers_text(silver):
    replies = silver["rows"]["wa:wamid.pywa.callback_button.button"]
    # interactive button reply, two list replies, two template quick replies (button)
    assert (replies.message_count, replies.customer_text) == (5, "title\ntitle\ntitle\ntitle\ntitle")
    flow = silver["rows"]["wa:wamid.pywa.flow_completion.completion"]
    assert (flow.message_count, flow.customer_text) == (1, None)  # a Flow's body is Meta's "Sent", not the customer's
    errored = silver["rows"]["wa:wamid.pywa.interactive_message_with_err"]
    assert (errored.message_count, errored.customer_text) == (1, None)


def test_echoes_are_agent_messages_in_the_customers_conversation(silver):
    conv = silver["rows"]["wa:wamid.pywa.text"]
    assert conv.agent_text == "Test message"
    assert conv.first_response_seconds == 77.0  # customer 16:53:43 -> reply from the Business app 16:55:00
    assert silver["observations"][("wamid.pywa.echo.text", "phone")] == "+972987654321"
    assert silver["keys"]["wamid.pywa.echo.text"] == silver["keys"]["wamid.pywa.text"] == conv.customer_key is not None


def test_group_is_its_own_conversation(silver):
    group, direct = silver["rows"][f"wa:{GROUP_FIRST}"], silver["rows"]["wa:wamid.group.direct"]
    assert (group.message_count, group.customer_text) == (2, "What do you all think about this?\nLooks good to me")
    assert (direct.message_count, direct.customer_text) == (1, "And privately: is it in stock?")
    assert direct.started_at == utc(1739321144)
    # the group's customer is its first keyed sender, the same person as the one-to-one chat
    assert group.customer_key == direct.customer_key == silver["keys"][GROUP_FIRST] is not None
    assert silver["keys"]["wamid.group.second"] != group.customer_key


def test_username_sender_is_identified_by_user_id(silver):
    obs, keys = silver["observations"], silver["keys"]
    assert obs[("wamid.username.text", "whatsapp_user_id")] == MARIA_BSUID
    assert ("wamid.username.text", "phone") not in obs
    assert obs[("wamid.username.text", "profile_name")] == "maria lopez"
    # the day before, the same user still shared the number: the user id links both
    assert keys["wamid.username.text"] == keys["wamid.username.image"] == keys["wamid.username.phone"] is not None
    conv = silver["rows"]["wa:wamid.username.text"]
    assert (conv.message_count, conv.customer_text, conv.customer_name) == (
        2, "Posso comprar sem informar meu número?\nEste modelo", "Maria Lopez")
    assert conv.customer_key == keys["wamid.username.text"]
    assert obs[("wamid.pywa.text", "whatsapp_user_id")] == "US.13491208655302741918"
