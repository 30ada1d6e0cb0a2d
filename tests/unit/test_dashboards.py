"""Dashboard queries on the real embedded engine (chDB), against figures computed in Python.

A small hand-made scenario (five customers over three days: a failed checkout that ends in
a long call queue, repeat calls, a complaint, a low survey score, care actions delivered,
held, suppressed, failed twice and dead-lettered) is landed into every table; each named
query must return what the scenario says, computed here independently. Then every row is
landed again as a real duplicate (no dedup token, later landing times, journey versions
out of order): no figure may move. The Grafana dashboard must be the generated one, and
each of its panels must be a named query that runs.

chDB allows one data directory per process at a time: this module opens one engine and
works in its own database.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from clickhouse_connect.driver import Client

from sinks.clickhouse import ClickHouseWriter, connect, migrate, query_names, run_query
from sinks.clickhouse.migrate import default_ddl_dir, load_migrations
from sinks.clickhouse.queries import EXPORT_QUERIES, query_sql
from sinks.clickhouse.sqlfiles import render, split_statements
from streams.config import Settings
from streams.web.params import declared_params, used_params, with_defaults

REPO = Path(__file__).resolve().parents[2]
D0 = datetime(2026, 3, 10, tzinfo=UTC)
LANDED = D0 + timedelta(days=5)
STAGES = ["decided", "held", "sent", "delivered", "suppressed", "failed", "dead_lettered"]
CONTACTS = {("call_centre", "call_started"), ("store", "service_request"), ("store", "complaint")}
CONTACTS |= {("sms", "reply")}
DETAIL_KEYS = [
    *("url", "error_code", "product", "order_value", "call_id", "wait_seconds"),
    *("handle_seconds", "reason", "resolved", "transfers", "store_id", "amount"),
    *("template", "reply_text", "score"),
]


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return D0 + timedelta(days=day, hours=hour, minutes=minute)


# --- the scenario ---------------------------------------------------------------------------


@dataclass
class Scenario:
    touchpoints: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    journeys: list[dict[str, Any]] = field(default_factory=list)  # every version
    pain_points: list[dict[str, Any]] = field(default_factory=list)
    care_actions: list[dict[str, Any]] = field(default_factory=list)  # one row per status
    identity_links: list[dict[str, Any]] = field(default_factory=list)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "touchpoints": self.touchpoints,
            "dead_letters": self.dead_letters,
            "journeys": self.journeys,
            "pain_points": self.pain_points,
            "care_actions": self.care_actions,
            "identity_links": self.identity_links,
        }

    def customer_of(self, identity_key: str) -> str:
        """The customer an identity key resolves to (an unlinked key stands for itself)."""
        for link in self.identity_links:
            if link["identity_key"] == identity_key:
                return link["customer_id"]
        return identity_key.removeprefix("customer_id:")

    # the rows ReplacingMergeTree keeps
    def final_journeys(self) -> list[dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for j in self.journeys:
            if j["journey_id"] not in latest or j["version"] > latest[j["journey_id"]]["version"]:
                latest[j["journey_id"]] = j
        return list(latest.values())

    def final_actions(self) -> list[dict[str, Any]]:
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for a in self.care_actions:
            key = (a["action_id"], a["status"])
            if key not in latest or a["recorded_at"] > latest[key]["recorded_at"]:
                latest[key] = a
        return list(latest.values())


def build_scenario() -> Scenario:
    s = Scenario()

    def tp(eid: str, channel: str, type_: str, when: datetime, ids: dict[str, str], **attrs):
        key = next(
            f"{k}:{ids[k]}"
            for k in ("customer_id", "loyalty_id", "email_hash", "phone_hash", "anonymous_id")
            if ids.get(k)
        )
        wire = {
            "schema_version": 1,
            "event_id": eid,
            "channel": channel,
            "type": type_,
            "occurred_at": when.isoformat(),
            "identifiers": ids,
            **attrs,
        }
        s.touchpoints.append(
            {
                "event_id": eid,
                "channel": channel,
                "type": type_,
                "occurred_at": when,
                "identity_key": key,
                "customer_id": ids.get("customer_id", ""),
                "anonymous_id": ids.get("anonymous_id", ""),
                "phone_hash": ids.get("phone_hash", ""),
                "email_hash": ids.get("email_hash", ""),
                "loyalty_id": "",
                "payload": json.dumps(wire),
                "source_partition": len(s.touchpoints) % 3,
                "source_offset": len(s.touchpoints),
                "ingested_at": LANDED,
            }
        )

    c1, c2, c3 = {"customer_id": "c1"}, {"customer_id": "c2"}, {"customer_id": "c3"}
    c4, c5 = {"customer_id": "c4"}, {"customer_id": "c5"}
    # c1: browses anonymously, checkout fails, calls (long queue), calls twice more, complains
    tp("e-anon-01", "web", "page_view", at(0, 7, 50), {"anonymous_id": "a-77"}, url="/shop")
    tp("e-c1-01", "web", "page_view", at(0, 8), c1, url="/cart")
    tp("e-c1-02", "web", "checkout_failed", at(0, 8, 5), c1, error_code="PAY-502")
    tp(
        "e-c1-03",
        "call_centre",
        "call_started",
        at(0, 9),
        {**c1, "phone_hash": "ph1"},
        call_id="k1",
    )
    tp("e-c1-04", "call_centre", "answered", at(0, 9, 7), c1, call_id="k1", wait_seconds=420.0)
    tp("e-c1-05", "call_centre", "call_ended", at(0, 9, 20), c1, call_id="k1", resolved=False)
    tp("e-c1-06", "call_centre", "call_started", at(1, 10), c1, call_id="k2")
    tp("e-c1-07", "call_centre", "call_started", at(2, 11), c1, call_id="k3")
    tp("e-c1-08", "store", "complaint", at(2, 15), c1, store_id="S1")
    # c2: buys, then answers the survey (9/10) the next day
    tp("e-c2-01", "web", "page_view", at(0, 12), c2, url="/")
    tp("e-c2-02", "web", "purchase", at(0, 12, 10), c2, order_value=59.9, product="kettle")
    tp("e-c2-03", "sms", "reply", at(1, 9), c2, score=9)
    # c3: store visit and complaint, a call identified by phone only, a low survey score
    tp("e-c3-01", "store", "visit", at(1, 10), c3, store_id="S2")
    tp("e-c3-02", "store", "complaint", at(1, 10, 30), c3, store_id="S2")
    tp("e-c3-03", "call_centre", "call_started", at(1, 11), {"phone_hash": "ph3"})
    tp("e-c3-04", "sms", "reply", at(1, 18), c3, score=3, reply_text="meh")
    # c4: web, call, web; c5: one call
    tp("e-c4-01", "web", "page_view", at(0, 13), c4)
    tp("e-c4-02", "call_centre", "call_started", at(0, 13, 30), c4, wait_seconds=360.0)
    tp("e-c4-03", "web", "page_view", at(0, 14), c4)
    tp("e-c5-01", "call_centre", "call_started", at(2, 16), c5)
    # contacts known by a weak identifier: c2 by loyalty card (linked), a stranger by phone
    tp("e-c2-04", "store", "service_request", at(1, 12), {"loyalty_id": "L2"}, store_id="S1")
    tp("e-x-01", "call_centre", "call_started", at(2, 17), {"phone_hash": "ph9"})
    # background traffic for the volume chart
    for i in range(12):
        cust = {"customer_id": f"c{6 + i % 4}"}
        tp(f"e-bg-{i:02d}", "web", "page_view", at(i % 3, 6 + 2 * i), cust, url=f"/p/{i}")

    for key, customer in (
        ("anonymous_id:a-77", "c1"),  # c1 logged in after browsing
        ("phone_hash:ph1", "c1"),
        ("phone_hash:ph3", "c3"),  # from the CRM feed: c3's phone calls are c3's
        ("loyalty_id:L2", "c2"),
    ):
        s.identity_links.append(
            {
                "identity_key": key,
                "customer_id": customer,
                "linked_at": D0,
                "landed_at": LANDED,
            }
        )

    for i, reason in enumerate(["invalid_json", "invalid_json", "unknown_channel"], start=1):
        s.dead_letters.append(
            {
                "dead_letter_id": f"dl-{i}",
                "reason": reason,
                "error": "bad record",
                "source_topic": "touchpoints.raw",
                "source_partition": 0,
                "source_offset": 100 + i,
                "raw": b"{nope",
                "raw_size": 5,
                "received_at": LANDED,
            }
        )

    def journey(jid, cust, tier, start, end, channels, steps, outcome, score, pps, version):
        s.journeys.append(
            {
                "journey_id": jid,
                "customer_id": cust,
                "tier": tier,
                "started_at": start,
                "ended_at": end,
                "channels": channels,
                "steps": steps,
                "outcome": outcome,
                "score": score,
                "pain_point_ids": pps,
                "version": version,
                "updated_at": LANDED,
            }
        )

    web, call, store, sms = "web", "call_centre", "store", "sms"
    # J1 grows over three versions; J2's score moves after it completed (survey reply)
    journey("J1", "c1", "A", at(0, 7, 50), at(0, 8, 5), [web], 3, "open", 100.0, [], 1)
    journey("J1", "c1", "A", at(0, 7, 50), at(0, 9, 20), [web, call], 6, "open", 62.0,
            ["P1", "P2"], 2)  # fmt: skip
    journey("J1", "c1", "A", at(0, 7, 50), at(2, 15), [web, call, store], 9, "abandoned", 35.0,
            ["P1", "P2", "P3"], 3)  # fmt: skip
    journey("J2", "c2", "B", at(0, 12), at(0, 12), [web], 1, "open", 100.0, [], 1)
    journey("J2", "c2", "B", at(0, 12), at(0, 12, 10), [web], 2, "completed", 95.0, [], 2)
    journey("J2", "c2", "B", at(0, 12), at(1, 9), [web, sms], 3, "completed", 88.0, [], 3)
    journey("J3", "c3", "C", at(1, 10), at(1, 11), [store, call], 3, "open", 70.0, ["P5"], 1)
    journey("J3", "c3", "C", at(1, 10), at(1, 18), [store, call, sms], 4, "abandoned", 42.0,
            ["P5", "P4"], 2)  # fmt: skip
    journey("J4", "c4", "B", at(0, 13), at(0, 14), [web, call, web], 3, "completed", 60.0,
            ["P6"], 1)  # fmt: skip
    journey("J5", "c5", "A", at(2, 16), at(2, 16), [call], 1, "open", 80.0, ["P7"], 1)

    def pain(pid, rule, cust, jid, sev, channels, anchor, evidence, when):
        s.pain_points.append(
            {
                "pain_point_id": pid,
                "rule_id": rule,
                "customer_id": cust,
                "journey_id": jid,
                "severity": sev,
                "channels": channels,
                "anchor_event_id": anchor,
                "evidence_event_ids": evidence,
                "detected_at": when,
                "landed_at": LANDED,
            }
        )

    pain("P1", "digital_failure_to_call", "c1", "J1", 4, [web, call], "e-c1-02",
         ["e-anon-01", "e-c1-02", "e-c1-03"], at(0, 9))  # fmt: skip
    pain("P2", "long_queue", "c1", "J1", 3, [call], "e-c1-04", ["e-c1-04"], at(0, 9, 7))
    pain("P3", "repeat_contact", "c1", "J1", 4, [call, store], "e-c1-07",
         ["e-c1-03", "e-c1-06", "e-c1-07"], at(2, 11))  # fmt: skip
    pain("P4", "low_survey_score", "c3", "J3", 3, [sms], "e-c3-04", ["e-c3-04"], at(1, 18))
    pain("P5", "store_complaint", "c3", "J3", 3, [store], "e-c3-02", ["e-c3-02"], at(1, 10, 30))
    pain("P6", "long_queue", "c4", "J4", 3, [call], "e-c4-02", ["e-c4-02"], at(0, 13, 30))
    pain("P7", "long_queue", "c5", "J5", 3, [call], "e-c5-01", ["e-c5-01"], at(2, 16, 5))

    def action(aid, pid, cust, rule, kind, template, prio, channel, decided, *steps):
        for n, (status, reason, attempt) in enumerate(steps):
            s.care_actions.append(
                {
                    "action_id": aid,
                    "pain_point_id": pid,
                    "customer_id": cust,
                    "rule_id": rule,
                    "kind": kind,
                    "template": template,
                    "priority": prio,
                    "channel": channel,
                    "status": status,
                    "reason": reason,
                    "decided_at": decided,
                    "recorded_at": LANDED + timedelta(minutes=n),
                    "attempt": attempt,
                    "sequence": "",
                    "journey_id": "",
                    "tier": "",
                    "due_at": decided,
                    "http_status": 0,
                }
            )

    ok = ("decided", "", 0)
    action("act-1", "P1", "c1", "digital_failure_to_call", "sms", "apology_sms", 2, sms,
           at(0, 9), ok, ("sent", "", 1), ("delivered", "", 1))  # fmt: skip
    action("act-2", "P1", "c1", "digital_failure_to_call", "manager_escalation",
           "tier_a_manager", 1, "crm", at(0, 9), ok, ("held", "quiet_hours", 0),
           ("sent", "", 1))  # fmt: skip
    # a second failed attempt replaces the first one's row (same action, same status)
    action("act-3", "P3", "c1", "repeat_contact", "outbound_call", "priority_callback", 1,
           "webhook", at(2, 11), ok, ("failed", "timeout", 1), ("failed", "HTTP 503", 2),
           ("dead_lettered", "retries exhausted", 3))  # fmt: skip
    action("act-4", "P4", "c3", "low_survey_score", "sms", "feedback_followup", 3, sms,
           at(1, 18), ok, ("suppressed", "opted_out", 0))  # fmt: skip
    action("act-5", "P5", "c3", "store_complaint", "coupon", "sorry_coupon", 2, "email",
           at(1, 10, 30), ok, ("suppressed", "frequency_cap", 0))  # fmt: skip
    action("act-6", "P6", "c4", "long_queue", "sms", "apology_sms", 2, sms, at(0, 13, 30), ok,
           ("sent", "", 1))  # fmt: skip
    action("act-7", "P7", "c5", "long_queue", "manager_escalation", "tier_a_manager", 1,
           "crm", at(2, 16, 5), ok, ("held", "quiet_hours", 0))  # fmt: skip
    return s


SCENARIO = build_scenario()


def duplicates(s: Scenario) -> dict[str, list[dict[str, Any]]]:
    """Every row again, landed later (a replay), journeys newest version first."""
    later = timedelta(days=1)
    return {
        "touchpoints": [{**r, "ingested_at": r["ingested_at"] + later} for r in s.touchpoints],
        "dead_letters": [{**r, "received_at": r["received_at"] + later} for r in s.dead_letters],
        "journeys": sorted(s.journeys, key=lambda j: -j["version"]),
        "pain_points": [{**r, "landed_at": r["landed_at"] + later} for r in s.pain_points],
        "care_actions": [{**r, "recorded_at": r["recorded_at"] + later} for r in s.care_actions],
        "identity_links": [{**r, "landed_at": r["landed_at"] + later} for r in s.identity_links],
    }


# --- the figures, computed in Python -------------------------------------------------------


def window_start_day(days_seen: list[date], days: int) -> date:
    return max(days_seen) - timedelta(days=days)


def expect_overview(s: Scenario) -> list[dict[str, Any]]:
    events = len({t["event_id"] for t in s.touchpoints})
    dead = len({d["dead_letter_id"] for d in s.dead_letters})
    final = s.final_journeys()
    return [
        {
            "events": events,
            "dead_letters": dead,
            "dead_letter_rate": dead / (events + dead),
            "pain_points": len({p["pain_point_id"] for p in s.pain_points}),
            "care_actions": len({a["action_id"] for a in s.care_actions}),
            "care_delivered": len(
                {a["action_id"] for a in s.care_actions if a["status"] == "delivered"}
            ),
            "journeys": len(final),
            "open_journeys": sum(j["outcome"] == "open" for j in final),
        }
    ]


def expect_live_volume(s: Scenario, hours: int) -> list[dict[str, Any]]:
    def hour_of(t: datetime) -> datetime:
        return t.replace(minute=0, second=0, microsecond=0)

    latest = max(hour_of(t["occurred_at"]) for t in s.touchpoints)
    counts: dict[tuple[datetime, str], set[str]] = defaultdict(set)
    for t in s.touchpoints:
        h = hour_of(t["occurred_at"])
        if h > latest - timedelta(hours=hours):
            counts[(h, t["channel"])].add(t["event_id"])
    return [{"hour": h, "channel": c, "events": len(ids)} for (h, c), ids in sorted(counts.items())]


def expect_top_pain_points(s: Scenario, period_days: int) -> list[dict[str, Any]]:
    latest = max(p["detected_at"].date() for p in s.pain_points)
    cur_from, prev_from = latest - timedelta(days=period_days), latest - timedelta(2 * period_days)
    rows = []
    for rule in sorted({p["rule_id"] for p in s.pain_points}):
        mine = [p for p in s.pain_points if p["rule_id"] == rule]
        cur = [p for p in mine if p["detected_at"].date() > cur_from]
        prev = [p for p in mine if prev_from < p["detected_at"].date() <= cur_from]
        n_cur, n_prev = (
            len({p["pain_point_id"] for p in cur}),
            len({p["pain_point_id"] for p in prev}),
        )
        if n_cur == 0 and n_prev == 0:
            continue
        rows.append(
            {
                "rule_id": rule,
                "pain_points": n_cur,
                "previous": n_prev,
                "change": n_cur - n_prev,
                "change_pct": None if n_prev == 0 else round(100 * (n_cur - n_prev) / n_prev, 1),
                "customers": len({p["customer_id"] for p in cur}),
            }
        )
    return sorted(rows, key=lambda r: (-r["pain_points"], r["rule_id"]))


def expect_pain_points_trend(s: Scenario, days: int) -> list[dict[str, Any]]:
    start = window_start_day([p["detected_at"].date() for p in s.pain_points], days)
    counts: dict[tuple[date, str], set[str]] = defaultdict(set)
    for p in s.pain_points:
        if p["detected_at"].date() > start:
            counts[(p["detected_at"].date(), p["rule_id"])].add(p["pain_point_id"])
    return [{"day": d, "rule_id": r, "pain_points": len(v)} for (d, r), v in sorted(counts.items())]


def expect_care_funnel(s: Scenario, days: int) -> list[dict[str, Any]]:
    start = window_start_day([a["decided_at"].date() for a in s.care_actions], days)
    counts: dict[tuple[str, str], set[str]] = defaultdict(set)
    for a in s.care_actions:
        if a["decided_at"].date() > start:
            counts[(a["kind"], a["status"])].add(a["action_id"])
    rows = [
        {"kind": k, "status": st, "stage": STAGES.index(st) + 1, "actions": len(v)}
        for (k, st), v in counts.items()
    ]
    return sorted(rows, key=lambda r: (r["kind"], r["stage"], r["status"]))


def expect_care_suppressions(s: Scenario, days: int) -> list[dict[str, Any]]:
    start = window_start_day([a["decided_at"].date() for a in s.care_actions], days)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for a in s.final_actions():
        held = a["status"] in {"suppressed", "held", "failed", "dead_lettered"}
        if held and a["decided_at"].date() > start:
            counts[(a["status"], a["reason"])] += 1
    rows = [{"status": st, "reason": r, "actions": n} for (st, r), n in counts.items()]
    return sorted(rows, key=lambda r: (-r["actions"], r["status"], r["reason"]))


def expect_journey_map(s: Scenario, days: int) -> list[dict[str, Any]]:
    start = window_start_day(
        [j["started_at"].date() for j in s.journeys if len(j["channels"]) > 1], days
    )
    pairs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for j in s.journeys:  # every version: a pair once seen stays counted, once per journey
        if j["started_at"].date() > start:
            for a, b in zip(j["channels"], j["channels"][1:], strict=False):
                pairs[(a, b)].add(j["journey_id"])
    rows = [{"from_channel": a, "to_channel": b, "journeys": len(v)} for (a, b), v in pairs.items()]
    return sorted(rows, key=lambda r: (-r["journeys"], r["from_channel"], r["to_channel"]))


def expect_score_by_tier(s: Scenario, days: int) -> list[dict[str, Any]]:
    closed = [j for j in s.final_journeys() if j["outcome"] != "open"]
    start = window_start_day(
        [j["ended_at"].date() for j in s.journeys if j["outcome"] != "open"], days
    )
    rows = []
    for tier in sorted({j["tier"] for j in closed}):
        scores = sorted(
            struct.unpack("f", struct.pack("f", j["score"]))[0]
            for j in closed
            if j["tier"] == tier and j["ended_at"].date() > start
        )
        if not scores:
            continue

        def q(level: float, scores: list[float] = scores) -> float:
            return round(scores[int(level * len(scores))], 1)

        rows.append(
            {
                "tier": tier,
                "journeys": len(scores),
                "avg_score": round(sum(scores) / len(scores), 1),
                "p10": q(0.1),
                "median": q(0.5),
                "p90": q(0.9),
                "poor": sum(x < 50 for x in scores),
                "fair": sum(50 <= x < 80 for x in scores),
                "good": sum(x >= 80 for x in scores),
            }
        )
    return rows


def expect_repeat_contact_rate(s: Scenario, days: int) -> list[dict[str, Any]]:
    contacts = [t for t in s.touchpoints if (t["channel"], t["type"]) in CONTACTS]
    start = window_start_day([t["occurred_at"].date() for t in contacts], days)
    contacting = {
        s.customer_of(t["identity_key"]) for t in contacts if t["occurred_at"].date() > start
    }
    repeating = {
        p["customer_id"]
        for p in s.pain_points
        if p["rule_id"] == "repeat_contact" and p["detected_at"].date() > start
    }
    rate = len(repeating) / len(contacting) if contacting else 0.0
    return [
        {
            "contacting_customers": len(contacting),
            "repeat_customers": len(repeating),
            "rate": rate,
        }
    ]


def expect_dead_letter_rate(s: Scenario) -> list[dict[str, Any]]:
    events = len({t["event_id"] for t in s.touchpoints})
    by_reason: dict[str, set[str]] = defaultdict(set)
    for d in s.dead_letters:
        by_reason[d["reason"]].add(d["dead_letter_id"])
    total = events + sum(len(v) for v in by_reason.values())
    rows = [
        {"reason": r, "dead_letters": len(v), "input": total, "rate": len(v) / total}
        for r, v in by_reason.items()
    ]
    return sorted(rows, key=lambda r: (-r["dead_letters"], r["reason"]))


def expect_worst_journeys(s: Scenario, days: int, limit: int) -> list[dict[str, Any]]:
    final = s.final_journeys()
    start = window_start_day([j["started_at"].date() for j in s.journeys], days)
    rule_of = {p["pain_point_id"]: p["rule_id"] for p in s.pain_points}
    chosen = sorted(
        (j for j in final if j["started_at"].date() > start),
        key=lambda j: (j["score"], -j["started_at"].timestamp(), j["journey_id"]),
    )[:limit]
    return [
        {
            "journey_id": j["journey_id"],
            "customer_id": j["customer_id"],
            "tier": j["tier"],
            "outcome": j["outcome"],
            "score": round(j["score"], 1),
            "steps": j["steps"],
            "channels": j["channels"],
            "pain_points": [rule_of[p] for p in j["pain_point_ids"]],
            "started_at": j["started_at"],
            "ended_at": j["ended_at"],
        }
        for j in chosen
    ]


def as_text(value: Any) -> str:
    """A JSON value as ClickHouse's JSONExtractRaw shows it, quotes trimmed (420.0 -> 420)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def expect_customer_journey(s: Scenario, customer: str) -> list[dict[str, Any]]:
    journeys = [j for j in s.final_journeys() if j["customer_id"] == customer]
    pains = [p for p in s.pain_points if p["customer_id"] == customer]
    evidence = {e: p for p in pains for e in [p["anchor_event_id"], *p["evidence_event_ids"]]}
    rules_of_event: dict[str, set[str]] = defaultdict(set)
    for p in pains:
        for e in [p["anchor_event_id"], *p["evidence_event_ids"]]:
            rules_of_event[e].add(p["rule_id"])
    order = ["journey", "touchpoint", "pain_point", "care_action"]
    rows: list[dict[str, Any]] = []
    for j in journeys:
        rows.append(
            {
                "at": j["started_at"],
                "item": "journey",
                "journey_id": j["journey_id"],
                "channel": " > ".join(j["channels"]),
                "type": j["outcome"],
                "status": j["tier"],
                "score": round(j["score"], 1),
                "steps": j["steps"],
                "severity": 0,
                "ref": j["journey_id"],
                "detail": "",
                "links": sorted(j["pain_point_ids"]),
            }
        )
    for t in s.touchpoints:
        if s.customer_of(t["identity_key"]) != customer and t["event_id"] not in evidence:
            continue
        wire = json.loads(t["payload"])
        detail = " · ".join(f"{k}={as_text(wire[k])}" for k in DETAIL_KEYS if k in wire)
        span = [j for j in journeys if j["started_at"] <= t["occurred_at"] <= j["ended_at"]]
        rows.append(
            {
                "at": t["occurred_at"],
                "item": "touchpoint",
                "journey_id": span[0]["journey_id"] if span else "",
                "channel": t["channel"],
                "type": t["type"],
                "status": "",
                "score": None,
                "steps": 0,
                "severity": 0,
                "ref": t["event_id"],
                "detail": detail,
                "links": sorted(rules_of_event.get(t["event_id"], ())),
            }
        )
    for p in pains:
        rows.append(
            {
                "at": p["detected_at"],
                "item": "pain_point",
                "journey_id": p["journey_id"],
                "channel": ", ".join(p["channels"]),
                "type": p["rule_id"],
                "status": "",
                "score": None,
                "steps": 0,
                "severity": p["severity"],
                "ref": p["pain_point_id"],
                "detail": "",
                "links": sorted({p["anchor_event_id"], *p["evidence_event_ids"]}),
            }
        )
    journey_of_pain = {p["pain_point_id"]: p["journey_id"] for p in pains}
    actions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in s.final_actions():
        if a["customer_id"] == customer:
            actions[a["action_id"]].append(a)
    for aid, versions in actions.items():
        last = max(versions, key=lambda a: a["recorded_at"])
        rows.append(
            {
                "at": min(a["decided_at"] for a in versions),
                "item": "care_action",
                "journey_id": journey_of_pain.get(last["pain_point_id"], ""),
                "channel": last["channel"],
                "type": last["kind"],
                "status": last["status"],
                "score": None,
                "steps": 0,
                "severity": last["priority"],
                "ref": aid,
                "detail": last["template"] + (f" ({last['reason']})" if last["reason"] else ""),
                "links": [last["pain_point_id"]],
            }
        )
    return sorted(rows, key=lambda r: (r["at"], order.index(r["item"]), r["ref"]))


