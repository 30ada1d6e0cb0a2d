"""The ack guards of streams/faust_fixes.py, on Faust's real Consumer.ack path.

A rebalance or a failed batch cannot be staged on cue on a real broker, so the consumer
is a stand-in carrying what ``ack`` reads: the app's generation and flow control.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import TopicPartition as _TP

from streams import faust_fixes


def _consumer(generation: int = 3, active: bool = True) -> Any:
    app = SimpleNamespace(
        consumer_generation_id=generation,
        flow_control=SimpleNamespace(is_active=lambda: active),
    )
    acked: list[Any] = []
    return SimpleNamespace(app=app, acked=acked)


def _event(offset: int, generation: int = 3) -> Any:
    msg = SimpleNamespace(tp=("t", 0), offset=offset, generation_id=generation)
    return SimpleNamespace(message=msg)


def test_events_of_a_failed_batch_are_never_acked(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(faust_fixes, "_original_ack", lambda self, m: calls.append(m.offset))
    c = _consumer()
    failed, ok = [_event(10), _event(11)], _event(12)
    faust_fixes.refuse(failed)
    assert [faust_fixes._ack_unless_stale(c, e.message) for e in failed] == [False, False]
    faust_fixes._ack_unless_stale(c, ok.message)
    assert calls == [12]


def test_stale_generation_is_not_acked_and_not_processed(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(faust_fixes, "_original_ack", lambda self, m: calls.append(m.offset))
    c = _consumer(generation=4)
    old, new = _event(1, generation=3), _event(2, generation=4)
    assert faust_fixes._ack_unless_stale(c, old.message) is False
    faust_fixes._ack_unless_stale(c, new.message)
    assert calls == [2]
    assert faust_fixes.current(c.app, [old, new]) == [new]


def _committer(committed: int | None, acked: list[int]) -> Any:
    from collections import defaultdict

    from intervaltree import IntervalTree

    c = _consumer()
    c._committed_offset = defaultdict(lambda: None, {("t", 0): committed})
    c._acked = defaultdict(list, {("t", 0): list(acked)})
    c._acked_index = defaultdict(set, {("t", 0): set(acked)})
    c._gap = defaultdict(IntervalTree)
    return c


def test_no_commit_past_a_refused_message_of_a_fresh_partition(monkeypatch) -> None:
    monkeypatch.setattr(faust_fixes, "_holes", {})
    c = _committer(None, [])
    faust_fixes._ack_unless_stale(c, _event(0, generation=2).message)  # stale: refused
    c._acked[("t", 0)] = [1, 2, 3]
    c._acked_index[("t", 0)] = {1, 2, 3}
    # Faust alone would commit 4 here: no committed offset means no gap check.
    assert faust_fixes._original_new_offset(_committer(None, [1, 2, 3]), ("t", 0)) == 4
    assert faust_fixes._new_offset_below_holes(c, ("t", 0)) is None
    # once the refused message is processed and acked, everything commits
    c._acked[("t", 0)] = [0, 1, 2, 3]
    c._acked_index[("t", 0)] = {0, 1, 2, 3}
    assert faust_fixes._new_offset_below_holes(c, ("t", 0)) == 4


def test_no_commit_past_a_single_refused_message_at_the_committed_offset(monkeypatch) -> None:
    monkeypatch.setattr(faust_fixes, "_holes", {})
    c = _committer(10, [])
    faust_fixes.refuse([_event(10)])
    faust_fixes._ack_unless_stale(c, _event(10).message)
    c._acked[("t", 0)] = [11, 12]
    c._acked_index[("t", 0)] = {11, 12}
    assert faust_fixes._original_new_offset(_committer(10, [11, 12]), ("t", 0)) == 13
    assert faust_fixes._new_offset_below_holes(c, ("t", 0)) is None
    assert c._acked[("t", 0)] == [11, 12]  # kept for later


def test_a_batch_cancelled_mid_way_is_never_acked(monkeypatch) -> None:
    """A stopping worker cancels its agents mid-batch; take_events() acks the batch in its
    finally and the consumer commits as it stops: the batch must be refused, not acked."""
    import asyncio

    calls: list[int] = []
    monkeypatch.setattr(faust_fixes, "_original_ack", lambda self, m: calls.append(m.offset))
    c = _consumer()
    batch = [_event(20), _event(21)]

    async def landing(events: list[Any]) -> None:
        await asyncio.sleep(3600)  # ClickHouse away: retrying

    async def run() -> None:
        task = asyncio.ensure_future(faust_fixes.process_batch(c.app, "land", batch, landing))
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the cancellation must propagate")

    asyncio.run(run())
    assert [faust_fixes._ack_unless_stale(c, e.message) for e in batch] == [False, False]
    assert calls == []


class _App:
    """What the end-of-recovery seek reads of Faust's app and consumer."""

    def __init__(self, generation: int, log: list[str]) -> None:
        self.consumer_generation_id = generation
        self.consumer = SimpleNamespace(app=self, flow_active=True, assignment=lambda: {("t", 0)})
        self.log = log


