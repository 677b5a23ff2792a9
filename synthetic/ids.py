"""Identifiers that are unique by construction, not by luck.

Random-looking identifiers (device ids, e-mail suffixes, phone numbers, WhatsApp
ids) come from bijections of a unique integer key, so two people never collide
whatever the customer count, and the truth stays exact.
"""
from __future__ import annotations

import base64

import numpy as np

_MASK64 = (1 << 64) - 1
# 2**61 - 1 is prime, hence coprime with every smaller modulus: x -> (A*x + b) % m is a bijection.
_PRIME = 2_305_843_009_213_693_951
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Sequence numbers per chunk and kind stay below this, so chunk * SEQ_SPAN + seq is unique.
SEQ_SPAN = 10_000_000


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a bijection on 64-bit integers that looks random."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def permute(key: int, modulus: int, salt: int) -> int:
    """A bijection of [0, modulus) keyed by `salt`; distinct keys below modulus give distinct values."""
    return (_PRIME * key + salt) % modulus


def base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms (no Python hash())."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class IdFactory:
    """Per-chunk identifier minting; every identifier kind has its own counter."""

    def __init__(self, chunk: int, seed: int) -> None:
        self.chunk = chunk
        self._salt = derive_seed(seed, 0xA7E)
        self._counters: dict[str, int] = {}

    def _next(self, kind: str) -> int:
        seq = self._counters.get(kind, 0)
        if seq >= SEQ_SPAN:
            raise OverflowError(f"more than {SEQ_SPAN} {kind} identifiers in one chunk")
        self._counters[kind] = seq + 1
        return self.chunk * SEQ_SPAN + seq

    def _hashed(self, kind: str, kind_code: int) -> int:
        # kind_code in the top byte keeps the keys of different kinds apart before mixing
        return mix64(((kind_code << 56) | self._next(kind)) ^ self._salt)

    def conversation_id(self, prefix: str) -> str:
        return f"{prefix}-{self._next('conversation'):09d}"

    def call_id(self) -> str:
        return f"call-{self._next('call'):09d}"

    def response_id(self) -> str:
        return "R_" + base62(self._hashed("response", 1), 11)

    def crm_id(self) -> str:
        return f"CRM{self._next('crm') + 1:09d}"

    def order_id(self) -> str:
        return f"PED{self._next('order'):010d}"

    def action_id(self) -> str:
        return f"act-{self._hashed('action', 2):016x}"

    def device_id(self) -> str:
        return f"d-{self._hashed('device', 3):016x}"

    def protocol(self, epoch_day: str) -> str:
        # service protocol numbers quoted to customers: date + sequence
        return f"{epoch_day}{self._next('protocol') % 1_000_000:06d}"

    def wamid(self, wa_id: str) -> str:
        """A WhatsApp message id shaped like Meta's: base64 of a small record holding the phone and a 20-char tag."""
        tag = f"{self._hashed('wamid', 4):016X}{self.chunk & 0xFFFF:04X}"
        raw = b"\x1c\x18" + bytes([len(wa_id)]) + wa_id.encode() + b"\x15\x02\x00\x12\x18\x14" + tag.encode() + b"\x00"
        return "wamid." + base64.b64encode(raw).decode()

    def wa_conversation_id(self) -> str:
        # the 32-hex-digit conversation (billing window) id Meta puts on statuses
        return f"{self._hashed('wa_conversation', 6):016x}{mix64(self._salt ^ self.chunk):016x}"

    def email_local(self) -> str:
        return f"{self._hashed('email', 5):016X}"
