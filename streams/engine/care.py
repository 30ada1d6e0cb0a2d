"""Care actions: a YAML policy (pain point × customer tier → action, plus scheduled follow-up
sequences) and the pure engine that decides, per action, whether it goes out now, waits for
the end of quiet hours, or is suppressed and why.

Guards, in order (docs/design.md, "Care actions"): duplicate, consent, opt-out, cooldown per
rule, frequency caps per customer (day, then week), quiet hours in the customer's time zone
(hold, then send). A held action reserves nothing: every guard but the duplicate check runs
again when it is released.

Pure like the journey engine: event time is passed in (epoch seconds); nothing reads a clock,
draws a random number or does I/O (apart from :func:`load_policy` reading YAML). The same calls
in the same order give the same records. Each decision is a plain dict (:data:`RECORD_KEYS`);
a held action later produces a second record with the same ``action_id``.

The policy format is documented in ``docs/care.md``; the built-in policy is
``streams/engine/builtin_care.yaml``.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from streams.engine.ids import uuid5_str
from streams.engine.rules import Matcher, describe_errors, parse_duration

# The rule loader's SafeLoader subclass that rejects duplicate mapping keys: a policy file
# must not silently keep the last of two `cooldown:` lines either.
from streams.engine.rules import _UniqueKeyLoader as _PolicyLoader
from streams.engine.timefmt import iso

__all__ = [
    "KINDS",
    "REASONS",
    "RECORD_KEYS",
    "STATUSES",
    "CareEngine",
    "CarePolicy",
    "CarePolicyError",
    "CareState",
    "builtin_policy",
    "load_policy",
]

log = logging.getLogger(__name__)

Event = dict[str, Any]
Record = dict[str, Any]
Predicate = Callable[[Event], bool]

#: Action kinds and the contact channel each uses by default (None: internal, no contact).
KINDS: dict[str, str | None] = {
    "sms": "sms",
    "email": "email",
    "outbound_call": "call",
    "coupon": "sms",
    "manager_escalation": None,
    "webhook": None,
}
#: Channels a kind may be sent through when the policy sets ``channel`` explicitly.
_KIND_CHANNELS: dict[str, tuple[str | None, ...]] = {
    "sms": ("sms",),
    "email": ("email",),
    "outbound_call": ("call",),
    "coupon": ("sms", "email", None),
    "manager_escalation": (None,),
    "webhook": ("sms", "email", "call", None),
}
CONTACT_CHANNELS = ("sms", "email", "call")
PRIORITIES = ("high", "normal", "low")
TIERS = ("A", "B", "C")
STATUSES = ("sent", "held", "suppressed")
REASONS = ("no_consent", "opted_out", "cap_day", "cap_week", "cooldown", "duplicate", "condition")
#: The keys of every decision record, in this order.
RECORD_KEYS = (
    "action_id",
    "pain_point_id",
    "rule_id",
    "journey_id",
    "sequence",
    "customer_id",
    "tier",
    "kind",
    "template",
    "priority",
    "channel",
    "status",
    "reason",
    "due_at",
    "decided_at",
)

BUILTIN_FILE = "builtin_care.yaml"
DAY = 86_400.0
WEEK = 7 * DAY
#: Sends are kept a day longer than the week window: decisions may lag the newest event
#: (absence rules fire late, held actions are released later) and still need their window.
SEND_KEEP = WEEK + DAY
#: How long a decided pain point is remembered (a replay inside it never acts twice).
ACT_KEEP = 30 * DAY
# Hard bounds per customer; a state never grows past them whatever arrives.
MAX_ACTED = 256
MAX_SENDS = 256
MAX_HELD = 64
MAX_MARKS = 128
MAX_TRIGGERS = 64
MAX_OPT = 8

#: Event types that opt a channel out / back in.
OPT_OUT_TYPES = frozenset({"opt_out", "unsubscribe"})
OPT_IN_TYPES = frozenset({"opt_in", "subscribe"})
#: Touchpoint channel → the contact channel an opt-out there applies to.
_EVENT_CONTACT_CHANNEL = {"call_centre": "call"}

_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_TEMPLATE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
_HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DERIVE: Any = object()  # `channel` left out: derived from the kind


class CarePolicyError(Exception):
    """A policy file that cannot be used; ``str(exc)`` is one line: file, YAML path, problem."""


# -- validation helpers ----------------------------------------------------------------------


def _err(msg: str) -> PydanticCustomError:
    # The message travels in the context so braces in user input are never format fields.
    return PydanticCustomError("care_error", "{msg}", {"msg": msg})


def _show(v: object, limit: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _is_int(v: object) -> bool:
    return type(v) is int


def duration_seconds(v: object, *, zero_ok: bool = False) -> float:
    """Seconds in a duration (:func:`rules.parse_duration` syntax); ``zero_ok`` also accepts
    ``0``/``0h`` (a step at the trigger, a rule without cooldown). Raises ``ValueError``."""
    try:
        return parse_duration(v)
    except ValueError as exc:
        # parse_duration rejects 0; a string it parsed to 0 cannot be negative (no sign in
        # its syntax), a number must be exactly 0.
        if zero_ok and str(exc).startswith("must be > 0") and (isinstance(v, str) or v == 0):
            return 0.0
        raise


def _check_duration(v: Any, zero_ok: bool) -> Any:
    try:
        duration_seconds(v, zero_ok=zero_ok)
    except ValueError as exc:
        raise _err(str(exc)) from None
    return v


def _hhmm_seconds(v: str) -> int:
    h, m = v.split(":")
    return int(h) * 3600 + int(m) * 60


def _check_hhmm(v: Any) -> Any:
    if isinstance(v, str) and _HHMM_RE.match(v):
        return v
    if _is_int(v):
        # YAML 1.1 reads an unquoted 21:00 as the base-60 number 1260.
        raise _err(f'must be a quoted "HH:MM" time (YAML reads unquoted 21:00 as {v}), got {v}')
    raise _err(f'must be a "HH:MM" time from 00:00 to 23:59, got {_show(v)}')


def _check_tiers(v: Any) -> Any:
    if not isinstance(v, list) or not v:
        raise _err(f"must be a non-empty list of tiers ({', '.join(TIERS)}), got {_show(v)}")
    for i, t in enumerate(v):
        if t not in TIERS or not isinstance(t, str):
            raise _err(f"[{i}]: {_show(t)} is not a tier ({', '.join(TIERS)})")
        if t in v[:i]:
            raise _err(f"[{i}]: tier {t!r} is listed twice")
    return v


def _one_or_many(v: Any) -> str:
    return "__many__" if isinstance(v, list) else "__one__"


def _trigger_tag(v: Any) -> str:
    return "__birthday__" if isinstance(v, str) else "__matcher__"


_TAGS = frozenset({"__one__", "__many__", "__birthday__", "__matcher__"})


# -- policy models ---------------------------------------------------------------------------


class _Strict(BaseModel):
    """Frozen; unknown keys rejected naming the key and the allowed ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                key = unknown[0]
                where = f".{key}: " if isinstance(key, str) and key.strip() else ""
                raise _err(
                    f"{where}unknown key {_show(key)} (allowed: {', '.join(cls.model_fields)})"
                )
        return data


