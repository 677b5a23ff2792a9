"""E-mail: RFC 5322 messages, ``.eml`` (one per file) or ``.mbox`` (many) (CONTRACTS §2).

Parsing MIME needs Python's ``email`` package, so this is the one source parsed
in Python: ``mapInArrow`` over the files' bytes, on the executors. Everything
after the parse (types, required fields, time checks) is Spark.

* Records: an ``.mbox`` (also ``.mbox.gz``) holds one message per "From " line
  (text before the first such line, if not blank, is one more record); any other
  file is one message, so an ``.eml`` is always 1 record, even when empty.
* ``message_id``, ``in_reply_to`` and ``references`` are ids without angle brackets.
* ``body_text``: the text/plain part, else the HTML part reduced to text
  (``html.parser``; scripts, styles and ``<blockquote>`` quotes dropped), with the
  quoted reply history removed: lines starting with ">", and everything from an
  "On … wrote:" / "Em … escreveu:" line (which mail clients may wrap over two
  lines), an "-----Original Message-----" / "-----Mensagem original-----" line,
  or an Outlook reply header (a line of underscores, or "De:"/"From:" followed
  by "Enviado:"/"Sent:") on.
* ``sent_at`` is the Date header; a date without a zone ("-0000") is UTC, as RFC 5322 says.
* ``_extra`` keeps every other header (lower-cased name; repeated ones joined
  by a newline) and ``attachments``, the attached files' names as a JSON array.
"""
from __future__ import annotations

import gzip
import json
import re
import zlib
from datetime import timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from functools import partial
from html.parser import HTMLParser
from typing import Callable, Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DateType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from pipelines.ingest.common import (
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
    pa.field("extra", pa.map_(pa.string(), pa.string())),
])

MAPPED_HEADERS = frozenset({"message-id", "in-reply-to", "references", "from", "to", "subject", "date"})
_FROM_LINE = re.compile(rb"^From [^\n]*(?:\n|$)", re.MULTILINE)
_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
# Where quoted history starts: Gmail/Apple ("On … wrote:", "Em … escreveu:", possibly
# wrapped over two lines), old Outlook ("-----Original Message-----"), and new
# Outlook (a line of underscores, or "De:"/"From:" directly followed by "Enviado:"/"Sent:").
_REPLY_HEADER = re.compile(
    r"^[ \t]*(?:On|Em)\b[^\n]*(?:\n[^\n]*)?\b(?:wrote|escreveu)\s*:[ \t]*$"
    r"|^[ \t]*-{2,}\s*(?:Original Message|Mensagem original)\s*-{2,}[ \t]*$"
    r"|^[ \t]*_{10,}[ \t]*$"
    r"|^[ \t]*(?:De|From)[ \t]*:[^\n]*\n[ \t]*(?:Enviado|Enviada|Sent)[ \t]*:",
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
    """The new text of a reply: quoted history (">" lines, "On … wrote:" and after) removed."""
    header = _REPLY_HEADER.search(text)
    if header:
        text = text[: header.start()]
    kept = [line.rstrip() for line in text.splitlines() if not line.lstrip().startswith(">")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def _part_text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError, AssertionError):
        pass  # an unknown charset or broken encoding: decode the bytes leniently below
    payload = part.get_payload(decode=True) or b""
    return payload.decode("utf-8", errors="replace")


def _body_text(message: EmailMessage) -> str | None:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return None
    text = _part_text(part)
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return strip_quoted_reply(text.replace("\r\n", "\n")) or None


def _header(message: EmailMessage, name: str) -> str | None:
    try:
        value = message.get(name)
        return None if value is None else str(value)
    except Exception:  # a header the parser cannot decode: fall back to its raw text
        for key, raw in message.raw_items():
            if key.lower() == name.lower():
                return re.sub(r"\r?\n[ \t]+", " ", str(raw))
        return None


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


def _addresses(message: EmailMessage, name: str) -> list[tuple[str, str]]:
    try:
        header = message.get(name)
        if header is None:
            return []
        return [(a.display_name, a.addr_spec) for a in header.addresses]
    except Exception:  # a malformed address list: the lenient parser of email.utils
        raw = _header(message, name)
        return getaddresses([raw]) if raw else []


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
    for key, raw in message.raw_items():
        name = key.lower()
        if name in MAPPED_HEADERS:
            continue
        try:
            value = str(message.get_all(key)[len(extra.get(name, []))])
        except Exception:
            value = re.sub(r"\r?\n[ \t]+", " ", str(raw))
        extra.setdefault(name, []).append(value)
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
        message = BytesParser(policy=policy.default).parsebytes(chunk)
        if not message.keys():
            return {**row, "problem": "not an e-mail message: no header lines"}
        senders = _addresses(message, "from")
        date_text = _header(message, "date")
        return {
            **row,
            "message_id": _first_id(_header(message, "message-id")),
            "in_reply_to": _first_id(_header(message, "in-reply-to")),
            "references": _all_ids(_header(message, "references")),
            "from_address": (senders[0][1] or None) if senders else None,
            "from_name": (senders[0][0] or None) if senders else None,
            "to_addresses": [addr for _, addr in _addresses(message, "to") if addr] or None,
            "subject": _header(message, "subject"),
            "date_text": date_text,
            "sent_at_utc": _sent_at_utc(date_text),
            "body_text": _body_text(message),
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
