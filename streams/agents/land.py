"""Landing agents: validated micro-batches and dead letters into ClickHouse.

Thin glue: decode → rows → :meth:`Warehouse.land`. ``take()`` acks its messages only after
the loop body has run, so offsets are committed after the rows are in ClickHouse.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import faust
import orjson

from schemas.dead_letter import DeadLetter
from streams import metrics, microbatch
from streams.config import Settings
from streams.warehouse import Warehouse

log = logging.getLogger(__name__)


def touchpoint_rows(value: bytes) -> list[dict[str, Any]]:
    """ClickHouse rows of one micro-batch message."""
    ingested_at, items = microbatch.decode(value)
    at = datetime.fromisoformat(ingested_at)
    rows = []
    for item in items:
        tp = item["tp"]
        ids = tp["identifiers"]
        rows.append(
            {
                "event_id": tp["event_id"],
                "channel": tp["channel"],
                "type": tp["type"],
                "occurred_at": datetime.fromisoformat(tp["occurred_at"]),
                "identity_key": item["k"],
                "customer_id": ids.get("customer_id", ""),
                "anonymous_id": ids.get("anonymous_id", ""),
                "phone_hash": ids.get("phone_hash", ""),
                "email_hash": ids.get("email_hash", ""),
                "loyalty_id": ids.get("loyalty_id", ""),
                "payload": orjson.dumps(tp).decode(),
                "source_partition": item["p"],
                "source_offset": item["o"],
                "ingested_at": at,
            }
        )
    return rows


def dead_letter_row(value: bytes) -> dict[str, Any]:
    """ClickHouse row of one dead-letter message."""
    return DeadLetter.model_validate_json(value).model_dump(exclude={"schema_version"})


def register(app: faust.App, settings: Settings, warehouse: Warehouse) -> None:
    """Declare the landing topics and agents on ``app``."""
    valid_topic = app.topic(
        settings.topic(settings.topic_valid), value_serializer="raw", key_serializer="raw"
    )
    dlq_topic = app.topic(
        settings.topic(settings.topic_dlq), value_serializer="raw", key_serializer="raw"
    )

    @app.agent(valid_topic, name="land-touchpoints")
    async def land_touchpoints(stream: faust.StreamT[bytes]) -> None:
        async for values in stream.take(16, within=0.2):
            rows: list[dict[str, Any]] = []
            for value in values:
                try:
                    rows.extend(touchpoint_rows(value))
                except Exception:  # a corrupt internal message must not kill the agent
                    metrics.AGENT_ERRORS.labels(agent="land-touchpoints").inc()
                    log.exception("undecodable micro-batch skipped (%d bytes)", len(value))
            if rows:
                await warehouse.land("touchpoints", rows)

    @app.agent(dlq_topic, name="land-dead-letters")
    async def land_dead_letters(stream: faust.StreamT[bytes]) -> None:
        async for values in stream.take(500, within=0.5):
            rows = []
            for value in values:
                try:
                    rows.append(dead_letter_row(value))
                except Exception:
                    metrics.AGENT_ERRORS.labels(agent="land-dead-letters").inc()
                    log.exception("undecodable dead letter skipped (%d bytes)", len(value))
            if rows:
                await warehouse.land("dead_letters", rows)
