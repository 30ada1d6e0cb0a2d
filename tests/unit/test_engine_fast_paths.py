"""The engine's fast paths change nothing: each shortcut against the plain computation.

* ids: :func:`uuid5_str` is ``str(uuid.uuid5(TOUCHPATH_NS, name))``;
* :func:`journey.iso` (memoized) is the datetime formatting;
* rule bits: a step's bits are exactly the rule sides whose predicates it satisfies;
* state caches (rule bits on steps, the care engine's birthday memo) are invisible: a run
  whose states go through JSON before every call, or whose memo is dropped before every
  call, gives the same records and states;
* :meth:`JourneyStage.advance_all` is :meth:`JourneyStage.advance` of every partition;
* the partition cache gives murmur2's partition, also after it is emptied;
* the backtest pauses the garbage collector and gives it back as it found it.
"""

from __future__ import annotations

import gc
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.dead_letter import TOUCHPATH_NS
from streams.engine import stage as stage_mod
from streams.engine.care import CareEngine, CareState, load_policy
from streams.engine.ids import uuid5_str
from streams.engine.journey import CustomerState, EngineConfig, JourneyEngine, Outputs, iso
from streams.engine.rules import CHANNEL_TYPES, load_rules
from streams.engine.rules import builtin_rules as _builtin_rules
from streams.engine.stage import JourneyStage, customer_key
from streams.partitioning import partition_for

D = 86_400.0
T0 = datetime(2026, 3, 2, tzinfo=UTC).timestamp()
BUILTIN = _builtin_rules()
POLICY = load_policy()

# -- ids and time formatting -----------------------------------------------------------------


@given(st.text(max_size=60))
def test_uuid5_str_is_uuid5(name: str) -> None:
    try:
        want = str(uuid.uuid5(TOUCHPATH_NS, name))
    except UnicodeEncodeError:  # a lone surrogate is no text: both refuse it
        with pytest.raises(UnicodeEncodeError):
            uuid5_str(name)
        return
    assert uuid5_str(name) == want


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.integers(0, 4_000_000_000))
def test_iso_is_the_datetime_formatting(ts: float) -> None:
    want = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    assert iso(ts) == want
    assert iso(ts) == want  # memoized


# -- rule bits -------------------------------------------------------------------------------

MIXED_RULES = """
version: 1
rules:
  - id: any_resolved
    kind: threshold
    severity: 1
    match: {where: [{field: resolved, op: eq, value: true}]}
  - id: typed_only
    kind: threshold
    severity: 1
    match: {type: [reply, complaint]}
  - id: chan_or_where
    kind: count
    severity: 1
    match:
      - {channel: sms}
      - {where: [{field: attributes.campaign, op: exists}]}
      - {channel: web, type: [error, checkout_failed]}
    min_count: 2
    within: 2d
  - id: seq
    kind: sequence
    severity: 2
    first: [{channel: store}, {type: login}]
    then: {where: [{field: score, op: lte, value: 3}]}
    within: 1d
  - id: gone
    kind: absence
    severity: 2
    first: {channel: call_centre, type: call_started}
    missing: {}
    within: 3h
"""

SIDES = ("match", "first", "then", "missing")
ALL_PAIRS = sorted((c, t) for c, ts in CHANNEL_TYPES.items() for t in ts)


def attrs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "resolved": st.booleans(),
            "score": st.integers(0, 10) | st.just("3"),
            "wait_seconds": st.integers(0, 900),
            "transfers": st.integers(0, 4),
            "reason": st.sampled_from(["complaint", "billing"]),
            "reply_text": st.sampled_from(["terrible!", "fine", "Never Again", "ok"]),
            "attributes": st.fixed_dictionaries({}, optional={"campaign": st.just("x")}),
        },
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    pair=st.sampled_from(ALL_PAIRS) | st.tuples(st.sampled_from(["web", "x"]), st.just("odd")),
    extra=attrs(),
)
def test_rule_bits_are_the_predicates(
    tmp_path_factory: pytest.TempPathFactory, pair: tuple[str, str], extra: dict[str, Any]
) -> None:
    path = tmp_path_factory.getbasetemp() / "mixed_rules.yaml"
    path.write_text(MIXED_RULES)
    for rules in (BUILTIN, load_rules(path)):
        engine = JourneyEngine(rules)
        ev = {"event_id": "e", "channel": pair[0], "type": pair[1], **extra}
        want = 0
        for i, r in enumerate(rules.rules):
            for k, side in enumerate(SIDES):
                if getattr(r, f"matches_{side}" if side != "match" else "matches")(ev):
                    want |= 1 << (4 * i + k)
        assert engine.rule_bits(ev) == want


