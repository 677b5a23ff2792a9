"""How identifiers and names really look in logs: many formats, typos, casing, blanks."""
from __future__ import annotations

import random
import unicodedata
from itertools import accumulate

_PHONE_STYLES = (
    ("intl_pretty", 0.2),     # +55 11 99876-5432
    ("national_pretty", 0.26),  # (11) 99876-5432
    ("national_digits", 0.16),  # 11998765432
    ("intl_digits", 0.1),     # 5511998765432
    ("e164", 0.12),           # +5511998765432
    ("spaced", 0.05),         # 11 99876 5432
    ("tight", 0.04),          # (11)99876-5432
    ("nine_apart", 0.04),     # +55 (11) 9 9876-5432
    ("trunk", 0.02),          # 011 99876-5432
    ("local", 0.01),          # 99876-5432: no area code, not a usable identifier
)
_PHONE_STYLE_NAMES = tuple(name for name, _ in _PHONE_STYLES)
_PHONE_STYLE_CUM = tuple(accumulate(weight for _, weight in _PHONE_STYLES))


def _split(number: str) -> tuple[str, str]:
    # 9-digit mobiles split 5-4, 8-digit landlines 4-4
    return number[:-4], number[-4:]


def format_phone(national: str, rnd: random.Random) -> str:
    """A Brazilian number (DDD + subscriber digits) written the way people and forms write it."""
    ddd, number = national[:2], national[2:]
    head, tail = _split(number)
    style = rnd.choices(_PHONE_STYLE_NAMES, cum_weights=_PHONE_STYLE_CUM)[0]
    if style == "intl_pretty":
        return f"+55 {ddd} {head}-{tail}"
    if style == "national_pretty":
        return f"({ddd}) {head}-{tail}"
    if style == "national_digits":
        return national
    if style == "intl_digits":
        return "55" + national
    if style == "e164":
        return "+55" + national
    if style == "spaced":
        return f"{ddd} {head} {tail}"
    if style == "tight":
        return f"({ddd}){head}-{tail}"
    if style == "nine_apart" and len(number) == 9:
        return f"+55 ({ddd}) {number[0]} {number[1:5]}-{tail}"
    if style == "trunk":
        return f"0{ddd} {head}-{tail}"
    return f"{head}-{tail}"


def format_ani(national: str, rnd: random.Random) -> str:
    """The caller number as a telephone switch delivers it: digits, national or international."""
    r = rnd.random()
    if r < 0.45:
        return national
    if r < 0.75:
        return "+55" + national
    if r < 0.88:
        return "55" + national
    return "0" + national


def messy_email(address: str, rnd: random.Random) -> str:
    """Mixed case and stray blanks, as typed into forms; still the same address once trimmed and lower-cased."""
    r = rnd.random()
    if r < 0.62:
        return address
    local, _, domain = address.partition("@")
    if r < 0.8:
        local = ".".join(part.capitalize() for part in local.split("."))
        domain = domain.capitalize()
    elif r < 0.86:
        local, domain = local.upper(), domain.upper()
    elif r < 0.93:
        return " " + address + " "
    else:
        return address + " "
    return f"{local}@{domain}"


def strip_accents(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def slug(text: str) -> str:
    return "".join(ch for ch in strip_accents(text).lower() if ch.isalnum())


def name_typo(name: str, rnd: random.Random) -> str:
    """One of the ways a name gets mangled when typed again by a person or an agent."""
    kind = rnd.randrange(8)
    letters = [i for i, ch in enumerate(name) if ch.isalpha()]
    if kind == 0:
        return strip_accents(name)
    if kind == 1 and len(letters) > 3:
        i = letters[rnd.randrange(1, len(letters) - 1)]
        if i + 1 < len(name) and name[i + 1].isalpha():
            return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    if kind == 2 and len(letters) > 4:
        i = letters[rnd.randrange(1, len(letters))]
        return name[:i] + name[i + 1:]
    if kind == 3 and letters:
        i = letters[rnd.randrange(len(letters))]
        return name[:i] + name[i] + name[i:]
    if kind == 4:
        return name.upper()
    if kind == 5:
        return name.lower()
    parts = name.split()
    if kind == 6 and len(parts) > 2:
        return f"{parts[0]} {parts[-1]}"
    if kind == 7 and len(parts) > 2:
        return " ".join([parts[0]] + [p[0] + "." if p[0].isupper() else p for p in parts[1:-1]] + [parts[-1]])
    return strip_accents(name).upper()


_PROFILE_EMOJIS = ("🌻", "✨", "💙", "🙏", "⚽", "🌸", "😎", "🎶", "❤️", "🇧🇷")


def whatsapp_profile_name(first: str, last: str, rnd: random.Random) -> str:
    """The push name people set on WhatsApp: rarely their full legal name."""
    r = rnd.random()
    if r < 0.3:
        return first
    if r < 0.55:
        return f"{first} {last}"
    if r < 0.68:
        return f"{first} {rnd.choice(_PROFILE_EMOJIS)}"
    if r < 0.76:
        return f"{first} {last[0]}."
    if r < 0.84:
        return first.upper()
    if r < 0.9:
        return f"~{first.lower()}"
    if r < 0.95:
        return strip_accents(f"{first} {last}").lower()
    return rnd.choice(_PROFILE_EMOJIS)
