"""Batch helpers of streams/metrics.py against prometheus-client's own behaviour."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streams.metrics import observe_many

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
