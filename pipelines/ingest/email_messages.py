"""E-mail: RFC 5322 messages, ``.eml`` (one per file) or ``.mbox`` (many) (CONTRACTS §2).

Parsing MIME needs Python's ``email`` package, so this is the one source parsed
in Python: ``mapInArrow`` over the files' bytes, on the executors. Everything
after the parse (types, required fields, time checks) is Spark.

* Records: an ``.mbox`` (also ``.mbox.gz``) holds one message per "From " line
  (text before the first such line, if not blank, is one more record); any other
  file is one message, so an ``.eml`` is always 1 record, even when empty.
* Parsed with the modern policy (``email.policy.default``, ``BytesParser``; its header
  registry remembers the header objects it built, ``POLICY``). Raw 8-bit
  header bytes (RFC 6532 UTF-8, or the Latin-1 of old clients) are decoded as UTF-8
  when they are (a few broken bytes dropped), else as Windows-1252.
* ``message_id``, ``in_reply_to`` and ``references`` are ids without angle brackets.
  A message without a Message-ID (RFC 5322 does not require one) gets
  ``derived.<sha256>@atende.invalid``, a hash of its sender, date, subject and body, so a
  re-delivery of it gets the same id; ``message_id_derived`` says so.
* ``from_address`` is the address in angle brackets when there is one
  ("alice@x <bob@y>" is bob@y); ``from_name`` is the display name (or the old
  "address (Name)" comment), null when it is itself an address.
* ``recipient_addresses``: the To, Cc, Delivered-To and X-Original-To addresses, each once.
* ``kind`` (``message_kind``): ``message``, ``bounce``, ``report``, ``auto_reply`` or
  ``auto_generated``; only a ``message`` is a person's contact.
* ``body_text``: the text/plain part, else the HTML part reduced to text
  (``html.parser``; scripts, styles and ``<blockquote>`` quotes dropped), else the raw
  body of a multipart without a boundary; then the text of forwarded messages
  (message/rfc822). The quoted reply history is removed (``strip_quoted_reply``): lines
  starting with ">" and the "On … wrote:" / "Em … escreveu:" line that introduces
  them (wrapped over up to three lines), keeping the new text above, below or between
  the quotes; an attribution not followed by ">" lines, an "-----Original Message-----" /
  "-----Mensagem original-----" line or an Outlook reply header (a line of underscores,
  or "De:"/"From:" followed by "Enviado:"/"Sent:") starts an unmarked copy of the old
  message, removed to the end.
* ``sent_at`` is the Date header; a date without a zone ("-0000") is UTC, as RFC 5322 says.
* ``_extra`` keeps every other header (lower-cased name; repeated ones joined
  by a newline) and ``attachments``, the attached files' names as a JSON array.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Callable, Iterator
from datetime import timezone
from email import policy
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from functools import lru_cache, partial
from html.parser import HTMLParser

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from atende.pipelines.ingest.common import (
    ClassifierPlan,
    FieldRule,
    IngestRules,
    RunLineage,
    apply_plan,
    classifier_plan,
    event_time_reasons,
    field_problems,
    joined_reasons,
    per_session,
    shown,
)

SOURCE = "email"

# What the Python parse returns per message; typing and checks follow in Spark.
PARSED_MESSAGES = StructType([
    StructField("_source_file", StringType(), False),
    StructField("_arrival_date", DateType(), False),
    StructField("problem", StringType()),       # why the message could not be parsed at all
    StructField("raw", StringType()),           # the message text, cut to raw_max_chars
    StructField("raw_chars", LongType()),       # its full length, to say when it was cut
    StructField("message_id", StringType()),
    StructField("in_reply_to", StringType()),
    StructField("references", ArrayType(StringType())),
    StructField("from_address", StringType()),
    StructField("from_name", StringType()),
    StructField("to_addresses", ArrayType(StringType())),
    StructField("subject", StringType()),
    StructField("date_text", StringType()),     # the Date header as written
    StructField("sent_at_utc", StringType()),   # ISO 8601 in UTC, null when the date does not parse
    StructField("body_text", StringType()),
    StructField("kind", StringType()),
    StructField("message_id_derived", BooleanType()),
    StructField("recipient_addresses", ArrayType(StringType())),
    StructField("extra", MapType(StringType(), StringType())),
])
_ARROW_PARSED = pa.schema([
    pa.field("_source_file", pa.string(), False),
    pa.field("_arrival_date", pa.date32(), False),
    pa.field("problem", pa.string()),
    pa.field("raw", pa.string()),
    pa.field("raw_chars", pa.int64()),
    pa.field("message_id", pa.string()),
    pa.field("in_reply_to", pa.string()),
    pa.field("references", pa.list_(pa.string())),
    pa.field("from_address", pa.string()),
    pa.field("from_name", pa.string()),
    pa.field("to_addresses", pa.list_(pa.string())),
    pa.field("subject", pa.string()),
    pa.field("date_text", pa.string()),
    pa.field("sent_at_utc", pa.string()),
    pa.field("body_text", pa.string()),
    pa.field("kind", pa.string()),
    pa.field("message_id_derived", pa.bool_()),
    pa.field("recipient_addresses", pa.list_(pa.string())),
    pa.field("extra", pa.map_(pa.string(), pa.string())),
])

MAPPED_HEADERS = frozenset({"message-id", "in-reply-to", "references", "from", "to", "subject", "date"})
# where a message says who it was delivered to: the recipients kept in ``recipient_addresses``
RECIPIENT_HEADERS = ("to", "cc", "delivered-to", "x-original-to")
# kinds: a person's message, or one of the automatic ones that are never a customer's contact
MESSAGE, BOUNCE, REPORT, AUTO_REPLY, AUTO_GENERATED = "message", "bounce", "report", "auto_reply", "auto_generated"
KINDS = (MESSAGE, BOUNCE, REPORT, AUTO_REPLY, AUTO_GENERATED)
# a Message-ID made up when the message has none: a reserved (.invalid, RFC 2606) domain, so it
# can never equal a real one
DERIVED_ID_DOMAIN = "atende.invalid"
_FROM_LINE = re.compile(rb"^From [^\n]*(?:\n|$)", re.MULTILINE)
_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
_ANGLE_ADDRESS = re.compile(r"<\s*([^<>\s@]+@[^<>\s@]+)\s*>")
_LOOKS_LIKE_ADDRESS = re.compile(r"^[<'\"\s]*[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+[>'\"\s]*$")
_SYSTEM_SENDERS = frozenset({"mailer-daemon", "postmaster", "mail-daemon"})
_SYSTEM_SENDER_NAME = re.compile(r"\bmailer[- ]daemon\b|\bmail delivery (?:subsystem|system)\b", re.IGNORECASE)
_LINE_BREAK = re.compile(r"\r?\n")
# Where quoted history starts when it is not marked with ">": old Outlook
# ("-----Original Message-----"), new Outlook (a line of underscores, or "De:"/"From:"
# directly followed by "Enviado:"/"Sent:"): everything from there on is the old message.
_ORIGINAL_MESSAGE = re.compile(
    r"^[ \t]*-{2,}\s*(?:Original Message|Mensagem original)\s*-{2,}[ \t]*$"
    r"|^[ \t]*_{10,}[ \t]*$"
    r"|^[ \t]*(?:De|From)[ \t]*:[^\n]*\n[ \t]*(?:Enviado|Enviada|Sent)[ \t]*:",
    re.MULTILINE | re.IGNORECASE,
)
# The attribution line of a quote, Gmail/Apple/Thunderbird style ("On … wrote:", "Em … escreveu:"),
# which mail clients may wrap over up to three lines.
_ATTRIBUTION = re.compile(
    r"^[ \t]*(?:On|Em)\b(?:[^\n]*\n[ \t]*(?=[^\s>])){0,2}?[^\n]*\b(?:wrote|escreveu)\s*:[ \t]*$",
    re.MULTILINE | re.IGNORECASE,
)
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0E-\x1F]")


# ------------------------------------------------------------------ pure Python helpers

def split_mbox(data: bytes) -> list[bytes]:
    """The messages of an mbox file, "From " envelope lines removed and ">From " unescaped."""
    starts = [m for m in _FROM_LINE.finditer(data)]
    chunks: list[bytes] = []
    lead = data[: starts[0].start()] if starts else data
    if lead.strip():
        chunks.append(lead)
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(data)
        chunks.append(data[match.end():end])
    # mboxrd writers escape body lines starting with "From " as ">From ".
    return [_ESCAPED_FROM.sub(rb"\1", chunk) for chunk in chunks]


def looks_binary(data: bytes) -> bool:
    """NUL bytes, or more than 1% control bytes: not a text message (8-bit charsets are fine)."""
    if b"\x00" in data:
        return True
    return len(_CONTROL_BYTES.findall(data)) > max(1, len(data) // 100)


class _TextOfHtml(HTMLParser):
    _SKIPPED = {"script", "style", "head", "title", "blockquote"}
    _BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIPPED:
            self.skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag, attrs):
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(re.sub(r"[ \t\r\n\f]+", " ", data))


def html_to_text(html: str) -> str:
    """Readable text of an HTML body: one line per block, whitespace collapsed."""
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    lines = (line.strip() for line in "".join(parser.parts).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def strip_quoted_reply(text: str) -> str:
    """The new text of a reply, wherever it is (above, below or between the quotes): quoted
    lines (">") and their "On … wrote:" attribution removed. An attribution not followed by
    ">" lines, and an Outlook "Original Message" / "From: … Sent:" header, start an unmarked
    copy of the old message: everything from there on is removed."""
    cut = _ORIGINAL_MESSAGE.search(text)
    if cut:
        text = text[: cut.start()]
    kept: list[str] = []
    rest = text
    while True:
        attribution = _ATTRIBUTION.search(rest)
        if attribution is None:
            kept.append(rest)
            break
        kept.append(rest[: attribution.start()])
        rest = rest[attribution.end():]
        following = next((line for line in rest.splitlines() if line.strip()), None)
        if following is None or not following.lstrip().startswith(">"):
            break  # an unmarked quote (or nothing) follows: the rest is the old message
    lines = [line.rstrip() for line in "".join(kept).splitlines() if not line.lstrip().startswith(">")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _part_text(part: MIMEPart) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError, AssertionError, KeyError):
        pass  # an unknown charset or broken encoding: decode the bytes leniently below
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = str(part.get_payload() or "").encode("utf-8", errors="surrogateescape")
    return _text_of_bytes(payload)


def _main_text(message: EmailMessage) -> str | None:
    """The message's own text (text/plain, else HTML reduced to text), quotes not yet removed.
    A multipart without a boundary (which the parser cannot split) keeps its raw body text."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        if message.get_content_maintype() == "multipart" and not message.is_multipart():
            return _part_text(message).replace("\r\n", "\n")
        return None
    text = _part_text(part)
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return text.replace("\r\n", "\n")


