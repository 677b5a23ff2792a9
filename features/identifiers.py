"""Identifier normalisers, Column -> Column, the same everywhere (docs/CONTRACTS.md "Identifier normalisation").

An identifier that cannot be normalised (not a valid address, not a phone number)
becomes null: it is not an identifier. Blocklisted values (shared company inboxes,
switchboard numbers) become null as well, so they never link two customers.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import pandas as pd
import phonenumbers
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

# Practical address check (RFC 5322 dot-atom local part, a dotted domain of DNS labels).
EMAIL_PATTERN = (
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$"
)

_NON_DIGITS = re.compile(r"\D")


def _blank_to_null(column: Column) -> Column:
    trimmed = F.trim(column)
    return F.when(trimmed != "", trimmed)


def normalize_email(column: Column, blocklist: Iterable[str] = ()) -> Column:
    """Trimmed, lower-cased address; null when invalid or blocklisted.

    `"Ana <ana@x.com>"` keeps the address between the angle brackets, as mail clients show it.
    """
    lowered = F.lower(_blank_to_null(column))
    bracketed = F.regexp_extract(lowered, r"<([^<>]*)>", 1)
    address = F.trim(F.when(bracketed != "", bracketed).otherwise(lowered))
    valid = F.when(address.rlike(EMAIL_PATTERN), address)
    blocked = sorted({b.strip().lower() for b in blocklist if b and b.strip()})
    if blocked:
        valid = F.when(~valid.isin(blocked), valid)
    return valid


def email_domain(normalized_email: Column) -> Column:
    return F.substring_index(normalized_email, "@", -1)


def _fix_brazilian_ninth_digit(number: phonenumbers.PhoneNumber) -> phonenumbers.PhoneNumber:
    # Brazilian mobiles gained a leading 9 (2012-2016); old WhatsApp wa_ids and some switches
    # still deliver the 8-digit form: area code + 8 digits starting 6-9 is that mobile.
    national = str(number.national_number)
    if number.country_code == 55 and len(national) == 10 and national[2] in "6789":
        return phonenumbers.PhoneNumber(country_code=55, national_number=int(national[:2] + "9" + national[2:]))
    return number


@lru_cache(maxsize=65536)
def phone_to_e164(raw: str | None, region: str) -> str | None:
    """E.164 form of `raw` read with default `region`; None when it is not a phone number.

    Tries the text as written, then as an international number (wa_ids and some switches
    omit the "+", others dial out with "00"). A valid number wins over a merely possible one.
    """
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        return None
    candidates = [text]
    if not text.startswith("+"):
        digits = _NON_DIGITS.sub("", text)
        if digits.startswith("00"):
            candidates.append("+" + digits[2:])
        if digits:
            candidates.append("+" + digits)
    fallback = None
    for candidate in candidates:
        try:
            parsed = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        parsed = _fix_brazilian_ninth_digit(parsed)
        if phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        if fallback is None and phonenumbers.is_possible_number(parsed):
            fallback = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return fallback


def normalize_phone(column: Column, region: str, blocklist: Iterable[str] = ()) -> Column:
    """E.164 phone (`+5511998765432`); null when not a phone number or blocklisted.

    Vectorised pandas UDF: parsing needs libphonenumber's metadata, which no Spark
    built-in has; values repeat a lot, so each distinct value is parsed once per worker.
    """
    region = region.upper()

    @F.pandas_udf(StringType())  # type: ignore[call-overload]
    def _e164(values: pd.Series) -> pd.Series:
        return values.map(lambda v: phone_to_e164(v, region) if isinstance(v, str) else None)

    normalized = _e164(column.cast(StringType()))
    blocked = sorted({p for p in (phone_to_e164(b, region) for b in blocklist) if p})
    if blocked:
        normalized = F.when(~normalized.isin(blocked), normalized)
    return normalized


def normalize_handle(platform: Column, handle: Column) -> Column:
    """`<platform>:<handle lower-cased, without a leading @>`; null without a handle."""
    bare = F.regexp_replace(F.lower(F.trim(handle)), r"^@+", "")
    bare = F.when(bare != "", bare)
    return F.when(bare.isNotNull() & platform.isNotNull(), F.concat(F.lower(F.trim(platform)), F.lit(":"), bare))


def normalize_as_given(column: Column) -> Column:
    """Device ids and CRM ids: as given, only surrounding blanks removed (null when blank)."""
    return _blank_to_null(column.cast(StringType()))
