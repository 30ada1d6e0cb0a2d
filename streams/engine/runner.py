"""Run the whole engine over a stream in-process: identity, journeys, rules, timers.

This is what ``touchpath backtest`` (and replay's offline mode) runs. It keeps the same
per-partition stream clocks the live worker keeps (customers are partitioned by the same
murmur2 key), so a log gives the same pain-point ids here as through Kafka. Pure: event
time comes from the events; nothing reads a clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.engine.care import CareEngine
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
from streams.engine.stage import JourneyStage

Event = dict[str, Any]


@dataclass
class RunStats:
    events: int = 0
    duplicates: int = 0
    late: int = 0
    held_expired: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)


class Runner:
    """Identity + journey stage over a whole log, in-process.

    The stream clock is the largest event time seen so far minus the allowed lateness —
    what the live worker's watermarks converge to on time-ordered input — and is the same
    for every partition, as the live low watermark is.
    """

    def __init__(
        self,
        rules: RuleSet,
        config: EngineConfig | None = None,
        *,
        identity: IdentityLimits | None = None,
        partitions: int = 4,
        care: CareEngine | None = None,
    ) -> None:
        self.engine = JourneyEngine(rules, config, care)
        self.cfg = self.engine.cfg
        self.identity_limits = identity or IdentityLimits()
        self.partitions = partitions
        self.keys: dict[str, KeyState] = {}
        self.customers: dict[str, CustomerState] = {}
        self.stage = JourneyStage(self.engine, partitions, self._customer)
        self.clock = float("-inf")
        self.out = Outputs()
        self.stats = RunStats()
        self._held_at_finish = 0

    # --- inputs ----------------------------------------------------------------------------
    def load_profile(self, profile: dict[str, Any]) -> None:
        """A CRM profile (PII already hashed): links its identifiers, sets tier etc."""
        cid = profile["customer_id"]
        self.stage.profile(cid, profile)
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
        self._advance(ts - self.cfg.lateness_seconds)

    def finish(self, until: float | None = None) -> Outputs:
        """End of input: the clock stays where the events left it (or moves to ``until``)."""
        if until is not None:
            self._advance(until)
        # Still held (never identified) counts as expired; idempotent if called again.
        held = sum(len(ks.held) for ks in self.keys.values())
        self.stats.held_expired += held - self._held_at_finish
        self._held_at_finish = held
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
            before = self._mark()
            self.stage.step(r.customer_id, r.event, r.ts, self.out)
            self._count(before)

    def _advance(self, clock: float) -> None:
        if clock <= self.clock:
            return
        self.clock = clock
        before = self._mark()
        for p in range(self.partitions):
            self.stage.advance(p, clock, self.out)
        self._count(before)

    def _mark(self) -> tuple[int, int, int]:
        return (len(self.out.pain_points), self.out.late, self.out.duplicates)

    def _count(self, before: tuple[int, int, int]) -> None:
        n_pp, late, dup = before
        for pp in self.out.pain_points[n_pp:]:
            self.stats.by_rule[pp["rule_id"]] += 1
        self.stats.late += self.out.late - late
        self.stats.duplicates += self.out.duplicates - dup