def _forwarded(message: EmailMessage) -> list[EmailMessage]:
    """Messages forwarded inside this one: a message/rfc822 body, or message/rfc822 parts of a
    multipart/mixed (not those of a report, which are the returned original)."""
    candidates: list[MIMEPart]
    if message.get_content_type() == "message/rfc822":
        candidates = [message]
    elif message.get_content_type() == "multipart/mixed" and message.is_multipart():
        candidates = [p for p in message.iter_parts() if p.get_content_type() == "message/rfc822"]
    else:
        return []
    inner: list[EmailMessage] = []
    for part in candidates:
        payload = part.get_payload()
        if isinstance(payload, list):
            inner += [m for m in payload if isinstance(m, EmailMessage)]
    return inner


def _body_texts(message: EmailMessage, depth: int = 0) -> tuple[str | None, str]:
    """(the message's own new text, its full text for the derived id): a forwarded message's
    text is part of the body, after the forwarding note."""
    own = _main_text(message)
    texts = [strip_quoted_reply(own)] if own else []
    full = [own or ""]
    if depth < 3:
        for inner in _forwarded(message):
            inner_text, inner_full = _body_texts(inner, depth + 1)
            if inner_text:
                texts.append(inner_text)
            full.append(inner_full)
    return "\n\n".join(t for t in texts if t) or None, "\n".join(full)