class QuietHours(_Strict):
    """Local-time window in which contacts through ``channels`` are held."""

    start: str = "21:00"
    end: str = "08:00"
    channels: list[str] = Field(default_factory=lambda: ["sms", "call"])

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, v: Any) -> Any:
        return _check_hhmm(v)

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise _err(
                f"must be a list of channels ({', '.join(CONTACT_CHANNELS)}), got {_show(v)}"
            )
        for i, ch in enumerate(v):
            if ch not in CONTACT_CHANNELS or not isinstance(ch, str):
                raise _err(f"[{i}]: {_show(ch)} is not a channel ({', '.join(CONTACT_CHANNELS)})")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise _err(f".end: equals start ({self.start}); use 'quiet_hours: null' to disable")
        return self


class Caps(_Strict):
    """Frequency caps per customer: rolling 24 h and 7 d windows of sent actions."""

    per_day: int = 2
    per_week: int = 5

    @field_validator("per_day", "per_week", mode="before")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if not (_is_int(v) and 1 <= v <= 1000):
            raise _err(f"must be an integer from 1 to 1000, got {_show(v)}")
        return v

    @model_validator(mode="after")
    def _week_covers_day(self) -> Caps:
        if self.per_week < self.per_day:
            raise _err(f".per_week: must be >= per_day ({self.per_day}), got {self.per_week}")
        return self


class Defaults(_Strict):
    """Policy-wide guard settings."""

    quiet_hours: QuietHours | None = Field(default_factory=QuietHours)
    caps: Caps = Field(default_factory=Caps)
    caps_exempt: list[str] = Field(default_factory=lambda: ["manager_escalation", "webhook"])
    cooldown: str | float = "24h"

    @field_validator("caps_exempt", mode="before")
    @classmethod
    def _kinds(cls, v: Any) -> Any:
        if not isinstance(v, list):
            raise _err(f"must be a list of kinds ({', '.join(KINDS)}), got {_show(v)}")
        for i, k in enumerate(v):
            if k not in KINDS or not isinstance(k, str):
                raise _err(f"[{i}]: {_show(k)} is not a kind ({', '.join(KINDS)})")
        return v

    @field_validator("cooldown", mode="before")
    @classmethod
    def _cooldown(cls, v: Any) -> Any:
        return _check_duration(v, zero_ok=True)


