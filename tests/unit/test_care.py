"""Care policy and engine: policy format and errors, every guard (with time-zone and DST
edges), sequences, birthdays, idempotency, determinism, state round trip and bounds."""

from __future__ import annotations

import json
import textwrap
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.dead_letter import TOUCHPATH_NS
from streams.engine.care import (
    KINDS,
    MAX_ACTED,
    MAX_HELD,
    MAX_TRIGGERS,
    RECORD_KEYS,
    CareEngine,
    CarePolicy,
    CarePolicyError,
    CareState,
    load_policy,
)
from streams.engine.rules import builtin_rules

HOUR = 3600.0
DAY = 24 * HOUR
#: A moment past a due time: ``advance(now)`` decides only what is due strictly before ``now``
#: (more events at exactly ``now`` may still arrive).
EPS = 0.001

# -- helpers ---------------------------------------------------------------------------------


def T(s: str) -> float:
    """Epoch seconds of an ISO time; a bare one is UTC."""
    if not s.endswith("Z") and "+" not in s[10:] and "-" not in s[10:]:
        s += "+00:00"
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def Z(ts: float) -> str:
    """The records' time format for epoch seconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def pp(ppid: str, rule: str, at: str | float, cid: str = "c1", jid: str = "j1") -> dict[str, Any]:
    """A pain point as the journey engine emits it."""
    ts = at if isinstance(at, float) else T(at)
    return {
        "pain_point_id": ppid,
        "rule_id": rule,
        "customer_id": cid,
        "journey_id": jid,
        "severity": 3,
        "detected_at": Z(ts),
        "tier": "B",
    }


def ev(eid: str, channel: str, type_: str, **attrs: Any) -> dict[str, Any]:
    """A validated touchpoint dict (attributes flattened at top level)."""
    return {"event_id": eid, "channel": channel, "type": type_, "occurred_at": "-", **attrs}


def prof(tier: str = "B", tz: str = "UTC", **kw: Any) -> dict[str, Any]:
    return {"customer_id": "c1", "tier": tier, "timezone": tz, **kw}


def policy(text: str) -> CarePolicy:
    return CarePolicy.model_validate(yaml.safe_load(textwrap.dedent(text)))


def engine(text: str | None = None) -> CareEngine:
    return CareEngine(load_policy() if text is None else policy(text))


def aid(name: str) -> str:
    return str(uuid.uuid5(TOUCHPATH_NS, name))


def brief(recs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["kind"], r["status"], r["reason"]) for r in recs]


def release(
    e: CareEngine, st: CareState, p: dict[str, Any], due: float, cid: str = "c1"
) -> list[dict[str, Any]]:
    """What falls due at ``due``: nothing is decided by ``advance(now=due)`` itself, only by
    an ``advance`` just past it."""
    assert e.advance(st, cid, p, due) == []
    return e.advance(st, cid, p, due + EPS)


BUILTIN = engine()

# A small policy whose guards are easy to reason about: one sms per rule, no quiet hours
# unless a test adds them.
SIMPLE = """
defaults:
  quiet_hours: null
  caps: {per_day: 2, per_week: 3}
  cooldown: 24h
care:
  - rule: r1
    tiers: {B: {kind: sms, template: t1}}
  - rule: r2
    tiers: {B: {kind: sms, template: t2}}
  - rule: r3
    tiers: {B: {kind: sms, template: t3}}
  - rule: r4
    tiers: {B: {kind: sms, template: t4}}
  - rule: esc
    tiers: {B: {kind: manager_escalation, template: e}}
