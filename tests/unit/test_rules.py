"""Pain-point rule definitions: YAML format, validation errors, matcher semantics and the
built-in library."""

from __future__ import annotations

import copy
import pickle
import textwrap
from pathlib import Path
from typing import Any

import pytest

from streams.engine.rules import (
    KINDS,
    Condition,
    Matcher,
    Rule,
    RuleFileError,
    RuleSet,
    builtin_rules,
    load_rules,
    parse_duration,
)
from streams.simulator import CONTACT_TYPES, NEGATIVE_WORDS, RULE_IDS

# -- helpers ---------------------------------------------------------------------------------


def ev(channel: str, type_: str, **attrs: Any) -> dict[str, Any]:
    """A touchpoint dict as the engine receives it."""
    extra = attrs.pop("attributes", {})
    return {
        "event_id": "e1",
        "channel": channel,
        "type": type_,
        "occurred_at": "2024-05-01T10:00:00+00:00",
        "identifiers": {"customer_id": "C1"},
        "attributes": extra,
        **attrs,
    }


def cond(op: str, value: Any = ..., field: str = "x") -> Condition:
    data: dict[str, Any] = {"field": field, "op": op}
    if value is not ...:
        data["value"] = value
    return Condition.model_validate(data)


def t(op: str, value: Any, x: Any = ..., **event: Any) -> bool:
    """Test ``x <op> value`` on an event (``x`` left out: the field is missing)."""
    e = ev("web", "page_view", **event)
    if x is not ...:
        e["x"] = x
    return cond(op, value).test(e)


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(RuleFileError) as info:
        load_rules(write(tmp_path, text))
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def rule_error(tmp_path: Path, rule: str) -> str:
    """The error for a file holding one rule (given as YAML flow or block text)."""
    return load_error(tmp_path, "version: 1\nrules:\n" + textwrap.indent(rule, "  "))


# -- operators -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "x", "expected"),
    [
        ("gt", 300, 301, True),
        ("gt", 300, 300, False),
        ("gt", 300, 300.5, True),
        ("gte", 2, 2, True),
        ("gte", 2, 1, False),
        ("lt", 5, 4.99, True),
        ("lt", 5, 5, False),
        ("lte", 6, 6, True),
        ("lte", 6, 7, False),
        ("lte", 6, 0, True),
        ("gt", 0.5, 1, True),
    ],
)
def test_comparisons_at_the_threshold(op: str, value: Any, x: Any, expected: bool) -> None:
    assert t(op, value, x) is expected


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
def test_comparisons_need_a_number(op: str) -> None:
    # bool is not a number, and numbers-as-text are not either
    assert t(op, 0, True) is False
    assert t(op, 0, False) is False
    assert t(op, 0, "5") is False
    assert t(op, 0, [1]) is False
    assert t(op, 0) is False  # missing
    assert t(op, 0, None) is False  # null is missing


def test_eq_ne_strict_types() -> None:
    assert t("eq", False, False) is True
    assert t("eq", False, 0) is False  # bool is not a number
    assert t("eq", True, 1) is False
    assert t("eq", 1, True) is False
    assert t("eq", 1, 1.0) is True
    assert t("eq", 1, "1") is False
    assert t("eq", "complaint", "complaint") is True
    assert t("eq", "complaint", "Complaint") is False  # eq is case-sensitive
    assert t("ne", "complaint", "billing") is True
    assert t("ne", "complaint", "complaint") is False
    assert t("ne", True, False) is True
    assert t("ne", True, True) is False
    assert t("ne", 0, False) is True  # different type: not equal
    assert t("ne", 3, 3) is False
    assert t("ne", 3, 4) is True


@pytest.mark.parametrize("op", ["eq", "ne"])
def test_eq_ne_missing_field_is_false(op: str) -> None:
    assert t(op, "a") is False
    assert t(op, True) is False
    assert t(op, 1, None) is False


def test_in_not_in() -> None:
    assert t("in", ["payment", "billing"], "billing") is True
    assert t("in", ["payment", "billing"], "delivery") is False
    assert t("in", [1, 2], 2) is True
    assert t("in", [1, 2], 2.0) is True
    assert t("in", [1, 2], True) is False  # True is not 1
    assert t("in", [True], 1) is False
    assert t("in", [True], True) is True
    assert t("in", ["1"], 1) is False
    assert t("in", ["a"]) is False  # missing
    assert t("not_in", ["payment", "billing"], "delivery") is True
    assert t("not_in", ["payment", "billing"], "billing") is False
    assert t("not_in", [1], True) is True
    assert t("not_in", ["a"]) is False  # missing is false for not_in too
    assert t("in", ["a"], ["a"]) is False  # unhashable field value