def expect_landed_totals(s: Scenario) -> list[dict[str, Any]]:
    return [
        {
            "touchpoints": len({t["event_id"] for t in s.touchpoints}),
            "dead_letters": len({d["dead_letter_id"] for d in s.dead_letters}),
            "customers": len({t["customer_id"] for t in s.touchpoints if t["customer_id"]}),
        }
    ]


def expect_landed_by_channel(s: Scenario) -> list[dict[str, Any]]:
    ids: dict[str, set[str]] = defaultdict(set)
    for t in s.touchpoints:
        ids[t["channel"]].add(t["event_id"])
    rows = [{"channel": c, "events": len(v)} for c, v in ids.items()]
    return sorted(rows, key=lambda r: (-r["events"], r["channel"]))


def expect_dead_letters_by_reason(s: Scenario) -> list[dict[str, Any]]:
    ids: dict[str, set[str]] = defaultdict(set)
    for d in s.dead_letters:
        ids[d["reason"]].add(d["dead_letter_id"])
    rows = [{"reason": r, "n": len(v)} for r, v in ids.items()]
    return sorted(rows, key=lambda r: (-r["n"], r["reason"]))


def expect_care_status_totals(s: Scenario) -> list[dict[str, Any]]:
    ids: dict[str, set[str]] = defaultdict(set)
    for a in s.care_actions:
        ids[a["status"]].add(a["action_id"])
    return [{"status": st, "actions": len(ids[st])} for st in sorted(ids)]


