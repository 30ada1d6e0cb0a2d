"""touchpath wire schemas (pydantic v2): touchpoints, customers, dead letters. No I/O."""

from schemas.customer import CustomerProfile
from schemas.dead_letter import DeadLetter
from schemas.touchpoint import (
    TOUCHPOINT_ADAPTER,
    CallCentreTouchpoint,
    Channel,
    Identifiers,
    SmsTouchpoint,
    StoreTouchpoint,
    Touchpoint,
    WebTouchpoint,
)
from schemas.validation import REASONS, Rejection, Validator

__all__ = [
    "REASONS",
    "TOUCHPOINT_ADAPTER",
    "CallCentreTouchpoint",
    "Channel",
    "CustomerProfile",
    "DeadLetter",
    "Identifiers",
    "Rejection",
    "SmsTouchpoint",
    "StoreTouchpoint",
    "Touchpoint",
    "Validator",
    "WebTouchpoint",
]
