"""What changes if we switch rules or care policy: a diff of two backtests of one input.

Pain-point ids are uuid5 of (rule, customer, anchor event) and care-action ids uuid5 of
(pain point or sequence step, action), so the same finding has the same id under both
configurations and the diff is a set difference of ids. A care action is compared by its
final decision (the last of held → sent, say). Everything is sorted: the same inputs give
the same ``diff.json`` bytes.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from replay.backtest import BacktestResult

_PAIN_EXAMPLE = ("customer_id", "rule_id", "detected_at", "anchor_event_id", "severity")
_CARE_EXAMPLE = ("customer_id", "group", "kind", "template", "status", "reason", "decided_at")


def care_group(action: dict[str, Any]) -> str:
    """What a care action answers: its rule, its sequence step, or its kind."""
    return action.get("rule_id") or action.get("sequence") or action.get("kind") or "?"


def _final(actions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for a in actions:  # in decision order: the last decision of an action wins
        last[a["action_id"]] = a
    return last


def _core(p: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a pain point different beyond its id (its journey may differ alone)."""
    return (p["severity"], p["detected_at"], p["evidence_event_ids"])


def _decision(a: dict[str, Any]) -> tuple[Any, ...]:
    return (a["status"], a.get("reason"))


def _example(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {k: row.get(k) for k in fields if row.get(k) is not None}


def _care_example(a: dict[str, Any]) -> dict[str, Any]:
    return _example({**a, "group": care_group(a)}, _CARE_EXAMPLE)


def diff_results(
    base: BacktestResult,
    other: BacktestResult,
    *,
    base_label: str = "base",
    other_label: str = "other",
    examples: int = 3,
) -> dict[str, Any]:
    """The diff of ``other`` against ``base`` (JSON-able, deterministic)."""
    b_pp = {p["pain_point_id"]: p for p in base.pain_points}
    o_pp = {p["pain_point_id"]: p for p in other.pain_points}
    added_pp = sorted(
        (o_pp[i] for i in o_pp.keys() - b_pp.keys()),
        key=lambda p: (p["detected_at"], p["pain_point_id"]),
    )
    removed_pp = sorted(
        (b_pp[i] for i in b_pp.keys() - o_pp.keys()),
        key=lambda p: (p["detected_at"], p["pain_point_id"]),
    )
    changed_pp = sorted(i for i in b_pp.keys() & o_pp.keys() if _core(b_pp[i]) != _core(o_pp[i]))
    pp_rules = sorted({p["rule_id"] for p in [*b_pp.values(), *o_pp.values()]})
    b_count = Counter(p["rule_id"] for p in b_pp.values())
    o_count = Counter(p["rule_id"] for p in o_pp.values())
    a_count = Counter(p["rule_id"] for p in added_pp)
    r_count = Counter(p["rule_id"] for p in removed_pp)
    by_rule = {
        r: {
            "base": b_count[r],
            "other": o_count[r],
            "added": a_count[r],
            "removed": r_count[r],
            "examples": {
                "added": [_example(p, _PAIN_EXAMPLE) for p in added_pp if p["rule_id"] == r][
                    :examples
                ],
                "removed": [_example(p, _PAIN_EXAMPLE) for p in removed_pp if p["rule_id"] == r][
                    :examples
                ],
            },
        }
        for r in pp_rules
        if b_count[r] or o_count[r]
    }

    b_ca, o_ca = _final(base.care_actions), _final(other.care_actions)

    def order(a: dict[str, Any]) -> tuple[str, str]:
        return (a["decided_at"], a["action_id"])

    added_ca = sorted((o_ca[i] for i in o_ca.keys() - b_ca.keys()), key=order)
    removed_ca = sorted((b_ca[i] for i in b_ca.keys() - o_ca.keys()), key=order)
    changed_ca = sorted(
        (
            (b_ca[i], o_ca[i])
            for i in b_ca.keys() & o_ca.keys()
            if _decision(b_ca[i]) != _decision(o_ca[i])
        ),
        key=lambda pair: order(pair[1]),
    )
    groups = sorted({care_group(a) for a in [*b_ca.values(), *o_ca.values()]})
    bs = Counter((care_group(a), a["status"]) for a in b_ca.values())
    os_ = Counter((care_group(a), a["status"]) for a in o_ca.values())
    care_by_group = {}
    for g in groups:
        ga = [a for a in added_ca if care_group(a) == g]
        gr = [a for a in removed_ca if care_group(a) == g]
        gc = [(x, y) for x, y in changed_ca if care_group(y) == g]
        care_by_group[g] = {
            "base_sent": bs[(g, "sent")],
            "other_sent": os_[(g, "sent")],
            "added": len(ga),
            "removed": len(gr),
            "status_changed": len(gc),
            "examples": {
                "added": [_care_example(a) for a in ga[:examples]],
                "removed": [_care_example(a) for a in gr[:examples]],
                "status_changed": [
                    {
                        "customer_id": y["customer_id"],
                        "action_id": y["action_id"],
                        "base": _status(x),
                        "other": _status(y),
                    }
                    for x, y in gc[:examples]
                ],
            },
        }

    customers = sorted(
        {p["customer_id"] for p in [*added_pp, *removed_pp]}
        | {b_pp[i]["customer_id"] for i in changed_pp}
        | {a["customer_id"] for a in [*added_ca, *removed_ca]}
        | {y["customer_id"] for _, y in changed_ca}
    )
    b_j = {j["journey_id"]: j["score"] for j in base.journeys}
    o_j = {j["journey_id"]: j["score"] for j in other.journeys}
    rescored = sorted(i for i in b_j.keys() & o_j.keys() if b_j[i] != o_j[i])
    return {
        "base": base_label,
        "other": other_label,
        "events": base.events,
        "pain_points": {
            "base": len(b_pp),
            "other": len(o_pp),
            "added": len(added_pp),
            "removed": len(removed_pp),
            "changed": len(changed_pp),
            "by_rule": by_rule,
        },
        "care_actions": {
            "base": len(b_ca),
            "other": len(o_ca),
            "base_sent": sum(1 for a in b_ca.values() if a["status"] == "sent"),
            "other_sent": sum(1 for a in o_ca.values() if a["status"] == "sent"),
            "added": len(added_ca),
            "removed": len(removed_ca),
            "status_changed": len(changed_ca),
            "by_group": care_by_group,
        },
        "journeys": {
            "rescored": len(rescored),
            "mean_score_base": _mean(b_j.values()),
            "mean_score_other": _mean(o_j.values()),
        },
        "customers_affected": len(customers),
        "customers_affected_examples": customers[: max(examples, 10)],
    }


def _status(a: dict[str, Any]) -> str:
    return f"{a['status']} ({a['reason']})" if a.get("reason") else a["status"]


def _mean(values: Any) -> float:
    v = list(values)
    return round(sum(v) / len(v), 3) if v else 0.0


def render_diff(diff: dict[str, Any], console: Console) -> None:
    """The diff as tables: per rule, per care group, then examples."""
    pp, ca = diff["pain_points"], diff["care_actions"]
    t = Table(
        title=f"pain points: {diff['base']} → {diff['other']} ({diff['events']:,} events)",
        title_justify="left",
    )
    for col in ("rule", "base", "other", "added", "removed"):
        t.add_column(col, justify="left" if col == "rule" else "right")
    for rule, r in pp["by_rule"].items():
        style = None if r["added"] or r["removed"] or r["base"] != r["other"] else "dim"
        t.add_row(
            rule,
            str(r["base"]),
            str(r["other"]),
            _signed(r["added"], "+"),
            _signed(r["removed"], "-"),
            style=style,
        )
    t.add_row(
        "total",
        str(pp["base"]),
        str(pp["other"]),
        _signed(pp["added"], "+"),
        _signed(pp["removed"], "-"),
        style="bold",
    )
    console.print(t)

    t = Table(
        title="care actions (final decision per action)",
        title_justify="left",
        caption="sent: would be delivered · added / removed: actions (whatever their "
        "decision) in one run only · decided otherwise: same action, another decision",
        caption_justify="left",
    )
    cols = ("rule / sequence", "sent base", "sent other", "added", "removed", "decided otherwise")
    for col in cols:
        t.add_column(col, justify="left" if col == "rule / sequence" else "right")
    for g, r in ca["by_group"].items():
        changed = r["added"] or r["removed"] or r["status_changed"]
        t.add_row(
            g,
            str(r["base_sent"]),
            str(r["other_sent"]),
            _signed(r["added"], "+"),
            _signed(r["removed"], "-"),
            _signed(r["status_changed"], "~"),
            style=None if changed else "dim",
        )
    t.add_row(
        "total",
        str(ca["base_sent"]),
        str(ca["other_sent"]),
        _signed(ca["added"], "+"),
        _signed(ca["removed"], "-"),
        _signed(ca["status_changed"], "~"),
        style="bold",
    )
    console.print(t)
    j = diff["journeys"]
    console.print(
        f"customers affected: [bold]{diff['customers_affected']:,}[/] · journeys re-scored: "
        f"{j['rescored']:,} (mean score {j['mean_score_base']} → {j['mean_score_other']})"
    )
    shown = 0
    for rule, r in pp["by_rule"].items():
        for kind, sign in (("added", "+"), ("removed", "-")):
            for ex in r["examples"][kind][:2]:
                if shown >= 8:
                    return
                console.print(
                    f"  {sign} {rule} {ex['customer_id']} at {ex['detected_at']} "
                    f"(anchor {ex['anchor_event_id']})",
                    highlight=False,
                )
                shown += 1
    for g, r in ca["by_group"].items():
        for ex in r["examples"]["status_changed"][:1]:
            if shown >= 10:
                return
            console.print(
                f"  ~ {g} {ex['customer_id']}: {ex['base']} → {ex['other']}", highlight=False
            )
            shown += 1


def _signed(n: int, sign: str) -> str:
    return f"{sign}{n}" if n else "0"
