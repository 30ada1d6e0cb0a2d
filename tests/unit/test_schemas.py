"""Channel models, bad-input rules, PII hashing and JSON Schema export."""

from __future__ import annotations

from datetime import UTC, datetime

import jsonschema
import orjson
import pytest

from schemas import CustomerProfile, DeadLetter, Rejection, Validator
from schemas.export import export, schemas
from schemas.pii import PiiHasher
from schemas.touchpoint import CallCentreTouchpoint, SmsTouchpoint, StoreTouchpoint, WebTouchpoint

NOW = datetime(2026, 3, 10, tzinfo=UTC)
PHONE = "+8613800000001"
EMAIL = "Jane.Doe@Example.com"

# The four wire examples of the foundation issue, verbatim in shape.
WEB = {
    "event_id": "w-1",
    "channel": "web",
    "type": "checkout_failed",
    "occurred_at": "2026-03-01T10:15:00+00:00",
    "identifiers": {"anonymous_id": "c-77", "customer_id": "C1001"},
    "session_id": "s1",
    "url": "/checkout",
    "error_code": "PAYMENT_DECLINED",
    "order_value": 129.5,
}
CALL = {
    "event_id": "c-1",
    "channel": "call_centre",
    "type": "answered",
    "occurred_at": "2026-03-01T10:40:00+00:00",
    "identifiers": {"phone": PHONE},
    "call_id": "k9",
    "wait_seconds": 420,
    "reason": "payment",
    "agent_id": "a7",
}
STORE = {
    "event_id": "s-1",
    "channel": "store",
    "type": "complaint",
    "occurred_at": "2026-03-02T09:00:00+08:00",
    "identifiers": {"loyalty_id": "L55"},
    "store_id": "BJ-03",
}
SMS = {
    "event_id": "m-1",
    "channel": "sms",
    "type": "reply",
    "occurred_at": "2026-03-03T12:00:00+00:00",
    "identifiers": {"phone": PHONE},
    "template": "feedback_d15",
    "reply_text": "3",
    "score": 3,
}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(b"test-secret")


def check(validator: Validator, record: object) -> object:
    raw = record if isinstance(record, bytes) else orjson.dumps(record)
    return validator.validate(raw, NOW)


@pytest.mark.parametrize(
    ("record", "model", "key"),
    [
        (WEB, WebTouchpoint, "customer_id:C1001"),
        (CALL, CallCentreTouchpoint, "phone_hash:"),
        (STORE, StoreTouchpoint, "loyalty_id:L55"),
        (SMS, SmsTouchpoint, "phone_hash:"),
    ],
)
def test_each_channel_model_validates_its_wire_example(validator, record, model, key):
    tp = check(validator, record)
    assert isinstance(tp, model)
    assert tp.identity_key.startswith(key)
    assert tp.occurred_at.tzinfo is not None and tp.occurred_at.utcoffset().total_seconds() == 0


def test_offsets_are_normalised_to_the_same_instant(validator):
    tp = check(validator, STORE)
    assert tp.occurred_at == datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def test_unknown_keys_are_kept_in_attributes(validator):
    tp = check(validator, {**WEB, "campaign": "spring", "attributes": {"ab": "b"}})
    assert tp.attributes == {"ab": "b", "campaign": "spring"}


def test_raw_pii_is_replaced_by_keyed_hash(validator):
    tp = check(validator, {**CALL, "identifiers": {"phone": PHONE, "email": EMAIL}})
    dumped = orjson.dumps(tp.model_dump(mode="json"))
    assert PHONE.encode() not in dumped and b"13800000001" not in dumped
    assert EMAIL.lower().encode() not in dumped.lower()
    hasher = PiiHasher(b"test-secret")
    assert tp.identifiers.phone_hash == hasher.phone(PHONE)
    assert tp.identifiers.email_hash == hasher.email(EMAIL)
    # the strongest identifier wins: email_hash > phone_hash
    assert tp.identity_key == f"email_hash:{hasher.email(EMAIL)}"


def test_hash_is_keyed_and_normalised():
    a, b = PiiHasher(b"key-a"), PiiHasher(b"key-b")
    assert a.phone("+86 138-0000-0001") == a.phone(PHONE) == a.phone("008613800000001")
    assert a.phone(PHONE) != b.phone(PHONE)
    assert a.email(" JANE.doe@example.com ") == a.email(EMAIL)
    with pytest.raises(ValueError):
        PiiHasher(b"")


def test_scrub_removes_pii_from_untrusted_bytes():
    h = PiiHasher(b"k")
    raw = b'{"identifiers":{"phone":"+8613800000001","email":"jane@example.com"}, "x": 13800000001'
    scrubbed = h.scrub(raw)
    assert b"13800000001" not in scrubbed and b"jane@example.com" not in scrubbed
    assert scrubbed.count(b"<pii:") == 3
    # timestamps and small numbers survive
    assert h.scrub(b'"2026-03-01T10:15:00+00:00", 420') == b'"2026-03-01T10:15:00+00:00", 420'


def _patched(record: dict, **changes: object) -> dict:
    out = dict(record)
    for k, v in changes.items():
        if v is ...:
            out.pop(k, None)
        else:
            out[k] = v
    return out


