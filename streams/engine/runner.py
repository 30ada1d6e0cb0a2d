"""Run the whole engine over a stream in-process: identity, journeys, rules, timers.

This is what ``touchpath backtest`` (and replay's offline mode) runs. It keeps the same
per-partition stream clocks the live worker keeps (customers are partitioned by the same
murmur2 key), so a log gives the same pain-point ids here as through Kafka. Pure: event
time comes from the events; nothing reads a clock.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.engine.identity import (
    IdentityLimits,
    IdentityOutput,
    KeyState,
    apply_link,
    observe_event,
    profile_links,
)
from streams.engine.journey import CustomerState, EngineConfig, JourneyEngine, Outputs
from streams.engine.rules import RuleSet
from streams.partitioning import partition_for

Event = dict[str, Any]


def customer_key(customer_id: str) -> bytes:
    """Kafka key of a customer on the journey stage (also its partition)."""
    return f"customer_id:{customer_id}".encode()


@dataclass
class RunStats:
    events: int = 0
    duplicates: int = 0
    late: int = 0
    held_expired: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)


class Runner:
    """Identity + journey engine over many customers, with per-partition clocks."""

    def __init__(
        self,
        rules: RuleSet,
        config: EngineConfig | None = None,
        *,
        identity: IdentityLimits | None = None,
        partitions: int = 4,
    ) -> None:
        self.engine = JourneyEngine(rules, config)
        self.cfg = self.engine.cfg
        self.identity_limits = identity or IdentityLimits()
        self.partitions = partitions
        self.keys: dict[str, KeyState] = {}
        self.customers: dict[str, CustomerState] = {}
        self.clocks = [float("-inf")] * partitions
        self._timers: list[list[tuple[float, str]]] = [[] for _ in range(partitions)]
        self._scheduled: dict[str, float] = {}
        self.out = Outputs()
        self.stats = RunStats()

    # --- inputs ----------------------------------------------------------------------------
    def load_profile(self, profile: dict[str, Any]) -> None:
        """A CRM profile (PII already hashed): links its identifiers, sets tier etc."""
        cid = profile["customer_id"]
        self._customer(cid).profile = {
            k: profile.get(k) for k in ("tier", "timezone", "consents", "birthday")
        }
        links = profile_links(profile)
        if links is not None:
            for key in links.keys:
                self._resolved(apply_link(self._key(key), cid))

    def process(self, event: Event, ts: float, key: str) -> None:
        """One validated event at event time ``ts`` with identity key ``key``."""
        self.stats.events += 1
        io = observe_event(self._key(key), key, ts, event, self.identity_limits)
        for links in io.links:
            for k in links.keys:
                self._resolved(apply_link(self._key(k), links.customer_id))
        self._resolved(io)

    def finish(self, until: float | None = None) -> Outputs:
        """End of input: the clock stays where the events left it (or moves to ``until``)."""
        if until is not None:
            for p in range(self.partitions):
                self._advance(p, max(self.clocks[p], until))
        for ks in self.keys.values():
            if ks.held:
                self.stats.held_expired += len(ks.held)
        return self.out

    # --- internals -------------------------------------------------------------------------
    def _key(self, key: str) -> KeyState:
        ks = self.keys.get(key)
        if ks is None:
            ks = self.keys[key] = KeyState()
        return ks

    def _customer(self, cid: str) -> CustomerState:
        st = self.customers.get(cid)
        if st is None:
            st = self.customers[cid] = CustomerState(cid)
        return st

    def _resolved(self, io: IdentityOutput) -> None:
        self.stats.held_expired += len(io.expired)
        for r in sorted(io.resolved, key=lambda r: (r.ts, r.event["event_id"])):
            self._journey_step(r.customer_id, r.event, r.ts)

    def _journey_step(self, cid: str, ev: Event, ts: float) -> None:
        p = partition_for(customer_key(cid), self.partitions)
        clock = max(self.clocks[p], ts - self.cfg.lateness_seconds)
        st = self._customer(cid)
        before = (len(self.out.pain_points), self.out.late, self.out.duplicates)
        self.engine.step(st, ev, ts, self.clocks[p], self.out)
        self._count(before)
        self._schedule(p, cid, st.due)
        if clock > self.clocks[p]:
            self._advance(p, clock)

    def _schedule(self, p: int, cid: str, due: float) -> None:
        if due < self._scheduled.get(cid, float("inf")):
            self._scheduled[cid] = due
            heapq.heappush(self._timers[p], (due, cid))

    def _advance(self, p: int, clock: float) -> None:
        self.clocks[p] = clock
        heap = self._timers[p]
        while heap and heap[0][0] <= clock:
            due, cid = heapq.heappop(heap)
            if self._scheduled.get(cid) != due:
                continue  # superseded by an earlier timer
            del self._scheduled[cid]
            st = self.customers[cid]
            before = (len(self.out.pain_points), self.out.late, self.out.duplicates)
            nxt = self.engine.advance(st, clock, self.out)
            self._count(before)
            if nxt is not None:
                # Never re-arm at or before the current clock: that would spin.
                self._schedule(p, cid, max(nxt, clock + 1e-3))

    def _count(self, before: tuple[int, int, int]) -> None:
        n_pp, late, dup = before
        for pp in self.out.pain_points[n_pp:]:
            self.stats.by_rule[pp["rule_id"]] += 1
        self.stats.late += self.out.late - late
        self.stats.duplicates += self.out.duplicates - dup


def run_all(
    rules: RuleSet,
    profiles: Iterable[dict[str, Any]],
    events: Iterable[tuple[Event, float, str]],
    *,
    config: EngineConfig | None = None,
    partitions: int = 4,
    until: float | None = None,
) -> Runner:
    """Convenience: profiles first, then events, then finish. Returns the runner."""
    runner = Runner(rules, config, partitions=partitions)
    for p in profiles:
        runner.load_profile(p)
    for ev, ts, key in events:
        runner.process(ev, ts, key)
    runner.finish(until)
    return runner