def test_contains_case_insensitive_and_chinese() -> None:
    words = ["terrible", "never again", "太差"]
    assert t("contains", words, "This was TERRIBLE.") is True
    assert t("contains", words, "I will Never Again shop here") is True
    assert t("contains", words, "服务太差了") is True
    assert t("contains", words, "great service, thanks") is False
    assert t("contains", words, "never") is False
    assert t("contains", "awful", "AwFuL") is True  # a single string value
    assert t("contains", "awful", 5) is False  # not a string
    assert t("contains", "awful") is False  # missing
    assert t("contains", "straße", "STRASSE") is True  # casefold, not just lower


def test_exists() -> None:
    assert t("exists", True, 0) is True
    assert t("exists", True, False) is True
    assert t("exists", True, "") is True
    assert t("exists", True) is False
    assert t("exists", True, None) is False  # null counts as missing
    assert t("exists", False) is True
    assert t("exists", False, 0) is False
    assert cond("exists").value is True  # value defaults to true


def test_field_lookup_top_level_attributes_and_dotted() -> None:
    e = ev(
        "web",
        "page_view",
        url="/a",
        attributes={"campaign": "spring", "nested": {"deep": 3}, "url": "/shadowed"},
    )
    assert cond("eq", "/a", field="url").test(e)  # top level wins
    assert cond("eq", "spring", field="campaign").test(e)  # falls back to attributes
    assert cond("eq", "spring", field="attributes.campaign").test(e)
    assert cond("eq", "C1", field="identifiers.customer_id").test(e)
    assert cond("eq", 3, field="attributes.nested.deep").test(e)
    assert not cond("exists", field="attributes.nested.deeper").test(e)
    assert not cond("exists", field="url.x").test(e)  # walking into a string
    assert not cond("exists", field="identifiers.loyalty_id").test(e)
    assert not cond("exists", field="campaign").test({"channel": "web", "attributes": None})


# -- matchers --------------------------------------------------------------------------------


def test_matcher_channel_type_where() -> None:
    m = Matcher.model_validate(
        {
            "channel": "call_centre",
            "type": ["answered", "call_ended"],
            "where": [{"field": "wait_seconds", "op": "gt", "value": 300}],
        }
    )
    assert m.matches(ev("call_centre", "answered", wait_seconds=301))
    assert m.matches(ev("call_centre", "call_ended", wait_seconds=400))
    assert not m.matches(ev("call_centre", "answered", wait_seconds=300))
    assert not m.matches(ev("call_centre", "call_started", wait_seconds=400))
    assert not m.matches(ev("store", "answered", wait_seconds=400))
    assert m.channels == frozenset({"call_centre"})
    assert m.could_match("call_centre", "answered")
    assert not m.could_match("web", "answered")


def test_matcher_any_channel_and_empty() -> None:
    m = Matcher.model_validate({"type": "purchase"})
    assert m.matches(ev("web", "purchase")) and m.matches(ev("store", "purchase"))
    assert not m.matches(ev("web", "add_to_cart"))
    empty = Matcher.model_validate({})
    assert empty.is_empty and empty.matches(ev("sms", "sent"))
    only_where = Matcher.model_validate(
        {"where": [{"field": "resolved", "op": "eq", "value": True}]}
    )
    assert only_where.matches(ev("store", "return", resolved=True))
    assert not only_where.matches(ev("store", "return", resolved=False))
    many = Matcher.model_validate(
        {
            "channel": ["web", "sms"],
            "where": [
                {"field": "a", "op": "exists"},
                {"field": "b", "op": "exists"},
                {"field": "c", "op": "exists"},
            ],
        }
    )
    assert many.matches(ev("sms", "sent", a=1, b=2, c=3))
    assert not many.matches(ev("sms", "sent", a=1, b=2))


