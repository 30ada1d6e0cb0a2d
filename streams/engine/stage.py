"""The journey stage: per-partition stream clocks and timers around :class:`JourneyEngine`.

Customers are partitioned by the murmur2 of their key, exactly as the live topics are.
Each partition has its own stream clock (its watermark minus the allowed lateness) and a
timer heap of customers with work due (absence deadlines, count windows, journey closes).

Events are applied in event-time order, not arrival order: a customer's events come through
different identity keys (web login, phone, loyalty card), hence different partitions, and
arrive interleaved differently in every run. Each event waits in its customer's buffer
(part of the persisted state) until the partition's watermark has passed it, and is then
applied in (time, event_id) order — so journeys, their ids and the care decided on them
are the same live, after a restart or rebalance, and in a backtest.

The backtest keeps customer states in a dict; the live worker loads them from its Faust
table and writes back the ones it touched after each batch, keeping the most recently used
ones decoded between batches (``keep``) — the same code decides, so both give the same ids.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable
from typing import Any

from streams.engine.journey import CustomerState, JourneyEngine, Outputs
from streams.partitioning import partition_for

Event = dict[str, Any]

#: Customers whose partition is remembered (murmur2 in Python costs several µs per key).
PARTITION_CACHE = 1 << 17
_INF = float("inf")
_NINF = float("-inf")


def customer_key(customer_id: str) -> bytes:
    """Kafka key of a customer on the journey stage (decides its partition)."""
    return f"customer_id:{customer_id}".encode()


class JourneyStage:
    """Steps identified events through the engine with per-partition clocks and timers."""

    def __init__(
        self,
        engine: JourneyEngine,
        partitions: int,
        load: Callable[[str], CustomerState],
        keep: int = 0,
    ) -> None:
        self.engine = engine
        #: states kept decoded between batches (live: saves decoding them per batch)
        self.keep = keep
        self.partitions = partitions
        self.lateness = engine.cfg.lateness_seconds
        self._load = load
        self.states: dict[str, CustomerState] = {}
        self.touched: set[str] = set()
        self.clocks: dict[int, float] = {}
        self._timers: dict[int, list[tuple[float, str]]] = {}
        self._scheduled: dict[str, float] = {}
        #: per partition: buffered events as (ts, event_id, customer_id), a heap
        self._waiting: dict[int, list[tuple[float, str, str]]] = {}
        self._parts: dict[str, int] = {}
        self._heaps: list[tuple[int, list[Any], list[Any]]] = []
        self._refresh()

    def _refresh(self) -> None:
        """Remember each partition's (waiting, timer) heaps for :meth:`advance_all`; called
        whenever a heap is replaced."""
        self._heaps = [
            (p, self._waiting.setdefault(p, []), self._timers.setdefault(p, []))
            for p in range(self.partitions)
        ]

    def partition_of(self, customer_id: str) -> int:
        p = self._parts.get(customer_id)
        if p is None:
            parts = self._parts
            if len(parts) >= PARTITION_CACHE:
                parts.clear()
            p = parts[customer_id] = partition_for(customer_key(customer_id), self.partitions)
        return p

    def state(self, customer_id: str) -> CustomerState:
        """The customer's state (loaded once, then cached until :meth:`release`)."""
        st = self.states.get(customer_id)
        if st is None:
            st = self.states[customer_id] = self._load(customer_id)
        self.touched.add(customer_id)
        return st

    # --- inputs ----------------------------------------------------------------------------
    def profile(self, customer_id: str, profile: dict[str, Any]) -> None:
        """Attach CRM attributes (tier, time zone, consents, birthday)."""
        self.state(customer_id).profile = {
            k: profile.get(k) for k in ("tier", "timezone", "consents", "birthday")
        }

    def step(self, customer_id: str, ev: Event, ts: float, out: Outputs) -> None:
        """One identified event, judged against its partition's current stream clock.

        The clock itself moves only through :meth:`advance`, driven by watermarks (live) or
        by the input's progress (backtest).
        """
        p = self._parts.get(customer_id)
        if p is None:
            p = self.partition_of(customer_id)
        st = self.states.get(customer_id)
        if st is None:
            st = self.states[customer_id] = self._load(customer_id)
        self.touched.add(customer_id)
        clock = self.clocks.get(p, _NINF)
        if ts < clock:  # late already: counted (and an opt-out honoured) by the engine now
            self.engine.step(st, ev, ts, clock, out)
            return
        eid = ev["event_id"]
        buf = st.buffer
        if not buf or (ts, eid) >= (buf[-1][0], buf[-1][1]["event_id"]):
            buf.append([ts, ev])
        else:
            bisect.insort(buf, [ts, ev], key=lambda b: (b[0], b[1]["event_id"]))
        heap = self._waiting.get(p)
        if heap is None:
            heap = self._waiting[p] = []
        heapq.heappush(heap, (ts, eid, customer_id))
        wm = clock + self.lateness
        if heap[0][0] < wm:
            self._release(p, wm, out)

    def _release(self, p: int, wm: float, out: Outputs) -> None:
        """Apply the buffered events of partition ``p`` before watermark ``wm``, in order.

        They were on time when they arrived, and are judged under the clock they arrived
        under (the caller moves the clock and fires timers only after this).
        """
        heap = self._waiting.get(p)
        if not heap:
            return
        clock = self.clocks.get(p, _NINF)
        step = self.engine.step
        states, touched, scheduled = self.states, self.touched, self._scheduled
        pop, push = heapq.heappop, heapq.heappush
        while heap and heap[0][0] < wm:
            ts, eid, cid = pop(heap)
            st = states.get(cid)
            if st is None:
                st = states[cid] = self._load(cid)
            touched.add(cid)
            buf = st.buffer
            if not buf or buf[0][1]["event_id"] != eid:
                continue  # already applied (a duplicate entry)
            ev = buf.pop(0)[1]
            step(st, ev, ts, clock, out)
            due = st.due
            if due < scheduled.get(cid, _INF):  # as _schedule
                scheduled[cid] = due
                timers = self._timers.get(p)
                if timers is None:
                    timers = self._timers[p] = []
                push(timers, (due, cid))

    def persist(
        self, out: Outputs, encode: Callable[[CustomerState], bytes], limit: int
    ) -> tuple[list[tuple[str, bytes]], int]:
        """Encode every state touched since the last call, for the table, and
        :meth:`release` them; returns ``(customer id, encoded state)`` pairs and how many
        events were applied early.

        A state whose encoding is over ``limit`` first applies, ahead of the watermark, its
        oldest buffered events until it fits (or one is left): the buffer waits for the
        slowest input, and a customer with many large events could outgrow what one
        changelog record may hold (Kafka's 1 MB by default). That costs the order guarantee
        for that customer only, where failing to write the state would stop the partition.
        Each state is encoded once unless it is over the limit.
        """
        early = 0
        encoded: dict[str, bytes] = {}
        for cid in self.touched:
            st = self.states.get(cid)
            if st is None:
                continue
            data = encode(st)
            if len(data) > limit and len(st.buffer) > 1:
                p = self.partition_of(cid)
                clock = self.clocks.get(p, _NINF)
                while len(st.buffer) > 1 and len(data) > limit:
                    ts, ev = st.buffer.pop(0)  # its heap entry is skipped when it comes up
                    self.engine.step(st, ev, ts, clock, out)
                    self._schedule(p, cid, st.due)
                    early += 1
                    data = encode(st)
            encoded[cid] = data
        return [(st.customer_id, encoded[st.customer_id]) for st in self.release()], early

    def flush(self, out: Outputs) -> None:
        """Apply every buffered event (end of a backtest's input: nothing more can come)."""
        for p in list(self._waiting):
            self._release(p, float("inf"), out)

    def advance(self, p: int, clock: float, out: Outputs) -> None:
        """Move partition ``p``'s stream clock to ``clock`` and fire due timers."""
        if clock <= self.clocks.get(p, _NINF):
            return
        wm = clock + self.lateness
        waiting = self._waiting.get(p)
        if waiting and waiting[0][0] < wm:
            self._release(p, wm, out)  # first: timers must see these events
        self.clocks[p] = clock
        heap = self._timers.get(p)
        if heap and heap[0][0] <= clock:
            self._fire(p, heap, clock, out)

    def advance_all(self, clock: float, out: Outputs) -> None:
        """:meth:`advance` every partition, in order, to the same ``clock`` (the backtest's
        one stream clock); cheap when a partition has nothing waiting or due."""
        clocks = self.clocks
        wm = clock + self.lateness
        for p, waiting, heap in self._heaps:
            if clock > clocks.get(p, _NINF):
                if waiting and waiting[0][0] < wm:
                    self._release(p, wm, out)
                clocks[p] = clock
                if heap and heap[0][0] <= clock:
                    self._fire(p, heap, clock, out)

    def _fire(self, p: int, heap: list[tuple[float, str]], clock: float, out: Outputs) -> None:
        """Fire partition ``p``'s timers due at ``clock``."""
        scheduled, states, touched = self._scheduled, self.states, self.touched
        advance = self.engine.advance
        pop, push = heapq.heappop, heapq.heappush
        while heap and heap[0][0] <= clock:
            due, cid = pop(heap)
            if scheduled.get(cid) != due:
                continue  # superseded by an earlier timer
            del scheduled[cid]
            st = states.get(cid)  # as self.state(cid)
            if st is None:
                st = states[cid] = self._load(cid)
            touched.add(cid)
            nxt = advance(st, clock, out)
            if nxt is not None:
                # never re-arm at or before the current clock: that would spin
                nxt = max(nxt, clock + 1e-3)
                if nxt < scheduled.get(cid, _INF):  # as _schedule (heap is p's timer heap)
                    scheduled[cid] = nxt
                    push(heap, (nxt, cid))

    def waiting(self, p: int) -> int:
        """Entries in partition ``p``'s reorder buffer (events the watermark has not passed)."""
        return len(self._waiting.get(p, ()))

    def _schedule(self, p: int, cid: str, due: float) -> None:
        if due < self._scheduled.get(cid, _INF):
            self._scheduled[cid] = due
            heapq.heappush(self._timers.setdefault(p, []), (due, cid))

    # --- live-mode housekeeping ------------------------------------------------------------
    def release(self) -> list[CustomerState]:
        """States touched since the last call (to persist). Up to ``keep`` of the most
        recently touched stay decoded for the next batches; the rest are dropped."""
        states = self.states
        out = [states[c] for c in self.touched if c in states]
        self.touched.clear()
        if len(states) <= self.keep:
            for st in out:  # most recently used last: re-insert
                del states[st.customer_id]
                states[st.customer_id] = st
        else:
            kept = {st.customer_id: st for st in out[-self.keep :]} if self.keep else {}
            states.clear()
            states.update(kept)
        return out

    def invalidate(self) -> None:
        """Drop every decoded state: a batch failed after changing some of them, so only
        the persisted ones can be trusted."""
        self.states.clear()
        self.touched.clear()

    def rebuild(self, p: int, states: Iterable[CustomerState]) -> None:
        """Restore partition ``p``'s timers from persisted states (after recovery).

        The clock restarts at -inf and catches up with the next watermark.
        """
        self._drop_cached(p)
        self._timers[p] = []
        self._waiting[p] = []
        for st in states:
            self._scheduled.pop(st.customer_id, None)
            if st.due != float("inf"):
                self._schedule(p, st.customer_id, st.due)
            for ts, ev in st.buffer:
                self._waiting[p].append((ts, ev["event_id"], st.customer_id))
        heapq.heapify(self._waiting[p])
        self.clocks.pop(p, None)
        self._refresh()

    def _drop_cached(self, p: int) -> None:
        for cid in [c for c in self.states if self.partition_of(c) == p]:
            del self.states[cid]

    def forget(self, p: int) -> None:
        """Drop partition ``p`` (revoked from this worker)."""
        self._drop_cached(p)
        for _, cid in self._timers.pop(p, []):
            self._scheduled.pop(cid, None)
        self._waiting.pop(p, None)
        self.clocks.pop(p, None)
        self._refresh()
