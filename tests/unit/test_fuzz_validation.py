"""Hostile input at unit level: >10k malformed records (hypothesis), mixed with valid ones.

Every bad record must get a :class:`Rejection` with its stable reason code, every valid one a
touchpoint without raw PII, and :func:`streams.ingest.split_batch` must route each record to
exactly one of valid / dead-letter without raising, in bounded memory.
"""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.dead_letter import MAX_RAW_KEPT
from schemas.pii import normalize_phone
from schemas.validation import REASONS, Rejection, Validator
from streams import microbatch
from streams.ingest import MAX_MICROBATCH_BYTES, RawRecord, split_batch
from tests import hostile

NOW = datetime(2026, 3, 10, tzinfo=UTC)
VALIDATOR = Validator(b"fuzz-secret")
BATCH = 200  # records per hypothesis example (hostile.case), plus the free-form ones
EXAMPLES = 100  # 100 x 200 x ~0.6 bad ≈ 12k malformed records per run

#: Raw PII of the generated records, in every form it could leak in.
RAW_PII = sorted(
    {p.encode() for p in hostile.PHONES}
    | {normalize_phone(p).encode() for p in hostile.PHONES}
    | {normalize_phone(p).lstrip("+").encode() for p in hostile.PHONES}
    | {e.encode() for e in hostile.EMAILS}
    | {e.lower().encode() for e in hostile.EMAILS}
    | {e.split("@")[0].lower().encode() for e in hostile.EMAILS}  # a cut-short address
)


def _no_raw_pii(blob: bytes, what: str) -> None:
    low = blob.lower()
    for needle in RAW_PII:
        assert needle.lower() not in low, f"raw PII {needle!r} in {what}"


# --- free-form input, hypothesis-native: only the invariants are known for these ------------
_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_leaf,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=25,
)
_envelope_value = {
    "event_id": st.just("ff-1") | _json,
    "channel": st.sampled_from(list(hostile.TYPES)) | _json,
    "type": st.sampled_from(hostile.ALL_TYPES) | _json,
    "occurred_at": st.just("2026-03-09T10:00:00+00:00") | st.datetimes().map(str) | _json,
    "identifiers": st.just({"customer_id": "C1"})
    | st.dictionaries(
        st.sampled_from(["customer_id", "anonymous_id", "phone", "email", "loyalty_id", "x"]),
        _json_leaf,
        max_size=3,
    ),
    "attributes": st.dictionaries(st.text(max_size=8), _json, max_size=3) | _json,
    "wait_seconds": _json,
    "score": _json,
    "resolved": _json,
}


def _stdlib_dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # unlike orjson, writes integers beyond 64 bits


_envelope = st.fixed_dictionaries({}, optional=_envelope_value).map(_stdlib_dumps)
# lone surrogates (category Cs) only survive JSON as \uXXXX escapes: ensure_ascii writes them
_surrogate_text = st.text(
    st.characters(categories=["Cs", "Lo", "Cf", "Cc", "Zs"]), min_size=1, max_size=12
).map(
    lambda s: json.dumps(
        {"event_id": s, "channel": "web", "type": "page_view",
         "occurred_at": "2026-03-09T10:00:00+00:00", "identifiers": {"customer_id": s}},
        ensure_ascii=True,
    ).encode()
)  # fmt: skip
FREE_FORM = st.one_of(
    st.binary(max_size=300),
    _json.map(_stdlib_dumps),
    _envelope,
    _surrogate_text,
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
)