def test_matcher_equality_copy_and_pickle() -> None:
    rs = builtin_rules()
    rule = rs.by_id("transfer_unresolved")
    clone = pickle.loads(pickle.dumps(rule))
    assert clone == rule and copy.deepcopy(rule) == rule
    e = ev("call_centre", "call_ended", transfers=2, resolved=False)
    assert clone.matches(e) and copy.deepcopy(rule).matches(e)
    assert load_rules().by_id("transfer_unresolved") == rule


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 604_800),
        ("24h", 86_400),
        ("30m", 1_800),
        ("45s", 45),
        ("1d12h", 129_600),
        ("1h30m15s", 5_415),
        ("2w", 1_209_600),
        ("1.5h", 5_400),
        (" 15D ", 1_296_000),
        (3600, 3_600),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "7", "d", "7x", "12h1d", "-1h", "1 h", 0, -5, "0s", True, None]
)
def test_parse_duration_rejects(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


# -- the built-in library --------------------------------------------------------------------

CALL_ANSWERED = ("call_centre", "answered")

#: rule id -> (side, positive event, negative event)
POS_NEG: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "repeat_contact": [
        ("match", ev("call_centre", "call_started"), ev("call_centre", "answered")),
        ("match", ev("store", "service_request"), ev("store", "visit")),
        ("match", ev("store", "complaint"), ev("store", "purchase")),
        ("match", ev("sms", "reply", score=9), ev("sms", "sent")),
    ],
    "digital_failure_to_call": [
        ("first", ev("web", "checkout_failed"), ev("web", "checkout_started")),
        ("first", ev("web", "error", error_code="500"), ev("call_centre", "call_started")),
        ("then", ev("call_centre", "call_started"), ev("sms", "reply")),
    ],
    "long_queue": [
        ("match", ev(*CALL_ANSWERED, wait_seconds=301), ev(*CALL_ANSWERED, wait_seconds=300)),
        ("match", ev(*CALL_ANSWERED, wait_seconds=3000), ev(*CALL_ANSWERED)),
        ("match", ev(*CALL_ANSWERED, wait_seconds=300.5), ev("call_centre", "queue_abandoned")),
    ],
    "ivr_abandon": [("match", ev("call_centre", "ivr_abandoned"), ev("call_centre", "answered"))],
    "queue_abandon": [
        (
            "match",
            ev("call_centre", "queue_abandoned", wait_seconds=10),
            ev("call_centre", "ivr_abandoned"),
        )
    ],
    "transfer_unresolved": [
        (
            "match",
            ev("call_centre", "call_ended", transfers=2, resolved=False),
            ev("call_centre", "call_ended", transfers=1, resolved=False),
        ),
        (
            "match",
            ev("call_centre", "call_ended", transfers=3, resolved=False),
            ev("call_centre", "call_ended", transfers=3, resolved=True),
        ),
        (
            "match",
            ev("call_centre", "call_ended", transfers=2, resolved=False),
            ev("call_centre", "call_ended", transfers=2),  # resolved unknown
        ),
        (
            "match",
            ev("call_centre", "call_ended", transfers=2, resolved=False),
            ev("call_centre", "call_ended", transfers=2, resolved=0),  # 0 is not false
        ),
    ],
    "checkout_failed": [("match", ev("web", "checkout_failed"), ev("web", "error"))],
    "cart_abandoned": [
        ("first", ev("web", "add_to_cart"), ev("web", "page_view")),
        ("missing", ev("web", "purchase"), ev("web", "checkout_started")),
        ("missing", ev("store", "purchase", amount=20.0), ev("store", "visit")),
    ],
    "low_survey_score": [
        ("match", ev("sms", "reply", score=6), ev("sms", "reply", score=7)),
        ("match", ev("sms", "reply", score=0), ev("sms", "reply", reply_text="6")),
        ("match", ev("sms", "reply", score=2), ev("sms", "sent", score=2)),
    ],
    "negative_reply": [
        (
            "match",
            ev("sms", "reply", reply_text="TERRIBLE wait"),
            ev("sms", "reply", reply_text="ok"),
        ),
        ("match", ev("sms", "reply", reply_text="服务太差了"), ev("sms", "reply", score=1)),
        (
            "match",
            ev("sms", "reply", reply_text="Never Again!"),
            ev("sms", "sent", reply_text="terrible"),
        ),
    ],
    "store_complaint": [("match", ev("store", "complaint"), ev("store", "service_request"))],
    "complaint_unresolved": [
        ("first", ev("store", "complaint", resolved=False), ev("store", "service_request")),
        (
            "first",
            ev("call_centre", "call_started", reason="complaint"),
            ev("call_centre", "call_started", reason="billing"),
        ),
        ("first", ev("store", "complaint"), ev("call_centre", "call_started")),
        ("missing", ev("store", "return", resolved=True), ev("store", "return", resolved=False)),
        (
            "missing",
            ev("call_centre", "call_ended", resolved=True),
            ev("call_centre", "call_ended"),
        ),
    ],
    "trial_unused": [
        ("first", ev("web", "trial_started"), ev("web", "trial_converted")),
        ("missing", ev("web", "app_usage"), ev("web", "login")),
    ],
    "opt_out": [("match", ev("sms", "opt_out"), ev("sms", "reply", reply_text="STOP"))],
}


