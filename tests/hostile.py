"""Hostile touchpoint records, each with the reason code validation must give it.

One generator for the unit fuzz test (driven by hypothesis through ``st.randoms()``) and the
integration test (a seeded :class:`random.Random`, so the same 10k records every run). A
case is the raw bytes a producer could send plus the expected outcome: ``None`` for a valid
record, else the stable reason code of ``schemas.validation.REASONS``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from schemas.touchpoint import CallType, SmsType, StoreType, WebType

TYPES: dict[str, list[str]] = {
    "web": [t.value for t in WebType],
    "call_centre": [t.value for t in CallType],
    "store": [t.value for t in StoreType],
    "sms": [t.value for t in SmsType],
}
ALL_TYPES = sorted({t for ts in TYPES.values() for t in ts})

#: Valid text that has broken pipelines before: SQL, format strings, RTL and zero-width
#: characters, NUL and control characters, emoji (a surrogate pair when \\u-escaped).
NASTY_TEXT = [
    "'; DROP TABLE touchpoints; --",
    "1' OR '1'='1",
    "\\'; SELECT * FROM system.users --",
    "{db}",
    "{name:String}",
    "%s %d %(x)s",
    "$(reboot)",
    "<script>alert(1)</script>",
    "\u202eevil\u202c",
    "مرحبا بالعالم",
    "שלום",
    "zero\u200bwidth\u200c\u200d\ufeff",
    "nul\x00byte",
    "ctl\t\n\r\x1b[31m\x7f",
    "emoji 😀👍🏽",
    "e\u0301\u0301\u0301",
    "line\u2028sep\u2029",
    "中文客服体验",
    "",
    " ",
]

#: Distinctive raw PII the valid records carry (must come out hashed, never raw).
PHONES = ["+8613987654321", "+86 139-8765-4322", "0086 139 8765 4323", "(139) 8765-4324"]
EMAILS = ["zq.hostile.one@example.org", "ZQ.Hostile.Two@Example.ORG"]


@dataclass(frozen=True, slots=True)
class Case:
    """One record: ``raw`` bytes, expected ``reason`` (None = valid) and the generator name."""

    raw: bytes
    reason: str | None
    kind: str


def _text(rng: random.Random, long_text: bool = True) -> str:
    if long_text and rng.random() < 0.1:
        return rng.choice("ab€😀\u200b\x00") * rng.randint(8000, 8192)  # longest allowed
    return rng.choice(NASTY_TEXT)


def _ts(rng: random.Random, now: datetime) -> str:
    """A valid event time: within the last 20 days to 6 days ahead, or exact edges."""
    r = rng.random()
    if r < 0.03:
        return "2000-01-01T00:00:00+00:00"
    if r < 0.06:
        return (now + timedelta(days=6, hours=23)).isoformat()
    t = now - timedelta(seconds=rng.uniform(-6 * 86400, 20 * 86400))
    offset = rng.choice(["Z", "+00:00", "+14:00", "-12:00", "+05:45", "+08:00"])
    stamp = t.strftime("%Y-%m-%dT%H:%M:%S")
    if rng.random() < 0.5:
        stamp += f".{t.microsecond:06d}"
    if offset == "Z":
        return stamp + "Z"
    # the wall clock in that offset, so the instant stays inside the bounds
    sign = 1 if offset[0] == "+" else -1
    delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    local = (t + delta).strftime("%Y-%m-%dT%H:%M:%S")
    return local + offset


def valid_record(
    rng: random.Random, i: int, now: datetime, long_text: bool = True
) -> dict[str, Any]:
    """A valid record of a random channel with hostile-but-legal content.

    ``long_text`` lets 1 in 10 text fields be 8000-8192 characters (up to ~100 kB a record).
    """

    def text() -> str:
        return _text(rng, long_text)

    channel = rng.choice(list(TYPES))
    suffix = rng.choice(["x", "'; --", "ü\u200b", "😀", "\x00"])
    rec: dict[str, Any] = {
        "event_id": f"h{i}-{suffix}",
        "channel": channel,
        "type": rng.choice(TYPES[channel]),
        "occurred_at": _ts(rng, now),
    }
    ids: dict[str, Any] = {}
    r = rng.random()
    if r < 0.4:
        ids["customer_id"] = f"HC{rng.randint(0, 300)}" + rng.choice(["", " ", "\u200b", "'"])
    if rng.random() < 0.3:
        ids["phone"] = rng.choice(PHONES)
    if rng.random() < 0.2:
        ids["email"] = rng.choice(EMAILS)
    if rng.random() < 0.2:
        ids["loyalty_id"] = rng.choice(NASTY_TEXT[:12]) or "L"
    if not ids or rng.random() < 0.3:
        ids["anonymous_id"] = f"anon-{rng.randint(0, 500)}"
    rec["identifiers"] = ids
    if channel == "web":
        rec.update(url=text(), session_id=f"s{rng.randint(0, 99)}")
        if rng.random() < 0.5:
            rec["order_value"] = rng.choice([0, 0.01, 129.5, 1.7976931348623157e308, 10**15])
    elif channel == "call_centre":
        rec.update(call_id=f"k{rng.randint(0, 99)}", reason=text())
        rec["wait_seconds"] = rng.choice([0, 1, 420, 86400 * 365, 0.5])
        rec["transfers"] = rng.choice([0, 2, 2**62])
        rec["resolved"] = rng.choice([True, False])
    elif channel == "store":
        rec.update(store_id=text()[:64], amount=rng.choice([0, 12.5, 1e300]))
    else:
        rec.update(template=text(), reply_text=text(), score=rng.randint(0, 10))
    extra = rng.random()
    if extra < 0.2:
        rec["attributes"] = {"campaign": text(), "nested": {"a": [1, {"b": text()}]}}
    elif extra < 0.3:
        rec[rng.choice(NASTY_TEXT[:8])] = text()  # unknown keys move under attributes
    elif extra < 0.35:
        rec["phone"] = rng.choice(PHONES)  # raw PII where the schema does not expect it
    elif extra < 0.4:
        # nesting exactly at the depth limit (8): record, attributes, then 6 more levels
        rec["attributes"] = {"d": [[{"e": [[[0]]]}]]}
    return rec


def _dumps(rec: Any) -> bytes:
    return orjson.dumps(rec)


def _splice(raw: bytes, field: bytes, value: bytes) -> bytes:
    """Replace the JSON value of ``"field":`` (a scalar or string) by literal ``value``."""
    key = b'"' + field + b'":'
    start = raw.index(key) + len(key)
    if raw[start : start + 1] == b'"':
        end = start + 1
        while raw[end : end + 1] != b'"':
            end += 2 if raw[end : end + 1] == b"\\" else 1
        end += 1
    else:
        end = start
        while raw[end : end + 1] not in (b",", b"}"):
            end += 1
    return raw[:start] + value + raw[end:]


def _base(rng: random.Random, i: int, now: datetime, channel: str | None = None) -> dict:
    """A valid record to break in exactly one way (ASCII-clean text, so one reason fits)."""
    for _ in range(100):
        rec = valid_record(rng, i, now)
        if channel is None or rec["channel"] == channel:
            break
    rec = {k: v for k, v in rec.items() if k not in ("url", "reason", "template", "reply_text")}
    rec.pop("attributes", None)
    for k in [k for k in rec if k not in _KNOWN]:
        rec.pop(k)
    rec["event_id"] = f"bad{i}"
    if "store_id" in rec:
        rec["store_id"] = "st1"
    phone, email = rng.choice(PHONES), rng.choice(EMAILS)
    rec["identifiers"] = {"customer_id": f"BC{i % 97}", "phone": phone}
    # raw PII in free text too: dead letters must not keep it anywhere in their bytes
    rec["note"] = rng.choice([f"call me on {phone}", f"mail {email} now", f"{email}/{phone}"])
    return rec


_KNOWN = {
    "event_id", "channel", "type", "occurred_at", "identifiers", "session_id", "order_value",
    "call_id", "wait_seconds", "transfers", "resolved", "store_id", "amount", "score",
}  # fmt: skip


def _invalid_json(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    raw = _dumps(rec)
    choice = rng.randrange(6)
    if choice == 0:  # truncated (ASCII-only record, so the cut is still UTF-8)
        # without the free-text note: an address cut before its "@" is no address any more
        raw = _dumps({k: v for k, v in rec.items() if k != "note"})
        return raw[: rng.randrange(1, len(raw) - 1)], "invalid_json"
    if choice == 1:  # a lone surrogate, escaped: valid-looking JSON, but no text
        return _splice(raw, b"event_id", rng.choice([b'"\\ud800"', b'"x\\udc00"'])), (
            "invalid_json"
        )
    if choice == 2:
        return rng.choice(
            [b"not json", b"{'a': 1}", b'{"a":}', b"{,}", b"\x00\x00", b"undefined", b"{"]
        ), "invalid_json"
    if choice == 3:
        return raw + rng.choice([b"{}", b",", b" x", b"]"]), "invalid_json"
    if choice == 4:
        return b"\xef\xbb\xbf" + raw, "invalid_json"  # byte order mark
    return raw.replace(b'":', b'"=', 1), "invalid_json"


def _invalid_utf8(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80"])
    return _splice(_dumps(_base(rng, i, now)), b"event_id", b'"x' + bad + b'"'), "invalid_utf8"


def _non_finite(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now, channel="web")
    rec["channel"], rec["type"] = "web", "purchase"
    rec["order_value"] = 1.0
    value = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b"9" * 400])
    return _splice(_dumps(rec), b"order_value", value), "non_finite_number"


def _not_object(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    return rng.choice(
        [_dumps([rec]), b"[]", b"42", b'"text"', b"null", b"true", b"-0.0", b"[1,2,3]"]
    ), "not_object"


def _too_deep(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    depth = rng.choice([8, 9, 50, 1023, 1024, 1025, 5000])  # levels below the record's own
    nest: Any = 0
    for d in range(depth):
        nest = [nest] if d % 2 else {"n": nest}
    rec["extra"] = nest
    try:
        return _dumps(rec), "too_deep"
    except orjson.JSONEncodeError:  # orjson will not write > 255 levels: do it by hand
        return _deep_bytes(rec, depth), "too_deep"


def _deep_bytes(rec: dict, depth: int) -> bytes:
    rec = dict(rec)
    rec["extra"] = "__DEEP__"
    opening = b"".join(b"[" if d % 2 else b'{"n":' for d in reversed(range(depth)))
    closing = b"".join(b"]" if d % 2 else b"}" for d in range(depth))
    return _dumps(rec).replace(b'"__DEEP__"', opening + b"0" + closing)


def _too_large(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    rec["blob"] = "y" * rng.randint(1_000_001, 1_300_000)
    return _dumps(rec), "too_large"


def _string_too_long(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    return _long_string(rng, i, now, [8193, 9000, 100_000, 900_000])


def _string_too_long_small(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    return _long_string(rng, i, now, [8193, 9000, 20_000])


def _long_string(rng: random.Random, i: int, now: datetime, sizes: list[int]) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    n = rng.choice(sizes)
    where = rng.randrange(3)
    if where == 0:
        rec["note"] = "z" * n
    elif where == 1:
        rec["k" * n] = 1
    else:
        rec["event_id"] = "e" * rng.randint(257, 5000)  # ids: at most 256
    return _dumps(rec), "string_too_long"


def _unknown_channel(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    rec["channel"] = rng.choice(
        ["fax", "WEB", "web ", "web\u200b", "\u202eweb", "ويب", "' OR 1=1 --", "", 5, True, None,
         [], {}, "+8613987654321", "web\x00"]
    )  # fmt: skip
    return _dumps(rec), "unknown_channel"


def _unknown_type(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    others = [t for t in ALL_TYPES if t not in TYPES[rec["channel"]]]
    rec["type"] = rng.choice(["teleport", "PAGE_VIEW", "", "page_view\x00", rng.choice(others)])
    return _dumps(rec), "unknown_type"


def _missing_field(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    what = rng.randrange(6)
    if what < 4:
        rec.pop(["event_id", "occurred_at", "identifiers", "channel"][what])
    elif what == 4:
        rec["event_id"] = ""
    else:
        rec["identifiers"] = {"customer_id": "", "phone": rng.choice(PHONES)}
    return _dumps(rec), "missing_field"


def _no_identifier(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    rec["identifiers"] = rng.choice(
        [{}, {"customer_id": None}, {"phone": "  "}, {"email": ""}, {"anonymous_id": None}]
    )
    return _dumps(rec), "no_identifier"


def _wrong_type(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now, channel="call_centre")
    rec["channel"], rec["type"] = "call_centre", "answered"
    field, value = rng.choice(
        [
            ("event_id", 123),
            ("event_id", None),
            ("identifiers", "C1"),
            ("identifiers", []),
            ("identifiers", {"customer_id": "C", "ssn": "x"}),
            ("identifiers", {"phone": 8613987654321}),
            ("identifiers", {"customer_id": 5}),
            ("occurred_at", 1772000000),
            ("occurred_at", True),
            ("occurred_at", "yesterday"),
            ("occurred_at", "2026-13-45T00:00:00Z"),
            ("occurred_at", "2026-03-01T10:00:00+25:00"),
            ("attributes", "x"),
            ("attributes", [1]),
            ("resolved", "yes"),
            ("resolved", 1),
            ("transfers", 1.5),
            ("transfers", "2"),
            ("wait_seconds", "long"),
            ("wait_seconds", "420"),
            ("wait_seconds", True),
            ("wait_seconds", {"s": 1}),
            ("schema_version", "1"),
            ("call_id", 5),
            ("phone", ["+8613987654321"]),
        ]
    )
    rec[field] = value
    return _dumps(rec), "wrong_type"


def _negative(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    field = {
        "web": "order_value",
        "call_centre": rng.choice(["wait_seconds", "handle_seconds", "transfers"]),
        "store": "amount",
        "sms": "score",
    }[rec["channel"]]
    rec[field] = rng.choice([-1, -1e-9, -(2**62), -1e300])
    if field in ("transfers", "score"):
        rec[field] = -rng.randint(1, 2**62)
    return _dumps(rec), "negative_value"


def _naive(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    day = now - timedelta(days=rng.randint(0, 5))
    rec["occurred_at"] = rng.choice(
        [
            day.strftime("%Y-%m-%dT%H:%M:%S"),
            day.strftime("%Y-%m-%d %H:%M"),
            day.strftime("%Y-%m-%d"),
        ]
    )
    return _dumps(rec), "naive_timestamp"


def _future(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    later = now + timedelta(days=rng.choice([8, 30, 3000]), seconds=1)
    rec["occurred_at"] = rng.choice(
        [later.isoformat(), "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-12:00"]
    )
    return _dumps(rec), "future_timestamp"


def _ancient(rng: random.Random, i: int, now: datetime) -> tuple[bytes, str]:
    rec = _base(rng, i, now)
    rec["occurred_at"] = rng.choice(
        ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "1999-12-31T23:59:59.999999Z",
         "1970-01-01T00:00:00+00:00", "1999-12-31T23:00:00-00:30"]
    )  # fmt: skip
    return _dumps(rec), "ancient_timestamp"


BAD: dict[str, Callable[[random.Random, int, datetime], tuple[bytes, str]]] = {
    "invalid_json": _invalid_json,
    "invalid_utf8": _invalid_utf8,
    "non_finite_number": _non_finite,
    "not_object": _not_object,
    "too_deep": _too_deep,
    "too_large": _too_large,
    "string_too_long": _string_too_long,
    "unknown_channel": _unknown_channel,
    "unknown_type": _unknown_type,
    "missing_field": _missing_field,
    "no_identifier": _no_identifier,
    "wrong_type": _wrong_type,
    "negative_value": _negative,
    "naive_timestamp": _naive,
    "future_timestamp": _future,
    "ancient_timestamp": _ancient,
}


#: The same kinds without records of 100 kB and more (for a broker that keeps them in memory).
SMALL_BAD = {k: v for k, v in BAD.items() if k != "too_large"} | {
    "string_too_long": _string_too_long_small
}


def case(
    rng: random.Random, i: int, now: datetime, *, bad_share: float = 0.5, big: bool = True
) -> Case:
    """One record: valid with probability ``1 - bad_share``, else broken in one chosen way.

    ``big=False`` leaves out the records of 100 kB and more (callers add their own few) and
    keeps valid records small (no 8 kB text fields).
    """
    if rng.random() >= bad_share:
        return Case(_dumps(valid_record(rng, i, now, long_text=big)), None, "valid")
    kinds = BAD if big else SMALL_BAD
    kind = rng.choice(sorted(kinds))
    raw, reason = kinds[kind](rng, i, now)
    return Case(raw, reason, kind)


def cases(n: int, seed: int, now: datetime, **kwargs: Any) -> Iterator[Case]:
    """``n`` deterministic cases (same seed and ``now``, same bytes)."""
    rng = random.Random(seed)
    for i in range(n):
        yield case(rng, i, now, **kwargs)