"""


# -- policy file -----------------------------------------------------------------------------


def test_builtin_policy_covers_every_builtin_rule() -> None:
    pol = load_policy()
    assert pol is load_policy(None)
    assert sorted(pol.rule_ids) == sorted(builtin_rules().ids)
    opt = pol.entry("opt_out")
    assert opt is not None and (opt.tiers.A, opt.tiers.B, opt.tiers.C) == (None, None, None)
    for e in pol.care:
        if e.rule == "opt_out":
            continue
        a = e.tiers.A if isinstance(e.tiers.A, list) else [e.tiers.A]
        assert {x.kind for x in a} & {"outbound_call", "manager_escalation"}, e.rule
        assert all(x.priority == "high" for x in a if x.kind == "outbound_call"), e.rule
        for tier in ("B", "C"):
            act = getattr(e.tiers, tier)
            assert act is not None and not isinstance(act, list), (e.rule, tier)
            if e.rule == "low_survey_score" and tier == "B":
                assert act.kind == "outbound_call"  # the detractor call-back
            else:
                assert act.kind in ("sms", "email", "coupon"), (e.rule, tier)


def test_builtin_sequences() -> None:
    seqs = {s.id: s for s in load_policy().sequences}
    trial = seqs["trial"]
    assert trial.trigger.channel == "web" and trial.trigger.type == "trial_started"  # type: ignore[union-attr]
    steps = {s.id: s for s in trial.steps}
    assert [str(steps[i].after) for i in ("guide", "feedback", "helper", "expiry")] == [
        "0h",
        "15d",
        "20d",
        "27d",
    ]
    assert steps["helper"].unless is not None and steps["helper"].unless.min_count == 3
    assert steps["expiry_call"].kind == "outbound_call" and steps["expiry_call"].tiers == ["A", "B"]
    assert seqs["birthday"].trigger == "birthday"
    assert seqs["birthday"].steps[0].at_local == "10:00"


def test_channel_derived_from_kind_and_overridable() -> None:
    pol = policy("""
        care:
          - rule: r
            tiers:
              A: [{kind: outbound_call, template: a}, {kind: manager_escalation, template: b},
                  {kind: webhook, template: c}]
              B: {kind: coupon, template: d}
              C: {kind: coupon, template: d, channel: email}
        sequences:
          - id: s
            trigger: {channel: web, type: trial_started}
            steps: [{id: x, after: 0, kind: email, template: e}]
    """)
    e = pol.care[0].tiers
    assert [a.channel for a in e.A] == ["call", None, None]  # type: ignore[union-attr]
    assert e.B.channel == "sms" and e.C.channel == "email"  # type: ignore[union-attr]
    assert pol.sequences[0].steps[0].channel == "email"
    assert set(KINDS) == {
        "sms",
        "email",
        "outbound_call",
        "coupon",
        "manager_escalation",
        "webhook",
    }


BAD_POLICIES = [
    (
        "care:\n  - {rule: a, tiers: {}}\n  - {rule: b, tiers: {}}\n  - {rule: c, tiers: {}}\n"
        "  - rule: long_queue\n    tiers: {A: {kind: fax, template: t}}\n",
        "care[3].tiers.A.kind: 'fax' is not a kind",
    ),
    (
        "care:\n  - rule: a\n    tiers:\n"
        "      A: [{kind: sms, template: t}, {kind: pager, template: t}]\n",
        "care[0].tiers.A[1].kind: 'pager' is not a kind",
    ),
    (
        "care:\n  - rule: a\n    tiers: {B: {kind: sms, template: t, colour: red}}\n",
        "care[0].tiers.B.colour: unknown key 'colour' (allowed: kind, template, priority, channel)",
    ),
    ("rules: []\n", "rules: unknown key 'rules' (allowed: version, defaults, care, sequences)"),
    (
        "care:\n  - rule: a\n    tiers: {D: {kind: sms, template: t}}\n",
        "care[0].tiers.D: unknown key",
    ),
    (
        "care:\n  - rule: a\n    cooldown: 3 days\n    tiers: {}\n",
        "care[0].cooldown: '3 days' is not a duration",
    ),
    (
        "sequences:\n  - id: s\n    trigger: birthday\n"
        "    steps: [{id: a, after: -5, kind: sms, template: t}]\n",
        "sequences[0].steps[0].after: must be > 0, got -5",
    ),
    (
        "defaults:\n  quiet_hours: {start: 21:00, end: '08:00'}\n",
        'defaults.quiet_hours.start: must be a quoted "HH:MM" time',
    ),
    (
        "sequences:\n  - id: s\n    trigger: birthday\n"
        "    steps: [{id: a, at_local: '24:30', kind: sms, template: t}]\n",
        'sequences[0].steps[0].at_local: must be a "HH:MM" time',
    ),
    (
        "sequences:\n  - id: s\n    trigger: {channel: web, type: trial_startd}\n"
        "    steps: [{id: a, kind: sms, template: t}]\n",
        "sequences[0].trigger.type: 'trial_startd' is not an event type of web",
    ),
    (
        "sequences:\n  - id: s\n    trigger: bday\n    steps: [{id: a, kind: sms, template: t}]\n",
        "sequences[0].trigger: must be 'birthday' or a matcher",
    ),
    (
        "sequences:\n  - id: s\n    trigger: {}\n    steps: [{id: a, kind: sms, template: t}]\n",
        "sequences[0].trigger: an empty matcher",
    ),
    (
        "sequences:\n  - id: s\n    trigger: birthday\n"
        "    steps: [{id: a, kind: sms, template: t, unless: {match: {typ: app_usage}}}]\n",
        "sequences[0].steps[0].unless.match: unknown key 'typ'",
    ),
    (
        "care:\n  - rule: a\n    tiers:\n"
        "      A: [{kind: sms, template: t}, {kind: sms, template: u}]\n",
        "care[0].tiers.A[1].kind: kind 'sms' twice",
    ),
    ("care:\n  - {rule: a, tiers: {}}\n  - {rule: a, tiers: {}}\n", "care[1].rule: duplicate rule"),
    ("care:\n  - {rule: Long-Queue, tiers: {}}\n", "care[0].rule: must be a rule id"),
    ("care:\n  - rule: a\n", "care[0].tiers: required"),
    (
        "care:\n  - rule: a\n    tiers: {B: {kind: sms, template: t, channel: email}}\n",
        "care[0].tiers.B.channel: 'email' is not a channel for kind 'sms'",
    ),
    (
        "care:\n  - rule: a\n    tiers: {B: {kind: sms, template: t, priority: urgent}}\n",
        "care[0].tiers.B.priority: 'urgent' is not a priority (high, normal, low)",
    ),
    ("defaults: {caps: {per_day: 3, per_week: 2}}\n", "defaults.caps.per_week: must be >= per_day"),
    ("defaults: {caps: {per_day: 0}}\n", "defaults.caps.per_day: must be an integer from 1"),
    ("defaults: {quiet_hours: {start: '08:00', end: '08:00'}}\n", "defaults.quiet_hours.end"),
    ("defaults: {caps_exempt: [coupons]}\n", "defaults.caps_exempt[0]: 'coupons' is not a kind"),
    ("version: 2\n", "version: only version 1 is supported"),
    ("- a\n", "must be a mapping"),
    ("care: [\n", "line 2:"),
    ("care:\n  - rule: a\n    rule: b\n    tiers: {}\n", "line 3: duplicate key 'rule'"),
    (
        "sequences:\n  - id: s\n    trigger: birthday\n"
        "    steps: [{id: a, kind: sms, template: t}, {id: a, kind: sms, template: u}]\n",
        "sequences[0].steps[1].id: duplicate step id 'a'",
    ),
    (
        "sequences:\n  - id: s\n    trigger: birthday\n    tiers: [A, Z]\n"
        "    steps: [{id: a, kind: sms, template: t}]\n",
        "sequences[0].tiers[1]: 'Z' is not a tier",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_POLICIES)
def test_policy_errors_are_one_line_naming_file_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CarePolicyError) as info:
        load_policy(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    assert expected in msg, msg


def test_unreadable_policy_file(tmp_path: Path) -> None:
    with pytest.raises(CarePolicyError, match=r"nope\.yaml: cannot read"):
        load_policy(tmp_path / "nope.yaml")


def test_zero_durations_and_null_quiet_hours_are_allowed() -> None:
    pol = policy("""
        defaults: {quiet_hours: null, cooldown: 0}
        care: [{rule: r, cooldown: 0h, tiers: {A: null}}]
        sequences:
          - {id: s, trigger: birthday, steps: [{id: a, after: 0h, kind: sms, template: t}]}
    """)
    assert pol.defaults.quiet_hours is None
    assert pol.entry("r") is not None and pol.entry("nope") is None


# -- tier routing and records ----------------------------------------------------------------


def test_tier_routing_a_call_b_c_sms() -> None:
    at = "2024-06-03T12:00:00"
    got = {
        tier: brief(BUILTIN.on_pain_point(CareState(), prof(tier), pp("p1", "long_queue", at)))
        for tier in "ABC"
    }
    assert got == {
        "A": [("outbound_call", "sent", None)],
        "B": [("sms", "sent", None)],
        "C": [("sms", "sent", None)],
    }
    # the detractor loop: a call-back for A (plus a manager) and B, a message for C
    lss = {
        tier: [
            r["kind"]
            for r in BUILTIN.on_pain_point(CareState(), prof(tier), pp("p", "low_survey_score", at))
        ]
        for tier in "ABC"
    }
    assert lss == {
        "A": ["outbound_call", "manager_escalation"],
        "B": ["outbound_call"],
        "C": ["sms"],
    }


def test_record_shape_and_action_id() -> None:
    (rec,) = BUILTIN.on_pain_point(
        CareState(), prof("A"), pp("pp-9", "ivr_abandon", "2024-06-03T12:00:00")
    )
    assert tuple(rec) == RECORD_KEYS
    assert rec == {
        "action_id": aid("care:pp-9:outbound_call"),
        "pain_point_id": "pp-9",
        "rule_id": "ivr_abandon",
        "journey_id": "j1",
        "sequence": None,
        "customer_id": "c1",
        "tier": "A",
        "kind": "outbound_call",
        "template": "ivr_abandon_callback",
        "priority": "high",
        "channel": "call",
        "status": "sent",
        "reason": None,
        "due_at": "2024-06-03T12:00:00.000+00:00",
        "decided_at": "2024-06-03T12:00:00.000+00:00",
    }
    json.dumps(rec)


def test_missing_tier_is_c_and_unknown_rule_or_no_action_gives_nothing() -> None:
    e = engine()
    at = "2024-06-03T12:00:00"
    (rec,) = e.on_pain_point(CareState(), {}, pp("p1", "checkout_failed", at))
    assert (rec["tier"], rec["kind"], rec["channel"]) == ("C", "email", "email")
    assert e.on_pain_point(CareState(), prof("A"), pp("p2", "opt_out", at)) == []
    assert e.on_pain_point(CareState(), prof("A"), pp("p3", "no_such_rule", at)) == []
    assert e.stats["no_policy"] == 1


# -- duplicate -------------------------------------------------------------------------------


def test_same_pain_point_twice_acts_once() -> None:
    st = CareState()
    p = pp("p1", "store_complaint", "2024-06-03T12:00:00")
    first = BUILTIN.on_pain_point(st, prof("A"), p)
    assert brief(first) == [("outbound_call", "sent", None), ("manager_escalation", "sent", None)]
    assert BUILTIN.on_pain_point(st, prof("A"), p) == []
    # even a re-delivery much later (cooldown over) does not act again
    later = dict(p, detected_at=Z(T("2024-06-10T12:00:00")))
    assert BUILTIN.on_pain_point(st, prof("A"), later) == []


def test_redelivery_while_held_does_not_hold_or_send_again() -> None:
    st = CareState()
    p = pp("p1", "long_queue", "2024-06-03T22:00:00")
    assert brief(BUILTIN.on_pain_point(st, prof("B"), p)) == [("sms", "held", "quiet_hours")]
    assert BUILTIN.on_pain_point(st, prof("B"), p) == []
    released = BUILTIN.advance(st, "c1", prof("B"), T("2024-06-04T09:00:00"))
    assert brief(released) == [("sms", "sent", None)]
    assert BUILTIN.on_pain_point(st, prof("B"), p) == []


def test_kind_added_to_policy_after_acting_is_a_suppressed_duplicate() -> None:
    st = CareState()
    p = pp("p1", "r1", "2024-06-03T12:00:00")
    assert brief(engine(SIMPLE).on_pain_point(st, prof("B"), p)) == [("sms", "sent", None)]
    wider = engine(
        SIMPLE.replace(
            "{B: {kind: sms, template: t1}}",
            "{B: [{kind: sms, template: t1}, {kind: email, template: e1}]}",
        )
    )
    recs = wider.on_pain_point(st, prof("B"), p)
    assert brief(recs) == [("email", "suppressed", "duplicate")]
    assert recs[0]["action_id"] == aid("care:p1:email")
    assert wider.on_pain_point(st, prof("B"), p) == []  # and that decision is not repeated


# -- consent and opt-out ---------------------------------------------------------------------


def test_no_consent_per_channel_missing_key_allowed() -> None:
    at = "2024-06-03T12:00:00"
    no_sms = prof("B", consents={"sms": False, "email": True})
    assert brief(BUILTIN.on_pain_point(CareState(), no_sms, pp("p", "long_queue", at))) == [
        ("sms", "suppressed", "no_consent")
    ]
    # the call channel has no key: allowed; the internal escalation needs no consent
    no_call = prof("A", consents={"call": False})
    assert brief(BUILTIN.on_pain_point(CareState(), no_call, pp("p", "store_complaint", at))) == [
        ("outbound_call", "suppressed", "no_consent"),
        ("manager_escalation", "sent", None),
    ]
    a_no_sms = prof("A", consents={"sms": False})
    assert brief(BUILTIN.on_pain_point(CareState(), a_no_sms, pp("p", "store_complaint", at))) == [
        ("outbound_call", "sent", None),
        ("manager_escalation", "sent", None),
    ]


def test_opt_out_blocks_its_channel_from_its_time_on() -> None:
    st = CareState()
    e = engine()
    assert (
        e.on_event(st, "c1", prof("C"), ev("o1", "sms", "opt_out"), T("2024-06-03T10:00:00")) == []
    )
    # before the opt-out's event time: still allowed (decided at event time)
    assert brief(e.on_pain_point(st, prof("C"), pp("p0", "long_queue", "2024-06-03T09:59:59"))) == [
        ("sms", "sent", None)
    ]
    assert brief(
        e.on_pain_point(st, prof("C"), pp("p1", "ivr_abandon", "2024-06-03T10:00:00"))
    ) == [("sms", "suppressed", "opted_out")]
    # email is another channel
    assert brief(
        e.on_pain_point(st, prof("C"), pp("p2", "checkout_failed", "2024-06-03T11:00:00"))
    ) == [("email", "sent", None)]
    # an opt-in (if a source ever sends one) re-enables the channel from its time
    e.on_event(st, "c1", prof("C"), ev("o2", "sms", "opt_in"), T("2024-06-05T10:00:00"))
    assert brief(
        e.on_pain_point(st, prof("C"), pp("p3", "queue_abandon", "2024-06-05T11:00:00"))
    ) == [("sms", "sent", None)]
    assert brief(
        e.on_pain_point(st, prof("C"), pp("p4", "negative_reply", "2024-06-04T11:00:00"))
    ) == [("sms", "suppressed", "opted_out")]


def test_opt_out_between_hold_and_release_suppresses_the_release() -> None:
    st = CareState()
    p = prof("B", tz="Europe/Berlin")
    (held,) = BUILTIN.on_pain_point(
        st, p, pp("p1", "long_queue", "2024-06-03T20:00:00")
    )  # 22:00 local
    assert (held["status"], held["reason"], held["due_at"]) == (
        "held",
        "quiet_hours",
        "2024-06-04T06:00:00.000+00:00",
    )
    BUILTIN.on_event(st, "c1", p, ev("o1", "sms", "opt_out"), T("2024-06-03T23:00:00"))
    (rel,) = release(BUILTIN, st, p, T("2024-06-04T06:00:00"))
    assert rel["action_id"] == held["action_id"]
    assert (rel["status"], rel["reason"]) == ("suppressed", "opted_out")
    assert rel["decided_at"] == rel["due_at"] == "2024-06-04T06:00:00.000+00:00"
    assert st.held == [] and BUILTIN.next_due(st) is None


def test_consent_withdrawn_while_held_suppresses_the_release() -> None:
    st = CareState()
    BUILTIN.on_pain_point(st, prof("B"), pp("p1", "long_queue", "2024-06-03T22:00:00"))
    (rel,) = release(BUILTIN, st, prof("B", consents={"sms": False}), T("2024-06-04T08:00:00"))
    assert (rel["status"], rel["reason"]) == ("suppressed", "no_consent")


# -- cooldown --------------------------------------------------------------------------------


def test_cooldown_per_rule_with_exact_boundary() -> None:
    e = engine(SIMPLE.replace("per_day: 2, per_week: 3", "per_day: 9, per_week: 9"))
    st = CareState()
    t0 = T("2024-06-03T12:00:00")
    assert brief(e.on_pain_point(st, prof(), pp("a", "r1", t0))) == [("sms", "sent", None)]
    assert brief(e.on_pain_point(st, prof(), pp("b", "r1", t0 + DAY - 1))) == [
        ("sms", "suppressed", "cooldown")
    ]
    assert brief(e.on_pain_point(st, prof(), pp("c", "r2", t0 + 60))) == [("sms", "sent", None)]
    assert brief(e.on_pain_point(st, prof(), pp("d", "r1", t0 + DAY))) == [("sms", "sent", None)]


def test_cooldown_override_zero_and_only_sent_actions_start_it() -> None:
    e = engine(
        SIMPLE.replace("per_day: 2, per_week: 3", "per_day: 9, per_week: 9")
        .replace("- rule: r2\n", "- rule: r2\n    cooldown: 2h\n")
        .replace("- rule: r3\n", "- rule: r3\n    cooldown: 0\n")
    )
    st = CareState()
    t0 = T("2024-06-03T12:00:00")
    e.on_pain_point(st, prof(), pp("a", "r2", t0))
    assert brief(e.on_pain_point(st, prof(), pp("b", "r2", t0 + 2 * HOUR - 1))) == [
        ("sms", "suppressed", "cooldown")
    ]
    assert brief(e.on_pain_point(st, prof(), pp("c", "r2", t0 + 2 * HOUR))) == [
        ("sms", "sent", None)
    ]
    assert brief(e.on_pain_point(st, prof(), pp("d", "r3", t0))) == [("sms", "sent", None)]
    assert brief(e.on_pain_point(st, prof(), pp("e", "r3", t0))) == [("sms", "sent", None)]
    # a suppressed action starts no cooldown
    st2 = CareState()
    no = prof(consents={"sms": False})
    assert brief(e.on_pain_point(st2, no, pp("f", "r1", t0))) == [
        ("sms", "suppressed", "no_consent")
    ]
    assert brief(e.on_pain_point(st2, prof(), pp("g", "r1", t0 + 60))) == [("sms", "sent", None)]


def test_actions_of_one_pain_point_do_not_cool_each_other_down() -> None:
    st = CareState()
    recs = BUILTIN.on_pain_point(st, prof("A"), pp("p1", "repeat_contact", "2024-06-03T12:00:00"))
    assert brief(recs) == [("outbound_call", "sent", None), ("manager_escalation", "sent", None)]
    recs = BUILTIN.on_pain_point(st, prof("A"), pp("p2", "repeat_contact", "2024-06-05T12:00:00"))
    assert brief(recs) == [
        ("outbound_call", "suppressed", "cooldown"),  # repeat_contact's cooldown is 72h
        ("manager_escalation", "suppressed", "cooldown"),
    ]


# -- caps ------------------------------------------------------------------------------------


def test_day_cap_exactly_at_the_limit_and_rolling_boundary() -> None:
    e = engine(SIMPLE)
    st = CareState()
    t0 = T("2024-06-03T10:00:00")
    assert brief(e.on_pain_point(st, prof(), pp("a", "r1", t0))) == [("sms", "sent", None)]
    assert brief(e.on_pain_point(st, prof(), pp("b", "r2", t0 + HOUR))) == [("sms", "sent", None)]
    assert brief(e.on_pain_point(st, prof(), pp("c", "r3", t0 + 2 * HOUR))) == [
        ("sms", "suppressed", "cap_day")
    ]
    assert brief(e.on_pain_point(st, prof(), pp("d", "r3", t0 + DAY - 1))) == [
        ("sms", "suppressed", "cap_day")
    ]
    # exactly 24 h after the first send it has left the window
    assert brief(e.on_pain_point(st, prof(), pp("e", "r3", t0 + DAY))) == [("sms", "sent", None)]


def test_week_cap() -> None:
    e = engine(SIMPLE.replace("cooldown: 24h", "cooldown: 0"))
    st = CareState()
    t0 = T("2024-06-03T10:00:00")
    got = [brief(e.on_pain_point(st, prof(), pp(f"p{i}", "r1", t0 + i * DAY)))[0] for i in range(4)]
    assert got == [("sms", "sent", None)] * 3 + [("sms", "suppressed", "cap_week")]
    assert brief(e.on_pain_point(st, prof(), pp("x", "r1", t0 + 7 * DAY - 1))) == [
        ("sms", "suppressed", "cap_week")
    ]
    assert brief(e.on_pain_point(st, prof(), pp("y", "r1", t0 + 7 * DAY))) == [
        ("sms", "sent", None)
    ]


def test_caps_hold_for_decisions_out_of_time_order() -> None:
    # a held action is released (decided at 08:00) after later pain points were decided
    e = engine(SIMPLE.replace("quiet_hours: null", 'quiet_hours: {start: "21:00", end: "08:00"}'))
    st = CareState()
    assert brief(e.on_pain_point(st, prof(), pp("a", "r1", "2024-06-03T22:00:00"))) == [
        ("sms", "held", "quiet_hours")
    ]
    e.on_pain_point(st, prof(), pp("b", "r2", "2024-06-04T09:00:00"))
    e.on_pain_point(st, prof(), pp("c", "r3", "2024-06-04T10:00:00"))
    # one more at 08:00 would make three in (10:00 - 24h, 10:00]
    assert brief(e.advance(st, "c1", prof(), T("2024-06-04T10:00:00"))) == [
        ("sms", "suppressed", "cap_day")
    ]
    # earlier still, but no window holds more than two: allowed
    st2 = CareState()
    e.on_pain_point(st2, prof(), pp("b", "r2", "2024-06-04T10:00:00"))
    e.on_pain_point(st2, prof(), pp("c", "r3", "2024-06-04T12:00:00"))
    assert brief(e.on_pain_point(st2, prof(), pp("d", "r4", "2024-06-03T11:59:59"))) == [
        ("sms", "sent", None)
    ]
    assert brief(e.on_pain_point(st2, prof(), pp("f", "r1", "2024-06-03T11:00:00"))) == [
        ("sms", "suppressed", "cap_day")
    ]


def test_exempt_kinds_are_neither_counted_nor_capped() -> None:
    e = engine(SIMPLE)
    st = CareState()
    t0 = T("2024-06-03T10:00:00")
    for i in range(3):
        assert brief(e.on_pain_point(st, prof(), pp(f"e{i}", "esc", t0 + i * 2 * DAY))) == [
            ("manager_escalation", "sent", None)
        ]
    assert st.sends == []
    e.on_pain_point(st, prof(), pp("a", "r1", t0 + 5 * DAY))
    e.on_pain_point(st, prof(), pp("b", "r2", t0 + 5 * DAY))
    assert brief(e.on_pain_point(st, prof(), pp("c", "esc", t0 + 5 * DAY + 1))) == [
        ("manager_escalation", "sent", None)
    ]


# -- quiet hours -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "status", "due"),
    [
        ("2024-06-03T20:59:59", "sent", "2024-06-03T20:59:59"),
        ("2024-06-03T21:00:00", "held", "2024-06-04T08:00:00"),
        ("2024-06-03T23:30:00", "held", "2024-06-04T08:00:00"),  # across midnight
        ("2024-06-04T02:00:00", "held", "2024-06-04T08:00:00"),  # after midnight: same day
        ("2024-06-04T07:59:59", "held", "2024-06-04T08:00:00"),
        ("2024-06-04T08:00:00", "sent", "2024-06-04T08:00:00"),
    ],
)
def test_quiet_hours_in_local_time(local: str, status: str, due: str) -> None:
    # New York in June is UTC-4: local 21:00 is 01:00 UTC the next day
    tz = "America/New_York"
    t = T(local + "-04:00")
    (rec,) = BUILTIN.on_pain_point(CareState(), prof("B", tz), pp("p", "long_queue", t))
    assert rec["status"] == status
    assert rec["due_at"] == Z(T(due + "-04:00"))
    assert rec["decided_at"] == Z(t)


def test_quiet_hours_only_for_listed_channels() -> None:
    # tier C checkout_failed is an email: not held at 23:00
    (rec,) = BUILTIN.on_pain_point(
        CareState(), prof("C"), pp("p", "checkout_failed", "2024-06-03T23:00:00")
    )
    assert (rec["status"], rec["channel"]) == ("sent", "email")
    # a manager escalation (no contact channel) is never held; the call is
    recs = BUILTIN.on_pain_point(
        CareState(), prof("A"), pp("p", "store_complaint", "2024-06-03T23:00:00")
    )
    assert brief(recs) == [
        ("outbound_call", "held", "quiet_hours"),
        ("manager_escalation", "sent", None),
    ]


def test_held_is_released_at_the_right_utc_instant() -> None:
    st = CareState()
    p = prof("A", "Asia/Tokyo")  # UTC+9, no DST: 22:00 local = 13:00 UTC
    (held,) = BUILTIN.on_pain_point(st, p, pp("p1", "long_queue", "2024-06-03T13:00:00"))
    assert held["due_at"] == "2024-06-03T23:00:00.000+00:00"  # 08:00 local next day
    assert BUILTIN.next_due(st) == T("2024-06-03T23:00:00")
    assert BUILTIN.advance(st, "c1", p, T("2024-06-03T22:59:59.999")) == []
    assert BUILTIN.advance(st, "c1", p, T("2024-06-03T23:00:00")) == []  # due is not past yet
    assert BUILTIN.next_due(st) == T("2024-06-03T23:00:00")
    (rel,) = BUILTIN.advance(st, "c1", p, T("2024-06-03T23:00:00.001"))
    assert (rel["status"], rel["reason"], rel["due_at"]) == ("sent", None, held["due_at"])
    assert BUILTIN.advance(st, "c1", p, T("2024-06-05T00:00:00")) == []


@pytest.mark.parametrize(
    ("tz", "decided", "released"),
    [
        # Berlin, spring forward (2024-03-31 02:00 CET -> 03:00 CEST): 08:00 CEST = 06:00 UTC
        ("Europe/Berlin", "2024-03-30T21:00:00", "2024-03-31T06:00:00"),
        # Berlin, fall back (2024-10-27 03:00 CEST -> 02:00 CET): 08:00 CET = 07:00 UTC
        ("Europe/Berlin", "2024-10-26T20:00:00", "2024-10-27T07:00:00"),
        # New York, spring forward 2024-03-10: 22:00 EST -> 08:00 EDT = 12:00 UTC
        ("America/New_York", "2024-03-10T03:00:00", "2024-03-10T12:00:00"),
        # New York, fall back 2024-11-03: 22:00 EDT -> 08:00 EST = 13:00 UTC
        ("America/New_York", "2024-11-03T02:00:00", "2024-11-03T13:00:00"),
    ],
)
def test_quiet_hours_on_dst_change_nights(tz: str, decided: str, released: str) -> None:
    st = CareState()
    (held,) = BUILTIN.on_pain_point(st, prof("B", tz), pp("p", "long_queue", decided))
    assert (held["status"], held["due_at"]) == ("held", Z(T(released)))
    (rel,) = release(BUILTIN, st, prof("B", tz), T(released))
    assert (rel["status"], rel["due_at"]) == ("sent", Z(T(released)))


def _quiet_until_0230() -> CareEngine:
    return engine("""
        defaults: {quiet_hours: {start: "22:00", end: "02:30"}}
        care: [{rule: r, cooldown: 0, tiers: {B: {kind: sms, template: t}}}]
    """)


def test_quiet_end_that_does_not_exist_resolves_to_the_jump() -> None:
    # 02:30 does not exist in Berlin on 2024-03-31: the first valid instant after is 03:00 CEST
    (rec,) = _quiet_until_0230().on_pain_point(
        CareState(), prof("B", "Europe/Berlin"), pp("p", "r", "2024-03-30T22:00:00")
    )
    assert (rec["status"], rec["due_at"]) == ("held", "2024-03-31T01:00:00.000+00:00")


def test_quiet_end_that_occurs_twice_on_a_fall_back_night() -> None:
    e = _quiet_until_0230()
    p = prof("B", "Europe/Berlin")
    # 23:00 CEST: held until the first 02:30 (CEST, 00:30 UTC)
    (a,) = e.on_pain_point(CareState(), p, pp("a", "r", "2024-10-26T21:00:00"))
    assert a["due_at"] == "2024-10-27T00:30:00.000+00:00"
    # 02:40 CEST (first pass): the wall clock is past 02:30 -> not quiet
    (b,) = e.on_pain_point(CareState(), p, pp("b", "r", "2024-10-27T00:40:00"))
    assert b["status"] == "sent"
    # 02:10 CET (second pass): quiet again until the second 02:30 (01:30 UTC)
    (c,) = e.on_pain_point(CareState(), p, pp("c", "r", "2024-10-27T01:10:00"))
    assert (c["status"], c["due_at"]) == ("held", "2024-10-27T01:30:00.000+00:00")


def test_held_reserves_nothing_and_caps_apply_at_release() -> None:
    e = engine(SIMPLE.replace("quiet_hours: null", 'quiet_hours: {start: "21:00", end: "08:00"}'))
    st = CareState()
    held = [
        e.on_pain_point(st, prof(), pp(f"p{i}", f"r{i}", f"2024-06-03T22:0{i}:00"))[0]
        for i in (1, 2, 3)
    ]
    assert [r["status"] for r in held] == ["held"] * 3
    released = release(e, st, prof(), T("2024-06-04T08:00:00"))
    # all due at 08:00: decided in action_id order; the cap lets two through
    assert [r["action_id"] for r in released] == sorted(r["action_id"] for r in held)
    assert [(r["status"], r["reason"]) for r in released] == [
        ("sent", None),
        ("sent", None),
        ("suppressed", "cap_day"),
    ]


def test_held_action_does_not_block_a_send_meanwhile() -> None:
    e = engine(
        SIMPLE.replace("quiet_hours: null", 'quiet_hours: {start: "21:00", end: "08:00"}')
        .replace("per_day: 2", "per_day: 1")
        .replace("{B: {kind: sms, template: t2}}", "{B: {kind: email, template: t2}}")
    )
    st = CareState()
    assert brief(e.on_pain_point(st, prof(), pp("a", "r1", "2024-06-03T22:00:00"))) == [
        ("sms", "held", "quiet_hours")
    ]
    assert brief(e.on_pain_point(st, prof(), pp("b", "r2", "2024-06-03T23:00:00"))) == [
        ("email", "sent", None)
    ]
    assert brief(release(e, st, prof(), T("2024-06-04T08:00:00"))) == [
        ("sms", "suppressed", "cap_day")
    ]


def test_cooldown_applies_at_release_between_held_actions_of_one_rule() -> None:
    st = CareState()
    BUILTIN.on_pain_point(st, prof("B"), pp("a", "long_queue", "2024-06-03T22:00:00"))
    BUILTIN.on_pain_point(st, prof("B"), pp("b", "long_queue", "2024-06-03T23:00:00"))
    rel = release(BUILTIN, st, prof("B"), T("2024-06-04T08:00:00"))
    assert sorted((r["status"], r["reason"]) for r in rel) == [
        ("sent", None),
        ("suppressed", "cooldown"),
    ]


def test_held_queue_is_bounded() -> None:
    e = engine(
        SIMPLE.replace("quiet_hours: null", 'quiet_hours: {start: "21:00", end: "08:00"}').replace(
            "cooldown: 24h", "cooldown: 0"
        )
    )
    st = CareState()
    t0 = T("2024-06-03T22:00:00")
    recs = [e.on_pain_point(st, prof(), pp(f"p{i}", "r1", t0 + i))[0] for i in range(MAX_HELD + 5)]
    assert [r["status"] for r in recs].count("held") == MAX_HELD
    assert brief(recs[-5:]) == [("sms", "suppressed", "cap_day")] * 5
    assert len(st.held) == MAX_HELD


# -- sequences -------------------------------------------------------------------------------


def _trial(
    tier: str = "B", tz: str = "UTC", at: str = "2024-06-03T12:00:00"
) -> tuple[CareState, list[dict[str, Any]], float]:
    """A trial started at ``at``; returns the state, what the advance just past the trigger
    decided (the day-0 guide) and the trigger time."""
    st = CareState()
    ts = T(at)
    p = prof(tier, tz)
    assert BUILTIN.on_event(st, "c1", p, ev("t1", "web", "trial_started"), ts) == []
    return st, release(BUILTIN, st, p, ts), ts


def test_trial_guide_is_decided_at_the_trigger() -> None:
    st, recs, ts = _trial()
    (guide,) = recs
    assert guide["sequence"] == "trial:guide"
    assert guide["action_id"] == aid("care-seq:c1:trial:guide:t1")
    assert (guide["pain_point_id"], guide["rule_id"], guide["journey_id"]) == (None, None, None)
    assert (guide["kind"], guide["status"], guide["due_at"]) == ("sms", "sent", Z(ts))
    assert guide["decided_at"] == Z(ts)  # at the trigger's time, though decided just after
    assert tuple(guide) == RECORD_KEYS
    assert BUILTIN.next_due(st) == ts + 15 * DAY


def test_a_step_due_at_the_trigger_waits_for_an_advance_past_it() -> None:
    e = engine("""
        defaults: {quiet_hours: null}
        sequences:
          - id: s
            trigger: {channel: store, type: purchase}
            steps:
              - {id: now, after: 0, kind: email, template: a}
              - {id: later, after: 1h, kind: email, template: b}
    """)
    st = CareState()
    p = prof("C")
    t = T("2024-06-03T12:00:00")
    out = e.on_event(st, "c1", p, ev("buy", "store", "purchase"), t)
    assert out == [] and isinstance(out, list)  # on_event never decides a step
    assert e.next_due(st) == t
    assert e.advance(st, "c1", p, t - EPS) == []
    assert e.advance(st, "c1", p, t) == []  # more events at exactly t may still come
    assert len(st.pending) == 2
    (rec,) = e.advance(st, "c1", p, t + EPS)
    assert (rec["sequence"], rec["status"]) == ("s:now", "sent")
    assert rec["due_at"] == rec["decided_at"] == Z(t)
    assert rec["action_id"] == aid("care-seq:c1:s:now:buy")
    assert e.next_due(st) == t + HOUR


@pytest.mark.parametrize("before", [60.0, 0.0])
def test_late_opt_out_before_the_trigger_suppresses_the_day0_guide(before: float) -> None:
    """Live, an opt-out can arrive after a trial_started with an earlier (or the same)
    timestamp; the day-0 guide must see it, as it does in a backtest's time order."""
    p = prof("B")
    t0 = T("2024-06-03T12:00:00")  # 12:00 UTC: not quiet hours
    trial, opt = ev("t1", "web", "trial_started"), ev("o1", "sms", "opt_out")
    records = []
    for order in ((opt, trial), (trial, opt)):  # time order, then live arrival order
        st = CareState()
        for x in order:
            assert BUILTIN.on_event(st, "c1", p, x, t0 - before if x is opt else t0) == []
        records.append(release(BUILTIN, st, p, t0))
    assert records[0] == records[1]
    (guide,) = records[1]
    assert (guide["sequence"], guide["status"], guide["reason"]) == (
        "trial:guide",
        "suppressed",
        "opted_out",
    )
    assert guide["decided_at"] == Z(t0)