BIG = "x" * 9000
BAD_INPUTS = {
    "invalid_json": b'{"event_id": "x", "channel": ',
    "invalid_utf8": orjson.dumps(CALL).replace(b'"k9"', b'"k\xff\xfe"'),
    "not_object": b'[{"event_id": "x"}]',
    "unknown_channel": _patched(CALL, channel="fax"),
    "unknown_type": _patched(WEB, type="teleport"),
    "missing_field": _patched(CALL, event_id=...),
    "no_identifier": _patched(CALL, identifiers={}),
    "wrong_type": _patched(CALL, wait_seconds="long"),
    "negative_value": _patched(CALL, wait_seconds=-5),
    "naive_timestamp": _patched(CALL, occurred_at="2026-03-01T10:00:00"),
    "future_timestamp": _patched(CALL, occurred_at="2026-03-18T00:00:00+00:00"),
    "ancient_timestamp": _patched(CALL, occurred_at="1999-12-31T23:59:59+00:00"),
    "non_finite_number": orjson.dumps(WEB).replace(b"129.5", b"NaN"),
    "string_too_long": _patched(WEB, url=BIG),
    "too_deep": _patched(WEB, extra={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}),
    "too_large": _patched(WEB, blob="y" * 1_000_001),
}


@pytest.mark.parametrize("reason", sorted(BAD_INPUTS))
def test_every_bad_input_rule_has_its_reason(validator, reason):
    record = BAD_INPUTS[reason]
    v = (
        Validator(b"test-secret", max_string_chars=1_100_000)
        if reason == "too_large"
        else validator
    )
    result = check(v, record)
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result.error
    assert PHONE not in result.error


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_patched(CALL, event_id=""), "missing_field"),
        (_patched(CALL, occurred_at=...), "missing_field"),
        (_patched(CALL, identifiers=...), "missing_field"),
        (_patched(CALL, channel=...), "missing_field"),
        (_patched(CALL, identifiers={"customer_id": ""}), "missing_field"),
        (_patched(CALL, resolved="yes"), "wrong_type"),
        (_patched(CALL, transfers=1.5), "wrong_type"),
        (_patched(CALL, occurred_at=1772000000), "wrong_type"),
        (_patched(SMS, score=11), "wrong_type"),
        (_patched(STORE, amount=-10), "negative_value"),
        (orjson.dumps(WEB).replace(b"129.5", b"1e999"), "non_finite_number"),
        (orjson.dumps(WEB).replace(b"129.5", b"-Infinity"), "non_finite_number"),
        (_patched(CALL, occurred_at="0001-01-01T00:00:00+08:00"), "ancient_timestamp"),
        (_patched(CALL, occurred_at="9999-12-31T23:59:59-08:00"), "future_timestamp"),
        (_patched(CALL, identifiers={"phone": 8613800000001}), "wrong_type"),
        (b"", "invalid_json"),
        (b"null", "not_object"),
    ],
)
def test_more_bad_inputs(validator, record, reason):
    result = check(validator, record)
    assert isinstance(result, Rejection)
    assert result.reason == reason, result.error


def test_exactly_seven_days_ahead_is_still_valid(validator):
    assert not isinstance(
        check(validator, _patched(CALL, occurred_at="2026-03-17T00:00:00+00:00")), Rejection
    )


def test_customer_profile_hashes_pii_and_checks_zone():
    hasher = PiiHasher(b"k")
    ctx = {"hasher": hasher}
    p = CustomerProfile.model_validate(
        {
            "customer_id": "C1",
            "tier": "A",
            "phone": PHONE,
            "email": EMAIL,
            "timezone": "Asia/Shanghai",
            "consents": {"sms": True, "call": False},
            "birthday": "1990-05-17",
        },
        context=ctx,
    )
    assert p.phone_hash == hasher.phone(PHONE) and p.email_hash == hasher.email(EMAIL)
    assert PHONE not in p.model_dump_json()
    with pytest.raises(ValueError, match="unknown IANA zone"):
        CustomerProfile.model_validate({"customer_id": "C1", "timezone": "Mars/Base"})
    with pytest.raises(ValueError):
        CustomerProfile.model_validate({"customer_id": "C1", "tier": "Z"})


def test_dead_letter_round_trips_raw_bytes():
    dl = DeadLetter(
        dead_letter_id="d",
        reason="invalid_utf8",
        error="e",
        source_topic="t",
        source_partition=1,
        source_offset=2,
        raw=b"\xff\x00abc",
        raw_size=5,
        received_at=NOW,
    )
    assert DeadLetter.model_validate_json(dl.model_dump_json()) == dl


def test_json_schema_export_round_trip(tmp_path, validator):
    paths = export(tmp_path)
    assert {p.name for p in paths} == {
        "touchpoint.schema.json",
        "customer.schema.json",
        "dead_letter.schema.json",
    }
    schema = orjson.loads((tmp_path / "touchpoint.schema.json").read_bytes())
    assert schema == schemas()["touchpoint"]
    # Producers validating with the exported schema accept what touchpath accepts...
    for record in (WEB, CALL, STORE, SMS, {**WEB, "campaign": "x"}):
        jsonschema.validate(record, schema)
        assert not isinstance(check(validator, record), Rejection)
    # ...and reject what it rejects for structural reasons.
    for reason in (
        "unknown_channel",
        "unknown_type",
        "missing_field",
        "wrong_type",
        "negative_value",
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(BAD_INPUTS[reason], schema)
