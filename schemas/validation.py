"""Turn raw bytes into a validated :class:`Touchpoint` or a :class:`Rejection` with a reason.

This is the one place that decides what is bad input; ingest, ``touchpath validate`` and
replay all call it. Pure: the wall-clock "now" is passed in.

Reason codes (stable; they label metrics and dead letters):
``too_large``, ``invalid_utf8``, ``invalid_json``, ``non_finite_number``, ``not_object``,
``too_deep``, ``string_too_long``, ``unknown_channel``, ``unknown_type``, ``missing_field``,
``no_identifier``, ``wrong_type``, ``negative_value``, ``naive_timestamp``,
``future_timestamp``, ``ancient_timestamp``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.pii import PiiHasher
from schemas.touchpoint import DEFAULT_MAX_FUTURE, TOUCHPOINT_ADAPTER, Touchpoint

REASONS = (
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "non_finite_number",
    "not_object",
    "too_deep",
    "string_too_long",
    "unknown_channel",
    "unknown_type",
    "missing_field",
    "no_identifier",
    "wrong_type",
    "negative_value",
    "naive_timestamp",
    "future_timestamp",
    "ancient_timestamp",
)

_PLAIN_WORD = re.compile(r"[A-Za-z_][A-Za-z_ .\-]{0,39}")

# pydantic error types that map straight onto a reason; anything else is `wrong_type`.
_ERROR_REASONS = {
    "union_tag_invalid": "unknown_channel",
    "union_tag_not_found": "missing_field",
    "missing": "missing_field",
    "string_too_short": "missing_field",
    "enum": "unknown_type",
    "finite_number": "non_finite_number",
    "greater_than_equal": "negative_value",
    "timezone_aware": "naive_timestamp",
    "naive_timestamp": "naive_timestamp",
    "future_timestamp": "future_timestamp",
    "ancient_timestamp": "ancient_timestamp",
    "no_identifier": "no_identifier",
    "string_too_long": "string_too_long",
}


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record is not a valid touchpoint: a stable ``reason`` code and a readable error."""

    reason: str
    error: str