def test_trial_steps_on_time_per_tier() -> None:
    for tier, expected in (
        ("A", ["trial:feedback", "trial:helper", "trial:expiry", "trial:expiry_call"]),
        ("C", ["trial:feedback", "trial:helper", "trial:expiry"]),
    ):
        st, _, ts = _trial(tier)
        assert BUILTIN.advance(st, "c1", prof(tier), ts + 15 * DAY - 1) == []
        (fb,) = release(BUILTIN, st, prof(tier), ts + 15 * DAY)
        assert (fb["sequence"], fb["status"], fb["due_at"]) == (
            "trial:feedback",
            "sent",
            Z(ts + 15 * DAY),
        )
        rest = BUILTIN.advance(st, "c1", prof(tier), ts + 40 * DAY)
        got = [fb["sequence"]] + [r["sequence"] for r in rest]
        assert sorted(got) == sorted(expected), tier
        assert all(r["status"] == "sent" for r in rest)
        dues = {r["sequence"]: r["due_at"] for r in rest}
        assert dues["trial:helper"] == Z(ts + 20 * DAY)
        assert dues["trial:expiry"] == Z(ts + 27 * DAY)
        # same due: (due, action_id) order
        keys = [(r["due_at"], r["action_id"]) for r in rest]
        assert keys == sorted(keys)
        assert BUILTIN.next_due(st) is None


