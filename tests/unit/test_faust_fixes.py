"""The ack guards of streams/faust_fixes.py, on Faust's real Consumer.ack path.

A rebalance or a failed batch cannot be staged on cue on a real broker, so the consumer
is a stand-in carrying what ``ack`` reads: the app's generation and flow control.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

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
