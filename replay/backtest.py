"""Offline backtest: historic logs through the same engine the live worker runs.

Reads touchpoint logs (the raw wire format) or the landed ClickHouse ``touchpoints``
table, validates them exactly as ingest does, orders events by event time with a bounded
memory external sort (:mod:`replay.sort`), runs identity → journeys → rules → care
in-process (no Kafka), and writes ``pain_points.jsonl``, ``journeys.jsonl`` and
``care_actions.jsonl`` deterministically: the same input gives byte-identical output,
whether or not the sort spilled to disk.

Several variants (rule sets / care policies) can run over one read of the input
(:func:`backtest_variants`), which is what ``touchpath backtest --compare`` diffs.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from replay.sort import ExternalSorter, SortItem
from replay.sources import FileSet, TableSource, expand, iter_lines
from schemas.customer import CustomerProfile
from schemas.validation import Rejection, Validator
from streams.engine.care import CareEngine
from streams.engine.identity import IdentityLimits
from streams.engine.journey import EngineConfig
from streams.engine.rules import RuleSet
from streams.engine.runner import Runner

#: Events held in memory before the sort spills a run to disk (~1–2 KB each).
DEFAULT_RUN_SIZE = 200_000

#: ``progress(done, total)``: bytes (files) or rows (table) while reading, then events.
ProgressFn = Callable[[int, int | None], None]

#: Records (read) or events (engine) between two collections of cyclic garbage while the
#: collector is paused (:func:`gc_paused`); a multiple of 4096 and of 10,000.
GC_EVERY = 2_560_000


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (what the backtest allocates is freed by
    reference counting; the validator and the engine make no cyclic garbage to speak of).

    With every event of a sort run and every customer state alive, each automatic
    collection walks all of them: about a fifth of the engine's time and a third of the
    reading. Callers collect every :data:`GC_EVERY` records themselves (a safety valve).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class BacktestResult:
    pain_points: list[dict[str, Any]]
    journeys: list[dict[str, Any]]
    events: int
    care_actions: list[dict[str, Any]] = field(default_factory=list)
    invalid: Counter[str] = field(default_factory=Counter)
    invalid_examples: list[str] = field(default_factory=list)
    customers: int = 0
    late: int = 0
    duplicates: int = 0
    held_unidentified: int = 0
    spilled_runs: int = 0
    #: CRM profiles skipped as invalid (as the live worker skips them), with examples
    invalid_profiles: int = 0
    invalid_profile_examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Variant:
    """One configuration to backtest: a rule set and an optional care policy."""

    rules: RuleSet
    care: CareEngine | None = None


def read_profiles(
    path: Path, validator: Validator, on_invalid: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """CRM profiles (JSONL), PII hashed with the same key as events. An invalid line is
    skipped, as the live worker's ``profiles`` agent skips it, and described
    (``file:line: error``) to ``on_invalid``."""
    out = []
    for lineno, raw in iter_lines(path):
        try:
            p = CustomerProfile.model_validate_json(raw, context={"hasher": validator.hasher})
        except ValidationError as exc:  # bad JSON included
            if on_invalid is not None:
                on_invalid(f"{path}:{lineno}: {_first_error(exc)}")
            continue
        out.append(p.model_dump(mode="json"))
    return out


def _first_error(exc: ValidationError) -> str:
    """One line for a profile that failed validation (no raw values: they may be PII)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "record"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def collect_events(
    records: Iterable[tuple[Any, bytes]],
    describe: Callable[[Any], str],
    validator: Validator,
    now: datetime,
    result: BacktestResult,
    add: Callable[[SortItem], None],
    tick: Callable[[], None] | None = None,
) -> None:
    """Validate ``(position, raw)`` records and ``add`` the valid ones as sort items; bad
    ones are counted in ``result`` with ``file:line`` examples. ``tick`` is called every
    4096 records (progress)."""
    validate = validator.validate
    invalid, examples = result.invalid, result.invalid_examples
    paused = not gc.isenabled()
    for n, (pos, raw) in enumerate(records, 1):
        tp = validate(raw, now)
        if type(tp) is Rejection:
            invalid[tp.reason] += 1
            if len(examples) < 5:
                examples.append(f"{describe(pos)}: {tp.reason}: {tp.error}")
        else:
            # = tp.model_dump(mode="json", exclude_none=True), without pydantic's wrapper
            ev = tp.__pydantic_serializer__.to_python(tp, mode="json", exclude_none=True)
            add((tp.occurred_at.timestamp(), tp.event_id, tp.identity_key, ev))
        if not n & 4095:
            if tick is not None:
                tick()
            if paused and not n % GC_EVERY:
                gc.collect()


def read_events(
    paths: Iterable[Path], validator: Validator, now: datetime, result: BacktestResult
) -> list[tuple[float, str, dict[str, Any], str]]:
    """Valid events as ``(ts, event_id, event, identity_key)`` in input order (all in
    memory: for small inputs and tests; the backtest itself streams)."""
    files = FileSet(expand(list(paths)), max_bytes=validator.max_record_bytes)
    items: list[SortItem] = []
    collect_events(files.records(), files.describe, validator, now, result, items.append)
    return [(ts, eid, ev, key) for ts, eid, key, ev in items]


