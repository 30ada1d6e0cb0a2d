"""A workaround for a message-loss bug of faust-streaming around rebalances.

Faust skips a message fetched before a rebalance (its ``generation_id`` is stale) or while
flow control is paused — and *acks* it (``Stream._py_aiter``: "We want to ack the
filtered out message"). Acked offsets are committed, so a partition that stays with this
worker across the rebalance commits past messages nobody processed: they are lost.
Measured here: two workers, one leaving and rejoining, lost ~5% of one worker's
micro-batches. touchpath therefore refuses such acks: the message is not marked done, the
offset is not committed past it, and after the rebalance the consumer seeks back to the
committed offset and delivers it again (at-least-once; every touchpath output is
idempotent). Upstream: faust-streaming PR #223 introduced the skip; issue #527 / #604
report the same loss for noack streams.

The same rebalance leaves a second hazard: with ``stream_wait_empty=False`` a micro-batch
taken before the rebalance is still handed to the agent after it, when its partitions may
already belong to another worker. Processing it there would write table state for keys
this worker no longer owns — a zombie write that can land in the changelog after the new
owner's and win on its next recovery. Stateful agents therefore drop such events
(:func:`current`): they are not acked, so their new owner processes them.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.transport.consumer import Consumer

log = logging.getLogger(__name__)

_original_ack = Consumer.ack
#: (tp, offset) of messages whose batch failed: never acked (see :func:`refuse`)
_refused: set[tuple[Any, int]] = set()


def refuse(events: list[Any]) -> None:
    """Never ack these events: their batch failed. ``take()``/``take_events()`` ack a
    batch in a ``finally``, even when processing it raised; a failed batch must stay
    uncommitted so that it is processed again after a restart."""
    _refused.update((e.message.tp, e.message.offset) for e in events)


def _ack_unless_stale(self: Any, message: Any) -> bool:
    if _refused and (message.tp, message.offset) in _refused:
        _refused.discard((message.tp, message.offset))
        return False
    app = self.app
    if message.generation_id != app.consumer_generation_id or not app.flow_control.is_active():
        return False  # fetched before the rebalance: it will be fetched and processed again
    return _original_ack(self, message)


def is_current(app: Any, event: Any) -> bool:
    """Whether ``event`` was fetched in the consumer's current generation."""
    return bool(event.message.generation_id == app.consumer_generation_id)


def current(app: Any, events: list[Any]) -> list[Any]:
    """The events of a micro-batch fetched since the last rebalance (see the module)."""
    gen = app.consumer_generation_id
    kept = [e for e in events if e.message.generation_id == gen]
    if len(kept) != len(events):
        log.info("dropped %d events fetched before a rebalance", len(events) - len(kept))
    return kept


def apply() -> None:
    """Install the workaround (idempotent)."""
    if Consumer.ack is not _ack_unless_stale:
        Consumer.ack = _ack_unless_stale  # type: ignore[method-assign]
        log.debug("faust consumer: stale-generation messages are no longer acked")
