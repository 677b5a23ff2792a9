"""Bronze ingest of e-mail (.eml and .mbox), parsed with Python's email package on the executors."""
from __future__ import annotations

import gzip
import os
from datetime import datetime

import pytest

from pipelines.ingest.email_messages import html_to_text, split_mbox, strip_quoted_reply
from test_ingest_support import counts_of, ingest, land

MULTIPART_REPLY = """\
From: "Ana Souza" <Ana.Souza@Example.com>
To: Atendimento <atendimento@atende.com.br>, bob@atende.com.br
Cc: gerente@atende.com.br
Subject: =?utf-8?q?Re=3A_Fatura_de_mar=C3=A7o?=
Date: Sun, 01 Mar 2026 12:00:05 -0300
Message-ID: <CAF+reply.2@mail.example.com>
In-Reply-To: <agent.1@atende.com.br>
References: <first.0@mail.example.com>
 <agent.1@atende.com.br>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><head><style>p {{ color: red }}</style></head><body>
<p>Ol=C3=A1, a fatura <b>continua</b> errada &amp; cobrada duas vezes.</p>
<div class=3D"gmail_quote">Em dom., 1 de mar. de 2026 =C3=A0s 11:00, Atendimento &lt;atendimento@atende.com.br&gt; escreveu:<br>
<blockquote>Pode enviar a fatura?</blockquote></div>
</body></html>
--inner--
--outer
Content-Type: application/pdf; name="fatura.pdf"
Content-Disposition: attachment; filename="fatura.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--outer--
"""

MBOX = """\
From ana@example.com Sun Mar  1 12:00:05 2026
From: Ana Souza <ana@example.com>
To: atendimento@atende.com.br
Subject: Fatura
Date: Sun, 01 Mar 2026 12:00:05 -0300
Message-ID: <m1@example.com>
Content-Type: text/plain; charset=utf-8

Oi, minha fatura veio errada.
>From the bill: R$ 100

From atendimento@atende.com.br Sun Mar  1 12:10:00 2026
From: Atendimento <atendimento@atende.com.br>
To: ana@example.com
Subject: Re: Fatura
Date: Sun, 01 Mar 2026 15:10:00 +0000
Message-ID: <m2@atende.com.br>
In-Reply-To: <m1@example.com>
References: <m1@example.com>
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

{reply_b64}
From ana@example.com Sun Mar  1 12:20:00 2026
From: ana@example.com
Subject: Re: Re: Fatura
Date: Sun, 1 Mar 2026 12:20:00 -0300
Message-ID: <m3@example.com>
In-Reply-To: <m2@atende.com.br>
References: <m1@example.com> <m2@atende.com.br>

Obrigada!

On Sun, Mar 1, 2026 at 12:10 PM Atendimento <
atendimento@atende.com.br> wrote:
> Vamos corrigir.
"""

REPLY_TEXT = "Vamos corrigir a fatura hoje.\n\n> Oi, minha fatura veio errada.\n"


def simple(message_id: str | None, date: str | None = "Sun, 01 Mar 2026 12:00:05 -0300", body: str = "oi") -> str:
    headers = ["From: ana@example.com", "To: atendimento@atende.com.br", "Subject: teste"]
    if message_id:
        headers.append(f"Message-ID: <{message_id}>")
    if date:
        headers.append(f"Date: {date}")
    return "\n".join(headers) + "\n\n" + body + "\n"


@pytest.fixture(scope="module")
def outcome(spark, settings, tmp_path_factory):
    import base64

    landing = tmp_path_factory.mktemp("landing")
    land(landing, "email", "reply.eml", MULTIPART_REPLY.replace("{{", "{").replace("}}", "}"), bom=False)
    mbox = MBOX.format(reply_b64=base64.b64encode(REPLY_TEXT.encode()).decode())
    land(landing, "email", "thread.mbox", mbox)
    land(landing, "email", "thread-copy.mbox.gz", mbox.replace("<m", "<gz-m"), gz=True)
    land(landing, "email", "bom.eml", simple("bom@example.com"), bom=True)
    # hostile
    land(landing, "email", "binary.eml", os.urandom(2048))
    land(landing, "email", "empty.eml", "")
    land(landing, "email", "no-id.eml", simple(None, body="no id marker"))
    land(landing, "email", "bad-date.eml", simple("bad-date@example.com", date="sometime last week"))
    land(landing, "email", "future.eml", simple("future@example.com", date="Fri, 01 Jan 2100 00:00:00 +0000"))
    land(landing, "email", "old.eml", simple("old@example.com", date="Thu, 01 Jan 1970 00:00:00 +0000"))
    land(landing, "email", "huge.eml", simple("huge@example.com", body="x" * (settings.ingest.max_record_bytes + 10)))
    land(landing, "email", "not-mail.eml", "just some words\nand more words\n")
    land(landing, "email", "broken.eml.gz", gzip.compress(simple("gz@example.com").encode())[:-12])
    land(landing, "email", "empty.mbox", "")
    return ingest(spark, settings, landing, "email")


