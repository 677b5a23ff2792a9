"""Helpers shared by the test_ingest_* modules (no tests here).

Each ingest run is collected once: accepted rows, quarantined rows and the
per-file counts, with the two checks every test wants (exact schemas, and
accepted + quarantined = records for every file).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from pyspark.sql import Row

from atende.jobs.ingest import IngestResult, ingest_source
from atende.pipelines.ingest.common import FILE_COUNTS
from atende.pipelines.schemas import BRONZE, QUARANTINE

RUN_ID = "run-test"
INGESTED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc)
DAY = date(2026, 3, 1)


def land(landing: Path, source: str, name: str, content: str | bytes, day: date = DAY,
         gz: bool = False, bom: bool = False) -> Path:
    """Write one landing file; text is UTF-8, optionally with a BOM and/or gzip-compressed."""
    folder = landing / source / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8") if isinstance(content, str) else content
    if bom:
        data = b"\xef\xbb\xbf" + data
    if gz:
        data = gzip.compress(data)
        name = name if name.endswith(".gz") else name + ".gz"
    path = folder / name
    path.write_bytes(data)
    return path


@dataclass
class Outcome:
    result: IngestResult
    accepted: list[Row]
    quarantined: list[Row]
    counts: dict[str, Row]  # by file name

    def reasons(self) -> list[str]:
        return sorted(r.reason for r in self.quarantined)

    def reason_of(self, needle: str) -> str:
        """The one quarantine reason whose raw text contains needle."""
        found = [r.reason for r in self.quarantined if r.raw is not None and needle in r.raw]
        assert len(found) == 1, (needle, self.reasons())
        return found[0]


def ingest(spark, settings, landing: Path, source: str, dates: list[date] | None = None) -> Outcome:
    result = ingest_source(spark, settings, landing, source, dates or [DAY], RUN_ID, INGESTED_AT)
    assert result.accepted.schema.simpleString() == BRONZE[source].simpleString()
    assert result.quarantined.schema.simpleString() == QUARANTINE.simpleString()
    assert result.file_counts.schema.simpleString() == FILE_COUNTS.simpleString()
    outcome = Outcome(
        result=result,
        accepted=result.accepted.collect(),
        quarantined=result.quarantined.collect(),
        counts={Path(r._source_file).name: r for r in result.file_counts.collect()},
    )
    result.release()
    for row in outcome.counts.values():
        assert row.accepted + row.quarantined == row.records, row
        assert row.source == source
    assert sum(r.accepted for r in outcome.counts.values()) == len(outcome.accepted)
    assert sum(r.quarantined for r in outcome.counts.values()) == len(outcome.quarantined)
    for row in outcome.accepted:
        assert row.run_id == RUN_ID and row._ingested_at == INGESTED_AT.replace(tzinfo=None)
        assert Path(row._source_file).name in outcome.counts
    for row in outcome.quarantined:
        assert row.source == source and row.reason and row.run_id == RUN_ID
    return outcome


def counts_of(outcome: Outcome, name: str) -> tuple[int, int, int]:
    row = outcome.counts[name]
    return row.records, row.accepted, row.quarantined