def _text_of_bytes(data: bytes) -> str:
    """8-bit text of unknown charset: UTF-8 when it mostly is (RFC 6532 headers), else
    Windows-1252 (Latin-1 with the printable 0x80-0x9F of Windows)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lenient = data.decode("utf-8", errors="replace")
    wide = sum(1 for c in lenient if ord(c) > 127 and c != "\ufffd")
    if wide > lenient.count("\ufffd"):
        return lenient.replace("\ufffd", "")  # UTF-8 with a few broken bytes: drop those
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: undefined in Windows-1252, Latin-1 then
        return "".join(bytes([b]).decode("cp1252") if b not in _CP1252_UNDEFINED else chr(b) for b in data)


_CP1252_UNDEFINED = frozenset({0x81, 0x8D, 0x8F, 0x90, 0x9D})


class _RememberedHeaders(HeaderRegistry):
    """The modern policy's header registry, remembering the header objects it built.

    The modern policy parses a header again each time it is read, and the parser
    itself reads a part's Content-Type a dozen times (about 20 parses per message,
    most of the parse's time). A header object is immutable and depends only on its
    name and value, and the same Content-Type values recur across messages.
    """

    def __init__(self) -> None:
        super().__init__()
        self._built = lru_cache(maxsize=4096)(super().__call__)

    def __call__(self, name: str, value: str):
        return self._built(name, value)


# email.policy.default, reading each distinct header once.
POLICY = policy.default.clone(header_factory=_RememberedHeaders())


def _raw_values(message: EmailMessage, name: str) -> list[str]:
    """The header's values as written, raw 8-bit bytes decoded (see _text_of_bytes), unfolded."""
    values = []
    for key, raw in message.raw_items():
        if key.lower() != name:
            continue
        text = str(raw)
        if not text.isascii():  # the parser keeps 8-bit bytes as surrogate escapes
            text = _text_of_bytes(text.encode("utf-8", errors="surrogateescape"))
        values.append(_LINE_BREAK.sub("", text).strip())
    return values