def expect_touchpoint_ids(s: Scenario) -> list[dict[str, Any]]:
    return [{"event_id": e} for e in sorted({t["event_id"] for t in s.touchpoints})]


def expect_pain_point_ids(s: Scenario) -> list[dict[str, Any]]:
    keys = ("pain_point_id", "rule_id", "customer_id", "anchor_event_id")
    rows = {p["pain_point_id"]: {k: p[k] for k in keys} for p in s.pain_points}
    return [rows[k] for k in sorted(rows)]


def expect_care_action_ids(s: Scenario) -> list[dict[str, Any]]:
    return [{"action_id": a} for a in sorted({a["action_id"] for a in s.care_actions})]


def expect_journey_finals(s: Scenario) -> list[dict[str, Any]]:
    return [
        {
            "journey_id": j["journey_id"],
            "customer_id": j["customer_id"],
            "outcome": j["outcome"],
            "steps": j["steps"],
            "last_version": j["version"],
        }
        for j in sorted(s.final_journeys(), key=lambda j: j["journey_id"])
    ]


#: (query, parameters, expected figures); every named dashboard query, some more than once.
def cases(s: Scenario) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    return [
        ("overview", {}, expect_overview(s)),
        ("live_volume_by_channel", {"hours": 24}, expect_live_volume(s, 24)),
        ("live_volume_by_channel", {"hours": 1000}, expect_live_volume(s, 1000)),
        ("top_pain_points", {"period_days": 7}, expect_top_pain_points(s, 7)),
        ("top_pain_points", {"period_days": 1}, expect_top_pain_points(s, 1)),
        ("top_pain_points", {"period_days": 2}, expect_top_pain_points(s, 2)),
        ("pain_points_trend", {"days": 30}, expect_pain_points_trend(s, 30)),
        ("pain_points_trend", {"days": 2}, expect_pain_points_trend(s, 2)),
        ("care_funnel", {"days": 30}, expect_care_funnel(s, 30)),
        ("care_funnel", {"days": 1}, expect_care_funnel(s, 1)),
        ("care_suppressions", {"days": 30}, expect_care_suppressions(s, 30)),
        ("journey_map", {"days": 30}, expect_journey_map(s, 30)),
        ("journey_map", {"days": 1}, expect_journey_map(s, 1)),
        ("experience_score_by_tier", {"days": 30}, expect_score_by_tier(s, 30)),
        ("experience_score_by_tier", {"days": 1}, expect_score_by_tier(s, 1)),
        ("repeat_contact_rate", {"days": 30}, expect_repeat_contact_rate(s, 30)),
        ("repeat_contact_rate", {"days": 1}, expect_repeat_contact_rate(s, 1)),
        ("dead_letter_rate", {}, expect_dead_letter_rate(s)),
        ("worst_journeys", {"days": 30, "limit": 3}, expect_worst_journeys(s, 30, 3)),
        ("worst_journeys", {"days": 30, "limit": 20}, expect_worst_journeys(s, 30, 20)),
        ("customer_journey", {"customer_id": "c1"}, expect_customer_journey(s, "c1")),
        ("customer_journey", {"customer_id": "c3"}, expect_customer_journey(s, "c3")),
        ("customer_journey", {"customer_id": "nobody"}, []),
    ]


