"""The ``touchpath`` command line.

Each command is a few lines: build :class:`Settings` once, hand it to the module that does
the work. Expected failures (unreachable Kafka or ClickHouse, bad settings, bad files)
print one clear line and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from streams.config import Settings
from streams.runtime import setup_logging

app = typer.Typer(
    name="touchpath",
    help="Customer-experience event streaming: touchpoints → journeys → pain points → care.\n\n"
    "Settings are TOUCHPATH_* environment variables (or a .env file); README.md lists them. "
    "Start with: touchpath demo",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()


class CliError(Exception):
    """An expected failure: printed as one line, exit code 2."""


def _out_dir(path: Path, option: str = "--out") -> None:
    """Create ``path`` if missing; one clear line now if it cannot be written, rather
    than a traceback after the work is done."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".touchpath-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise CliError(f"{option} {path}: cannot write there ({exc.strerror})") from None


def _settings(**overrides: object) -> Settings:
    try:
        s = Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise CliError(f"bad setting TOUCHPATH_{field.upper()}: {err['msg']}") from None
    return s.model_copy(update={k: v for k, v in overrides.items() if v is not None})


@app.command()
def worker(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where embedded data lives (chDB, logs). "
            "[default: TOUCHPATH_DATA_DIR or .touchpath]"
        ),
    ] = None,
    web_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Port of /metrics, /health, /ready, /api, /dashboard. "
            "[default: TOUCHPATH_WEB_PORT or 6066]",
        ),
    ] = None,
) -> None:
    """Run the processing worker against the configured Kafka and ClickHouse.

    With no TOUCHPATH_KAFKA_BOOTSTRAP it starts an embedded broker; with no
    TOUCHPATH_CLICKHOUSE_HOST it lands into embedded ClickHouse (chDB) under --data-dir.
    Ingest runs in a child process that lives and dies with the worker
    (TOUCHPATH_INGEST_MODE=thread keeps it in the worker process). Every setting is a
    TOUCHPATH_* environment variable (README, Configuration). Stop with Ctrl-C or SIGTERM.

    Example: TOUCHPATH_KAFKA_BOOTSTRAP=kafka:9092 touchpath worker --web-port 6066
    """
    from streams.worker import run_worker

    settings = _settings(data_dir=data_dir, web_port=web_port)
    setup_logging(settings.log_level)
    run_worker(settings)


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, help="Simulated customers.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Simulated days of history.")] = 30,
    duration: Annotated[
        float,
        typer.Option(
            min=0, help="Seconds over which to send the traffic (0 = as fast as possible)."
        ),
    ] = 20.0,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 7,
    keep: Annotated[bool, typer.Option(help="Keep everything running after the summary.")] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Base directory; the demo uses DATA_DIR/demo, emptied at the start of each "
            "run. [default: TOUCHPATH_DATA_DIR or .touchpath]"
        ),
    ] = None,
) -> None:
    """End to end on the embedded default: broker, worker, simulator, summary from ClickHouse.

    Starts a local broker and a worker, sends the simulator's traffic, waits until it has
    landed and compares the pain points found with the injected ground truth. The ops page
    and /metrics are served while it runs (--keep: until Ctrl-C).

    Example: touchpath demo --customers 500 --days 7 --duration 0
    """
    from streams.demo import DemoOptions, run_demo

    settings = _settings(data_dir=data_dir)
    setup_logging("warn")
    ok = run_demo(
        settings,
        DemoOptions(customers=customers, days=days, duration=duration, seed=seed, keep=keep),
        console=out,
    )
    raise typer.Exit(0 if ok else 1)


