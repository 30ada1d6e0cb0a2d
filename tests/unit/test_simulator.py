"""The traffic simulator: determinism, file contents, invariants and an exact ground truth.

The ground truth is checked against a small reference implementation of the pain-point
rules (full knowledge, batch, per customer), evaluated with every window stretched and
shrunk by two hours, so no injected or clean case sits on a boundary a real engine could
read either way.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import simulator as sim_mod
from streams.simulator import (
    CONTACT_TYPES,
    MALFORMED_REASONS,
    NEGATIVE_WORDS,
    RULE_IDS,
    SCENARIOS,
    PublishError,
    SimConfig,
    SimResult,
    producer_key,
    publish,
    simulate,
    write_outputs,
)

H = timedelta(hours=1)
DAY = timedelta(days=1)

#: The anchor event each rule names, as (channel, types).
ANCHOR_TYPES = {
    "repeat_contact": None,  # any contact type
    "digital_failure_to_call": ("web", {"checkout_failed", "error"}),
    "long_queue": ("call_centre", {"answered"}),
    "ivr_abandon": ("call_centre", {"ivr_abandoned"}),
    "queue_abandon": ("call_centre", {"queue_abandoned"}),
    "transfer_unresolved": ("call_centre", {"call_ended"}),
    "checkout_failed": ("web", {"checkout_failed"}),
    "cart_abandoned": ("web", {"add_to_cart"}),
    "low_survey_score": ("sms", {"reply"}),
    "negative_reply": ("sms", {"reply"}),
    "store_complaint": ("store", {"complaint"}),
    "complaint_unresolved": (None, {"complaint", "call_started"}),
    "trial_unused": ("web", {"trial_started"}),
    "opt_out": ("sms", {"opt_out"}),
}


@lru_cache(maxsize=8)
def _run(customers: int, days: int, seed: int, start: datetime | None = None) -> SimResult:
    cfg = SimConfig(customers=customers, days=days, seed=seed)
    if start is not None:
        cfg = SimConfig(customers=customers, days=days, seed=seed, start=start)
    return simulate(cfg)


def _default() -> SimResult:
    return _run(2000, 30, 7)


# -- a reference evaluation of the rules ---------------------------------------------------


def _valid(result: SimResult) -> list[tuple[int, dict[str, Any], datetime]]:
    out = []
    for i, raw in enumerate(result.records):
        if i in result.malformed:
            continue
        obj = orjson.loads(raw)
        out.append((i, obj, datetime.fromisoformat(obj["occurred_at"])))
    return out


def _journeys(result: SimResult) -> tuple[dict[str, list[tuple[datetime, int, dict]]], list]:
    """Valid events per CRM customer (stitched like the identity stage), and the rest."""
    by_phone = {c["phone"]: c["customer_id"] for c in result.customers}
    by_email = {c["email"]: c["customer_id"] for c in result.customers}
    by_loyalty = {c["loyalty_id"]: c["customer_id"] for c in result.customers}
    valid = _valid(result)
    by_anon: dict[str, str] = {}
    for _, o, _ in valid:
        ids = o["identifiers"]
        if "anonymous_id" in ids and "customer_id" in ids:
            assert by_anon.setdefault(ids["anonymous_id"], ids["customer_id"]) == ids["customer_id"]
    journeys: dict[str, list] = defaultdict(list)
    anonymous = []
    for i, o, t in valid:
        ids = o["identifiers"]
        cid = (
            ids.get("customer_id")
            or by_loyalty.get(ids.get("loyalty_id"))
            or by_email.get(ids.get("email"))
            or by_phone.get(ids.get("phone"))
            or by_anon.get(ids.get("anonymous_id"))
        )
        if cid is None:
            anonymous.append((t, i, o))
        else:
            journeys[cid].append((t, i, o))
    for evs in journeys.values():
        evs.sort(key=lambda e: (e[0], e[1]))
    return journeys, anonymous


def _is_contact(o: dict) -> bool:
    return (o["channel"], o["type"]) in CONTACT_TYPES


def _reference_pain_points(result: SimResult, slack: timedelta) -> set[tuple[str, str, str]]:
    """(customer_id, rule_id, anchor_event_id) a correct engine finds; windows +/- slack."""
    journeys, _ = _journeys(result)
    last = max(t for evs in journeys.values() for t, _, _ in evs) if journeys else None
    w7, w24, w48, w15, late = (
        7 * DAY + slack,
        24 * H + slack,
        48 * H + slack,
        15 * DAY + slack,
        24 * H + slack,
    )
    found: set[tuple[str, str, str]] = set()

    def fire(cid: str, rule: str, o: dict) -> None:
        found.add((cid, rule, o["event_id"]))

    for cid, evs in journeys.items():
        contacts: list[datetime] = []
        complaint_calls = {
            o.get("call_id")
            for _, _, o in evs
            if o["channel"] == "call_centre" and o.get("reason") == "complaint"
        }
        for k, (t, _, o) in enumerate(evs):
            ch, ty = o["channel"], o["type"]
            later = [(t2, o2) for t2, _, o2 in evs[k + 1 :]]
            if _is_contact(o):
                contacts = [x for x in contacts if t - x <= w7] + [t]
                if len(contacts) >= 3:
                    fire(cid, "repeat_contact", o)
                    contacts = []
            if (
                ch == "web"
                and ty in ("checkout_failed", "error")
                and any(o2["type"] == "call_started" and t2 - t <= w24 for t2, o2 in later)
            ):
                fire(cid, "digital_failure_to_call", o)
            if ch == "web" and ty == "checkout_failed":
                fire(cid, "checkout_failed", o)
            if ch == "call_centre":
                if ty == "answered" and (o.get("wait_seconds") or 0) > 300:
                    fire(cid, "long_queue", o)
                if ty == "ivr_abandoned":
                    fire(cid, "ivr_abandon", o)
                if ty == "queue_abandoned":
                    fire(cid, "queue_abandon", o)
                if (
                    ty == "call_ended"
                    and (o.get("transfers") or 0) >= 2
                    and o.get("resolved") is False
                ):
                    fire(cid, "transfer_unresolved", o)
            if (
                ch == "web"
                and ty == "add_to_cart"
                and t + w24 + late <= last
                and not any(o2["type"] == "purchase" and t2 - t <= w24 for t2, o2 in later)
            ):
                fire(cid, "cart_abandoned", o)
            if ch == "sms" and ty == "reply":
                if o.get("score") is not None and o["score"] <= 6:
                    fire(cid, "low_survey_score", o)
                text = (o.get("reply_text") or "").casefold()
                if any(w in text for w in NEGATIVE_WORDS):
                    fire(cid, "negative_reply", o)
            if ch == "sms" and ty == "opt_out":
                fire(cid, "opt_out", o)
            if ch == "store" and ty == "complaint":
                fire(cid, "store_complaint", o)
            is_complaint = (ch == "store" and ty == "complaint") or (
                ch == "call_centre" and ty == "call_started" and o.get("call_id") in complaint_calls
            )
            if (
                is_complaint
                and t + w48 + late <= last
                and not any(o2.get("resolved") is True and t2 - t <= w48 for t2, o2 in later)
            ):
                fire(cid, "complaint_unresolved", o)
            if (
                ch == "web"
                and ty == "trial_started"
                and t + w15 + late <= last
                and not any(o2["type"] == "app_usage" and t2 - t <= w15 for t2, o2 in later)
            ):
                fire(cid, "trial_unused", o)
    return found


def _truth(result: SimResult) -> set[tuple[str, str, str]]:
    return {(g["customer_id"], g["rule_id"], g["anchor_event_id"]) for g in result.ground_truth}


# -- determinism and files -----------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a = write_outputs(simulate(SimConfig(customers=300, seed=11)), tmp_path / "a")
    b = write_outputs(simulate(SimConfig(customers=300, seed=11)), tmp_path / "b")
    assert a.keys() == b.keys() == {"events", "customers", "ground_truth", "manifest"}
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes(), name
    head = a["events"].read_bytes()[:32]
    assert head[4:8] == b"\0\0\0\0"  # gzip mtime
    assert b"events.jsonl\0" in head


def test_different_seed_gives_different_traffic() -> None:
    a, b = _run(300, 30, 1), _run(300, 30, 2)
    assert a.records != b.records
    assert a.ground_truth != b.ground_truth


def test_manifest_matches_files(tmp_path: Path) -> None:
    result = _run(300, 30, 3)
    paths = write_outputs(result, tmp_path)
    with gzip.open(paths["events"], "rb") as fh:
        lines = fh.read().split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == result.records
    customers = [orjson.loads(x) for x in paths["customers"].read_bytes().splitlines()]
    truth = [orjson.loads(x) for x in paths["ground_truth"].read_bytes().splitlines()]
    m = json.loads(paths["manifest"].read_text())
    assert paths["manifest"].read_text() == json.dumps(m, indent=2, sort_keys=True) + "\n"
    assert m["events_total"] == len(result.records) == m["events_valid"] + m["events_malformed"]
    assert m["events_malformed"] == len(result.malformed) == sum(m["malformed_by_reason"].values())
    assert set(m["malformed_by_reason"]) <= set(MALFORMED_REASONS)
    assert all(m["malformed_by_reason"].values())  # only reasons that occur, like a Counter
    assert m["customers"] == len(customers) == 300
    assert truth == result.ground_truth and m["ground_truth_total"] == len(truth)
    by_rule = {r: sum(g["rule_id"] == r for g in truth) for r in RULE_IDS}
    assert m["ground_truth_by_rule"] == {r: n for r, n in sorted(by_rule.items()) if n}
    with_sc = {g["customer_id"] for g in truth}
    assert m["customers_with_scenarios"] == len(with_sc)
    assert m["clean_customers"] == 300 - len(with_sc)
    assert truth == sorted(
        truth,
        key=lambda g: (g["occurred_at"], g["customer_id"], g["rule_id"], g["anchor_event_id"]),
    )


def test_customer_profiles() -> None:
    result = _default()
    rows = result.customers
    assert [c["customer_id"] for c in rows] == [f"C{i:06d}" for i in range(1, 2001)]
    for key in ("phone", "email", "loyalty_id"):
        assert len({c[key] for c in rows}) == len(rows), key
    tiers = {t: sum(c["tier"] == t for c in rows) / len(rows) for t in "ABC"}
    assert 0.11 < tiers["A"] < 0.19 and 0.30 < tiers["B"] < 0.40 and 0.45 < tiers["C"] < 0.55
    assert {c["timezone"] for c in rows} == {"Asia/Shanghai", "Europe/London"}
    assert all(c["phone"].startswith("+") and c["phone"][1:].isdigit() for c in rows)
    assert any(not v for c in rows for v in c["consents"].values())
    from schemas.customer import CustomerProfile
    from schemas.pii import PiiHasher

    for c in rows[:50]:
        CustomerProfile.model_validate(c, context={"hasher": PiiHasher(b"k")})


# -- the records ---------------------------------------------------------------------------


def test_default_size_and_speed() -> None:
    started = time.perf_counter()
    result = simulate(SimConfig())
    elapsed = time.perf_counter() - started
    m = result.manifest
    per_customer = m["events_valid"] / (m["customers"] + m["anonymous_visitors"])
    assert 15 <= per_customer <= 40
    assert m["events_total"] / elapsed > 30_000  # ~110k/s on the 2-core box; loose for CI
    assert result.records == _default().records


def test_malformed_fraction_and_reasons() -> None:
    result = _default()
    m = result.manifest
    assert abs(m["events_malformed"] / m["events_total"] - 0.005) < 0.0005
    counts = m["malformed_by_reason"].values()
    assert len(counts) == len(MALFORMED_REASONS)
    assert max(counts) - min(counts) <= 1  # spread evenly over the reasons


def test_records_sorted_by_time_with_unique_ids() -> None:
    result = _default()
    valid = _valid(result)
    times = [t for _, _, t in valid]
    assert times == sorted(times)
    assert all(t.tzinfo is not None for t in times)
    offsets = {o["occurred_at"][-6:] for _, o, _ in valid}
    assert offsets == {"+00:00", "+08:00"}
    ids = [o["event_id"] for _, o, _ in valid]
    assert len(set(ids)) == len(ids)
    cfg = SimConfig()
    assert cfg.start <= times[0] and times[-1] < cfg.end
    for _, o, _ in valid:
        assert (
            o["identifiers"]
            and o["event_id"][0]
            == {"web": "w", "call_centre": "c", "store": "s", "sms": "m"}[o["channel"]]
        )


def test_ground_truth_anchors_exist_with_the_right_type() -> None:
    result = _default()
    by_id = {o["event_id"]: o for _, o, _ in _valid(result)}
    journeys, _ = _journeys(result)
    owner = {o["event_id"]: cid for cid, evs in journeys.items() for _, _, o in evs}
    for g in result.ground_truth:
        o = by_id[g["anchor_event_id"]]
        assert owner[o["event_id"]] == g["customer_id"]
        assert datetime.fromisoformat(o["occurred_at"]) == datetime.fromisoformat(g["occurred_at"])
        spec = ANCHOR_TYPES[g["rule_id"]]
        if spec is None:
            assert _is_contact(o)
        else:
            channel, types = spec
            assert channel in (None, o["channel"]) and o["type"] in types
    assert {g["rule_id"] for g in result.ground_truth} == set(RULE_IDS)


@pytest.mark.parametrize(
    ("customers", "days", "seed", "start"),
    [
        (2000, 30, 7, None),
        (400, 30, 5, datetime(2028, 2, 27, 13, 45, 30, tzinfo=timezone(timedelta(hours=5)))),
        (400, 12, 9, None),
        (200, 3, 4, None),
        (1, 30, 1, None),
        (0, 30, 1, None),
    ],
)
def test_ground_truth_is_exactly_what_the_rules_find(customers, days, seed, start) -> None:
    result = _run(customers, days, seed, start)
    truth = _truth(result)
    assert len(truth) == len(result.ground_truth)
    for slack in (timedelta(0), -2 * H, 2 * H):
        found = _reference_pain_points(result, slack)
        assert found == truth, (slack, sorted(found ^ truth)[:10])


def test_scenarios_cover_every_kind_and_a_third_of_customers() -> None:
    m = _default().manifest
    kinds = m["scenarios_by_kind"]
    assert set(kinds) == set(SCENARIOS) and min(kinds.values()) >= 30
    assert 0.25 < m["customers_with_scenarios"] / m["customers"] < 0.35


def test_clean_customers_invariants() -> None:
    result = _default()
    journeys, anonymous = _journeys(result)
    flagged = {g["customer_id"] for g in result.ground_truth}
    assert len(journeys) == len(result.customers)  # every CRM customer has events
    for cid, evs in journeys.items():
        if cid in flagged:
            continue
        contacts = [t for t, _, o in evs if _is_contact(o)]
        for k in range(len(contacts) - 2):
            assert contacts[k + 2] - contacts[k] > 7 * DAY + 2 * H, cid
        for k, (t, _, o) in enumerate(evs):
            ty = o["type"]
            assert ty not in (
                "checkout_failed",
                "error",
                "ivr_abandoned",
                "queue_abandoned",
                "opt_out",
            )
            assert ty != "complaint" and o.get("reason") != "complaint"
            if ty == "add_to_cart":
                assert any(
                    o2["type"] == "purchase" and t2 - t <= 24 * H for t2, _, o2 in evs[k:]
                ), cid
            if ty == "answered":
                assert o["wait_seconds"] <= 240
            if ty == "reply":
                assert o["score"] >= 7
                assert not any(w in o["reply_text"].casefold() for w in NEGATIVE_WORDS)
            if ty == "call_ended":
                assert o["transfers"] < 2
            if ty == "trial_started":
                assert any(
                    o2["type"] == "app_usage" and t2 - t <= 15 * DAY for t2, _, o2 in evs[k:]
                )
    # anonymous-only visitors only browse
    assert anonymous and all(o["type"] in ("page_view", "search") for _, _, o in anonymous)
    assert all(set(o["identifiers"]) == {"anonymous_id"} for _, _, o in anonymous)


def test_identity_realism() -> None:
    result = _default()
    valid = _valid(result)
    logins: dict[str, list[datetime]] = defaultdict(list)
    for _, o, t in valid:
        ids = o["identifiers"]
        if o["type"] == "login":
            assert set(ids) == {"anonymous_id", "customer_id"}
            logins[ids["anonymous_id"]].append(t)
    n_pre_login = 0
    for _, o, t in valid:
        ids, ch = o["identifiers"], o["channel"]
        if ch == "store":
            assert set(ids) == {"loyalty_id"}
        elif ch == "sms":
            assert set(ids) == {"phone"}
        elif ch == "call_centre":
            assert set(ids) in ({"phone"}, {"phone", "customer_id"})
            if o["type"] == "call_started":
                assert set(ids) == {"phone"}
        elif set(ids) == {"anonymous_id"} and ids["anonymous_id"] in logins:
            # a pre-login event: the login that names its customer follows within minutes
            n_pre_login += 1
            assert any(timedelta(0) <= t2 - t < H for t2 in logins[ids["anonymous_id"]])
        else:
            assert set(ids) in ({"anonymous_id"}, {"anonymous_id", "customer_id"}) or (
                o["type"] == "purchase" and set(ids) == {"anonymous_id", "customer_id", "email"}
            )
    assert n_pre_login > 1000


def test_validator_accepts_valid_and_rejects_malformed_with_the_expected_reason() -> None:
    validation = pytest.importorskip("schemas.validation")
    for args in ((2000, 30, 7, None), (400, 30, 5, datetime(2028, 2, 27, 13, 45, 30, tzinfo=UTC))):
        result = _run(*args)
        cfg = SimConfig(
            customers=args[0], days=args[1], seed=args[2], start=args[3] or SimConfig().start
        )
        now = cfg.start + timedelta(days=cfg.days)
        v = validation.Validator(pii_secret=b"k")
        got: dict[str, int] = defaultdict(int)
        for i, raw in enumerate(result.records):
            r = v.validate(raw, now)
            expected = result.malformed.get(i)
            if expected is None:
                assert not isinstance(r, validation.Rejection), (raw, r)
            else:
                assert isinstance(r, validation.Rejection) and r.reason == expected, (
                    raw,
                    r,
                    expected,
                )
                got[expected] += 1
        assert {k: n for k, n in result.manifest["malformed_by_reason"].items() if n} == dict(got)


def test_config_validation_and_naive_start() -> None:
    cfg = SimConfig(start=datetime(2026, 3, 1))
    assert cfg.start == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        SimConfig(days=0)
    with pytest.raises(ValueError):
        SimConfig(malformed_rate=1.0)


# -- Kafka -----------------------------------------------------------------------------------


def test_producer_key_prefers_the_strongest_identifier() -> None:
    def rec(**ids: str) -> bytes:
        return orjson.dumps({"event_id": "x", "identifiers": ids})

    assert producer_key(rec(anonymous_id="a", customer_id="C1")) == "C1"
    assert producer_key(rec(phone="+86", loyalty_id="L1", email="e@x")) == "L1"
    assert producer_key(rec(phone="+86", email="e@x")) == "e@x"
    assert producer_key(rec(phone="+86", anonymous_id="a")) == "+86"
    assert producer_key(rec(anonymous_id="a")) == "a"
    assert producer_key(rec()) is None
    assert producer_key(b'{"identifiers": [1]}') is None
    assert producer_key(b"[1, 2]") is None
    assert producer_key(b'{"event_id": "tru') is None


class _FakeProducer:
    instances: list[_FakeProducer] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.sent: list[tuple[str, bytes, str | None]] = []
        self.pending = 0
        self.polls = 0
        _FakeProducer.instances.append(self)

    def produce(
        self, topic: str, value: bytes, key: str | None = None, on_delivery: Any = None
    ) -> None:
        if self.pending >= 100:
            raise BufferError("queue full")
        self.pending += 1
        self.sent.append((topic, value, key))

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        n, self.pending = self.pending, 0
        return n

    def flush(self, timeout: float | None = None) -> int:
        self.pending = 0
        return 0


def test_publish_keys_buffer_full_progress_and_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    import confluent_kafka

    monkeypatch.setattr(confluent_kafka, "Producer", _FakeProducer)
    records = _run(300, 30, 3).records[:2500]
    seen: list[int] = []
    n = publish(
        records,
        bootstrap="b:9092",
        topic="raw",
        rate=None,
        client_config={"linger.ms": 20},
        progress=seen.append,
    )
    p = _FakeProducer.instances[-1]
    assert n == 2500 and [v for _, v, _ in p.sent] == records
    assert [k for _, _, k in p.sent] == [producer_key(r) for r in records]
    assert p.conf["partitioner"] == "murmur2_random" and p.conf["linger.ms"] == 20
    assert p.polls >= 20  # BufferError was served by polling
    assert seen == [1000, 2000, 2500]


def test_publish_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import confluent_kafka

    monkeypatch.setattr(confluent_kafka, "Producer", _FakeProducer)
    sleeps: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(sim_mod.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    started = time.monotonic()
    assert publish([b"{}"] * 600, bootstrap="b", topic="t", rate=2000.0) == 600
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.5
    assert sleeps and max(sleeps) < 0.05  # small steps, not one long sleep


def test_publish_real_client_reports_undelivered_records() -> None:
    # a real producer (so the config is one librdkafka accepts) against a closed port
    with pytest.raises(PublishError, match="undelivered"):
        publish(
            [b'{"identifiers": {"customer_id": "C1"}}'] * 3,
            bootstrap="127.0.0.1:9",
            topic="t",
            client_config={"message.timeout.ms": 60_000},
            flush_timeout=0.5,
        )
