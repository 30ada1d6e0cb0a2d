"""The ``touchpath replay`` command behind its CLI options: sources, state, progress, summary.

Kept out of ``streams/cli.py`` so the CLI stays a list of options; like ``streams.demo``
it prints to the rich console it is given (no ``print`` anywhere else in ``replay/``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from replay.backtest import BacktestResult, Variant, write_jsonl
from replay.compare import diff_results, render_diff
from replay.filters import EventFilter, parse_speed
from replay.publisher import (
    Progress as ReplayProgress,
)
from replay.publisher import (
    Replayer,
    ReplayOptions,
    ReplaySummary,
    StopFlag,
    new_state,
    producer_config,
    sigint_stops,
)
from replay.sources import FileSet, SourceError, TableQuery, TableSource, check_table, expand
from replay.state import ReplayState, run_key, state_path
from schemas.touchpoint import Channel
from schemas.validation import Validator
from streams.config import Settings

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130


class ReplayError(Exception):
    """A replay cannot start (bad option, missing file, no Kafka, no topic): one line."""


def _check(client: Any) -> None:
    try:
        check_table(client)
    except SourceError as exc:
        client.close()
        raise ReplayError(str(exc)) from None


def parse_time(text: str | None, what: str) -> datetime | None:
    """An ISO 8601 time option; a time without zone is taken as UTC."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(f"{what}: not an ISO 8601 time: {text!r}") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def event_filter(
    start: str | None, end: str | None, channels: list[str] | None, customers: list[str] | None
) -> EventFilter:
    """The filter of the ``--from/--to/--channel/--customer`` options (checked)."""
    known = {c.value for c in Channel}
    for ch in channels or []:
        if ch not in known:
            raise ReplayError(f"--channel: unknown channel {ch!r} ({', '.join(sorted(known))})")
    try:
        return EventFilter(
            parse_time(start, "--from"),
            parse_time(end, "--to"),
            frozenset(channels or ()),
            frozenset(customers or ()),
        )
    except ValueError as exc:
        raise ReplayError(str(exc)) from None


@dataclass
class ReplayRequest:
    """The options of one ``touchpath replay`` invocation."""

    sources: list[Path] = field(default_factory=list)
    from_clickhouse: bool = False
    topic: str | None = None
    bootstrap: str | None = None
    speed: str = "max"
    start: str | None = None
    end: str | None = None
    channels: list[str] | None = None
    customers: list[str] | None = None
    limit: int | None = None
    resume: bool = False
    live_actions: bool = False
    validate: bool = True


def run_replay_command(
    settings: Settings, req: ReplayRequest, console: Console, out: Console | None = None
) -> int:
    """Run a replay as the CLI does: progress and notes on ``console``, the summary on
    ``out``. Returns the exit code (0, 1 on delivery failures, 130 when interrupted);
    raises :class:`ReplayError` before anything is sent."""
    try:
        speed = parse_speed(req.speed)
    except ValueError as exc:
        raise ReplayError(f"--speed: {exc}") from None
    flt = event_filter(req.start, req.end, req.channels, req.customers)
    bootstrap = req.bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        raise ReplayError("replay needs Kafka: give --bootstrap or set TOUCHPATH_KAFKA_BOOTSTRAP")
    topic = req.topic or settings.topic(settings.topic_raw)

    client = None
    if req.from_clickhouse:
        if req.sources:
            raise ReplayError("give either log files or --from-clickhouse, not both")
        from sinks.clickhouse import connect

        client = connect(settings)
        _check(client)
        query = TableQuery(
            flt.start, flt.end, tuple(sorted(flt.channels)), tuple(sorted(flt.customers))
        )
        source: Any = TableSource(client, query)
        where = settings.clickhouse_host or str(settings.chdb_path)
        source_ids = [f"clickhouse:{where}/{settings.clickhouse_database}/touchpoints"]
    else:
        if not req.sources:
            raise ReplayError("give log files (or directories, globs), or --from-clickhouse")
        files = expand(req.sources)
        for p in files:
            if not p.is_file():
                raise ReplayError(f"no such file: {p}")
        source = FileSet(files, max_bytes=settings.max_record_bytes)
        source_ids = [str(p.resolve()) for p in files]

    key = run_key(source_ids, topic, flt.as_dict())
    path = state_path(settings.data_dir, key)
    state = _starting_state(path, req.resume, key, topic, source_ids, flt.as_dict(), console)
    if state is None:
        return 0

    from confluent_kafka import Producer

    from streams.runtime import wait_for_kafka

    md = wait_for_kafka(bootstrap, settings.kafka_client_config())
    if topic not in md.topics:
        raise ReplayError(f"topic {topic} does not exist on {bootstrap} (start the worker once)")
    producer = Producer(producer_config(bootstrap, settings.kafka_client_config()))
    options = ReplayOptions(
        topic=topic,
        speed=speed,
        filter=flt,
        limit=req.limit,
        live_actions=req.live_actions,
        validate=req.validate,
        max_record_bytes=settings.max_record_bytes,
    )
    try:
        summary = _run_with_progress(
            producer, source, options, Validator.from_settings(settings), state, path, console
        )
    finally:
        if client is not None:
            client.close()
    print_summary(summary, options, path, out or console)
    if summary.failures or summary.error:
        return 1
    return EXIT_INTERRUPTED if summary.interrupted else 0


