"""Named query latency on embedded chDB at 10M touchpoints.

    python -m benchmarks.query_bench [--rows 10000000] [--runs 20]

Loads a fresh temporary chDB directory through the real schema (``migrate()``, so the
materialized views exist before any row arrives and are populated by the inserts into the
base tables, as on the landing path), then runs every named query
(``sinks/clickhouse/queries/*.sql``) with its declared defaults through ``run_query``, the
function the ops page, ``/api/query/{name}`` and the tests use. Reports p50 / p95 / max
milliseconds per query (after one warm-up run, ``--runs`` timed runs, queries interleaved
round-robin): the dashboard queries against the 500 ms p95 target, the reconciliation
exports (``EXPORT_QUERIES``: one row per entity, no panel runs them) apart, with where their
time goes (engine, column blocks, tuples, dicts).

Data (scaled by ``--rows``, the touchpoint count): touchpoints are tiles of one simulator
run (streams.simulator → ingest's validation and split → ``land.touchpoint_rows``, i.e.
real channel / type / identifier mix and real payloads), each tile shifted to another group
of customers (ids and hashed identifiers rewritten) and to one of three consecutive 30-day
periods, generated inside ClickHouse with ``INSERT ... SELECT`` over a template table (no
Python per row); plus ``--dup-ratio`` re-landed duplicates. journeys (rows/10 journeys, each
landed in two versions), pain_points (rows/100), care_actions (rows×0.015: decided → sent/held/
suppressed → delivered/failed), dead_letters (rows/200) and identity_links (the CRM and
login links of every customer group) come from ``numbers()`` generators with consistent
ids. Background merges are allowed to finish before timing.

The event totals (``COUNTS_QUERIES``) read ``touchpoint_counts`` (migration 0004): refreshed
per-bucket counts where still valid, the rest merged live. The bench refreshes the counts
once the merges settled (the view's own schedule would within a minute), times everything,
then times those queries again "cold" (no valid refreshed count). Unless ``--no-variants``,
it also times, interleaved with each shipped query, the SQL it replaced (``previous``) and
alternatives that were not shipped (``VARIANTS``), and checks they return the same rows.
Writes ``benchmarks/results/query_bench.json`` (or ``query_bench_<rows>.json`` when
``--rows`` is not the default).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clickhouse_connect.driver import Client

from benchmarks.sink_bench import (
    RESULTS_DIR,
    calibrate_ms,
    cpu_seconds,
    machine_info,
    open_chdb,
    print_table,
    process_peak_rss_mib,
    wait_for_merges,
    write_json,
)
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.queries import EXPORT_QUERIES, query_names, query_sql, run_query
from sinks.clickhouse.sqlfiles import render
from sinks.clickhouse.tables import TABLE_COLUMNS
from streams.web.params import with_defaults

DB = "touchpath"
GEN = "bench_gen"
DEFAULT_ROWS = 10_000_000
TARGET_P95_MS = 500.0
PERIOD_DAYS = 30  # the simulator period; tiles go to periods 0, 1, 2 → 90 days
PERIODS = 3
START = "2026-03-01 00:00:00"  # SimConfig's default start
SPAN_MS = PERIODS * PERIOD_DAYS * 86_400_000
PP_EVERY = 10  # every 10th journey has a pain point

# pain-point rules (streams/engine/builtin_rules.yaml) with a weight, severity and channels
RULES: list[tuple[str, int, int, list[str]]] = [
    ("repeat_contact", 6, 3, ["call_centre", "store"]),
    ("digital_failure_to_call", 3, 4, ["web", "call_centre"]),
    ("long_queue", 4, 3, ["call_centre"]),
    ("ivr_abandon", 2, 2, ["call_centre"]),
    ("queue_abandon", 2, 3, ["call_centre"]),
    ("transfer_unresolved", 2, 4, ["call_centre"]),
    ("checkout_failed", 3, 3, ["web"]),
    ("cart_abandoned", 5, 1, ["web"]),
    ("low_survey_score", 2, 4, ["sms"]),
    ("negative_reply", 1, 4, ["sms"]),
    ("store_complaint", 1, 4, ["store"]),
    ("complaint_unresolved", 1, 5, ["store"]),
    ("trial_unused", 2, 2, ["web"]),
    ("opt_out", 1, 2, ["sms"]),
]
# care action kind → the channel it goes out on
KINDS = [
    ("sms", "sms"),
    ("email", "email"),
    ("outbound_call", "call_centre"),
    ("manager_escalation", "call_centre"),
    ("coupon", "sms"),
    ("webhook", "webhook"),
]
SUPPRESS_REASONS = ["frequency_cap", "quiet_hours", "no_consent", "cooldown"]
DEAD_REASONS = [
    ("invalid_json", 4), ("unknown_channel", 2), ("missing_field", 3), ("wrong_type", 2),
    ("no_identifier", 3), ("naive_timestamp", 1), ("future_timestamp", 1),
    ("ancient_timestamp", 1), ("invalid_utf8", 1), ("not_object", 1), ("unknown_type", 2),
    ("negative_value", 1), ("non_finite_number", 1), ("too_large", 1),
]  # fmt: skip
JOURNEY_PATHS = [
    ["web"], ["web"], ["web", "call_centre"], ["web", "call_centre", "web"], ["store"],
    ["sms", "web"], ["web", "store"], ["call_centre"], ["web", "sms", "call_centre", "store"],
    ["call_centre", "store"], ["sms"], ["web", "sms"],
]  # fmt: skip


def _sql_list(values: Sequence[Any]) -> str:
    """A ClickHouse array literal of strings / arrays of strings."""
    parts = []
    for v in values:
        parts.append(_sql_list(v) if isinstance(v, list) else "'" + str(v) + "'")
    return "[" + ", ".join(parts) + "]"


def _weighted(items: Sequence[tuple[Any, int]]) -> list[Any]:
    return [item for item, weight in items for _ in range(weight)]


# --- the load plan ------------------------------------------------------------------------


@dataclass
class Plan:
    """How many rows of each table, from ``--rows`` touchpoints."""

    touchpoints: int
    journeys: int  # distinct journeys; each is landed twice (an open and a closed version)
    pain_points: int
    care_actions: int  # rows: 3 status rows per action
    dead_letters: int
    dup_ratio: float
    template_rows: int = 0
    template_customers: int = 0
    tiles: int = 0
    groups: int = 0
    customers: int = 0
    digits: int = 6

    @classmethod
    def for_rows(cls, rows: int, dup_ratio: float) -> Plan:
        """Proportions of the touchpoint count: journeys 1/10 (landed in 2 versions), pain
        points 1/100 (one per 10th journey), care actions 1.5/100, dead letters 1/200."""
        pain_points = max(1, rows // 100)
        return cls(
            touchpoints=rows,
            journeys=pain_points * PP_EVERY,
            pain_points=pain_points,
            care_actions=max(3, rows * 15 // 1000 // 3 * 3),
            dead_letters=max(1, rows // 200),
            dup_ratio=dup_ratio,
        )

    @property
    def journey_rows(self) -> int:
        return 2 * self.journeys

    def fit(self, template_rows: int, template_customers: int) -> None:
        """Tile the template: ``groups`` customer groups × ``PERIODS`` periods."""
        self.template_rows, self.template_customers = template_rows, template_customers
        self.tiles = math.ceil(self.touchpoints / template_rows)
        self.groups = math.ceil(self.tiles / PERIODS)
        self.customers = self.groups * template_customers
        self.digits = max(6, len(str(self.customers)))


# --- templates from the simulator -----------------------------------------------------------


def simulate_templates(customers: int, seed: int) -> tuple[list[dict[str, Any]], list[tuple]]:
    """Touchpoint rows of one simulated period as the worker lands them, and the identity
    links of its customers (CRM feed: phone / email / loyalty; logins: anonymous ids)."""
    from benchmarks.sink_bench import ingest_messages
    from schemas.validation import Validator
    from streams.agents.land import touchpoint_rows
    from streams.config import Settings
    from streams.simulator import SimConfig, simulate

    sim = simulate(SimConfig(customers=customers, days=PERIOD_DAYS, seed=seed))
    messages = ingest_messages(sim.records, partitions=4, ingest_batch=2000)
    rows = [row for m in messages for row in touchpoint_rows(m)]
    hasher = Validator.from_settings(Settings(_env_file=None)).hasher
    start = datetime.fromisoformat(START).replace(tzinfo=UTC)
    links: dict[str, tuple[str, datetime]] = {}
    for c in sim.customers:
        cid = c["customer_id"]
        if c.get("phone"):
            links.setdefault(f"phone_hash:{hasher.phone(c['phone'])}", (cid, start))
        if c.get("email"):
            links.setdefault(f"email_hash:{hasher.email(c['email'])}", (cid, start))
        if c.get("loyalty_id"):
            links.setdefault(f"loyalty_id:{c['loyalty_id']}", (cid, start))
    for row in rows:
        if row["customer_id"] and row["anonymous_id"]:
            key = f"anonymous_id:{row['anonymous_id']}"
            links.setdefault(key, (row["customer_id"], row["occurred_at"]))
    return rows, [(k, cid, at) for k, (cid, at) in links.items()]


# --- generators (INSERT ... SELECT inside ClickHouse) --------------------------------------


def _remap(kind: str, value: str, g: str, plan: Plan) -> str:
    """SQL rewriting one identifier ``value`` (SQL expression) of kind ``kind`` to group ``g``.

    customer_id / loyalty_id: the number is shifted by ``g × template customers``; hashes
    and anonymous ids are re-derived from (value, g), so one customer keeps one phone hash
    across all its events and links.
    """
    if kind in ("customer_id", "loyalty_id"):
        prefix = "C" if kind == "customer_id" else "L"
        return (
            f"if({value} = '', '', concat('{prefix}', leftPad(toString("
            f"toUInt64OrZero(substring({value}, 2)) + {g} * {plan.template_customers}), "
            f"{plan.digits}, '0')))"
        )
    if kind in ("phone_hash", "email_hash"):
        return f"if({value} = '', '', lower(hex(SHA256(concat({value}, '/', toString({g}))))))"
    return f"if({value} = '', '', UUIDNumToString(sipHash128({value}, {g})))"


def _remap_key(key: str, g: str, plan: Plan) -> str:
    """SQL rewriting an identity key ``kind:value`` to group ``g``."""
    kind = f"substring({key}, 1, position({key}, ':') - 1)"
    value = f"substring({key}, position({key}, ':') + 1)"
    return (
        f"concat({kind}, ':', multiIf("
        f"{kind} = 'customer_id', {_remap('customer_id', value, g, plan)}, "
        f"{kind} = 'loyalty_id', {_remap('loyalty_id', value, g, plan)}, "
        f"{kind} IN ('phone_hash', 'email_hash'), {_remap('phone_hash', value, g, plan)}, "
        f"{_remap('anonymous_id', value, g, plan)}))"
    )


def touchpoints_sql(plan: Plan, first_tile: int, tiles: int) -> str:
    """Tiles ``first_tile ..`` of the template: tile b is customer group ``b % groups`` in
    period ``b // groups`` (so each insert covers one month, as landing in time order)."""
    s = plan.template_rows
    cols = ", ".join(TABLE_COLUMNS["touchpoints"])
    return f"""
INSERT INTO {DB}.touchpoints ({cols})
SELECT
    concat(t.event_id, '-', toString(b)) AS new_event_id,
    t.channel,
    t.type,
    t.occurred_at + toIntervalDay({PERIOD_DAYS} * p) AS at,
    {_remap_key("t.identity_key", "g", plan)},
    {_remap("customer_id", "t.customer_id", "g", plan)} AS new_customer_id,
    {_remap("anonymous_id", "t.anonymous_id", "g", plan)},
    {_remap("phone_hash", "t.phone_hash", "g", plan)},
    {_remap("email_hash", "t.email_hash", "g", plan)},
    {_remap("loyalty_id", "t.loyalty_id", "g", plan)},
    replaceOne(
        replaceOne(
            t.payload,
            concat('"event_id":"', t.event_id, '"'),
            concat('"event_id":"', new_event_id, '"')
        ),
        concat('"customer_id":"', t.customer_id, '"'),
        concat('"customer_id":"', new_customer_id, '"')
    ),
    toInt32((b * {s} + t.idx) % 4),
    toInt64(intDiv(b * {s} + t.idx, 4)),
    at + toIntervalMillisecond(20 + cityHash64(b, t.idx) % 2000)
FROM {GEN}.tp AS t
CROSS JOIN
(
    SELECT number AS b, b % {plan.groups} AS g, intDiv(b, {plan.groups}) AS p
    FROM numbers({first_tile}, {tiles})
) AS tiles
WHERE b * {s} + t.idx < {plan.touchpoints}
"""


