"""Deterministic ids (uuid5): a replay or a backtest produces the same ids as the live run."""

from __future__ import annotations

import uuid

from schemas.dead_letter import TOUCHPATH_NS


def journey_id(customer_id: str, first_event_id: str) -> str:
    """Id of the journey a customer started with ``first_event_id``."""
    return str(uuid.uuid5(TOUCHPATH_NS, f"journey:{customer_id}:{first_event_id}"))


def pain_point_id(rule_id: str, customer_id: str, anchor_event_id: str) -> str:
    """Id of the pain point ``rule_id`` raised for ``customer_id`` at its anchor event."""
    return str(uuid.uuid5(TOUCHPATH_NS, f"pain:{rule_id}:{customer_id}:{anchor_event_id}"))
