"""The replay loop against a fake producer: keys, headers, filters, limit, bad records,
interrupt + resume (at-least-once, no gaps), delivery failures, pacing on a fake clock."""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest

from replay.filters import EventFilter
from replay.publisher import (
    REPLAY_HEADER,
    REPLAY_ID_HEADER,
    Replayer,
    ReplayOptions,
    ReplaySummary,
    StopFlag,
    new_state,
)
from replay.sources import FileSet
from replay.state import ReplayState
from schemas.validation import Validator
from streams.simulator import SimConfig, SimResult, producer_key, simulate

NOW = datetime(2026, 4, 1, tzinfo=UTC)


@cache
def sim() -> SimResult:
    return simulate(SimConfig(customers=150, days=5, seed=11))


@pytest.fixture
def log(tmp_path: Path) -> Path:
    p = tmp_path / "events.jsonl.gz"
    p.write_bytes(gzip.compress(b"".join(r + b"\n" for r in sim().records)))
    return p


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeProducer:
    """Queues records; delivers them on poll/flush in reverse order (as records on other
    partitions may be); ``fail`` picks records to fail, ``lose_on_flush`` never delivers
    what is still queued at the end (a broker gone away)."""

    def __init__(
        self,
        clock: FakeClock | None = None,
        fail: Callable[[bytes], bool] | None = None,
        on_produce: Callable[[int], None] | None = None,
        lose_on_flush: bool = False,
    ) -> None:
        self.clock = clock
        self.fail = fail
        self.on_produce = on_produce
        self.lose_on_flush = lose_on_flush
        self.queue: list[tuple[Any, ...]] = []
        self.produced: list[tuple[Any, ...]] = []
        self.delivered: list[bytes] = []
        self.produced_at: list[float] = []

    def produce(self, topic: str, value: bytes, key: Any = None, **kw: Any) -> None:
        rec = (topic, value, key, kw.get("headers"), kw.get("on_delivery"))
        self.queue.append(rec)
        self.produced.append(rec)
        if self.clock is not None:
            self.produced_at.append(self.clock.t)
        if self.on_produce is not None:
            self.on_produce(len(self.produced))

    def _deliver(self) -> int:
        batch, self.queue = self.queue, []
        for _, value, _, _, cb in reversed(batch):
            err = "delivery failed" if self.fail and self.fail(value) else None
            if err is None:
                self.delivered.append(value)
            cb(err, None)
        return len(batch)

    def poll(self, timeout: float = 0) -> int:
        if self.clock is not None:
            self.clock.t += timeout
        # deliver all but the most recent few: deliveries lag behind production
        keep, self.queue = self.queue[-50:], self.queue[:-50]
        n = self._deliver()
        self.queue = keep
        return n

    def flush(self, timeout: float = 0) -> int:
        if self.lose_on_flush:
            return len(self.queue)
        self._deliver()
        return 0


def run(
    producer: FakeProducer,
    source: FileSet,
    state: ReplayState | None = None,
    state_file: Path | None = None,
    stop: StopFlag | None = None,
    clock: Callable[[], float] | None = None,
    **opts: Any,
) -> ReplaySummary:
    opts.setdefault("flush_timeout", 0.0)
    return Replayer(
        producer,
        source,
        ReplayOptions(topic="raw", **opts),
        validator=Validator("k"),
        state=state or new_state("k", "raw", [], {}),
        state_file=state_file,
        stop=stop,
        clock=clock or FakeClock(),
        now=NOW,
    ).run()


