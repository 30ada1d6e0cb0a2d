"""Identity resolution: which customer an event belongs to (docs/design.md, Identity).

Events go through :class:`Runner` (identity, then journeys and rules) in the validated wire
format; the assertions look at what reaches the customers' journeys and pain points.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as hs

from schemas.validation import Validator
from streams.engine.identity import (
    IdentityLimits,
    KeyState,
    apply_link,
    expire,
    identity_keys,
    observe_event,
    profile_links,
)
from streams.engine.journey import EngineConfig, iso
from streams.engine.rules import builtin_rules
from streams.engine.runner import Runner

Event = dict[str, Any]
Timed = tuple[Event, float]

M, H, D = 60.0, 3_600.0, 86_400.0
T0 = datetime(2026, 3, 2, tzinfo=UTC).timestamp()
PHONE = "ph-5f1c"  # a phone_hash, as ingest leaves it
DEVICE = "anon-dev-1"


def ev(eid: str, channel: str, type_: str, at: float, ids: dict[str, str], **attrs: Any) -> Timed:
    ts = T0 + at
    event = {
        "event_id": eid,
        "channel": channel,
        "type": type_,
        "occurred_at": iso(ts),
        "identifiers": ids,
        **attrs,
    }
    return event, ts


def feed(runner: Runner, events: list[Timed]) -> Runner:
    for event, ts in events:
        runner.process(event, ts, identity_keys(event["identifiers"])[0])
    return runner


def runner(limits: IdentityLimits | None = None) -> Runner:
    return Runner(builtin_rules(), identity=limits, partitions=1)


def steps_of(r: Runner, cid: str) -> list[str]:
    """Event ids in the customer's journey window, in event-time order, once every event
    fed so far is applied (the stage holds the newest until the clock passes them)."""
    r.stage.flush(r.out)
    st = r.customers.get(cid)
    return [s.event_id for s in st.steps] if st else []


def pains(r: Runner) -> set[tuple[str, str, str]]:
    return {(p["customer_id"], p["rule_id"], p["anchor_event_id"]) for p in r.out.pain_points}


# -- the identity key ------------------------------------------------------------------------

ALL_RAW = {
    "customer_id": "C1",
    "loyalty_id": "L1",
    "email": "c1@example.com",
    "phone": "+8613800000001",
    "anonymous_id": DEVICE,
}


@pytest.mark.parametrize(
    ("drop", "kind"),
    [
        ((), "customer_id"),
        (("customer_id",), "loyalty_id"),
        (("customer_id", "loyalty_id"), "email_hash"),
        (("customer_id", "loyalty_id", "email"), "phone_hash"),
        (("customer_id", "loyalty_id", "email", "phone"), "anonymous_id"),
    ],
)
def test_identity_key_is_the_strongest_identifier(drop: tuple[str, ...], kind: str) -> None:
    """customer_id > loyalty_id > email_hash > phone_hash > anonymous_id, the same in ingest
    (Touchpoint.identity_key) and in the engine (identity_keys)."""
    raw = orjson.dumps(
        {
            "event_id": "e1",
            "channel": "web",
            "type": "page_view",
            "occurred_at": "2026-03-02T10:00:00+00:00",
            "identifiers": {k: v for k, v in ALL_RAW.items() if k not in drop},
        }
    )
    tp = Validator("k").validate(raw, datetime(2026, 3, 3, tzinfo=UTC))
    wire = tp.model_dump(mode="json", exclude_none=True)  # type: ignore[union-attr]
    keys = identity_keys(wire["identifiers"])
    assert (tp.identity_key.split(":")[0], keys[0], len(keys)) == (  # type: ignore[union-attr]
        kind,
        tp.identity_key,  # type: ignore[union-attr]
        5 - len(drop),
    )


# -- anonymous, then login: the retroactive merge ----------------------------------------------


def test_anonymous_events_are_held_then_released_in_event_time_order_on_login() -> None:
    anon = {"anonymous_id": DEVICE}
    r = feed(
        runner(),
        [
            ev("v2", "web", "page_view", 2 * M, anon),  # arrives before v1
            ev("v1", "web", "page_view", 0, anon),
            ev("a1", "web", "add_to_cart", 3 * M, anon),
        ],
    )
    before = (steps_of(r, "C1"), len(r.out.journeys))
    feed(r, [ev("l1", "web", "login", 5 * M, {**anon, "customer_id": "C1"})])
    feed(r, [ev("v3", "web", "page_view", 6 * M, anon)])  # the device is known now
    r.finish(T0 + 10 * D)
    (journey,) = r.out.journeys.values()
    assert (before, steps_of(r, "C1"), journey["started_at"], pains(r)) == (
        ([], 0),
        ["v1", "v2", "a1", "l1", "v3"],
        iso(T0),
        {("C1", "cart_abandoned", "a1")},  # a rule on an event that was anonymous then
    )


def test_login_arriving_before_earlier_anonymous_events_attributes_them_directly() -> None:
    anon = {"anonymous_id": DEVICE}
    r = feed(
        runner(),
        [
            ev("l1", "web", "login", 5 * M, {**anon, "customer_id": "C1"}),
            ev("v1", "web", "page_view", 0, anon),  # out of order, within the lateness
        ],
    )
    assert (steps_of(r, "C1"), r.stats.held_expired) == (["v1", "l1"], 0)


def test_held_event_older_than_the_lateness_is_landed_late_when_released() -> None:
    """The journey stage evaluates nothing behind its clock: a merge from days ago is
    counted as late (it still lands in ClickHouse as a touchpoint), not re-evaluated."""
    anon = {"anonymous_id": DEVICE}
    r = feed(
        runner(),
        [
            ev("a1", "web", "add_to_cart", 0, anon),
            ev("x1", "web", "page_view", 3 * D, {"customer_id": "C2"}),  # moves the clock
            ev("l1", "web", "login", 3 * D + H, {**anon, "customer_id": "C1"}),
        ],
    )
    r.finish(T0 + 10 * D)
    assert (steps_of(r, "C1"), r.stats.late, pains(r)) == (["l1"], 1, set())


# -- links from the CRM feed and from authenticated contacts ----------------------------------


@pytest.mark.parametrize("profile_first", [True, False], ids=["profile-first", "call-first"])
def test_crm_profile_links_a_phone_only_call_to_its_customer(profile_first: bool) -> None:
    profile = {"customer_id": "C1", "tier": "A", "phone_hash": PHONE, "loyalty_id": "L1"}
    call = ev("i1", "call_centre", "ivr_abandoned", 0, {"phone_hash": PHONE})
    r = runner()
    if profile_first:
        r.load_profile(profile)
        feed(r, [call])
    else:
        feed(r, [call])
        r.load_profile(profile)
    r.finish()
    (pp,) = r.out.pain_points
    assert (pp["customer_id"], pp["rule_id"], pp["tier"]) == ("C1", "ivr_abandon", "A")


def test_profile_links_name_every_weak_identifier() -> None:
    links = profile_links(
        {"customer_id": "C1", "phone_hash": PHONE, "email_hash": "em", "loyalty_id": "L1"}
    )
    assert (links.customer_id, links.keys) == (  # type: ignore[union-attr]
        "C1",
        ["loyalty_id:L1", "email_hash:em", f"phone_hash:{PHONE}"],
    )


def test_authenticated_call_links_the_phone_for_a_later_sms() -> None:
    r = feed(
        runner(),
        [
            ev("c1", "call_centre", "call_started", 0, {"phone_hash": PHONE}),  # held
            ev("a1", "call_centre", "answered", M, {"phone_hash": PHONE, "customer_id": "C1"}),
            ev("m1", "sms", "reply", D, {"phone_hash": PHONE}, reply_text="3", score=3),
        ],
    )
    assert (steps_of(r, "C1"), pains(r)) == (
        ["c1", "a1", "m1"],
        {("C1", "low_survey_score", "m1")},
    )


def test_customers_sharing_no_identifier_stay_apart() -> None:
    r = feed(
        runner(),
        [
            ev("a1", "call_centre", "answered", 0, {"phone_hash": "p1", "customer_id": "C1"}),
            ev("a2", "call_centre", "answered", M, {"phone_hash": "p2", "customer_id": "C2"}),
            ev("m1", "sms", "delivered", H, {"phone_hash": "p1"}),
            ev("m2", "sms", "delivered", H, {"phone_hash": "p2"}),
        ],
    )
    assert (steps_of(r, "C1"), steps_of(r, "C2")) == (["a1", "m1"], ["a2", "m2"])


# -- the anonymous buffer is bounded ---------------------------------------------------------


def test_held_events_are_bounded_in_count() -> None:
    anon = {"anonymous_id": DEVICE}
    views = [ev(f"v{i}", "web", "page_view", i * M, anon) for i in range(8)]
    r = feed(runner(IdentityLimits(max_held=5)), views)
    expired = r.stats.held_expired
    feed(r, [ev("l1", "web", "login", 10 * M, {**anon, "customer_id": "C1"})])
    assert (expired, steps_of(r, "C1")) == (3, ["v3", "v4", "v5", "v6", "v7", "l1"])


def test_held_events_are_bounded_in_age() -> None:
    anon = {"anonymous_id": DEVICE}
    limits = IdentityLimits(max_age_seconds=12 * H)
    cfg = EngineConfig(lateness_seconds=2 * D)  # so the kept event is not late on release
    r = Runner(builtin_rules(), cfg, identity=limits, partitions=1)
    feed(r, [ev("v1", "web", "page_view", 0, anon), ev("v2", "web", "page_view", 13 * H, anon)])
    expired = r.stats.held_expired
    feed(r, [ev("l1", "web", "login", 14 * H, {**anon, "customer_id": "C1"})])
    assert (expired, steps_of(r, "C1")) == (1, ["v2", "l1"])


def test_never_identified_events_never_reach_a_journey() -> None:
    r = feed(
        runner(),
        [
            ev("v1", "web", "page_view", 0, {"anonymous_id": "visitor-9"}),
            ev("e1", "web", "checkout_failed", M, {"anonymous_id": "visitor-9"}),
            ev("p1", "web", "purchase", H, {"customer_id": "C1"}),
        ],
    )
    r.finish(T0 + 30 * D)
    assert (
        r.stats.held_expired,
        sorted(r.customers),
        {j["customer_id"] for j in r.out.journeys.values()},
        pains(r),
    ) == (2, ["C1"], {"C1"}, set())


def test_pure_identity_functions() -> None:
    """observe_event holds, apply_link releases (sorted, flagged late_merge), expire ages
    out; state survives its JSON form."""
    limits = IdentityLimits(max_held=10, max_age_seconds=D)
    ks = KeyState()
    key = f"anonymous_id:{DEVICE}"
    held = []
    for eid, at in (("v2", H), ("v1", 0.0), ("v3", 20 * H)):
        e, ts = ev(eid, "web", "page_view", at, {"anonymous_id": DEVICE})
        io = observe_event(ks, key, ts, e, limits)
        held.append((io.resolved, io.expired))
    ks = KeyState.from_json(orjson.loads(orjson.dumps(ks.to_json())))
    aged = expire(ks, T0 + D + 30 * M, limits)  # v1 is older than a day by now
    released = apply_link(ks, "C1")
    again = apply_link(ks, "C1")
    assert (
        held,
        [e["event_id"] for e in aged.expired],
        [(r.customer_id, r.event["event_id"], r.late_merge) for r in released.resolved],
        again.resolved,
        ks.customer_id,
    ) == ([([], [])] * 3, ["v1"], [("C1", "v2", True), ("C1", "v3", True)], [], "C1")


def test_finish_counts_still_held_events_once() -> None:
    r = feed(runner(), [ev("v1", "web", "page_view", 0, {"anonymous_id": "visitor-9"})])
    counts = [r.finish(T0 + D) and r.stats.held_expired for _ in range(3)]
    assert counts == [1, 1, 1]


_JSON_SCALARS = hs.one_of(
    hs.none(), hs.booleans(), hs.integers(-(2**53), 2**53), hs.floats(allow_nan=False,
    allow_infinity=False), hs.text(max_size=12),
)  # fmt: skip
_EVENTS = hs.dictionaries(
    hs.text(max_size=8),
    hs.recursive(_JSON_SCALARS, lambda c: hs.lists(c, max_size=3) | hs.dictionaries(
        hs.text(max_size=6), c, max_size=3), max_leaves=8),
    max_size=5,
)  # fmt: skip


@given(
    customer=hs.none() | hs.text(min_size=1, max_size=12),
    held=hs.lists(hs.tuples(hs.floats(0, 4e9), _EVENTS), max_size=4),
)
def test_a_key_state_read_back_encodes_to_the_same_bytes(customer, held) -> None:
    """identify writes a key's state only when its encoding changed: a state read from the
    table and left alone must encode to exactly the bytes it was read from."""
    raw = orjson.dumps(KeyState(customer, held).to_json())
    assert orjson.dumps(KeyState.from_json(orjson.loads(raw)).to_json()) == raw