def duplicates_sql(plan: Plan) -> str:
    """Re-land ``dup_ratio`` of the touchpoints one hour later (a replay / lost-ack retry)."""
    every = max(1, round(1 / plan.dup_ratio))
    cols = ", ".join(TABLE_COLUMNS["touchpoints"])
    return f"""
INSERT INTO {DB}.touchpoints ({cols})
SELECT * REPLACE (ingested_at + toIntervalHour(1) AS ingested_at)
FROM {DB}.touchpoints
WHERE cityHash64(event_id) % {every} = 0
"""


def _customer_of_journey(j: str, plan: Plan) -> str:
    return (
        f"concat('C', leftPad(toString(1 + cityHash64({j}, 'customer') % {plan.customers}), "
        f"{plan.digits}, '0'))"
    )


def _journey_start(j: str, plan: Plan) -> str:
    return (
        f"toDateTime64('{START}', 3, 'UTC') + "
        f"toIntervalMillisecond(intDiv({j} * {SPAN_MS}, {plan.journeys}))"
    )


def _tier(cid: str) -> str:
    return f"multiIf(cityHash64({cid}) % 100 < 15, 'A', cityHash64({cid}) % 100 < 50, 'B', 'C')"


def _pp_id(p: str) -> str:
    return f"UUIDNumToString(sipHash128('pain_point', {p}))"