CASES = cases(SCENARIO)
#: The dashboard queries (other named queries, e.g. for the demo or backtests, may exist).
DASHBOARD_QUERIES = {
    *("overview", "live_volume_by_channel", "top_pain_points", "pain_points_trend"),
    *("care_funnel", "care_suppressions", "journey_map", "experience_score_by_tier"),
    *("repeat_contact_rate", "dead_letter_rate", "worst_journeys", "customer_journey"),
}


def other_cases(s: Scenario) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """The named queries that are no dashboard panel: all-time totals and the exports."""
    return [
        ("landed_totals", {}, expect_landed_totals(s)),
        ("landed_by_channel", {}, expect_landed_by_channel(s)),
        ("dead_letters_by_reason", {}, expect_dead_letters_by_reason(s)),
        ("care_status_totals", {}, expect_care_status_totals(s)),
        ("touchpoint_ids", {}, expect_touchpoint_ids(s)),
        ("pain_point_ids", {}, expect_pain_point_ids(s)),
        ("care_action_ids", {}, expect_care_action_ids(s)),
        ("journey_finals", {}, expect_journey_finals(s)),
    ]


OTHER_CASES = other_cases(SCENARIO)
ALL_CASES = CASES + OTHER_CASES
#: the queries that read touchpoint_counts (migration 0004), with their expectations
TOTALS = ("landed_totals", "landed_by_channel", "overview", "dead_letter_rate")


