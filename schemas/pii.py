"""Keyed hashing of personal identifiers (phone numbers, e-mail addresses).

Raw PII is accepted on input and replaced here by HMAC-SHA256 digests keyed with a
configured secret: the same person hashes to the same value across channels and
replays, but the digest cannot be reversed or recomputed without the key. No I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from pydantic_core import PydanticCustomError

_PHONE_STRIP = re.compile(r"[\s\-().]")
# Substrings of raw bytes that look like PII, for scrubbing dead letters whose structure
# cannot be trusted: the value of any "phone"/"email" key, E.164 numbers, long digit runs,
# e-mail addresses (also cut short), numbers written with separators ("(139) 8765-4321",
# "0086 139 ..."; kept when they have fewer than 9 digits or start like a date).
# Every quantifier is bounded and each alternative may only start at a boundary, so the
# scan stays linear on hostile input (64 KiB of "x" must not backtrack quadratically).
_PII_BYTES = re.compile(
    rb'(?i)("(?:phone|email)"[ \t]{0,8}:[ \t]{0,8})"(?:[^"\\]|\\.){0,512}"'
    rb"|(?<![\d+])\+\d[\d \-]{6,18}\d"
    rb"|(?<![\d.:\-])\d{10,15}(?![\d.:\-])"
    rb"|(?<![\w.+\-])[\w.+\-]{1,64}@[\w\-]{0,63}(?:\.[\w.\-]{1,63})?"
    rb"|(?P<sep>(?<![\w+(])(?!\d{4}-\d\d-\d\d)[+(]?\d[\d \-().]{7,22}\d(?!\w))"
)
_MIN_PHONE_DIGITS = 9


def normalize_phone(phone: str) -> str:
    """Canonical form of a phone number: separators removed, leading ``00`` as ``+``."""
    p = _PHONE_STRIP.sub("", phone.strip())
    if p.startswith("00"):
        p = "+" + p[2:]
    return p


def normalize_email(email: str) -> str:
    """Canonical form of an e-mail address (trimmed, lower case)."""
    return email.strip().lower()


class PiiHasher:
    """HMAC-SHA256 of normalized identifiers, keyed with the configured secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes | str) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        if not secret:
            raise ValueError("the PII hashing secret must not be empty")
        self._key = secret

    def _digest(self, kind: bytes, value: str) -> str:
        return hmac.new(self._key, kind + b":" + value.encode(), hashlib.sha256).hexdigest()

    def phone(self, phone: str) -> str:
        """Keyed hash of a phone number (normalized first)."""
        return self._digest(b"phone", normalize_phone(phone))

    def email(self, email: str) -> str:
        """Keyed hash of an e-mail address (normalized first)."""
        return self._digest(b"email", normalize_email(email))

    def scrub(self, raw: bytes) -> bytes:
        """Replace PII-looking substrings of untrusted bytes by short keyed hashes.

        Used for dead letters: their original bytes are kept for debugging, but a record
        that failed validation may still carry a raw phone or e-mail anywhere in it.
        """

        def _sub(m: re.Match[bytes]) -> bytes:
            text = m.group(0)
            key = m.group(1)
            if m.group("sep") and sum(c in b"0123456789" for c in text) < _MIN_PHONE_DIGITS:
                return text  # "12 34-56": a short number with separators, not a phone
            digest = hmac.new(self._key, b"scrub:" + text, hashlib.sha256).hexdigest()
            masked = b"<pii:" + digest[:16].encode() + b">"
            return key + b'"' + masked + b'"' if key is not None else masked

        return _PII_BYTES.sub(_sub, raw)


def replace_raw_pii(data: Any, context: dict[str, Any] | None, where: str) -> Any:
    """Pydantic before-validator body: swap raw ``phone``/``email`` for keyed hashes.

    The hasher comes in the validation context (``{"hasher": PiiHasher}``), so the models
    stay pure and the key stays configuration. A hash the producer already computed wins.
    """
    if not isinstance(data, dict) or ("phone" not in data and "email" not in data):
        return data
    hasher: PiiHasher | None = (context or {}).get("hasher")
    if hasher is None:
        raise PydanticCustomError("pii_without_key", "raw phone/email given but no PII key")
    data = dict(data)
    phone, email = data.pop("phone", None), data.pop("email", None)
    for field, value, fn in (("phone", phone, hasher.phone), ("email", email, hasher.email)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", f"{where}{field}: must be a string")
        if value.strip():
            data.setdefault(f"{field}_hash", fn(value))
    return data


#: Keys (any case) whose values are raw PII wherever they appear in free ``attributes``.
_PII_KEYS = {"phone": "phone", "email": "email"}


def hash_pii_keys(value: Any, context: dict[str, Any] | None, where: str) -> Any:
    """``value`` with every ``phone``/``email`` key, at any depth, replaced by ``<key>_hash``.

    Producers put raw numbers where the schema does not expect them (an SMS event with a
    top-level ``phone``); those keys end up in the free ``attributes`` map, and raw PII must
    not be stored from there either. Returns ``value`` itself when nothing needed hashing.
    """
    if isinstance(value, dict):
        out: dict[str, Any] | None = None
        for k, v in value.items():
            kind = _PII_KEYS.get(k.lower()) if isinstance(k, str) else None
            if kind is not None:
                if out is None:
                    out = dict(value)
                raw = out.pop(k)
                if raw is None:
                    continue
                if not isinstance(raw, str | int) or isinstance(raw, bool):
                    raise PydanticCustomError("string_type", f"{where}{k}: must be a string")
                hasher: PiiHasher | None = (context or {}).get("hasher")
                if hasher is None:
                    raise PydanticCustomError(
                        "pii_without_key", "raw phone/email given but no PII key"
                    )
                text = str(raw)
                if text.strip():
                    digest = hasher.phone(text) if kind == "phone" else hasher.email(text)
                    out.setdefault(f"{k}_hash", digest)
                continue
            new = hash_pii_keys(v, context, f"{where}{k}.")
            if new is not v:
                if out is None:
                    out = dict(value)
                out[k] = new
        return value if out is None else out
    if isinstance(value, list):
        items = [hash_pii_keys(v, context, where) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value
