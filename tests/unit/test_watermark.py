"""Event-time watermarks (streams/watermark.py): progress over partitions, idleness."""

from __future__ import annotations

from streams.watermark import SourceWatermarks

NEVER = float("inf")
NINF = float("-inf")


def test_low_watermark_waits_for_every_expected_partition() -> None:
    wms = SourceWatermarks(idle_after=NEVER)
    for p in ("0", "1", "2"):
        wms.touch(p, 0.0)
    wms.observe("0", 100.0, 1.0)
    wms.observe("1", 50.0, 1.0)
    assert wms.value(2.0) == NINF  # "2" has not reported: nothing is certain yet
    wms.observe("2", 70.0, 3.0)
    assert wms.value(3.0) == 50.0


def test_a_silent_partition_holds_the_watermark_when_silence_never_means_idle() -> None:
    # A partition whose worker died keeps its last promise until its new owner reports.
    wms = SourceWatermarks(idle_after=NEVER)
    wms.observe("0", 10.0, 0.0)
    wms.observe("1", 500.0, 0.0)
    for t in range(1, 1000, 100):
        wms.observe("1", 500.0 + t, float(t))
    assert wms.value(10_000.0) == 10.0


def test_a_caught_up_partition_stops_holding_back_until_it_reports_again() -> None:
    wms = SourceWatermarks(idle_after=NEVER)
    wms.touch("0", 0.0)
    wms.touch("1", 0.0)
    wms.observe("0", 100.0, 1.0)
    assert wms.value(1.0) == NINF
    wms.caught_up("1", 1.0)
    assert wms.is_idle("1", 1.0)
    assert wms.value(1.0) == 100.0
    wms.observe("1", 150.0, 2.0)
    assert not wms.is_idle("1", 2.0)
    wms.observe("0", 200.0, 2.0)
    assert wms.value(2.0) == 150.0


def test_the_watermark_never_goes_backwards() -> None:
    wms = SourceWatermarks(idle_after=NEVER)
    wms.observe("0", 100.0, 0.0)
    assert wms.value(0.0) == 100.0
    wms.touch("1", 1.0)  # a new input that knows nothing yet
    assert wms.value(1.0) == 100.0


def test_finite_idleness_and_wall_time_following() -> None:
    wms = SourceWatermarks(idle_after=30.0, follow_wall_time=True)
    wms.observe("0", 100.0, 0.0)
    wms.observe("1", 50.0, 0.0)
    assert wms.value(10.0) == 50.0
    assert wms.is_idle("1", 30.0)
    # every input idle: the largest progress, then wall time beyond the idle period
    assert wms.value(40.0) == 110.0
