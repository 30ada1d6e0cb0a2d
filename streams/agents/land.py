"""Landing agents: dead letters, pain points and journeys into ClickHouse.

Thin glue: decode → rows → :meth:`Warehouse.land`. A batch is acked only after its rows
are in ClickHouse, never when landing failed or the worker stopped meanwhile (see
:func:`landing_agent`). Valid
touchpoints are landed by the identify agent itself (see ``streams.agents.journeys``): a
topic read by two Faust agents has its offsets committed once *either* has acked a message
(measured: after a kill -9 the slower agent lost those messages), so each topic here has
exactly one agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
import orjson

from schemas.dead_letter import DeadLetter
from streams import faust_fixes, metrics, microbatch
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
    landing_agent(app, warehouse, settings.topic(settings.topic_dlq), "dead_letters", _dead_letters)


def _dead_letters(value: bytes, _landed_at: datetime) -> list[dict[str, Any]]:
    return [dead_letter_row(value)]


def landing_agent(
    app: faust.App,
    warehouse: Warehouse,
    topic: str,
    table: str,
    decode: Callable[[bytes, datetime], list[dict[str, Any]]],
    max_messages: int = 500,
) -> None:
    """An agent landing ``topic`` into ``table``: its batches go through
    :func:`faust_fixes.process_batch`, so a batch that fails or is cancelled (worker
    stopping) is not acked, and events fetched before a rebalance are left to their owner."""
    name = f"land-{table.replace('_', '-')}"

    async def land(events: list[Any]) -> None:
        landed_at = datetime.now(UTC)
        rows = decode_all([e.value for e in events], partial(_decode_at, decode, landed_at), name)
        if rows:
            await warehouse.land(table, rows)

    async def agent(stream: faust.StreamT[bytes]) -> None:
        async for taken in stream.take_events(max_messages, within=0.5):
            await faust_fixes.process_batch(app, name, taken, land)

    source = app.topic(topic, value_serializer="raw", key_serializer="raw")
    app.agent(source, name=name)(agent)


def _decode_at(
    decode: Callable[[bytes, datetime], list[dict[str, Any]]], landed_at: datetime, value: bytes
) -> list[dict[str, Any]]:
    return decode(value, landed_at)


def pain_point_row(value: bytes, landed_at: datetime) -> dict[str, Any]:
    """ClickHouse row of one pain-point message."""
    pp = orjson.loads(value)
    return {**pp, "detected_at": datetime.fromisoformat(pp["detected_at"]), "landed_at": landed_at}


def _one_pain_point(value: bytes, landed_at: datetime) -> list[dict[str, Any]]:
    return [pain_point_row(value, landed_at)]


def journey_rows(value: bytes, _landed_at: datetime | None = None) -> list[dict[str, Any]]:
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
    topic = settings.topic
    landing_agent(app, warehouse, topic(settings.topic_pain_points), "pain_points", _one_pain_point)
    landing_agent(app, warehouse, topic(settings.topic_journeys), "journeys", journey_rows, 50)


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
