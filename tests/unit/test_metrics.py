"""Batch helpers and the child-process mirror of streams/metrics.py, against
prometheus-client's own behaviour."""

from __future__ import annotations

import math

import orjson
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.metrics import Mirror, observe_many, snapshot

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400, 604800)
#: the bounds themselves, either side of them, negatives and huge values
VALUES = st.one_of(
    st.sampled_from([*BUCKETS, 0.0, -1.0, 1e12, math.inf]),
    st.floats(-10, 1e7, allow_nan=False),
)


def _samples(h: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for m in h.collect()
        for s in m.samples
        if not s.name.endswith("_created")
    }


@given(st.lists(VALUES, max_size=200))
def test_observe_many_equals_observing_one_by_one(values: list[float]) -> None:
    one = Histogram("one", "", buckets=BUCKETS, registry=CollectorRegistry())
    many = Histogram("many", "", buckets=BUCKETS, registry=CollectorRegistry())
    for v in values:
        one.observe(v)
    observe_many(many, values)
    got = {(n.replace("many", "one"), le): v for (n, le), v in _samples(many).items()}
    want = _samples(one)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert math.isclose(got[k], v, rel_tol=1e-9, abs_tol=1e-9) or (got[k] == v), k


def test_observe_many_without_the_internals_falls_back_to_observe() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, v: float) -> None:
            self.seen.append(v)

    h = Plain()
    observe_many(h, [3.0, 0.01])  # type: ignore[arg-type]
    assert h.seen == [3.0, 0.01]


def _metrics() -> tuple[Counter, Counter, Gauge, Gauge, Histogram]:
    """One process's copy of ingest-like metrics (the child and the worker each have one)."""
    reg = CollectorRegistry()
    return (
        Counter("in_total", "", registry=reg),
        Counter("valid_total", "", ["channel"], registry=reg),
        Gauge("lag", "", ["partition"], registry=reg),
        Gauge("paused", "", registry=reg),
        Histogram("batch_seconds", "", buckets=BUCKETS, registry=reg),
    )


def _values(collectors: tuple) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for c in collectors
        for m in c.collect()
        for s in m.samples
        if not s.name.endswith("_created")
    }


def _ship(child: tuple, mirror: Mirror) -> None:
    # as the ingest process sends it: one JSON line
    mirror.apply(orjson.loads(orjson.dumps(snapshot(child))))


def test_mirror_follows_a_child_and_the_next_one_adds_to_it() -> None:
    parent, child = _metrics(), _metrics()
    mirror = Mirror(parent)
    c_in, c_valid, g_lag, g_paused, h = child
    c_in.inc(5)
    c_valid.labels(channel="web").inc(3)
    g_lag.labels(partition="0").set(7)
    g_lag.labels(partition="1").set(2)
    g_paused.set(1)
    h.observe(0.07)
    _ship(child, mirror)
    assert _values(parent) == _values(child)
    # applied again: nothing counted twice
    _ship(child, mirror)
    assert _values(parent) == _values(child)
    c_in.inc(2)
    c_valid.labels(channel="sms").inc()
    g_lag.remove("1")  # partition revoked: its lag is its new owner's to report
    g_paused.set(0)
    h.observe(3)
    h.observe(0.07)
    _ship(child, mirror)
    assert _values(parent) == _values(child)
    assert ("lag", (("partition", "1"),)) not in _values(parent)
    # the child died and a new one counts from zero: the worker's counters go on from theirs
    before = _values(parent)
    child2 = _metrics()
    mirror.reset()
    child2[0].inc(4)
    child2[4].observe(0.2)
    _ship(child2, mirror)
    after = _values(parent)
    assert after[("in_total", ())] == before[("in_total", ())] + 4
    assert after[("batch_seconds_count", ())] == before[("batch_seconds_count", ())] + 1
    assert after[("batch_seconds_sum", ())] == before[("batch_seconds_sum", ())] + 0.2
    assert after[("valid_total", (("channel", "web"),))] == 3  # kept, not reset


@given(st.lists(st.lists(VALUES.filter(math.isfinite), max_size=20), max_size=6))
def test_mirrored_histogram_equals_the_childs(rounds: list[list[float]]) -> None:
    parent, child = _metrics(), _metrics()
    mirror = Mirror(parent)
    for values in rounds:
        for v in values:
            child[4].observe(v)
        _ship(child, mirror)
        got, want = _values(parent[4:]), _values(child[4:])
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert math.isclose(got[k], v, rel_tol=1e-9, abs_tol=1e-6), k
