"""Offline backtest: historic logs through the same engine the live worker runs.

Reads touchpoint logs (the raw wire format), validates them exactly as ingest does,
orders events by event time, runs identity → journeys → rules in-process (no Kafka), and
writes ``pain_points.jsonl`` and ``journeys.jsonl`` deterministically: the same input
gives byte-identical output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from replay.sources import expand, iter_lines
from schemas.customer import CustomerProfile
from schemas.validation import Rejection, Validator
from streams.engine.journey import EngineConfig
from streams.engine.rules import RuleSet
from streams.engine.runner import Runner


@dataclass
class BacktestResult:
    pain_points: list[dict[str, Any]]
    journeys: list[dict[str, Any]]
    events: int
    invalid: Counter[str] = field(default_factory=Counter)
    invalid_examples: list[str] = field(default_factory=list)
    customers: int = 0
    late: int = 0
    duplicates: int = 0
    held_unidentified: int = 0


def read_profiles(path: Path, validator: Validator) -> list[dict[str, Any]]:
    """CRM profiles (JSONL), PII hashed with the same key as events."""
    out = []
    for lineno, raw in iter_lines(path):
        try:
            p = CustomerProfile.model_validate_json(raw, context={"hasher": validator.hasher})
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: invalid customer profile: {exc}") from None
        out.append(p.model_dump(mode="json"))
    return out


def read_events(
    paths: Iterable[Path], validator: Validator, now: datetime, result: BacktestResult
) -> list[tuple[float, str, dict[str, Any], str]]:
    """Valid events as ``(ts, event_id, event, identity_key)``, bad lines counted."""
    events = []
    for path in expand(list(paths)):
        for lineno, raw in iter_lines(path):
            tp = validator.validate(raw, now)
            if isinstance(tp, Rejection):
                result.invalid[tp.reason] += 1
                if len(result.invalid_examples) < 5:
                    result.invalid_examples.append(f"{path}:{lineno}: {tp.reason}: {tp.error}")
                continue
            ev = tp.model_dump(mode="json", exclude_none=True)
            events.append((tp.occurred_at.timestamp(), tp.event_id, ev, tp.identity_key))
    return events


def backtest(
    event_paths: list[Path],
    rules: RuleSet,
    *,
    validator: Validator,
    customers_path: Path | None = None,
    config: EngineConfig | None = None,
    partitions: int = 4,
    until: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """Run the engine over the logs; see the module docstring."""
    result = BacktestResult([], [], 0)
    now = datetime.now(UTC)
    profiles = read_profiles(customers_path, validator) if customers_path else []
    events = read_events(event_paths, validator, now, result)
    events.sort(key=lambda e: (e[0], e[1]))
    runner = Runner(rules, config, partitions=partitions)
    for p in profiles:
        runner.load_profile(p)
    total = len(events)
    for i, (ts, _eid, ev, key) in enumerate(events, 1):
        runner.process(ev, ts, key)
        if progress is not None and (i % 10_000 == 0 or i == total):
            progress(i, total)
    out = runner.finish(until.timestamp() if until else None)
    result.events = total
    result.pain_points = sorted(
        out.pain_points, key=lambda p: (p["detected_at"], p["pain_point_id"])
    )
    result.journeys = sorted(
        out.journeys.values(), key=lambda j: (j["customer_id"], j["started_at"], j["journey_id"])
    )
    result.customers = sum(1 for c in runner.customers.values() if c.steps or c.journeys)
    result.late = runner.stats.late
    result.duplicates = runner.stats.duplicates
    result.held_unidentified = runner.stats.held_expired
    return result


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line, keys sorted, so output is byte-for-byte reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for row in rows:
            f.write(orjson.dumps(row, option=orjson.OPT_SORT_KEYS))
            f.write(b"\n")
