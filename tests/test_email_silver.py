"""Silver over e-mail bronze: bounces, reports and automatic replies are never a customer, an
interaction or an identifier (real messages from tests/fixtures/email, plus a hand-made thread)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from bronze_frames import at, bronze
from test_ingest_support import ingest, land

from atende.pipelines.identity import RECORD_KEYS, build_identifier_observations
from atende.pipelines.interactions import build_interactions
from atende.pipelines.schemas import BRONZE

NOW = dt.datetime(2026, 3, 20, 6, 0, tzinfo=dt.timezone.utc)
FIXTURES = Path(__file__).parent / "fixtures" / "email"
REAL = (
    "talon-thunderbird-bottom-post.eml",       # a person's reply: kind message
    "sisimai-rfc3834-01-auto-reply.eml",       # Auto-Submitted: auto-replied
    "cpython-msg_16-postmaster-report.eml",    # multipart/report from postmaster
    "cpython-msg_25-mailer-daemon-dsn.eml",    # RFC 3464 report from MAILER-DAEMON
    "sisimai-rfc3464-01-dsn.eml",
)
PERSON = "4F79B73C.9030506@xxx.mailgun.org"


@pytest.fixture(scope="module")
def email(spark, settings, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing-silver")
    for name in REAL:
        land(landing, "email", name, (FIXTURES / name).read_bytes())
    real = ingest(spark, settings, landing, "email").accepted
    assert len(real) == len(REAL)
    hand_made = bronze(spark, "email", [
        {"message_id": "s-a@x.com", "from_address": "bia@x.com", "from_name": "Bia", "sent_at": at(4, 9),
         "body_text": "Pedido atrasado", "kind": "message"},
        {"message_id": "s-b@atende.com.br", "in_reply_to": "s-a@x.com", "references": ["s-a@x.com"],
         "from_address": "suporte@atende.com.br", "sent_at": at(4, 10), "body_text": "Verificando", "kind": "message"},
        # Bia's vacation responder answers the agent; the agent's next mail bounces
        {"message_id": "s-c@x.com", "in_reply_to": "s-b@atende.com.br", "references": ["s-a@x.com", "s-b@atende.com.br"],
         "from_address": "bia@x.com", "from_name": "Bia", "sent_at": at(4, 11), "body_text": "Estou de férias",
         "kind": "auto_reply"},
        {"message_id": "s-d@mx.x.com", "in_reply_to": "s-b@atende.com.br", "from_address": "MAILER-DAEMON@mx.x.com",
         "from_name": "Mail Delivery System", "sent_at": at(4, 12), "body_text": "Mailbox full", "kind": "bounce"},
    ])
    return spark.createDataFrame(real, BRONZE["email"]).unionByName(hand_made)


def test_automatic_mail_gives_no_identifier(email, settings):
    obs = build_identifier_observations({"email": email}, settings).collect()
    records = {r.record_id for r in obs}
    assert records == {PERSON, "s-a@x.com", "s-b@atende.com.br"}
    emails = {r.identifier for r in obs if r.identifier_type == "email"}
    assert emails == {"bob@xxx.mailgun.org", "bia@x.com"}  # no postmaster, mailer-daemon or auto-replier


def test_automatic_mail_is_no_interaction_and_no_text(spark, email, settings):
    keys = spark.createDataFrame(
        [("email", PERSON, "c-bob"), ("email", "s-a@x.com", "c-bia"), ("email", "s-b@atende.com.br", "c-bia")],
        RECORD_KEYS,
    )
    rows = {r.interaction_id: r for r in build_interactions({"email": email}, keys, settings, "run-1", NOW).collect()}
    assert sorted(rows) == [f"email:{PERSON}", "email:s-a@x.com"]
    thread = rows["email:s-a@x.com"]
    assert thread.message_count == 2 and thread.customer_key == "c-bia"
    assert thread.customer_text == "Pedido atrasado" and thread.agent_text == "Verificando"
    assert thread.ended_at == at(4, 10).replace(tzinfo=None)
    assert rows[f"email:{PERSON}"].customer_text == "Hello"