def _rule_columns() -> tuple[str, str, str, int]:
    weighted = _weighted([((r, sev, ch), w) for r, w, sev, ch in RULES])
    rules = _sql_list([r for r, _, _ in weighted])
    sevs = "[" + ", ".join(str(s) for _, s, _ in weighted) + "]"
    chans = _sql_list([ch for _, _, ch in weighted])
    return rules, sevs, chans, len(weighted)


def journeys_sql(plan: Plan, first: int, count: int) -> str:
    """Journey rows ``first ..``: row m is version ``m % 2 + 1`` of journey ``m // 2``; every
    ``PP_EVERY``-th journey carries pain point ``j / PP_EVERY`` from its second version on."""
    paths = _sql_list(JOURNEY_PATHS)
    end = f"toDateTime64('{START}', 3, 'UTC') + toIntervalDay({PERIODS * PERIOD_DAYS})"
    return f"""
INSERT INTO {DB}.journeys ({", ".join(TABLE_COLUMNS["journeys"])})
SELECT
    UUIDNumToString(sipHash128('journey', j)),
    cid,
    {_tier("cid")},
    st,
    st + toIntervalMinute(steps * (5 + h % 55)) AS en,
    if(v = 1, arraySlice(path, 1, 1), path),
    steps,
    multiIf(v = 1 OR st > {end} - toIntervalDay(3), 'open',
            h % 100 < 65, 'completed', 'abandoned'),
    toFloat32(multiIf(v = 1, 100, j % {PP_EVERY} = 0, 20 + h % 50, 70 + h % 31)),
    if(v = 2 AND j % {PP_EVERY} = 0, [{_pp_id(f"intDiv(j, {PP_EVERY})")}], []),
    toUInt64(v),
    en
FROM
(
    SELECT
        number AS m,
        intDiv(m, 2) AS j,
        m % 2 + 1 AS v,
        cityHash64(j, 'journey') AS h,
        {_customer_of_journey("j", plan)} AS cid,
        {_journey_start("j", plan)} AS st,
        {paths}[1 + h % {len(JOURNEY_PATHS)}] AS path,
        toUInt32(if(v = 1, 1 + h % 3, 3 + h % 25)) AS steps
    FROM numbers({first}, {count})
)
"""


def pain_points_sql(plan: Plan) -> str:
    """Pain point p belongs to journey ``PP_EVERY × p`` (its customer, an hour after its start)."""
    rules, sevs, chans, n = _rule_columns()
    return f"""
INSERT INTO {DB}.pain_points ({", ".join(TABLE_COLUMNS["pain_points"])})
SELECT
    {_pp_id("p")},
    {rules}[1 + r],
    {_customer_of_journey("j", plan)},
    UUIDNumToString(sipHash128('journey', j)),
    toUInt8({sevs}[1 + r]),
    {chans}[1 + r],
    concat('c-', toString(h % 100000), '-', toString(p % 151)) AS anchor,
    [anchor, concat('w-', toString(intDiv(h, 7) % 100000), '-', toString(p % 151))],
    {_journey_start("j", plan)} + toIntervalHour(1) AS detected,
    detected + toIntervalSecond(2)
FROM
(
    SELECT number AS p, p * {PP_EVERY} AS j, cityHash64(p, 'pain') AS h, h % {n} AS r
    FROM numbers({plan.pain_points})
)
"""


def care_actions_sql(plan: Plan) -> str:
    """Action a answers pain point 2a (mod count) with 3 status rows: decided; sent (80%) /
    suppressed (12%) / held (8%); then delivered (95% of sent) / failed / sent / suppressed."""
    rules, _, _, n = _rule_columns()
    kinds = _sql_list([k for k, _ in KINDS])
    channels = _sql_list([c for _, c in KINDS])
    reasons = _sql_list(SUPPRESS_REASONS)
    return f"""
INSERT INTO {DB}.care_actions ({", ".join(TABLE_COLUMNS["care_actions"])})
SELECT
    UUIDNumToString(sipHash128('action', a)),
    {_pp_id("q")},
    '',
    UUIDNumToString(sipHash128('journey', j)),
    cid,
    {_tier("cid")},
    {rules}[1 + cityHash64(q, 'pain') % {n}],
    {kinds}[1 + k],
    concat({kinds}[1 + k], '_', toString(h % 5)),
    toUInt8(1 + h % 3),
    {channels}[1 + k],
    status,
    multiIf(status = 'suppressed', {reasons}[1 + intDiv(h, 10000) % 4],
            status = 'held', 'quiet_hours', status = 'failed', 'HTTP 503', ''),
    decided,
    if(status = 'held', decided + toIntervalHour(8), decided),
    decided + toIntervalSecond(30 * r),
    toUInt16(if(status = 'failed', 6, 1)),
    toUInt16(multiIf(status IN ('sent', 'delivered'), 200, status = 'failed', 503, 0))
FROM
(
    SELECT
        number AS m, intDiv(m, 3) AS a, m % 3 AS r, (a * 2) % {plan.pain_points} AS q,
        q * {PP_EVERY} AS j, cityHash64(a, 'action') AS h, h % {len(KINDS)} AS k,
        {_customer_of_journey("j", plan)} AS cid,
        {_journey_start("j", plan)} + toIntervalMinute(61) AS decided,
        multiIf(h % 100 < 80, 'sent', h % 100 < 92, 'suppressed', 'held') AS first,
        multiIf(r = 0, 'decided', r = 1, first,
                first = 'sent', if(intDiv(h, 100) % 100 < 95, 'delivered', 'failed'),
                first = 'held', 'sent', 'suppressed') AS status
    FROM numbers({plan.care_actions})
)
"""


