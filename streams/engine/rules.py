"""Pain-point rule definitions: a YAML rule library, validated with pydantic, compiled to
plain closures for the hot path.

Four kinds (docs/design.md, "Pain-point rules"):

* ``threshold`` - one event matches ``match``;
* ``count``     - at least ``min_count`` events matching ``match`` within ``within``;
* ``sequence``  - an event matching ``first``, then one matching ``then`` within ``within``;
* ``absence``   - an event matching ``first`` and no event matching ``missing`` within
  ``within``.

This module only *defines* rules and decides whether one event matches one side of a rule;
windows, state and firing belong to the journey engine. Nothing here is evaluated as code:
conditions are structured ``{field, op, value}`` triples turned into closures on load, so
:meth:`Matcher.matches` does no parsing, regex compilation or pydantic work per call.

The file format is documented in ``docs/rules.md``; the built-in library is
``streams/engine/builtin_rules.yaml``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

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

from schemas.touchpoint import CHANNEL_MODELS

__all__ = [
    "KINDS",
    "OPS",
    "Condition",
    "Matcher",
    "Rule",
    "RuleFileError",
    "RuleSet",
    "builtin_rules",
    "load_rules",
    "parse_duration",
]

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

#: Condition operators, in the order error messages list them.
OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "exists")
#: Rule kinds and the matcher / parameter fields each one requires.
KINDS: dict[str, tuple[str, ...]] = {
    "threshold": ("match",),
    "count": ("match", "min_count", "within"),
    "sequence": ("first", "then", "within"),
    "absence": ("first", "missing", "within"),
}
_KIND_FIELDS = frozenset(f for fields in KINDS.values() for f in fields)

#: Event types per channel, from the touchpoint schema (typos in rules are load errors).
CHANNEL_TYPES: dict[str, frozenset[str]] = {
    str(ch): frozenset(str(t) for t in model.model_fields["type"].annotation)  # type: ignore[union-attr]
    for ch, model in CHANNEL_MODELS.items()
}
_ALL_TYPES = frozenset().union(*CHANNEL_TYPES.values())

BUILTIN_FILE = "builtin_rules.yaml"
_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_FIELD_RE = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")
_DURATION_RE = re.compile(
    r"^(?:(?P<w>\d+(?:\.\d+)?)w)?(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)
_UNIT_SECONDS = {"w": 604_800.0, "d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
_NUM_TYPES = frozenset({int, float})
_MISSING: Any = object()  # "value" not given in a condition


class RuleFileError(Exception):
    """A rule file that cannot be used; ``str(exc)`` is one line naming file, rule, field."""


def _err(msg: str) -> PydanticCustomError:
    # The message travels in the context so braces in user input are never format fields.
    return PydanticCustomError("rule_error", "{msg}", {"msg": msg})


def _is_num(x: object) -> bool:
    """A real number that is not a bool."""
    return type(x) in _NUM_TYPES or (isinstance(x, int | float) and not isinstance(x, bool))


def _show(v: object, limit: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def parse_duration(value: object) -> float:
    """Seconds in ``7d``, ``24h``, ``30m``, ``45s``, ``1d12h``, ``2w`` or a number of seconds.

    Raises ``ValueError`` for anything else or a duration that is not > 0.
    """
    if _is_num(value):
        seconds = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str):
        m = _DURATION_RE.match(value.strip().lower())
        if not value.strip() or m is None:
            raise ValueError(
                f"{_show(value)} is not a duration (use e.g. 45s, 30m, 24h, 7d, 1d12h "
                "or a number of seconds)"
            )
        seconds = sum(float(n) * _UNIT_SECONDS[u] for u, n in m.groupdict().items() if n)
    else:
        raise ValueError(f"{_show(value)} is not a duration (use e.g. 24h, 7d or seconds)")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be > 0, got {_show(value)}")
    return seconds


# -- field access and condition compilation --------------------------------------------------


def _getter(path: str) -> Callable[[Event], Any]:
    """Value of ``path`` in an event, None when absent. A plain name falls back to
    ``attributes``; a dotted path walks nested mappings."""
    parts = path.split(".")
    if len(parts) == 1:
        name = parts[0]

        def get_top(e: Event) -> Any:
            v = e.get(name)
            if v is None:
                a = e.get("attributes")
                if isinstance(a, dict):
                    return a.get(name)
            return v

        return get_top
    if len(parts) == 2:
        p0, p1 = parts

        def get_two(e: Event) -> Any:
            a = e.get(p0)
            return a.get(p1) if isinstance(a, dict) else None

        return get_two

    def get_path(e: Event) -> Any:
        v: Any = e
        for p in parts:
            if not isinstance(v, dict):
                return None
            v = v.get(p)
        return v

    return get_path


def _member_fn(values: list[Any]) -> Callable[[Any], bool]:
    """Strict membership: ``True`` is not ``1``, ``"1"`` is not ``1``."""
    bools = frozenset(v for v in values if isinstance(v, bool))
    nums = frozenset(v for v in values if _is_num(v))
    strs = frozenset(v for v in values if isinstance(v, str))

    def member(x: Any) -> bool:
        if x is True or x is False:
            return x in bools
        if _is_num(x):
            return x in nums
        if isinstance(x, str):
            return x in strs
        return False

    return member


def _compile_condition(field: str, op: str, value: Any) -> Predicate:
    """A predicate for one validated condition. A missing (absent or null) field makes
    every op false except ``exists: false``."""
    get = _getter(field)
    v = value
    if op == "exists":
        if v:
            return lambda e: get(e) is not None
        return lambda e: get(e) is None
    if op in ("eq", "ne"):
        if isinstance(v, bool):
            if op == "eq":
                return lambda e: get(e) is v
            return lambda e: (x := get(e)) is not None and x is not v
        if _is_num(v):
            if op == "eq":
                return lambda e: _is_num(x := get(e)) and x == v
            return lambda e: (x := get(e)) is not None and not (_is_num(x) and x == v)
        if op == "eq":  # string
            return lambda e: (x := get(e)) == v and isinstance(x, str)
        return lambda e: (x := get(e)) is not None and not (isinstance(x, str) and x == v)
    if op == "gt":
        return lambda e: _is_num(x := get(e)) and x > v
    if op == "gte":
        return lambda e: _is_num(x := get(e)) and x >= v
    if op == "lt":
        return lambda e: _is_num(x := get(e)) and x < v
    if op == "lte":
        return lambda e: _is_num(x := get(e)) and x <= v
    if op in ("in", "not_in"):
        member = _member_fn(v)
        if op == "in":
            return lambda e: (x := get(e)) is not None and member(x)
        return lambda e: (x := get(e)) is not None and not member(x)
    if op == "contains":
        needles = tuple(dict.fromkeys(s.casefold() for s in ([v] if isinstance(v, str) else v)))
        if len(needles) == 1:
            needle = needles[0]
            return lambda e: isinstance(x := get(e), str) and needle in x.casefold()
        return lambda e: (
            isinstance(x := get(e), str) and any(map(x.casefold().__contains__, needles))
        )
    raise AssertionError(f"unvalidated op {op!r}")  # pragma: no cover


def _check_value(op: str, v: Any) -> Any:
    """Validate a condition value for its op; returns the (normalized) value."""
    if v is None:
        raise _err("null is not a value; use op 'exists' to test for a missing field")
    scalar = isinstance(v, str | bool) or (_is_num(v) and math.isfinite(v))
    if op == "exists":
        if not isinstance(v, bool):
            raise _err(f"must be true or false for op 'exists', got {_show(v)}")
    elif op in ("eq", "ne"):
        if not scalar:
            raise _err(f"must be a string, number or true/false for op '{op}', got {_show(v)}")
    elif op in ("gt", "gte", "lt", "lte"):
        if not (_is_num(v) and math.isfinite(v)):
            raise _err(f"must be a number for op '{op}', got {_show(v)}")
    elif op in ("in", "not_in"):
        if not isinstance(v, list) or not v:
            raise _err(f"must be a non-empty list for op '{op}', got {_show(v)}")
        for i, item in enumerate(v):
            if not (isinstance(item, str | bool) or (_is_num(item) and math.isfinite(item))):
                raise _err(f"[{i}]: must be a string, number or true/false, got {_show(item)}")
    elif op == "contains":
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not items:
            raise _err(f"must be a string or a non-empty list of strings, got {_show(v)}")
        for item in items:
            if not isinstance(item, str) or not item:
                raise _err(f"must be non-empty strings for op 'contains', got {_show(item)}")
    return v


# -- models ----------------------------------------------------------------------------------


class _Strict(BaseModel):
    """Frozen, unknown keys rejected with the list of allowed ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise _err(
                    f"unknown key {_show(unknown[0])} (allowed: {', '.join(cls.model_fields)})"
                )
        return data

    # Compiled predicates live in ``__pydantic_private__``; they take no part in equality
    # and are rebuilt after unpickling instead of being pickled.
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> dict[Any, Any]:
        return {**super().__getstate__(), "__pydantic_private__": None}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self.model_post_init(None)