# -- state caches are invisible --------------------------------------------------------------

TYPES = [
    ("web", "page_view"),
    ("web", "add_to_cart"),
    ("web", "purchase"),
    ("web", "checkout_failed"),
    ("web", "trial_started"),
    ("web", "app_usage"),
    ("call_centre", "call_started"),
    ("call_centre", "answered"),
    ("call_centre", "call_ended"),
    ("store", "complaint"),
    ("store", "service_request"),
    ("sms", "reply"),
    ("sms", "opt_out"),
]
PROFILES = [
    {"tier": "A", "timezone": "Europe/Berlin", "birthday": "1990-03-05"},
    {"tier": "B", "timezone": "Asia/Shanghai", "birthday": "1988-02-29"},
    {"tier": "C", "timezone": None, "birthday": None},
    {"tier": "B", "timezone": "America/New_York", "birthday": "1990-03-05"},
]


def random_events(rng: random.Random, n: int, customers: int = 3) -> list[tuple[str, dict, float]]:
    out = []
    t = T0
    for i in range(n):
        t += rng.choice([0, 1, 60, 3600, 5 * 3600, 20 * 3600, 3 * D])
        ts = t - rng.choice([0, 0, 0, 600, 4 * 3600, 30 * 3600])  # some out of order / late
        ch, ty = rng.choice(TYPES)
        ev: dict[str, Any] = {
            "event_id": f"e{i}" if rng.random() > 0.05 else f"e{max(0, i - 1)}",  # duplicates
            "channel": ch,
            "type": ty,
            "occurred_at": iso(ts),
        }
        if rng.random() < 0.5:
            ev["resolved"] = rng.random() < 0.5
        if ty == "answered":
            ev["wait_seconds"] = rng.choice([30, 400])
        if ty == "call_ended":
            ev["transfers"] = rng.choice([0, 2])
        if ty == "reply":
            ev["score"] = rng.randint(0, 10)
        out.append((f"C{rng.randrange(customers)}", ev, ts))
    return out


def _encode(st: CustomerState) -> bytes:
    return orjson.dumps(st.to_json())


def drive(
    events: list[tuple[str, dict, float]],
    rng: random.Random,
    *,
    roundtrip: bool,
    care: bool,
    advance_all: bool = False,
    partitions: int = 2,
    keep: int = 0,
) -> bytes:
    """Events through a stage like the live agent (profiles changing on the way); all
    outputs and final states as bytes."""
    engine = JourneyEngine(
        BUILTIN, EngineConfig(max_steps=12, max_journeys=3), CareEngine(POLICY) if care else None
    )
    store: dict[str, bytes] = {}
    live: dict[str, CustomerState] = {}

    def load(cid: str) -> CustomerState:
        if roundtrip:
            raw = store.get(cid)
            return CustomerState.from_json(orjson.loads(raw)) if raw else CustomerState(cid)
        return live.setdefault(cid, CustomerState(cid))

    stage = JourneyStage(engine, partitions, load, keep=keep)
    log: list[Any] = []
    newest = T0
    for i, (cid, ev, ts) in enumerate(events):
        out = Outputs()
        if rng.random() < 0.05:
            stage.profile(cid, rng.choice(PROFILES))
        stage.step(cid, ev, ts, out)
        newest = max(newest, ts)
        if i % 3 == 0:
            clock = newest - engine.cfg.lateness_seconds - rng.choice([0, 0, 3600])
            if advance_all:
                stage.advance_all(clock, out)
            else:
                for p in range(partitions):
                    stage.advance(p, clock, out)
        for cid, data in stage.persist(out, _encode, 1 << 30)[0]:  # as the live agent
            store[cid] = data
        log.append([out.pain_points, list(out.journeys.values()), out.care_actions, out.late])
        log.append(out.duplicates)
    out = Outputs()
    stage.flush(out)
    for p in range(partitions):
        stage.advance(p, newest + 60 * D, out)
    for cid, data in stage.persist(out, _encode, 1 << 30)[0]:
        store[cid] = data
    log.append([out.pain_points, list(out.journeys.values()), out.care_actions])
    states = sorted((k, orjson.loads(v)) for k, v in store.items()) if roundtrip else None
    return orjson.dumps([log, states])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), care=st.booleans())
