"""Bronze ingest: pure transforms from raw landing records to typed bronze rows and rejects.

The reading side (jobs/ingest.py) hands each classifier raw records
(``RAW_LINES`` for text sources, ``RAW_FILES`` for e-mail); the classifier
returns one classified row per record, which ``accepted_records`` and
``quarantined_records`` split into BRONZE[source] and QUARANTINE rows.
"""
from atende.pipelines.ingest.common import (
    FILE_COUNTS,
    RAW_FILES,
    RAW_LINES,
    REASON,
    IngestRules,
    RunLineage,
    accepted_records,
    quarantined_records,
)
from atende.pipelines.ingest.sources import FILE_SOURCES, LINE_SOURCES, classify, records_per_file

__all__ = [
    "FILE_COUNTS",
    "FILE_SOURCES",
    "LINE_SOURCES",
    "RAW_FILES",
    "RAW_LINES",
    "REASON",
    "IngestRules",
    "RunLineage",
    "accepted_records",
    "classify",
    "quarantined_records",
    "records_per_file",
]