@pytest.mark.parametrize(("uses", "status"), [(2, "sent"), (3, "suppressed")])
def test_trial_helper_unless_app_used(uses: int, status: str) -> None:
    st, _, ts = _trial()
    p = prof("B")
    channels = ["web", "app", "web"]
    for i in range(uses):
        BUILTIN.on_event(st, "c1", p, ev(f"u{i}", channels[i], "app_usage"), ts + (i + 1) * DAY)
    # a replayed usage event counts once; one after the step's time does not count
    BUILTIN.on_event(st, "c1", p, ev("u0", "web", "app_usage"), ts + DAY)
    BUILTIN.on_event(st, "c1", p, ev("late", "web", "app_usage"), ts + 21 * DAY)
    recs = {r["sequence"]: r for r in BUILTIN.advance(st, "c1", p, ts + 21 * DAY)}
    helper = recs["trial:helper"]
    assert helper["status"] == status
    assert helper["reason"] == (None if status == "sent" else "condition")
    assert recs["trial:feedback"]["status"] == "sent"  # only the helper has the condition


def test_unless_counts_events_processed_before_the_trigger() -> None:
    # arrival order within the lateness: usage events (after the trigger in event time)
    # arrive before the trigger itself
    st = CareState()
    p = prof("B")
    t0 = T("2024-06-03T12:00:00")
    for i in range(3):
        BUILTIN.on_event(st, "c1", p, ev(f"u{i}", "web", "app_usage"), t0 + HOUR * (i + 1))
    BUILTIN.on_event(st, "c1", p, ev("t1", "web", "trial_started"), t0)
    recs = {r["sequence"]: r for r in BUILTIN.advance(st, "c1", p, t0 + 21 * DAY)}
    assert recs["trial:helper"]["reason"] == "condition"
    # usage before the trigger does not count
    st = CareState()
    for i in range(3):
        BUILTIN.on_event(st, "c1", p, ev(f"u{i}", "web", "app_usage"), t0 - HOUR * (i + 1))
    BUILTIN.on_event(st, "c1", p, ev("t1", "web", "trial_started"), t0)
    recs = {r["sequence"]: r for r in BUILTIN.advance(st, "c1", p, t0 + 21 * DAY)}
    assert recs["trial:helper"]["status"] == "sent"