def test_builtin_ids_match_the_simulator() -> None:
    rs = builtin_rules()
    assert tuple(rs.ids) == RULE_IDS
    assert set(POS_NEG) == set(RULE_IDS)
    for r in rs:
        assert 1 <= r.severity <= 5 and r.description
        for name in KINDS[r.kind]:
            assert getattr(r, name) is not None


def test_builtin_kinds_and_windows() -> None:
    rs = builtin_rules()
    kinds = {r.id: (r.kind, r.within_seconds) for r in rs}
    assert kinds["repeat_contact"] == ("count", 7 * 86_400)
    assert rs.by_id("repeat_contact").min_count == 3
    assert kinds["digital_failure_to_call"] == ("sequence", 86_400)
    assert kinds["cart_abandoned"] == ("absence", 86_400)
    assert kinds["complaint_unresolved"] == ("absence", 48 * 3_600)
    assert kinds["trial_unused"] == ("absence", 15 * 86_400)
    for rid in ("long_queue", "ivr_abandon", "queue_abandon", "transfer_unresolved", "opt_out"):
        assert kinds[rid] == ("threshold", None)
    assert rs.max_window_seconds == 15 * 86_400


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_builtin_rule_positive_and_negative(rule_id: str) -> None:
    rule = builtin_rules().by_id(rule_id)
    method = {
        "match": rule.matches,
        "first": rule.matches_first,
        "then": rule.matches_then,
        "missing": rule.matches_missing,
    }
    for side, pos, neg in POS_NEG[rule_id]:
        assert method[side](pos), (side, pos)
        assert not method[side](neg), (side, neg)


def test_builtin_sides_not_used_by_a_kind_never_match() -> None:
    rs = builtin_rules()
    e = ev("call_centre", "answered", wait_seconds=999)
    assert rs.by_id("long_queue").matches(e)
    assert not rs.by_id("long_queue").matches_first(e)
    assert not rs.by_id("long_queue").matches_missing(e)
    assert not rs.by_id("cart_abandoned").matches(ev("web", "add_to_cart"))


def test_repeat_contact_is_exactly_the_simulator_contacts() -> None:
    rule = builtin_rules().by_id("repeat_contact")
    from schemas.touchpoint import CHANNEL_MODELS

    for channel, model in CHANNEL_MODELS.items():
        for type_ in model.model_fields["type"].annotation:  # type: ignore[union-attr]
            e = ev(str(channel), str(type_))
            assert rule.matches(e) is ((str(channel), str(type_)) in CONTACT_TYPES)


def test_negative_reply_lexicon_is_the_simulator_lexicon() -> None:
    rule = builtin_rules().by_id("negative_reply")
    for word in NEGATIVE_WORDS:
        assert rule.matches(ev("sms", "reply", reply_text=f"so {word.upper()}!"))


def test_candidates_index() -> None:
    rs = builtin_rules()
    ids = [r.id for r in rs.candidates("sms", "reply")]
    assert ids == ["repeat_contact", "low_survey_score", "negative_reply", "complaint_unresolved"]
    # complaint_unresolved's `missing` (any event with resolved == true) applies everywhere
    assert [r.id for r in rs.candidates("web", "page_view")] == ["complaint_unresolved"]
    assert rs.candidates("sms", "reply") is rs.candidates("sms", "reply")  # cached


def test_ruleset_api() -> None:
    rs = builtin_rules()
    assert isinstance(rs, RuleSet) and len(rs) == len(RULE_IDS) and "opt_out" in rs
    assert [r.id for r in rs.of_kind("absence")] == [
        "cart_abandoned",
        "complaint_unresolved",
        "trial_unused",
    ]
    with pytest.raises(KeyError, match="no rule 'nope'"):
        rs.by_id("nope")
    assert RuleSet([]).max_window_seconds == 0.0
    assert load_rules(None).ids == rs.ids