def test_stream_partitions_are_sought_before_faust_resumes_them(monkeypatch) -> None:
    # Faust's end of recovery resumes the stream partitions and then seeks them: what the
    # agents got in between was processed twice or dropped. The seek now comes first, and
    # Faust's own (after the resume) is skipped.
    log: list[str] = []

    async def seek(consumer: Any) -> None:
        consumer.app.log.append("seek")

    async def faust_end_of_recovery(self: Any, generation_id: int = 0) -> None:
        self.app.log.append("resume")
        await faust_fixes._perform_seek_once(self.app.consumer)  # Faust's seek, after it
        self.app.log.append("ready")

    monkeypatch.setattr(faust_fixes, "_original_perform_seek", seek)
    monkeypatch.setattr(faust_fixes, "_original_on_recovery_completed", faust_end_of_recovery)
    app = _App(generation=4, log=log)
    asyncio.run(faust_fixes._on_recovery_completed_sought(SimpleNamespace(app=app), 4))
    assert log == ["seek", "resume", "ready"]
    # later seeks of Faust's (a rebalance beginning) are not skipped
    asyncio.run(faust_fixes._perform_seek_once(app.consumer))
    assert log == ["seek", "resume", "ready", "seek"]
    # a recovery overtaken by a newer generation leaves the seek to Faust
    log.clear()
    asyncio.run(faust_fixes._on_recovery_completed_sought(SimpleNamespace(app=app), 3))
    assert log == ["resume", "seek", "ready"]


def test_records_fetched_for_a_paused_partition_are_fetched_again(monkeypatch) -> None:
    # Faust drops, unread, the records a fetch returns for a partition it has paused, and
    # aiokafka's position is past them: they must be taken out and their partition sought
    # back, or a restarted worker skips them (found: 1,500 touchpoints never landed).
    active, paused, buffered = _TP("t", 0), _TP("t", 1), _TP("t", 2)
    rec = lambda o: SimpleNamespace(offset=o)  # noqa: E731
    fetched = {active: [rec(5), rec(6)], paused: [rec(7), rec(8)], buffered: [rec(3)]}
    sought: list[tuple[Any, int]] = []

    async def faust_fetch(self: Any, timeout: float) -> tuple[Any, Any]:
        return dict(fetched), self.active

    monkeypatch.setattr(faust_fixes, "_original_wait_next_records", faust_fetch)
    consumer = SimpleNamespace(
        active={active},
        _buffered_partitions={buffered},
        _thread=SimpleNamespace(seek=lambda tp, o: sought.append((tp, o))),
    )
    records, _ = asyncio.run(faust_fixes._refetch_inactive(consumer, 1.0))
    assert records == {active: fetched[active], buffered: fetched[buffered]}
    assert sought == [(paused, 7)]
    # nothing to drop: the fetch as it was
    consumer.active = {active, paused, buffered}
    sought.clear()
    assert asyncio.run(faust_fixes._refetch_inactive(consumer, 1.0))[0] == fetched
    assert sought == []