def by_id(outcome, message_id):
    return next(r for r in outcome.accepted if r.message_id == message_id)


def test_multipart_html_reply_is_reduced_to_new_text(outcome):
    row = by_id(outcome, "CAF+reply.2@mail.example.com")
    assert row.in_reply_to == "agent.1@atende.com.br"
    assert row.references == ["first.0@mail.example.com", "agent.1@atende.com.br"]
    assert row.from_address == "Ana.Souza@Example.com" and row.from_name == "Ana Souza"
    assert row.to_addresses == ["atendimento@atende.com.br", "bob@atende.com.br"]
    assert row.subject == "Re: Fatura de março"
    assert row.sent_at == datetime(2026, 3, 1, 15, 0, 5)
    assert row.body_text == "Olá, a fatura continua errada & cobrada duas vezes."
    assert row._extra["cc"] == "gerente@atende.com.br"
    assert row._extra["attachments"] == '["fatura.pdf"]'


def test_mbox_messages_are_split_unescaped_and_stripped_of_quotes(outcome):
    m1, m2, m3 = (by_id(outcome, f"m{i}@example.com" if i != 2 else "m2@atende.com.br") for i in (1, 2, 3))
    assert m1.body_text == "Oi, minha fatura veio errada.\nFrom the bill: R$ 100"
    assert m2.body_text == "Vamos corrigir a fatura hoje."  # base64 decoded, ">" lines dropped
    assert m2.sent_at == datetime(2026, 3, 1, 15, 10)
    assert m3.body_text == "Obrigada!"  # "On … wrote:" wrapped over two lines, and after, dropped
    assert m3.references == ["m1@example.com", "m2@atende.com.br"] and m3.to_addresses is None
    assert counts_of(outcome, "thread.mbox") == (3, 3, 0)
    assert counts_of(outcome, "thread-copy.mbox.gz") == (3, 3, 0)
    assert by_id(outcome, "gz-m1@example.com").subject == "Fatura"


def test_every_file_reconciles(outcome):
    assert counts_of(outcome, "reply.eml") == (1, 1, 0)
    assert counts_of(outcome, "bom.eml") == (1, 1, 0)
    for name in ("binary.eml", "empty.eml", "no-id.eml", "bad-date.eml", "future.eml", "old.eml", "huge.eml",
                 "not-mail.eml", "broken.eml.gz"):
        assert counts_of(outcome, name) == (1, 0, 1), name
    assert counts_of(outcome, "empty.mbox") == (0, 0, 0)


def test_hostile_messages_have_reasons(outcome, settings):
    reasons = {os_name(r._source_file): r.reason for r in outcome.quarantined}
    assert reasons["binary.eml"] == "not valid UTF-8 / binary content"
    assert reasons["empty.eml"] == "empty message"
    assert reasons["no-id.eml"] == "missing required field Message-ID"
    assert reasons["bad-date.eml"] == "unparseable timestamp in Date: 'sometime last week'"
    assert reasons["future.eml"] == (
        "timestamp in the future: Date 'Fri, 01 Jan 2100 00:00:00 +0000' is later than arrival date 2026-03-01 + 48 h"
    )
    assert reasons["old.eml"] == (
        "timestamp before earliest valid date 2000-01-01: Date 'Thu, 01 Jan 1970 00:00:00 +0000'"
    )
    assert reasons["huge.eml"] == (
        f"record larger than {settings.ingest.max_record_bytes} bytes (raw truncated to its first 65536 characters)"
    )
    assert reasons["not-mail.eml"] == "not an e-mail message: no header lines"
    assert reasons["broken.eml.gz"].startswith("unreadable gzip file")


def os_name(path: str) -> str:
    return os.path.basename(path)


def test_html_to_text_and_quote_stripping_helpers():
    assert html_to_text("<p>a&nbsp;b</p><script>x()</script><div>c<br>d</div>") == "a\xa0b\n\nc\nd"
    assert strip_quoted_reply("new\n> old\n  > older\nmore") == "new\nmore"
    assert strip_quoted_reply("ok\n-----Original Message-----\nFrom: x") == "ok"
    outlook = "Ok, obrigado.\n\n________________________________\nDe: Yago <y@atende.com.br>\nEnviado: quinta-feira\n\nPrezado"
    assert strip_quoted_reply(outlook) == "Ok, obrigado."
    assert strip_quoted_reply("ok\nFrom: A <a@x>\nSent: Monday\n\nold") == "ok"
    assert split_mbox(b"") == []
    assert split_mbox(b"junk before\nFrom a b\nX: 1\n\nbody\n") == [b"junk before\n", b"X: 1\n\nbody\n"]