# -- file validation: kinds and fields -------------------------------------------------------


def test_valid_file_round_trip(tmp_path: Path) -> None:
    rs = load_rules(
        write(
            tmp_path,
            """
            version: 1
            rules:
              - id: big_basket
                kind: threshold
                severity: 1
                match:
                  channel: web
                  type: purchase
                  where: [{field: order_value, op: gte, value: 500}]
              - id: chatty
                kind: count
                severity: 2
                match: {channel: sms}
                min_count: 5
                within: 1d12h
            """,
        )
    )
    assert rs.ids == ["big_basket", "chatty"]
    assert rs.by_id("chatty").within_seconds == 129_600
    assert rs.by_id("big_basket").description == ""
    assert rs.by_id("big_basket").matches(ev("web", "purchase", order_value=500))
    assert str(tmp_path) in rs.source


@pytest.mark.parametrize(
    ("kind", "rule", "field"),
    [
        ("threshold", "{id: r, kind: threshold, severity: 1}", "match"),
        ("count", "{id: r, kind: count, severity: 1, min_count: 2, within: 1h}", "match"),
        (
            "count",
            "{id: r, kind: count, severity: 1, match: {type: reply}, within: 1h}",
            "min_count",
        ),
        (
            "count",
            "{id: r, kind: count, severity: 1, match: {type: reply}, min_count: 2}",
            "within",
        ),
        (
            "sequence",
            "{id: r, kind: sequence, severity: 1, then: {type: reply}, within: 1h}",
            "first",
        ),
        (
            "sequence",
            "{id: r, kind: sequence, severity: 1, first: {type: reply}, within: 1h}",
            "then",
        ),
        (
            "sequence",
            "{id: r, kind: sequence, severity: 1, first: {type: sent}, then: {type: reply}}",
            "within",
        ),
        ("absence", "{id: r, kind: absence, severity: 1, missing: {}, within: 1h}", "first"),
        (
            "absence",
            "{id: r, kind: absence, severity: 1, first: {type: sent}, within: 1h}",
            "missing",
        ),
        (
            "absence",
            "{id: r, kind: absence, severity: 1, first: {type: sent}, missing: {}}",
            "within",
        ),
    ],
)
def test_kind_required_fields(tmp_path: Path, kind: str, rule: str, field: str) -> None:
    msg = rule_error(tmp_path, f"- {rule}\n")
    assert f"rule 'r': {field}: required for kind '{kind}'" in msg


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            "{id: r, kind: threshold, severity: 1, match: {type: sent}, within: 1h}",
            "rule 'r': within: not used by kind 'threshold' (it takes match)",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: {type: sent}, first: {type: sent}}",
            "rule 'r': first: not used by kind 'threshold'",
        ),
        (
            "{id: r, kind: sequence, severity: 1, first: {type: sent}, then: {type: reply},"
            " within: 1h, min_count: 2}",
            "rule 'r': min_count: not used by kind 'sequence'",
        ),
        (
            "{id: r, kind: count, severity: 1, match: {type: sent}, min_count: 0, within: 1h}",
            "rule 'r': min_count: must be an integer >= 1, got 0",
        ),
        (
            "{id: r, kind: count, severity: 1, match: {type: sent}, min_count: 2.5, within: 1h}",
            "rule 'r': min_count: must be an integer >= 1, got 2.5",
        ),
        (
            "{id: r, kind: count, severity: 1, match: {type: sent}, min_count: 2, within: 0s}",
            "rule 'r': within: must be > 0, got '0s'",
        ),
        (
            "{id: r, kind: count, severity: 1, match: {type: sent}, min_count: 2, within: 7days}",
            "rule 'r': within: '7days' is not a duration",
        ),
        (
            "{id: r, kind: thresholds, severity: 1, match: {type: sent}}",
            "rule 'r': kind: 'thresholds' is not one of threshold, count, sequence, absence",
        ),
        (
            "{id: r, kind: threshold, severity: 6, match: {type: sent}}",
            "rule 'r': severity: must be an integer from 1 to 5, got 6",
        ),
        (
            "{id: r, kind: threshold, severity: true, match: {type: sent}}",
            "rule 'r': severity: must be an integer from 1 to 5, got True",
        ),
        (
            "{id: r, kind: threshold, match: {type: sent}}",
            "rule 'r': severity: required",
        ),
        (
            "{id: Long-Queue, kind: threshold, severity: 1, match: {type: sent}}",
            "rule 'Long-Queue': id: must match ^[a-z][a-z0-9_]*$",
        ),
        (
            "{kind: threshold, severity: 1, match: {type: sent}}",
            "rule #1: id: required",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: {type: sent}, colour: red}",
            "rule 'r': unknown key 'colour' (allowed: id, kind, severity, description, match,",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: {type: sent, chanel: sms}}",
            "rule 'r': match: unknown key 'chanel' (allowed: channel, type, where)",
        ),
        (
            "{id: r, kind: threshold, severity: 1,"
            " match: {where: [{field: score, op: lte, value: 6, unit: pts}]}}",
            "rule 'r': match.where[0]: unknown key 'unit' (allowed: field, op, value)",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: {channel: email}}",
            "rule 'r': match.channel: 'email' is not a channel (web, call_centre, store, sms)",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: {channel: sms, type: answered}}",
            "rule 'r': match.type: 'answered' is not an event type of sms (delivered, failed,"
            " opt_out",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: [{type: sent}, {type: anwsered}]}",
            "rule 'r': match[1].type: 'anwsered' is not an event type (",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: {}}",
            "rule 'r': match: an empty matcher would match every event",
        ),
        (
            "{id: r, kind: count, severity: 1, match: [{type: sent}, {}], min_count: 2,"
            " within: 1h}",
            "rule 'r': match[1]: an empty matcher would match every event",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: []}",
            "rule 'r': match: must be a matcher or a non-empty list of matchers",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: web}",
            "rule 'r': match: must be a mapping, got 'web'",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: {type: sent, where: {field: x}}}",
            "rule 'r': match.where: must be a list, got {'field': 'x'}",
        ),
        (
            "{id: r, kind: threshold, severity: 1, match: {type: [sent, 3]}}",
            "rule 'r': match.type: must be an event type or a non-empty list of them, got 3",
        ),
    ],
)
def test_rule_errors(tmp_path: Path, rule: str, expected: str) -> None:
    msg = rule_error(tmp_path, f"- {rule}\n")
    assert msg.startswith(f"{tmp_path / 'rules.yaml'}: ")
    assert expected in msg


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (
            "{field: wait_seconds, op: greater, value: 300}",
            "match.where[0].op: 'greater' is not one of eq, ne, gt, gte, lt, lte, in, not_in,"
            " contains, exists",
        ),
        ("{field: wait_seconds, op: gt}", "match.where[0].value: required for op 'gt'"),
        (
            "{field: wait_seconds, op: gt, value: '300'}",
            "match.where[0].value: must be a number for op 'gt', got '300'",
        ),
        (
            "{field: wait_seconds, op: lte, value: true}",
            "match.where[0].value: must be a number for op 'lte', got True",
        ),
        (
            "{field: wait_seconds, op: gt, value: .nan}",
            "match.where[0].value: must be a number for op 'gt', got nan",
        ),
        (
            "{field: reason, op: in, value: complaint}",
            "match.where[0].value: must be a non-empty list for op 'in', got 'complaint'",
        ),
        ("{field: reason, op: not_in, value: []}", "must be a non-empty list for op 'not_in'"),
        (
            "{field: reason, op: in, value: [a, [b]]}",
            "match.where[0].value[1]: must be a string, number or true/false, got ['b']",
        ),
        (
            "{field: reply_text, op: contains, value: [bad, 3]}",
            "match.where[0].value: must be non-empty strings for op 'contains', got 3",
        ),
        (
            "{field: reply_text, op: contains, value: ''}",
            "match.where[0].value: must be non-empty strings for op 'contains', got ''",
        ),
        (
            "{field: resolved, op: exists, value: yes please}",
            "match.where[0].value: must be true or false for op 'exists', got 'yes please'",
        ),
        (
            "{field: resolved, op: eq, value: null}",
            "match.where[0].value: null is not a value; use op 'exists'",
        ),
        (
            "{field: resolved, op: eq, value: [true]}",
            "match.where[0].value: must be a string, number or true/false for op 'eq'",
        ),
        ("{field: 'a..b', op: exists}", "match.where[0].field: must be a field name or dotted"),
        ("{field: 3, op: exists}", "match.where[0].field: must be a field name or dotted"),
        ("{op: exists}", "match.where[0].field: required"),
    ],
)
def test_condition_errors(tmp_path: Path, where: str, expected: str) -> None:
    msg = rule_error(
        tmp_path,
        f"- {{id: long_queue, kind: threshold, severity: 3, match: {{where: [{where}]}}}}\n",
    )
    assert msg.startswith(f"{tmp_path / 'rules.yaml'}: rule 'long_queue': ")
    assert expected in msg