class Validator:
    """Validates raw touchpoint records and hashes their PII.

    One instance per process; :meth:`validate` is cheap to call per record (orjson decode,
    a bounds walk, one pydantic union validation).
    """

    def __init__(
        self,
        pii_secret: bytes | str,
        *,
        max_record_bytes: int = 1_000_000,
        max_string_chars: int = 8192,
        max_depth: int = 8,
        max_future: timedelta = DEFAULT_MAX_FUTURE,
    ) -> None:
        self.hasher = PiiHasher(pii_secret)
        self.max_record_bytes = max_record_bytes
        self.max_string_chars = max_string_chars
        self.max_depth = max_depth
        self.max_future = max_future

    @classmethod
    def from_settings(cls, settings: Any) -> Validator:
        """Build from :class:`streams.config.Settings` (kept untyped: schemas import no config)."""
        return cls(
            settings.pii_secret.get_secret_value(),
            max_record_bytes=settings.max_record_bytes,
            max_string_chars=settings.max_string_chars,
            max_depth=settings.max_depth,
            max_future=timedelta(days=settings.max_future_days),
        )

    def validate(self, raw: bytes, now: datetime) -> Touchpoint | Rejection:
        """Validate one record; never raises for bad input."""
        if len(raw) > self.max_record_bytes:
            return Rejection(
                "too_large", f"record is {len(raw)} bytes, limit {self.max_record_bytes}"
            )
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return self._decode_rejection(raw, exc)
        if not isinstance(obj, dict):
            return Rejection("not_object", f"record is a JSON {type(obj).__name__}, not an object")
        # A string of n characters takes at least n bytes of the record, and a nesting
        # depth of d at least d brackets: a record short and flat enough for both (nearly
        # every one) needs no walk. orjson yields no NaN or Infinity to look for.
        if len(raw) > self.max_string_chars or raw.count(b"{") + raw.count(b"[") > self.max_depth:
            bad = self._check_bounds(obj)
            if bad is not None:
                return bad
        try:
            return TOUCHPOINT_ADAPTER.validate_python(
                obj, context={"hasher": self.hasher, "now": now, "max_future": self.max_future}
            )
        except ValidationError as exc:
            return _rejection_from(exc)

    def _decode_rejection(self, raw: bytes, exc: Exception) -> Rejection:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejection("invalid_utf8", f"not UTF-8 at byte {uexc.start}")
        detail = str(exc)
        if detail.startswith("depth limit exceeded"):
            # orjson stops at 1024 levels; deeper is the same fault as 9 levels.
            return Rejection("too_deep", f"nesting deeper than {self.max_depth}")
        # orjson refuses NaN/Infinity (and numbers that overflow a double); the stdlib parser
        # accepts them, and its hooks tell whether that was the reason. Anything else orjson
        # refuses (e.g. an escaped lone surrogate, which is no text) is invalid JSON.
        if _has_non_finite(raw):
            return Rejection("non_finite_number", "NaN or Infinity is not a number in JSON")
        return Rejection("invalid_json", f"invalid JSON: {detail[:200]}")

    def _check_bounds(self, obj: dict[str, Any]) -> Rejection | None:
        """Depth and string-size bounds over the whole record, before typed validation."""
        max_depth, max_chars = self.max_depth, self.max_string_chars
        stack: list[tuple[Any, int]] = [(obj, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > max_depth:
                return Rejection("too_deep", f"nesting deeper than {max_depth}")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in items:
                if isinstance(k, str) and len(k) > max_chars:
                    return Rejection("string_too_long", f"a key is longer than {max_chars} chars")
                if isinstance(v, str):
                    if len(v) > max_chars:
                        return Rejection(
                            "string_too_long", f"{k}: longer than {max_chars} characters"
                        )
                elif isinstance(v, dict | list):
                    stack.append((v, depth + 1))
                elif isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
                    return Rejection("non_finite_number", f"{k}: NaN or Infinity")
        return None


def _has_non_finite(raw: bytes) -> bool:
    """True if ``raw`` is JSON apart from NaN, Infinity or numbers beyond a double's range."""
    found = False

    def constant(_: str) -> float:
        nonlocal found
        found = True
        return 0.0

    def number(text: str) -> float:
        nonlocal found
        # orjson reads big integers as doubles too; > 309 digits overflow one.
        if len(text.lstrip("-")) > 309 or float(text) in (float("inf"), float("-inf")):
            found = True
        return 0.0

    try:
        json.loads(raw, parse_constant=constant, parse_float=number, parse_int=number)
    except (ValueError, RecursionError):
        return False  # not JSON at all, whatever numbers it holds
    return found


def _loc(err: Any) -> str:
    # Drop the union tag ("web", "call_centre"...) pydantic puts first in the location.
    parts = [str(p) for p in err["loc"]]
    if parts and parts[0] in ("web", "call_centre", "store", "sms"):
        parts = parts[1:]
    return ".".join(parts) or "record"


def _rejection_from(exc: ValidationError) -> Rejection:
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    etype = first["type"]
    loc = _loc(first)
    reason = _ERROR_REASONS.get(etype, "wrong_type")
    if etype == "enum" and loc != "type":
        reason = "wrong_type"
    if etype == "literal_error" and loc == "channel":
        reason = "unknown_channel"
    msg = first["msg"]
    if etype == "union_tag_invalid":
        # Echo the producer's value only when it is a plain word: anything else (a phone
        # number put in the wrong field, say) must not reach dead letters or logs.
        tag = str((first.get("ctx") or {}).get("tag", ""))
        shown = repr(tag) if _PLAIN_WORD.fullmatch(tag) else "(not shown)"
        msg = f"channel: unknown channel {shown} (web, call_centre, store, sms)"
        loc = "channel"
    elif etype == "union_tag_not_found":
        msg, loc = "channel: missing", "channel"
    text = msg if msg.startswith(loc) else f"{loc}: {msg}"
    if len(errors) > 1:
        text += f" (+{len(errors) - 1} more)"
    return Rejection(reason, text)