def _check_batch(cases: list[tuple[bytes, str | None]], stats: Counter[str]) -> None:
    """All the properties, for one batch of (raw, expected reason or None / "?" unknown)."""
    outcome: dict[int, str | None] = {}
    for off, (raw, want) in enumerate(cases):
        got = VALIDATOR.validate(raw, NOW)
        again = VALIDATOR.validate(raw, NOW)
        if isinstance(got, Rejection):
            assert got.reason in REASONS, got
            assert got.error, got
            assert isinstance(again, Rejection) and again == got, "reason must be stable"
            _no_raw_pii(got.error.encode(), "a rejection's error")
            if want != "?":
                assert got.reason == want, (want, got, raw[:300])
            outcome[off] = got.reason
            stats["malformed"] += 1
            stats[f"reason:{got.reason}"] += 1
        else:
            assert want in (None, "?"), (want, raw[:300])
            assert not isinstance(again, Rejection) and again == got
            _no_raw_pii(orjson.dumps(got.model_dump(mode="json")), "a valid touchpoint")
            outcome[off] = None
            stats["valid"] += 1

    records = [RawRecord(raw, "raw", 0, off) for off, (raw, _) in enumerate(cases)]
    out = split_batch(records, VALIDATOR, partitions=4, now=NOW, max_items=50)
    valid_offsets = [it["o"] for chunks in out.batches.values() for c in chunks for it in c]
    dead_offsets = [d.source_offset for d in out.dead_letters]
    # exactly one of valid / dead-letter, each record once, none lost
    assert sorted(valid_offsets + dead_offsets) == list(range(len(cases)))
    for dl in out.dead_letters:
        want = outcome[dl.source_offset]
        # too_large may also come from ingest's own encoded-size bound
        assert dl.reason == want or (want is None and dl.reason == "too_large"), (dl, want)
        assert len(dl.raw) <= MAX_RAW_KEPT + 1024  # scrubbing may lengthen a little
        assert dl.raw_size == len(cases[dl.source_offset][0])
        _no_raw_pii(dl.raw, "a dead letter's raw bytes")
        _no_raw_pii(dl.model_dump_json().encode(), "a dead letter")  # what ingest sends
    assert all(outcome[o] is None for o in valid_offsets)
    assert sum(out.dead_by_reason.values()) == len(out.dead_letters)
    assert sum(out.valid_by_channel.values()) == len(valid_offsets)
    for chunks in out.batches.values():
        for chunk in chunks:
            encoded = microbatch.encode(chunk, NOW.isoformat(), {"0": 0.0}, 4)  # what ingest sends
            assert len(encoded) <= MAX_MICROBATCH_BYTES + 200
            _no_raw_pii(encoded, "a micro-batch")
    stats["records"] += len(cases)


def test_fuzz_ten_thousand_malformed_records():
    stats: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(rng=st.randoms(use_true_random=True), free=st.lists(FREE_FORM, max_size=20))
    def fuzz(rng: random.Random, free: list[bytes]) -> None:
        batch = [hostile.case(rng, i, NOW, bad_share=0.6) for i in range(BATCH)]
        mixed: list[tuple[bytes, str | None]] = [(c.raw, c.reason) for c in batch]
        mixed += [(raw, "?") for raw in free]
        rng.shuffle(mixed)
        _check_batch(mixed, stats)

    fuzz()
    assert stats["malformed"] >= 10_000, stats
    assert stats["valid"] >= 5_000, stats
    seen = {k.removeprefix("reason:") for k in stats if k.startswith("reason:")}
    assert seen == set(REASONS), f"reasons never produced: {set(REASONS) - seen}"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event_id":"\\ud800","channel":"web"}', "invalid_json"),  # lone surrogate
        (b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}", "too_deep"),  # past orjson's own limit
        (b'{"a":-Infinity', "invalid_json"),  # truncated: not JSON, whatever is in it
        (b'{"a":' + b"9" * 400 + b"}", "non_finite_number"),  # beyond a double
    ],
)
def test_decode_failures_get_the_right_reason(raw, reason):
    got = VALIDATOR.validate(raw, NOW)
    assert isinstance(got, Rejection) and got.reason == reason, got


def test_unknown_channel_error_does_not_echo_pii():
    rec = {"event_id": "e", "channel": "+8613987654321", "type": "sent",
           "occurred_at": "2026-03-09T10:00:00Z", "identifiers": {"customer_id": "C"}}  # fmt: skip
    got = VALIDATOR.validate(orjson.dumps(rec), NOW)
    assert isinstance(got, Rejection) and got.reason == "unknown_channel"
    assert "13987654321" not in got.error
    rec["channel"] = "fax"
    assert "'fax'" in VALIDATOR.validate(orjson.dumps(rec), NOW).error  # plain words are shown


