"""Sink throughput: touchpath's ClickHouseWriter vs a raw clickhouse-connect columnar insert.

    python -m benchmarks.sink_bench [--rows 200000] [--messages 1,10,50] [--repeats 3]

Rows come from the simulator through the worker's own path: simulated raw records are
validated and split exactly as ingest does (``split_batch`` over ``--ingest-batch`` records
per consume, ``--partitions`` target partitions, micro-batches of ≤500 events), encoded as
micro-batch messages, and turned into ``touchpoints`` rows by ``land.touchpoint_rows``. The
identify agent lands the rows of one ``take_events(50)`` batch at a time, i.e. of 1 to 50
micro-batch messages; ``--messages`` picks the messages per land.

For each land size, in one chDB process and one fresh temporary data directory, the same
rows are inserted by three variants, each into its own freshly migrated database (same
tables, materialized views and dedup settings; nothing is deduplicated), interleaved land
by land with the order rotated, so load from other processes hits all three alike:

- ``sink``       ``ClickHouseWriter.write(rows)`` + ``flush()`` per land, as ``Warehouse.land``
                 does (dict → column transposition, dedup token, retry wrapper included)
- ``raw``        ``client.insert(table, columns, column_names=..., column_oriented=True)``
                 per land, columns prebuilt outside the timer
- ``raw_typed``  the same with ``column_types`` cached (no per-insert DESCRIBE): the ceiling

Each figure is the median of ``--repeats`` (fresh databases each); ratios are the median
of the per-repeat (paired) ratios. rows/CPU-s counts the process' CPU time (all threads,
chDB's included) during the variant's calls: steadier than rows/s on a busy machine.
Prints a table and writes JSON (``benchmarks/results/sink_bench.json`` by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clickhouse_connect.driver import Client

from sinks.clickhouse.client import connect
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.tables import TABLE_COLUMNS
from sinks.clickhouse.writer import ClickHouseWriter

TABLE = "touchpoints"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
VARIANTS = ("sink", "raw", "raw_typed")

Row = dict[str, Any]
Columns = list[list[Any]]


# --- machine and process facts (shared with query_bench) -------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU, memory, OS and library versions of this run (for the JSON report)."""
    cpu_model, mem_kib = "unknown", 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    except OSError:
        pass
    import chdb
    import clickhouse_connect

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "chdb": chdb.__version__,
        "clickhouse_connect": clickhouse_connect.__version__,
        "loadavg_at_start": list(os.getloadavg()),
    }


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far, all threads (chDB's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def calibrate_ms() -> float:
    """Milliseconds for a fixed single-thread CPU task (SHA-256 of 64 MiB), median of 5.

    On a shared machine this shows how much CPU the run actually got: compare it between
    runs (about 37 ms on the reference machine when it is quiet).
    """
    import hashlib

    block = b"x" * (1 << 20)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        h = hashlib.sha256()
        for _ in range(64):
            h.update(block)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 1)


