"""The care agent: lands every care decision and delivers the ``sent`` ones, once per key.

The journey agent writes its decisions to the ``care-actions`` outbox (micro-batches keyed
by customer; messaging systems may consume it directly). This agent, one per worker and
the only one on that topic, handles a batch in four steps and only then lets it be acked:

1. land the decisions in ClickHouse ``care_actions``;
2. deliver the ``sent`` actions not yet delivered (the ``delivered`` table, keyed by
   customer so it lives with the customer's partition) through :class:`Dispatcher`;
3. land each outcome (``delivered`` / ``dead_lettered``) and publish dead letters to
   ``care-actions.dlq``;
4. write the delivered keys to the table and flush (changelog + DLQ) before the ack.

A kill between 2 and 4 redelivers the batch: the receiver sees the same
``Idempotency-Key`` again and drops it — delivery is at-least-once, effectively once.
Replayed decisions (``replay`` set) and a dry-run worker record decisions only.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import faust
import orjson

from streams import faust_fixes, metrics
from streams.agents.land import decode_all
from streams.agents.state import FastTable, fast_table
from streams.config import Settings
from streams.dispatch import DeliveryResult, Dispatcher, Endpoints, dead_letter_record
from streams.engine.stage import customer_key
from streams.partitioning import partition_for
from streams.producer import WorkerProducer
from streams.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Delivered action ids remembered per customer (the receiver's key check covers older ones).
MAX_REMEMBERED = 200
PRIORITY = {"high": 1, "normal": 2, "low": 3}


def action_items(value: bytes) -> list[dict[str, Any]]:
    """Care decisions of one outbox message (``{"actions": [...]}``)."""
    return list(orjson.loads(value)["actions"])


def decision_row(a: dict[str, Any], recorded_at: datetime, **over: Any) -> dict[str, Any]:
    """ClickHouse ``care_actions`` row of one decision (or, with ``over``, an outcome)."""
    decided_at = datetime.fromisoformat(a["decided_at"])
    row = {
        "action_id": a["action_id"],
        "pain_point_id": a.get("pain_point_id") or "",
        "sequence": a.get("sequence") or "",
        "journey_id": a.get("journey_id") or "",
        "customer_id": a["customer_id"],
        "tier": a.get("tier") or "",
        "rule_id": a.get("rule_id") or "",
        "kind": a["kind"],
        "template": a.get("template") or "",
        "priority": PRIORITY.get(a.get("priority") or "normal", 2),
        "channel": a.get("channel") or "",
        "status": a["status"],
        "reason": a.get("reason") or "",
        "decided_at": decided_at,
        "due_at": datetime.fromisoformat(a["due_at"]) if a.get("due_at") else decided_at,
        "recorded_at": recorded_at,
        "attempt": 0,
        "http_status": 0,
    }
    row.update(over)
    return row


def outcome_row(a: dict[str, Any], r: DeliveryResult, recorded_at: datetime) -> dict[str, Any]:
    """Row of a delivery outcome: the decision's row with the receiver's answer."""
    return decision_row(
        a,
        recorded_at,
        status=r.status,
        reason=r.error,
        attempt=r.attempts,
        http_status=r.http_status or 0,
    )


def build_dispatcher(settings: Settings) -> Dispatcher | None:
    """The configured dispatcher, or None when nothing is to be delivered."""
    if not settings.care_endpoints or settings.care_dry_run:
        return None
    return Dispatcher(
        Endpoints.parse(settings.care_endpoints),
        settings.care_signing_secret.get_secret_value(),
        timeout=settings.care_timeout_seconds,
        max_attempts=settings.care_max_attempts,
        backoff_cap=settings.care_backoff_cap_seconds,
    )


def register(
    app: faust.App, settings: Settings, producer: WorkerProducer, warehouse: Warehouse
) -> None:
    """Declare the care agent and its ``delivered`` table on ``app``."""
    n = settings.partitions
    t_dlq = settings.topic(settings.topic_care_dlq)
    delivered: FastTable = fast_table(app, "delivered", producer, "customer -> delivered keys")
    dispatcher = build_dispatcher(settings)
    if dispatcher is None:
        log.info("care actions are decided and recorded, not delivered (no endpoints/dry run)")

    @app.agent(
        app.topic(
            settings.topic(settings.topic_care_actions),
            value_serializer="raw",
            key_serializer="raw",
        ),
        name="care",
    )
    async def care(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(50, within=0.05):
            await faust_fixes.process_batch(app, "care", events, _care_batch)

    async def _care_batch(events: list[Any]) -> None:
        actions = decode_all([e.value for e in events], action_items, "care")
        now = datetime.now(UTC)
        rows = [decision_row(a, now) for a in actions]
        for a in actions:
            metrics.CARE_ACTIONS.labels(kind=a["kind"], status=a["status"]).inc()
        todo = _to_deliver(actions)
        if todo and dispatcher is not None:
            generation = app.consumer_generation_id
            results = await dispatcher.deliver_many(todo)
            # Rebalanced meanwhile: the new owner redelivers (refused by Idempotency-Key),
            # and this worker must not write state for keys it may no longer own.
            owned = app.consumer_generation_id == generation
            done: dict[bytes, list[str]] = defaultdict(list)
            for a, r in zip(todo, results, strict=True):
                if r.status == "failed":
                    # only while shutting down: not acked, so redelivered after the restart
                    raise RuntimeError("dispatcher closing; care batch left unacked")
                rows.append(outcome_row(a, r, now))
                if r.status == "dead_lettered":
                    key = customer_key(a["customer_id"])
                    record = orjson.dumps(dead_letter_record(a, r, now))
                    producer.produce(t_dlq, record, key, partition_for(key, n))
                done[customer_key(a["customer_id"])].append(a["action_id"])
            if owned:
                for key, ids in done.items():
                    delivered[key] = orjson.dumps((_known(key) + ids)[-MAX_REMEMBERED:])
        if rows:
            await warehouse.land("care_actions", rows)
        await producer.flush()

    def _known(key: bytes) -> list[str]:
        raw = delivered.get(key)
        return list(orjson.loads(raw)) if raw else []

    def _to_deliver(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``sent`` decisions of live (not replayed) events not delivered before."""
        seen: dict[bytes, set[str]] = {}
        todo = []
        for a in actions:
            if a["status"] != "sent" or a.get("replay"):
                continue
            key = customer_key(a["customer_id"])
            if key not in seen:
                seen[key] = set(_known(key))
            if a["action_id"] in seen[key]:
                metrics.CARE_REDELIVERY_SKIPPED.inc()
                continue
            seen[key].add(a["action_id"])
            todo.append(a)
        return todo
