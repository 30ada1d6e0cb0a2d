"""Deterministic multi-channel traffic simulator (``touchpath simulate``).

Generates CRM customer profiles, raw touchpoint records in the wire format of
``touchpoints.raw`` (one JSON object per record, channel attributes at top level), injected
pain-point scenarios with a ground-truth file that lists exactly the pain points a correct
journey engine finds, and a small share of malformed records per expected dead-letter reason.

Determinism: every draw comes from ``random.Random`` instances seeded from
:attr:`SimConfig.seed` (no global random state, no wall clock, no ``hash()``, no set
iteration), so the same config always gives byte-identical outputs.

How the ground truth stays exact: scenarios are placed first (at most two per customer,
their influence intervals >= 8 days apart), each registering *blocks* (time ranges in which
clean activity of some category may not happen, e.g. no purchase within 24 h of an
abandoned cart) and its contacts. Clean activity is then generated around them and dropped
whenever it would touch a block or put a third contact into any 7-day window. Absence
scenarios (cart_abandoned, complaint_unresolved, trial_unused) end at least 48 h before the
end of the period, and every CRM customer receives a service SMS on the last day, so the
engine's event-time clock passes every absence deadline plus the 24 h lateness.
"""

from __future__ import annotations

import gc
import gzip
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "CONTACT_TYPES",
    "MALFORMED_REASONS",
    "NEGATIVE_WORDS",
    "RULE_IDS",
    "SCENARIOS",
    "PublishError",
    "SimConfig",
    "SimResult",
    "producer_key",
    "publish",
    "simulate",
    "write_outputs",
]

MIN = 60
HOUR = 3_600
DAY = 86_400

#: Pain-point rules the ground truth can name (the built-in rule library).
RULE_IDS = (
    "repeat_contact",
    "digital_failure_to_call",
    "long_queue",
    "ivr_abandon",
    "queue_abandon",
    "transfer_unresolved",
    "checkout_failed",
    "cart_abandoned",
    "low_survey_score",
    "negative_reply",
    "store_complaint",
    "complaint_unresolved",
    "trial_unused",
    "opt_out",
)

#: Scenario kinds and the rules each one triggers (with the same anchor where two are listed).
SCENARIOS: dict[str, tuple[str, ...]] = {
    "repeat_contact": ("repeat_contact",),
    "digital_failure_checkout": ("digital_failure_to_call", "checkout_failed"),
    "digital_failure_error": ("digital_failure_to_call",),
    "long_queue": ("long_queue",),
    "ivr_abandon": ("ivr_abandon",),
    "queue_abandon": ("queue_abandon",),
    "transfer_unresolved": ("transfer_unresolved",),
    "checkout_failed": ("checkout_failed",),
    "cart_abandoned": ("cart_abandoned",),
    "low_survey_score": ("low_survey_score",),
    "negative_reply": ("negative_reply",),
    "store_complaint": ("store_complaint",),
    "complaint_unresolved_store": ("store_complaint", "complaint_unresolved"),
    "complaint_unresolved_call": ("complaint_unresolved",),
    "trial_unused": ("trial_unused",),
    "opt_out": ("opt_out",),
}

#: Dead-letter reasons the malformed records are built to hit (schemas.validation codes).
MALFORMED_REASONS = (
    "invalid_json",
    "invalid_utf8",
    "not_object",
    "unknown_channel",
    "unknown_type",
    "missing_field",
    "no_identifier",
    "wrong_type",
    "negative_value",
    "naive_timestamp",
    "future_timestamp",
    "ancient_timestamp",
    "non_finite_number",
)

#: (channel, type) pairs that count as a customer contact for ``repeat_contact``.
CONTACT_TYPES = frozenset(
    {
        ("call_centre", "call_started"),
        ("store", "service_request"),
        ("store", "complaint"),
        ("sms", "reply"),
    }
)

#: The negative-reply lexicon (matched case-insensitively as substrings).
NEGATIVE_WORDS = (
    "terrible",
    "awful",
    "worst",
    "angry",
    "useless",
    "disappointed",
    "never again",
    "太差",
    "失望",
    "投诉",
    "垃圾",
    "生气",
)

#: Engine's allowed lateness: absence rules fire once event time passes deadline + this.
LATENESS = 24 * HOUR
_CONTACT_WINDOW = 7 * DAY + 3 * HOUR  # 7 days plus a margin against boundary readings
_SCENARIO_GAP = 8 * DAY
_CST = timezone(timedelta(hours=8))
_PREFIX = {"web": "w", "call_centre": "c", "store": "s", "sms": "m"}

_CALL_REASONS = ("payment", "delivery", "account", "product_info", "billing", "order_status")
_CATEGORIES = ("shoes", "outdoor", "kitchen", "electronics", "kids", "beauty")
_PRODUCTS = tuple(
    (f"SKU-{i:04d}", round(19.9 + (i * 37 % 480) + 0.5 * (i % 2), 2)) for i in range(1, 61)
)
_SEARCHES = ("running+shoes", "tent", "coffee", "headphones", "gift", "sale")
_PAGES = ("/", "/deals", "/help", "/account", "/stores")
_CITIES = ("BJ", "SH", "GZ", "SZ", "HZ", "CD")
_CN_MOBILE = ("138", "139", "135", "136", "137", "150", "158", "186", "188", "177")
_CAMPAIGNS = ("promo_spring", "newsletter", "new_arrivals", "member_day")
_GOOD_REPLIES = ("{s}", "{s}", "{s}", "{s} thanks", "{s} 满意", "{s} good", "{s} 谢谢")
_LOW_REPLIES = ("{s}", "{s}", "{s} 一般", "{s} slow delivery", "{s} too expensive")
_NEGATIVE_TEXTS = (
    "Terrible service, waited forever",
    "Worst delivery experience",
    "I am very disappointed",
    "useless support line",
    "never again",
    "So ANGRY about this order",
    "awful packaging, item broken",
    "服务太差了",
    "非常失望",
    "我要投诉",
    "垃圾服务",
    "很生气",
)