def test_trial_replayed_or_repeated_trigger_starts_nothing() -> None:
    st, _, ts = _trial()
    pending = [list(x) for x in st.pending]
    assert len(pending) == 4  # feedback, helper, expiry, expiry_call
    assert BUILTIN.on_event(st, "c1", prof(), ev("t1", "web", "trial_started"), ts) == []
    assert BUILTIN.on_event(st, "c1", prof(), ev("t2", "web", "trial_started"), ts + DAY) == []
    assert st.pending == pending
    # once the run is over, a new trial starts a new run
    BUILTIN.advance(st, "c1", prof(), ts + 30 * DAY)
    assert st.pending == []
    t3 = ts + 31 * DAY
    assert BUILTIN.on_event(st, "c1", prof(), ev("t3", "web", "trial_started"), t3) == []
    (guide,) = release(BUILTIN, st, prof(), t3)
    assert guide["action_id"] == aid("care-seq:c1:trial:guide:t3")
    # ...but the first trigger, replayed now, does not
    pending = [list(x) for x in st.pending]
    assert {x[4] for x in pending} == {"t3"}
    assert BUILTIN.on_event(st, "c1", prof(), ev("t1", "web", "trial_started"), ts) == []
    assert st.pending == pending


def test_sequence_steps_go_through_the_guards() -> None:
    # 22:30 local: the guide waits for 08:00; an opted-out sms is suppressed
    st, recs, ts = _trial(tz="Europe/Berlin", at="2024-06-03T20:30:00")
    assert [(r["status"], r["due_at"]) for r in recs] == [("held", "2024-06-04T06:00:00.000+00:00")]
    BUILTIN.on_event(st, "c1", prof("B", "Europe/Berlin"), ev("o", "sms", "opt_out"), ts + HOUR)
    (rel,) = release(BUILTIN, st, prof("B", "Europe/Berlin"), T("2024-06-04T06:00:00"))
    assert (rel["sequence"], rel["status"], rel["reason"]) == (
        "trial:guide",
        "suppressed",
        "opted_out",
    )