@app.command()
def simulate(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for the generated files.")
    ] = Path("out/sim"),
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Days of history.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 7,
    to_kafka: Annotated[
        bool, typer.Option(help="Also produce the records to the raw topic.")
    ] = False,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="With --to-kafka: events per second (default: as fast as possible)."
        ),
    ] = None,
) -> None:
    """Generate synthetic multi-channel journeys with injected pain points and ground truth.

    Writes events.jsonl.gz (the raw producer format, ~2% malformed on purpose),
    customers.jsonl (the CRM feed), ground_truth.jsonl and manifest.json. --to-kafka also
    produces the events to the raw topic of TOUCHPATH_KAFKA_BOOTSTRAP.

    Example: touchpath simulate --out out/sim --customers 500 --days 7
    """
    from streams.simulator import SimConfig, publish, write_outputs
    from streams.simulator import simulate as run_sim

    settings = _settings()
    if to_kafka and settings.kafka_bootstrap is None:
        raise CliError("--to-kafka needs TOUCHPATH_KAFKA_BOOTSTRAP (nothing was written)")
    _out_dir(out_dir)
    result = run_sim(SimConfig(customers=customers, days=days, seed=seed))
    paths = write_outputs(result, out_dir)
    m = result.manifest
    out.print(
        f"[green]wrote[/] {m['events_total']} events ({m['events_malformed']} malformed), "
        f"{len(result.customers)} customers, {len(result.ground_truth)} injected pain points "
        f"→ {out_dir}"
    )
    for p in paths.values():
        out.print(f"  {p}")
    if to_kafka and settings.kafka_bootstrap is not None:
        from streams.runtime import wait_for_kafka

        wait_for_kafka(settings.kafka_bootstrap, settings.kafka_client_config())
        n = publish(
            result.records,
            bootstrap=settings.kafka_bootstrap,
            topic=settings.topic(settings.topic_raw),
            rate=rate,
            client_config=settings.kafka_client_config(),
        )
        out.print(f"[green]produced[/] {n} records to {settings.topic(settings.topic_raw)}")


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="JSONL or JSONL.gz files (or directories).")],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help='Print only {"valid": n, "invalid": n, "reasons": {reason: n}}.'
        ),
    ] = False,
    examples: Annotated[int, typer.Option(min=0, help="Invalid examples to show.")] = 5,
) -> None:
    """Validate touchpoint logs exactly as ingest does. Exit 1 if any line is invalid.

    Each invalid line is shown as file:line with its reason code (the dead-letter reasons).
    A directory with no .jsonl/.jsonl.gz file in it is an error (exit 2).

    Example: touchpath validate out/sim/events.jsonl.gz
    """
    from replay.sources import expand, iter_lines
    from schemas.validation import Rejection, Validator

    settings = _settings()
    validator = Validator.from_settings(settings)
    now = datetime.now(UTC)
    valid, reasons, shown = 0, Counter[str](), []
    paths = expand(files)
    if not paths:
        raise CliError(f"no .jsonl or .jsonl.gz files in {', '.join(map(str, files))}")
    for path in paths:
        if not path.exists():
            raise CliError(f"no such file: {path}")
        for lineno, raw in iter_lines(path):
            r = validator.validate(raw, now)
            if isinstance(r, Rejection):
                reasons[r.reason] += 1
                if len(shown) < examples:
                    shown.append((f"{path}:{lineno}", r.reason, r.error))
            else:
                valid += 1
    invalid = sum(reasons.values())
    if as_json:
        sys.stdout.write(
            orjson.dumps(
                {"valid": valid, "invalid": invalid, "reasons": dict(sorted(reasons.items()))}
            ).decode()
            + "\n"
        )
    else:
        out.print(f"[green]{valid} valid[/], [{'red' if invalid else 'green'}]{invalid} invalid[/]")
        if reasons:
            t = Table("reason", "count")
            for reason, n in reasons.most_common():
                t.add_row(reason, str(n))
            out.print(t)
            for where, reason, err in shown:
                out.print(f"  {where}: [yellow]{reason}[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if invalid else 0)


@app.command()
def backtest(
    events: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Event logs: JSONL/JSONL.gz files, dirs, globs (required unless "
            "--from-clickhouse)."
        ),
    ] = None,
    customers: Annotated[
        Path | None,
        typer.Option(
            help="CRM profiles (customers.jsonl): the identity links the live worker gets "
            "from its CRM feed. Without them, events that name no customer_id stay unidentified."
        ),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the results.")] = Path(
        "out/backtest"
    ),
    rules: Annotated[
        Path | None, typer.Option(help="Rules YAML (default: the built-in library).")
    ] = None,
    care_policy: Annotated[
        Path | None, typer.Option(help="Care policy YAML (default: the built-in policy).")
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(
            help="Advance the clock to this time at the end (fires later deadlines). "
            "ISO 8601, e.g. 2026-03-31T00:00:00+00:00; without an offset: UTC."
        ),
    ] = None,
    from_clickhouse: Annotated[
        bool,
        typer.Option(
            help="Read the landed touchpoints table (by --from/--to). Embedded ClickHouse "
            "(chDB) is one process per directory: stop the worker first."
        ),
    ] = False,
    start: Annotated[
        str | None, typer.Option("--from", help="With --from-clickhouse: events at/after (ISO).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="With --from-clickhouse: events before (ISO).")
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            help="Also run these rules over the same input; print the diff and write "
            "diff.json and compare/."
        ),
    ] = None,
    compare_policy: Annotated[
        Path | None, typer.Option(help="Also run this care policy; write the diff (diff.json).")
    ] = None,
    sort_buffer: Annotated[
        int, typer.Option(min=1, help="Events sorted in memory before spilling a run to disk.")
    ] = 200_000,
) -> None:
    """Run logs through the journey engine in-process (no Kafka) and write the results.

    Writes pain_points.jsonl, journeys.jsonl and care_actions.jsonl (deterministic: same
    input, same bytes; a care action "sent" here means "would be delivered") and prints a
    summary. The clock ends where the events leave it (last event time minus the
    allowed lateness, as live): deadlines after it do not fire unless --until is given.
    Invalid event lines and CRM profiles are skipped and counted, as the live worker does.

    Example: touchpath backtest out/sim/events.jsonl.gz --customers out/sim/customers.jsonl
    --compare my_rules.yaml
    """
    from replay.backtest import Variant, backtest_variants, write_jsonl
    from replay.commands import ReplayError, backtest_input, compare_variant, write_compare
    from schemas.validation import Validator
    from streams.engine_settings import care as load_care
    from streams.engine_settings import engine_config
    from streams.engine_settings import rules as load_configured_rules

    settings = _settings(rules_file=rules, care_policy_file=care_policy)
    ruleset = load_configured_rules(settings)  # a bad file: one line, exit 2 (main)
    care_engine = load_care(settings)
    try:
        events, table = backtest_input(settings, events, from_clickhouse, start, end)
        other = compare_variant(settings, compare, compare_policy)
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    for p in [*events, *([customers] if customers else [])]:
        if not p.exists():
            raise CliError(f"no such file: {p}")
    _out_dir(out_dir)
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("backtest", total=None)
        result, *others = backtest_variants(
            events,
            [Variant(ruleset, care_engine), *([other] if other else [])],
            validator=Validator.from_settings(settings),
            customers_path=customers,
            config=engine_config(settings),
            partitions=settings.partitions,
            until=until,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            table=table,
            run_size=sort_buffer,
            phase=lambda name: progress.update(task, description=name, completed=0, total=None),
        )
    write_jsonl(out_dir / "pain_points.jsonl", result.pain_points)
    write_jsonl(out_dir / "journeys.jsonl", result.journeys)
    write_jsonl(out_dir / "care_actions.jsonl", result.care_actions)
    by_rule = Counter(p["rule_id"] for p in result.pain_points)
    t = Table(title=f"backtest → {out_dir}")
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_row("events", str(result.events))
    t.add_row("invalid lines", str(sum(result.invalid.values())))
    t.add_row("customers", str(result.customers))
    t.add_row("journeys", str(len(result.journeys)))
    t.add_row("late (not evaluated)", str(result.late))
    t.add_row("duplicates", str(result.duplicates))
    t.add_row("never identified", str(result.held_unidentified))
    t.add_row("pain points", str(len(result.pain_points)))
    for rule_id in ruleset.ids:
        t.add_row(f"  {rule_id}", str(by_rule.get(rule_id, 0)))
    t.add_row("care decisions", str(len(result.care_actions)))
    for status, count in sorted(Counter(a["status"] for a in result.care_actions).items()):
        t.add_row(f"  {status}", str(count))
    if customers is not None:
        t.add_row("invalid CRM profiles (skipped)", str(result.invalid_profiles))
    out.print(t)
    for example in result.invalid_examples:
        out.print(f"  [yellow]invalid[/] {example}", highlight=False, soft_wrap=True)
    for example in result.invalid_profile_examples:
        out.print(f"  [yellow]invalid profile[/] {example}", highlight=False, soft_wrap=True)
    if result.events == 0:
        console.print("[yellow]warning:[/] no valid event was read", highlight=False)
    elif customers is None and result.held_unidentified:
        console.print(
            f"[yellow]note:[/] {result.held_unidentified} events were never identified: "
            "pass --customers (the CRM feed) to link identities as the live worker does",
            highlight=False,
            soft_wrap=True,
        )
    if others:
        write_compare(out_dir, result, others[0], settings, compare, compare_policy, out)


