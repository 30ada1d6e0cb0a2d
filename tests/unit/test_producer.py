"""Order of a worker flush: outputs, then the state changelog, then the markers.

A kill -9 can stop a flush anywhere, so the order is the guarantee: state never becomes
durable before the outputs it stands for. librdkafka cannot be made to die between two
deliveries on cue, so the client is replaced by a recorder of what was sent when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from streams.producer import MARKER_KEY, WorkerProducer


class Recorder:
    """Stands in for confluent_kafka.Producer: queued records become 'delivered' at flush."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, bytes | None]] = []
        self.deliveries: list[list[tuple[str, bytes | None]]] = []  # one list per flush
        self.on_flush: Callable[[], None] | None = None

    def produce(self, topic: str, value: Any, key: Any, on_delivery: Any, **kw: Any) -> None:
        self.queued.append((topic, key))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        if self.on_flush is not None:
            hook, self.on_flush = self.on_flush, None
            hook()  # something the event loop did while this flush ran
        self.deliveries.append(self.queued)
        self.queued = []
        return 0


def _producer() -> tuple[WorkerProducer, Recorder]:
    wp = WorkerProducer("127.0.0.1:1")
    rec = Recorder()
    wp._producer = rec  # type: ignore[assignment]
    return wp, rec


def test_outputs_are_delivered_before_the_state_that_stands_for_them() -> None:
    wp, rec = _producer()
    wp.produce("pain-points", b"pp", b"customer_id:c1", 0)
    wp.changelog("customers-changelog", 4, b"customer_id:c1", b"state")
    asyncio.run(wp.flush())
    outputs, state, markers = (d for d in rec.deliveries if d)
    assert outputs == [("pain-points", b"customer_id:c1")]
    assert state == [("customers-changelog", b"customer_id:c1")]
    assert markers == [("customers-changelog", MARKER_KEY)]


def test_state_written_during_a_flush_waits_for_the_next_one() -> None:
    wp, rec = _producer()
    wp.changelog("customers-changelog", 4, b"k1", b"v1")
    # While the first flush delivers outputs, another agent queues its output and state.
    rec.on_flush = lambda: (
        wp.produce("journeys", b"j", b"k2", 1),
        wp.changelog("customers-changelog", 4, b"k2", b"v2"),
    )
    asyncio.run(wp.flush())
    first = [r for d in rec.deliveries for r in d]
    assert ("customers-changelog", b"k1") in first
    assert ("customers-changelog", b"k2") not in first  # its output was not delivered yet
    rec.deliveries.clear()
    asyncio.run(wp.flush())
    state, markers = (d for d in rec.deliveries if d)
    assert state == [("customers-changelog", b"k2")]
    assert markers == [("customers-changelog", MARKER_KEY)]


def test_a_flush_without_state_sends_no_markers() -> None:
    wp, rec = _producer()
    wp.produce("journeys", b"j", b"k", 0)
    asyncio.run(wp.flush())
    sent = [r for d in rec.deliveries for r in d]
    assert sent == [("journeys", b"k")]
