"""The fast event-time formatter gives exactly what datetime gives."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine.timefmt import iso

# within datetime's range; whole seconds plus fractions near the rounding edges too
_TS = st.floats(min_value=-5e10, max_value=2.5e11, allow_nan=False) | st.builds(
    lambda s, f: s + f,
    st.integers(min_value=0, max_value=4_000_000_000),
    st.sampled_from([0.0, 0.0005, 0.0009995, 0.9995, 0.9999995, 0.5e-6, 1 - 0.5e-6, 0.1234565]),
)


@settings(max_examples=3000, deadline=None)
@given(_TS)
def test_iso_matches_datetime(ts: float) -> None:
    assert iso(ts) == datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def test_iso_examples() -> None:
    assert iso(0.0) == "1970-01-01T00:00:00.000+00:00"
    assert iso(1773050400.9999996) == "2026-03-09T10:00:01.000+00:00"  # rounds up a second
    assert iso(-0.25) == "1969-12-31T23:59:59.750+00:00"