def event_ids(values: list[bytes]) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(orjson.loads(v)["event_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            out.append(f"bad:{hash(v)}")
    return out


def test_records_go_out_as_they_were_keyed_like_live_producers(log: Path) -> None:
    p = FakeProducer()
    s = run(p, FileSet([log]))
    records = sim().records
    assert [v for _, v, _, _, _ in p.produced] == records  # same bytes, same order
    assert [k for _, _, k, _, _ in p.produced] == [producer_key(r) for r in records]
    hdrs = {tuple(h) for _, _, _, h, _ in p.produced}
    assert hdrs == {((REPLAY_HEADER, b"1"), (REPLAY_ID_HEADER, s.run_id.encode()))}
    malformed = len(sim().malformed)
    assert (s.sent, s.filtered, sum(s.bad.values()), s.bad_sent) == (
        len(records),
        0,
        malformed,
        malformed,
    )
    assert s.complete and not s.interrupted
    assert s.bad_examples[0].startswith(f"{log}:")


def test_live_actions_marks_records_live(log: Path) -> None:
    p = FakeProducer()
    run(p, FileSet([log]), live_actions=True, limit=10)
    assert {dict(h)["touchpath-replay"] for _, _, _, h, _ in p.produced} == {b"live"}


def test_no_validate_counts_only_what_it_cannot_key(log: Path) -> None:
    p = FakeProducer()
    s = run(p, FileSet([log]), validate=False)
    assert s.sent == len(sim().records)
    assert 0 < sum(s.bad.values()) < len(sim().malformed)  # structural problems only


def test_filters_and_limit(log: Path) -> None:
    customer = next(
        r["identifiers"]["customer_id"]
        for r in map(orjson.loads, sim().records[:50])
        if r["channel"] == "web" and "customer_id" in r["identifiers"]
    )
    f = EventFilter(channels=frozenset({"web"}), customers=frozenset({customer}))
    p = FakeProducer()
    s = run(p, FileSet([log]), filter=f)
    sent = [orjson.loads(v) for _, v, _, _, _ in p.produced]
    assert sent and all(
        r["channel"] == "web" and r["identifiers"]["customer_id"] == customer for r in sent
    )
    assert s.sent + s.filtered == len(sim().records)
    p = FakeProducer()
    s = run(p, FileSet([log]), limit=25)
    assert (len(p.produced), s.sent, s.limit_reached, s.complete) == (25, 25, True, False)


def test_time_filter_and_unjudgeable_records(tmp_path: Path) -> None:
    lines = [
        b'{"event_id":"a","channel":"web","type":"login","occurred_at":"2026-03-01T09:00:00Z",'
        b'"identifiers":{"customer_id":"C1"}}',
        b'{"event_id":"b","channel":"web","type":"login","occurred_at":"2026-03-01T11:00:00Z",'
        b'"identifiers":{"customer_id":"C1"}}',
        b"garbage",  # a time filter cannot judge it: bad and not sent
        b'{"event_id":"c","channel":"web","type":"login","occurred_at":"2026-03-01T12:00:00",'
        b'"identifiers":{"customer_id":"C1"}}',  # naive time: cannot be placed either
    ]
    p = tmp_path / "t.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    f = EventFilter(start=datetime(2026, 3, 1, 10, tzinfo=UTC))
    prod = FakeProducer()
    s = run(prod, FileSet([p]), filter=f)
    assert event_ids([v for _, v, _, _, _ in prod.produced]) == ["b"]
    assert s.filtered == 3
    assert dict(s.bad) == {"invalid_json": 1, "naive_timestamp": 1}
    assert s.bad_sent == 0


def test_oversized_record_is_counted_not_sent(tmp_path: Path) -> None:
    p = tmp_path / "big.jsonl"
    big = b'{"event_id":"x","attributes":{"blob":"' + b"a" * 3000 + b'"}}'
    p.write_bytes(big + b"\n" + sim().records[0] + b"\n")
    prod = FakeProducer()
    s = run(prod, FileSet([p], max_bytes=2048), max_record_bytes=2048)
    assert [v for _, v, _, _, _ in prod.produced] == [sim().records[0]]
    assert dict(s.bad) == {"too_large": 1} and s.bad_examples[0].startswith(f"{p}:1:")


def test_interrupt_then_resume_sends_everything_at_least_once(log: Path, tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    stop = StopFlag()
    total = len(sim().records)
    first = FakeProducer(on_produce=lambda n: stop() if n == total // 2 else None)
    first.lose_on_flush = True  # what was in flight at Ctrl-C is never acknowledged
    s1 = run(first, FileSet([log]), state_file=state_file, stop=stop, epoch_records=200)
    assert s1.interrupted and not s1.complete
    saved = ReplayState.load(state_file)
    assert saved is not None and not saved.complete
    assert saved.counts["sent"] <= len(first.delivered)  # only what was acknowledged

    second = FakeProducer()
    s2 = run(second, FileSet([log]), state=saved, state_file=state_file, epoch_records=200)
    assert s2.complete and s2.resumed_from and s2.run_id == s1.run_id
    assert s2.totals["sent"] == total  # whole-replay figures carry over
    assert s2.totals["bad"] == len(sim().malformed)

    sent = event_ids(first.delivered) + event_ids([v for _, v, _, _, _ in second.produced])
    assert set(sent) == set(event_ids(sim().records))
    dupes = sum(n - 1 for n in Counter(sent).values())
    assert 0 < dupes <= 200 + 1024  # at most the epochs in flight (+ one housekeeping step)
    assert ReplayState.load(state_file).complete  # type: ignore[union-attr]


def test_delivery_failure_stops_before_the_failed_record(log: Path, tmp_path: Path) -> None:
    index = len(sim().records) // 2
    target = sim().records[index]
    state_file = tmp_path / "state.json"
    p = FakeProducer(fail=lambda v: v == target)
    s = run(p, FileSet([log]), state_file=state_file, epoch_records=100)
    assert s.failures == ["delivery failed"] and not s.complete
    line = ReplayState.load(state_file).position[1]  # type: ignore[union-attr]
    assert line <= index  # resume re-sends the failed record (line index + 1)


def test_pacing_follows_event_time_on_a_fake_clock(tmp_path: Path) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    gaps = [0, 1, 1, 30, 120, 121, 600, 3600]
    lines = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "channel": "web",
                "type": "page_view",
                "occurred_at": datetime.fromtimestamp(t0 + g, UTC).isoformat(),
                "identifiers": {"customer_id": "C1"},
            }
        )
        for i, g in enumerate(gaps)
    ]
    p = tmp_path / "paced.jsonl"
    p.write_bytes(b"\n".join(lines) + b"\n")
    clock = FakeClock()
    prod = FakeProducer(clock=clock)
    s = run(prod, FileSet([p]), clock=clock, speed=60.0)
    assert s.sent == len(gaps)
    for at, g in zip(prod.produced_at, gaps, strict=True):
        assert at == pytest.approx(g / 60, abs=0.06)  # poll steps of <= 50 ms
    assert s.elapsed == pytest.approx(60.0, abs=0.1)


def test_interrupt_while_pacing_counts_each_record_once(tmp_path: Path) -> None:
    # every record is bad (unknown type) but keyed and timed: the one being waited for
    # when Ctrl-C comes must be counted by the resumed run, not by both
    t0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    n = 300
    p = tmp_path / "bad.jsonl"
    p.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "channel": "web",
                    "type": "bogus",
                    "occurred_at": datetime.fromtimestamp(t0 + i * 60, UTC).isoformat(),
                    "identifiers": {"customer_id": "C1"},
                }
            )
            + b"\n"
            for i in range(n)
        )
    )
    clock = FakeClock()
    stop = StopFlag()
    state_file = tmp_path / "state.json"

    class StopsLater(FakeProducer):
        def poll(self, timeout: float = 0) -> int:
            if clock.t > 2.0 and not stop.requested:
                stop()  # Ctrl-C while waiting for a record's due time
            return super().poll(timeout)

    s1 = run(
        StopsLater(clock=clock),
        FileSet([p]),
        state_file=state_file,
        stop=stop,
        clock=clock,
        speed=n * 60 / 5,
    )
    assert s1.interrupted and 0 < s1.sent < n
    s2 = run(FakeProducer(), FileSet([p]), state=ReplayState.load(state_file))
    assert s2.complete
    assert s2.totals == {"sent": n, "filtered": 0, "bad": n, "bad_sent": n}