def backtest(
    event_paths: list[Path],
    rules: RuleSet,
    *,
    validator: Validator,
    customers_path: Path | None = None,
    config: EngineConfig | None = None,
    partitions: int = 4,
    until: datetime | None = None,
    progress: ProgressFn | None = None,
    care: CareEngine | None = None,
    table: TableSource | None = None,
    identity: IdentityLimits | None = None,
    run_size: int = DEFAULT_RUN_SIZE,
    tmp_dir: Path | None = None,
    phase: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Run the engine over the logs (and/or ``table``); see the module docstring."""
    return backtest_variants(
        event_paths,
        [Variant(rules, care)],
        validator=validator,
        customers_path=customers_path,
        config=config,
        partitions=partitions,
        until=until,
        progress=progress,
        table=table,
        identity=identity,
        run_size=run_size,
        tmp_dir=tmp_dir,
        phase=phase,
    )[0]


def backtest_variants(
    event_paths: list[Path],
    variants: list[Variant],
    *,
    validator: Validator,
    customers_path: Path | None = None,
    config: EngineConfig | None = None,
    partitions: int = 4,
    until: datetime | None = None,
    progress: ProgressFn | None = None,
    table: TableSource | None = None,
    identity: IdentityLimits | None = None,
    run_size: int = DEFAULT_RUN_SIZE,
    tmp_dir: Path | None = None,
    phase: Callable[[str], None] | None = None,
) -> list[BacktestResult]:
    """One read, validation and sort of the input; each variant's engine fed in lockstep.

    The engine only reads the event dicts, so the variants share them. Each result is what
    :func:`backtest` gives for that variant alone (the same bytes).
    """
    with gc_paused():
        return _run_variants(
            event_paths,
            variants,
            validator=validator,
            customers_path=customers_path,
            config=config,
            partitions=partitions,
            until=until,
            progress=progress,
            table=table,
            identity=identity,
            run_size=run_size,
            tmp_dir=tmp_dir,
            phase=phase,
        )


def _run_variants(
    event_paths: list[Path],
    variants: list[Variant],
    *,
    validator: Validator,
    customers_path: Path | None,
    config: EngineConfig | None,
    partitions: int,
    until: datetime | None,
    progress: ProgressFn | None,
    table: TableSource | None,
    identity: IdentityLimits | None,
    run_size: int,
    tmp_dir: Path | None,
    phase: Callable[[str], None] | None,
) -> list[BacktestResult]:
    shared = BacktestResult([], [], 0)
    now = datetime.now(UTC)

    def invalid_profile(where: str) -> None:
        shared.invalid_profiles += 1
        if len(shared.invalid_profile_examples) < 5:
            shared.invalid_profile_examples.append(where)

    profiles = read_profiles(customers_path, validator, invalid_profile) if customers_path else []
    with ExternalSorter(run_size, tmp_dir) as sorter:
        if phase is not None:
            phase("reading")
        files = FileSet(expand(event_paths), max_bytes=validator.max_record_bytes)
        if files.paths:
            total = files.bytes_total
            tick = None if progress is None else lambda: progress(files.bytes_read, total)
            collect_events(
                files.records(), files.describe, validator, now, shared, sorter.add, tick
            )
        if table is not None:
            rows = [0]

            def counted() -> Iterator[tuple[Any, bytes]]:
                for pos, raw in table.records():
                    rows[0] += 1
                    yield pos, raw

            total_rows = table.count() if progress is not None else None
            tick = None if progress is None else lambda: progress(rows[0], total_rows)
            collect_events(counted(), table.describe, validator, now, shared, sorter.add, tick)
        if phase is not None:
            phase("running")
        runners = [
            Runner(v.rules, config, identity=identity, partitions=partitions, care=v.care)
            for v in variants
        ]
        for runner in runners:
            for p in profiles:
                runner.load_profile(p)
        total = sorter.count
        i = 0
        paused = not gc.isenabled()
        if len(runners) == 1:
            process = runners[0].process
            for ts, _eid, key, ev in sorter.sorted():
                process(ev, ts, key)
                i += 1
                if not i % 10_000 or i == total:
                    if progress is not None:
                        progress(i, total)
                    if paused and not i % GC_EVERY:
                        gc.collect()
        else:
            for ts, _eid, key, ev in sorter.sorted():
                for runner in runners:
                    runner.process(ev, ts, key)
                i += 1
                if not i % 10_000 or i == total:
                    if progress is not None:
                        progress(i, total)
                    if paused and not i % GC_EVERY:
                        gc.collect()
        spilled = sorter.spilled_runs
    return [_result(r, shared, total, until, spilled) for r in runners]


def _result(
    runner: Runner, shared: BacktestResult, total: int, until: datetime | None, spilled: int
) -> BacktestResult:
    out = runner.finish(until.timestamp() if until else None)
    result = BacktestResult(
        [],
        [],
        total,
        invalid=Counter(shared.invalid),
        invalid_examples=list(shared.invalid_examples),
        spilled_runs=spilled,
        invalid_profiles=shared.invalid_profiles,
        invalid_profile_examples=list(shared.invalid_profile_examples),
    )
    result.pain_points = sorted(
        out.pain_points, key=lambda p: (p["detected_at"], p["pain_point_id"])
    )
    # decision order per action (held before sent) is kept by the stable sort
    result.care_actions = sorted(
        out.care_actions, key=lambda a: (a["decided_at"], a["customer_id"], a["action_id"])
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