def _parsed(name: str, value: str):
    """The header object of the modern policy (RFC 2047 words decoded, addresses parsed), or None."""
    try:
        return POLICY.header_factory(name, value)
    except Exception:  # a header the policy cannot parse
        return None


def _header(message: EmailMessage, name: str) -> str | None:
    values = _raw_values(message, name)
    if not values:
        return None
    header = _parsed(name, values[0])
    return values[0] if header is None else str(header)


def _first_id(value: str | None) -> str | None:
    if not value:
        return None
    found = _ANGLE_ID.search(value)
    if found:
        return found.group(1)
    bare = value.strip().strip("<>").strip()
    return bare.split()[0] if bare else None


def _all_ids(value: str | None) -> list[str] | None:
    if not value:
        return None
    found = _ANGLE_ID.findall(value)
    return found or [v.strip("<>") for v in value.split() if v.strip("<>")]


def _person_name(display_name: str | None, address: str | None) -> str | None:
    """A display name, unless it is no name: empty, or itself an address."""
    name = (display_name or "").strip().strip("'\"").strip()
    if not name or _LOOKS_LIKE_ADDRESS.match(name) or (address and name.lower() == address.lower()):
        return None
    return name


def _addresses(message: EmailMessage, name: str) -> list[tuple[str | None, str]]:
    """(person name or None, address) of every mailbox of the header(s). The address is the one
    in angle brackets when there is one ("alice@x <bob@y>" is bob@y, named by no one)."""
    found: list[tuple[str | None, str]] = []
    for value in _raw_values(message, name):
        header = _parsed(name, value)
        try:
            mailboxes = [(a.display_name, a.addr_spec) for a in header.addresses] if header is not None else []
        except Exception:
            mailboxes = []
        angle = _ANGLE_ADDRESS.findall(value)
        if angle and not all(any(a.lower() == m[1].lower() for m in mailboxes) for a in angle):
            # the strict parser lost an angle address: take each "<address>" with the text before it
            mailboxes = []
            start = 0
            for match in _ANGLE_ADDRESS.finditer(value):
                before, _, phrase = value[start:match.start()].strip().lstrip(",").rpartition(",")
                mailboxes += [(n, a) for n, a in getaddresses([before]) if a]  # bare addresses before it
                mailboxes.append((_decoded_phrase(phrase.strip()), match.group(1)))
                start = match.end()
            mailboxes += [(n, a) for n, a in getaddresses([value[start:].lstrip(",")]) if a]
        elif not mailboxes:
            mailboxes = getaddresses([value])
        elif not all(n for n, _ in mailboxes) and "(" in value:
            # the old "address (Name)" form: the modern policy drops the comment, email.utils keeps it
            commented = {a.lower(): n for n, a in getaddresses([value]) if a}
            mailboxes = [(n or commented.get(a.lower(), ""), a) for n, a in mailboxes]
        found += [(_person_name(n, a), a) for n, a in mailboxes if a]
    return found