class Condition(_Strict):
    """``{field, op, value}``: one test on one event field."""

    field: str
    op: str
    value: Any = Field(default=_MISSING, validate_default=True)

    @field_validator("field", mode="before")
    @classmethod
    def _field(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _FIELD_RE.match(v):
            raise _err(
                f"must be a field name or dotted path like attributes.campaign, got {_show(v)}"
            )
        return v

    @field_validator("op", mode="before")
    @classmethod
    def _op(cls, v: Any) -> Any:
        if v not in OPS or not isinstance(v, str):
            raise _err(f"{_show(v)} is not one of {', '.join(OPS)}")
        return v

    @field_validator("value")
    @classmethod
    def _value(cls, v: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        if op is None:  # the op itself is invalid; that error is reported
            return None if v is _MISSING else v
        if v is _MISSING:
            if op == "exists":
                return True
            raise _err(f"required for op '{op}'")
        return _check_value(op, v)

    def model_post_init(self, context: Any, /) -> None:
        self.__pydantic_private__ = {"_fn": _compile_condition(self.field, self.op, self.value)}

    def test(self, event: Event) -> bool:
        """Whether ``event`` satisfies this condition."""
        return self.__pydantic_private__["_fn"](event)  # type: ignore[index]


def _names(v: Any, what: str) -> list[str]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        raise _err(f"must be {what} or a non-empty list of them, got {_show(v)}")
    for item in items:
        if not isinstance(item, str) or not item:
            raise _err(f"must be {what} or a non-empty list of them, got {_show(item)}")
    return items


class Matcher(_Strict):
    """Which events a rule side applies to: channel(s), type(s) and conditions (all must
    hold). Fields left out match anything."""

    channel: str | list[str] | None = None
    type: str | list[str] | None = None
    where: list[Condition] = Field(default_factory=list)

    @field_validator("channel", mode="before")
    @classmethod
    def _channel(cls, v: Any) -> Any:
        if v is None:
            return v
        for ch in _names(v, "a channel"):
            if ch not in CHANNEL_TYPES:
                raise _err(f"{ch!r} is not a channel ({', '.join(CHANNEL_TYPES)})")
        return v

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return v
        types = _names(v, "an event type")
        channels = info.data.get("channel")
        if "channel" not in info.data:  # invalid channel, already reported
            return v
        chs = [channels] if isinstance(channels, str) else (channels or list(CHANNEL_TYPES))
        allowed = frozenset().union(*(CHANNEL_TYPES[c] for c in chs))
        for t in types:
            if t not in allowed:
                scope = f"an event type of {'/'.join(chs)}" if channels else "an event type"
                raise _err(f"{t!r} is not {scope} ({', '.join(sorted(allowed))})")
        return v

    @property
    def channels(self) -> frozenset[str] | None:
        """The channels matched, None for any."""
        return _as_set(self.channel)

    @property
    def types(self) -> frozenset[str] | None:
        """The event types matched, None for any."""
        return _as_set(self.type)

    @property
    def is_empty(self) -> bool:
        """True when the matcher matches every event."""
        return self.channel is None and self.type is None and not self.where

    def could_match(self, channel: str, type_: str) -> bool:
        """Whether an event of this channel and type can match (conditions aside)."""
        chs, tys = self.channels, self.types
        return (chs is None or channel in chs) and (tys is None or type_ in tys)

    def model_post_init(self, context: Any, /) -> None:
        self.__pydantic_private__ = {"_fn": _compile_matcher(self)}

    def matches(self, event: Event) -> bool:
        """Whether ``event`` (a touchpoint dict) matches."""
        return self.__pydantic_private__["_fn"](event)  # type: ignore[index]


def _as_set(v: str | list[str] | None) -> frozenset[str] | None:
    if v is None:
        return None
    return frozenset([v] if isinstance(v, str) else v)


def _always(e: Event) -> bool:
    return True


def _never(e: Event) -> bool:
    return False


def _compile_matcher(m: Matcher) -> Predicate:
    chs, tys = m.channels, m.types
    conds = tuple(c.__pydantic_private__["_fn"] for c in m.where)  # type: ignore[index]
    # channel/type test, specialised; single values compare with == (fastest)
    head: Predicate | None
    if chs is None and tys is None:
        head = None
    elif chs is None:
        if len(tys) == 1:  # type: ignore[arg-type]
            (t,) = tys  # type: ignore[misc]
            head = lambda e: e.get("type") == t  # noqa: E731
        else:
            head = lambda e: e.get("type") in tys  # noqa: E731
    elif tys is None:
        if len(chs) == 1:
            (c,) = chs
            head = lambda e: e.get("channel") == c  # noqa: E731
        else:
            head = lambda e: e.get("channel") in chs  # noqa: E731
    elif len(chs) == 1 and len(tys) == 1:
        (c,), (t,) = chs, tys
        head = lambda e: e.get("type") == t and e.get("channel") == c  # noqa: E731
    elif len(chs) == 1:
        (c,) = chs
        head = lambda e: e.get("type") in tys and e.get("channel") == c  # noqa: E731
    else:
        head = lambda e: e.get("type") in tys and e.get("channel") in chs  # noqa: E731
    if not conds:
        return head or _always
    if head is None:
        if len(conds) == 1:
            return conds[0]
        return lambda e: all(c(e) for c in conds)
    if len(conds) == 1:
        c0 = conds[0]
        return lambda e: head(e) and c0(e)
    if len(conds) == 2:
        c0, c1 = conds
        return lambda e: head(e) and c0(e) and c1(e)
    return lambda e: head(e) and all(c(e) for c in conds)


def _compile_any(side: Matcher | list[Matcher] | None) -> Predicate:
    """One predicate for a matcher or an any-of list of matchers."""
    if side is None:
        return _never
    if isinstance(side, Matcher):
        return side.__pydantic_private__["_fn"]  # type: ignore[index]
    if len(side) == 1:
        return side[0].__pydantic_private__["_fn"]  # type: ignore[index]
    # plain channel+type matchers fold into one set of (channel, type) pairs
    pairs: set[tuple[str, str]] = set()
    rest: list[Predicate] = []
    for m in side:
        if m.channel is not None and m.type is not None and not m.where:
            pairs.update((c, t) for c in m.channels for t in m.types)  # type: ignore[union-attr]
        else:
            rest.append(m.__pydantic_private__["_fn"])  # type: ignore[index]
    fpairs = frozenset(pairs)
    if not rest:
        return lambda e: (e.get("channel"), e.get("type")) in fpairs
    if not fpairs:
        return lambda e: any(f(e) for f in rest)
    return lambda e: (e.get("channel"), e.get("type")) in fpairs or any(f(e) for f in rest)


def _side_tag(v: Any) -> str:
    return "__many__" if isinstance(v, list) else "__one__"


#: A matcher or a list of matchers (any of).
MatcherSpec = Annotated[
    Annotated[Matcher, Tag("__one__")] | Annotated[list[Matcher], Tag("__many__")],
    Discriminator(_side_tag),
]
_TAGS = frozenset({"__one__", "__many__"})


class Rule(_Strict):
    """One pain-point rule. Which of ``match/first/then/missing/min_count/within`` are
    required depends on ``kind`` (see :data:`KINDS`); the others must be left out."""

    id: str
    kind: str
    severity: int
    description: str = ""
    match: MatcherSpec | None = Field(default=None, validate_default=True)
    first: MatcherSpec | None = Field(default=None, validate_default=True)
    then: MatcherSpec | None = Field(default=None, validate_default=True)
    missing: MatcherSpec | None = Field(default=None, validate_default=True)
    min_count: int | None = Field(default=None, validate_default=True)
    within: str | float | None = Field(default=None, validate_default=True)

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, v: Any) -> Any:
        if not isinstance(v, str) or not _ID_RE.match(v):
            raise _err(f"must match ^[a-z][a-z0-9_]*$ (e.g. long_queue), got {_show(v)}")
        return v

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, v: Any) -> Any:
        if not isinstance(v, str) or v not in KINDS:
            raise _err(f"{_show(v)} is not one of {', '.join(KINDS)}")
        return v

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, v: Any) -> Any:
        if not (type(v) is int and 1 <= v <= 5):
            raise _err(f"must be an integer from 1 to 5, got {_show(v)}")
        return v

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, v: Any) -> Any:
        if v is None:
            return ""
        if not isinstance(v, str):
            raise _err(f"must be a string, got {_show(v)}")
        return v

    @field_validator("min_count", mode="before")
    @classmethod
    def _min_count(cls, v: Any, info: ValidationInfo) -> Any:
        _for_kind("min_count", v, info)
        if v is not None and not (type(v) is int and v >= 1):
            raise _err(f"must be an integer >= 1, got {_show(v)}")
        return v

    @field_validator("within", mode="before")
    @classmethod
    def _within(cls, v: Any, info: ValidationInfo) -> Any:
        _for_kind("within", v, info)
        if v is not None:
            try:
                parse_duration(v)
            except ValueError as exc:
                raise _err(str(exc)) from None
        return v

    @field_validator("match", "first", "then", "missing")
    @classmethod
    def _side(cls, v: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        assert name is not None
        _for_kind(name, v, info)
        if isinstance(v, list) and not v:
            raise _err("must be a matcher or a non-empty list of matchers")
        if name != "missing":
            for i, m in enumerate([v] if isinstance(v, Matcher) else v or []):
                if m.is_empty:
                    at = f"[{i}]: " if isinstance(v, list) else ""
                    raise _err(
                        f"{at}an empty matcher would match every event; set channel, type "
                        "or where (only 'missing' may be empty)"
                    )
        return v

    def model_post_init(self, context: Any, /) -> None:
        self.__pydantic_private__ = {
            "_match": _compile_any(self.match),
            "_first": _compile_any(self.first),
            "_then": _compile_any(self.then),
            "_missing": _compile_any(self.missing),
            "_within": None if self.within is None else parse_duration(self.within),
        }

    @property
    def within_seconds(self) -> float | None:
        """The window in seconds (count/sequence/absence), None for threshold rules."""
        return self.__pydantic_private__["_within"]  # type: ignore[index]

    def sides(self) -> dict[str, list[Matcher]]:
        """The rule's matchers by side (``match``/``first``/``then``/``missing``)."""
        out: dict[str, list[Matcher]] = {}
        for name in ("match", "first", "then", "missing"):
            v = getattr(self, name)
            if v is not None:
                out[name] = [v] if isinstance(v, Matcher) else list(v)
        return out

    def could_match(self, channel: str, type_: str) -> bool:
        """Whether an event of this channel and type can match any side of the rule."""
        return any(m.could_match(channel, type_) for ms in self.sides().values() for m in ms)

    def matches(self, event: Event) -> bool:
        """threshold/count: whether ``event`` matches ``match`` (False for other kinds)."""
        return self.__pydantic_private__["_match"](event)  # type: ignore[index]

    def matches_first(self, event: Event) -> bool:
        """sequence/absence: whether ``event`` matches ``first`` (the anchor)."""
        return self.__pydantic_private__["_first"](event)  # type: ignore[index]

    def matches_then(self, event: Event) -> bool:
        """sequence: whether ``event`` matches ``then``."""
        return self.__pydantic_private__["_then"](event)  # type: ignore[index]

    def matches_missing(self, event: Event) -> bool:
        """absence: whether ``event`` matches ``missing`` (it cancels the pending anchor)."""
        return self.__pydantic_private__["_missing"](event)  # type: ignore[index]

    def side_predicate(self, side: str) -> Predicate:
        """The compiled predicate of one side (``match``/``first``/``then``/``missing``):
        what :meth:`matches` and friends call, without the method call around it."""
        if side not in ("match", "first", "then", "missing"):
            raise ValueError(f"no rule side {side!r}")
        return self.__pydantic_private__["_" + side]  # type: ignore[index,no-any-return]

    def side_could_match(self, side: str, channel: str, type_: str) -> bool:
        """Whether an event of this channel and type can match one side (conditions aside);
        False for a side the rule does not have."""
        return any(m.could_match(channel, type_) for m in self.sides().get(side, ()))


def _for_kind(name: str, v: Any, info: ValidationInfo) -> None:
    kind = info.data.get("kind")
    if kind is None:  # invalid kind, already reported
        return
    needed = KINDS[kind]
    if name in needed and v is None:
        raise _err(f"required for kind '{kind}'")
    if name not in needed and v is not None:
        raise _err(f"not used by kind '{kind}' (it takes {', '.join(needed)})")


# -- rule sets and loading -------------------------------------------------------------------


class RuleSet:
    """An ordered, id-unique collection of rules."""

    def __init__(self, rules: list[Rule], source: str = "") -> None:
        self.rules: list[Rule] = list(rules)
        self.source = source
        self._by_id = {r.id: r for r in self.rules}
        if len(self._by_id) != len(self.rules):
            raise ValueError("duplicate rule ids")
        self._candidates: dict[tuple[str, str], tuple[Rule, ...]] = {}

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._by_id

    def __repr__(self) -> str:
        return f"RuleSet({len(self.rules)} rules from {self.source or '?'})"

    @property
    def ids(self) -> list[str]:
        """Rule ids in file order."""
        return [r.id for r in self.rules]

    def by_id(self, rule_id: str) -> Rule:
        """The rule with this id (``KeyError`` if none)."""
        try:
            return self._by_id[rule_id]
        except KeyError:
            raise KeyError(f"no rule {rule_id!r} in {self.source or 'rule set'}") from None

    def of_kind(self, kind: str) -> list[Rule]:
        """Rules of one kind, in file order."""
        return [r for r in self.rules if r.kind == kind]

    def candidates(self, channel: str, type_: str) -> tuple[Rule, ...]:
        """Rules any side of which could match an event of this channel and type
        (cached; lets the engine skip rules that can never apply)."""
        key = (channel, type_)
        hit = self._candidates.get(key)
        if hit is None:
            hit = self._candidates[key] = tuple(
                r for r in self.rules if r.could_match(channel, type_)
            )
        return hit

    @property
    def max_window_seconds(self) -> float:
        """The longest ``within`` of any rule (0.0 when there is none)."""
        return max((r.within_seconds or 0.0 for r in self.rules), default=0.0)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (a silent override otherwise)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            dup = key in seen
        except TypeError:
            continue  # unhashable key: construct_mapping reports it
        if dup:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def _loc(loc: tuple[int | str, ...], tags: frozenset[str] = _TAGS) -> str:
    out = ""
    for part in loc:
        if part in tags:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


#: Friendlier wording for pydantic's own error types.
_PYDANTIC_MESSAGES = {
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "missing": "required",
}
#: Errors listed in one message; the rest are counted.
_ERRORS_SHOWN = 3


def describe_errors(
    exc: ValidationError,
    tags: frozenset[str] = _TAGS,
    own_types: tuple[str, ...] = ("rule_error",),
) -> str:
    """One line naming where and what is wrong, for the first few errors of a rules or
    care-policy file (``own_types``: our validators' errors, worded already)."""
    errors = exc.errors(include_url=False)
    texts = []
    for e in errors[:_ERRORS_SHOWN]:
        where = _loc(tuple(e["loc"]), tags)
        msg = str(e["msg"])
        if e["type"] not in own_types:
            msg = _PYDANTIC_MESSAGES.get(e["type"]) or msg[:1].lower() + msg[1:]
            if e["type"] != "missing":
                msg += f", got {_show(e.get('input'))}"
        elif msg[:1] in ("[", ".") and ": " in msg:
            # a sub-path inside the field: "match[1]: ..." rather than "match: [1]: ..."
            sub, _, msg = msg.partition(": ")
            where = (where + sub) if where else sub.lstrip(".")
        texts.append(f"{where}: {msg}" if where else msg)
    text = "; ".join(texts)
    if len(errors) > _ERRORS_SHOWN:
        more = len(errors) - _ERRORS_SHOWN
        text += f" (and {more} more error{'s' if more > 1 else ''})"
    return " ".join(text.split())  # one line, whatever the input held


def _parse_rules(raw: Any, name: str, where: str = "rules") -> list[Rule]:
    if not isinstance(raw, list):
        raise RuleFileError(f"{name}: '{where}' must be a list of rules, got {_show(raw)}")
    rules: list[Rule] = []
    first_at: dict[str, int] = {}
    for i, item in enumerate(raw):
        rid = item.get("id") if isinstance(item, dict) else None
        label = f"rule {rid!r}" if isinstance(rid, str) and rid else f"rule #{i + 1}"
        if not isinstance(item, dict):
            raise RuleFileError(f"{name}: {label}: must be a mapping, got {_show(item)}")
        try:
            rule = Rule.model_validate(item)
        except ValidationError as exc:
            raise RuleFileError(f"{name}: {label}: {describe_errors(exc)}") from None
        if rule.id in first_at:
            raise RuleFileError(
                f"{name}: {label}: id: duplicate id (rule #{first_at[rule.id] + 1} has the same id)"
            )
        first_at[rule.id] = i
        rules.append(rule)
    return rules


_TOP_KEYS = ("version", "extends", "disabled", "rules")


def _parse_file(text: str, name: str) -> RuleSet:
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise RuleFileError(f"{name}: {line}{problem}") from None
    except yaml.YAMLError as exc:
        raise RuleFileError(f"{name}: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        raise RuleFileError(
            f"{name}: must be a mapping with a 'rules' list, got {_show(doc) if doc else 'nothing'}"
        )
    unknown = [k for k in doc if k not in _TOP_KEYS]
    if unknown:
        raise RuleFileError(
            f"{name}: unknown top-level key {_show(unknown[0])} (allowed: {', '.join(_TOP_KEYS)})"
        )
    version = doc.get("version", 1)
    if type(version) is not int or version != 1:
        raise RuleFileError(f"{name}: version: only version 1 is supported, got {_show(version)}")
    extends = doc.get("extends")
    if extends is not None and extends != "builtin":
        raise RuleFileError(f"{name}: extends: only 'builtin' is supported, got {_show(extends)}")
    disabled = doc.get("disabled")
    if disabled is not None:
        if extends is None:
            raise RuleFileError(
                f"{name}: disabled: only valid with 'extends: builtin' (delete the rules instead)"
            )
        if not isinstance(disabled, list) or not all(isinstance(d, str) for d in disabled):
            raise RuleFileError(
                f"{name}: disabled: must be a list of rule ids, got {_show(disabled)}"
            )
    if "rules" not in doc and extends is None:
        raise RuleFileError(f"{name}: has no 'rules' list")
    rules = _parse_rules(doc.get("rules") if "rules" in doc else [], name)
    if extends is None:
        return RuleSet(rules, source=name)

    base = builtin_rules()
    own = {r.id: r for r in rules}
    for rid in disabled or []:
        if rid not in base:
            raise RuleFileError(
                f"{name}: disabled: {rid!r} is not a built-in rule ({', '.join(base.ids)})"
            )
        if rid in own:
            raise RuleFileError(f"{name}: disabled: {rid!r} is also defined in 'rules'")
    off = frozenset(disabled or [])
    merged = [own.pop(r.id, r) for r in base.rules if r.id not in off]
    merged.extend(own.values())  # new ids, in file order
    return RuleSet(merged, source=f"{name} (extends builtin)")


@cache
def _builtin() -> RuleSet:
    text = resources.files(__package__).joinpath(BUILTIN_FILE).read_text(encoding="utf-8")
    return _parse_file(text, BUILTIN_FILE)


def builtin_rules() -> RuleSet:
    """The built-in rule library (parsed once; rules are immutable)."""
    base = _builtin()
    return RuleSet(base.rules, source=base.source)


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Load a rule file; ``None`` gives the built-in library.

    A file replaces the library entirely, unless it starts with ``extends: builtin``: then
    its rules replace built-in rules with the same id, new ids are added and
    ``disabled: [...]`` removes built-in rules. Raises :class:`RuleFileError`.
    """
    if path is None:
        return builtin_rules()
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RuleFileError(f"{name}: cannot read: {reason}") from None
    return _parse_file(text, name)
