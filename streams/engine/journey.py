"""Per-customer journeys and pain-point detection: the pure heart of touchpath.

A customer's state (:class:`CustomerState`) holds a bounded window of recent steps, the
open (and recently closed) journeys, rule bookkeeping and the ids already emitted.
:meth:`JourneyEngine.step` takes one identified event; :meth:`JourneyEngine.advance` moves the
stream clock (event time minus allowed lateness) and fires timers: absence rules, count
rules whose window became final, journey closes. Event time is always passed in; nothing
here reads a clock, does I/O, or imports Faust/Kafka/ClickHouse.

Order independence: every rule's result is a function of the *set* of events it has seen by
the time the clock passes them, so any arrival order within the allowed lateness gives the
same pain-point ids — threshold and sequence rules fire eagerly (sequence looks both ways),
absence and count rules are decided when the clock has passed their window.

Boundaries (pinned by tests/unit/test_engine.py): an event is late when ``ts < clock``, so
one exactly ``lateness`` behind the newest is still on time, and a time ``t`` is decided
only once ``clock > t``. Sequence and absence windows are inclusive
(``a.ts <= b.ts <= a.ts + within``); a count window ending at event ``e`` is
``(e.ts - within, e.ts]``; a journey closes when the inactivity gap is exceeded (an event
exactly ``gap`` after the last one continues it).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import orjson

from streams.engine.care import CareEngine, CareState
from streams.engine.ids import journey_id as make_journey_id
from streams.engine.ids import pain_point_id
from streams.engine.rules import Rule, RuleSet
from streams.engine.score import ScoreWeights, journey_score, pain_penalty, survey_delta
from streams.engine.timefmt import iso as _iso

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

#: Rule sides, in the order of their bits (rule i, side k: bit ``4 * i + k``).
_SIDES = ("match", "first", "then", "missing")
#: (channel, type) pairs whose candidate predicates are remembered per engine
_PAIR_CACHE = 4096
_TS = attrgetter("ts")
_INF = float("inf")
_NINF = float("-inf")

#: Set on an event re-published by ``touchpath replay``: its care is recorded, not delivered.
REPLAY_FLAG = "_replay"

#: Events that reach a goal and complete the journey.
GOAL_TYPES = {("web", "purchase"), ("store", "purchase"), ("web", "trial_converted")}


def is_goal(ev: Event) -> bool:
    """Purchase, trial converted, or a contact that ended resolved."""
    ch, ty = ev["channel"], ev["type"]
    if (ch, ty) in GOAL_TYPES:
        return True
    return ev.get("resolved") is True and ty in (
        "call_ended",
        "complaint",
        "service_request",
        "return",
    )


_ISO: dict[float, str] = {}
_ISO_CACHE = 1 << 16


def iso(ts: float) -> str:
    """Event time (epoch seconds) as ISO 8601 UTC with milliseconds (memoized: a journey's
    start and end are formatted on every update)."""
    s = _ISO.get(ts)
    if s is None:
        if len(_ISO) >= _ISO_CACHE:
            _ISO.clear()
        s = _ISO[ts] = _iso(ts)
    return s


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tunables of the journey engine (defaults from docs/design.md)."""

    lateness_seconds: float = 24 * 3600.0
    inactivity_gap_seconds: float = 72 * 3600.0
    max_steps: int = 500
    max_journeys: int = 8
    weights: ScoreWeights = field(default_factory=ScoreWeights)