def reset_peak_rss() -> bool:
    """Reset the process' peak RSS (VmHWM) to its current RSS; False if not supported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """Peak RSS since the last :func:`reset_peak_rss` (VmHWM), else since process start."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_peak_rss_mib() -> float:
    """Peak RSS of the whole process so far (never reset)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wait_for_merges(client: Client, timeout: float = 60.0, quiet: float = 1.0) -> float:
    """Block until chDB has run no background merge for ``quiet`` seconds (or ``timeout``);
    returns the seconds waited. (Merges are scheduled a moment after an insert, so "none
    running right now" is not enough.)"""
    started = time.monotonic()
    idle_since = started
    while time.monotonic() - started < timeout:
        now = time.monotonic()
        if client.query("SELECT count() FROM system.merges").result_rows[0][0]:
            idle_since = now
        elif now - idle_since >= quiet:
            break
        time.sleep(0.1)
    return time.monotonic() - started


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print ``rows`` as an aligned text table (numbers right-aligned)."""
    text = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row, raw in zip(text, rows, strict=True):
        cells = [
            c.rjust(w) if isinstance(v, int | float) else c.ljust(w)
            for c, v, w in zip(row, raw, widths, strict=True)
        ]
        print("  ".join(cells))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as indented JSON to ``path`` (directories created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


def open_chdb(prefix: str) -> tuple[Client, Path]:
    """A client on a fresh temporary chDB directory (the one directory of this process)."""
    from streams.config import Settings

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    client = connect(Settings(_env_file=None, data_dir=tmp, clickhouse_database="touchpath"))
    return client, tmp


# --- the rows: simulator → ingest split → micro-batch messages → touchpoint_rows ------------


def simulated_messages(
    rows: int, *, partitions: int, ingest_batch: int, seed: int = 7
) -> tuple[list[bytes], int]:
    """Micro-batch messages holding at least ``rows`` valid events, built as ingest does.

    Returns the messages (in the order ingest would produce them) and the number of raw
    records simulated. The simulator yields ~1.1 events per customer per day.
    """
    from streams.simulator import SimConfig, simulate

    customers = max(100, rows // 30)
    while True:
        records = simulate(SimConfig(customers=customers, days=30, seed=seed)).records
        if len(records) >= rows * 1.02:
            break
        customers = int(customers * 1.3) + 1
    messages = ingest_messages(
        records, partitions=partitions, ingest_batch=ingest_batch, limit=rows
    )
    return messages, len(records)


def ingest_messages(
    records: Sequence[bytes], *, partitions: int, ingest_batch: int, limit: int | None = None
) -> list[bytes]:
    """Validate and split ``records`` as ingest does (``split_batch`` per consumed batch of
    ``ingest_batch`` records) into micro-batch messages; stop once ``limit`` events are in."""
    from schemas.validation import Validator
    from streams.config import Settings
    from streams.ingest import RawRecord, split_batch
    from streams.microbatch import encode

    validator = Validator.from_settings(Settings(_env_file=None))
    now = datetime.now(UTC)
    at = now.isoformat()
    messages: list[bytes] = []
    valid = 0
    for start in range(0, len(records), ingest_batch):
        chunk = [
            RawRecord(value, "touchpoints.raw", (start + i) % partitions, (start + i) // partitions)
            for i, value in enumerate(records[start : start + ingest_batch])
        ]
        split = split_batch(chunk, validator, partitions=partitions, now=now)
        for part in sorted(split.batches):
            for items in split.batches[part]:
                messages.append(encode(items, at))
                valid += len(items)
        if limit is not None and valid >= limit:
            break
    return messages


def decode_messages(messages: Sequence[bytes], rows: int) -> tuple[list[list[Row]], float]:
    """``touchpoint_rows`` of each message, cut to exactly ``rows`` rows; and rows/s decoded."""
    from streams.agents.land import touchpoint_rows

    t0 = time.perf_counter()
    decoded = [touchpoint_rows(m) for m in messages]
    seconds = time.perf_counter() - t0
    total = sum(map(len, decoded))
    out: list[list[Row]] = []
    left = rows
    for part in decoded:
        if left <= 0:
            break
        out.append(part[:left])
        left -= len(out[-1])
    if left > 0:
        raise RuntimeError(f"simulated only {rows - left} valid rows, wanted {rows}")
    return out, total / seconds


def group_lands(messages: Sequence[list[Row]], per_land: int) -> list[list[Row]]:
    """Concatenate the rows of every ``per_land`` consecutive messages (as ``decode_all``)."""
    lands = []
    for i in range(0, len(messages), per_land):
        rows: list[Row] = []
        for part in messages[i : i + per_land]:
            rows.extend(part)
        lands.append(rows)
    return lands


def data_bytes(rows: Sequence[Row]) -> int:
    """Bytes of column data: UTF-8 string bytes plus fixed widths (DateTime64/Int64 8, Int32 4)."""
    total = 0
    for row in rows:
        for name in TABLE_COLUMNS[TABLE]:
            value = row[name]
            if isinstance(value, str):
                total += len(value.encode())
            elif name == "source_partition":
                total += 4
            else:
                total += 8
    return total


# --- measurements -----------------------------------------------------------------------------


@dataclass
class Measurement:
    """One timed landing of all rows by one variant."""

    variant: str
    messages_per_land: int
    repeat: int
    database: str
    rows: int
    inserts: int
    seconds: float
    rows_per_s: float
    cpu_seconds: float
    peak_rss_mib: float
    merge_wait_s: float = 0.0


@dataclass
class Summary:
    """Median of the repeats of one variant at one land size."""

    variant: str
    messages_per_land: int
    mean_rows_per_land: float
    inserts: int
    rows_per_s: float
    mib_per_s: float
    rows_per_cpu_s: float
    rows_per_s_all: list[float] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    ratio_vs_raw: float | None = None
    ratio_vs_raw_typed: float | None = None


def measure_repeat(
    client: Client,
    lands: Sequence[list[Row]],
    column_lands: Sequence[Columns],
    types: Sequence[Any],
    *,
    per_land: int,
    repeat: int,
    rows: int,
) -> list[Measurement]:
    """Land every land once per variant, interleaved land by land (variant order rotated
    per land), each variant into its own freshly migrated database; check every row landed.

    Interleaving pairs the variants in time, so a burst of load from other processes on
    this shared machine hits all of them alike instead of one whole measurement.
    """
    names = TABLE_COLUMNS[TABLE]
    dbs = {v: f"{v}_{per_land}_{repeat}" for v in VARIANTS}
    for db in dbs.values():
        migrate(client, db)
    wait = wait_for_merges(client)
    writer = ClickHouseWriter(client, dbs["sink"])  # the worker's path: write + flush per land
    seconds = dict.fromkeys(VARIANTS, 0.0)
    cpu = dict.fromkeys(VARIANTS, 0.0)
    reset_peak_rss()
    for i, (land, columns) in enumerate(zip(lands, column_lands, strict=True)):
        for variant in rotate(VARIANTS, i + repeat):
            c0, t0 = cpu_seconds(), time.perf_counter()
            if variant == "sink":
                writer.write(TABLE, land)
                writer.flush()
            else:
                client.insert(
                    TABLE,
                    columns,
                    column_names=names,
                    column_types=types if variant == "raw_typed" else None,
                    column_oriented=True,
                    database=dbs[variant],
                )
            seconds[variant] += time.perf_counter() - t0
            cpu[variant] += cpu_seconds() - c0
    rss = peak_rss_mib()
    out = []
    for variant, db in dbs.items():
        landed = client.query(f"SELECT count() FROM {db}.{TABLE}").result_rows[0][0]
        if landed != rows:
            raise RuntimeError(f"{variant}: {landed} rows landed in {db}, expected {rows}")
        out.append(
            Measurement(
                variant, per_land, repeat, db, rows, len(lands), seconds[variant],
                rows / seconds[variant], cpu[variant], rss, wait,
            )
        )  # fmt: skip
    # No DROP DATABASE between runs: measured (benchmarks/sink_insert.py), a DROP ... SYNC
    # made every later small insert in the chDB process ~2x slower.
    return out


def writer_python_overhead(lands: Sequence[list[Row]], client: Client) -> float:
    """Seconds the writer spends in Python per row (transposition + dedup token), no insert."""
    writer = ClickHouseWriter(client, "unused")
    t0 = time.perf_counter()
    n = 0
    for rows in lands:
        writer.write(TABLE, rows)
        # what flush() does before inserting: pop the buffer and hash its identity columns
        columns = writer._open.pop(TABLE)
        count = writer._open_rows.pop(TABLE)
        writer._token(TABLE, columns, count)
        n += count
    return (time.perf_counter() - t0) / n


def rotate(items: Sequence[str], by: int) -> Iterator[str]:
    """``items`` starting at position ``by`` (so each repeat starts with another variant)."""
    for i in range(len(items)):
        yield items[(i + by) % len(items)]


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sink_bench",
        description="ClickHouseWriter (write+flush per land) vs raw clickhouse-connect "
        "columnar inserts of the same simulated touchpoint rows, on embedded chDB.",
    )
    parser.add_argument("--rows", type=int, default=200_000, help="rows landed per measurement")
    parser.add_argument(
        "--messages",
        default="1,10,50",
        help="micro-batch messages per land, comma-separated (identify's take_events "
        "batch holds 1..50 messages)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats per figure (median)")
    parser.add_argument("--partitions", type=int, default=4, help="target partitions (ingest)")
    parser.add_argument(
        "--ingest-batch",
        type=int,
        default=2000,
        help="raw records per ingest consume (worker: 4 × batch_max_events)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON report path")
    parser.add_argument("--keep", action="store_true", help="keep the temporary chDB directory")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table, write the JSON report and return it."""
    args = parse_args(argv)
    sizes = [int(x) for x in args.messages.split(",") if x.strip()]
    out = args.out or RESULTS_DIR / "sink_bench.json"
    started = time.time()
    machine = machine_info()
    calibration = [calibrate_ms()]

    t0 = time.perf_counter()
    messages, simulated = simulated_messages(
        args.rows, partitions=args.partitions, ingest_batch=args.ingest_batch
    )
    build_s = time.perf_counter() - t0
    decoded, decode_rate = decode_messages(messages, args.rows)
    all_rows = [row for part in decoded for row in part]
    nbytes = data_bytes(all_rows)
    msg_rows = [len(m) for m in decoded]
    print(
        f"{args.rows:,} touchpoint rows from {simulated:,} simulated records in {build_s:.1f}s: "
        f"{len(decoded)} micro-batch messages (mean {statistics.mean(msg_rows):.0f} rows), "
        f"{nbytes / len(all_rows):.0f} B/row; touchpoint_rows decodes {decode_rate:,.0f} rows/s"
    )

    client, tmp = open_chdb("touchpath-sink-bench-")
    measurements: list[Measurement] = []
    summaries: list[Summary] = []
    try:
        server = client.server_version
        overhead = writer_python_overhead(group_lands(decoded, 10), client)
        types = None
        for per_land in sizes:
            lands = group_lands(decoded, per_land)
            names = TABLE_COLUMNS[TABLE]
            column_lands = [[[row[c] for row in rows] for c in names] for rows in lands]
            if types is None:
                migrate(client, "types_probe")
                types = client.create_insert_context(
                    TABLE, names, database="types_probe"
                ).column_types
            for repeat in range(args.repeats):
                for m in measure_repeat(
                    client,
                    lands,
                    column_lands,
                    types,
                    per_land=per_land,
                    repeat=repeat,
                    rows=args.rows,
                ):
                    measurements.append(m)
                    print(
                        f"  {per_land:>3} msg/land  {m.variant:9s} repeat {repeat}: "
                        f"{m.rows_per_s:>9,.0f} rows/s ({m.seconds:.2f}s, {m.inserts} inserts)",
                        flush=True,
                    )
            for variant in VARIANTS:
                ms = [
                    m
                    for m in measurements
                    if m.variant == variant and m.messages_per_land == per_land
                ]
                rate = statistics.median(m.rows_per_s for m in ms)
                summaries.append(
                    Summary(
                        variant=variant,
                        messages_per_land=per_land,
                        mean_rows_per_land=args.rows / len(lands),
                        inserts=len(lands),
                        rows_per_s=rate,
                        mib_per_s=rate * nbytes / args.rows / 2**20,
                        rows_per_cpu_s=statistics.median(args.rows / m.cpu_seconds for m in ms),
                        rows_per_s_all=[round(m.rows_per_s) for m in ms],
                        peak_rss_mib=max(m.peak_rss_mib for m in ms),
                    )
                )
            # ratios are paired: median over repeats of (variant / baseline in that repeat)
            rate = {(m.variant, m.repeat): m.rows_per_s for m in measurements
                    if m.messages_per_land == per_land}  # fmt: skip
            for s in summaries[-len(VARIANTS) :]:
                reps = range(args.repeats)
                s.ratio_vs_raw = statistics.median(
                    rate[s.variant, r] / rate["raw", r] for r in reps
                )
                s.ratio_vs_raw_typed = statistics.median(
                    rate[s.variant, r] / rate["raw_typed", r] for r in reps
                )
            del lands, column_lands
    finally:
        client.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"touchpoints landing, {args.rows:,} rows, chDB {server}, median of {args.repeats}, "
        f"{machine['nproc']} CPUs ({machine['cpu_model']})"
    )
    print_table(
        [
            "msgs/land",
            "rows/land",
            "variant",
            "rows/s",
            "MiB/s",
            "rows/CPU-s",
            "vs raw",
            "vs raw_typed",
            "runs",
            "peak RSS MiB",
        ],
        [
            [
                s.messages_per_land,
                round(s.mean_rows_per_land),
                s.variant,
                round(s.rows_per_s),
                s.mib_per_s,
                round(s.rows_per_cpu_s),
                f"{s.ratio_vs_raw:.2f}",
                f"{s.ratio_vs_raw_typed:.2f}",
                "/".join(f"{r / 1000:.0f}k" for r in s.rows_per_s_all),
                round(s.peak_rss_mib),
            ]
            for s in summaries
        ],
    )
    calibration.append(calibrate_ms())
    print(
        f"writer Python-side cost (transpose + dedup token): {overhead * 1e6:.2f} µs/row; "
        f"process peak RSS {process_peak_rss_mib():.0f} MiB; CPU calibration "
        f"{calibration[0]:.0f} / {calibration[1]:.0f} ms (start / end); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    report = {
        "benchmark": "sink_bench",
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "wall_seconds": round(time.time() - started, 1),
        "command": " ".join(["python -m benchmarks.sink_bench", *(argv or sys.argv[1:])]),
        "machine": {
            **machine,
            "loadavg_at_end": list(os.getloadavg()),
            "calibration_ms_start_end": calibration,
        },
        "chdb_server_version": server,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data": {
            "rows": args.rows,
            "simulated_records": simulated,
            "messages": len(decoded),
            "mean_rows_per_message": statistics.mean(msg_rows),
            "data_bytes": nbytes,
            "bytes_per_row": nbytes / args.rows,
            "touchpoint_rows_decode_rows_per_s": round(decode_rate),
        },
        "writer_python_us_per_row": round(overhead * 1e6, 3),
        "process_peak_rss_mib": round(process_peak_rss_mib(), 1),
        "summary": [asdict(s) for s in summaries],
        "measurements": [asdict(m) for m in measurements],
    }
    write_json(out, report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