def test_records_do_not_depend_on_how_often_advance_runs() -> None:
    def run(step: float) -> list[dict[str, Any]]:
        st = CareState()
        p = prof("A", "Europe/Berlin")
        t0 = T("2024-06-03T19:45:00")
        out = BUILTIN.on_event(st, "c1", p, ev("t1", "web", "trial_started"), t0)
        out += BUILTIN.on_pain_point(st, p, pp("x", "long_queue", t0 + HOUR))
        now = t0
        while now < t0 + 30 * DAY:
            now += step
            out += BUILTIN.advance(st, "c1", p, now)
        return out

    coarse, fine = run(10 * DAY), run(HOUR)
    assert coarse == fine
    assert len(coarse) >= 7


def test_step_at_local_time_and_clamped_to_the_trigger() -> None:
    e = engine("""
        defaults: {quiet_hours: null}
        sequences:
          - id: s
            trigger: {channel: store, type: purchase}
            steps:
              - {id: same_day, after: 0h, at_local: "10:00", kind: sms, template: a}
              - {id: next_day, after: 1d, at_local: "10:00", kind: sms, template: b}
    """)
    st = CareState()
    p = prof("C", "Europe/Berlin")
    t = T("2024-06-03T12:00:00")  # 14:00 local: today's 10:00 is past, so at the trigger
    assert e.on_event(st, "c1", p, ev("buy", "store", "purchase"), t) == []
    assert e.next_due(st) == t
    (now,) = release(e, st, p, t)
    assert (now["sequence"], now["due_at"], now["decided_at"]) == ("s:same_day", Z(t), Z(t))
    (nxt,) = e.advance(st, "c1", p, T("2024-06-05T00:00:00"))
    assert nxt["due_at"] == "2024-06-04T08:00:00.000+00:00"


