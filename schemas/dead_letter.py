"""Dead letter: a record that could not be processed, kept with why and where it came from."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.touchpoint import SCHEMA_VERSION

#: Namespace of every deterministic id touchpath derives (uuid5), so replays agree.
TOUCHPATH_NS = uuid.UUID("6f1c2a52-8d0e-5b7e-9a51-7d2b3c0e4f10")

#: Original bytes kept per dead letter; longer records are truncated (``raw_size`` tells).
MAX_RAW_KEPT = 64 * 1024


class DeadLetter(BaseModel):
    """A rejected record: the original bytes (PII scrubbed), the reason and its source."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    schema_version: int = SCHEMA_VERSION
    dead_letter_id: str = Field(description="uuid5 of source topic/partition/offset")
    reason: str = Field(description="stable reason code, see schemas.validation.REASONS")
    error: str = Field(description="human-readable explanation, never containing raw PII")
    source_topic: str
    source_partition: int
    source_offset: int
    raw: bytes = Field(description=f"original bytes, PII scrubbed, first {MAX_RAW_KEPT} bytes")
    raw_size: int = Field(description="size of the original record in bytes")
    received_at: datetime


def dead_letter_id(topic: str, partition: int, offset: int) -> str:
    """Deterministic id of the dead letter for one source record (a re-read gives the same)."""
    return str(uuid.uuid5(TOUCHPATH_NS, f"dlq:{topic}:{partition}:{offset}"))


def replayed_dead_letter_id(raw: bytes) -> str:
    """Id of the dead letter for a *replayed* record: its content, not its new position, so
    replaying a log twice lands each bad line once (identical bad lines count once)."""
    return str(uuid.uuid5(TOUCHPATH_NS, f"dlq-replay:{hashlib.sha256(raw).hexdigest()}"))
