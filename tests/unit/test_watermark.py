"""Event-time watermarks (streams/watermark.py): progress over partitions, idleness."""

from __future__ import annotations

from streams.watermark import NEG_INF, SourceWatermarks

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


def test_a_partition_read_to_its_end_keeps_its_progress_for_the_grace() -> None:
    # Its producer's next batch may be older than the other partitions' progress.
    wms = SourceWatermarks(idle_after=30.0, end_grace=3.0)
    wms.observe("0", 100.0, 0.0)
    wms.observe("1", 500.0, 0.0)
    wms.caught_up("0", 1.0)
    assert not wms.is_idle("0", 2.9)
    assert wms.value(2.9) == 100.0
    wms.observe("0", 120.0, 2.9)  # the next batch came within the grace: on time
    wms.caught_up("0", 3.0)
    assert wms.value(5.9) == 120.0
    assert wms.is_idle("0", 6.0)  # the grace has passed since its end, with no data
    assert wms.value(6.0) == 500.0
    wms.observe("0", 130.0, 6.0)  # delivering again: holds back again (never backwards)
    assert not wms.is_idle("0", 6.0)


def test_the_grace_counts_from_the_end_and_a_new_assignment_clears_it() -> None:
    wms = SourceWatermarks(idle_after=30.0, end_grace=3.0)
    wms.touch("0", 0.0)
    wms.observe("1", 500.0, 0.0)
    wms.caught_up("0", 20.0)  # silent since its assignment, but only now at its end
    assert wms.value(22.9) == NINF
    assert wms.is_idle("0", 23.0)
    assert wms.value(23.0) == 500.0
    wms.observe("0", 100.0, 50.0)
    wms.caught_up("0", 51.0)
    wms.touch("0", 52.0)  # re-assigned: read from its commit, not at its end yet
    assert not wms.is_idle("0", 54.5)


def test_without_a_grace_a_partition_read_to_its_end_is_idle_at_once() -> None:
    wms = SourceWatermarks(idle_after=30.0)
    wms.observe("0", 100.0, 0.0)
    wms.observe("1", 500.0, 0.0)
    wms.caught_up("0", 1.0)
    assert wms.is_idle("0", 1.0)
    assert wms.value(1.0) == 500.0


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


def test_an_idle_input_promises_no_more_than_its_progress_plus_its_silence() -> None:
    # Partition 0 is at its end; the producer has not reached it yet with a backlog whose
    # batches span days: while 1 delivers, 0 must not promise 1's progress.
    wms = SourceWatermarks(idle_after=30.0, end_grace=3.0)
    wms.observe("0", 1_000.0, 0.0)
    wms.caught_up("0", 0.0)
    wms.observe("1", 1_000.0, 0.0)
    wms.observe("1", 500_000.0, 10.0)  # a batch spanning days
    assert wms.is_idle("0", 10.0)
    assert wms.value(10.0) == 500_000.0  # ingest's own alignment is not held back
    assert wms.promise("0", 10.0) == 1_010.0
    assert wms.promise("1", 10.0) == 500_000.0
    # live records (event time = wall time): silence advances an idle input like the clock
    live = SourceWatermarks(idle_after=30.0, end_grace=3.0)
    live.observe("0", 100.0, 100.0)
    live.caught_up("0", 100.0)
    live.observe("1", 160.0, 160.0)
    assert live.promise("0", 160.0) == 160.0
    # nothing delivers any more: idle inputs promise the low watermark
    wms.caught_up("1", 10.0)
    assert wms.promise("0", 13.0) == 500_000.0


def test_an_input_with_no_progress_holds_while_others_deliver() -> None:
    # A restarted worker: partition 0 had nothing left to read (its end at once), 1 had.
    # The producer then writes the next backlog, reaching 1 before 0: 0's records may be
    # older than anything 1 delivers, so 0 must not promise 1's progress.
    wms = SourceWatermarks(idle_after=30.0, end_grace=3.0)
    wms.touch("0", 0.0)
    wms.touch("1", 0.0)
    wms.caught_up("0", 0.0)
    wms.observe("1", 1_000.0, 1.0)
    assert wms.is_idle("0", 5.0)
    assert wms.promise("0", 5.0) == NEG_INF  # on hold: nothing known of it
    # every input quiet: the low watermark of that moment stands for 0's progress
    wms.caught_up("1", 2.0)
    assert wms.quiet(6.0)
    assert wms.promise("0", 6.0) == 1_000.0
    wms.observe("1", 400_000.0, 7.0)  # 1 delivers again, days ahead
    assert not wms.quiet(7.0)
    assert wms.promise("0", 7.0) == 1_001.0  # that low watermark plus the wall time since
    # a partition that never gets data stops holding after idle_after seconds of silence
    never = SourceWatermarks(idle_after=30.0, end_grace=3.0)
    never.touch("0", 0.0)
    never.caught_up("0", 0.0)
    never.observe("1", 50.0, 0.0)
    for t in range(1, 30):
        never.observe("1", 50.0 + t, float(t))
        assert never.promise("0", float(t)) == NEG_INF
    never.observe("1", 80.0, 30.0)
    assert never.promise("0", 30.0) == 80.0