# -- birthday --------------------------------------------------------------------------------


def test_birthday_greeting_at_ten_local() -> None:
    st = CareState()
    p = prof("B", "Europe/Berlin", birthday="1990-06-10")
    assert (
        BUILTIN.on_event(st, "c1", p, ev("e1", "web", "page_view"), T("2024-06-01T12:00:00")) == []
    )
    assert BUILTIN.next_due(st) == T("2024-06-10T08:00:00")
    (g,) = release(BUILTIN, st, p, T("2024-06-10T08:00:00"))
    assert g["sequence"] == "birthday:greeting"
    assert g["action_id"] == aid("care-seq:c1:birthday:greeting:2024")
    assert (g["status"], g["due_at"], g["priority"]) == (
        "sent",
        "2024-06-10T08:00:00.000+00:00",
        "low",
    )
    # the next year's greeting is scheduled at once (a birthday needs no activity)
    assert BUILTIN.next_due(st) == T("2025-06-10T08:00:00")
    BUILTIN.on_event(st, "c1", p, ev("e2", "web", "page_view"), T("2024-08-01T12:00:00"))
    assert BUILTIN.next_due(st) == T("2025-06-10T08:00:00")
    assert BUILTIN.advance(st, "c1", p, T("2024-12-31T00:00:00")) == []  # greeted once


def test_birthday_greetings_do_not_depend_on_event_order() -> None:
    """A late event before the birthday brings its greeting back: the same greetings as
    when the events arrive in time order (live arrival order differs from a backtest's)."""
    p = prof("B", "Europe/Berlin", birthday="1990-06-10")
    before, after = T("2024-06-05T12:00:00"), T("2024-06-12T12:00:00")
    records = []
    for order in ((before, after), (after, before)):
        st = CareState()
        for i, ts in enumerate(order):
            BUILTIN.on_event(st, "c1", p, ev(f"e{ts}", "web", "page_view"), ts)
            assert i == 0 or BUILTIN.next_due(st) == T("2024-06-10T08:00:00")
        records.append(BUILTIN.advance(st, "c1", p, T("2024-06-20T00:00:00")))
    assert records[0] == records[1]
    assert [r["action_id"] for r in records[0]] == [aid("care-seq:c1:birthday:greeting:2024")]


def test_no_greeting_for_a_birthday_before_the_first_event() -> None:
    st = CareState()
    p = prof("B", "Europe/Berlin", birthday="1990-06-10")
    # 11:00 local on the birthday: this year's 10:00 greeting is already past
    BUILTIN.on_event(st, "c1", p, ev("e1", "web", "page_view"), T("2024-06-10T09:00:00"))
    assert BUILTIN.next_due(st) == T("2025-06-10T08:00:00")
    assert BUILTIN.advance(st, "c1", p, T("2024-12-31T00:00:00")) == []


@pytest.mark.parametrize(
    ("birthday", "tz", "due"),
    [
        ("2000-02-29", "UTC", "2025-02-28T10:00:00"),  # no 29 February in 2025
        ("1985-03-30", "Europe/Berlin", "2025-03-30T08:00:00"),  # spring-forward day: CEST
        ("1985-10-27", "Europe/Berlin", "2024-10-27T09:00:00"),  # the fall-back day: CET
    ],
)
def test_birthday_dates_and_zones(birthday: str, tz: str, due: str) -> None:
    st = CareState()
    p = prof("C", tz, birthday=birthday)
    BUILTIN.on_event(st, "c1", p, ev("e1", "web", "page_view"), T("2024-10-01T00:00:00"))
    assert BUILTIN.next_due(st) == T(due)


def test_birthday_changes_are_followed() -> None:
    st = CareState()
    p = prof("B", birthday=date(1990, 6, 10))
    BUILTIN.on_event(st, "c1", p, ev("e1", "web", "page_view"), T("2024-06-01T00:00:00"))
    assert BUILTIN.next_due(st) == T("2024-06-10T10:00:00")
    p2 = prof("B", birthday="1990-07-01")
    # a changed profile: the scheduled greeting is not this customer's day any more
    assert BUILTIN.advance(st, "c1", p2, T("2024-06-11T00:00:00")) == []
    BUILTIN.on_event(st, "c1", p2, ev("e2", "web", "page_view"), T("2024-06-12T00:00:00"))
    assert BUILTIN.next_due(st) == T("2024-07-01T10:00:00")
    BUILTIN.on_event(st, "c1", prof("B"), ev("e3", "web", "page_view"), T("2024-06-13T00:00:00"))
    assert BUILTIN.next_due(st) is None  # birthday removed