@dataclass
class SimConfig:
    """What to simulate. ``customers`` is the number of CRM customers; anonymous-only
    visitors come on top (``anonymous_ratio`` of it). A naive ``start`` is taken as UTC."""

    customers: int = 2000
    days: int = 30
    seed: int = 7
    start: datetime = datetime(2026, 3, 1, tzinfo=UTC)
    malformed_rate: float = 0.005
    scenario_ratio: float = 0.3
    anonymous_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.customers < 0:
            raise ValueError("customers must be >= 0")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if not 0.0 <= self.malformed_rate < 1.0:
            raise ValueError("malformed_rate must be in [0, 1)")
        if not 0.0 <= self.scenario_ratio <= 1.0 or self.anonymous_ratio < 0:
            raise ValueError("scenario_ratio must be in [0, 1], anonymous_ratio >= 0")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            self.start = self.start.replace(tzinfo=UTC)
        self.start = self.start.astimezone(UTC)

    @property
    def end(self) -> datetime:
        """End of the simulated period (exclusive); every valid event is before it."""
        return self.start + timedelta(days=self.days)


@dataclass
class SimResult:
    """Everything :func:`simulate` produced.

    ``records`` are raw wire lines (no newline) sorted by event time; ``malformed`` maps the
    index of each malformed record in ``records`` to the dead-letter reason it must get.
    """

    customers: list[dict[str, Any]]
    records: list[bytes]
    ground_truth: list[dict[str, Any]]
    manifest: dict[str, Any]
    malformed: dict[int, str] = field(default_factory=dict)


class _Ev:
    """One event under construction; ``t`` is seconds since the start of the period."""

    __slots__ = ("attrs", "bad", "channel", "eid", "ids", "local8", "seq", "t", "type")

    def __init__(
        self,
        t: int,
        channel: str,
        type_: str,
        ids: dict[str, str],
        attrs: dict[str, Any],
        local8: bool = False,
    ) -> None:
        self.t = t
        self.channel = channel
        self.type = type_
        self.ids = ids
        self.attrs = attrs
        self.local8 = local8
        self.seq = 0
        self.eid = ""
        self.bad: str | None = None


_Block = tuple[int, int, frozenset[str]]