def dead_letters_sql(plan: Plan) -> str:
    """Dead letters spread over the 90 days, reasons in the validator's mix."""
    reasons = _sql_list(_weighted(DEAD_REASONS))
    n = sum(w for _, w in DEAD_REASONS)
    return f"""
INSERT INTO {DB}.dead_letters ({", ".join(TABLE_COLUMNS["dead_letters"])})
SELECT
    UUIDNumToString(sipHash128('dead', d)),
    reason,
    concat(reason, ': record ', toString(d), ' rejected by the validator'),
    'touchpoints.raw',
    toInt32(d % 4),
    toInt64(d * 211),
    concat('{{"event_id":"x-', toString(d), '","channel":"fax","type":"page_view",',
           '"occurred_at":"2026-03-01T00:00:00Z","identifiers":{{}},"note":"',
           repeat('x', toUInt32(cityHash64(d) % 200)), '"}}') AS raw,
    toUInt32(length(raw)),
    toDateTime64('{START}', 3, 'UTC')
        + toIntervalMillisecond(intDiv(d * {SPAN_MS}, {plan.dead_letters}))
FROM
(
    SELECT number AS d, {reasons}[1 + cityHash64(d, 'reason') % {n}] AS reason
    FROM numbers({plan.dead_letters})
)
"""


def identity_links_sql(plan: Plan) -> str:
    """The template's links, once per customer group."""
    return f"""
INSERT INTO {DB}.identity_links ({", ".join(TABLE_COLUMNS["identity_links"])})
SELECT
    {_remap_key("l.identity_key", "g", plan)},
    {_remap("customer_id", "l.customer_id", "g", plan)},
    l.linked_at,
    l.linked_at + toIntervalSecond(1)
FROM {GEN}.links AS l
CROSS JOIN (SELECT number AS g FROM numbers({plan.groups})) AS groups
"""


@dataclass
class LoadStep:
    """One timed part of the load."""

    table: str
    rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def _count(client: Client, table: str, db: str = DB) -> int:
    return int(client.query(f"SELECT count() FROM {db}.{table}").result_rows[0][0])