def test_states_through_json_before_every_call_change_nothing(seed: int, care: bool) -> None:
    events = random_events(random.Random(seed), 120)
    a = orjson.loads(drive(events, random.Random(seed), roundtrip=True, care=care))
    b = orjson.loads(drive(events, random.Random(seed), roundtrip=False, care=care))
    assert a[0] == b[0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), keep=st.integers(1, 8))
def test_states_kept_decoded_between_batches_change_nothing(seed: int, keep: int) -> None:
    """The live stage keeps recently used states decoded (``keep``) instead of reading
    every one back from the table: outputs and persisted states are the same."""
    events = random_events(random.Random(seed), 120, customers=6)
    kw: dict[str, Any] = {"roundtrip": True, "care": True}
    assert drive(events, random.Random(seed), keep=keep, **kw) == drive(
        events, random.Random(seed), keep=0, **kw
    )


def test_forget_and_invalidate_drop_kept_states() -> None:
    loads: list[str] = []

    def load(cid: str) -> CustomerState:
        loads.append(cid)
        return CustomerState(cid)

    stage = JourneyStage(JourneyEngine(BUILTIN), 4, load, keep=10)
    cids = [f"C{i}" for i in range(8)]
    for cid in cids:
        stage.state(cid)
    stage.release()
    for cid in cids:
        stage.state(cid)
    assert loads == cids  # kept: not loaded again
    stage.release()
    p = stage.partition_of("C0")
    stage.forget(p)
    assert {c for c in cids if stage.partition_of(c) == p}.isdisjoint(stage.states)
    stage.invalidate()
    stage.state("C1")
    assert loads[-1] == "C1" and stage.states.keys() == {"C1"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), partitions=st.integers(1, 4))
def test_advance_all_is_advance_of_every_partition(seed: int, partitions: int) -> None:
    events = random_events(random.Random(seed), 120, customers=6)
    kw: dict[str, Any] = {"roundtrip": True, "care": True, "partitions": partitions}
    assert drive(events, random.Random(seed), advance_all=True, **kw) == drive(
        events, random.Random(seed), advance_all=False, **kw
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6))
def test_the_birthday_memo_is_invisible(seed: int) -> None:
    """Care with the memo kept vs dropped before every call: same records, same state."""
    rng = random.Random(seed)
    ops: list[tuple[str, Any]] = []
    t = T0 - rng.uniform(0, 400 * D)
    for i in range(60):
        r = rng.random()
        if r < 0.15:
            ops.append(("profile", rng.choice(PROFILES)))
        elif r < 0.45:
            t += rng.uniform(0, 40 * D)
            ops.append(("advance", t))
        else:
            ts = t + rng.uniform(-30 * D, 2 * D)  # sometimes before everything seen so far
            ch, ty = rng.choice(TYPES)
            ops.append(("event", {"event_id": f"e{i}", "channel": ch, "type": ty, "ts": ts}))

    def run(forget: bool) -> list[Any]:
        engine, st_ = CareEngine(POLICY), CareState()
        profile: dict[str, Any] = dict(PROFILES[0])
        records: list[Any] = []
        for kind, arg in ops:
            if forget:
                st_.memo = None
            if kind == "profile":
                profile = dict(arg)
            elif kind == "advance":
                records.append(engine.advance(st_, "c1", profile, arg))
            else:
                ev = {k: v for k, v in arg.items() if k != "ts"}
                records.append(engine.on_event(st_, "c1", profile, ev, arg["ts"]))
            records.append(st_.to_json())
        return records

    assert run(forget=False) == run(forget=True)


