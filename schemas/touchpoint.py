"""Touchpoint models: one envelope, one model per channel, a discriminated union on ``channel``.

Wire format: one JSON object per record, channel attributes at top level, unknown extra
keys kept in ``attributes``. Raw ``phone`` / ``email`` identifiers are accepted on input and
replaced by keyed hashes while validating (the hasher comes in the validation context), so
a validated :class:`Touchpoint` never holds raw PII. Bounds that depend on "now" (future
timestamps) also come from the context, so validation stays pure.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.pii import hash_pii_keys, replace_raw_pii

SCHEMA_VERSION = 1

#: Events before this instant are rejected as ``ancient_timestamp``.
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
#: Default bound for ``future_timestamp`` (the validation context may override it).
DEFAULT_MAX_FUTURE = timedelta(days=7)
#: Upper bound of any string field (the validation context may lower it further).
MAX_STRING = 8192


class Channel(StrEnum):
    WEB = "web"
    CALL_CENTRE = "call_centre"
    STORE = "store"
    SMS = "sms"


class WebType(StrEnum):
    PAGE_VIEW = "page_view"
    SEARCH = "search"
    LOGIN = "login"
    ADD_TO_CART = "add_to_cart"
    CHECKOUT_STARTED = "checkout_started"
    CHECKOUT_FAILED = "checkout_failed"
    PURCHASE = "purchase"
    ERROR = "error"
    FORM_ABANDONED = "form_abandoned"
    TRIAL_STARTED = "trial_started"
    TRIAL_CONVERTED = "trial_converted"
    APP_USAGE = "app_usage"


class CallType(StrEnum):
    CALL_STARTED = "call_started"
    IVR_ABANDONED = "ivr_abandoned"
    QUEUE_ABANDONED = "queue_abandoned"
    ANSWERED = "answered"
    TRANSFERRED = "transferred"
    CALL_ENDED = "call_ended"


class StoreType(StrEnum):
    VISIT = "visit"
    PURCHASE = "purchase"
    RETURN = "return"
    COMPLAINT = "complaint"
    SERVICE_REQUEST = "service_request"


class SmsType(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    REPLY = "reply"
    OPT_OUT = "opt_out"


Text = Annotated[str, Field(max_length=MAX_STRING)]
Id = Annotated[str, Field(min_length=1, max_length=256)]
# Strict like the StrictInt/StrictBool fields: "5" or true is a wrong type, not a number.
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]

#: Identifier kinds from strongest to weakest: the identity key of an event is the first
#: one it carries (docs/design.md, Identity).
IDENTIFIER_STRENGTH = ("customer_id", "loyalty_id", "email_hash", "phone_hash", "anonymous_id")


class Identifiers(BaseModel):
    """Who the event is about. Raw ``phone``/``email`` arrive and leave as keyed hashes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: Id | None = None
    loyalty_id: Id | None = None
    email_hash: Id | None = None
    phone_hash: Id | None = None
    anonymous_id: Id | None = None

    @model_validator(mode="before")
    @classmethod
    def _hash_raw_pii(cls, data: Any, info: ValidationInfo) -> Any:
        return replace_raw_pii(data, info.context, "identifiers.")

    @model_validator(mode="after")
    def _at_least_one(self) -> Identifiers:
        if self.key() is None:
            raise PydanticCustomError("no_identifier", "identifiers: at least one is required")
        return self

    def key(self) -> str | None:
        """Identity key: ``kind:value`` of the strongest identifier, or None."""
        for kind in IDENTIFIER_STRENGTH:
            value = getattr(self, kind)
            if value:
                return f"{kind}:{value}"
        return None