def test_error_message_exact_format(tmp_path: Path) -> None:
    msg = load_error(
        tmp_path,
        """\
        version: 1
        rules:
          - id: long_queue
            kind: threshold
            severity: 3
            match: {channel: call_centre, type: answered,
                    where: [{field: wait_seconds, op: greater, value: 300}]}
        """,
    )
    assert msg == (
        f"{tmp_path / 'rules.yaml'}: rule 'long_queue': match.where[0].op: 'greater' is not one"
        " of eq, ne, gt, gte, lt, lte, in, not_in, contains, exists"
    )


def test_several_errors_are_all_named_on_one_line(tmp_path: Path) -> None:
    msg = rule_error(tmp_path, "- {id: r, kind: nope, severity: 9, match: {type: sent}}\n")
    assert "rule 'r': kind: 'nope' is not one of" in msg
    assert "; severity: " in msg and "got 9" in msg
    assert "\n" not in msg and "more error" not in msg


def test_many_errors_name_three_and_count_the_rest(tmp_path: Path) -> None:
    msg = rule_error(
        tmp_path, "- {id: r, kind: nope, severity: 9, description: [1], match: 5, within: x}\n"
    )
    assert msg.count("; ") == 2 and msg.endswith("more errors)"), msg


def test_rule_without_usable_id_is_named_by_position(tmp_path: Path) -> None:
    msg = rule_error(
        tmp_path,
        "- {id: ok, kind: threshold, severity: 1, match: {type: sent}}\n"
        "- {id: 7, kind: threshold, severity: 1, match: {type: sent}}\n",
    )
    assert "rule #2: id: must match" in msg
    assert "rule #1: must be a mapping, got 'x'" in rule_error(tmp_path, "- x\n")


