"""Landing agents: dead letters, pain points and journeys into ClickHouse.

Thin glue: decode → rows → :meth:`Warehouse.land`. ``take()`` acks its messages only after
the loop body has run, so offsets are committed after the rows are in ClickHouse. Valid
touchpoints are landed by the identify agent itself (see ``streams.agents.journeys``): a
topic read by two Faust agents has its offsets committed once *either* has acked a message
(measured: after a kill -9 the slower agent lost those messages), so each topic here has
exactly one agent.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import partial
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
    dlq_topic = app.topic(
        settings.topic(settings.topic_dlq), value_serializer="raw", key_serializer="raw"
    )

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


def pain_point_row(value: bytes, landed_at: datetime) -> dict[str, Any]:
    """ClickHouse row of one pain-point message."""
    pp = orjson.loads(value)
    return {**pp, "detected_at": datetime.fromisoformat(pp["detected_at"]), "landed_at": landed_at}


def _one_pain_point(value: bytes, landed_at: datetime) -> list[dict[str, Any]]:
    return [pain_point_row(value, landed_at)]


def journey_rows(value: bytes) -> list[dict[str, Any]]:
    """ClickHouse rows of one journeys micro-batch message."""
    rows = []
    for j in orjson.loads(value)["journeys"]:
        rows.append(
            {
                **j,
                "started_at": datetime.fromisoformat(j["started_at"]),
                "ended_at": datetime.fromisoformat(j["ended_at"]),
                "updated_at": datetime.fromisoformat(j["updated_at"]),
            }
        )
    return rows


def register_results(app: faust.App, settings: Settings, warehouse: Warehouse) -> None:
    """Landing agents for the journey stage's outputs: pain points and journeys."""
    pains = app.topic(
        settings.topic(settings.topic_pain_points), value_serializer="raw", key_serializer="raw"
    )
    journeys = app.topic(
        settings.topic(settings.topic_journeys), value_serializer="raw", key_serializer="raw"
    )

    @app.agent(pains, name="land-pain-points")
    async def land_pain_points(stream: faust.StreamT[bytes]) -> None:
        async for values in stream.take(500, within=0.5):
            landed_at = datetime.now(UTC)
            rows = decode_all(
                values, partial(_one_pain_point, landed_at=landed_at), "land-pain-points"
            )
            if rows:
                await warehouse.land("pain_points", rows)

    @app.agent(journeys, name="land-journeys")
    async def land_journeys(stream: faust.StreamT[bytes]) -> None:
        async for values in stream.take(50, within=0.5):
            rows = decode_all(values, journey_rows, "land-journeys")
            if rows:
                await warehouse.land("journeys", rows)


def decode_all(values: list[bytes], decode: Any, agent: str) -> list[dict[str, Any]]:
    """Rows of every message; an undecodable one is counted, logged and skipped."""
    rows: list[dict[str, Any]] = []
    for value in values:
        try:
            rows.extend(decode(value))
        except Exception:  # a corrupt message must not kill the agent; counted and logged
            metrics.AGENT_ERRORS.labels(agent=agent).inc()
            log.exception("undecodable message skipped on %s (%d bytes)", agent, len(value))
    return rows