def normalise(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make order-free parts comparable (array order from groupArray is not guaranteed)."""
    if name == "customer_journey":
        return [{**r, "links": sorted(r["links"])} for r in rows]
    return rows


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path_factory.mktemp("chdb-dashboards"),
        clickhouse_host=None,
        clickhouse_database="dashboards_test",
    )
    client = connect(settings)
    yield client
    client.close()


def land(ch: Client, db: str, rows_by_table: dict[str, list[dict[str, Any]]], **kw: Any) -> None:
    writer = ClickHouseWriter(ch, db, **kw)
    for table, rows in rows_by_table.items():
        writer.write(table, rows)
    writer.flush()


@pytest.fixture(scope="module")
def db(ch: Client) -> Iterator[str]:
    name = f"dash_{uuid.uuid4().hex[:10]}"
    assert migrate(ch, name)[:3] == [1, 2, 3]
    land(ch, name, SCENARIO.tables())
    yield name
    ch.command(f"DROP DATABASE IF EXISTS {name} SYNC")


#: Figures of every case before the duplicates landed (filled once, by ``duplicate``).
_BEFORE: dict[int, list[dict[str, Any]]] = {}


def duplicate(ch: Client, db: str) -> None:
    """Land every row of the scenario again as a real duplicate (once per module)."""
    if _BEFORE:
        return
    _BEFORE.update(
        {
            i: run_query(ch, name, params, database=db)
            for i, (name, params, _) in enumerate(ALL_CASES)
        }
    )
    dup = duplicates(SCENARIO)
    # a replay cut into other batches, without dedup tokens: real duplicate rows
    land(ch, db, {t: rows[::2] for t, rows in dup.items()}, dedup_token=False)
    land(ch, db, {t: rows[1::2] for t, rows in dup.items()}, dedup_token=False)


@pytest.fixture(scope="module", params=["landed once", "landed twice"])
def landed(request: pytest.FixtureRequest, ch: Client, db: str) -> str:
    """The scenario's database; the second time with every row landed again."""
    if request.param == "landed twice":
        duplicate(ch, db)
    return db


# --- tests ---------------------------------------------------------------------------------


def test_every_dashboard_query_is_covered() -> None:
    assert DASHBOARD_QUERIES.issubset(query_names())
    assert {name for name, _, _ in CASES} == DASHBOARD_QUERIES


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    CASES,
    ids=[f"{n}-{'-'.join(map(str, p.values())) or 'default'}" for n, p, _ in CASES],
)
def test_query_figures(
    ch: Client, landed: str, name: str, params: dict[str, Any], expected: list[dict[str, Any]]
) -> None:
    rows = run_query(ch, name, params, database=landed)
    assert normalise(name, rows) == normalise(name, expected)