class TouchpointBase(BaseModel):
    """The envelope every channel shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _known: ClassVar[frozenset[str]] = frozenset()

    schema_version: StrictInt = SCHEMA_VERSION
    event_id: Id
    channel: Channel
    type: str
    occurred_at: datetime
    identifiers: Identifiers
    attributes: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        cls._known = frozenset(cls.model_fields)

    @model_validator(mode="before")
    @classmethod
    def _extras_to_attributes(cls, data: Any, info: ValidationInfo) -> Any:
        # Producers add keys of their own; they are kept, but under `attributes`, so the
        # top level stays a closed, typed schema. Raw phone/email keys among them are hashed.
        if not isinstance(data, dict):
            return data
        known = cls._known
        extra = [k for k in data if k not in known]
        if not extra and not data.get("attributes"):
            return data
        data = dict(data)
        attrs = (
            dict(data.get("attributes") or {}) if isinstance(data.get("attributes"), dict) else None
        )
        if attrs is None:
            if "attributes" in data:
                return data  # let the type check report the bad `attributes`
            attrs = {}
        for k in extra:
            attrs[k] = data.pop(k)
        data["attributes"] = hash_pii_keys(attrs, info.context, "attributes.")
        return data

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _event_time_is_text(cls, v: Any) -> Any:
        # pydantic would read a number as a Unix epoch; the wire format is ISO 8601 only.
        if not isinstance(v, str | datetime):
            raise PydanticCustomError(
                "datetime_type", "occurred_at: must be an ISO 8601 string with an offset"
            )
        return v

    @field_validator("occurred_at")
    @classmethod
    def _event_time_bounds(cls, v: datetime, info: ValidationInfo) -> datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise PydanticCustomError(
                "naive_timestamp", "occurred_at: needs a time zone offset (e.g. +00:00)"
            )
        try:
            v = v.astimezone(UTC)
        except OverflowError:
            kind = "future_timestamp" if v.year > 2000 else "ancient_timestamp"
            raise PydanticCustomError(kind, "occurred_at: out of range") from None
        if v < EARLIEST_EVENT:
            raise PydanticCustomError(
                "ancient_timestamp",
                "occurred_at: before 2000-01-01 ({when})",
                {"when": v.isoformat()},
            )
        ctx = info.context or {}
        now: datetime | None = ctx.get("now")
        if now is not None and v > now + ctx.get("max_future", DEFAULT_MAX_FUTURE):
            raise PydanticCustomError(
                "future_timestamp",
                "occurred_at: too far in the future ({when})",
                {"when": v.isoformat()},
            )
        return v

    @property
    def identity_key(self) -> str:
        """The strongest identifier as ``kind:value`` (never None after validation)."""
        return self.identifiers.key()  # type: ignore[return-value]


class WebTouchpoint(TouchpointBase):
    """Website and app events."""

    channel: Literal[Channel.WEB]
    type: WebType
    url: Text | None = None
    session_id: Text | None = None
    error_code: Text | None = None
    order_value: NonNegative | None = None
    product: Text | None = None


class CallCentreTouchpoint(TouchpointBase):
    """Call-centre events; one call's events share ``call_id``."""

    channel: Literal[Channel.CALL_CENTRE]
    type: CallType
    call_id: Text | None = None
    wait_seconds: Seconds | None = None
    handle_seconds: Seconds | None = None
    reason: Text | None = None
    resolved: StrictBool | None = None
    transfers: Annotated[StrictInt, Field(ge=0)] | None = None
    agent_id: Text | None = None


class StoreTouchpoint(TouchpointBase):
    """Physical store events."""

    channel: Literal[Channel.STORE]
    type: StoreType
    store_id: Text | None = None
    amount: NonNegative | None = None
    resolved: StrictBool | None = None


class SmsTouchpoint(TouchpointBase):
    """SMS events, including survey replies (``score`` 0-10)."""

    channel: Literal[Channel.SMS]
    type: SmsType
    template: Text | None = None
    reply_text: Text | None = None
    score: Annotated[StrictInt, Field(ge=0, le=10)] | None = None


Touchpoint = Annotated[
    WebTouchpoint | CallCentreTouchpoint | StoreTouchpoint | SmsTouchpoint,
    Discriminator("channel"),
]
"""Any touchpoint; validate with :data:`TOUCHPOINT_ADAPTER`."""

TOUCHPOINT_ADAPTER: TypeAdapter[Touchpoint] = TypeAdapter(Touchpoint)

CHANNEL_MODELS: dict[Channel, type[TouchpointBase]] = {
    Channel.WEB: WebTouchpoint,
    Channel.CALL_CENTRE: CallCentreTouchpoint,
    Channel.STORE: StoreTouchpoint,
    Channel.SMS: SmsTouchpoint,
}