def load(client: Client, plan: Plan, *, seed: int, log: Any = print) -> list[LoadStep]:
    """Create the templates and fill every landed table (views fill themselves)."""
    steps: list[LoadStep] = []
    t0 = time.perf_counter()
    rows, links = simulate_templates(2000, seed)
    # groups shift customer / loyalty numbers by the largest template number, so no two
    # groups share an id (the simulator numbers its customers C000001, C000002, ...)
    ids = {r["customer_id"] for r in rows if r["customer_id"]} | {cid for _, cid, _ in links}
    ids |= {r["loyalty_id"] for r in rows if r["loyalty_id"]}
    plan.fit(len(rows), max(int(i[1:]) for i in ids if i[1:].isdigit()))
    steps.append(LoadStep("simulate template", len(rows), time.perf_counter() - t0))
    log(
        f"template: {len(rows):,} touchpoint rows, {len(links):,} links, "
        f"{plan.template_customers} customers → {plan.tiles} tiles, {plan.groups} groups, "
        f"{plan.customers:,} customers ({steps[-1].seconds:.1f}s)"
    )

    t0 = time.perf_counter()
    client.command(f"CREATE DATABASE IF NOT EXISTS {GEN}")
    described = client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} "
        "AND table = 'touchpoints' ORDER BY position",
        parameters={"db": DB},
    ).result_rows
    columns_ddl = ", ".join(f"`{n}` {t}" for n, t in described)
    client.command(f"CREATE TABLE {GEN}.tp (idx UInt32, {columns_ddl}) ENGINE = Memory")
    names = TABLE_COLUMNS["touchpoints"]
    data = [list(range(len(rows)))] + [[r[c] for r in rows] for c in names]
    client.insert("tp", data, column_names=["idx", *names], column_oriented=True, database=GEN)
    client.command(
        f"CREATE TABLE {GEN}.links (identity_key String, customer_id String, "
        "linked_at DateTime64(3, 'UTC')) ENGINE = Memory"
    )
    client.insert(
        "links", [list(x) for x in zip(*links, strict=True)],
        column_names=["identity_key", "customer_id", "linked_at"], column_oriented=True,
        database=GEN,
    )  # fmt: skip
    steps.append(LoadStep("template tables", len(rows) + len(links), time.perf_counter() - t0))

    per_insert = max(1, 1_000_000 // plan.template_rows)
    t0 = time.perf_counter()
    for first in range(0, plan.tiles, per_insert):
        client.command(touchpoints_sql(plan, first, min(per_insert, plan.tiles - first)))
        log(f"  touchpoints: tiles {first}..{min(first + per_insert, plan.tiles) - 1} "
            f"of {plan.tiles} ({time.perf_counter() - t0:.0f}s)")  # fmt: skip
    steps.append(LoadStep("touchpoints", plan.touchpoints, time.perf_counter() - t0))
    every = max(1, round(1 / plan.dup_ratio))
    dups = _count(client, f"touchpoints WHERE cityHash64(event_id) % {every} = 0")
    t0 = time.perf_counter()
    client.command(duplicates_sql(plan))
    steps.append(LoadStep("touchpoints (re-landed)", dups, time.perf_counter() - t0))
    t0 = time.perf_counter()
    for first in range(0, plan.journey_rows, 2_000_000):
        client.command(journeys_sql(plan, first, min(2_000_000, plan.journey_rows - first)))
    steps.append(LoadStep("journeys (2 versions)", plan.journey_rows, time.perf_counter() - t0))
    links_rows = len(links) * plan.groups
    for table, sql, n in (
        ("pain_points", pain_points_sql(plan), plan.pain_points),
        ("care_actions", care_actions_sql(plan), plan.care_actions),
        ("dead_letters", dead_letters_sql(plan), plan.dead_letters),
        ("identity_links", identity_links_sql(plan), links_rows),
    ):
        t0 = time.perf_counter()
        client.command(sql)
        steps.append(LoadStep(table, n, time.perf_counter() - t0))
    for s in steps[2:]:
        log(f"  {s.table:36s} {s.rows:>12,} rows {s.seconds:7.1f}s {s.rows_per_s:>12,.0f} rows/s")
    client.command(f"DROP TABLE {GEN}.tp")
    client.command(f"DROP TABLE {GEN}.links")
    return steps


def table_stats(client: Client) -> list[dict[str, Any]]:
    """Active parts, rows and sizes of every table of the database."""
    result = client.query(
        "SELECT table, count() AS parts, sum(rows) AS rows, "
        "sum(data_uncompressed_bytes) AS uncompressed, sum(bytes_on_disk) AS on_disk "
        "FROM system.parts WHERE database = {db:String} AND active "
        "GROUP BY table ORDER BY table",
        parameters={"db": DB},
    )
    return [dict(r) for r in result.named_results()]


# --- running the queries ----------------------------------------------------------------------


@dataclass
class QueryCase:
    """One thing to time: a named query with parameters, or a patched copy of its SQL."""

    label: str
    query: str
    params: dict[str, Any]
    sql: str | None = None  # None: the shipped file through run_query

    def run(self, client: Client) -> list[dict[str, Any]]:
        """Run once and return the rows (as ``run_query`` returns them)."""
        if self.sql is None:
            return run_query(client, self.query, self.params, database=DB)
        result = client.query(render(self.sql, DB), parameters=self.params or None)
        return list(result.named_results())

    def text(self) -> str:
        """The SQL that runs (``{db}`` filled in)."""
        return render(self.sql, DB) if self.sql is not None else query_sql(self.query, DB)


@dataclass
class QueryTiming:
    """Latencies of one case."""

    label: str
    query: str
    params: dict[str, Any]
    first_ms: float
    kind: str = "dashboard"  # or "export" (EXPORT_QUERIES: no latency target)
    runs_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    rows_returned: int = 0
    runs_planned: int = 0
    error: str | None = None
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    max_ms: float = 0.0
    cpu_p50_ms: float = 0.0

    def finish(self) -> None:
        """Compute the percentiles from ``runs_ms``."""
        if self.runs_ms:
            self.cpu_p50_ms = percentile(self.cpu_ms, 50)
            self.p50_ms = percentile(self.runs_ms, 50)
            self.p95_ms = percentile(self.runs_ms, 95)
            self.max_ms = max(self.runs_ms)

    @property
    def meets_target(self) -> bool | None:
        """p95 under the target (None for an export: it has none)."""
        if self.kind == "export":
            return None
        return self.error is None and self.p95_ms < TARGET_P95_MS

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "ERROR"
        if self.kind == "export":
            return "none (export)"
        if len(self.runs_ms) < self.runs_planned:
            return "yes" if self.meets_target else f"NO ({len(self.runs_ms)} runs)"
        return "yes" if self.meets_target else "NO"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method)."""
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def time_cases(
    client: Client,
    cases: Sequence[QueryCase],
    runs: int,
    *,
    slow_ms: float = 2_000.0,
    slow_runs: int = 3,
) -> list[QueryTiming]:
    """One warm-up run per case, then ``runs`` rounds running every case once (round-robin,
    so a burst of load from other processes does not land on one query only).

    A case whose warm-up fails is reported with its error and not run again; one whose
    warm-up takes over ``slow_ms`` is timed ``slow_runs`` times only (it misses the target
    by far anyway, and 20 runs of it would dominate the benchmark's run time).
    """
    timings = []
    for case in cases:
        kind = "export" if case.query in EXPORT_QUERIES else "dashboard"
        timing = QueryTiming(case.label, case.query, case.params, 0.0, kind, runs_planned=runs)
        t0 = time.perf_counter()
        try:
            rows = case.run(client)
        except Exception as exc:
            timing.error = str(exc).strip().splitlines()[0][:300]
            print(f"  {case.label}: ERROR {timing.error}", flush=True)
            rows = []
        timing.first_ms = (time.perf_counter() - t0) * 1e3
        timing.rows_returned = len(rows)
        del rows
        timings.append(timing)
    for i in range(runs):
        for case, timing in zip(cases, timings, strict=True):
            if timing.error is not None or (timing.first_ms > slow_ms and i >= slow_runs):
                continue
            c0, t0 = cpu_seconds(), time.perf_counter()
            case.run(client)
            timing.runs_ms.append((time.perf_counter() - t0) * 1e3)
            timing.cpu_ms.append((cpu_seconds() - c0) * 1e3)
    for timing in timings:
        timing.finish()
    return timings


def explain(client: Client, case: QueryCase, kind: str) -> list[str]:
    """``EXPLAIN <kind>`` of the case as text lines (errors become one line)."""
    try:
        result = client.query(f"EXPLAIN {kind} {case.text()}", parameters=case.params or None)
    except Exception as exc:
        return [f"EXPLAIN {kind} failed: {exc}".splitlines()[0]]
    return ["\t".join(str(v) for v in row) for row in result.result_rows]


BULK_ROWS = 100_000


def bulk_costs(client: Client, case: QueryCase) -> dict[str, float]:
    """Where the time of a query returning many rows goes (one run each, ms): the engine
    alone (``SELECT count() FROM (<query>)``), the rows streamed as column blocks, the rows
    as tuples, and as dicts (what ``run_query`` returns)."""
    sql, params = case.text(), case.params or None
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    client.query(f"SELECT count() FROM ({sql})", parameters=params)
    out["engine_only_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    with client.query_column_block_stream(sql, parameters=params) as stream:
        for _ in stream:
            pass
    out["column_blocks_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    client.query(sql, parameters=params).result_rows  # noqa: B018 - decode is the cost
    out["tuples_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    case.run(client)
    out["dicts_ms"] = (time.perf_counter() - t0) * 1e3
    print(f"  {case.label}: " + ", ".join(f"{k} {v:,.0f}" for k, v in out.items()), flush=True)
    return {k: round(v, 1) for k, v in out.items()}


def heavy_customer(client: Client) -> str:
    """The customer with the most journey rows (a worst-case drill-down)."""
    result = client.query(
        f"SELECT customer_id FROM {DB}.journeys GROUP BY customer_id "
        "ORDER BY count() DESC, customer_id LIMIT 1"
    )
    return str(result.result_rows[0][0])


# --- variants: the SQL these queries replaced, and the alternatives -------------------------


@dataclass(frozen=True)
class Variant:
    """Another SQL for one named query, timed beside the shipped one on the same data.

    ``kind`` is ``previous`` (what the query was before migration 0004: the before / after of
    the same run) or ``alternative`` (a design measured and not shipped). ``same_result``
    False means the variant answers something else on purpose (a window), so its rows are
    not compared.
    """

    query: str
    kind: str
    title: str
    sql: str
    same_result: bool = True


#: events per (hour, channel, type) bucket, every bucket merged live (the event total of
#: overview / dead_letter_rate up to migration 0003; what touchpoint_counts does for buckets
#: without a valid refreshed count)
_EVENTS_LIVE = """
    SELECT hour, channel, type, uniqExactMerge(event_ids) AS n
    FROM {db}.touchpoints_hourly
    GROUP BY hour, channel, type"""

_OVERVIEW_REST = """
CROSS JOIN (SELECT count() AS dead_letters FROM {db}.dead_letters FINAL) AS d
CROSS JOIN
(
    SELECT sum(n) AS pain_points
    FROM (SELECT uniqExactMerge(pain_point_ids) AS n FROM {db}.pain_points_daily GROUP BY rule_id)
) AS p
CROSS JOIN
(
    SELECT sum(n) AS care_actions, sum(delivered) AS care_delivered
    FROM
    (
        SELECT
            uniqExactMerge(action_ids) AS n,
            uniqExactMergeIf(action_ids, status = 'delivered') AS delivered
        FROM {db}.care_actions_daily
        GROUP BY kind
    )
) AS c
CROSS JOIN
(
    SELECT count() AS journeys, countIf(outcome = 'open') AS open_journeys
    FROM {db}.journeys FINAL
) AS j
"""

_OVERVIEW_SELECT = """
SELECT
    e.events AS events,
    d.dead_letters AS dead_letters,
    if(e.events + d.dead_letters = 0, 0, d.dead_letters / (e.events + d.dead_letters))
        AS dead_letter_rate,
    p.pain_points AS pain_points,
    c.care_actions AS care_actions,
    c.care_delivered AS care_delivered,
    j.journeys AS journeys,
    j.open_journeys AS open_journeys
FROM"""

_DEAD_LETTER_RATE = """
WITH
    ({events}) AS events,
    (SELECT count() FROM {{db}}.dead_letters FINAL) AS dead_total
SELECT
    reason,
    count() AS dead_letters,
    events + dead_total AS input,
    dead_letters / input AS rate
FROM {{db}}.dead_letters FINAL
GROUP BY reason
ORDER BY dead_letters DESC, reason
"""

VARIANTS: list[Variant] = [
    Variant(
        query="landed_by_channel",
        kind="previous",
        title="touchpoints FINAL, count(DISTINCT event_id)",
        sql="""
SELECT channel, count(DISTINCT event_id) AS events
FROM {db}.touchpoints FINAL
GROUP BY channel
ORDER BY events DESC, channel
""",
    ),
    Variant(
        query="landed_by_channel",
        kind="alternative",
        title="every bucket merged live (no refreshed counts)",
        sql=f"""
SELECT channel, sum(n) AS events
FROM ({_EVENTS_LIVE}
)
GROUP BY channel
ORDER BY events DESC, channel
""",
    ),
    Variant(
        query="landed_totals",
        kind="previous",
        title="touchpoints FINAL, count(DISTINCT ...)",
        sql="""
SELECT t.touchpoints, d.dead_letters, t.customers
FROM
(
    SELECT
        count(DISTINCT event_id) AS touchpoints,
        countIf(DISTINCT customer_id, customer_id != '') AS customers
    FROM {db}.touchpoints FINAL
) AS t
CROSS JOIN (SELECT count() AS dead_letters FROM {db}.dead_letters FINAL) AS d
""",
    ),
    Variant(
        query="landed_totals",
        kind="alternative",
        title="every bucket merged live (no refreshed counts)",
        sql=f"""
SELECT t.touchpoints, d.dead_letters, t.customers
FROM
(
    SELECT
        (SELECT sum(n) FROM ({_EVENTS_LIVE})) AS touchpoints,
        (SELECT uniqExact(customer_id) FROM {{db}}.touchpoint_customers) AS customers
) AS t
CROSS JOIN (SELECT count() AS dead_letters FROM {{db}}.dead_letters FINAL) AS d
""",
    ),
    Variant(
        query="worst_journeys",
        kind="previous",
        title="worst as a WITH subquery (inlined, so read 3 times)",
        sql="""
WITH
    (SELECT toDate(max(started_at)) FROM {db}.journeys) AS latest,
    worst AS
    (
        SELECT
            journey_id, customer_id, tier, outcome, score, steps, channels, pain_point_ids,
            started_at, ended_at
        FROM {db}.journeys FINAL
        WHERE toDate(started_at) > latest - {days:UInt32}
        ORDER BY score ASC, started_at DESC, journey_id
        LIMIT {limit:UInt32}
    ),
    (
        SELECT CAST((groupArray(pain_point_id), groupArray(toString(rule_id))),
                    'Map(String, String)')
        FROM {db}.pain_points FINAL
        WHERE customer_id IN (SELECT customer_id FROM worst)
            AND pain_point_id IN (SELECT arrayJoin(pain_point_ids) FROM worst)
    ) AS rule_of
SELECT
    journey_id, customer_id, tier, outcome, round(score, 1) AS score, steps, channels,
    arrayMap(id -> if(mapContains(rule_of, id), rule_of[id], id), pain_point_ids) AS pain_points,
    started_at, ended_at
FROM worst
ORDER BY score ASC, started_at DESC, journey_id
""",
    ),
    Variant(
        query="overview",
        kind="previous",
        title="every bucket merged live",
        sql=f"""{_OVERVIEW_SELECT}
(SELECT sum(n) AS events FROM ({_EVENTS_LIVE})) AS e{_OVERVIEW_REST}""",
    ),
    Variant(
        query="overview",
        kind="alternative",
        title="events of the last 30 days only, merged live (other figures)",
        same_result=False,
        sql=f"""
WITH (SELECT max(hour) FROM {{db}}.touchpoints_hourly) AS latest{_OVERVIEW_SELECT}
(
    SELECT sum(n) AS events
    FROM
    (
        SELECT uniqExactMerge(event_ids) AS n
        FROM {{db}}.touchpoints_hourly
        WHERE hour > latest - toIntervalDay(30)
        GROUP BY hour, channel, type
    )
) AS e{_OVERVIEW_REST}""",
    ),
    Variant(
        query="overview",
        kind="alternative",
        title="refreshed counts only (up to 1 min stale)",
        sql=f"""{_OVERVIEW_SELECT}
(SELECT sum(events) AS events FROM {{db}}.touchpoints_hourly_counts) AS e{_OVERVIEW_REST}""",
    ),
    Variant(
        query="dead_letter_rate",
        kind="previous",
        title="every bucket merged live",
        sql=_DEAD_LETTER_RATE.format(events=f"SELECT sum(n) FROM ({_EVENTS_LIVE})"),
    ),
    Variant(
        query="dead_letter_rate",
        kind="alternative",
        title="refreshed counts only (up to 1 min stale)",
        sql=_DEAD_LETTER_RATE.format(
            events="SELECT sum(events) FROM {db}.touchpoints_hourly_counts"
        ),
    ),
]

#: the queries that read touchpoint_counts (migration 0004)
COUNTS_QUERIES = ("landed_by_channel", "landed_totals", "overview", "dead_letter_rate")
COUNTS_VIEW = "touchpoints_hourly_counts"


def normalised(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with float noise rounded away (a rate computed in another order)."""
    return [
        {k: round(v, 12) if isinstance(v, float) else v for k, v in row.items()} for row in rows
    ]


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.query_bench",
        description="Load N touchpoints (and proportionate journeys, pain points, care "
        "actions, dead letters, identity links) into a fresh embedded chDB, then time every "
        "named query with its default parameters (p50/p95/max ms): the dashboard queries "
        "against the 500 ms p95 target, the reconciliation exports apart.",
    )
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help="touchpoints to load (others scale)"
    )
    parser.add_argument("--runs", type=int, default=20, help="timed runs per query")
    parser.add_argument(
        "--dup-ratio", type=float, default=0.005, help="share of touchpoints landed twice"
    )
    parser.add_argument("--seed", type=int, default=7, help="simulator seed of the template")
    parser.add_argument(
        "--merge-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for background merges to finish before timing",
    )
    parser.add_argument(
        "--no-variants",
        action="store_true",
        help="skip timing the previous SQL and the alternatives beside the shipped queries",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON report path")
    parser.add_argument("--keep", action="store_true", help="keep the temporary chDB directory")
    return parser.parse_args(argv)


def refresh_counts(client: Client) -> dict[str, Any]:
    """Refresh the bucket counts of touchpoint_counts now and wait for it (what the view's
    own schedule does within a minute); returns the refresh's entry in system.view_refreshes."""
    client.command(f"SYSTEM START VIEW {DB}.{COUNTS_VIEW}")
    client.command(f"SYSTEM REFRESH VIEW {DB}.{COUNTS_VIEW}")
    client.command(f"SYSTEM WAIT VIEW {DB}.{COUNTS_VIEW}")
    result = client.query(
        "SELECT status, last_success_duration_ms, read_rows, written_rows "
        "FROM system.view_refreshes WHERE database = {db:String} AND view = {view:String}",
        parameters={"db": DB, "view": COUNTS_VIEW},
    )
    return next(iter(result.named_results()), {})


def counts_state(client: Client) -> dict[str, int]:
    """How touchpoint_counts would answer now: buckets taken from the refreshed counts
    (cached) and buckets merged live, with their events."""
    row = client.query(
        f"SELECT countIf(cached = 1) AS cached_buckets, countIf(cached = 0) AS live_buckets, "
        f"sumIf(events, cached = 1) AS cached_events, sumIf(events, cached = 0) AS live_events "
        f"FROM {DB}.touchpoint_counts"
    )
    return {k: int(v) for k, v in next(iter(row.named_results())).items()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the tables, write the JSON report and return it."""
    args = parse_args(argv)
    suffix = "" if args.rows == DEFAULT_ROWS else f"_{args.rows}"
    out = args.out or RESULTS_DIR / f"query_bench{suffix}.json"
    started = time.time()
    machine = machine_info()
    calibration = [calibrate_ms()]
    plan = Plan.for_rows(args.rows, args.dup_ratio)
    client, tmp = open_chdb("touchpath-query-bench-")
    try:
        server = client.server_version
        migrate(client, DB)
        t0 = time.perf_counter()
        steps = load(client, plan, seed=args.seed)
        load_s = time.perf_counter() - t0
        print(f"loaded in {load_s:.1f}s; waiting for background merges", flush=True)
        merge_wait = wait_for_merges(client, args.merge_timeout, quiet=5.0)
        stats = table_stats(client)
        print(f"merges settled after {merge_wait:.1f}s")
        print_table(
            ["table", "rows", "parts", "uncompressed MiB", "on disk MiB"],
            [
                [s["table"], int(s["rows"]), int(s["parts"]), int(s["uncompressed"]) / 2**20,
                 int(s["on_disk"]) / 2**20]
                for s in stats
            ],
        )  # fmt: skip
        # the view refreshes every minute by itself; refreshing now instead of waiting for it
        # times the steady state (cold figures: below, and the "every bucket live" variants)
        refresh = refresh_counts(client)
        counts_before = counts_state(client)
        print(f"bucket counts refreshed: {refresh}; {counts_before}")

        cases = [QueryCase(name, name, with_defaults(name)) for name in query_names()]
        customer = heavy_customer(client)
        cases.append(
            QueryCase(
                "customer_journey (busiest customer)",
                "customer_journey",
                with_defaults("customer_journey", {"customer_id": customer}),
            )
        )
        print(f"\ntiming {len(cases)} queries × {args.runs} runs", flush=True)
        timings = time_cases(client, cases, args.runs)
        counts_after = counts_state(client)
        estimates = {c.label: explain(client, c, "ESTIMATE") for c in cases}
        slow = [t for t in timings if t.kind == "dashboard" and not t.meets_target and not t.error]
        plans = {t.label: explain(client, _case(cases, t.label), "indexes = 1") for t in slow}
        bulk = {
            t.label: bulk_costs(client, _case(cases, t.label))
            for t in timings
            if t.kind == "export" and t.error is None
        }

        cold = time_cold(client, cases, args.runs)
        variant_results = []
        if not args.no_variants:
            for variant in VARIANTS:
                variant_results.append(run_variant(client, variant, cases, args.runs))
    finally:
        client.close()
        if args.keep:
            print(f"kept the chDB directory {tmp} (database {DB})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    calibration.append(calibrate_ms())
    print()
    print(
        f"named queries, {plan.touchpoints:,} touchpoints, chDB {server}, "
        f"{args.runs} runs each, {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"target p95 < {TARGET_P95_MS:.0f} ms for the dashboard queries"
    )
    headers = ["query", "rows out", "first ms", "p50 ms", "p95 ms", "max ms", "CPU p50 ms"]
    for kind, title in (("dashboard", "dashboard queries"), ("export", "reconciliation exports")):
        print(f"\n{title}:")
        print_table(
            [*headers, "p95 < 500" if kind == "dashboard" else "target"],
            [
                [t.label, t.rows_returned, t.first_ms, t.p50_ms, t.p95_ms, t.max_ms,
                 t.cpu_p50_ms, t.verdict]
                for t in timings
                if t.kind == kind
            ],
        )  # fmt: skip
    print("\ncold: no refreshed bucket counts (before the first refresh, or all parts merged):")
    print_table(
        ["query", "p50 ms", "p95 ms", "max ms", "CPU p50 ms", "p95 < 500"],
        [[t.label, t.p50_ms, t.p95_ms, t.max_ms, t.cpu_p50_ms, t.verdict] for t in cold],
    )
    if variant_results:
        print("\nvariants (same data, interleaved with the shipped query):")
        print_table(
            ["query", "kind", "variant", "shipped p50", "shipped p95", "variant p50",
             "variant p95", "same result"],
            [
                [r["query"], r["kind"], r["title"], r["shipped_p50_ms"], r["shipped_p95_ms"],
                 r["p50_ms"], r["p95_ms"], _yes_no(r["same_result"])]
                for r in variant_results
            ],
        )  # fmt: skip
    print(
        f"\nload {load_s:.1f}s (+{merge_wait:.1f}s merges); "
        f"peak RSS {process_peak_rss_mib():.0f} MiB; CPU calibration {calibration[0]:.0f} / "
        f"{calibration[1]:.0f} ms (start / end); load average {os.getloadavg()[0]:.1f}"
    )
    report = {
        "benchmark": "query_bench",
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "wall_seconds": round(time.time() - started, 1),
        "command": " ".join(
            ["python -m benchmarks.query_bench", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": {
            **machine,
            "loadavg_at_end": list(os.getloadavg()),
            "calibration_ms_start_end": calibration,
        },
        "chdb_server_version": server,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "plan": asdict(plan),
        "load": {
            "seconds": round(load_s, 1),
            "merge_wait_seconds": round(merge_wait, 1),
            "steps": [{**asdict(s), "rows_per_s": round(s.rows_per_s)} for s in steps],
            "tables": stats,
        },
        "target_p95_ms": TARGET_P95_MS,
        "export_queries": sorted(EXPORT_QUERIES),
        "bucket_counts": {
            "refresh": refresh,
            "before_timing": counts_before,
            "after_timing": counts_after,
        },
        "queries": [_timing_json(t) for t in timings],
        "cold": [_timing_json(t) for t in cold],
        "explain_estimate": estimates,
        "explain_slow": plans,
        "bulk_queries": bulk,
        "variants": variant_results,
        "process_peak_rss_mib": round(process_peak_rss_mib(), 1),
    }
    write_json(out, report)
    print(f"wrote {out}")
    return report


def _yes_no(value: bool | str) -> str:
    return value if isinstance(value, str) else "yes" if value else "NO"


def _timing_json(t: QueryTiming) -> dict[str, Any]:
    return {**asdict(t), "meets_target": t.meets_target, "verdict": t.verdict}


def _case(cases: Sequence[QueryCase], label: str) -> QueryCase:
    return next(c for c in cases if c.label == label)


def time_cold(client: Client, cases: Sequence[QueryCase], runs: int) -> list[QueryTiming]:
    """The queries that read touchpoint_counts with no valid refreshed count at all (as
    before the view's first refresh, or for the buckets of parts merged since the last one):
    scheduled refreshes stopped and the counts emptied, then refreshed again."""
    client.command(f"SYSTEM STOP VIEW {DB}.{COUNTS_VIEW}")
    try:
        client.command(f"TRUNCATE TABLE {DB}.{COUNTS_VIEW}")
        state = counts_state(client)
        assert state["cached_buckets"] == 0, state
        cold = [
            QueryCase(f"{c.query} (cold)", c.query, c.params)
            for c in cases
            if c.query in COUNTS_QUERIES
        ]
        timings = time_cases(client, cold, runs)
    finally:
        refresh_counts(client)
    for t in timings:
        print(f"  {t.label}: p50 {t.p50_ms:.0f} p95 {t.p95_ms:.0f} ms", flush=True)
    return timings


def run_variant(
    client: Client, variant: Variant, cases: Sequence[QueryCase], runs: int
) -> dict[str, Any]:
    """Time the variant interleaved with the shipped query (same data, same moment) and
    compare their rows."""
    shipped = _case(cases, variant.query)
    other = QueryCase(f"{variant.query} [{variant.title}]", variant.query, shipped.params,
                      variant.sql)  # fmt: skip
    mine, theirs = time_cases(client, [shipped, other], runs)
    same: bool | str = "not compared"
    if variant.same_result:
        same = mine.error is None and theirs.error is None
        if same:
            same = normalised(shipped.run(client)) == normalised(other.run(client))
    print(
        f"  {variant.query} [{variant.kind}: {variant.title}]: p95 {theirs.p95_ms:.0f} ms "
        f"(shipped {mine.p95_ms:.0f} ms; same result: {same})",
        flush=True,
    )
    return {
        "query": variant.query,
        "kind": variant.kind,
        "title": variant.title,
        "sql": other.text(),
        "shipped_p50_ms": mine.p50_ms,
        "shipped_p95_ms": mine.p95_ms,
        "shipped_cpu_p50_ms": mine.cpu_p50_ms,
        "p50_ms": theirs.p50_ms,
        "p95_ms": theirs.p95_ms,
        "max_ms": theirs.max_ms,
        "cpu_p50_ms": theirs.cpu_p50_ms,
        "runs_ms": theirs.runs_ms,
        "runs_planned": theirs.runs_planned,
        "same_result": same,
        "error": theirs.error or mine.error,
        "explain_estimate": explain(client, other, "ESTIMATE"),
    }


if __name__ == "__main__":
    main()