class _Person:
    """Builds the events of one simulated person (a CRM customer or an anonymous visitor)."""

    def __init__(self, sim: _Sim, rng: random.Random, tag: str) -> None:
        self.sim = sim
        self.rng = rng
        self.r = rng.random
        self.tag = tag
        self.horizon = sim.horizon
        self.events: list[_Ev] = []
        self.contacts: list[int] = []
        self.blocks: list[_Block] = []
        self.logins: dict[str, list[int]] = {}
        self.gt: list[tuple[str, _Ev]] = []
        self.kinds: list[str] = []
        self.opted_out_at: int | None = None
        self.n_sessions = 0
        self.n_calls = 0
        self.devices = [self._uuid() for _ in range(1 + (self.r() < 0.35))]
        # CRM fields (set by ``crm_profile``)
        self.cid = ""
        self.phone = ""
        self.email = ""
        self.loyalty = ""
        self.tz = 8
        self.tier = "C"
        self.store_id = ""
        self.app_device = ""
        self.sms_ok = True

    # -- helpers (fast, deterministic draws from this person's own Random) ---------------
    def ri(self, lo: int, hi: int) -> int:
        """Uniform int in [lo, hi] (cheaper than ``Random.randint``)."""
        return lo + int(self.r() * (hi - lo + 1))

    def below(self, n: int) -> int:
        return int(self.r() * n)

    def pick(self, seq: Any) -> Any:
        return seq[int(self.r() * len(seq))]

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.r()

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def daytime(self, day: int, lo: int = 8, hi: int = 22) -> int:
        """A random instant of local day ``day`` between ``lo`` and ``hi`` o'clock."""
        return day * DAY + (lo - self.tz) * HOUR + self.below((hi - lo) * HOUR)

    def fits(self, buf: list[_Ev], cats: frozenset[str]) -> bool:
        """Whether a clean activity may be committed: inside the period, off every block
        touching its categories, and no third contact in any 7-day window."""
        a, b = buf[0].t, buf[-1].t
        if a < 0 or b >= self.horizon - MIN:
            return False
        for s, e, bc in self.blocks:
            if a <= e and b >= s and ("all" in bc or not bc.isdisjoint(cats)):
                return False
        for ev in buf:
            if (ev.channel, ev.type) in CONTACT_TYPES:
                t = ev.t
                near = 0
                for x in self.contacts:
                    if -_CONTACT_WINDOW <= x - t <= _CONTACT_WINDOW:
                        near += 1
                if near > 1:
                    return False
        return True

    def commit(self, buf: list[_Ev]) -> None:
        sim = self.sim
        for ev in buf:
            sim.seq += 1
            ev.seq = sim.seq
            if (ev.channel, ev.type) in CONTACT_TYPES:
                self.contacts.append(ev.t)
            elif ev.type == "login":
                self.logins.setdefault(ev.ids["anonymous_id"], []).append(ev.t)
        self.events.extend(buf)

    def try_commit(self, buf: list[_Ev], cats: frozenset[str]) -> bool:
        if buf and self.fits(buf, cats):
            self.commit(buf)
            return True
        return False

    def block(self, start: int, end: int, *cats: str) -> None:
        self.blocks.append((start, end, frozenset(cats)))

    # -- channel builders (append to ``buf``, return the time of the last event) ----------
    def web_session(
        self,
        buf: list[_Ev],
        t: int,
        *,
        views: int,
        cart: bool = False,
        force_login: bool = False,
    ) -> tuple[int, dict[str, str], str]:
        """A site session: anonymous page views, a login (unless remembered), browsing and
        optionally add_to_cart -> checkout -> purchase. Returns (t, logged-in ids, sid)."""
        dev = self.pick(self.devices)
        self.n_sessions += 1
        sid = f"s{self.tag}-{self.n_sessions}"
        anon = {"anonymous_id": dev}
        if not self.cid:
            auth = anon
        else:
            auth = {"anonymous_id": dev, "customer_id": self.cid}
            remembered = (
                not force_login and self.r() < 0.6 and any(x < t for x in self.logins.get(dev, ()))
            )
            if not remembered:
                for _ in range(self.ri(1, 2)):
                    buf.append(_Ev(t, "web", "page_view", anon, {"session_id": sid, "url": "/"}))
                    t += self.ri(8, 90)
                buf.append(_Ev(t, "web", "login", auth, {"session_id": sid, "url": "/login"}))
                t += self.ri(5, 40)
        for _ in range(views):
            r = self.r()
            if r < 0.45:
                sku = self.pick(_PRODUCTS)[0]
                attrs = {"session_id": sid, "url": f"/p/{sku}", "product": sku}
                buf.append(_Ev(t, "web", "page_view", auth, attrs))
            elif r < 0.7:
                url = f"/category/{self.pick(_CATEGORIES)}"
                buf.append(_Ev(t, "web", "page_view", auth, {"session_id": sid, "url": url}))
            elif r < 0.85:
                url = f"/search?q={self.pick(_SEARCHES)}"
                buf.append(_Ev(t, "web", "search", auth, {"session_id": sid, "url": url}))
            else:
                url = self.pick(_PAGES)
                buf.append(_Ev(t, "web", "page_view", auth, {"session_id": sid, "url": url}))
            t += self.ri(10, 150)
        if cart:
            t = self.cart_purchase(buf, t, auth, sid)
        elif self.cid and self.r() < 0.05:
            attrs = {"session_id": sid, "url": "/account/address"}
            buf.append(_Ev(t, "web", "form_abandoned", auth, attrs))
            t += self.ri(10, 60)
        return t, auth, sid

    def add_to_cart(self, buf: list[_Ev], t: int, auth: dict[str, str], sid: str) -> float:
        """1-2 add_to_cart events; returns the cart value."""
        total = 0.0
        for _ in range(self.ri(1, 2)):
            sku, price = self.pick(_PRODUCTS)
            attrs = {"session_id": sid, "url": f"/p/{sku}", "product": sku}
            buf.append(_Ev(t, "web", "add_to_cart", auth, attrs))
            total += price
            t += self.ri(15, 120)
        return round(total, 2)

    def cart_purchase(self, buf: list[_Ev], t: int, auth: dict[str, str], sid: str) -> int:
        value = self.add_to_cart(buf, t, auth, sid)
        t = buf[-1].t + self.ri(20, 120)
        return self.checkout(buf, t, auth, sid, value)

    def checkout(self, buf: list[_Ev], t: int, auth: dict[str, str], sid: str, value: float) -> int:
        attrs = {"session_id": sid, "url": "/checkout", "order_value": value}
        buf.append(_Ev(t, "web", "checkout_started", auth, attrs))
        t += self.ri(30, 240)
        ids = {**auth, "email": self.email} if self.r() < 0.3 else auth
        attrs = {"session_id": sid, "url": "/checkout/done", "order_value": value}
        buf.append(_Ev(t, "web", "purchase", ids, attrs))
        return t + self.ri(5, 60)

    def call(
        self,
        buf: list[_Ev],
        t: int,
        reason: str | None,
        *,
        wait: int,
        outcome: str = "answered",
        resolved: bool = True,
        transfers: int = 0,
    ) -> dict[str, _Ev]:
        """One call: call_started, then ivr_abandoned / queue_abandoned, or answered ->
        transferred* -> call_ended. Returns its events by type."""
        self.n_calls += 1
        local8 = self.tz == 8
        base: dict[str, Any] = {"call_id": f"k{self.tag}-{self.n_calls}"}
        if reason:
            base["reason"] = reason
        ph = {"phone": self.phone}
        out: dict[str, _Ev] = {}
        ev = out["call_started"] = _Ev(t, "call_centre", "call_started", ph, base, local8)
        buf.append(ev)
        if outcome == "ivr_abandoned":
            t += self.ri(20, 150)
            ev = out[outcome] = _Ev(t, "call_centre", outcome, ph, dict(base), local8)
            buf.append(ev)
            return out
        t += wait
        if outcome == "queue_abandoned":
            ev = _Ev(t, "call_centre", outcome, ph, {**base, "wait_seconds": wait}, local8)
            buf.append(ev)
            out[outcome] = ev
            return out
        au = {"phone": self.phone, "customer_id": self.cid} if self.r() < 0.4 else ph
        agent = f"a{self.ri(1, 80)}"
        ans = _Ev(
            t,
            "call_centre",
            "answered",
            au,
            {**base, "wait_seconds": wait, "agent_id": agent},
            local8,
        )
        buf.append(ans)
        out["answered"] = ans
        for _ in range(transfers):
            t += self.ri(60, 400)
            agent = f"a{self.ri(1, 80)}"
            buf.append(
                _Ev(t, "call_centre", "transferred", au, {**base, "agent_id": agent}, local8)
            )
        t += self.ri(90, 900)
        attrs = {
            **base,
            "agent_id": agent,
            "handle_seconds": t - ans.t,
            "resolved": resolved,
            "transfers": transfers,
        }
        ev = out["call_ended"] = _Ev(t, "call_centre", "call_ended", au, attrs, local8)
        buf.append(ev)
        return out

    def store(self, buf: list[_Ev], t: int, type_: str, **attrs: Any) -> _Ev:
        ev = _Ev(
            t,
            "store",
            type_,
            {"loyalty_id": self.loyalty},
            {"store_id": self.store_id, **attrs},
            self.tz == 8,
        )
        buf.append(ev)
        return ev

    def sms(self, buf: list[_Ev], t: int, type_: str, template: str, **attrs: Any) -> _Ev:
        ev = _Ev(t, "sms", type_, {"phone": self.phone}, {"template": template, **attrs})
        buf.append(ev)
        return ev

    def sms_sent(self, buf: list[_Ev], t: int, template: str, *, fail: float = 0.0) -> int:
        self.sms(buf, t, "sent", template)
        t += self.ri(2, 60)
        self.sms(buf, t, "failed" if self.r() < fail else "delivered", template)
        return t

    def good_call(self, buf: list[_Ev], t: int) -> dict[str, _Ev]:
        return self.call(buf, t, self.pick(_CALL_REASONS), wait=self.ri(5, 240))

    # -- CRM customer --------------------------------------------------------------------
    def crm_profile(self, num: int, phone_off: int) -> dict[str, Any]:
        r = self.r()
        self.tier = "A" if r < 0.15 else "B" if r < 0.5 else "C"
        london = self.r() < 0.08
        self.tz = 0 if london else 8
        self.cid = f"C{num:06d}"
        mixed = (num * 7919 + phone_off) % 10**8
        if london:
            self.phone = f"+447{(num * 7919 + phone_off) % 10**9:09d}"
            self.store_id = f"LDN-{self.ri(1, 4):02d}"
        else:
            self.phone = f"+86{self.pick(_CN_MOBILE)}{mixed:08d}"
            self.store_id = f"{self.pick(_CITIES)}-{self.ri(1, 20):02d}"
        self.email = f"c{num:06d}@example.com"
        self.loyalty = f"L{num:06d}"
        self.app_device = self._uuid()
        consents = {
            "sms": self.r() > 0.04,
            "email": self.r() > 0.05,
            "call": self.r() > 0.03,
        }
        self.sms_ok = consents["sms"]
        birthday = datetime(1950, 1, 1) + timedelta(days=self.below(20_000))
        return {
            "schema_version": 1,
            "customer_id": self.cid,
            "tier": self.tier,
            "phone": self.phone,
            "email": self.email,
            "loyalty_id": self.loyalty,
            "timezone": "Europe/London" if london else "Asia/Shanghai",
            "consents": consents,
            "birthday": birthday.date().isoformat(),
        }

    def build_crm(self, kinds: list[str]) -> None:
        placed: list[tuple[int, int]] = []
        for kind in kinds:
            if kind in ("low_survey_score", "negative_reply", "opt_out") and not self.sms_ok:
                kind = "long_queue"
            span = self._place(kind, placed)
            if span is not None:
                placed.append(span)
                self.kinds.append(kind)
        self._clean_activity()

    def _place(self, kind: str, placed: list[tuple[int, int]]) -> tuple[int, int] | None:
        """Try to put scenario ``kind`` at a random time off the other scenarios."""
        need, influence = _SCENARIO_SPAN[kind]
        last_day = (self.horizon - need) // DAY
        if last_day < 0:
            return None
        for _ in range(12):
            t0 = self.daytime(self.ri(0, last_day), 9, 20)
            if t0 < HOUR or t0 + need > self.horizon:
                continue
            a, b = t0, t0 + influence
            if all(a >= y + _SCENARIO_GAP or b + _SCENARIO_GAP <= x for x, y in placed):
                buf: list[_Ev] = []
                getattr(self, f"_sc_{kind}")(buf, t0)
                self.commit(buf)
                self.block(buf[0].t - 6 * HOUR, buf[-1].t + 6 * HOUR, "all")
                return a, max(b, buf[-1].t)
        return None

    # -- scenarios (each appends its events, registers ground truth and blocks) -----------
    def _sc_repeat_contact(self, buf: list[_Ev], t: int) -> None:
        anchor: _Ev | None = None
        first = t
        for i in range(3):
            if i:
                t = buf[-1].t + self.ri(6 * HOUR, 36 * HOUR)
            r = self.r()
            if r < 0.45:
                anchor = self.good_call(buf, t)["call_started"]
            elif r < 0.75 or not self.sms_ok:
                self.store(buf, t, "visit")
                anchor = self.store(buf, t + self.ri(60, 900), "service_request", resolved=True)
            else:
                t = self.sms_sent(buf, t, "feedback_d1") + self.ri(5 * MIN, 3 * HOUR)
                s = self.ri(7, 10)
                anchor = self.sms(buf, t, "reply", "feedback_d1", reply_text=str(s), score=s)
        assert anchor is not None
        self.gt.append(("repeat_contact", anchor))
        self.block(first - 8 * DAY, buf[-1].t + 8 * DAY, "contact")

    def _failed_checkout_session(
        self, buf: list[_Ev], t: int
    ) -> tuple[_Ev, dict[str, str], str, float, int]:
        t, auth, sid = self.web_session(buf, t, views=self.ri(1, 3), force_login=True)
        value = self.add_to_cart(buf, t, auth, sid)
        t = buf[-1].t + self.ri(20, 120)
        buf.append(
            _Ev(
                t,
                "web",
                "checkout_started",
                auth,
                {"session_id": sid, "url": "/checkout", "order_value": value},
            )
        )
        t += self.ri(20, 120)
        code = self.pick(("PAYMENT_DECLINED", "CARD_EXPIRED", "3DS_TIMEOUT", "GATEWAY_ERROR"))
        attrs = {"session_id": sid, "url": "/checkout", "error_code": code, "order_value": value}
        failed = _Ev(t, "web", "checkout_failed", auth, attrs)
        buf.append(failed)
        return failed, auth, sid, value, t

    def _sc_digital_failure_checkout(self, buf: list[_Ev], t: int) -> None:
        failed, auth, sid, value, t = self._failed_checkout_session(buf, t)
        call = self.call(buf, t + self.ri(20 * MIN, 110 * MIN), "payment", wait=self.ri(10, 200))
        # pay successfully later the same day, within 24 h of the add_to_cart
        t = call["call_ended"].t + self.ri(10 * MIN, 4 * HOUR)
        dev = auth["anonymous_id"]
        self.n_sessions += 1
        sid = f"s{self.tag}-{self.n_sessions}"
        buf.append(_Ev(t, "web", "page_view", auth, {"session_id": sid, "url": "/cart"}))
        self.checkout(
            buf, t + self.ri(20, 90), {"anonymous_id": dev, "customer_id": self.cid}, sid, value
        )
        self.gt.append(("digital_failure_to_call", failed))
        self.gt.append(("checkout_failed", failed))
        self.block(failed.t - HOUR, failed.t + 26 * HOUR, "call")

    def _sc_digital_failure_error(self, buf: list[_Ev], t: int) -> None:
        t, auth, sid = self.web_session(buf, t, views=self.ri(1, 3), force_login=True)
        code = self.pick(("HTTP_500", "HTTP_503", "TIMEOUT"))
        err = _Ev(
            t,
            "web",
            "error",
            auth,
            {"session_id": sid, "url": "/account/orders", "error_code": code},
        )
        buf.append(err)
        self.call(buf, t + self.ri(10 * MIN, 90 * MIN), "order_status", wait=self.ri(10, 200))
        self.gt.append(("digital_failure_to_call", err))
        self.block(err.t - HOUR, err.t + 26 * HOUR, "call")

    def _sc_long_queue(self, buf: list[_Ev], t: int) -> None:
        call = self.call(buf, t, self.pick(_CALL_REASONS), wait=self.ri(420, 1500))
        self.gt.append(("long_queue", call["answered"]))

    def _sc_ivr_abandon(self, buf: list[_Ev], t: int) -> None:
        call = self.call(buf, t, None, wait=0, outcome="ivr_abandoned")
        self.gt.append(("ivr_abandon", call["ivr_abandoned"]))

    def _sc_queue_abandon(self, buf: list[_Ev], t: int) -> None:
        reason = self.pick(_CALL_REASONS)
        call = self.call(buf, t, reason, wait=self.ri(60, 240), outcome="queue_abandoned")
        self.gt.append(("queue_abandon", call["queue_abandoned"]))

    def _sc_transfer_unresolved(self, buf: list[_Ev], t: int) -> None:
        call = self.call(
            buf,
            t,
            self.pick(_CALL_REASONS),
            wait=self.ri(10, 200),
            resolved=False,
            transfers=self.pick((2, 2, 3)),
        )
        self.gt.append(("transfer_unresolved", call["call_ended"]))

    def _sc_checkout_failed(self, buf: list[_Ev], t: int) -> None:
        failed, auth, sid, value, t = self._failed_checkout_session(buf, t)
        t += self.ri(40, 300)
        self.checkout(buf, t, auth, sid, value)  # the retry with another card succeeds
        self.gt.append(("checkout_failed", failed))
        self.block(failed.t - HOUR, failed.t + 26 * HOUR, "call")

    def _sc_cart_abandoned(self, buf: list[_Ev], t: int) -> None:
        t, auth, sid = self.web_session(buf, t, views=self.ri(1, 4), force_login=True)
        sku = self.pick(_PRODUCTS)[0]
        cart = _Ev(
            t, "web", "add_to_cart", auth, {"session_id": sid, "url": f"/p/{sku}", "product": sku}
        )
        buf.append(cart)
        buf.append(
            _Ev(
                t + self.ri(20, 200),
                "web",
                "page_view",
                auth,
                {"session_id": sid, "url": "/cart"},
            )
        )
        self.gt.append(("cart_abandoned", cart))
        self.block(cart.t - HOUR, cart.t + 26 * HOUR, "purchase")

    def _sc_low_survey_score(self, buf: list[_Ev], t: int) -> None:
        t = self.sms_sent(buf, t, "feedback_d15") + self.ri(5 * MIN, 4 * HOUR)
        s = self.ri(0, 6)
        text = self.pick(_LOW_REPLIES).format(s=s)
        reply = self.sms(buf, t, "reply", "feedback_d15", reply_text=text, score=s)
        self.gt.append(("low_survey_score", reply))

    def _sc_negative_reply(self, buf: list[_Ev], t: int) -> None:
        t = self.sms_sent(buf, t, "order_shipped") + self.ri(5 * MIN, 4 * HOUR)
        text = self.pick(_NEGATIVE_TEXTS)
        reply = self.sms(buf, t, "reply", "order_shipped", reply_text=text)
        self.gt.append(("negative_reply", reply))

    def _sc_store_complaint(self, buf: list[_Ev], t: int) -> None:
        self.store(buf, t, "visit")
        complaint = self.store(buf, t + self.ri(2 * MIN, 20 * MIN), "complaint", resolved=False)
        # resolved: the item comes back for a refund within two days
        t = complaint.t + self.ri(2 * HOUR, 30 * HOUR)
        self.store(buf, t, "return", amount=self.pick(_PRODUCTS)[1], resolved=True)
        self.gt.append(("store_complaint", complaint))

    def _sc_complaint_unresolved_store(self, buf: list[_Ev], t: int) -> None:
        self.store(buf, t, "visit")
        complaint = self.store(buf, t + self.ri(2 * MIN, 20 * MIN), "complaint", resolved=False)
        self.gt.append(("store_complaint", complaint))
        self.gt.append(("complaint_unresolved", complaint))
        self.block(complaint.t - HOUR, complaint.t + 50 * HOUR, "resolved")

    def _sc_complaint_unresolved_call(self, buf: list[_Ev], t: int) -> None:
        call = self.call(
            buf,
            t,
            "complaint",
            wait=self.ri(10, 200),
            resolved=False,
            transfers=self.ri(0, 1),
        )
        anchor = call["call_started"]
        self.gt.append(("complaint_unresolved", anchor))
        self.block(anchor.t - HOUR, anchor.t + 50 * HOUR, "resolved")

    def _sc_trial_unused(self, buf: list[_Ev], t: int) -> None:
        t, auth, sid = self.web_session(buf, t, views=self.ri(1, 3), force_login=True)
        buf.append(_Ev(t, "web", "page_view", auth, {"session_id": sid, "url": "/trial"}))
        t += self.ri(20, 120)
        trial = _Ev(
            t,
            "web",
            "trial_started",
            auth,
            {"session_id": sid, "url": "/trial/start", "product": "PLUS"},
        )
        buf.append(trial)
        self.gt.append(("trial_unused", trial))
        self.block(trial.t - HOUR, trial.t + 15 * DAY + 2 * HOUR, "app_usage")

    def _sc_opt_out(self, buf: list[_Ev], t: int) -> None:
        template = self.pick(_CAMPAIGNS)
        t = self.sms_sent(buf, t, template) + self.ri(MIN, 3 * HOUR)
        opt = self.sms(buf, t, "opt_out", template)
        self.opted_out_at = opt.t
        self.gt.append(("opt_out", opt))

    # -- clean activity ------------------------------------------------------------------
    def _clean_activity(self) -> None:
        days = self.horizon // DAY
        scale = days / 30
        tier_f = {"A": 1.3, "B": 1.0, "C": 0.8}[self.tier]
        # web sessions, in time order so "remember me" only follows an earlier login
        n_web = int(self.uniform(1.5, 5.0) * scale * tier_f + self.r())
        starts = sorted(self.daytime(self.below(days)) for _ in range(n_web))
        for t in starts:
            buf: list[_Ev] = []
            cart = self.r() < 0.35
            self.web_session(buf, t, views=self.ri(1, 5), cart=cart)
            self.try_commit(buf, frozenset(("web", "purchase")) if cart else frozenset(("web",)))
        # store visits
        for _ in range(int(self.uniform(0.0, 3.0) * scale + self.r())):
            self._clean_store(self.daytime(self.below(days), 10, 21))
        # calls
        for _ in range(int(self.uniform(0.0, 1.5) * scale + self.r())):
            t = self.daytime(self.below(days), 9, 21)
            buf = []
            resolved = self.r() < 0.88
            transfers = 1 if self.r() < 0.15 else 0
            call = self.call(
                buf,
                t,
                self.pick(_CALL_REASONS),
                wait=self.ri(5, 240),
                resolved=resolved,
                transfers=transfers,
            )
            cats = {"call", "contact"} | ({"resolved"} if resolved else set())
            if self.try_commit(buf, frozenset(cats)) and self.r() < 0.25:
                self._survey(call["call_ended"].t)
        # a trial now and then, used within days and mostly converted
        if days >= 6 and self.r() < 0.06:
            self._clean_trial(self.daytime(self.below(days - 5), 9, 21))
        # marketing campaigns (global schedule, local 10:00-11:00)
        if self.sms_ok:
            for day in range(3, days - 1, 7):
                if self.r() < 0.6:
                    t = day * DAY + (10 - self.tz) * HOUR + self.below(HOUR)
                    if self.opted_out_at is not None and t > self.opted_out_at:
                        continue
                    buf = []
                    self.sms_sent(buf, t, _CAMPAIGNS[(day // 7) % len(_CAMPAIGNS)], fail=0.03)
                    self.try_commit(buf, frozenset(("sms",)))
        # the last-day service notice: keeps every partition's event-time clock moving to
        # the end of the period, past every absence deadline (see module docstring)
        buf = []
        self.sms_sent(buf, self.horizon - 8 * HOUR + self.below(5 * HOUR), "service_notice")
        self.commit(buf)

    def _clean_store(self, t: int) -> None:
        buf: list[_Ev] = []
        self.store(buf, t, "visit")
        t2 = t + self.ri(3 * MIN, 40 * MIN)
        r = self.r()
        cats = {"store"}
        if r < 0.6:
            self.store(buf, t2, "purchase", amount=round(self.uniform(8, 600), 2))
            cats.add("purchase")
        elif r < 0.7:
            self.store(buf, t2, "return", amount=self.pick(_PRODUCTS)[1])
        elif r < 0.8:
            self.store(buf, t2, "service_request", resolved=True)
            cats |= {"contact", "resolved"}
        if self.try_commit(buf, frozenset(cats)) and "purchase" in cats and self.r() < 0.2:
            self._survey(t2)

    def _survey(self, after: int) -> None:
        """A feedback SMS the next day; sometimes a good reply (a contact, so checked)."""
        if not self.sms_ok or (self.opted_out_at is not None):
            return
        day = after // DAY + 1
        t = day * DAY + (10 - self.tz) * HOUR + self.below(8 * HOUR)
        if t <= after:
            t = after + 12 * HOUR
        buf: list[_Ev] = []
        t = self.sms_sent(buf, t, "feedback_d1")
        if self.r() < 0.5:
            s = self.pick((7, 8, 8, 9, 9, 10, 10, 10))
            reply = list(buf)
            t += self.ri(2 * MIN, 5 * HOUR)
            self.sms(
                reply,
                t,
                "reply",
                "feedback_d1",
                reply_text=self.pick(_GOOD_REPLIES).format(s=s),
                score=s,
            )
            if self.try_commit(reply, frozenset(("sms", "contact"))):
                return
        self.try_commit(buf, frozenset(("sms",)))

    def _clean_trial(self, t: int) -> None:
        buf: list[_Ev] = []
        t, auth, sid = self.web_session(buf, t, views=self.ri(1, 2), force_login=True)
        buf.append(
            _Ev(
                t,
                "web",
                "trial_started",
                auth,
                {"session_id": sid, "url": "/trial/start", "product": "PLUS"},
            )
        )
        app = {"anonymous_id": self.app_device, "customer_id": self.cid}
        t += self.ri(2 * HOUR, 3 * DAY)
        self.n_sessions += 1
        sid = f"s{self.tag}-{self.n_sessions}"
        for _ in range(self.ri(2, 4)):
            buf.append(
                _Ev(
                    t,
                    "web",
                    "app_usage",
                    app,
                    {"session_id": sid, "url": "app://home", "product": "PLUS"},
                )
            )
            t += self.ri(30, 600)
        if self.r() < 0.8:
            t += self.ri(2 * DAY, 9 * DAY)
            if t < self.horizon - 2 * HOUR:
                self.n_sessions += 1
                sid = f"s{self.tag}-{self.n_sessions}"
                attrs = {
                    "session_id": sid,
                    "url": "app://upgrade",
                    "product": "PLUS",
                    "order_value": 99.0,
                }
                buf.append(_Ev(t, "web", "trial_converted", app, attrs))
        self.try_commit(buf, frozenset(("web", "app_usage")))

    # -- anonymous-only visitor ----------------------------------------------------------
    def build_visitor(self) -> None:
        days = self.horizon // DAY
        for _ in range(self.ri(1, 3)):
            buf: list[_Ev] = []
            self.web_session(buf, self.daytime(self.below(days)), views=self.ri(1, 5))
            self.try_commit(buf, frozenset(("web",)))


#: kind -> (seconds needed after the scenario start inside the period, influence span).
_SCENARIO_SPAN: dict[str, tuple[int, int]] = {
    "repeat_contact": (4 * DAY + 2 * HOUR, 4 * DAY),
    "digital_failure_checkout": (DAY + 4 * HOUR, 27 * HOUR),
    "digital_failure_error": (4 * HOUR, 27 * HOUR),
    "long_queue": (3 * HOUR, 2 * HOUR),
    "ivr_abandon": (2 * HOUR, HOUR),
    "queue_abandon": (2 * HOUR, HOUR),
    "transfer_unresolved": (3 * HOUR, 2 * HOUR),
    "checkout_failed": (3 * HOUR, 27 * HOUR),
    # absence kinds: anchor within 30 min of the start; anchor + window + 48 h must fit
    "cart_abandoned": (HOUR + 24 * HOUR + 48 * HOUR, 27 * HOUR),
    "low_survey_score": (6 * HOUR, 5 * HOUR),
    "negative_reply": (6 * HOUR, 5 * HOUR),
    "store_complaint": (32 * HOUR, 32 * HOUR),
    "complaint_unresolved_store": (HOUR + 48 * HOUR + 48 * HOUR, 51 * HOUR),
    "complaint_unresolved_call": (HOUR + 48 * HOUR + 48 * HOUR, 51 * HOUR),
    "trial_unused": (HOUR + 15 * DAY + 48 * HOUR, 15 * DAY + 3 * HOUR),
    "opt_out": (5 * HOUR, 4 * HOUR),
}


class _Sim:
    """Drives the generation: people, malformed copies, ordering and serialisation."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.horizon = cfg.days * DAY
        self.seq = 0

    def run(self) -> SimResult:
        cfg = self.cfg
        master = random.Random(cfg.seed)
        phone_off = master.randrange(10**8)
        deck: list[str] = []
        people: list[_Person] = []
        profiles: list[dict[str, Any]] = []
        for num in range(1, cfg.customers + 1):
            p = _Person(self, random.Random(master.getrandbits(64)), str(num))
            profiles.append(p.crm_profile(num, phone_off))
            kinds: list[str] = []
            if master.random() < cfg.scenario_ratio:
                for _ in range(1 if master.random() < 0.7 else 2):
                    if not deck:
                        deck = list(SCENARIOS)
                        master.shuffle(deck)
                    kinds.append(deck.pop())
            p.build_crm(kinds)
            people.append(p)
        for k in range(1, round(cfg.customers * cfg.anonymous_ratio) + 1):
            p = _Person(self, random.Random(master.getrandbits(64)), f"v{k}")
            p.build_visitor()
            people.append(p)

        events = [ev for p in people for ev in p.events]
        n_valid = len(events)
        bad = self._malformed(master, events)
        events.extend(bad)
        events.sort(key=lambda e: (e.t, e.seq))
        records, malformed = self._serialise(events)

        gt_rows = sorted(
            ((ev.t, p.cid, rule, ev.eid) for p in people for rule, ev in p.gt),
            key=lambda r: r,
        )
        start = cfg.start
        ground_truth = [
            {
                "customer_id": cid,
                "rule_id": rule,
                "anchor_event_id": eid,
                "occurred_at": (start + timedelta(seconds=t)).isoformat(),
            }
            for t, cid, rule, eid in gt_rows
        ]
        by_rule = dict.fromkeys(RULE_IDS, 0)
        for row in ground_truth:
            by_rule[row["rule_id"]] += 1
        by_reason = dict.fromkeys(MALFORMED_REASONS, 0)
        for reason in malformed.values():
            by_reason[reason] += 1
        by_kind = dict.fromkeys(SCENARIOS, 0)
        for p in people:
            for kind in p.kinds:
                by_kind[kind] += 1
        with_sc = sum(1 for p in people if p.cid and p.gt)
        manifest = {
            "seed": cfg.seed,
            "customers": cfg.customers,
            "anonymous_visitors": len(people) - cfg.customers,
            "days": cfg.days,
            "start": start.isoformat(),
            "end": cfg.end.isoformat(),
            "malformed_rate": cfg.malformed_rate,
            "events_total": len(records),
            "events_valid": n_valid,
            "events_malformed": len(malformed),
            # per-reason/rule/kind counts list only what occurs (equal to a Counter of results)
            "malformed_by_reason": _nonzero(by_reason),
            "ground_truth_total": len(ground_truth),
            "ground_truth_by_rule": _nonzero(by_rule),
            "scenarios_by_kind": _nonzero(by_kind),
            "customers_with_scenarios": with_sc,
            "clean_customers": cfg.customers - with_sc,
        }
        return SimResult(profiles, records, ground_truth, manifest, malformed)

    def _malformed(self, rng: random.Random, events: list[_Ev]) -> list[_Ev]:
        """Corrupted copies of would-be events (fresh ids at serialisation), one reason each."""
        rate = self.cfg.malformed_rate
        n = round(len(events) * rate / (1.0 - rate)) if events else 0
        reasons = [MALFORMED_REASONS[i % len(MALFORMED_REASONS)] for i in range(n)]
        rng.shuffle(reasons)
        pools: dict[str, list[_Ev]] = {"web": [], "call_centre": [], "store": []}
        for ev in events:
            pool = pools.get(ev.channel)
            if pool is not None:
                pool.append(ev)
        out: list[_Ev] = []
        for reason in reasons:
            if reason in ("unknown_type", "non_finite_number"):
                pool = pools["web"]
            elif reason == "wrong_type":
                pool = pools["call_centre"]
            elif reason == "negative_value":
                first, other = (
                    ("call_centre", "store") if rng.random() < 0.5 else ("store", "call_centre")
                )
                pool = pools[first] or pools[other]
            else:
                pool = events
            if not pool:
                reason, pool = "missing_field", events
            base = rng.choice(pool)
            ev = _Ev(base.t, base.channel, base.type, dict(base.ids), dict(base.attrs), base.local8)
            ev.bad = reason
            self.seq += 1
            ev.seq = self.seq
            out.append(ev)
        return out

    def _serialise(self, events: list[_Ev]) -> tuple[list[bytes], dict[int, str]]:
        start = self.cfg.start
        counters = dict.fromkeys(_PREFIX, 0)
        records: list[bytes] = []
        malformed: dict[int, str] = {}
        dumps = orjson.dumps
        stamp = _Stamper(start)
        for i, ev in enumerate(events):
            ch = ev.channel
            counters[ch] += 1
            ev.eid = f"{_PREFIX[ch]}-{counters[ch]}"
            ts = stamp(ev.t, ev.local8)
            d = {
                "event_id": ev.eid,
                "channel": ch,
                "type": ev.type,
                "occurred_at": ts,
                "identifiers": ev.ids,
            }
            d.update(ev.attrs)
            if ev.bad is None:
                raw = dumps(d)
            else:
                raw = _corrupt(d, ev.bad, start + timedelta(seconds=ev.t))
                malformed[i] = ev.bad
            # orjson's bytes keep a 4 KiB allocation; a right-sized copy saves ~95% memory
            records.append(memoryview(raw).tobytes())
        return records, malformed


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in sorted(counts.items()) if n}


class _Stamper:
    """ISO 8601 text of ``start + t`` seconds, in UTC or Shanghai time (+08:00); a fast
    path for whole-second starts, identical to ``datetime.isoformat``."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.base = int(start.timestamp()) if start.microsecond == 0 else None
        self.days: dict[int, str] = {}

    def __call__(self, t: int, local8: bool) -> str:
        if self.base is None:
            when = self.start + timedelta(seconds=t)
            return (when.astimezone(_CST) if local8 else when).isoformat()
        a = self.base + t + (28_800 if local8 else 0)
        day, rem = divmod(a, DAY)
        ds = self.days.get(day)
        if ds is None:
            ds = self.days[day] = (_EPOCH + timedelta(days=day)).isoformat()
        h, rem = divmod(rem, HOUR)
        m, sec = divmod(rem, MIN)
        return f"{ds}T{h:02d}:{m:02d}:{sec:02d}{'+08:00' if local8 else '+00:00'}"


_EPOCH = datetime(1970, 1, 1).date()


def _corrupt(d: dict[str, Any], reason: str, when: datetime) -> bytes:
    """One malformed wire record for ``reason`` from a would-be event ``d``."""
    if reason == "invalid_json":
        raw = orjson.dumps(d)
        cut = len(raw) // 2
        while raw[cut] >= 0x80:  # cut before an ASCII byte: never inside a UTF-8 sequence
            cut -= 1
        return raw[:cut]
    if reason == "invalid_utf8":
        eid = d["event_id"].encode()
        return orjson.dumps(d).replace(
            b'"event_id":"' + eid, b'"event_id":"' + eid + b"\xff\xfe", 1
        )
    if reason == "not_object":
        return orjson.dumps([d])
    if reason == "non_finite_number":
        d.pop("order_value", None)
        return orjson.dumps(d)[:-1] + b',"order_value":NaN}'
    if reason == "unknown_channel":
        d["channel"] = "fax"
    elif reason == "unknown_type":
        d["type"] = "teleport"
    elif reason == "missing_field":
        del d["event_id"]
    elif reason == "no_identifier":
        d["identifiers"] = {}
    elif reason == "wrong_type":
        d["wait_seconds"] = "long"
    elif reason == "negative_value":
        if d["channel"] == "store":
            d["amount"] = -10
        else:
            d["wait_seconds"] = -5
    elif reason == "naive_timestamp":
        d["occurred_at"] = when.replace(tzinfo=None).isoformat()
    elif reason in ("future_timestamp", "ancient_timestamp"):
        year = 2099 if reason == "future_timestamp" else 1999
        day = min(when.day, 28) if when.month == 2 else when.day
        d["occurred_at"] = when.replace(year=year, day=day).isoformat()
    else:  # pragma: no cover - guarded by MALFORMED_REASONS
        raise ValueError(reason)
    return orjson.dumps(d)


def simulate(cfg: SimConfig | None = None) -> SimResult:
    """Generate one deterministic simulated period (see the module docstring)."""
    # Millions of small acyclic objects: the cyclic GC would only rescan them (-40% speed).
    paused = gc.isenabled()
    gc.disable()
    try:
        return _Sim(cfg or SimConfig()).run()
    finally:
        if paused:
            gc.enable()


def write_outputs(result: SimResult, out_dir: Path | str) -> dict[str, Path]:
    """Write ``events.jsonl.gz``, ``customers.jsonl``, ``ground_truth.jsonl`` and
    ``manifest.json`` into ``out_dir``; byte-identical for the same result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "events": out / "events.jsonl.gz",
        "customers": out / "customers.jsonl",
        "ground_truth": out / "ground_truth.jsonl",
        "manifest": out / "manifest.json",
    }
    with (
        paths["events"].open("wb") as fh,
        gzip.GzipFile(
            filename="events.jsonl", mode="wb", fileobj=fh, mtime=0, compresslevel=6
        ) as gz,
    ):
        for chunk in range(0, len(result.records), 10_000):
            gz.write(b"".join(r + b"\n" for r in result.records[chunk : chunk + 10_000]))
    paths["customers"].write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in result.customers))
    paths["ground_truth"].write_bytes(
        b"".join(orjson.dumps(g) + b"\n" for g in result.ground_truth)
    )
    paths["manifest"].write_text(json.dumps(result.manifest, indent=2, sort_keys=True) + "\n")
    return paths


_KEY_ORDER = ("customer_id", "loyalty_id", "email", "phone", "anonymous_id")


def producer_key(record: bytes) -> str | None:
    """Kafka key of a raw record: its strongest raw identifier (customer_id > loyalty_id >
    email > phone > anonymous_id), or None when it does not parse or names nobody."""
    try:
        obj = orjson.loads(record)
    except orjson.JSONDecodeError:
        return None
    ids = obj.get("identifiers") if isinstance(obj, dict) else None
    if not isinstance(ids, dict):
        return None
    for kind in _KEY_ORDER:
        value = ids.get(kind)
        if isinstance(value, str) and value:
            return value
    return None


class PublishError(RuntimeError):
    """Some records could not be delivered to Kafka."""


def publish(
    records: Iterable[bytes],
    *,
    bootstrap: str,
    topic: str,
    rate: float | None = None,
    client_config: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    flush_timeout: float = 120.0,
    stop: threading.Event | None = None,
) -> int:
    """Produce ``records`` to ``topic`` keyed by :func:`producer_key`; returns the count.

    ``rate`` (events/s) paces sending token-bucket style, sleeping in small steps. Raises
    :class:`PublishError` if any record fails delivery or is still queued after the flush.
    Setting ``stop`` (from another thread) ends sending early; what was produced is flushed.
    """
    from confluent_kafka import KafkaException, Producer

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "compression.type": "lz4",
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 200_000,
        **(client_config or {}),
    }
    producer = Producer(conf)
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    step = max(1, min(1000, int(rate / 100))) if rate else 1000  # ~10 ms of tokens per step
    started = time.monotonic()
    n = 0
    produce, poll = producer.produce, producer.poll
    for record in records:
        if n % step == 0:  # every ~10 ms of a paced run, every 1,000 records of a max one
            if stop is not None and stop.is_set():
                break
            if rate:
                ahead = started + n / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        key = producer_key(record)
        while True:
            try:
                produce(topic, record, key, on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.05)
        n += 1
        if n % 1000 == 0:
            poll(0)
            if progress is not None:
                progress(n)
    try:
        remaining = producer.flush(flush_timeout)
    except KafkaException as exc:  # pragma: no cover - librdkafka fatal errors
        raise PublishError(str(exc)) from exc
    if progress is not None:
        progress(n)
    if remaining or failures:
        first = failures[0] if failures else "flush timed out"
        raise PublishError(
            f"{len(failures)} failed, {remaining} undelivered of {n} records (first: {first})"
        )
    return n
