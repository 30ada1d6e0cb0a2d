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


def test_a_partition_at_its_end_holds_at_its_own_progress_while_others_deliver() -> None:
    # Ingest on a backlog being published: partition 3 is read to its end while the
    # producer has not reached it again; its next records are older than partition 0's.
    wms = SourceWatermarks(idle_after=30.0, follow_wall_time=True, wake_on_data=True)
    for p in ("0", "3"):
        wms.touch(p, 0.0)
    wms.observe("3", 100.0, 1.0)
    wms.at_end("3", 1.0)
    wms.observe("0", 500.0, 1.0)
    assert not wms.is_idle("3", 1.5)
    assert wms.value(1.5) == 100.0  # not 500: partition 3 may still deliver 101
    wms.at_end("0", 2.0)  # both at their end: nothing in flight anywhere
    assert wms.is_idle("3", 2.0) and wms.value(2.0) == 500.0
    wms.observe("3", 510.0, 3.0)  # 3 delivers again: 0 (at its end) stops being idle
    assert not wms.is_idle("0", 3.0)


def test_data_after_a_quiet_spell_gives_the_other_inputs_time_to_show_up() -> None:
    wms = SourceWatermarks(idle_after=30.0, follow_wall_time=True, wake_on_data=True)
    for p in ("0", "1"):
        wms.touch(p, 0.0)
        wms.at_end(p, 0.0)
    assert wms.is_idle("1", 100.0)  # a quiet system: both idle
    wms.observe("0", 900.0, 100.0)  # a burst begins on 0; 1 has not been reached yet
    assert not wms.is_idle("1", 100.0)
    assert wms.value(100.0) == NINF
    wms.observe("0", 950.0, 120.0)
    assert wms.value(129.0) == NINF
    assert wms.value(131.0) == 950.0  # 1 stayed silent for idle_after: not waited for


def test_without_wake_on_data_silence_counts_from_the_last_data() -> None:
    wms = SourceWatermarks(idle_after=30.0)
    wms.touch("0", 0.0)
    wms.touch("1", 0.0)
    wms.observe("0", 900.0, 100.0)
    assert wms.is_idle("1", 100.0) and wms.value(100.0) == 900.0


def test_resume_makes_an_idle_input_hold_the_watermark_again() -> None:
    # Downstream of ingest: "1" was reported idle, then its (new) owner reads it again.
    wms = SourceWatermarks(idle_after=NEVER)
    wms.observe("0", 100.0, 0.0)
    wms.observe("1", 40.0, 0.0)
    wms.caught_up("1", 1.0)
    assert wms.value(1.0) == 100.0
    wms.resume("1", 2.0)
    wms.observe("0", 300.0, 2.0)
    assert wms.value(2.0) == 100.0  # never backwards, and held: 1 promised only 40
    wms.observe("1", 250.0, 3.0)
    assert wms.value(3.0) == 250.0


def test_the_micro_batch_says_which_partitions_to_wait_for() -> None:
    import orjson

    from streams.microbatch import encode

    obj = orjson.loads(encode([], "2026-01-01T00:00:00+00:00", {"0": 5.0, "1": None, "2": NINF}))
    assert obj["wms"] == {"0": 5.0, "1": None}
    assert obj["wait"] == ["2"]