def _decoded_phrase(phrase: str) -> str:
    header = _parsed("subject", phrase)  # an unstructured header decodes RFC 2047 words
    return str(header) if header is not None else phrase


def _recipients(message: EmailMessage) -> list[str] | None:
    """To, Cc, Delivered-To and X-Original-To addresses, each once (first spelling kept)."""
    seen: dict[str, str] = {}
    for name in RECIPIENT_HEADERS:
        pairs: list[tuple[str | None, str]]
        if name in ("delivered-to", "x-original-to"):  # envelope recipients: bare addresses
            pairs = [(None, a) for v in _raw_values(message, name) for _, a in getaddresses([v]) if a]
        else:
            pairs = _addresses(message, name)
        for _, address in pairs:
            seen.setdefault(address.lower(), address)
    return list(seen.values()) or None


def message_kind(message: EmailMessage, from_address: str | None, from_display: str | None) -> str:
    """What the message is: a person's ``message``, or an automatic one (RFC 3464 delivery report
    or a mailer-daemon/postmaster sender: ``bounce``; another multipart/report (read receipt,
    abuse report): ``report``; RFC 3834 Auto-Submitted: auto-replied, X-Autoreply, X-Autorespond,
    Precedence: auto_reply: ``auto_reply``; any other Auto-Submitted but "no": ``auto_generated``).
    Precedence: bulk, junk or list says nothing about the author (RFC 3834 §2: mailing lists set
    them on people's posts), so it does not change the kind."""
    types = set()
    report_types = set()
    for part in message.walk():
        types.add(part.get_content_type())
        if part.get_content_type() == "multipart/report":
            report_types.add(str(part.get_param("report-type", "") or "").lower())
    local = (from_address or "").rsplit("@", 1)[0].lower()
    if ("message/delivery-status" in types or "message/global-delivery-status" in types
            or "delivery-status" in report_types or local in _SYSTEM_SENDERS
            or _SYSTEM_SENDER_NAME.search(from_display or "")):
        return BOUNCE
    if "multipart/report" in types:
        return REPORT
    auto = (_header(message, "auto-submitted") or "").split(";")[0].strip().lower()
    precedence = (_header(message, "precedence") or "").strip().lower()
    flagged = [(_header(message, h) or "").strip().lower() for h in ("x-autoreply", "x-autorespond")]
    if auto == "auto-replied" or precedence == "auto_reply" or any(v and v not in ("no", "false", "0") for v in flagged):
        return AUTO_REPLY
    if auto and auto != "no":
        return AUTO_GENERATED
    return MESSAGE


def derived_message_id(sender: str | None, date: str | None, subject: str | None, body: str | None) -> str:
    """A Message-ID for a message without one: the same message delivered twice gets the same id.
    Built from the sender (lower-cased), the date (UTC when it parses), the subject and the body
    (whitespace normalised), in a reserved domain so it can never equal a real id."""
    def norm(value: str | None) -> str:
        return re.sub(r"\s+", " ", value or "").strip()

    key = "\x1f".join([norm(sender).lower(), norm(date), norm(subject), norm(body)])
    return f"derived.{hashlib.sha256(key.encode('utf-8', errors='surrogatepass')).hexdigest()}@{DERIVED_ID_DOMAIN}"