def test_every_named_query_has_ground_truth() -> None:
    assert {name for name, _, _ in ALL_CASES} == set(query_names())
    assert {name for name, _, _ in OTHER_CASES} >= EXPORT_QUERIES
    assert not EXPORT_QUERIES & DASHBOARD_QUERIES


@pytest.mark.parametrize(
    ("name", "params", "expected"), OTHER_CASES, ids=[n for n, _, _ in OTHER_CASES]
)
def test_other_query_figures(
    ch: Client, landed: str, name: str, params: dict[str, Any], expected: list[dict[str, Any]]
) -> None:
    assert run_query(ch, name, params, database=landed) == expected


def test_duplicates_really_landed_and_changed_no_figure(ch: Client, db: str) -> None:
    duplicate(ch, db)
    for table, rows in SCENARIO.tables().items():
        n = int(ch.query(f"SELECT count() FROM {db}.{table}").result_rows[0][0])
        assert n > len(rows), f"{table}: the duplicates did not land ({n} rows)"
    for i, (name, params, _) in enumerate(ALL_CASES):
        assert run_query(ch, name, params, database=db) == _BEFORE[i], (name, params)


def test_query_parameters_arrive_as_strings_from_the_http_api(ch: Client, landed: str) -> None:
    """``/api/query/{name}`` passes the query string through: every value is a string."""
    for name, params, expected in CASES:
        as_text = {k: str(v) for k, v in params.items()}
        rows = run_query(ch, name, as_text, database=landed)
        assert normalise(name, rows) == normalise(name, expected), name