def _starting_state(
    path: Path,
    resume: bool,
    key: str,
    topic: str,
    sources: list[str],
    filters: dict[str, Any],
    console: Console,
) -> ReplayState | None:
    saved = ReplayState.load(path)
    if resume:
        if saved is None:
            console.print("[yellow]no saved position for this replay[/]: starting from the start")
        elif saved.complete:
            console.print(f"this replay is already complete (run {saved.run_id}); nothing to send")
            return None
        else:
            return saved
    elif saved is not None and not saved.complete:
        console.print(
            "[yellow]an interrupted run of this replay exists[/] (--resume continues it); "
            "starting over"
        )
    return new_state(key, topic, sources, filters)


def _run_with_progress(
    producer: Any,
    source: Any,
    options: ReplayOptions,
    validator: Validator,
    state: ReplayState,
    path: Path,
    console: Console,
) -> ReplaySummary:
    files = source if isinstance(source, FileSet) else None
    start = source.position_from_json(state.position)
    total = (
        files.bytes_total if files is not None else source.count(start if state.position else None)
    )
    columns = [
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[sent]} sent · {task.fields[rate]} ev/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("replay", total=total or None, sent=0, rate="-")

        def show(p: ReplayProgress) -> None:
            done = files.bytes_read if files is not None else p.read
            rate = f"{p.sent / p.elapsed:,.0f}" if p.elapsed > 0 else "-"
            bar.update(task, completed=done, sent=f"{p.sent:,}", rate=rate)

        stop = StopFlag()
        with sigint_stops(stop):
            return Replayer(
                producer,
                source,
                options,
                validator=validator,
                state=state,
                state_file=path,
                progress=show,
                stop=stop,
            ).run()