def _sent_at_utc(date_text: str | None) -> str | None:
    if not date_text:
        return None
    try:
        moment = parsedate_to_datetime(date_text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, local zone unknown (RFC 5322 §3.3)
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


def _extra_headers(message: EmailMessage) -> dict[str, str]:
    extra: dict[str, list[str]] = {}
    for key in dict.fromkeys(k.lower() for k in message.keys()):
        if key in MAPPED_HEADERS:
            continue
        for value in _raw_values(message, key):
            header = _parsed(key, value)
            extra.setdefault(key, []).append(value if header is None else str(header))
    joined = {name: "\n".join(values) for name, values in extra.items()}
    try:
        names = [a.get_filename() for a in message.iter_attachments()]
    except Exception:
        names = []
    if any(names):
        joined["attachments"] = json.dumps([n for n in names if n], ensure_ascii=False)
    return joined


def _clean(value):
    """Text Arrow can encode: the email package keeps undecodable header bytes as lone surrogates."""
    if isinstance(value, str):
        return value.encode("utf-8", errors="replace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return type(value)(_clean(v) for v in value)
    return value


def parse_message(chunk: bytes, max_record_bytes: int, raw_max_chars: int) -> dict:
    """One message's fields (all text valid UTF-8), or ``problem`` saying why it has none. Never raises."""
    return {key: _clean(value) for key, value in _message_fields(chunk, max_record_bytes, raw_max_chars).items()}


def _message_fields(chunk: bytes, max_record_bytes: int, raw_max_chars: int) -> dict:
    raw = chunk.decode("utf-8", errors="replace")
    row: dict = {"raw": raw[:raw_max_chars], "raw_chars": len(raw)}
    if len(chunk) > max_record_bytes:
        return {**row, "problem": f"record larger than {max_record_bytes} bytes"}
    if not chunk.strip():
        return {**row, "problem": "empty message"}
    if looks_binary(chunk):
        return {**row, "problem": "not valid UTF-8 / binary content"}
    try:
        message = BytesParser(policy=POLICY).parsebytes(chunk)
        if not message.keys():
            return {**row, "problem": "not an e-mail message: no header lines"}
        senders = _addresses(message, "from")
        from_address = senders[0][1] if senders else None
        from_values = _raw_values(message, "from")
        from_display = from_values[0] if from_values else None
        date_text = _header(message, "date")
        sent_at_utc = _sent_at_utc(date_text)
        subject = _header(message, "subject")
        body_text, full_text = _body_texts(message)
        message_id = _first_id(_header(message, "message-id"))
        derived = message_id is None
        if derived:
            message_id = derived_message_id(from_address or from_display, sent_at_utc or date_text, subject, full_text)
        return {
            **row,
            "message_id": message_id,
            "message_id_derived": derived,
            "in_reply_to": _first_id(_header(message, "in-reply-to")),
            "references": _all_ids(_header(message, "references")),
            "from_address": from_address,
            "from_name": senders[0][0] if senders else None,
            "to_addresses": [addr for _, addr in _addresses(message, "to")] or None,
            "recipient_addresses": _recipients(message),
            "subject": subject,
            "date_text": date_text,
            "sent_at_utc": sent_at_utc,
            "body_text": body_text,
            "kind": message_kind(message, from_address, from_display),
            "extra": list(_extra_headers(message).items()),
        }
    except Exception as exc:  # hostile input must become a reason, not a failed job
        return {**row, "problem": f"could not parse e-mail: {type(exc).__name__}: {exc}"[:300]}


def file_messages(path: str, content: bytes | None, max_record_bytes: int, raw_max_chars: int) -> list[dict]:
    """The parsed messages of one landing file (see the module docstring for what a record is)."""
    name = path.lower()
    data = content or b""
    if name.endswith(".gz"):
        name = name[:-3]
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            return [{"raw": None, "raw_chars": 0, "problem": f"unreadable gzip file: {exc}"}]
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM would hide the first header
    chunks = split_mbox(data) if name.endswith(".mbox") else [data]
    return [parse_message(chunk, max_record_bytes, raw_max_chars) for chunk in chunks]


def parsed_message_batches(
    batches: Iterator[pa.RecordBatch], max_record_bytes: int, raw_max_chars: int
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: RAW_FILES batches → PARSED_MESSAGES batches, one row per message."""
    for batch in batches:
        rows: list[dict] = []
        for path, arrival, content in zip(
            batch.column("_source_file").to_pylist(),
            batch.column("_arrival_date").to_pylist(),
            batch.column("content").to_pylist(),
        ):
            for message in file_messages(path, content, max_record_bytes, raw_max_chars):
                rows.append({"_source_file": path, "_arrival_date": arrival, **message})
        yield _arrow_batch(rows)


def _arrow_batch(rows: list[dict]) -> pa.RecordBatch:
    """The rows as one batch; a row Arrow refuses becomes a problem row instead of failing the job."""
    try:
        return pa.RecordBatch.from_pylist(rows, schema=_ARROW_PARSED)
    except (pa.ArrowException, ValueError, TypeError, UnicodeError):
        safe = []
        for row in rows:
            try:
                pa.RecordBatch.from_pylist([row], schema=_ARROW_PARSED)
                safe.append(row)
            except (pa.ArrowException, ValueError, TypeError, UnicodeError) as exc:
                safe.append({
                    "_source_file": row["_source_file"], "_arrival_date": row["_arrival_date"],
                    "raw": None, "raw_chars": 0, "problem": f"could not parse e-mail: {type(exc).__name__}: {exc}"[:300],
                })
        return pa.RecordBatch.from_pylist(safe, schema=_ARROW_PARSED)


# ------------------------------------------------------------------ Spark side

MESSAGE_ID_RULE = FieldRule("Message-ID", StringType(), required=True)
DATE_RULE = FieldRule("Date", StringType(), required=True)


def parsed_messages(files: DataFrame, rules: IngestRules) -> DataFrame:
    """Raw files (common.RAW_FILES) → PARSED_MESSAGES, one row per message found."""
    parse = partial(
        parsed_message_batches, max_record_bytes=rules.max_record_bytes, raw_max_chars=rules.raw_max_chars
    )
    return files.select("_source_file", "_arrival_date", "content").mapInArrow(parse, PARSED_MESSAGES)


@per_session
def email_plan(rules: IngestRules) -> ClassifierPlan:
    stages = [(F.try_to_timestamp(F.col("sent_at_utc")).alias("_sent_at"),)]
    arrival, sent_at, date_text = F.col("_arrival_date"), F.col("_sent_at"), F.col("date_text")
    problems = [
        *field_problems(F.col("message_id"), F.col("message_id"), MESSAGE_ID_RULE, "Message-ID", arrival, rules),
        *field_problems(date_text, date_text, DATE_RULE, "Date", arrival, rules),
        F.when(
            date_text.isNotNull() & sent_at.isNull(),
            F.concat(F.lit("unparseable timestamp in Date: "), shown(date_text)),
        ),
        *event_time_reasons(sent_at, date_text, F.lit("Date"), arrival, rules),
    ]
    reason = F.coalesce(F.col("problem"), joined_reasons(problems))
    values = {name: F.col(name) for name in (
        "message_id", "in_reply_to", "references", "from_address", "from_name", "to_addresses", "subject", "body_text",
        "kind", "message_id_derived", "recipient_addresses",
    )}
    values["sent_at"] = sent_at
    return classifier_plan(
        SOURCE, stages, values, F.col("extra"), reason, F.col("raw"), rules, raw_length=F.col("raw_chars")
    )


def classify_email(rules: IngestRules, lineage: RunLineage) -> Callable[[DataFrame], DataFrame]:
    """Raw files (common.RAW_FILES) → one classified row per message."""

    def transform(files: DataFrame) -> DataFrame:
        return apply_plan(parsed_messages(files, rules), email_plan(rules), lineage)

    return transform