def test_every_parameter_is_declared_with_a_default_that_runs(ch: Client, landed: str) -> None:
    for name in query_names():
        sql = query_sql(name)
        declared = {p.name: p.type for p in declared_params(sql)}
        assert declared == used_params(sql), name
        run_query(ch, name, with_defaults(name), database=landed)
    assert with_defaults("worst_journeys", {"limit": "5", "other": "x"}) == {
        "days": "30",
        "limit": "5",
    }


def test_migration_back_fills_touchpoints_landed_before_it(ch: Client, tmp_path: Path) -> None:
    name = f"bf_{uuid.uuid4().hex[:10]}"
    ddl = tmp_path / "ddl"
    ddl.mkdir()
    shutil.copy(Path(str(default_ddl_dir() / "0001_init.sql")), ddl / "0001_init.sql")
    assert migrate(ch, name, ddl_dir=ddl) == [1]
    land(ch, name, {"touchpoints": SCENARIO.touchpoints}, tables=_only("touchpoints"))
    for f in default_ddl_dir().iterdir():
        if f.name.startswith("0002_"):
            (ddl / f.name).write_text(f.read_text())
    assert migrate(ch, name, ddl_dir=ddl) == [2]
    land(ch, name, {"touchpoints": SCENARIO.touchpoints[:5]})  # after: through the view
    rows = run_query(ch, "live_volume_by_channel", {"hours": 1000}, database=name)
    assert rows == expect_live_volume(SCENARIO, 1000)
    ch.command(f"DROP DATABASE {name} SYNC")


def _only(table: str) -> dict[str, Any]:
    from sinks.clickhouse.tables import TABLES

    return {table: TABLES[table]}


# --- migration 0004: exact totals from refreshed bucket counts --------------------------------

#: the migration these tests are about, and the query files as they were before it (the
#: ones 0004 rewrote; the others did not change)
TOTALS_VERSION = 4
SQL_0003 = Path(__file__).parent / "sql_0003"


def sql_0003(name: str, database: str) -> str:
    """Query ``name`` as shipped with schema 0003."""
    old = SQL_0003 / f"{name}.sql"
    return render(old.read_text(), database) if old.exists() else query_sql(name, database)


