"""Per-chunk landing-zone writer: arrival-day files, re-deliveries, corrupt lines, gzip and BOM.

Every file of a chunk is named after the chunk (`part-00003.jsonl`), so the
output does not depend on how many processes ran, and every random choice is
drawn from generators seeded by (seed, chunk, ...).
"""
from __future__ import annotations

import csv
import gzip
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

from atende.synthetic.ids import derive_seed

BRT = timezone(timedelta(hours=-3), "BRT")  # Brazil has had no daylight saving since 2019
DAY = 86_400

SOURCES = ("conversations", "whatsapp", "email", "calls", "surveys", "crm", "orders", "products", "actions")

CSV_COLUMNS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "calls": ("call_id", "started_at", "ani", "queue", "wait_seconds", "talk_seconds", "hold_seconds", "agent_id",
              "disposition", "transfer_count", "resolved", "topic", "via"),
    "surveys": ("response_id", "submitted_at", "survey", "score", "contact_id", "email", "phone", "crm_id", "comment"),
    "crm": ("crm_id", "full_name", "email", "phone", "birth_date", "gender", "city", "state", "country",
            "income_band", "profession", "marketing_consent", "consent_updated_at", "updated_at"),
    "orders": ("order_id", "ordered_at", "crm_id", "email", "product_id", "quantity", "unit_price", "channel"),
    "products": ("product_id", "name", "category", "price", "active"),
    "actions": ("action_id", "sent_at", "action", "channel", "crm_id", "email", "phone", "propensity", "responded",
                "converted", "revenue"),
})
# the column each CSV source stamps its records with
CSV_TIME_COLUMN: Mapping[str, str] = MappingProxyType({
    "calls": "started_at", "surveys": "submitted_at", "crm": "updated_at", "orders": "ordered_at", "actions": "sent_at",
})
TRUTH_COLUMNS = ("source", "record_id", "person_id")
PEOPLE_COLUMNS = ("person_id", "persona", "preferred_tone", "favourite_categories")


@dataclass(frozen=True)
class FilePolicy:
    gzip_share: float        # share of this source's files that arrive gzip-compressed
    bom_share: float         # share of CSV files exported with a UTF-8 byte-order mark
    line_end: str
    duplicate_share: float   # records re-delivered (same or next day)
    malformed_share: float   # corrupt lines added next to real ones


POLICIES: Mapping[str, FilePolicy] = MappingProxyType({
    "conversations": FilePolicy(0.3, 0.0, "\n", 0.008, 0.005),
    "whatsapp": FilePolicy(0.25, 0.0, "\n", 0.012, 0.005),
    "email": FilePolicy(0.15, 0.0, "\n", 0.006, 0.005),
    # Windows exports from the contact-centre and CRM tools
    "calls": FilePolicy(0.2, 0.3, "\r\n", 0.006, 0.005),
    "surveys": FilePolicy(0.15, 0.2, "\n", 0.006, 0.005),
    "crm": FilePolicy(0.1, 0.5, "\r\n", 0.004, 0.005),
    "orders": FilePolicy(0.2, 0.1, "\n", 0.006, 0.005),
    "products": FilePolicy(0.0, 0.0, "\n", 0.0, 0.0),
    "actions": FilePolicy(0.3, 0.0, "\n", 0.006, 0.005),
})

_JSON_GARBAGE = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>",
    "ERROR: connection reset by peer",
    "\x00\x00\x00\x00\x00\x00\x00\x00",
    "{{{{",
    "--- export interrompido ---",
)


def iso_local(ts: int) -> str:
    return datetime.fromtimestamp(ts, BRT).isoformat()


def iso_utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _LastLine:
    """csv.writer target that keeps only the line just written (no StringIO per row)."""
    __slots__ = ("line",)

    def __init__(self) -> None:
        self.line = ""

    def write(self, text: str) -> None:
        self.line = text


def gzip_bytes(data: bytes) -> bytes:
    # mtime=0 and no file name in the header: the same content gives the same bytes
    return gzip.compress(data, compresslevel=6, mtime=0)


@dataclass
class SourceCounts:
    records: int = 0
    duplicates: int = 0
    malformed: int = 0
    files: int = 0