def test_event_that_grows_past_the_message_limit_is_dead_lettered():
    # 240k x "1e5" (4 bytes) is under the 1 MB record limit but becomes "100000.0" (9 bytes)
    # once validated: one such event would make a micro-batch the broker refuses, forever.
    rec = {"event_id": "e", "channel": "web", "type": "page_view",
           "occurred_at": "2026-03-09T10:00:00Z", "identifiers": {"customer_id": "C"}}  # fmt: skip
    raw = orjson.dumps({**rec, "l": [1e5] * 240_000}).replace(b"100000.0", b"1e5")
    assert len(raw) < 1_000_000
    ok = orjson.dumps({**rec, "event_id": "ok"})
    records = [RawRecord(raw, "raw", 0, 0), RawRecord(ok, "raw", 0, 1)]
    out = split_batch(records, VALIDATOR, partitions=1, now=NOW)
    assert [(d.source_offset, d.reason) for d in out.dead_letters] == [(0, "too_large")]
    (chunk,) = out.batches[0]
    assert [it["o"] for it in chunk] == [1]


MEMORY_RECORDS = 10_000
#: split_batch's own peak (tracemalloc) per batch of 500 hostile records, beyond its input
SPLIT_PEAK_LIMIT = 24 * 1024 * 1024
#: memory still held after all 10k (no per-record state may survive a batch)
RETAINED_LIMIT = 2 * 1024 * 1024


def test_memory_stays_bounded_over_ten_thousand_hostile_records():
    rng = random.Random(20260310)
    gen = (hostile.case(rng, i, NOW, bad_share=0.6) for i in range(MEMORY_RECORDS))
    reasons: Counter[str] = Counter()
    worst_peak, slowest, done = 0, 0.0, 0
    tracemalloc.start()
    try:
        base_current, _ = tracemalloc.get_traced_memory()
        while done < MEMORY_RECORDS:
            cases = [next(gen) for _ in range(500)]
            records = [RawRecord(c.raw, "raw", 0, done + k) for k, c in enumerate(cases)]
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            t0 = time.perf_counter()
            out = split_batch(records, VALIDATOR, partitions=4, now=NOW)
            slowest = max(slowest, time.perf_counter() - t0)
            _, peak = tracemalloc.get_traced_memory()
            worst_peak = max(worst_peak, peak - before)
            reasons.update(out.dead_by_reason)
            assert len(out.dead_letters) == sum(c.reason is not None for c in cases)
            done += len(cases)
            del cases, records, out
        retained = tracemalloc.get_traced_memory()[0] - base_current
    finally:
        tracemalloc.stop()
    print(
        f"\n10k hostile records: {sum(reasons.values())} dead-lettered, split_batch peak "
        f"{worst_peak / 2**20:.1f} MiB per 500, retained {retained / 2**10:.0f} KiB, "
        f"slowest batch {slowest:.2f}s"
    )
    assert sum(reasons.values()) >= 5_000
    assert worst_peak < SPLIT_PEAK_LIMIT, f"split_batch peak {worst_peak / 2**20:.1f} MiB"
    assert retained < RETAINED_LIMIT, f"{retained} bytes still held after 10k records"
    assert slowest < 10.0  # a pathological record (regex, nesting) would show here


_TIGHT = Validator(b"fuzz-secret", max_string_chars=12, max_depth=3)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(_json.map(lambda v: {"x": v}), st.text(max_size=30))
def test_bounds_shortcut_agrees_with_the_full_walk(obj: dict, extra: str) -> None:
    """Records short and flat enough skip the bounds walk; whatever the walk would reject
    (a long string, deep nesting) must still be rejected for that reason."""
    obj["y"] = extra
    raw = _stdlib_dumps(obj)
    walked = _TIGHT._check_bounds(json.loads(raw))
    got = _TIGHT.validate(raw, NOW)
    if walked is not None:
        assert isinstance(got, Rejection) and got.reason == walked.reason, (raw, got, walked)
    else:
        assert not isinstance(got, Rejection) or got.reason not in (
            "too_deep",
            "string_too_long",
        ), (raw, got)
