"""Replay filters, speed parsing, pacing math (injected clock) and resume bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from replay.filters import EventFilter, event_time, parse_speed
from replay.pacing import Pacer
from replay.state import AckTracker, ReplayState, run_key, state_path

T0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- speed and filters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "speed"), [("max", None), ("MAX", None), ("60x", 60.0), ("60", 60.0), ("0.5x", 0.5)]
)
def test_parse_speed(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["fast", "0x", "-2x", "x", "60xx"])
def test_parse_speed_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="speed"):
        parse_speed(text)


def test_event_time() -> None:
    assert event_time({"occurred_at": "2026-03-01T08:00:00+08:00"}) == T0
    assert event_time({"occurred_at": "2026-03-01T00:00:00Z"}) == T0
    for bad in (
        {},
        {"occurred_at": 5},
        {"occurred_at": "yesterday"},
        {"occurred_at": "2026-03-01"},
    ):
        assert event_time(bad) is None  # the last one: naive, means nothing without a zone


def test_filter_time_channel_customer() -> None:
    f = EventFilter(
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 2, tzinfo=UTC),
        frozenset({"web", "sms"}),
        frozenset({"C1"}),
    ).compile()
    ok = {"channel": "web", "identifiers": {"customer_id": "C1"}}
    assert f.check(ok, T0) is True
    assert f.check(ok, T0 + 86400) is False  # --to is exclusive
    assert f.check(ok, T0 - 1) is False
    assert f.check({**ok, "channel": "store"}, T0) is False
    assert f.check({**ok, "identifiers": {"customer_id": "C2"}}, T0) is False
    assert f.check({**ok, "identifiers": {"phone": "+1"}}, T0) is False
    # what the filter cannot judge is reported as such (bad, not sent)
    assert f.check(None, T0) is None
    assert f.check(ok, None) is None
    assert f.check({"identifiers": {"customer_id": "C1"}}, T0) is None


def test_filter_checks_its_bounds() -> None:
    with pytest.raises(ValueError, match="zone"):
        EventFilter(start=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="after"):
        EventFilter(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    assert not EventFilter().active


# --- pacing ------------------------------------------------------------------------------------


def test_pacer_follows_an_absolute_schedule() -> None:
    clock = FakeClock()
    p = Pacer(60.0, clock)
    assert p.delay(T0) == 0.0  # the first record starts the schedule
    assert p.delay(T0 + 60) == pytest.approx(1.0)  # one event-minute = one second at 60x
    clock.t += 1.5  # we were late (a stall): the next record is due at once...
    assert p.delay(T0 + 60) == pytest.approx(-0.5)
    # ...and the one after is back on the original schedule: errors do not accumulate
    assert p.delay(T0 + 120) == pytest.approx(0.5)
    clock.t += 0.5
    assert p.delay(T0 + 120) == pytest.approx(0.0)


def test_pacer_total_time_is_span_over_speed_whatever_the_gaps() -> None:
    clock = FakeClock()
    p = Pacer(60.0, clock)
    times = [T0 + g for g in (0, 0.1, 0.2, 30, 30, 31, 1800, 3599.9, 3600)]
    for ts in times:
        d = p.delay(ts)
        if d > 0:
            clock.t += d * 1.03  # a sleep that overshoots by 3% every time
    assert clock.t - 1000.0 == pytest.approx(60.0, rel=0.031)  # not 3% per gap, compounded


def test_pacer_never_goes_back_in_event_time() -> None:
    clock = FakeClock()
    p = Pacer(10.0, clock)
    p.delay(T0)
    assert p.delay(T0 + 100) == pytest.approx(10.0)
    assert p.delay(T0 + 5) == pytest.approx(10.0)  # older than seen: due with the latest
    assert p.delay(None) == pytest.approx(10.0)  # no readable time: due with the latest


# --- acknowledged position ---------------------------------------------------------------------


def test_ack_tracker_waits_for_the_whole_prefix() -> None:
    t = AckTracker(position=(0, 0))
    cb1 = t.callback
    t.close((0, 3), 3, {"sent": 3})  # epoch 1: 3 records
    cb2 = t.callback
    t.close((0, 5), 5, {"sent": 5})  # epoch 2: 2 records
    for _ in range(2):
        cb2(None, None)  # epoch 2 delivered first (another partition)
    assert t.acknowledged() == (0, 0)
    cb1(None, None)
    cb1(None, None)
    assert t.acknowledged() == (0, 0)
    cb1(None, None)
    assert t.acknowledged() == (0, 5)
    assert t.counts == {"sent": 5}
    assert t.in_flight == 0


def test_ack_tracker_empty_epochs_and_failures() -> None:
    t = AckTracker(position=(0, 0))
    t.close((0, 40), 0, {})  # only filtered records: nothing to wait for
    assert t.acknowledged() == (0, 40)
    cb = t.callback
    t.close((0, 42), 2, {})
    cb(None, None)
    cb("Broker: message too large", None)
    assert t.acknowledged() == (0, 40)  # never past a failed record
    assert t.errors == ["Broker: message too large"]


def test_state_roundtrip_and_keys(tmp_path: Path) -> None:
    k = run_key(["/a.jsonl"], "raw", {"channels": []})
    assert k == run_key(["/a.jsonl"], "raw", {"channels": []})
    assert k != run_key(["/a.jsonl"], "other", {"channels": []})
    assert k != run_key(["/a.jsonl"], "raw", {"channels": ["web"]})
    path = state_path(tmp_path, k)
    st = ReplayState(k, "run-1", "raw", ["/a.jsonl"], {"channels": []}, position=[0, 7])
    st.counts = {"sent": 7}
    st.save(path)
    assert ReplayState.load(path) == st
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    path.write_text("{half")
    assert ReplayState.load(path) is None
    assert ReplayState.load(tmp_path / "missing.json") is None