# -- partitions and the collector ------------------------------------------------------------


def test_partition_cache_is_murmur2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_mod, "PARTITION_CACHE", 50)
    stage = JourneyStage(JourneyEngine(BUILTIN), 7, CustomerState)
    ids = [f"C{i:06d}" for i in range(300)] + ["", "é", "x" * 300]
    for _ in range(2):  # the second round mostly from the cache (emptied on the way)
        for cid in ids:
            assert stage.partition_of(cid) == partition_for(customer_key(cid), 7)
    assert len(stage._parts) <= 50


@pytest.mark.parametrize("enabled", [True, False])
def test_backtest_gives_the_collector_back(tmp_path: Path, enabled: bool) -> None:
    from replay.backtest import backtest
    from schemas.validation import Validator

    log = tmp_path / "e.jsonl"
    log.write_bytes(
        orjson.dumps(
            {
                "event_id": "w1",
                "channel": "web",
                "type": "checkout_failed",
                "occurred_at": "2026-03-02T10:00:00Z",
                "identifiers": {"customer_id": "C1"},
            }
        )
        + b"\n"
    )
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        result = backtest([log], BUILTIN, validator=Validator("k"))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert [p["rule_id"] for p in result.pain_points] == ["checkout_failed"]


def test_a_state_over_the_limit_applies_its_oldest_buffered_events_early() -> None:
    """The buffer waits for the watermark; a customer's big events must not outgrow one
    changelog record meanwhile. The rest wait, and each event is applied once."""
    states: dict[str, CustomerState] = {}

    def load(cid: str) -> CustomerState:
        return states.setdefault(cid, CustomerState(cid))

    stage = JourneyStage(JourneyEngine(BUILTIN), 4, load)
    out = Outputs()
    p = stage.partition_of("C1")
    stage.advance(p, 0.0, out)  # a clock, far behind the events: they all wait
    for i in range(10):
        ev = {
            "event_id": f"e{i}",
            "channel": "web",
            "type": "page_view",
            "occurred_at": iso(1e6 + i),
            "url": "u" * 10_000,
        }
        stage.step("C1", ev, 1e6 + i, out)

    def encode(st: CustomerState) -> bytes:
        return orjson.dumps(st.to_json())

    st = stage.states["C1"]
    assert len(st.buffer) == 10 and len(encode(st)) > 50_000
    encoded, early = stage.persist(out, encode, 50_000)
    assert early > 0
    assert encoded == [("C1", encode(st))]  # the state as it is after the early ones
    assert len(encoded[0][1]) <= 50_000 and st.buffer  # the newest still wait for the watermark
    applied = set(st.seen)
    assert applied == {f"e{i}" for i in range(10 - len(st.buffer))}  # oldest first
    stage.advance(p, 2e6, out)  # the watermark passes: the rest, and nothing twice
    assert not st.buffer and set(st.seen) == {f"e{i}" for i in range(10)}
    assert out.duplicates == 0


def test_persist_encodes_each_touched_state_once_under_the_limit() -> None:
    """The size check is the encoding the table gets: not a second serialisation."""
    stage = JourneyStage(JourneyEngine(BUILTIN), 4, CustomerState)
    out = Outputs()
    for i in range(6):
        ev = {"event_id": f"e{i}", "channel": "web", "type": "page_view",
              "occurred_at": iso(1e6 + i)}  # fmt: skip
        stage.step(f"C{i % 3}", ev, 1e6 + i, out)
    calls: list[str] = []

    def encode(st: CustomerState) -> bytes:
        calls.append(st.customer_id)
        return _encode(st)

    want = {c: _encode(stage.states[c]) for c in ("C0", "C1", "C2")}
    states, early = stage.persist(out, encode, 1 << 20)
    assert early == 0 and sorted(calls) == ["C0", "C1", "C2"]
    assert dict(states) == want
    assert stage.persist(out, encode, 1 << 20) == ([], 0)  # released: nothing touched since
