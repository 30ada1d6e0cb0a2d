"""Customer profile: the CRM feed on the compacted ``customers`` topic.

Like touchpoints, raw ``phone``/``email`` are accepted on input and replaced by keyed hashes
while validating (the hasher comes in the validation context).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.pii import replace_raw_pii
from schemas.touchpoint import SCHEMA_VERSION, Id

Tier = Literal["A", "B", "C"]


class CustomerProfile(BaseModel):
    """One customer as the CRM knows them. Tier A customers expect (and get) more."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: StrictInt = SCHEMA_VERSION
    customer_id: Id
    tier: Tier = "C"
    phone_hash: Id | None = None
    email_hash: Id | None = None
    loyalty_id: Id | None = None
    timezone: str = "UTC"
    consents: dict[str, bool] = Field(
        default_factory=dict, description="Per channel (sms, email, call...): may we contact?"
    )
    birthday: date | None = None

    @model_validator(mode="before")
    @classmethod
    def _hash_raw_pii(cls, data: Any, info: ValidationInfo) -> Any:
        return replace_raw_pii(data, info.context, "")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "timezone", "timezone: unknown IANA zone {tz}", {"tz": v[:64]}
            ) from None
        return v
