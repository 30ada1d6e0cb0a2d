"""Identity resolution: which customer an event belongs to.

The identity key of an event is its strongest identifier (customer_id > loyalty_id >
email_hash > phone_hash > anonymous_id). Events carrying two identifiers link them
(login: anonymous_id + customer_id; authenticated call: phone_hash + customer_id); the CRM
feed links customer_id to phone/email/loyalty. Events whose identifiers are not linked yet
are held per identity key — bounded in count and event-time age — and released, in event
time order, when a link names their customer (retroactive merge). Pure: no clock, no I/O.

State is kept per identity key (:class:`KeyState`), so the live worker can shard it by key
exactly as the backtest keeps it in one dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.touchpoint import IDENTIFIER_STRENGTH

Event = dict[str, Any]

#: Identifier kinds that can be linked to a customer (everything but customer_id itself).
LINKABLE = IDENTIFIER_STRENGTH[1:]
assert IDENTIFIER_STRENGTH[0] == "customer_id"


def identity_keys(identifiers: dict[str, Any]) -> list[str]:
    """All ``kind:value`` keys of an event, strongest first."""
    return [f"{k}:{identifiers[k]}" for k in IDENTIFIER_STRENGTH if identifiers.get(k)]


def customer_of_key(key: str) -> str | None:
    """The customer id when ``key`` is itself a customer key."""
    return key[12:] if key.startswith("customer_id:") else None


@dataclass(slots=True)
class KeyState:
    """What one identity key knows: its customer (once linked) and the events it holds."""

    customer_id: str | None = None
    held: list[tuple[float, Event]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"c": self.customer_id, "h": self.held}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KeyState:
        return cls(d.get("c"), [tuple(x) for x in d.get("h", [])])  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class IdentityLimits:
    """Bounds of the anonymous buffer, per identity key."""

    max_held: int = 200
    max_age_seconds: float = 7 * 86400.0


@dataclass(slots=True)
class Resolved:
    """An event attributed to a customer (``late_merge`` when released from the buffer)."""

    customer_id: str
    ts: float
    event: Event
    late_merge: bool = False


@dataclass(slots=True)
class Links:
    """Links learned from one event or profile: ``keys`` belong to ``customer_id``."""

    customer_id: str
    keys: list[str]


@dataclass(slots=True)
class IdentityOutput:
    resolved: list[Resolved] = field(default_factory=list)
    links: list[Links] = field(default_factory=list)
    expired: list[Event] = field(default_factory=list)


def observe_event(
    state: KeyState, key: str, ts: float, event: Event, limits: IdentityLimits
) -> IdentityOutput:
    """Process one event whose identity key is ``key`` (state is that key's state)."""
    out = IdentityOutput()
    known = resolve_event(state, key, event)
    if known is not None:
        customer, weaker = known
        out.resolved.append(Resolved(customer, ts, event))
        if weaker:
            out.links.append(Links(customer, weaker))
        return out
    state.held.append((ts, event))
    state.held.sort(key=lambda x: (x[0], x[1]["event_id"]))
    _enforce_bounds(state, ts, limits, out)
    return out


def resolve_event(state: KeyState, key: str, event: Event) -> tuple[str, list[str]] | None:
    """The customer of an event whose identity key is ``key`` (state is that key's state)
    and the event's other linkable keys; None while the key is not linked to a customer.

    What :func:`observe_event` does with an identified event, without its allocations (the
    backtest's hot path)."""
    customer = (key[12:] if key.startswith("customer_id:") else None) or state.customer_id
    if customer is None:
        return None
    # the event's other keys (never a customer key: those are not linkable)
    ids = event.get("identifiers", {})
    keys = [f"{n}:{v}" for n in LINKABLE if (v := ids.get(n))]
    return customer, [k for k in keys if k != key]


def apply_link(state: KeyState, customer_id: str) -> IdentityOutput:
    """A link says this key belongs to ``customer_id``: release what the key held."""
    out = IdentityOutput()
    if state.customer_id == customer_id and not state.held:
        return out
    state.customer_id = customer_id
    out.resolved = [Resolved(customer_id, ts, ev, late_merge=True) for ts, ev in state.held]
    state.held.clear()
    return out


def expire(state: KeyState, clock: float, limits: IdentityLimits) -> IdentityOutput:
    """Release held events older than the age bound as never-identified."""
    out = IdentityOutput()
    _enforce_bounds(state, clock, limits, out)
    return out


def _enforce_bounds(
    state: KeyState, now_ts: float, limits: IdentityLimits, out: IdentityOutput
) -> None:
    cutoff = now_ts - limits.max_age_seconds
    held = state.held
    n_old = 0
    while n_old < len(held) and held[n_old][0] < cutoff:
        n_old += 1
    over = max(0, len(held) - n_old - limits.max_held)
    drop = n_old + over
    if drop:
        out.expired.extend(ev for _, ev in held[:drop])
        del held[:drop]


def profile_links(profile: dict[str, Any]) -> Links | None:
    """Links from a CRM profile: customer_id ↔ loyalty_id / email_hash / phone_hash."""
    keys = [
        f"{k}:{profile[k]}" for k in ("loyalty_id", "email_hash", "phone_hash") if profile.get(k)
    ]
    return Links(profile["customer_id"], keys) if keys else None
