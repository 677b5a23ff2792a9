"""The global holdout: a stable share of customers who get the baseline instead of the recommendations.

Whether following the recommendations pays can only be seen against customers who did not get them. A
share of customers (`models.holdout.share`, default 2 %) is set aside by a salted hash of their key:

    bucket  = the first 15 hex digits of SHA-256("<salt>:<customer_key>"), as an integer (0 .. 16^15 - 1)
    holdout = bucket < floor(share × 16^15)

The rule needs nothing but the key, so a customer stays in the same group on every run, the group is the
same whatever engine or language computes it (`in_holdout` below is the same rule in plain Python, for
service apps and analysts), and it is independent of everything the models see. A new salt draws a new
group; a larger share keeps everyone who was held out and adds more. A customer merged into another takes
the surviving key's group.

Held-out customers get the baseline: the default tone (`models.tone.default_tone`), the baseline action
(`models.holdout.baseline_action`, the catalogue's "do nothing") and everyone's best sellers; their rows
in `gold/recommendations` say `holdout = true`, and their reasons and model versions say so too.
"""
from __future__ import annotations

import hashlib
import math

from pyspark.sql import Column
from pyspark.sql import functions as F

HEX_DIGITS = 15
BUCKETS = 16 ** HEX_DIGITS
HOLDOUT_VERSION = "holdout"  # model_versions' value for a part the baseline answered


def threshold(share: float) -> int:
    """Buckets below this are held out."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a holdout share is between 0 and 1, got {share}")
    return math.floor(share * BUCKETS)


def in_holdout(customer_key: str, share: float, salt: str) -> bool:
    """The rule in plain Python: whether the customer with this key is held out."""
    digest = hashlib.sha256(f"{salt}:{customer_key}".encode()).hexdigest()
    return int(digest[:HEX_DIGITS], 16) < threshold(share)


def holdout_flag(customer_key: Column | str, share: float, salt: str) -> Column:
    """The rule as a Spark expression: true for held-out keys, false for the others (and for a null key)."""
    key = F.col(customer_key) if isinstance(customer_key, str) else customer_key
    if threshold(share) == 0:
        return F.lit(False)
    bucket = F.conv(F.substring(F.sha2(F.concat(F.lit(f"{salt}:"), key), 256), 1, HEX_DIGITS), 16, 10)
    return F.coalesce(bucket.cast("bigint") < F.lit(threshold(share)), F.lit(False))