def test_duplicate_ids_rejected(tmp_path: Path) -> None:
    msg = rule_error(
        tmp_path,
        "- {id: a, kind: threshold, severity: 1, match: {type: sent}}\n"
        "- {id: b, kind: threshold, severity: 1, match: {type: sent}}\n"
        "- {id: a, kind: threshold, severity: 2, match: {type: reply}}\n",
    )
    assert msg.endswith("rule 'a': id: duplicate id (rule #1 has the same id)")


# -- file validation: the document -----------------------------------------------------------


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    msg = load_error(
        tmp_path,
        """\
        version: 1
        rules:
          - id: a
            kind: threshold
            severity: 1
            match: {channel: web, type: [purchase}
        """,
    )
    assert msg.startswith(f"{tmp_path / 'rules.yaml'}: line 6: ")


def test_yaml_bad_indentation_gives_the_line(tmp_path: Path) -> None:
    msg = load_error(tmp_path, "version: 1\nrules:\n  - id: a\n   kind: threshold\n")
    assert ": line 4: " in msg


def test_yaml_duplicate_key_rejected(tmp_path: Path) -> None:
    msg = load_error(
        tmp_path,
        "version: 1\nrules:\n  - id: a\n    kind: threshold\n    severity: 1\n    severity: 2\n",
    )
    assert msg.endswith("line 6: duplicate key 'severity'")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "must be a mapping with a 'rules' list, got nothing"),
        ("- a\n- b\n", "must be a mapping with a 'rules' list, got ['a', 'b']"),
        ("just text\n", "must be a mapping with a 'rules' list, got 'just text'"),
        ("version: 1\n", "has no 'rules' list"),
        ("version: 1\nrules: {a: 1}\n", "'rules' must be a list of rules, got {'a': 1}"),
        ("version: 2\nrules: []\n", "version: only version 1 is supported, got 2"),
        ("version: 1\nrule: []\n", "unknown top-level key 'rule' (allowed: version, extends,"),
        ("extends: defaults\nrules: []\n", "extends: only 'builtin' is supported, got 'defaults'"),
        ("rules: []\ndisabled: [opt_out]\n", "disabled: only valid with 'extends: builtin'"),
        ("extends: builtin\ndisabled: opt_out\n", "disabled: must be a list of rule ids"),
        ("extends: builtin\ndisabled: [optout]\n", "disabled: 'optout' is not a built-in rule"),
    ],
)
def test_document_errors(tmp_path: Path, text: str, expected: str) -> None:
    msg = load_error(tmp_path, text)
    assert msg.startswith(f"{tmp_path / 'rules.yaml'}: ") and expected in msg


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match=r"nope\.yaml: cannot read: No such file"):
        load_rules(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"rules: []\n# caf\xe9\n")
    with pytest.raises(RuleFileError, match=r"latin1\.yaml: cannot read"):
        load_rules(bad)