class Step:
    """One touchpoint in a customer's window."""

    __slots__ = ("channel", "ev", "event_id", "jid", "m", "ts", "type")

    def __init__(self, ts: float, ev: Event, jid: str = "", m: int = -1) -> None:
        self.ts = ts
        #: the event itself; None once persisted (a restored step keeps what rules need)
        self.ev: Event | None = ev
        self.event_id: str = ev["event_id"]
        self.channel: str = ev["channel"]
        self.type: str = ev["type"]
        self.jid = jid
        #: which rule sides the event matches, as bits (see JourneyEngine); -1: not known
        self.m = m

    @classmethod
    def restore(cls, ts: float, event_id: str, channel: str, type_: str, jid: str, m: int) -> Step:
        """A step from its persisted form: no event, its rule bits instead."""
        s = cls.__new__(cls)
        s.ts, s.ev, s.event_id, s.channel, s.type, s.jid, s.m = (
            ts, None, event_id, channel, type_, jid, m,
        )  # fmt: skip
        return s

    def to_json(self) -> list[Any]:
        return [self.ts, self.event_id, self.channel, self.type, self.jid, self.m]

    @classmethod
    def from_json(cls, d: list[Any]) -> Step:
        if len(d) == 3:  # before slim steps: [ts, event, jid]; bits computed on adoption
            return cls(d[0], d[1], d[2])
        return cls.restore(*d)

    def sort_key(self) -> tuple[float, str]:
        return (self.ts, self.event_id)


class Journey:
    """A customer's journey: first contact until a goal or an inactivity gap."""

    __slots__ = (
        "channels",
        "end",
        "feedback",
        "jid",
        "outcome",
        "penalty",
        "pp",
        "start",
        "steps",
        "version",
    )

    def __init__(self, jid: str, ts: float) -> None:
        self.jid = jid
        self.start = ts
        self.end = ts
        self.channels: list[str] = []
        self.steps = 0
        self.outcome = "open"
        self.pp: list[str] = []
        self.penalty = 0.0
        self.feedback = 0.0
        self.version = 0

    def to_json(self) -> list[Any]:
        return [
            self.jid,
            self.start,
            self.end,
            self.channels,
            self.steps,
            self.outcome,
            self.pp,
            self.penalty,
            self.feedback,
            self.version,
        ]

    @classmethod
    def from_json(cls, d: list[Any]) -> Journey:
        j = cls(d[0], d[1])
        (
            _,
            j.start,
            j.end,
            j.channels,
            j.steps,
            j.outcome,
            j.pp,
            j.penalty,
            j.feedback,
            j.version,
        ) = d
        return j


