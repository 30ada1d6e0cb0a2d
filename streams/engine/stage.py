"""The journey stage: per-partition stream clocks and timers around :class:`JourneyEngine`.

Customers are partitioned by the murmur2 of their key, exactly as the live topics are.
Each partition has its own stream clock (the largest event time it has seen, minus the
allowed lateness) and a timer heap of customers with work due (absence deadlines, count
windows, journey closes). The backtest keeps customer states in a dict; the live worker
loads them from its Faust table per batch and writes back the ones it touched — the same
code decides, so both give the same ids.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any

from streams.engine.journey import CustomerState, JourneyEngine, Outputs
from streams.partitioning import partition_for

Event = dict[str, Any]


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
    ) -> None:
        self.engine = engine
        self.partitions = partitions
        self.lateness = engine.cfg.lateness_seconds
        self._load = load
        self.states: dict[str, CustomerState] = {}
        self.touched: set[str] = set()
        self.clocks: dict[int, float] = {}
        self._timers: dict[int, list[tuple[float, str]]] = {}
        self._scheduled: dict[str, float] = {}

    def partition_of(self, customer_id: str) -> int:
        return partition_for(customer_key(customer_id), self.partitions)

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
        p = self.partition_of(customer_id)
        st = self.state(customer_id)
        self.engine.step(st, ev, ts, self.clocks.get(p, float("-inf")), out)
        self._schedule(p, customer_id, st.due)

    def advance(self, p: int, clock: float, out: Outputs) -> None:
        """Move partition ``p``'s stream clock to ``clock`` and fire due timers."""
        if clock <= self.clocks.get(p, float("-inf")):
            return
        self.clocks[p] = clock
        heap = self._timers.setdefault(p, [])
        while heap and heap[0][0] <= clock:
            due, cid = heapq.heappop(heap)
            if self._scheduled.get(cid) != due:
                continue  # superseded by an earlier timer
            del self._scheduled[cid]
            nxt = self.engine.advance(self.state(cid), clock, out)
            if nxt is not None:
                # never re-arm at or before the current clock: that would spin
                self._schedule(p, cid, max(nxt, clock + 1e-3))

    def _schedule(self, p: int, cid: str, due: float) -> None:
        if due < self._scheduled.get(cid, float("inf")):
            self._scheduled[cid] = due
            heapq.heappush(self._timers.setdefault(p, []), (due, cid))

    # --- live-mode housekeeping ------------------------------------------------------------
    def release(self) -> list[CustomerState]:
        """States touched since the last call (to persist); the cache is emptied."""
        out = [self.states[c] for c in self.touched if c in self.states]
        self.touched.clear()
        self.states.clear()
        return out

    def rebuild(self, p: int, states: Iterable[CustomerState]) -> None:
        """Restore partition ``p``'s timers from persisted states (after recovery).

        The clock restarts at -inf and catches up with the next watermark.
        """
        self._timers[p] = []
        for st in states:
            self._scheduled.pop(st.customer_id, None)
            if st.due != float("inf"):
                self._schedule(p, st.customer_id, st.due)
        self.clocks.pop(p, None)

    def forget(self, p: int) -> None:
        """Drop partition ``p`` (revoked from this worker)."""
        for _, cid in self._timers.pop(p, []):
            self._scheduled.pop(cid, None)
        self.clocks.pop(p, None)