def test_empty_rule_list_is_allowed(tmp_path: Path) -> None:
    assert len(load_rules(write(tmp_path, "version: 1\nrules: []\n"))) == 0


# -- extends: builtin ------------------------------------------------------------------------


def test_user_file_replaces_the_library(tmp_path: Path) -> None:
    rs = load_rules(
        write(
            tmp_path,
            "rules:\n  - {id: opt_out, kind: threshold, severity: 1, match: {type: opt_out}}\n",
        )
    )
    assert rs.ids == ["opt_out"]


def test_extends_builtin_override_add_disable(tmp_path: Path) -> None:
    rs = load_rules(
        write(
            tmp_path,
            """\
            extends: builtin
            disabled: [ivr_abandon, trial_unused]
            rules:
              - id: long_queue
                kind: threshold
                severity: 4
                description: Answered after more than 10 minutes
                match:
                  channel: call_centre
                  type: answered
                  where: [{field: wait_seconds, op: gt, value: 600}]
              - id: big_refund
                kind: threshold
                severity: 2
                match: {channel: store, type: return, where: [{field: amount, op: gte, value: 200}]}
            """,
        )
    )
    expected = [i for i in RULE_IDS if i not in ("ivr_abandon", "trial_unused")] + ["big_refund"]
    assert rs.ids == expected
    lq = rs.by_id("long_queue")
    assert lq.severity == 4
    assert not lq.matches(ev("call_centre", "answered", wait_seconds=301))
    assert lq.matches(ev("call_centre", "answered", wait_seconds=601))
    assert rs.by_id("opt_out") == builtin_rules().by_id("opt_out")
    assert "extends builtin" in rs.source
    assert rs.max_window_seconds == 7 * 86_400  # trial_unused (15d) is disabled
    # the built-in library itself is untouched
    assert (
        builtin_rules().by_id("long_queue").matches(ev("call_centre", "answered", wait_seconds=301))
    )
    assert "ivr_abandon" in builtin_rules()


def test_extends_builtin_without_rules(tmp_path: Path) -> None:
    rs = load_rules(write(tmp_path, "extends: builtin\ndisabled: [opt_out]\n"))
    assert rs.ids == [i for i in RULE_IDS if i != "opt_out"]


def test_extends_builtin_conflicts(tmp_path: Path) -> None:
    msg = load_error(
        tmp_path,
        """\
        extends: builtin
        disabled: [opt_out]
        rules:
          - {id: opt_out, kind: threshold, severity: 1, match: {channel: sms, type: opt_out}}
        """,
    )
    assert msg.endswith("disabled: 'opt_out' is also defined in 'rules'")
    msg = load_error(
        tmp_path,
        """\
        extends: builtin
        rules:
          - {id: long_queue, kind: threshold, severity: 3, match: {channel: call_centre,
             type: answered, where: [{field: wait_seconds, op: gt, value: -}]}}
        """,
    )
    assert "rule 'long_queue': match.where[0].value: must be a number for op 'gt'" in msg


def test_rule_models_direct_validation() -> None:
    r = Rule.model_validate(
        {
            "id": "x",
            "kind": "sequence",
            "severity": 2,
            "first": {"channel": "web", "type": "error"},
            "then": [{"channel": "sms", "type": "reply"}, {"channel": "store"}],
            "within": 90,
        }
    )
    assert r.within_seconds == 90.0
    assert r.matches_then(ev("store", "visit")) and r.matches_then(ev("sms", "reply"))
    assert not r.matches_then(ev("sms", "sent"))
    assert set(r.sides()) == {"first", "then"}
    assert r.could_match("store", "visit") and not r.could_match("web", "login")