@dataclass(slots=True)
class CustomerState:
    """Everything the engine remembers about one customer (bounded)."""

    customer_id: str
    profile: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    seen: dict[str, float] = field(default_factory=dict)
    fired: dict[str, float] = field(default_factory=dict)
    count_reset: dict[str, float] = field(default_factory=dict)
    #: absence timers: (deadline, rule_id, anchor_event_id, anchor_ts)
    pending: list[tuple[float, str, str, float]] = field(default_factory=list)
    journeys: list[Journey] = field(default_factory=list)
    max_ts: float = float("-inf")
    late: int = 0
    #: earliest stream-clock time at which `advance` has work (inf: nothing scheduled)
    due: float = float("inf")
    #: count windows are decided for the steps before this clock
    counted_to: float = float("-inf")
    #: care guards and schedules (caps, cooldowns, opt-outs, held actions, sequences)
    care: CareState = field(default_factory=CareState)
    #: pain points waiting for care: [detected ts, pain_point_id, pain point], sorted
    care_queue: list[list[Any]] = field(default_factory=list)
    #: the latest event came from a replay: care decided now is not for delivery
    replay: bool = False
    #: events received but not applied yet: [ts, event], sorted by (ts, event_id); the
    #: journey stage applies them in event-time order once the watermark has passed them
    buffer: list[list[Any]] = field(default_factory=list)
    #: fingerprint of the rules the steps' bits were computed for (see JourneyEngine)
    rules_fp: str = ""
    #: the engine whose rule bits the steps carry (not persisted, not part of equality)
    owner: Any = field(default=None, compare=False, repr=False)
    #: every rule bit a step has had since then (a superset of the current steps' bits)
    bits: int = field(default=0, compare=False, repr=False)

    @property
    def tier(self) -> str:
        return self.profile.get("tier") or "C"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able form, for Faust changelogs."""
        return {
            "c": self.customer_id,
            "p": self.profile,
            # Steps keep their rule bits, not their events: a state is read and written
            # back on every batch that touches it, and is most of the worker's memory.
            "s": [s.to_json() for s in self.steps],
            "rf": self.rules_fp,
            "seen": self.seen,
            "f": self.fired,
            "cr": self.count_reset,
            "pe": self.pending,
            "j": [j.to_json() for j in self.journeys],
            "m": self.max_ts if self.max_ts != float("-inf") else None,
            "l": self.late,
            "d": self.due if self.due != float("inf") else None,
            "ct": self.counted_to if self.counted_to != float("-inf") else None,
            "care": self.care.to_json(),
            "cq": self.care_queue,
            "r": self.replay,
            "b": self.buffer,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CustomerState:
        return cls(
            customer_id=d["c"],
            profile=d.get("p") or {},
            steps=[Step.from_json(s) for s in d.get("s", ())],
            rules_fp=d.get("rf", ""),
            seen=d.get("seen") or {},
            fired=d.get("f") or {},
            count_reset=d.get("cr") or {},
            pending=[tuple(p) for p in d.get("pe", [])],  # type: ignore[misc]
            journeys=[Journey.from_json(j) for j in d.get("j", [])],
            max_ts=d["m"] if d.get("m") is not None else float("-inf"),
            late=d.get("l", 0),
            due=d["d"] if d.get("d") is not None else float("inf"),
            counted_to=d["ct"] if d.get("ct") is not None else float("-inf"),
            care=CareState.from_json(d["care"]) if d.get("care") else CareState(),
            care_queue=[list(q) for q in d.get("cq", ())],
            replay=d.get("r", False),
            buffer=[list(b) for b in d.get("b", ())],
        )


@dataclass(slots=True)
class Outputs:
    """What a call to the engine produced."""

    pain_points: list[dict[str, Any]] = field(default_factory=list)
    journeys: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: care decisions (see :mod:`streams.engine.care`), in decision order
    care_actions: list[dict[str, Any]] = field(default_factory=list)
    late: int = 0
    duplicates: int = 0


class JourneyEngine:
    """Applies one rule set and configuration to customer states."""

    def __init__(
        self, rules: RuleSet, config: EngineConfig | None = None, care: CareEngine | None = None
    ) -> None:
        self.rules = rules
        self.cfg = config or EngineConfig()
        #: care policy; None: pain points only, no care decisions
        self.care = care
        self.threshold = [r for r in rules.rules if r.kind == "threshold"]
        self.sequence = [r for r in rules.rules if r.kind == "sequence"]
        self.absence = [r for r in rules.rules if r.kind == "absence"]
        self.count = [r for r in rules.rules if r.kind == "count"]
        self._by_id = {r.id: r for r in rules.rules}
        #: identifies the rules (and so the meaning of the rule bits) in persisted states
        self.fingerprint = hashlib.sha256(
            orjson.dumps([r.model_dump(mode="json") for r in rules.rules])
        ).hexdigest()[:16]
        windows = [r.within_seconds or 0.0 for r in rules.rules]
        # Steps must outlive every rule window and the lateness, and a journey's gap.
        self.horizon = max([*windows, self.cfg.inactivity_gap_seconds]) + self.cfg.lateness_seconds
        # Rule sides as bits: side k of rule i is bit 4i+k. Each step's bits are computed
        # once, calling only the predicates its (channel, type) can satisfy; every rule
        # check after that is a bit test.
        self._bits = {
            r.id: tuple(1 << (4 * i + k) for k in range(len(_SIDES)))
            for i, r in enumerate(rules.rules)
        }
        b = self._bits
        self._thr = tuple((r, b[r.id][0]) for r in self.threshold)
        self._thr_mask = sum(bit for _, bit in self._thr)
        self._seq = tuple(
            (r, r.within_seconds or 0.0, b[r.id][1], b[r.id][2]) for r in self.sequence
        )
        self._seq_mask = sum(f | t for _, _, f, t in self._seq)
        self._abs = tuple((r, r.within_seconds or 0.0, b[r.id][1]) for r in self.absence)
        self._abs_mask = sum(f for _, _, f in self._abs)
        self._cnt = tuple((r, b[r.id][0]) for r in self.count)
        self._cnt_mask = sum(bit for _, bit in self._cnt)
        self._all_preds = tuple(
            (b[r.id][k], r.side_predicate(side))
            for r in rules.rules
            for k, side in enumerate(_SIDES)
            if getattr(r, side) is not None
        )
        self._preds: dict[tuple[Any, Any], tuple[tuple[int, Predicate], ...]] = {}

    # --- rule bits -------------------------------------------------------------------------
    def _candidates(self, channel: Any, type_: Any) -> tuple[tuple[int, Predicate], ...]:
        """(bit, predicate) of the rule sides an event of this channel and type can match."""
        return tuple(
            (self._bits[r.id][k], r.side_predicate(side))
            for r in self.rules.rules
            for k, side in enumerate(_SIDES)
            if getattr(r, side) is not None and r.side_could_match(side, channel, type_)
        )

    def rule_bits(self, ev: Event) -> int:
        """The bits of the rule sides ``ev`` matches."""
        key = (ev["channel"], ev["type"])
        try:
            preds = self._preds[key]
        except KeyError:
            preds = self._candidates(*key)
            if len(self._preds) < _PAIR_CACHE:
                self._preds[key] = preds
        except TypeError:  # not hashable: no shortcut
            preds = self._all_preds
        m = 0
        for bit, fn in preds:
            if fn(ev):
                m |= bit
        return m

    def _adopt(self, state: CustomerState) -> None:
        """Give a state's steps this engine's rule bits (a state loaded from JSON, or last
        run by another engine).

        Bits persisted under the same rules are kept. Under other rules (a rule change
        deployed on a live worker) a step whose event is no longer kept matches nothing:
        the new rules apply to events from the change on.
        """
        rule_bits = self.rule_bits
        same = state.rules_fp == self.fingerprint
        bits = 0
        for s in state.steps:
            if s.ev is not None and (not same or s.m < 0):
                s.m = rule_bits(s.ev)
            elif not same:
                s.m = 0
            bits |= s.m
        state.bits = bits
        state.owner = self
        state.rules_fp = self.fingerprint

    # ---------------------------------------------------------------------------------------
    def step(self, state: CustomerState, ev: Event, ts: float, clock: float, out: Outputs) -> None:
        """Add one identified event at event time ``ts`` under stream clock ``clock``."""
        eid = ev["event_id"]
        if eid in state.seen:
            out.duplicates += 1
            return
        if ts < clock:
            # Later than the allowed lateness: landed (by ingest) and counted, not evaluated
            # — except an opt-out, which stops its channel however late it arrives.
            state.late += 1
            out.late += 1
            if self.care is not None and ev["type"] == "opt_out":
                self._care_event(state, ev, ts, out)
            return
        state.seen[eid] = ts
        if state.owner is not self:
            self._adopt(state)
        step = Step(ts, ev)
        step.m = m = self.rule_bits(ev)
        state.bits |= m
        journey = self._assign(state, step, out)
        steps = state.steps
        if not steps:
            steps.append(step)
        else:
            last = steps[-1]
            if ts > last.ts or (ts == last.ts and eid >= last.event_id):  # (ts, id) order
                steps.append(step)
            else:
                bisect.insort(steps, step, key=Step.sort_key)
        if ts > state.max_ts:
            state.max_ts = ts
        if ev["channel"] == "sms" and ev["type"] == "reply" and isinstance(ev.get("score"), int):
            journey.feedback += survey_delta(ev["score"], self.cfg.weights)
            self._touch(state, journey, out)
        care = self.care
        if care is not None:
            # before the rules: an opt-out must already hold for the care its rule triggers
            state.replay = bool(ev.get(REPLAY_FLAG))
            decisions = care.on_event(state.care, state.customer_id, state.profile, ev, ts)
            if decisions:
                self._emit_care(state, decisions, out)
        if m & (self._thr_mask | self._seq_mask):
            self._eager_rules(state, step, out)
        due = journey.end + self.cfg.inactivity_gap_seconds
        if m & self._abs_mask:
            for rule, within, fbit in self._abs:
                if m & fbit:
                    deadline = ts + within
                    state.pending.append((deadline, rule.id, eid, ts))
                    due = min(due, deadline)
        if m & self._cnt_mask:
            for _, bit in self._cnt:
                if ts < due and m & bit:
                    due = ts  # the count window is decided once the clock passes this event
        if care is not None:
            care_due = care.next_due(state.care)
            cq = state.care_queue
            if cq and (care_due is None or cq[0][0] < care_due):
                care_due = cq[0][0]
            if care_due is not None:
                due = min(due, care_due - self.cfg.lateness_seconds)
        if due < state.due:
            state.due = due
        if len(steps) > self.cfg.max_steps:
            self._bound(state)

    # --- care ------------------------------------------------------------------------------
    def _care_event(self, state: CustomerState, ev: Event, ts: float, out: Outputs) -> None:
        state.replay = bool(ev.get(REPLAY_FLAG))
        care = self.care
        assert care is not None
        decisions = care.on_event(state.care, state.customer_id, state.profile, ev, ts)
        self._emit_care(state, decisions, out)

    def _care_due(self, state: CustomerState) -> float | None:
        """Earliest event time at which care has work for this customer."""
        if self.care is None:
            return None
        due = self.care.next_due(state.care)
        if state.care_queue and (due is None or state.care_queue[0][0] < due):
            due = state.care_queue[0][0]
        return due

    def _care_advance(self, state: CustomerState, now: float, out: Outputs) -> None:
        """Decide care up to event time ``now`` (exclusive), in time order: each queued pain
        point after what fell due before it (held releases, sequence steps), so the result
        does not depend on how often this runs or in which order events arrived."""
        care = self.care
        assert care is not None
        cid, profile = state.customer_id, state.profile
        queue = state.care_queue
        while queue and queue[0][0] < now:
            t, _, pp = queue.pop(0)
            self._emit_care(state, care.advance(state.care, cid, profile, t), out)
            self._emit_care(state, care.on_pain_point(state.care, profile, pp), out)
        self._emit_care(state, care.advance(state.care, cid, profile, now), out)

    @staticmethod
    def _emit_care(state: CustomerState, decisions: list[dict[str, Any]], out: Outputs) -> None:
        if state.replay:
            for d in decisions:
                d["replay"] = True
        out.care_actions.extend(decisions)

    def advance(self, state: CustomerState, clock: float, out: Outputs) -> float | None:
        """Fire everything the stream clock ``clock`` has passed; returns the next due time.

        Time ``t`` is final only once ``clock > t``: an event at exactly the clock is still
        on time (:meth:`step` rejects ``ts < clock`` only), so a deadline, count window or
        journey gap ending at ``t`` is decided strictly after it. Called at ``clock == due``
        it does nothing yet and returns ``due`` again (callers re-arm just past the clock).
        """
        if state.owner is not self:
            self._adopt(state)
        if state.pending:
            due = [p for p in state.pending if p[0] < clock]
            if due:
                state.pending = [p for p in state.pending if p[0] >= clock]
                for p in sorted(due):
                    self._check_absence(state, p, out)
        if clock > state.counted_to:
            if state.bits & self._cnt_mask:
                for rule, bit in self._cnt:
                    self._finalize_count(state, rule, bit, clock, out)
            state.counted_to = clock
        gap = self.cfg.inactivity_gap_seconds
        for j in state.journeys:
            if j.outcome == "open" and j.end + gap < clock:
                j.outcome = "abandoned"
                self._touch(state, j, out)
        if self.care is not None:
            # Care runs on event time itself (the watermark), not the lateness-delayed clock:
            # a quiet-hours hold ends at 08:00, not 24 h after.
            self._care_advance(state, clock + self.cfg.lateness_seconds, out)
        self._prune(state, clock)
        nxt = self.next_due(state)
        state.due = float("inf") if nxt is None else nxt
        return nxt

    def next_due(self, state: CustomerState) -> float | None:
        """Earliest stream-clock time at which :meth:`advance` has something to do."""
        if state.owner is not self:
            self._adopt(state)
        due = _INF
        for p in state.pending:
            if p[0] < due:
                due = p[0]
        gap = self.cfg.inactivity_gap_seconds
        for j in state.journeys:
            if j.outcome == "open" and j.end + gap < due:
                due = j.end + gap
        steps = state.steps
        if steps:
            if state.bits & self._cnt_mask:
                first = bisect.bisect_left(steps, state.counted_to, key=_TS)
                for _, bit in self._cnt:
                    for i in range(first, len(steps)):
                        s = steps[i]
                        if s.m & bit:
                            if s.ts < due:
                                due = s.ts
                            break
            if steps[0].ts + self.horizon < due:
                due = steps[0].ts + self.horizon  # pruning
        care_due = self._care_due(state)
        if care_due is not None and care_due - self.cfg.lateness_seconds < due:
            due = care_due - self.cfg.lateness_seconds
        return None if due == _INF else due

    # --- journeys --------------------------------------------------------------------------
    def _assign(self, state: CustomerState, step: Step, out: Outputs) -> Journey:
        gap = self.cfg.inactivity_gap_seconds
        js = state.journeys
        target: Journey | None = None
        for j in reversed(js):
            if j.start <= step.ts:
                target = j
                break
        if target is None:
            if js and step.ts >= js[0].start - gap:
                target = js[0]
        elif (target.outcome == "completed" and step.ts > target.end) or step.ts > target.end + gap:
            if target.outcome == "open":
                target.outcome = "abandoned"
                self._touch(state, target, out)
            target = None
        if target is None:
            target = Journey(make_journey_id(state.customer_id, step.event_id), step.ts)
            bisect.insort(js, target, key=lambda j: j.start)
            if len(js) > self.cfg.max_journeys:
                self._drop_journey(state, keep=target)
        step.jid = target.jid
        if step.ts >= target.end:
            if not target.channels or target.channels[-1] != step.channel:
                target.channels.append(step.channel)
                if len(target.channels) > self.cfg.max_steps:
                    del target.channels[0]  # bounded: the most recent part of the path
            target.end = step.ts
        else:
            target.start = min(target.start, step.ts)
            target.channels = self._channels_of(state, target.jid, step)
        target.steps += 1
        if is_goal(step.ev):
            target.outcome = "completed"
        self._touch(state, target, out)
        return target

    def _drop_journey(self, state: CustomerState, keep: Journey) -> None:
        """Over ``max_journeys``: forget the oldest closed journey that no absence timer still
        points into (its pain point must land on it), else the oldest other one."""
        js = state.journeys
        waiting = self._waiting_journeys(state)
        others = [i for i, j in enumerate(js) if j is not keep]
        idle = [i for i in others if js[i].outcome != "open" and js[i].jid not in waiting]
        del js[(idle or others)[0]]

    @staticmethod
    def _waiting_journeys(state: CustomerState) -> set[str]:
        """Journeys holding the anchor of a pending absence timer."""
        if not state.pending:
            return set()
        anchors = {p[2] for p in state.pending}
        return {s.jid for s in state.steps if s.event_id in anchors}

    @staticmethod
    def _channels_of(state: CustomerState, jid: str, extra: Step) -> list[str]:
        steps = sorted([s for s in state.steps if s.jid == jid] + [extra], key=Step.sort_key)
        chans: list[str] = []
        for s in steps:
            if not chans or chans[-1] != s.channel:
                chans.append(s.channel)
        return chans

    def _touch(self, state: CustomerState, j: Journey, out: Outputs) -> None:
        j.version += 1
        out.journeys[j.jid] = {
            "journey_id": j.jid,
            "customer_id": state.customer_id,
            "tier": state.profile.get("tier") or "C",
            "started_at": _ISO.get(j.start) or iso(j.start),
            "ended_at": _ISO.get(j.end) or iso(j.end),
            "channels": list(j.channels),
            "steps": j.steps,
            "outcome": j.outcome,
            # most journeys have neither pain nor feedback: journey_score(0, 0) is 100.0
            "score": journey_score(j.penalty, j.feedback) if j.penalty or j.feedback else 100.0,
            "pain_point_ids": list(j.pp),
            "version": j.version,
        }

    def _journey(self, state: CustomerState, jid: str) -> Journey | None:
        for j in state.journeys:
            if j.jid == jid:
                return j
        return None

    # --- rules -----------------------------------------------------------------------------
    def _eager_rules(self, state: CustomerState, step: Step, out: Outputs) -> None:
        m, ts = step.m, step.ts
        if m & self._thr_mask:
            for rule, bit in self._thr:
                if m & bit:
                    self._fire(state, rule, step, [step], ts, out)
        if not m & self._seq_mask:
            return
        steps = state.steps
        for rule, within, fbit, tbit in self._seq:
            if m & tbit:
                # candidates a: ts - within <= a.ts <= ts (steps are sorted by time; the
                # second of margin keeps float rounding from skipping one the test takes)
                for i in range(bisect.bisect_left(steps, ts - within - 1.0, key=_TS), len(steps)):
                    a = steps[i]
                    if a.ts > ts:
                        break
                    if a is not step and ts - a.ts <= within and a.m & fbit:
                        self._fire(state, rule, a, [a, step], ts, out)
            if m & fbit:
                for i in range(bisect.bisect_left(steps, ts, key=_TS), len(steps)):
                    b = steps[i]
                    if b is step:
                        continue
                    if b.ts - ts > within:
                        break
                    if b.m & tbit:
                        self._fire(state, rule, step, [step, b], b.ts, out)
                        break

    def _check_absence(
        self, state: CustomerState, pending: tuple[float, str, str, float], out: Outputs
    ) -> None:
        deadline, rule_id, anchor_id, anchor_ts = pending
        rule = self._by_id.get(rule_id)
        if rule is None:
            return  # rule removed since the timer was set
        mbit = self._bits[rule_id][3]
        anchor = None
        for s in state.steps:
            if s.event_id == anchor_id:
                anchor = s
            elif anchor_ts <= s.ts <= deadline and s.m & mbit:
                return  # the awaited event came in time
        if anchor is not None:
            self._fire(state, rule, anchor, [anchor], deadline, out)

    def _finalize_count(
        self, state: CustomerState, rule: Rule, bit: int, clock: float, out: Outputs
    ) -> None:
        reset = state.count_reset.get(rule.id, _NINF)
        need, within = rule.min_count or 1, rule.within_seconds or 0.0
        steps = state.steps
        # steps at or before the last reset never count again (steps are sorted by time)
        if reset != _NINF:
            steps = steps[bisect.bisect_right(steps, reset, key=_TS) :]
        matching = [s for s in steps if s.m & bit]
        if not matching:
            return
        window: list[Step] = []
        for s in matching:
            if s.ts <= reset:
                continue
            if s.ts >= clock:
                break
            window.append(s)
            while window and window[0].ts <= s.ts - within:
                window.pop(0)
            if len(window) >= need:
                self._fire(state, rule, s, list(window), s.ts, out)
                reset = s.ts
                state.count_reset[rule.id] = reset
                window.clear()

    def _fire(
        self,
        state: CustomerState,
        rule: Rule,
        anchor: Step,
        evidence: list[Step],
        detected_ts: float,
        out: Outputs,
    ) -> None:
        ppid = pain_point_id(rule.id, state.customer_id, anchor.event_id)
        if ppid in state.fired:
            return
        state.fired[ppid] = anchor.ts
        channels: list[str] = []
        for s in evidence:
            if s.channel not in channels:
                channels.append(s.channel)
        journey = self._journey(state, anchor.jid)
        pp = {
            "pain_point_id": ppid,
            "rule_id": rule.id,
            "customer_id": state.customer_id,
            "journey_id": anchor.jid,
            "severity": rule.severity,
            "channels": channels,
            "anchor_event_id": anchor.event_id,
            "evidence_event_ids": [s.event_id for s in evidence],
            "detected_at": iso(detected_ts),
            "tier": state.tier,
        }
        out.pain_points.append(pp)
        if self.care is not None:
            # decided once the watermark passes it: every event up to then has arrived
            bisect.insort(state.care_queue, [detected_ts, ppid, pp], key=lambda q: q[:2])
        if journey is not None:
            journey.pp.append(ppid)
            if len(journey.pp) > self.cfg.max_steps:
                del journey.pp[0]  # bounded: the most recent ids (all are in pain_points)
            journey.penalty += pain_penalty(
                rule.severity, anchor.channel, state.tier, self.cfg.weights
            )
            self._touch(state, journey, out)

    # --- bounds ----------------------------------------------------------------------------
    def _bound(self, state: CustomerState) -> None:
        """Hard bound between clock advances: keep the newest ``max_steps`` steps, and forget
        what only the dropped steps needed, so a burst cannot grow the state either."""
        limit = self.cfg.max_steps
        steps = state.steps
        del steps[: len(steps) - limit]
        oldest = steps[0].ts if steps else float("inf")
        if len(state.seen) > 4 * limit:
            newest = sorted(state.seen.items(), key=lambda kv: kv[1])[-2 * limit :]
            state.seen = dict(newest)
        if len(state.fired) > 4 * limit:
            # an id whose anchor step is gone can never be raised again
            state.fired = {k: v for k, v in state.fired.items() if v >= oldest}
        if len(state.pending) > 2 * limit:
            # an absence timer whose anchor step is gone can never fire
            state.pending = [p for p in state.pending if p[3] >= oldest]

    def _prune(self, state: CustomerState, clock: float) -> None:
        cut_ts = clock - self.horizon  # keep_from
        steps = state.steps
        # Never drop a step a pending timer or an unfinished count window still needs.
        for p in state.pending:
            if p[3] < cut_ts:
                cut_ts = p[3]
        # steps are sorted by time: the ones before cut_ts are a prefix
        n = bisect.bisect_left(steps, cut_ts, key=_TS) if steps and steps[0].ts < cut_ts else 0
        over = len(steps) - self.cfg.max_steps
        if over > n:
            n = over
        if n > 0:
            del steps[:n]
        if n or len(state.seen) > self.cfg.max_steps * 2:
            # ids older than cut_ts belong to late events now: nothing can repeat them
            # (deleted in place: the order of the rest is kept, as a rebuilt dict keeps it)
            for d in (state.seen, state.fired):
                old = [k for k, v in d.items() if not v >= cut_ts]
                for k in old:
                    del d[k]
        gap = self.cfg.inactivity_gap_seconds
        lateness = self.cfg.lateness_seconds
        # Keep a closed journey while an absence timer points into it (trial_unused fires
        # 15 days on): its pain point and score penalty must land on it.
        js = state.journeys
        for j in js:
            if j.outcome != "open" and not j.end + gap + lateness > clock:
                break  # one may go
        else:
            return
        waiting = self._waiting_journeys(state)
        state.journeys = [
            j
            for j in js
            if j.outcome == "open" or j.jid in waiting or j.end + gap + lateness > clock
        ]
