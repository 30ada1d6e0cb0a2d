"""Which records a replay sends (event time range, channels, customers) and how fast.

Filters look at the raw record (a parsed JSON object), not at a validated touchpoint:
replay sends records as they were, and only parses what a filter or the Kafka key needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_SPEED = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x?\s*$", re.IGNORECASE)


def parse_speed(text: str) -> float | None:
    """``"max"`` → None (as fast as possible); ``"60x"`` / ``"60"`` / ``"0.5x"`` → multiple
    of real time. Raises ValueError for anything else."""
    if text.strip().lower() == "max":
        return None
    m = _SPEED.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"speed must be 'max' or a positive multiple like '60x', not {text!r}")
    return float(m.group(1))


def event_time(obj: dict[str, Any]) -> float | None:
    """``occurred_at`` of a raw record as epoch seconds; None if absent, unparsable or naive
    (a naive time means nothing without a zone; the validator rejects it too)."""
    value = obj.get("occurred_at")
    if type(value) is not str:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.timestamp()


@dataclass(frozen=True)
class EventFilter:
    """``start <= occurred_at < end``, channel in ``channels``, ``identifiers.customer_id``
    in ``customers``; an empty part does not filter."""

    start: datetime | None = None
    end: datetime | None = None
    channels: frozenset[str] = frozenset()
    customers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            t = getattr(self, name)
            if t is not None and t.tzinfo is None:
                raise ValueError(f"{name} must carry a time zone")
        if self.start and self.end and self.end <= self.start:
            raise ValueError("the end of the time range must be after its start")

    @property
    def active(self) -> bool:
        return bool(self.start or self.end or self.channels or self.customers)

    @property
    def needs_time(self) -> bool:
        return self.start is not None or self.end is not None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (part of a replay's identity, so a resume keeps the same filter)."""
        return {
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
            "channels": sorted(self.channels),
            "customers": sorted(self.customers),
        }

    def compile(self) -> _Compiled:
        return _Compiled(
            self.start.timestamp() if self.start else None,
            self.end.timestamp() if self.end else None,
            self.channels or None,
            self.customers or None,
        )


class _Compiled:
    """The filter in the form the per-record loop wants (plain floats and sets)."""

    __slots__ = ("channels", "customers", "end", "start")

    def __init__(
        self,
        start: float | None,
        end: float | None,
        channels: frozenset[str] | None,
        customers: frozenset[str] | None,
    ) -> None:
        self.start, self.end, self.channels, self.customers = start, end, channels, customers

    def check(self, obj: Any, ts: float | None) -> bool | None:
        """True: send; False: filtered out; None: the record lacks what the filter needs
        (not an object, no readable time / channel / customer)."""
        if type(obj) is not dict:
            return None
        if self.start is not None or self.end is not None:
            if ts is None:
                return None
            if (self.start is not None and ts < self.start) or (
                self.end is not None and ts >= self.end
            ):
                return False
        if self.channels is not None:
            ch = obj.get("channel")
            if type(ch) is not str:
                return None
            if ch not in self.channels:
                return False
        if self.customers is not None:
            ids = obj.get("identifiers")
            if type(ids) is not dict:
                return None
            if ids.get("customer_id") not in self.customers:
                return False
        return True