class ChunkOutput:
    def __init__(self, root: Path, chunk: int, seed: int, start: date, days: int) -> None:
        self.root = root
        self.chunk = chunk
        self.seed = seed
        self.start = start
        self.days = days
        self.start_epoch = int(datetime(start.year, start.month, start.day, tzinfo=BRT).timestamp())
        self.end_epoch = self.start_epoch + days * DAY
        self.rnd = random.Random(derive_seed(seed, chunk, 21))
        self._seq = 0
        self._lines: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
        # day -> (ts, seq, bytes, envelope sender, .eml file name or None for the day's mbox)
        self._mail: dict[int, list[tuple[int, int, bytes, str, str | None]]] = {}
        self.truth: list[tuple[str, str, str]] = []
        self.counts: dict[str, SourceCounts] = {s: SourceCounts() for s in SOURCES}
        self._csv_sinks: dict[str, tuple[_LastLine, Any]] = {}
        for source, policy in POLICIES.items():
            sink = _LastLine()
            self._csv_sinks[source] = (sink, csv.writer(sink, lineterminator=policy.line_end))

    # ------------------------------------------------------------------ time
    def day_of(self, ts: int) -> int | None:
        if ts < self.start_epoch or ts >= self.end_epoch:
            return None
        return (ts - self.start_epoch) // DAY

    def day_start(self, day: int) -> int:
        return self.start_epoch + day * DAY

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _redelivery(self, day: int, ts: int) -> tuple[int, int]:
        """When a re-delivered copy arrives: later the same day, or early the next day."""
        if self.rnd.random() < 0.5 and day + 1 < self.days:
            return day + 1, self.day_start(day + 1) + self.rnd.randrange(6 * 3600)
        return day, min(ts + self.rnd.randrange(60, 4 * 3600), self.day_start(day) + DAY - 1)

    def _put(self, source: str, day: int, ts: int, line: str) -> None:
        self._lines.setdefault((source, day), []).append((ts, self._next_seq(), line))

    # ------------------------------------------------------------------ JSON lines
    def add_json(self, source: str, ts: int, line: str, record_ids: Iterable[str], person_id: str | None,
                 allow_duplicate: bool = True) -> bool:
        """One JSON document as a line, arriving on the day of `ts`; False when `ts` is outside the window."""
        day = self.day_of(ts)
        if day is None:
            return False
        policy = POLICIES[source]
        self._put(source, day, ts, line)
        counts = self.counts[source]
        counts.records += 1
        if person_id is not None:
            self.truth.extend((source, rid, person_id) for rid in record_ids)
        rnd = self.rnd
        if allow_duplicate and rnd.random() < policy.duplicate_share:
            dup_day, dup_ts = self._redelivery(day, ts)
            self._put(source, dup_day, dup_ts, line)
            counts.duplicates += 1
        if rnd.random() < policy.malformed_share:
            if rnd.random() < 0.7 and len(line) > 8:
                bad = line[: rnd.randrange(len(line) // 4, len(line) - 2)]  # cut mid-write
            else:
                bad = _JSON_GARBAGE[rnd.randrange(len(_JSON_GARBAGE))]
            self._put(source, day, ts + rnd.randrange(1, 600), bad)
            counts.malformed += 1
        return True

    # ------------------------------------------------------------------ CSV rows
    def render_row(self, source: str, fields: Sequence[object]) -> str:
        sink, writer = self._csv_sinks[source]
        writer.writerow(["" if value is None else value for value in fields])
        return sink.line

    def add_row(self, source: str, ts: int, fields: Sequence[object], record_id: str | None,
                person_id: str | None, allow_duplicate: bool = True) -> bool:
        """One CSV row arriving on the day of `ts`; False when `ts` is outside the window."""
        day = self.day_of(ts)
        if day is None:
            return False
        policy = POLICIES[source]
        line = self.render_row(source, fields)
        self._put(source, day, ts, line)
        counts = self.counts[source]
        counts.records += 1
        if record_id is not None and person_id is not None:
            self.truth.append((source, record_id, person_id))
        rnd = self.rnd
        if allow_duplicate and rnd.random() < policy.duplicate_share:
            dup_day, dup_ts = self._redelivery(day, ts)
            self._put(source, dup_day, dup_ts, line)
            counts.duplicates += 1
        if rnd.random() < policy.malformed_share:
            self._put(source, day, ts + rnd.randrange(1, 600), self._corrupt_row(source, list(fields)))
            counts.malformed += 1
        return True

    def _corrupt_row(self, source: str, fields: list[object]) -> str:
        rnd = self.rnd
        columns = CSV_COLUMNS[source]
        kind = rnd.random()
        if source == "surveys" and kind < 0.4:
            # a score outside the survey's scale, e.g. 15 for a csat
            fields[columns.index("score")] = rnd.choice((15, 11, -1, 99, 0 if fields[2] in ("csat", "ces") else 12))
            return self.render_row(source, fields)
        if kind < 0.6:
            fields[columns.index(CSV_TIME_COLUMN[source])] = rnd.choice(
                ("31/02/2026 25:61", "ontem", "0000-00-00 00:00:00", "2026-13-45T99:00:00")
            )
            return self.render_row(source, fields)
        if kind < 0.85:
            # a delimiter inside an unquoted value shifted the columns
            if rnd.random() < 0.5:
                return self.render_row(source, fields[:-1])
            return self.render_row(source, fields + ["sem valor"])
        return self.render_row(source, [f"Total de registros exportados: {rnd.randrange(100, 99_999)}"])

    # ------------------------------------------------------------------ e-mail
    def add_email(self, ts: int, data: bytes, envelope_from: str, eml_name: str | None, message_id: str,
                  person_id: str) -> bool:
        day = self.day_of(ts)
        if day is None:
            return False
        policy = POLICIES["email"]
        counts = self.counts["email"]
        self._mail.setdefault(day, []).append((ts, self._next_seq(), data, envelope_from, eml_name))
        counts.records += 1
        self.truth.append(("email", message_id, person_id))
        rnd = self.rnd
        if rnd.random() < policy.duplicate_share:
            dup_day, dup_ts = self._redelivery(day, ts)
            stem = eml_name.removesuffix(".eml") if eml_name else message_id.split("@")[0].replace("+", "")
            name = f"{stem}-reenvio.eml"
            self._mail.setdefault(dup_day, []).append((dup_ts, self._next_seq(), data, envelope_from, name))
            counts.duplicates += 1
        if rnd.random() < policy.malformed_share:
            bad_name = f"{eml_name.removesuffix('.eml')}-corrompido.eml" if eml_name else None
            self._mail[day].append((ts + 1, self._next_seq(), _corrupt_email(data, rnd), envelope_from, bad_name))
            counts.malformed += 1
        return True

    # ------------------------------------------------------------------ flush
    def flush(self) -> dict[str, SourceCounts]:
        for (source, day), entries in sorted(self._lines.items(), key=lambda item: (SOURCES.index(item[0][0]), item[0][1])):
            entries.sort()
            if source in CSV_COLUMNS:
                self._write_csv(source, day, entries)
            else:
                self._write_jsonl(source, day, entries)
        for day in sorted(self._mail):
            self._write_mail(day, sorted(self._mail[day]))
        return self.counts

    def _day_dir(self, source: str, day: int) -> Path:
        folder = self.root / source / (self.start + timedelta(days=day)).isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _file_rng(self, source: str, day: int) -> random.Random:
        return random.Random(derive_seed(self.seed, self.chunk, SOURCES.index(source), day, 31))

    def _write(self, source: str, day: int, stem: str, data: bytes) -> None:
        rnd = self._file_rng(source, day)
        name = stem
        if rnd.random() < POLICIES[source].gzip_share:
            data, name = gzip_bytes(data), stem + ".gz"
        (self._day_dir(source, day) / name).write_bytes(data)
        self.counts[source].files += 1

    def _write_jsonl(self, source: str, day: int, entries: list[tuple[int, int, str]]) -> None:
        text = "".join(line + "\n" for _, _, line in entries)
        self._write(source, day, f"part-{self.chunk:05d}.jsonl", text.encode("utf-8"))

    def _write_csv(self, source: str, day: int, entries: list[tuple[int, int, str]]) -> None:
        policy = POLICIES[source]
        header = self.render_row(source, CSV_COLUMNS[source])
        text = header + "".join(line for _, _, line in entries)
        bom = "\ufeff" if self._file_rng(source, day + 100_000).random() < policy.bom_share else ""
        self._write(source, day, f"part-{self.chunk:05d}.csv", (bom + text).encode("utf-8"))

    def _write_mail(self, day: int, entries: list[tuple[int, int, bytes, str, str | None]]) -> None:
        mbox: list[bytes] = []
        folder = self._day_dir("email", day)
        for ts, _, data, sender, eml_name in entries:
            if eml_name is not None:
                (folder / eml_name).write_bytes(data)
                self.counts["email"].files += 1
                continue
            stamp = datetime.fromtimestamp(ts, timezone.utc)
            # the mbox "From " separator, asctime-style and locale-independent
            weekday = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[stamp.weekday()]
            month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[stamp.month - 1]
            separator = f"From {sender} {weekday} {month} {stamp.day:2d} {stamp:%H:%M:%S} {stamp.year}\n"
            body = data.replace(b"\r\n", b"\n")
            mbox.append(separator.encode() + body + (b"" if body.endswith(b"\n") else b"\n") + b"\n")
        if mbox:
            self._write("email", day, f"part-{self.chunk:05d}.mbox", b"".join(mbox))

    # ------------------------------------------------------------------ truth
    def write_truth(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        sink = _LastLine()
        writer = csv.writer(sink, lineterminator="\n")
        lines = []
        for row in self.truth:
            writer.writerow(row)
            lines.append(sink.line)
        (folder / f"records-{self.chunk:05d}.csv").write_text("".join(lines), encoding="utf-8")


def _corrupt_email(data: bytes, rnd: random.Random) -> bytes:
    """A message that lost its Message-ID header and was cut short in transit."""
    lines = data.split(b"\n")
    kept = [line for line in lines if not line.lower().startswith(b"message-id:")]
    cut = max(3, rnd.randrange(len(kept) // 3, max(len(kept) // 3 + 1, len(kept) - 1)))
    return b"\n".join(kept[:cut]) + b"\n"