def test_birthday_at_local_time_in_a_spring_forward_gap() -> None:
    e = engine("""
        sequences:
          - {id: birthday, trigger: birthday,
             steps: [{id: greeting, at_local: "02:30", kind: email, template: g}]}
    """)
    st = CareState()
    p = prof("B", "Europe/Berlin", birthday="1990-03-31")
    e.on_event(st, "c1", p, ev("e1", "web", "page_view"), T("2024-03-01T00:00:00"))
    assert e.next_due(st) == T("2024-03-31T01:00:00")  # 03:00 CEST, the first valid instant


# -- determinism, state ----------------------------------------------------------------------


def _scenario(e: CareEngine, roundtrip: bool) -> tuple[list[dict[str, Any]], CareState]:
    """A month of mixed inputs for one customer; optionally through JSON between calls."""
    st = CareState()
    p = prof("A", "Europe/Berlin", birthday="1990-06-20", consents={"email": False})
    t0 = T("2024-06-03T18:00:00")
    calls: list[tuple[str, Any]] = [("ev", (ev("t1", "web", "trial_started"), t0))]
    rules = ["long_queue", "store_complaint", "low_survey_score"]
    for i in range(100):
        t = t0 + i * 5 * HOUR
        calls.append(("pp", pp(f"p{i}", rules[i % len(rules)], t)))
        if i % 7 == 3:
            calls.append(("ev", (ev(f"u{i}", "web", "app_usage"), t + 60)))
        if i == 40:
            calls.append(("ev", (ev("o1", "sms", "opt_out"), t + 120)))
        calls.append(("adv", t + 5 * HOUR))
    out: list[dict[str, Any]] = []
    for kind, arg in calls:
        if roundtrip:
            st = CareState.from_json(json.loads(json.dumps(st.to_json())))
        if kind == "ev":
            out += e.on_event(st, "c1", p, arg[0], arg[1])
        elif kind == "pp":
            out += e.on_pain_point(st, p, arg)
        else:
            out += e.advance(st, "c1", p, arg)
    return out, st


def test_deterministic_and_json_round_trip_preserves_behaviour() -> None:
    a, st_a = _scenario(engine(), roundtrip=False)
    b, _ = _scenario(engine(), roundtrip=False)
    c, st_c = _scenario(engine(), roundtrip=True)
    assert a == b == c
    assert st_a.to_json() == st_c.to_json()
    statuses = {(r["status"], r["reason"]) for r in a}
    # the scenario exercises most outcomes
    assert {("sent", None), ("held", "quiet_hours"), ("suppressed", "cooldown")} <= statuses
    assert ("suppressed", "opted_out") in statuses
    assert any(r["sequence"] == "birthday:greeting" for r in a)
    assert all(isinstance(r["action_id"], str) and tuple(r) == RECORD_KEYS for r in a)


def test_state_json_is_compact_plain_json() -> None:
    assert CareState().to_json() == {}
    _, st = _scenario(engine(), roundtrip=False)
    d = st.to_json()
    text = json.dumps(d, allow_nan=False)
    assert CareState.from_json(json.loads(text)).to_json() == d


def test_state_stays_bounded_with_thousands_of_pain_points() -> None:
    e = engine()
    st = CareState()
    p = prof("B", "Europe/Berlin")
    t0 = T("2024-01-01T00:00:00")
    rules = [r for r in e.policy.rule_ids if r != "opt_out"]
    sent_ids: set[str] = set()
    delivered: list[dict[str, Any]] = []
    for i in range(5000):
        t = t0 + i * 10 * 60.0  # every 10 minutes for ~35 days
        delivered.append(pp(f"p{i}", rules[i % len(rules)], t))
        for r in e.on_pain_point(st, p, delivered[-1]) + e.advance(st, "c1", p, t):
            if r["status"] == "sent":
                assert r["action_id"] not in sent_ids
                sent_ids.add(r["action_id"])
        if i % 500 == 0:
            e.on_event(st, "c1", p, ev(f"t{i}", "web", "trial_started"), t)
            e.on_event(st, "c1", p, ev(f"u{i}", "web", "app_usage"), t)
    assert len(st.acted) <= MAX_ACTED
    assert len(st.sends) <= 10  # within the caps of the last 8 days
    assert len(st.held) <= MAX_HELD and len(st.pending) <= 10
    assert len(st.cooldown) <= len(rules) and len(st.triggers) <= 10
    assert len(json.dumps(st.to_json())) < 40_000
    # every pain point re-delivered (a full replay): never a second sent
    for x in delivered:
        assert all(r["status"] != "sent" for r in e.on_pain_point(st, p, x))


def test_burst_of_pain_points_is_bounded_and_never_resent() -> None:
    e = engine(SIMPLE.replace("cooldown: 24h", "cooldown: 0"))
    st = CareState()
    t0 = T("2024-06-03T12:00:00")
    all_pp = [pp(f"p{i}", "r1", t0 + i) for i in range(3000)]
    first = [r for x in all_pp for r in e.on_pain_point(st, prof(), x)]
    assert [r["status"] for r in first].count("sent") == 2
    assert len(st.acted) <= MAX_ACTED
    for x in all_pp:
        assert e.on_pain_point(st, prof(), x) == []


def test_old_state_is_pruned_and_old_replays_ignored() -> None:
    st = CareState()
    p = prof("B")
    old = pp("p1", "long_queue", "2024-06-03T12:00:00")
    BUILTIN.on_pain_point(st, p, old)
    assert st.acted and st.sends and st.cooldown
    BUILTIN.advance(st, "c1", p, T("2024-08-01T00:00:00"))
    assert not st.acted and not st.sends and not st.cooldown
    assert BUILTIN.on_pain_point(st, p, old) == []  # forgotten: treated as handled
    assert BUILTIN.stats["stale"] >= 1
    assert set(st.to_json()) <= {"m", "af"}


def test_trigger_memory_is_bounded_and_forgotten_triggers_stay_handled() -> None:
    st = CareState()
    p = prof("B")
    t0 = T("2024-06-03T12:00:00")
    for i in range(300):
        assert BUILTIN.on_event(st, "c1", p, ev(f"t{i}", "web", "trial_started"), t0 + i * 60) == []
    # one run at a time: the first trigger's five steps (guide ... expiry_call)
    assert len(st.triggers) <= MAX_TRIGGERS and len(st.pending) == 5
    assert {x[4] for x in st.pending} == {"t0"}
    recs = BUILTIN.advance(st, "c1", p, t0 + 30 * DAY)
    steps = ("guide", "feedback", "helper", "expiry", "expiry_call")
    assert sorted(r["action_id"] for r in recs) == sorted(
        aid(f"care-seq:c1:trial:{s}:t0") for s in steps
    )
    assert st.pending == []
    # the oldest triggers were forgotten; replayed now they still start nothing
    assert "trial:t0" not in st.triggers and "trial:t5" not in st.triggers
    assert BUILTIN.on_event(st, "c1", p, ev("t0", "web", "trial_started"), t0) == []
    assert BUILTIN.on_event(st, "c1", p, ev("t5", "web", "trial_started"), t0 + 300) == []
    assert st.pending == []
    assert BUILTIN.advance(st, "c1", p, t0 + 31 * DAY) == []