def print_summary(s: ReplaySummary, options: ReplayOptions, path: Path, console: Console) -> None:
    """The end-of-run table: sent, filtered, bad records, elapsed, rate, where to resume."""
    status = (
        "[red]delivery failed[/]"
        if s.failures
        else "[red]input error[/]"
        if s.error
        else "[yellow]interrupted[/]"
        if s.interrupted
        else "[yellow]stopped at --limit[/]"
        if s.limit_reached
        else "[green]complete[/]"
    )
    t = Table(title=f"replay → {options.topic}: {status}", title_justify="left")
    t.add_column("what")
    t.add_column("this run", justify="right")
    t.add_column("whole replay", justify="right")
    tot = s.totals
    bad_total = sum(s.bad.values())
    t.add_row("events sent", f"{s.sent:,}", f"{tot.get('sent', s.sent):,}")
    t.add_row("filtered out", f"{s.filtered:,}", f"{tot.get('filtered', s.filtered):,}")
    label = "bad records" if options.validate else "bad records (structural check only)"
    t.add_row(label, f"{bad_total:,}", f"{tot.get('bad', bad_total):,}")
    t.add_row("  sent to the dead-letter path", f"{s.bad_sent:,}", f"{tot.get('bad_sent', 0):,}")
    for reason, n in s.bad.most_common():
        t.add_row(f"  {reason}", f"{n:,}", "")
    t.add_row("elapsed", f"{s.elapsed:.1f} s", "")
    t.add_row("rate", f"{s.rate:,.0f} ev/s", "")
    console.print(t)
    for example in s.bad_examples:
        console.print(f"  [yellow]bad[/] {example}", highlight=False, soft_wrap=True)
    actions = (
        "live actions (no replay headers)"
        if options.live_actions
        else "care actions recorded, not delivered (touchpath-replay header)"
    )
    console.print(f"run {s.run_id} · {actions}", highlight=False)
    if s.resumed_from:
        console.print(f"resumed after {s.resumed_from}", highlight=False)
    if s.failures:
        console.print(f"[red]delivery failures[/], first: {s.failures[0]}", highlight=False)
    if s.error:
        console.print(f"[red]input error[/]: {s.error}", highlight=False)
    if not s.complete:
        where = s.position or "the start"
        console.print(
            f"acknowledged up to {where}; state {path} (--resume continues)", highlight=False
        )


# --------------------------------------------------------------------------------------------
# backtest: ClickHouse input and --compare
# --------------------------------------------------------------------------------------------


def backtest_input(
    settings: Settings,
    events: list[Path] | None,
    from_clickhouse: bool,
    start: str | None,
    end: str | None,
) -> tuple[list[Path], TableSource | None]:
    """The backtest's input: expanded log files, or the ``touchpoints`` table by time range."""
    if from_clickhouse:
        if events:
            raise ReplayError("give either event logs or --from-clickhouse, not both")
        flt = event_filter(start, end, None, None)
        from sinks.clickhouse import connect

        client = connect(settings)
        _check(client)
        return [], TableSource(client, TableQuery(flt.start, flt.end))
    if start or end:
        raise ReplayError("--from/--to select from ClickHouse: add --from-clickhouse")
    if not events:
        raise ReplayError("give event logs (files, directories, globs) or --from-clickhouse")
    return expand(events), None


def compare_variant(settings: Settings, rules: Path | None, policy: Path | None) -> Variant | None:
    """The configuration ``--compare`` / ``--compare-policy`` ask for (the other part as
    configured), or None. A bad file raises the loader's one-line error."""
    if rules is None and policy is None:
        return None
    from streams.engine.care import CareEngine, load_policy
    from streams.engine.rules import load_rules

    return Variant(
        load_rules(rules or settings.rules_file),
        CareEngine(load_policy(policy or settings.care_policy_file)),
    )


def _label(rules: Path | None, policy: Path | None) -> str:
    return f"rules={rules or 'builtin'} care={policy or 'builtin'}"


def write_compare(
    out_dir: Path,
    base: BacktestResult,
    other: BacktestResult,
    settings: Settings,
    rules: Path | None,
    policy: Path | None,
    console: Console,
) -> dict[str, Any]:
    """Write the other variant's outputs under ``out_dir/compare`` and ``out_dir/diff.json``,
    and show the diff."""
    other_dir = out_dir / "compare"
    write_jsonl(other_dir / "pain_points.jsonl", other.pain_points)
    write_jsonl(other_dir / "journeys.jsonl", other.journeys)
    write_jsonl(other_dir / "care_actions.jsonl", other.care_actions)
    diff = diff_results(
        base,
        other,
        base_label=_label(settings.rules_file, settings.care_policy_file),
        other_label=_label(rules or settings.rules_file, policy or settings.care_policy_file),
    )
    (out_dir / "diff.json").write_bytes(
        orjson.dumps(diff, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
    )
    render_diff(diff, console)
    console.print(f"diff → {out_dir / 'diff.json'}, other outputs → {other_dir}", highlight=False)
    return diff
