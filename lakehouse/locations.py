"""What the driver can tell about a location or a Delta table without Spark (kept light: no pyspark import,
so commands that never start Spark stay fast)."""
from __future__ import annotations

# reader features of the Delta protocol the deltalake package (1.6) cannot honour: listing such a table's
# files would show rows a DELETE removed
DELTA_RS_UNREADABLE = frozenset({"deletionVectors"})


def is_storage_uri(text: str) -> bool:
    """s3a://…, abfss://…, gs://…, hdfs://… (file:// URIs and plain paths are local folders)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isalnum() and scheme.lower() != "file"