@app.command()
def replay(
    sources: Annotated[
        list[Path] | None,
        typer.Argument(help="Event logs: JSONL/JSONL.gz files, directories or quoted globs."),
    ] = None,
    from_clickhouse: Annotated[
        bool, typer.Option(help="Replay the landed touchpoints table (by --from/--to) instead.")
    ] = False,
    topic: Annotated[str | None, typer.Option(help="Target topic (default: raw topic).")] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap (default: TOUCHPATH_KAFKA_BOOTSTRAP).")
    ] = None,
    speed: Annotated[
        str, typer.Option(help="'max', or a multiple of real time paced by event time: '60x'.")
    ] = "max",
    start: Annotated[
        str | None, typer.Option("--from", help="Only events at/after this ISO time (naive: UTC).")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Only events before this time.")] = None,
    channel: Annotated[
        list[str] | None, typer.Option(help="Only this channel (repeatable).")
    ] = None,
    customer: Annotated[
        list[str] | None,
        typer.Option(help="Only records whose identifiers.customer_id is this (repeatable)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Send at most N records.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue this replay from its last acknowledged position.")
    ] = False,
    live_actions: Annotated[
        bool, typer.Option(help="Send without replay headers: the worker delivers care actions.")
    ] = False,
    validate: Annotated[
        bool,
        typer.Option(help="Validate every record for an exact bad count (--no-validate: faster)."),
    ] = True,
) -> None:
    """Re-publish historic records to Kafka, keyed and as bytes as live producers sent them.

    Records carry the header touchpath-replay: 1 (care actions recorded, not delivered)
    unless --live-actions. Bad records go on to the worker's dead-letter path. Ctrl-C
    flushes, saves the acknowledged position and exits 130; --resume continues from it.

    Example: touchpath replay 'logs/*.jsonl.gz' --speed 60x --from 2026-03-01
    """
    from replay.commands import ReplayError, ReplayRequest, run_replay_command

    settings = _settings()
    setup_logging("warn")
    request = ReplayRequest(
        sources=list(sources or []),
        from_clickhouse=from_clickhouse,
        topic=topic,
        bootstrap=bootstrap,
        speed=speed,
        start=start,
        end=end,
        channels=channel,
        customers=customer,
        limit=limit,
        resume=resume,
        live_actions=live_actions,
        validate=validate,
    )
    try:
        code = run_replay_command(settings, request, console, out)
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def schemas(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for *.schema.json.")] = Path(
        "schemas-json"
    ),
) -> None:
    """Export JSON Schemas of the wire formats so producers can validate on their side."""
    from schemas.export import export

    _out_dir(out_dir)
    for p in export(out_dir):
        out.print(str(p))


def main() -> None:
    """Console-script entry point: expected errors become one line and exit code 2."""
    from replay.sources import SourceError
    from sinks.clickhouse.errors import ClickHouseError
    from streams.engine.care import CarePolicyError
    from streams.engine.rules import RuleFileError
    from streams.runtime import RuntimeStartError, limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts: the worker, its children, every command
    try:
        app()
    except (
        CliError,
        RuntimeStartError,
        ClickHouseError,
        RuleFileError,
        CarePolicyError,
        SourceError,
    ) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
