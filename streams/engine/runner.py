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
    resolve_event,
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
        self._stats = RunStats()
        self._counted = 0  # pain points of ``out`` already in the stats
        self._held_at_finish = 0

    @property
    def stats(self) -> RunStats:
        """Run statistics (brought up to date with the outputs when read)."""
        st, out = self._stats, self.out
        st.late, st.duplicates = out.late, out.duplicates
        pps = out.pain_points
        if len(pps) > self._counted:
            by_rule = st.by_rule
            for i in range(self._counted, len(pps)):
                by_rule[pps[i]["rule_id"]] += 1
            self._counted = len(pps)
        return st

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
        self._stats.events += 1
        keys = self.keys
        ks = keys.get(key)
        if ks is None:
            ks = keys[key] = KeyState()
        known = resolve_event(ks, key, event)
        if known is None:  # held until a link names the customer (observe_event's rest)
            self._resolved(observe_event(ks, key, ts, event, self.identity_limits))
        else:
            cid, weaker = known
            for k in weaker:  # the links first: what they release comes before this event
                ks = keys.get(k)
                if ks is not None and ks.customer_id == cid and not ks.held:
                    continue  # linked already, nothing held: apply_link would do nothing
                self._resolved(apply_link(self._key(k), cid))
            self.stage.step(cid, event, ts, self.out)
        clock = ts - self.cfg.lateness_seconds
        if clock > self.clock:
            self.clock = clock
            self.stage.advance_all(clock, self.out)

    def finish(self, until: float | None = None) -> Outputs:
        """End of input: the clock stays where the events left it (or moves to ``until``)."""
        self.stage.flush(self.out)  # the end of the input: apply what still waits
        if until is not None:
            self._advance(until)
        # Still held (never identified) counts as expired; idempotent if called again.
        held = sum(len(ks.held) for ks in self.keys.values())
        self._stats.held_expired += held - self._held_at_finish
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
        if io.expired:
            self._stats.held_expired += len(io.expired)
        resolved = io.resolved
        if not resolved:
            return
        if len(resolved) > 1:
            resolved = sorted(resolved, key=lambda r: (r.ts, r.event["event_id"]))
        step, out = self.stage.step, self.out
        for r in resolved:
            step(r.customer_id, r.event, r.ts, out)

    def _advance(self, clock: float) -> None:
        if clock <= self.clock:
            return
        self.clock = clock
        self.stage.advance_all(clock, self.out)