class Action(_Strict):
    """One action: what to send (``kind``, ``template``), how urgently, through which channel."""

    kind: str
    template: str
    priority: str = "normal"
    channel: str | None = Field(default=_DERIVE, validate_default=True)

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, v: Any) -> Any:
        if v not in KINDS or not isinstance(v, str):
            raise _err(f"{_show(v)} is not a kind ({', '.join(KINDS)})")
        return v

    @field_validator("template", mode="before")
    @classmethod
    def _template(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _TEMPLATE_RE.match(v):
            raise _err(
                f"must be a template name (letters, digits, _ . : / -; at most 128), got {_show(v)}"
            )
        return v

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> Any:
        if v not in PRIORITIES or not isinstance(v, str):
            raise _err(f"{_show(v)} is not a priority ({', '.join(PRIORITIES)})")
        return v

    @field_validator("channel", mode="before")
    @classmethod
    def _channel(cls, v: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        if kind is None:  # the kind is invalid; that error is reported
            return None
        if v is _DERIVE:
            return KINDS[kind]
        allowed = _KIND_CHANNELS[kind]
        if v not in allowed or not (v is None or isinstance(v, str)):
            shown = ", ".join("null" if c is None else c for c in allowed)
            raise _err(f"{_show(v)} is not a channel for kind '{kind}' ({shown})")
        return v


ActionSpec = Annotated[
    Annotated[Action, Tag("__one__")] | Annotated[list[Action], Tag("__many__")],
    Discriminator(_one_or_many),
]
MatcherSpec = Annotated[
    Annotated[Matcher, Tag("__one__")] | Annotated[list[Matcher], Tag("__many__")],
    Discriminator(_one_or_many),
]


def _actions(v: Action | list[Action] | None) -> list[Action]:
    if v is None:
        return []
    return [v] if isinstance(v, Action) else list(v)


class Tiers(_Strict):
    """Action(s) per customer tier; a missing (or null) tier gets no action."""

    A: ActionSpec | None = None
    B: ActionSpec | None = None
    C: ActionSpec | None = None

    @field_validator("A", "B", "C")
    @classmethod
    def _distinct_kinds(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise _err("must be an action or a non-empty list of actions (null: none)")
            kinds = [a.kind for a in v]
            for i, k in enumerate(kinds):
                if k in kinds[:i]:
                    # the action id is uuid5(pain point, kind): two of a kind would collide
                    raise _err(f"[{i}].kind: kind {k!r} twice for one tier (one per kind)")
        return v


class CareEntry(_Strict):
    """What a pain point of one rule gets, per tier."""

    rule: str
    cooldown: str | float | None = None
    tiers: Tiers

    @field_validator("rule", mode="before")
    @classmethod
    def _rule(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _ID_RE.match(v):
            raise _err(f"must be a rule id matching ^[a-z][a-z0-9_]*$, got {_show(v)}")
        return v

    @field_validator("cooldown", mode="before")
    @classmethod
    def _cooldown(cls, v: Any) -> Any:
        return None if v is None else _check_duration(v, zero_ok=True)


class Unless(_Strict):
    """Suppress a step when ``min_count`` events matching ``match`` happened since the
    trigger (up to the step's time)."""

    match: MatcherSpec
    min_count: int = 1

    @field_validator("match")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        ms = [v] if isinstance(v, Matcher) else v
        if not ms:
            raise _err("must be a matcher or a non-empty list of matchers")
        for i, m in enumerate(ms):
            if m.is_empty:
                at = f"[{i}]: " if isinstance(v, list) else ""
                raise _err(f"{at}an empty matcher would match every event")
        return v

    @field_validator("min_count", mode="before")
    @classmethod
    def _min_count(cls, v: Any) -> Any:
        if not (_is_int(v) and v >= 1):
            raise _err(f"must be an integer >= 1, got {_show(v)}")
        return v


class Step(Action):
    """One step of a sequence: an action ``after`` the trigger (optionally at a local time of
    day on that day), for some tiers, unless a condition holds."""

    id: str
    after: str | float = 0
    at_local: str | None = None
    tiers: list[str] | None = None
    unless: Unless | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _ID_RE.match(v):
            raise _err(f"must match ^[a-z][a-z0-9_]*$ (e.g. feedback), got {_show(v)}")
        return v

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, v: Any) -> Any:
        return _check_duration(v, zero_ok=True)

    @field_validator("at_local", mode="before")
    @classmethod
    def _at_local(cls, v: Any) -> Any:
        return None if v is None else _check_hhmm(v)

    @field_validator("tiers", mode="before")
    @classmethod
    def _tiers(cls, v: Any) -> Any:
        return None if v is None else _check_tiers(v)


TriggerSpec = Annotated[
    Annotated[Literal["birthday"], Tag("__birthday__")] | Annotated[Matcher, Tag("__matcher__")],
    Discriminator(_trigger_tag),
]


class CareSequence(_Strict):
    """Scheduled follow-ups started by an event (``trigger`` matcher) or by the customer's
    birthday each year (``trigger: birthday``)."""

    id: str
    trigger: TriggerSpec
    tiers: list[str] | None = None
    steps: list[Step]

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _ID_RE.match(v):
            raise _err(f"must match ^[a-z][a-z0-9_]*$ (e.g. trial), got {_show(v)}")
        return v

    @field_validator("trigger", mode="before")
    @classmethod
    def _trigger_text(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "birthday":
            raise _err(f"must be 'birthday' or a matcher (channel/type/where), got {_show(v)}")
        return v

    @field_validator("trigger")
    @classmethod
    def _trigger(cls, v: Any) -> Any:
        if isinstance(v, Matcher) and v.is_empty:
            raise _err("an empty matcher would start the sequence on every event")
        return v

    @field_validator("tiers", mode="before")
    @classmethod
    def _tiers(cls, v: Any) -> Any:
        return None if v is None else _check_tiers(v)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[Step]) -> list[Step]:
        if not v:
            raise _err("must be a non-empty list of steps")
        seen: dict[str, int] = {}
        for i, s in enumerate(v):
            if s.id in seen:
                raise _err(f"[{i}].id: duplicate step id {s.id!r} (steps[{seen[s.id]}])")
            seen[s.id] = i
        return v


class CarePolicy(_Strict):
    """A validated care policy (see ``docs/care.md``)."""

    version: int = 1
    defaults: Defaults = Field(default_factory=Defaults)
    care: list[CareEntry] = Field(default_factory=list)
    sequences: list[CareSequence] = Field(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if not (_is_int(v) and v == 1):
            raise _err(f"only version 1 is supported, got {_show(v)}")
        return v

    @field_validator("care")
    @classmethod
    def _unique_rules(cls, v: list[CareEntry]) -> list[CareEntry]:
        seen: dict[str, int] = {}
        for i, e in enumerate(v):
            if e.rule in seen:
                raise _err(f"[{i}].rule: duplicate rule {e.rule!r} (care[{seen[e.rule]}])")
            seen[e.rule] = i
        return v

    @field_validator("sequences")
    @classmethod
    def _unique_sequences(cls, v: list[CareSequence]) -> list[CareSequence]:
        seen: dict[str, int] = {}
        for i, s in enumerate(v):
            if s.id in seen:
                raise _err(f"[{i}].id: duplicate sequence id {s.id!r} (sequences[{seen[s.id]}])")
            seen[s.id] = i
        return v

    @property
    def rule_ids(self) -> list[str]:
        """The rule ids the policy covers, in file order."""
        return [e.rule for e in self.care]

    def entry(self, rule_id: str) -> CareEntry | None:
        """The policy entry for one rule, None if the rule is not covered."""
        for e in self.care:
            if e.rule == rule_id:
                return e
        return None


# -- loading ---------------------------------------------------------------------------------


def _parse(text: str, name: str) -> CarePolicy:
    try:
        doc = yaml.load(text, Loader=_PolicyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise CarePolicyError(f"{name}: {line}{problem}") from None
    except yaml.YAMLError as exc:
        raise CarePolicyError(f"{name}: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        shown = _show(doc) if doc else "nothing"
        raise CarePolicyError(f"{name}: must be a mapping with 'care' and 'sequences', got {shown}")
    try:
        policy = CarePolicy.model_validate(doc)
    except ValidationError as exc:
        what = describe_errors(exc, _TAGS, ("care_error", "rule_error"))
        raise CarePolicyError(f"{name}: {what}") from None
    log.debug(
        "care policy %s: %d rules, %d sequences", name, len(policy.care), len(policy.sequences)
    )
    return policy


@cache
def builtin_policy() -> CarePolicy:
    """The built-in policy (parsed once; policies are immutable)."""
    text = resources.files(__package__).joinpath(BUILTIN_FILE).read_text(encoding="utf-8")
    return _parse(text, BUILTIN_FILE)


def load_policy(path: str | Path | None = None) -> CarePolicy:
    """Load and validate a policy file; ``None`` gives the built-in policy.

    Raises :class:`CarePolicyError` with a one-line message.
    """
    if path is None:
        return builtin_policy()
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CarePolicyError(f"{name}: cannot read: {reason}") from None
    return _parse(text, name)


# -- time helpers ----------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _zone(name: object) -> tzinfo:
    """The customer's zone; an unknown or missing one falls back to UTC (profiles are
    validated upstream, so this only guards against hand-made dicts)."""
    if not name or name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)  # type: ignore[arg-type]
    except (KeyError, ValueError, TypeError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return UTC


def _local_instant(tz: tzinfo, day: date, sod: int, fold: int = 0) -> float:
    """Epoch seconds of local wall time ``sod`` (seconds of day) on ``day`` in ``tz``.

    An ambiguous time (the repeated hour of a fall-back night) is its first occurrence
    (``fold=1``: its second). A time that does not exist (skipped by a spring-forward jump)
    resolves to the first valid instant after it: the moment of the jump.
    """
    naive = datetime.combine(day, time()) + timedelta(seconds=sod)
    ts = naive.replace(tzinfo=tz, fold=fold).timestamp()
    if datetime.fromtimestamp(ts, tz).replace(tzinfo=None) == naive:
        return ts
    # In a gap, fold=0 / fold=1 apply the offsets before / after the jump; the jump itself
    # lies between the two readings. Find the first whole second whose wall time >= naive
    # (jumps happen on whole minutes, so this is exact).
    lo, hi = sorted(
        (naive.replace(tzinfo=tz, fold=0).timestamp(), naive.replace(tzinfo=tz, fold=1).timestamp())
    )
    lo_i, hi_i = math.floor(lo), math.ceil(hi)
    while hi_i - lo_i > 1:
        mid = (lo_i + hi_i) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            hi_i = mid
        else:
            lo_i = mid
    return float(hi_i)


def _epoch(v: Any) -> float:
    """Epoch seconds of an ISO-8601 string (naive: UTC), a datetime, or a number."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    dt = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _birthday(v: Any) -> tuple[int, int] | None:
    """(month, day) of a profile birthday (date or ISO string); None if absent or invalid."""
    if isinstance(v, datetime):
        return v.month, v.day
    if isinstance(v, date):
        return v.month, v.day
    if isinstance(v, str):
        try:
            d = date.fromisoformat(v[:10])
        except ValueError:
            return None
        return d.month, d.day
    return None


def _birthday_key(profile: dict[str, Any]) -> str:
    """What a scheduled birthday run depends on: the birthday and the time zone."""
    return f"{profile.get('birthday')}@{profile.get('timezone') or 'UTC'}"


def _birthday_in(year: int, month: int, day: int) -> date:
    """The birthday in ``year``; 29 February falls on the 28th in other years."""
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        return date(year, 2, 28)
    return date(year, month, day)


def _capped(sends: list[float], t: float, window: float, limit: int) -> bool:
    """Whether one more send at ``t`` would put more than ``limit`` sends in some rolling
    window ``(end - window, end]``. Decisions arrive out of event-time order (a held action
    is released after later pain points were decided), so the windows ending at later
    sends are checked too, not only the one ending at ``t``."""
    hi = bisect.bisect_right(sends, t)
    if hi - bisect.bisect_right(sends, t - window) >= limit:
        return True
    for j in range(hi, len(sends)):
        end = sends[j]
        if end >= t + window:
            break
        if j + 1 - bisect.bisect_right(sends, end - window) >= limit:
            return True
    return False


_uuid = uuid5_str  # str(uuid.uuid5(TOUCHPATH_NS, name)), faster


# -- compiled policy -------------------------------------------------------------------------

_KIND_BITS = {k: 1 << i for i, k in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class _Act:
    kind: str
    template: str
    priority: str
    channel: str | None
    bit: int
    exempt: bool  # from caps


@dataclass(frozen=True, slots=True)
class _Rule:
    cooldown: float
    tiers: dict[str, tuple[_Act, ...]]


@dataclass(frozen=True, slots=True)
class _Step:
    seq: str
    id: str
    label: str  # "trial:feedback"
    after: float
    at_local: int | None  # seconds of day
    tiers: frozenset[str] | None
    unless_bit: int  # 0: no condition
    min_count: int
    act: _Act
    birthday: bool


@dataclass(frozen=True, slots=True)
class _Seq:
    id: str
    trigger: Predicate | None  # None: birthday
    matcher: Matcher | None
    tiers: frozenset[str] | None
    steps: tuple[_Step, ...]
    span: float  # the latest step offset


def _any(ms: Matcher | list[Matcher]) -> tuple[Predicate, Callable[[str, str], bool]]:
    """One predicate and one channel/type pre-check for a matcher or an any-of list."""
    ms = [ms] if isinstance(ms, Matcher) else list(ms)
    if len(ms) == 1:
        return ms[0].matches, ms[0].could_match
    fns = tuple(m.matches for m in ms)
    return (
        lambda e: any(f(e) for f in fns),
        lambda c, t: any(m.could_match(c, t) for m in ms),
    )


# -- per-customer state ----------------------------------------------------------------------


@dataclass(slots=True)
class CareState:
    """What the care engine remembers about one customer (bounded, JSON-serializable).

    Lists are plain lists so :meth:`to_json` is cheap:

    * ``acted``: pain_point_id → [detected ts, bit mask of the kinds decided];
    * ``sends``: sorted times of sent, capped actions (the caps' rolling windows);
    * ``cooldown``: rule_id → [time of its latest sent action, pain_point_id];
    * ``opt``: contact channel → sorted [[ts, 1 = out / 0 = in], ...];
    * ``held``: [due, action_id, kind, template, priority, channel, pain_point_id, rule_id,
      journey_id, sequence] waiting for the end of quiet hours;
    * ``pending``: sequence steps [due, action_id, sequence, step, trigger id, trigger ts];
    * ``triggers``: "sequence:trigger event id" → ts (a replayed trigger starts nothing);
    * ``marks``: sorted [ts, event_id, bit mask] of events an ``unless`` condition counts;
    * ``bday``: birthday sequence → "birthday@zone" its pending run was scheduled for;
    * ``bday_done``: birthday sequence → the last year whose greeting was decided;
    * ``first_ts``: the earliest event time seen (birthdays after it are greeted).

    ``act_floor`` / ``trig_floor``: pain points / triggers at or before these times have been
    forgotten and are treated as already handled (so a late replay never acts twice).
    """

    #: the care clock: the latest ``now`` given to :meth:`CareEngine.advance`. Pruning is
    #: relative to it, never to the newest event: in a backfill events run far ahead of the
    #: watermark, and a step still to be decided needs the marks and sends of its time.
    max_ts: float = float("-inf")
    act_floor: float = float("-inf")
    trig_floor: float = float("-inf")
    acted: dict[str, list[Any]] = field(default_factory=dict)
    sends: list[float] = field(default_factory=list)
    cooldown: dict[str, list[Any]] = field(default_factory=dict)
    opt: dict[str, list[list[Any]]] = field(default_factory=dict)
    held: list[list[Any]] = field(default_factory=list)
    pending: list[list[Any]] = field(default_factory=list)
    triggers: dict[str, float] = field(default_factory=dict)
    marks: list[list[Any]] = field(default_factory=list)
    bday: dict[str, str] = field(default_factory=dict)
    bday_done: dict[str, int] = field(default_factory=dict)
    first_ts: float = float("inf")
    #: derived values remembered between calls (never persisted, not part of equality)
    memo: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Compact plain JSON (empty parts left out), for the Faust changelog."""
        d: dict[str, Any] = {}
        for key, v in (("m", self.max_ts), ("af", self.act_floor), ("tf", self.trig_floor)):
            if v != float("-inf"):
                d[key] = v
        for key, v in (
            ("a", self.acted),
            ("s", self.sends),
            ("c", self.cooldown),
            ("o", self.opt),
            ("h", self.held),
            ("p", self.pending),
            ("t", self.triggers),
            ("k", self.marks),
            ("b", self.bday),
            ("bd", self.bday_done),
        ):
            if v:
                d[key] = v
        if self.first_ts != float("inf"):
            d["f"] = self.first_ts
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CareState:
        """Inverse of :meth:`to_json` (copies, so the source dict is never shared)."""
        ninf = float("-inf")
        return cls(
            max_ts=d.get("m", ninf),
            act_floor=d.get("af", ninf),
            trig_floor=d.get("tf", ninf),
            acted={k: list(v) for k, v in d.get("a", {}).items()},
            sends=list(d.get("s", ())),
            cooldown={k: list(v) for k, v in d.get("c", {}).items()},
            opt={k: [list(x) for x in v] for k, v in d.get("o", {}).items()},
            held=[list(x) for x in d.get("h", ())],
            pending=[list(x) for x in d.get("p", ())],
            triggers=dict(d.get("t", {})),
            marks=[list(x) for x in d.get("k", ())],
            bday=dict(d.get("b", {})),
            bday_done=dict(d.get("bd", {})),
            first_ts=d.get("f", float("inf")),
        )


# -- the engine ------------------------------------------------------------------------------


class CareEngine:
    """Applies one care policy to customer states. Holds no per-customer data itself."""

    def __init__(self, policy: CarePolicy) -> None:
        self.policy = policy
        d = policy.defaults
        self.per_day = d.caps.per_day
        self.per_week = d.caps.per_week
        self._exempt = frozenset(d.caps_exempt)
        default_cooldown = duration_seconds(d.cooldown, zero_ok=True)
        self.default_cooldown = default_cooldown
        qh = d.quiet_hours
        self._quiet = (
            None
            if qh is None or not qh.channels
            else (_hhmm_seconds(qh.start), _hhmm_seconds(qh.end), frozenset(qh.channels))
        )
        self._acts: dict[tuple[str, str, str, str | None], _Act] = {}
        self._rules: dict[str, _Rule] = {}
        for e in policy.care:
            cd = (
                default_cooldown
                if e.cooldown is None
                else duration_seconds(e.cooldown, zero_ok=True)
            )
            tiers = {
                t: tuple(self._act(a.kind, a.template, a.priority, a.channel) for a in acts)
                for t in TIERS
                if (acts := _actions(getattr(e.tiers, t)))
            }
            self._rules[e.rule] = _Rule(cd, tiers)
        self._seqs: list[_Seq] = []
        self._steps: dict[tuple[str, str], _Step] = {}
        self._unless: list[tuple[int, Predicate, Callable[[str, str], bool]]] = []
        unless_span = 0.0
        for s in policy.sequences:
            birthday = s.trigger == "birthday"
            steps: list[_Step] = []
            for st in s.steps:
                bit = 0
                if st.unless is not None:
                    bit = 1 << len(self._unless)
                    fn, could = _any(st.unless.match)
                    self._unless.append((bit, fn, could))
                    unless_span = max(unless_span, duration_seconds(st.after, zero_ok=True))
                step = _Step(
                    seq=s.id,
                    id=st.id,
                    label=f"{s.id}:{st.id}",
                    after=duration_seconds(st.after, zero_ok=True),
                    at_local=None if st.at_local is None else _hhmm_seconds(st.at_local),
                    tiers=None if st.tiers is None else frozenset(st.tiers),
                    unless_bit=bit,
                    min_count=st.unless.min_count if st.unless is not None else 1,
                    act=self._act(st.kind, st.template, st.priority, st.channel),
                    birthday=birthday,
                )
                steps.append(step)
                self._steps[(s.id, st.id)] = step
            matcher = None if birthday else s.trigger
            assert matcher is None or isinstance(matcher, Matcher)
            self._seqs.append(
                _Seq(
                    id=s.id,
                    trigger=None if matcher is None else matcher.matches,
                    matcher=matcher,
                    tiers=None if s.tiers is None else frozenset(s.tiers),
                    steps=tuple(steps),
                    span=max(x.after for x in steps)
                    + (DAY if any(x.at_local for x in steps) else 0),
                )
            )
        self._bday_seqs = [s for s in self._seqs if s.trigger is None]
        max_span = max((s.span for s in self._seqs), default=0.0)
        # Triggers are remembered past their run; unless-marks as long as a step can count them.
        self._trig_keep = max_span + SEND_KEEP
        self._mark_keep = unless_span + SEND_KEEP
        self._max_cooldown = max([default_cooldown, *(r.cooldown for r in self._rules.values())])
        # (channel, type) -> what could apply; filled lazily, bounded by the schema's pairs.
        self._trig_cache: dict[tuple[Any, Any], tuple[_Seq, ...]] = {}
        self._mark_cache: dict[tuple[Any, Any], tuple[tuple[int, Predicate], ...]] = {}
        #: counters for metrics: replays ignored, unknown rules, retriggers while running...
        self.stats: dict[str, int] = {
            "replayed": 0,
            "stale": 0,
            "no_policy": 0,
            "retrigger": 0,
            "step_gone": 0,
        }

    def _act(self, kind: str, template: str, priority: str, channel: str | None) -> _Act:
        key = (kind, template, priority, channel)
        a = self._acts.get(key)
        if a is None:
            a = self._acts[key] = _Act(
                kind, template, priority, channel, _KIND_BITS[kind], kind in self._exempt
            )
        return a

    # --- inputs ----------------------------------------------------------------------------
    def on_event(
        self, st: CareState, customer_id: str, profile: dict[str, Any], ev: Event, ts: float
    ) -> list[Record]:
        """One touchpoint of this customer at event time ``ts``: records opt-outs, counts
        events for ``unless`` conditions, starts triggered sequences and (re)schedules the
        birthday greeting. Decides nothing itself (returns ``[]``): steps, even one due at the
        trigger, wait for :meth:`advance` past their time, when every event up to it has
        arrived."""
        if ts < st.first_ts:
            st.first_ts = ts
        ch, ty = ev.get("channel"), ev.get("type")
        if ty in OPT_OUT_TYPES or ty in OPT_IN_TYPES:
            self._opt(st, _EVENT_CONTACT_CHANNEL.get(ch, ch), ty in OPT_OUT_TYPES, ts)
        key = (ch, ty)
        marks = self._mark_cache.get(key)
        if marks is None:
            marks = self._mark_cache[key] = tuple(
                (bit, fn)
                for bit, fn, could in self._unless
                if isinstance(ch, str) and isinstance(ty, str) and could(ch, ty)
            )
        if marks:
            mask = 0
            for bit, fn in marks:
                if fn(ev):
                    mask |= bit
            if mask:
                self._mark(st, ts, ev["event_id"], mask)
        out: list[Record] = []
        seqs = self._trig_cache.get(key)
        if seqs is None:
            seqs = self._trig_cache[key] = tuple(
                s
                for s in self._seqs
                if s.matcher is not None
                and isinstance(ch, str)
                and isinstance(ty, str)
                and s.matcher.could_match(ch, ty)
            )
        for seq in seqs:
            if seq.trigger(ev):  # type: ignore[misc]
                self._start(st, customer_id, profile, seq, ev["event_id"], ts, out)
        if self._bday_seqs and (st.bday or profile.get("birthday")):
            self._birthdays(st, customer_id, profile)
        return out

    def on_pain_point(
        self, st: CareState, profile: dict[str, Any], pp: dict[str, Any]
    ) -> list[Record]:
        """Decide the care actions for one pain point (the policy for its rule × the
        customer's tier). A re-delivered pain point returns ``[]``: each of its kinds was
        decided once; a kind the policy added since is suppressed as ``duplicate``."""
        rule = self._rules.get(pp["rule_id"])
        if rule is None:
            self.stats["no_policy"] += 1
            return []
        t = _epoch(pp["detected_at"])
        ppid = pp["pain_point_id"]
        prev = st.acted.get(ppid)
        if prev is None and t <= st.act_floor:
            self.stats["stale"] += 1  # older than what we remember: may have been acted on
            return []
        tier = profile.get("tier") or "C"
        acts = rule.tiers.get(tier)
        if not acts:
            return []
        mask = 0 if prev is None else prev[1]
        out: list[Record] = []
        cid, rid, jid = pp["customer_id"], pp["rule_id"], pp.get("journey_id")
        for act in acts:
            if mask & act.bit:
                continue  # decided before: a replay, nothing new to say
            aid = _uuid(f"care:{ppid}:{act.kind}")
            if prev is not None:
                # The pain point was acted on already; "never two actions for one pain point".
                out.append(
                    self._record(
                        aid, ppid, rid, jid, None, cid, tier, act, "suppressed", "duplicate", t, t
                    )
                )
            else:
                out.append(
                    self._decide(
                        st, t, cid, tier, profile, act, aid, ppid, rid, jid, None, rule.cooldown
                    )
                )
            mask |= act.bit
        if prev is None:
            st.acted[ppid] = [t, mask]
            self._bound_acted(st)
        elif out:
            prev[1] = mask
        else:
            self.stats["replayed"] += 1
        return out

    def advance(
        self, st: CareState, customer_id: str, profile: dict[str, Any], now: float
    ) -> list[Record]:
        """Move this customer to event time ``now`` (the stream's watermark): release held
        actions and decide sequence steps whose due time is ``< now``, in (due, action_id)
        order. Each is decided at its own due time, so the records do not depend on how
        often this is called."""
        if now > st.max_ts:
            st.max_ts = now
        heap: list[tuple[float, str, int, list[Any]]] = []
        # strictly before ``now``: more events at exactly ``now`` may still come
        if st.held and min([h[0] for h in st.held]) < now:
            keep = []
            for h in st.held:
                if h[0] < now:
                    heap.append((h[0], h[1], 0, h))
                else:
                    keep.append(h)
            st.held = keep
        if st.pending and min([p[0] for p in st.pending]) < now:
            keep = []
            for p in st.pending:
                if p[0] < now:
                    heap.append((p[0], p[1], 1, p))
                else:
                    keep.append(p)
            st.pending = keep
        out: list[Record] = []
        if heap:
            if st.memo:
                st.memo.pop("", None)  # pending runs and years done change: birthdays again
            heapq.heapify(heap)
            self._run(st, customer_id, profile, heap, now, out)
            if self._bday_seqs and profile.get("birthday"):
                self._birthdays(st, customer_id, profile)  # next year's greeting
        self._prune(st)
        return out

    def next_due(self, st: CareState) -> float | None:
        """The earliest due time of a held action or step (None: nothing); :meth:`advance`
        decides it once ``now`` is past it."""
        due = min([h[0] for h in st.held]) if st.held else None
        if st.pending:
            p = min([p[0] for p in st.pending])
            if due is None or p < due:
                due = p
        return due

    # --- deciding --------------------------------------------------------------------------
    def _run(
        self,
        st: CareState,
        cid: str,
        profile: dict[str, Any],
        heap: list[tuple[float, str, int, list[Any]]],
        now: float,
        out: list[Record],
    ) -> None:
        tier = profile.get("tier") or "C"
        while heap:
            due, aid, what, item = heapq.heappop(heap)
            if what == 0:  # a held action: decide again at its release time
                _, _, kind, template, priority, channel, ppid, rid, jid, seq = item
                act = self._act(kind, template, priority, channel)
                cooldown = 0.0
                if rid is not None:
                    r = self._rules.get(rid)
                    cooldown = r.cooldown if r is not None else self.default_cooldown
                rec = self._decide(
                    st, due, cid, tier, profile, act, aid, ppid, rid, jid, seq, cooldown
                )
            else:
                _, _, seq_id, step_id, trig_id, trig_ts = item
                step = self._steps.get((seq_id, step_id))
                if step is None:  # the policy no longer has this step
                    self.stats["step_gone"] += 1
                    continue
                if step.birthday:
                    if st.bday.get(step.seq) != _birthday_key(profile):
                        # the profile's birthday or zone changed since: not this customer's day
                        self.stats["step_gone"] += 1
                        continue
                    year = int(trig_id)
                    if year > st.bday_done.get(step.seq, year - 1):
                        st.bday_done[step.seq] = year
                act = step.act
                if (
                    step.unless_bit
                    and self._count(st, step.unless_bit, trig_id, trig_ts, due) >= step.min_count
                ):
                    rec = self._record(
                        aid,
                        None,
                        None,
                        None,
                        step.label,
                        cid,
                        tier,
                        act,
                        "suppressed",
                        "condition",
                        due,
                        due,
                    )
                else:
                    rec = self._decide(
                        st, due, cid, tier, profile, act, aid, None, None, None, step.label, 0.0
                    )
            out.append(rec)
            if rec["status"] == "held" and st.held and st.held[-1][0] < now:
                # held past a release time that has already come: decide it in this round
                h = st.held.pop()
                heapq.heappush(heap, (h[0], h[1], 0, h))

    def _decide(
        self,
        st: CareState,
        t: float,
        cid: str,
        tier: str,
        profile: dict[str, Any],
        act: _Act,
        aid: str,
        ppid: str | None,
        rid: str | None,
        jid: str | None,
        seq: str | None,
        cooldown: float,
    ) -> Record:
        """Apply the guards (after the duplicate check) at decision time ``t``."""
        ch = act.channel
        reason: str | None = None
        if ch is not None:
            consents = profile.get("consents")
            if consents and consents.get(ch) is False:
                reason = "no_consent"
            elif st.opt and self._opted_out(st, ch, t):
                reason = "opted_out"
        if reason is None and rid is not None and cooldown > 0:
            c = st.cooldown.get(rid)
            if c is not None and c[1] != ppid and abs(t - c[0]) < cooldown:
                reason = "cooldown"
        sends = st.sends
        if reason is None and not act.exempt and sends:
            if _capped(sends, t, DAY, self.per_day):
                reason = "cap_day"
            elif _capped(sends, t, WEEK, self.per_week):
                reason = "cap_week"
        if reason is not None:
            return self._record(
                aid, ppid, rid, jid, seq, cid, tier, act, "suppressed", reason, t, t
            )
        if self._quiet is not None and ch in self._quiet[2]:
            end = self._quiet_end(t, _zone(profile.get("timezone")))
            if end is not None:
                if len(st.held) >= MAX_HELD:
                    # A bound on the state, far above any sensible daily cap: the rest are capped.
                    return self._record(
                        aid, ppid, rid, jid, seq, cid, tier, act, "suppressed", "cap_day", t, t
                    )
                st.held.append(
                    [end, aid, act.kind, act.template, act.priority, ch, ppid, rid, jid, seq]
                )
                return self._record(
                    aid, ppid, rid, jid, seq, cid, tier, act, "held", "quiet_hours", end, t
                )
        if not act.exempt:
            bisect.insort(sends, t)
            if sends[0] <= st.max_ts - SEND_KEEP or len(sends) > MAX_SENDS:
                del sends[
                    : max(bisect.bisect_right(sends, st.max_ts - SEND_KEEP), len(sends) - MAX_SENDS)
                ]
        if rid is not None:
            c = st.cooldown.get(rid)
            if c is None or t >= c[0]:
                st.cooldown[rid] = [t, ppid]
                if len(st.cooldown) > 1:
                    self._prune_cooldown(st)
        return self._record(aid, ppid, rid, jid, seq, cid, tier, act, "sent", None, t, t)

    @staticmethod
    def _record(
        aid: str,
        ppid: str | None,
        rid: str | None,
        jid: str | None,
        seq: str | None,
        cid: str,
        tier: str,
        act: _Act,
        status: str,
        reason: str | None,
        due: float,
        decided: float,
    ) -> Record:
        return {
            "action_id": aid,
            "pain_point_id": ppid,
            "rule_id": rid,
            "journey_id": jid,
            "sequence": seq,
            "customer_id": cid,
            "tier": tier,
            "kind": act.kind,
            "template": act.template,
            "priority": act.priority,
            "channel": act.channel,
            "status": status,
            "reason": reason,
            "due_at": iso(due),
            "decided_at": iso(decided),
        }

    def _quiet_end(self, t: float, tz: tzinfo) -> float | None:
        """End of the quiet hours ``t`` falls in (local time), None if ``t`` is not quiet."""
        start, end, _ = self._quiet  # type: ignore[misc]
        lt = datetime.fromtimestamp(t, tz)
        sod = lt.hour * 3600 + lt.minute * 60 + lt.second + lt.microsecond / 1e6
        day = lt.date()
        if start < end:
            if not start <= sod < end:
                return None
        elif sod >= start:
            day += timedelta(days=1)  # across midnight: ends tomorrow morning
        elif sod >= end:
            return None
        due = _local_instant(tz, day, end)
        if due <= t:  # the repeated hour of a fall-back night: the second occurrence
            due = _local_instant(tz, day, end, fold=1)
        return due if due > t else None

    @staticmethod
    def _opted_out(st: CareState, ch: str, t: float) -> bool:
        """Whether the last opt-out/in of ``ch`` at or before ``t`` was an opt-out."""
        flips = st.opt.get(ch)
        if not flips:
            return False
        out = False
        for ts, flag in flips:
            if ts > t:
                break
            out = flag == 1
        return out

    @staticmethod
    def _opt(st: CareState, ch: Any, out: bool, ts: float) -> None:
        if not isinstance(ch, str):
            return
        flips = st.opt.setdefault(ch, [])
        entry = [ts, 1 if out else 0]
        if entry in flips:
            return  # a replayed event
        bisect.insort(flips, entry)  # at one instant an opt-out sorts after (wins over) an opt-in
        if len(flips) > MAX_OPT:
            del flips[: len(flips) - MAX_OPT]

    # --- sequences -------------------------------------------------------------------------
    def _start(
        self,
        st: CareState,
        cid: str,
        profile: dict[str, Any],
        seq: _Seq,
        eid: str,
        ts: float,
        out: list[Record],
    ) -> None:
        """A trigger event: schedule the run's steps (decided by :meth:`advance`)."""
        key = f"{seq.id}:{eid}"
        if key in st.triggers or ts <= st.trig_floor:
            return  # replayed (or forgotten, hence treated as handled)
        st.triggers[key] = ts
        self._bound_triggers(st)
        tier = profile.get("tier") or "C"
        if seq.tiers is not None and tier not in seq.tiers:
            return
        if any(p[2] == seq.id for p in st.pending):
            # One run per sequence at a time: a second trial_started mid-trial restarts nothing.
            self.stats["retrigger"] += 1
            return
        tz = _zone(profile.get("timezone"))
        # Every step waits for :meth:`advance`, even one due at the trigger: by then every
        # event up to its time has arrived (an opt-out from another channel may be late).
        for step in seq.steps:
            if step.tiers is not None and tier not in step.tiers:
                continue
            due = self._step_due(step, ts, tz)
            p = [due, _uuid(f"care-seq:{cid}:{seq.id}:{step.id}:{eid}"), seq.id, step.id, eid, ts]
            st.pending.append(p)

    @staticmethod
    def _step_due(step: _Step, anchor: float, tz: tzinfo) -> float:
        """When a step is due: ``after`` the anchor, or at ``at_local`` on the local day that
        is ``after`` (wall-clock) past the anchor; never before the anchor."""
        if step.at_local is None:
            return anchor + step.after
        wall = datetime.fromtimestamp(anchor, tz).replace(tzinfo=None) + timedelta(
            seconds=step.after
        )
        return max(_local_instant(tz, wall.date(), step.at_local), anchor)

    def _birthdays(self, st: CareState, cid: str, profile: dict[str, Any]) -> None:
        """Keep the next birthday run of each birthday sequence scheduled: the first year
        after the last one decided whose earliest step comes after the customer's first
        event. Depends on the set of events seen, not their order (a late event that moves
        the first event earlier can bring an earlier birthday back).

        It runs on every event of a customer with a birthday, so once it has brought the
        state to its fixed point for given inputs it is skipped until one of them changes:
        the profile's birthday, zone or tier, the first event time, or (through
        :meth:`advance`, which forgets the mark) the pending runs and the years done."""
        token = (
            cid,
            profile.get("birthday"),
            profile.get("timezone"),
            profile.get("tier"),
            st.first_ts,
        )
        memo = st.memo
        if memo is None:
            memo = st.memo = {}
        elif memo.get("") == token:
            return
        md = _birthday(profile.get("birthday"))
        key = _birthday_key(profile)
        tier = profile.get("tier") or "C"
        for seq in self._bday_seqs:
            run = [p for p in st.pending if p[2] == seq.id]
            if run and st.bday.get(seq.id) != key:
                # birthday or zone changed: the scheduled run is for the wrong day
                st.pending = [p for p in st.pending if p[2] != seq.id]
                run = []
            if md is None or st.first_ts == float("inf"):
                continue
            if seq.tiers is not None and tier not in seq.tiers:
                continue
            steps = [s for s in seq.steps if s.tiers is None or tier in s.tiers]
            if not steps:
                continue
            zone = profile.get("timezone") or "UTC"
            done = st.bday_done.get(seq.id)
            # The plan is a pure function of these; this runs on every event of a customer
            # with a birthday, so it is remembered per state (not persisted).
            mkey = (cid, md, zone, tier, st.first_ts, done)
            hit = memo.get(seq.id)
            if hit is not None and hit[0] == mkey:
                plan = hit[1]
            else:
                plan = self._birthday_plan(seq, cid, steps, md, _zone(zone), st.first_ts, done)
                memo[seq.id] = (mkey, plan)
            if plan is None:  # pragma: no cover - a birthday comes every year
                continue
            year, entries = plan
            if run and int(run[0][4]) <= year:
                continue  # already scheduled (or an earlier year is still running)
            st.pending = [p for p in st.pending if p[2] != seq.id]
            st.pending.extend(list(e) for e in entries)
            st.bday[seq.id] = key
        memo[""] = token

    def _birthday_plan(
        self,
        seq: _Seq,
        cid: str,
        steps: list[_Step],
        md: tuple[int, int],
        tz: tzinfo,
        first_ts: float,
        done: int | None,
    ) -> tuple[int, tuple[tuple[Any, ...], ...]] | None:
        """The year of the next birthday run and its pending entries (see :meth:`_birthdays`)."""
        first = datetime.fromtimestamp(first_ts, tz).year - 1
        if done is not None:
            first = max(first, done + 1)
        for year in range(first, first + 3):
            anchor = _local_instant(tz, _birthday_in(year, *md), 0)
            dues = [(self._step_due(s, anchor, tz), s) for s in steps]
            if min(d for d, _ in dues) > first_ts:
                break
        else:  # pragma: no cover - a birthday comes every year
            return None
        return year, tuple(
            (due, _uuid(f"care-seq:{cid}:{seq.id}:{s.id}:{year}"), seq.id, s.id, str(year), anchor)
            for due, s in dues
        )

    def _count(self, st: CareState, bit: int, trig_id: str, t0: float, t1: float) -> int:
        """Distinct events with ``bit`` in ``[t0, t1]``, the trigger event itself excluded."""
        n = 0
        marks = st.marks
        i = bisect.bisect_left(marks, [t0])
        while i < len(marks):
            ts, eid, mask = marks[i]
            if ts > t1:
                break
            if mask & bit and eid != trig_id:
                n += 1
            i += 1
        return n

    def _mark(self, st: CareState, ts: float, eid: str, mask: int) -> None:
        marks = st.marks
        for m in marks:
            if m[1] == eid:
                return  # a replayed event counts once
        bisect.insort(marks, [ts, eid, mask])
        cut = st.max_ts - self._mark_keep
        if marks[0][0] < cut or len(marks) > MAX_MARKS:
            n = bisect.bisect_left(marks, [cut])
            del marks[: max(n, len(marks) - MAX_MARKS)]

    # --- bounds ----------------------------------------------------------------------------
    def _bound_acted(self, st: CareState) -> None:
        acted = st.acted
        cut = st.max_ts - ACT_KEEP
        # dicts keep insertion order, which is about time order: a cheap "anything old?"
        if next(iter(acted.values()))[0] <= cut:
            st.acted = acted = {k: v for k, v in acted.items() if v[0] > cut}
            st.act_floor = max(st.act_floor, cut)
        while len(acted) > MAX_ACTED:
            # forget the oldest; anything at or before it now counts as handled
            k = min(acted, key=lambda x: acted[x][0])
            st.act_floor = max(st.act_floor, acted.pop(k)[0])

    def _bound_triggers(self, st: CareState) -> None:
        trig = st.triggers
        cut = st.max_ts - self._trig_keep
        if next(iter(trig.values())) <= cut:
            st.triggers = trig = {k: v for k, v in trig.items() if v > cut}
            st.trig_floor = max(st.trig_floor, cut)
        while len(trig) > MAX_TRIGGERS:
            k = min(trig, key=trig.__getitem__)
            st.trig_floor = max(st.trig_floor, trig.pop(k))

    def _prune_cooldown(self, st: CareState) -> None:
        cut = st.max_ts - self._max_cooldown - DAY
        if any(v[0] < cut for v in st.cooldown.values()):
            st.cooldown = {k: v for k, v in st.cooldown.items() if v[0] >= cut}

    def _prune(self, st: CareState) -> None:
        """Forget what no window can need any more (cheap when there is nothing to do)."""
        now = st.max_ts
        s = st.sends
        if s and s[0] <= now - SEND_KEEP:
            del s[: bisect.bisect_right(s, now - SEND_KEEP)]
        if st.acted:
            self._bound_acted(st)
        if st.triggers:
            self._bound_triggers(st)
        if st.cooldown:
            self._prune_cooldown(st)
        if st.marks and st.marks[0][0] < now - self._mark_keep:
            del st.marks[: bisect.bisect_left(st.marks, [now - self._mark_keep])]