def run_sql(ch: Client, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return list(ch.query(sql, parameters=params or None).named_results())


def extra_touchpoints() -> list[dict[str, Any]]:
    """Touchpoints landed later: a new customer's event in an existing (hour, channel,
    type) bucket, one in a new hour, an anonymous one, and an event landed again."""
    first = SCENARIO.touchpoints[1]  # e-c1-01: web page_view at day 0, 08:00
    call = SCENARIO.touchpoints[3]  # e-c1-03: call_centre call_started
    later = LANDED + timedelta(days=2)
    return [
        {**first, "event_id": "e-c10-01", "identity_key": "customer_id:c10",
         "customer_id": "c10", "occurred_at": at(0, 8, 30), "ingested_at": later},
        {**call, "event_id": "e-c1-09", "occurred_at": at(3, 9), "ingested_at": later},
        {**first, "event_id": "e-anon-02", "identity_key": "anonymous_id:a-78",
         "customer_id": "", "anonymous_id": "a-78", "occurred_at": at(3, 10),
         "ingested_at": later},
        {**SCENARIO.touchpoints[9], "ingested_at": later},  # e-c2-01 again
    ]  # fmt: skip


def expect_totals(s: Scenario) -> dict[str, list[dict[str, Any]]]:
    return {
        "landed_totals": expect_landed_totals(s),
        "landed_by_channel": expect_landed_by_channel(s),
        "overview": expect_overview(s),
        "dead_letter_rate": expect_dead_letter_rate(s),
    }


def totals(ch: Client, db: str) -> dict[str, list[dict[str, Any]]]:
    return {name: run_query(ch, name, database=db) for name in TOTALS}


def test_upgrade_to_0004_with_data_landed_keeps_every_answer(ch: Client, tmp_path: Path) -> None:
    """A database at schema 0003 holding data (real duplicates included) answers every named
    query after 0004 exactly as the 0003 queries did before it; so after a re-run of 0004
    (a file that failed half-way runs again from its start); and rows landed after the
    upgrade count through the new views."""
    name = f"up_{uuid.uuid4().hex[:10]}"
    ddl = tmp_path / "ddl"
    ddl.mkdir()
    shipped = {m.version: m for m in load_migrations()}
    for m in shipped.values():
        if m.version < TOTALS_VERSION:
            (ddl / f"{m.version:04d}_{m.name}.sql").write_text(m.sql)
    assert migrate(ch, name, ddl_dir=ddl) == [v for v in sorted(shipped) if v < TOTALS_VERSION]
    land(ch, name, SCENARIO.tables())
    dup = duplicates(SCENARIO)
    land(ch, name, {t: rows[::2] for t, rows in dup.items()}, dedup_token=False)
    land(ch, name, {t: rows[1::2] for t, rows in dup.items()}, dedup_token=False)
    before = [run_sql(ch, sql_0003(q, name), p) for q, p, _ in ALL_CASES]
    for (q, _, expected), rows in zip(ALL_CASES, before, strict=True):
        assert normalise(q, rows) == normalise(q, expected), q  # the 0003 answers were right

    for m in shipped.values():
        (ddl / f"{m.version:04d}_{m.name}.sql").write_text(m.sql)
    assert migrate(ch, name, ddl_dir=ddl) == [v for v in sorted(shipped) if v >= TOTALS_VERSION]
    after = [run_query(ch, q, p, database=name) for q, p, _ in ALL_CASES]
    for (q, params, _), old, new in zip(ALL_CASES, before, after, strict=True):
        assert normalise(q, new) == normalise(q, old), (q, params)

    for statement in split_statements(render(shipped[TOTALS_VERSION].sql, name)):
        ch.command(statement)  # 0004 once more: harmless
    again = [run_query(ch, q, p, database=name) for q, p, _ in ALL_CASES]
    for (q, params, _), old, new in zip(ALL_CASES, before, again, strict=True):
        assert normalise(q, new) == normalise(q, old), (q, params)

    more = extra_touchpoints()
    land(ch, name, {"touchpoints": more})
    grown = replace(SCENARIO, touchpoints=SCENARIO.touchpoints + more)
    assert totals(ch, name) == expect_totals(grown)
    ch.command(f"DROP DATABASE {name} SYNC")


def test_event_totals_are_exact_whether_or_not_the_bucket_counts_are_refreshed(
    ch: Client,
) -> None:
    """touchpoint_counts takes a bucket's refreshed count only while the bucket's parts are
    the ones it was counted from, and merges every other bucket live: exact at each step.
    Scheduled refreshes are stopped, so what is cached here does not depend on timing."""
    name = f"rf_{uuid.uuid4().hex[:10]}"
    migrate(ch, name)
    view = f"{name}.touchpoints_hourly_counts"

    def refresh() -> None:
        ch.command(f"SYSTEM START VIEW {view}")
        ch.command(f"SYSTEM REFRESH VIEW {view}")
        ch.command(f"SYSTEM WAIT VIEW {view}")
        ch.command(f"SYSTEM STOP VIEW {view}")

    def cached() -> dict[tuple[datetime, str, str], int]:
        rows = ch.query(f"SELECT hour, channel, type, cached FROM {name}.touchpoint_counts")
        return {(h, str(c), str(t)): n for h, c, t, n in rows.result_rows}

    def bucket(t: dict[str, Any]) -> tuple[datetime, str, str]:
        return t["occurred_at"].replace(minute=0, second=0), t["channel"], t["type"]

    ch.command(f"SYSTEM STOP VIEW {view}")
    try:
        land(ch, name, SCENARIO.tables())
        assert set(cached().values()) == {0}  # never refreshed since: all merged live
        assert totals(ch, name) == expect_totals(SCENARIO)
        refresh()
        assert set(cached().values()) == {1}
        assert totals(ch, name) == expect_totals(SCENARIO)

        more = extra_touchpoints()
        land(ch, name, {"touchpoints": more}, dedup_token=False)
        land(ch, name, {"touchpoints": SCENARIO.touchpoints[::3]}, dedup_token=False)
        grown = replace(SCENARIO, touchpoints=SCENARIO.touchpoints + more)
        touched = {bucket(t) for t in more + SCENARIO.touchpoints[::3]}
        assert cached() == {b: int(b not in touched) for b in cached()}
        assert touched <= set(cached())
        assert totals(ch, name) == expect_totals(grown)

        ch.command(f"OPTIMIZE TABLE {name}.touchpoints_hourly FINAL")  # parts renamed
        assert totals(ch, name) == expect_totals(grown)
        refresh()
        assert set(cached().values()) == {1}
        assert totals(ch, name) == expect_totals(grown)
    finally:
        ch.command(f"DROP DATABASE {name} SYNC")


# --- Grafana -------------------------------------------------------------------------------


def _load_build() -> ModuleType:
    path = REPO / "dashboards" / "grafana" / "build.py"
    spec = importlib.util.spec_from_file_location("touchpath_grafana_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _as_grafana_would(sql: str, variables: dict[str, str]) -> str:
    """Interpolate ``${name:sqlstring}`` the way Grafana does: quoted, ' doubled."""

    def value(m: re.Match[str]) -> str:
        return "'" + variables[m[1]].replace("'", "''") + "'"

    return re.sub(r"\$\{(\w+):sqlstring\}", value, sql)


def test_grafana_dashboard_is_generated_from_the_query_files() -> None:
    build = _load_build()
    committed = (REPO / "dashboards" / "grafana" / "dashboards" / "touchpath.json").read_text()
    assert committed == build.render(), "stale: run python dashboards/grafana/build.py"
    dashboard = json.loads(committed)
    panels = dashboard["panels"]
    assert {p["targets"][0]["rawSql"] for p in panels} == {
        build.grafana_sql(p.query) for p in build.PANELS
    }
    assert {p.query for p in build.PANELS} == DASHBOARD_QUERIES
    for panel in panels:
        assert panel["datasource"]["type"] == "grafana-clickhouse-datasource"
        assert "{db}" not in panel["targets"][0]["rawSql"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["customer_id"]["query"] == ""
    assert variables["days"]["query"] == "30"


def test_every_grafana_panel_is_a_named_query_that_runs(ch: Client, landed: str) -> None:
    build = _load_build()
    dashboard = json.loads(build.render())
    variables = {v["name"]: v["query"] for v in dashboard["templating"]["list"]}
    variables["customer_id"] = "c1"
    for panel, spec in zip(dashboard["panels"], build.PANELS, strict=True):
        raw = panel["targets"][0]["rawSql"]
        assert raw == build.grafana_sql(spec.query, "touchpath")
        sql = _as_grafana_would(build.grafana_sql(spec.query, landed), variables)
        got = list(ch.query(sql).named_results())
        params = with_defaults(spec.query, {"customer_id": "c1"})
        assert got == run_query(ch, spec.query, params, database=landed), spec.query


def test_grafana_provisioning_points_at_the_compose_clickhouse() -> None:
    yaml = pytest.importorskip("yaml")
    root = REPO / "dashboards" / "grafana" / "provisioning"
    ds = yaml.safe_load((root / "datasources" / "clickhouse.yaml").read_text())["datasources"]
    (source,) = ds
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["uid"] == _load_build().DATASOURCE["uid"]
    assert source["jsonData"]["host"] == "clickhouse"
    assert source["jsonData"]["username"] == "touchpath"
    assert source["jsonData"]["defaultDatabase"] == "touchpath"
    providers = yaml.safe_load((root / "dashboards" / "touchpath.yaml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"


# --- the ops page's assets -----------------------------------------------------------------


def test_ops_page_serves_only_its_shipped_assets() -> None:
    from streams.web import static_file
    from streams.web.params import catalogue

    page = static_file("index.html")
    assert page is not None and b"/dashboard/static/app.js" in page[0]
    script = static_file("app.js")
    assert script is not None and script[1] == "application/javascript"
    assert script[0].isascii()  # served without a charset parameter
    for name in ("../params.py", "__init__.py", "nope.js", ".hidden.css", "a/b.js", ""):
        assert static_file(name) is None, name
    queries = catalogue()
    assert queries["worst_journeys"] == [
        {
            "name": "days",
            "type": "UInt32",
            "default": "30",
            "doc": "how many days of journey starts",
        },
        {"name": "limit", "type": "UInt32", "default": "20", "doc": "how many journeys"},
    ]
    assert queries["overview"] == []
