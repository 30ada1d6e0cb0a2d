"""Column registry of the landed tables: the one place the writer learns column order.

Kept next to ``ddl/``; a test checks it against the migrated tables, so a DDL change that
forgets this file fails loudly instead of shifting columns.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A landed table: its insert column order and the columns that identify a row version.

    ``identity`` feeds the insert deduplication token: two batches with the same values in
    these columns (in the same order) are the same batch. Include the version column for
    tables whose rows change (e.g. journeys).
    """

    name: str
    columns: tuple[str, ...]
    identity: tuple[str, ...]


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            name="touchpoints",
            columns=(
                "event_id",
                "channel",
                "type",
                "occurred_at",
                "identity_key",
                "customer_id",
                "anonymous_id",
                "phone_hash",
                "email_hash",
                "loyalty_id",
                "payload",
                "source_partition",
                "source_offset",
                "ingested_at",
            ),
            identity=("event_id",),
        ),
        TableSpec(
            name="dead_letters",
            columns=(
                "dead_letter_id",
                "reason",
                "error",
                "source_topic",
                "source_partition",
                "source_offset",
                "raw",
                "raw_size",
                "received_at",
            ),
            identity=("dead_letter_id",),
        ),
        TableSpec(
            name="journeys",
            columns=(
                "journey_id",
                "customer_id",
                "tier",
                "started_at",
                "ended_at",
                "channels",
                "steps",
                "outcome",
                "score",
                "pain_point_ids",
                "version",
                "updated_at",
            ),
            # a journey is re-emitted as it grows: each version is a different row
            identity=("journey_id", "version"),
        ),
        TableSpec(
            name="pain_points",
            columns=(
                "pain_point_id",
                "rule_id",
                "customer_id",
                "journey_id",
                "severity",
                "channels",
                "anchor_event_id",
                "evidence_event_ids",
                "detected_at",
                "landed_at",
            ),
            identity=("pain_point_id",),
        ),
        TableSpec(
            name="identity_links",
            columns=("identity_key", "customer_id", "linked_at", "landed_at"),
            identity=("identity_key", "customer_id"),
        ),
        TableSpec(
            name="care_actions",
            columns=(
                "action_id",
                "pain_point_id",
                "sequence",
                "journey_id",
                "customer_id",
                "tier",
                "rule_id",
                "kind",
                "template",
                "priority",
                "channel",
                "status",
                "reason",
                "decided_at",
                "due_at",
                "recorded_at",
                "attempt",
                "http_status",
            ),
            # one row per action per status; a later delivery attempt (same status) is new
            identity=("action_id", "status", "attempt"),
        ),
    )
}

#: Insert column order per table.
TABLE_COLUMNS: dict[str, list[str]] = {name: list(spec.columns) for name, spec in TABLES.items()}
