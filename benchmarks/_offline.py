"""In-process figures: the backtest over the same log, and the ClickHouse sink."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarks._common import REPO, log
from replay.backtest import backtest
from schemas.validation import Validator
from streams.config import Settings
from streams.engine.care import CareEngine, load_policy
from streams.engine.rules import builtin_rules


def write_log(
    directory: Path, records: Sequence[bytes], customers: Sequence[dict[str, Any]]
) -> tuple[Path, Path]:
    """``events.jsonl.gz`` (fast compression) and ``customers.jsonl`` for the backtest."""
    directory.mkdir(parents=True, exist_ok=True)
    events, cust = directory / "events.jsonl.gz", directory / "customers.jsonl"
    with gzip.open(events, "wb", compresslevel=1) as gz:
        for i in range(0, len(records), 10_000):
            gz.write(b"".join(r + b"\n" for r in records[i : i + 10_000]))
    cust.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in customers))
    return events, cust


def run_backtest(events: Path, customers: Path, *, care: bool) -> dict[str, Any]:
    """``replay.backtest.backtest`` over the log (read, validate, sort, engine), events/s."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    res = backtest(
        [events],
        builtin_rules(),
        validator=Validator.from_settings(Settings(_env_file=None)),
        customers_path=customers,
        care=CareEngine(load_policy()) if care else None,
        phase=lambda name: marks.setdefault(name, time.perf_counter()),
    )
    seconds = time.perf_counter() - t0
    # the phases: reading (read, validate, sort input), running (the engine, output sorted)
    reading = marks["running"] - marks["reading"]
    running = t0 + seconds - marks["running"]
    out = {
        "care": care,
        "events": res.events,
        "seconds": seconds,
        "events_per_s": res.events / seconds,
        "read_validate_seconds": reading,
        "engine_seconds": running,
        "engine_events_per_s": res.events / running,
        "pain_points": len(res.pain_points),
        "care_actions": len(res.care_actions),
        "invalid": sum(res.invalid.values()),
    }
    log(
        f"backtest (care={care}): {out['events_per_s']:,.0f} ev/s (engine alone "
        f"{out['engine_events_per_s']:,.0f}), {out['pain_points']} pains"
    )
    out["pain_point_ids"] = {p["pain_point_id"] for p in res.pain_points}
    return out


def run_sink(rows: int, repeats: int, work_dir: Path) -> dict[str, Any]:
    """``benchmarks.sink_bench`` in a child process (chDB allows one data directory per
    process): ``ClickHouseWriter.write+flush`` per land of 10 micro-batch messages vs a raw
    clickhouse-connect columnar insert of the same rows; medians of ``repeats``."""
    out = work_dir / "sink_bench.json"
    cmd = [sys.executable, "-m", "benchmarks.sink_bench", "--rows", str(rows),
           "--messages", "10", "--repeats", str(repeats), "--out", str(out)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"sink_bench failed:\n{proc.stderr[-2000:]}")
    report = json.loads(out.read_text())
    by = {s["variant"]: s for s in report["summary"]}
    res = {
        "rows": rows,
        "repeats": repeats,
        "messages_per_land": 10,
        "rows_per_land": by["sink"]["mean_rows_per_land"],
        "sink_rows_per_s": by["sink"]["rows_per_s"],
        "raw_rows_per_s": by["raw"]["rows_per_s"],
        "raw_typed_rows_per_s": by["raw_typed"]["rows_per_s"],
        "sink_to_raw_ratio": by["sink"]["rows_per_s"] / by["raw"]["rows_per_s"],
        "wall_seconds": time.perf_counter() - t0,
        "source": "benchmarks.sink_bench (subprocess)",
    }
    log(
        f"sink: {res['sink_rows_per_s']:,.0f} rows/s vs raw {res['raw_rows_per_s']:,.0f} "
        f"({res['sink_to_raw_ratio']:.0%})"
    )
    return res
