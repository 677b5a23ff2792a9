"""The reading side of bronze ingest: listing, errors, file names, whole-file rejects, empty results."""
from __future__ import annotations

import gzip
import json
import logging
from datetime import date

import pytest
from test_ingest_support import DAY, INGESTED_AT, RUN_ID, counts_of, ingest, land

from atende.jobs.ingest import LandingNotReadable, ingest_source, list_arrival_dates
from atende.pipelines.ingest.common import FILE_COUNTS
from atende.pipelines.schemas import BRONZE, QUARANTINE, SOURCES

NEXT_DAY = date(2026, 3, 2)


def conversation(conversation_id: str) -> str:
    return json.dumps({"conversation_id": conversation_id, "channel": "app", "started_at": "2026-03-01T10:00:00Z"})


def test_list_arrival_dates_keeps_date_folders_and_warns_about_the_rest(tmp_path, caplog):
    for name in ("2026-03-02", "2026-03-01", "2026-02-30", "latest", "2026-3-1"):
        (tmp_path / "calls" / name).mkdir(parents=True)
    (tmp_path / "calls" / "README.txt").write_text("notes")

    with caplog.at_level(logging.WARNING, logger="atende.jobs.ingest"):
        dates = list_arrival_dates(tmp_path, "calls")

    assert dates == [date(2026, 3, 1), date(2026, 3, 2)]
    warning = " ".join(r.getMessage() for r in caplog.records)
    for ignored in ("2026-02-30", "2026-3-1", "README.txt", "latest"):
        assert ignored in warning


def test_list_arrival_dates_of_a_source_not_delivered_yet_is_empty(tmp_path):
    assert list_arrival_dates(tmp_path, "orders") == []


def test_a_missing_landing_zone_is_named_in_the_error(spark, settings, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_arrival_dates(missing, "calls")
    with pytest.raises(LandingNotReadable, match="landing zone not found: .*nowhere"):
        ingest_source(spark, settings, missing, "calls", [DAY], RUN_ID, INGESTED_AT)
    with pytest.raises(ValueError, match="unknown source 'fax'"):
        list_arrival_dates(tmp_path, "fax")


def test_no_files_gives_empty_frames_with_the_right_schemas(spark, settings, tmp_path):
    (tmp_path / "calls" / DAY.isoformat()).mkdir(parents=True)  # a date folder with nothing in it
    for source in SOURCES:
        result = ingest_source(spark, settings, tmp_path, source, [DAY], RUN_ID, INGESTED_AT)
        assert result.accepted.schema == BRONZE[source]
        assert result.quarantined.schema == QUARANTINE
        assert result.file_counts.schema == FILE_COUNTS
    assert result.accepted.isEmpty()


def test_file_names_hidden_files_corrupt_gzip_and_date_selection(spark, settings, tmp_path, caplog):
    odd = "conversas de março+[1] {a}.jsonl"
    land(tmp_path, "conversations", odd, conversation("wc-odd") + "\n")
    land(tmp_path, "conversations", "_SUCCESS", "")
    land(tmp_path, "conversations", ".part.crc", "junk")
    (tmp_path / "conversations" / DAY.isoformat() / "nested").mkdir()
    land(tmp_path, "conversations", "cut.jsonl.gz", gzip.compress((conversation("wc-gz") + "\n").encode() * 50)[:-30])
    land(tmp_path, "conversations", "later.jsonl", conversation("wc-later") + "\n", day=NEXT_DAY)

    with caplog.at_level(logging.WARNING, logger="atende.jobs.ingest"):
        out = ingest(spark, settings, tmp_path, "conversations", [DAY])

    assert [r.conversation_id for r in out.accepted] == ["wc-odd"]
    assert out.accepted[0]._source_file == str(tmp_path / "conversations" / DAY.isoformat() / odd)
    assert set(out.counts) == {odd, "cut.jsonl.gz"}  # hidden files, folders and other dates are not read
    assert counts_of(out, odd) == (1, 1, 0)
    assert counts_of(out, "cut.jsonl.gz") == (1, 0, 1)  # a file that does not decompress is one record
    [cut] = out.quarantined
    assert cut.reason.startswith("unreadable gzip file") and cut.raw is None and cut._arrival_date == DAY
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "_SUCCESS" in warnings and ".part.crc" in warnings and "nested" in warnings
    assert "cut.jsonl.gz" in warnings

    both = ingest(spark, settings, tmp_path, "conversations", [DAY, NEXT_DAY])
    assert sorted(r.conversation_id for r in both.accepted) == ["wc-later", "wc-odd"]
    assert both.counts["later.jsonl"]._arrival_date == NEXT_DAY
    assert [r._arrival_date for r in both.accepted if r.conversation_id == "wc-later"] == [NEXT_DAY]
