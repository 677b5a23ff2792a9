"""The hostile-input matrix for every CSV source (issue 3): each case in its own file, next to a good row.

Cases: a truncated line, wrong types, an empty file, a 10 MB line, binary garbage, a date in the
future, and a header missing a required column. For each: nothing crashes, the good row is
accepted, the bad record is quarantined with its reason, and accepted + quarantined = records
for every file (checked by ``test_ingest_support.ingest`` on every run).

The JSON Lines, WhatsApp and e-mail readers have the same matrix in their own modules
(test_ingest_conversations, test_ingest_whatsapp, test_ingest_email).
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from test_ingest_support import counts_of, ingest, land

from atende.pipelines.ingest.common import RAW_TEXT_MAX_CHARS

TEN_MB = 10 * 1024 * 1024


@dataclass(frozen=True)
class CsvSource:
    name: str
    good: dict[str, str]       # header order = dict order
    id_column: str
    wrong_types: dict[str, str]  # field -> a value of the wrong type
    wrong_reason: str            # the reason those values give (exact)
    text_field: str              # a free-text field, padded to make the 10 MB line
    event_time: str | None       # the timestamp checked against the arrival date (None: the source has none)

    @property
    def cases(self) -> list[str]:
        """The cases that apply: a source without a timestamp has no future date to reject."""
        return [c for c in CASES if c != "future-date" or self.event_time is not None]

    def header(self, without: str | None = None) -> str:
        return ",".join(c for c in self.good if c != without)

    def row(self, record_id: str, without: str | None = None, **changes: str) -> str:
        values = {**self.good, self.id_column: record_id, **changes}
        return ",".join(values[c] for c in self.good if c != without)


SOURCES = [
    CsvSource(
        "calls",
        {"call_id": "", "started_at": "2026-03-01T09:00:00Z", "ani": "11998765432", "queue": "billing",
         "wait_seconds": "12.5", "talk_seconds": "300", "hold_seconds": "20", "agent_id": "ag-1",
         "disposition": "answered", "transfer_count": "0", "resolved": "sim", "topic": "billing", "via": "pstn"},
        "call_id", {"talk_seconds": "five minutes"}, "unparseable number in talk_seconds: 'five minutes'",
        "topic", "started_at",
    ),
    CsvSource(
        "surveys",
        {"response_id": "", "submitted_at": "2026-03-01T12:00:00Z", "survey": "nps", "score": "9",
         "contact_id": "wc-1", "email": "ana@example.com", "phone": "", "crm_id": "crm-1", "comment": "ok"},
        "response_id", {"score": "nove"}, "unparseable whole number in score: 'nove'",
        "comment", "submitted_at",
    ),
    CsvSource(
        "crm",
        {"crm_id": "", "full_name": "Ana Souza", "email": "ana@example.com", "phone": "+55 11 99876-5432",
         "birth_date": "1990-05-17", "gender": "F", "city": "São Paulo", "state": "SP", "country": "BR",
         "income_band": "B", "profession": "engenheira", "marketing_consent": "sim",
         "consent_updated_at": "2026-02-01T10:00:00Z", "updated_at": "2026-03-01T08:00:00Z"},
        "crm_id", {"birth_date": "17/05/1990", "marketing_consent": "talvez"},
        "unparseable date (yyyy-MM-dd) in birth_date: '17/05/1990'; "
        "unparseable boolean in marketing_consent: 'talvez'",
        "full_name", "updated_at",
    ),
    CsvSource(
        "orders",
        {"order_id": "", "ordered_at": "2026-03-01T10:00:00-03:00", "crm_id": "crm-1", "email": "",
         "product_id": "p-1", "quantity": "2", "unit_price": "49.9", "channel": "web"},
        "order_id", {"quantity": "two"}, "unparseable whole number in quantity: 'two'",
        "channel", "ordered_at",
    ),
    CsvSource(
        "products",
        {"product_id": "", "name": "Plano Fibra", "category": "internet", "price": "99.9", "active": "true"},
        "product_id", {"price": "caro"}, "unparseable number in price: 'caro'",
        "name", None,
    ),
    CsvSource(
        "actions",
        {"action_id": "", "sent_at": "2026-03-01T09:00:00Z", "action": "offer_upgrade", "channel": "email",
         "crm_id": "crm-1", "email": "", "phone": "", "propensity": "0.25", "responded": "true",
         "converted": "false", "revenue": "0"},
        "action_id", {"propensity": "high"}, "unparseable number in propensity: 'high'",
        "action", "sent_at",
    ),
]
CASES = ["truncated", "wrong-types", "empty", "10mb-line", "binary", "future-date", "missing-column"]


def _land_matrix(landing, src: CsvSource) -> None:
    def file(case: str, *lines: str | bytes) -> None:
        data = b"\n".join(x.encode() if isinstance(x, str) else x for x in lines) + b"\n"
        land(landing, src.name, f"{case}.csv", data)

    ok = lambda case: src.row(f"ok-{case}")  # noqa: E731
    bad = lambda case, **kw: src.row(f"bad-{case}", **kw)  # noqa: E731
    whole = bad("truncated")
    file("truncated", src.header(), ok("truncated"), whole[: whole.index(",", len(whole) // 2)])
    file("wrong-types", src.header(), ok("wrong-types"), bad("wrong-types", **src.wrong_types))
    land(landing, src.name, "empty.csv", b"")
    file("10mb-line", src.header(), ok("10mb-line"), bad("10mb-line", **{src.text_field: "x" * TEN_MB}))
    file("binary", src.header(), ok("binary"), b"\x00\x9f\x92\x96\xff garbage \x01" + bytes(range(0x80, 0x100)))
    if "future-date" in src.cases:
        file("future-date", src.header(), ok("future-date"), bad("future-date", **{src.event_time: "2031-01-01T00:00:00Z"}))
    file("missing-column", src.header(without=src.id_column), src.row("", without=src.id_column, **{src.text_field: "bad-missing-column"}))


@pytest.fixture(scope="module")
def outcomes(spark, settings, tmp_path_factory):
    landing = tmp_path_factory.mktemp("hostile")
    for src in SOURCES:
        _land_matrix(landing, src)
    return {src.name: ingest(spark, settings, landing, src.name) for src in SOURCES}


def _matrix():
    for src in SOURCES:
        for case in src.cases:
            yield pytest.param(src, case, id=f"{src.name}-{case}")


@pytest.mark.parametrize("src, case", list(_matrix()))
def test_hostile_record_is_quarantined_with_its_reason(outcomes, settings, src, case):
    out = outcomes[src.name]
    accepted_ids = {getattr(r, src.id_column) for r in out.accepted}
    if case == "empty":
        assert counts_of(out, "empty.csv") == (0, 0, 0)
        return
    if case == "missing-column":
        assert counts_of(out, "missing-column.csv") == (1, 0, 1)
        assert out.reason_of("bad-missing-column") == f"header lacks required column {src.id_column}"
        return
    assert f"ok-{case}" in accepted_ids, f"the good row of {case}.csv was not accepted"
    assert counts_of(out, f"{case}.csv") == (2, 1, 1)
    if case == "binary":
        assert out.reason_of("garbage") == "not valid UTF-8 / binary content"
        return
    reason = out.reason_of(f"bad-{case}")
    if case == "truncated":
        assert reason.startswith(f"wrong number of columns: expected {len(src.good)}, got ")
    elif case == "wrong-types":
        assert reason == src.wrong_reason
    elif case == "10mb-line":
        assert reason == (
            f"record larger than {settings.ingest.max_record_bytes} bytes "
            f"(raw truncated to its first {RAW_TEXT_MAX_CHARS} characters)"
        )
        raw = next(r.raw for r in out.quarantined if r.raw and "bad-10mb-line" in r.raw)
        assert len(raw) == RAW_TEXT_MAX_CHARS
    elif case == "future-date":
        assert reason.startswith(f"timestamp in the future: {src.event_time} '2031-01-01T00:00:00Z' is later than")


def test_nothing_hostile_reaches_bronze(outcomes):
    for src in SOURCES:
        ids = [getattr(r, src.id_column) for r in outcomes[src.name].accepted]
        assert sorted(ids) == sorted(f"ok-{case}" for case in src.cases
                                     if case not in ("empty", "missing-column")), src.name
