"""Consent, checked in one place (LGPD art. 7 I and art. 8): what a use of a customer's data needs.

Purposes and the uses that need them:

* ``marketing``: marketing actions among the next best actions (models/nba.py), product offers in
  ``gold/recommendations`` (jobs/modeling.py), and segment exports for marketing (jobs/segments.py).
  It needs the customer's ``marketing_consent`` to be true, as ``silver/customers``' survivorship rule
  gives it (default: the newest CRM row's, blank included); a consent never recorded is no consent (opt-in).

Profiling (personas, tone) rests on the company's legitimate interest (LGPD art. 7 IX), the landing
contract carries no profiling consent, so no check is made for it; a CRM field for it would be read here.
"""
from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

# the column of the customer features / profiles / silver customers holding the marketing consent
MARKETING_CONSENT = "marketing_consent"
PURPOSES = ("marketing",)
NO_MARKETING_CONSENT = "no marketing consent"


def _check(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown consent purpose {purpose!r} (known: {', '.join(PURPOSES)})")


def allows(purpose: str, consent: Column | None = None) -> Column:
    """True where the customer's latest consent allows `purpose` (a frame with the consent column)."""
    _check(purpose)
    given = F.col(MARKETING_CONSENT) if consent is None else consent
    return F.coalesce(given.cast("boolean"), F.lit(False))


def allows_sql(purpose: str, alias: str) -> str:
    """The same check as a SQL predicate over a table (alias) carrying the consent column, for the
    queries of the reports and exports (DuckDB or Spark SQL)."""
    _check(purpose)
    return f"{alias}.{MARKETING_CONSENT} = TRUE"  # null (never recorded) is not TRUE
