"""touchpath benchmark suite: the whole pipeline against its references, in one run.

    python -m benchmarks.run [--quick] [--events N [N ...]] [--out FILE]

One embedded broker (Tansu) serves the whole run. For each N (simulator events, a prefix of
one deterministic simulator log in event-time order), on the same raw topic:

* ``raw_consume_events_per_s``  confluent-kafka ``consume(1000)`` + ``orjson.loads`` (fresh
  group): what the Kafka client alone does, the reference;
* ``bare_faust_events_per_s``   a faust-streaming agent that only counts (child process,
  the worker's consumer settings), first to last message;
* ``e2e_events_per_s``          the real worker (``python -m streams.cli worker``), every
  stage on (ingest, identify, journey + rules + care, ClickHouse landing); CRM feed applied
  first, then the N records published while no worker runs, then the worker restarted on
  the backlog: first touchpoint landed → all valid touchpoints landed (see ``_worker``);
* ``backtest_events_per_s``     ``replay.backtest.backtest`` in-process on the same log, with
  the built-in care policy (and without care); the engine's share alone (after the input
  is read, validated and sorted) as ``backtest_engine_events_per_s``.

Once per run: scaling (1 vs 2 workers of one consumer group, each with its own chDB; pain
point ids compared), produce → care-decision latency at 50% of the measured e2e rate
(``_latency``), peak RSS of a worker holding many customers, the sink (``sink_bench``) and,
with ``--profile``, a py-spy profile of a separate e2e run.

Prints a table (metric, value, reference, ratio, target, PASS/MISS) and writes JSON
(``benchmarks/results/latest.json`` by default). Full numbers and discussion:
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._common import (
    Pipeline,
    log,
    machine_info,
    markdown_table,
    rounded,
    text_table,
)
from benchmarks._kafka import bare_faust, raw_consume
from benchmarks._latency import run_latency
from benchmarks._offline import run_backtest, run_sink, write_log
from benchmarks._worker import E2EResult, e2e, rss
from streams.runtime import EmbeddedBroker
from streams.simulator import SimConfig, SimResult, simulate

RESULTS = Path(__file__).resolve().parent / "results"
EVENTS_PER_CUSTOMER_30D = 33.0  # simulator: ~1.1 events per customer per day

#: metric → (kind, target): ``min`` = value must be ≥ target, ``max`` = ≤ target.
TARGETS: dict[str, tuple[str, float]] = {
    "e2e_events_per_s": ("min", 25_000),
    "e2e_to_raw_ratio": ("min", 0.15),
    "e2e_to_bare_faust_ratio": ("min", 2.5),
    "p99_ms": ("max", 250),
    "peak_rss_mb_per_100k_customers": ("max", 300),
    "backtest_events_per_s": ("min", 100_000),
    "sink_to_raw_ratio": ("min", 0.8),
}


# --- data -------------------------------------------------------------------------------------


class SimLog:
    """The first ``n`` records (event-time order) of a simulator run large enough for them."""

    def __init__(self, n: int, seed: int, days: int = 30) -> None:
        customers = max(50, math.ceil(n / (EVENTS_PER_CUSTOMER_30D * days / 30) * 1.03))
        t0 = time.perf_counter()
        while True:
            sim: SimResult = simulate(SimConfig(customers=customers, days=days, seed=seed))
            if len(sim.records) >= n:
                break
            customers = math.ceil(customers * 1.1 * n / max(len(sim.records), 1))
        self.records = sim.records[:n]
        self.customers = sim.customers
        self.malformed = sum(1 for i in sim.malformed if i < n)
        self.valid = n - self.malformed
        self.seconds = time.perf_counter() - t0
        log(
            f"simulated {len(sim.records):,} records ({customers:,} customers, {days} d) in "
            f"{self.seconds:.1f}s; using {n:,} ({self.valid:,} valid)"
        )

    def describe(self) -> dict[str, Any]:
        """What was simulated and used (for the JSON report)."""
        return {
            "records": len(self.records),
            "valid": self.valid,
            "malformed": self.malformed,
            "crm_customers": len(self.customers),
            "simulate_seconds": self.seconds,
        }


# --- the run ----------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, None when either is missing or ``b`` is 0."""
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def compare_ids(a: set[str], b: set[str]) -> dict[str, Any]:
    """How two sets of pain point ids agree."""
    return {
        "identical": a == b,
        "left": len(a),
        "right": len(b),
        "both": len(a & b),
        "only_left": len(a - b),
        "only_right": len(b - a),
        "examples_only_left": sorted(a - b)[:5],
        "examples_only_right": sorted(b - a)[:5],
    }


def run_size(
    broker: EmbeddedBroker, root: Path, n: int, args: argparse.Namespace
) -> tuple[dict[str, Any], E2EResult, SimLog]:
    """Raw, bare Faust, e2e and backtest figures for ``n`` events."""
    data = SimLog(n, args.seed)
    pipe = Pipeline(broker.bootstrap, root, broker.pid)
    raw_topic = pipe.topic("touchpoints.raw")
    refs: dict[str, Any] = {}

    def do_raw() -> None:
        refs["raw"] = raw_consume(broker.bootstrap, raw_topic, n)
        log(f"raw consume: {refs['raw']['events_per_s']:,.0f} ev/s")

    def do_bare() -> None:
        refs["bare"] = bare_faust(broker.bootstrap, raw_topic, n, root)
        log(f"bare Faust: {refs['bare']['events_per_s']:,.0f} ev/s")

    steps: list[Callable[[], None]] = [do_raw]
    if "bare" not in args.skip:
        steps.append(do_bare)
    res = e2e(pipe, data.records, data.customers, data.valid, before_consume=steps)
    out: dict[str, Any] = {
        "events": n,
        "data": data.describe(),
        "pipeline": pipe.name,
        "raw_consume": refs["raw"],
        "bare_faust": refs.get("bare"),
        "e2e": res.summary(),
        "raw_consume_events_per_s": refs["raw"]["events_per_s"],
        "bare_faust_events_per_s": refs.get("bare", {}).get("events_per_s"),
        "e2e_events_per_s": res.events_per_s,
    }
    out["e2e_to_raw_ratio"] = ratio(res.events_per_s, out["raw_consume_events_per_s"])
    out["e2e_to_bare_faust_ratio"] = ratio(res.events_per_s, out["bare_faust_events_per_s"])
    # CPU-normalised: events per CPU-second of the consuming process (robust to a busy box)
    out["raw_events_per_cpu_s"] = refs["raw"].get("events_per_cpu_s")
    out["bare_faust_events_per_cpu_s"] = refs.get("bare", {}).get("events_per_cpu_s")
    out["e2e_events_per_worker_cpu_s"] = res.cpu.get("events_per_worker_cpu_s")
    out["e2e_machine_cores_busy"] = res.cpu.get("machine_cores_busy")
    out["e2e_all_results_events_per_s"] = res.all_results_events_per_s
    out["e2e_worker_cores_used"] = res.cpu.get("worker_cores_used")
    if "backtest" not in args.skip:
        events, customers = write_log(root / f"log-{n}", data.records, data.customers)
        bt = run_backtest(events, customers, care=True)
        bt_nc = run_backtest(events, customers, care=False)
        out["live_vs_backtest_pain_points"] = compare_ids(res.pain_point_ids, bt["pain_point_ids"])
        out["backtest"] = {k: v for k, v in bt.items() if k != "pain_point_ids"}
        out["backtest_no_care"] = {k: v for k, v in bt_nc.items() if k != "pain_point_ids"}
        out["backtest_events_per_s"] = bt["events_per_s"]
        out["backtest_no_care_events_per_s"] = bt_nc["events_per_s"]
        out["backtest_engine_events_per_s"] = bt["engine_events_per_s"]
    return out, res, data


def run_scaling(
    broker: EmbeddedBroker, root: Path, data: SimLog, single: E2EResult
) -> dict[str, Any]:
    """Two workers in one group on the same log; pain point ids vs the single worker's."""
    pipe = Pipeline(broker.bootstrap, root, broker.pid)
    two = e2e(pipe, data.records, data.customers, data.valid, workers=2)
    return {
        "events": len(data.records),
        "one_worker_events_per_s": single.events_per_s,
        "two_workers_events_per_s": two.events_per_s,
        "speedup": ratio(two.events_per_s, single.events_per_s),
        "two_workers_per_worker_events_per_s": two.per_worker_events_per_s,
        "two_workers_per_worker_rows": two.per_worker_rows,
        "pain_point_ids": compare_ids(two.pain_point_ids, single.pain_point_ids),
        "two_workers": two.summary(),
    }


def status(metric: str, value: float | None) -> tuple[float | None, str]:
    """Target and PASS/MISS of ``metric`` (blank when it has no target)."""
    if metric not in TARGETS:
        return None, ""
    kind, target = TARGETS[metric]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return target, "n/a"
    ok = value >= target if kind == "min" else value <= target
    return target, "PASS" if ok else "MISS"


def target_text(metric: str) -> str:
    """The target of ``metric`` as text (``≥ 25,000``), blank when it has none."""
    if metric not in TARGETS:
        return ""
    kind, target = TARGETS[metric]
    if metric == "sink_to_raw_ratio":
        return "≥ 80% raw"
    unit = {"p99_ms": " ms", "peak_rss_mb_per_100k_customers": " MB"}.get(metric, "")
    value = f"{target:,.0f}" if target >= 100 else f"{target:g}"
    return f"{'≥' if kind == 'min' else '≤'} {value}{unit}"


def table_rows(report: dict[str, Any]) -> list[list[Any]]:
    """metric, N, value, reference, ratio, target, status."""
    rows: list[list[Any]] = []

    def add(metric: str, n: Any, value: Any, ref: Any = None, rat: Any = None) -> None:
        rows.append([metric, n, value, ref, rat, target_text(metric), status(metric, value)[1]])

    for n, r in report["runs"].items():
        raw, bare, e = (
            r["raw_consume_events_per_s"],
            r["bare_faust_events_per_s"],
            r["e2e_events_per_s"],
        )
        add("raw_consume_events_per_s", n, raw)
        add("bare_faust_events_per_s", n, bare, raw, ratio(bare, raw))
        add("e2e_events_per_s", n, e, raw, ratio(e, raw))
        add("  e2e until all results landed", n, r.get("e2e_all_results_events_per_s"))
        add("e2e_to_raw_ratio", n, r["e2e_to_raw_ratio"])
        add("e2e_to_bare_faust_ratio", n, r["e2e_to_bare_faust_ratio"])
        rc, bc, ec = (
            r["raw_events_per_cpu_s"],
            r["bare_faust_events_per_cpu_s"],
            r["e2e_events_per_worker_cpu_s"],
        )
        add("  raw events per CPU-s", n, rc)
        add("  bare Faust events per CPU-s", n, bc, rc, ratio(bc, rc))
        add("  e2e events per worker CPU-s", n, ec, bc, ratio(ec, bc))
        add("  e2e: worker cores used", n, r["e2e_worker_cores_used"])
        add("  e2e: machine cores busy (all)", n, r["e2e_machine_cores_busy"])
        if "backtest_events_per_s" in r:
            add("backtest_events_per_s", n, r["backtest_events_per_s"])
            add("backtest_no_care_events_per_s", n, r["backtest_no_care_events_per_s"])
            if "backtest_engine_events_per_s" in r:
                add("  backtest: engine alone", n, r["backtest_engine_events_per_s"])
    lat = report.get("latency")
    if lat:
        rate = f"@{lat['rate_achieved']:,.0f}/s"
        add("p50_ms", rate, lat["p50_ms"])
        add("p99_ms", rate, lat["p99_ms"])
        pp = lat["produce_to_pain_point_emitted"]
        add("  pain point emitted, p99 ms", rate, pp["p99_ms"])
    m = report.get("rss")
    if m:
        held = f"{m['customers_held']:,} cust"
        add("peak_rss_mb_per_100k_customers", held, m["peak_rss_mb_per_100k_customers"])
        add("peak_rss_mb (absolute)", held, m["peak_rss_mb"], m["baseline_rss_mb"])
    s = report.get("sink")
    if s:
        rat = s["sink_to_raw_ratio"]
        rows.append(
            ["sink_rows_per_s", f"{s['rows']:,} rows", s["sink_rows_per_s"], s["raw_rows_per_s"],
             rat, target_text("sink_to_raw_ratio"), status("sink_to_raw_ratio", rat)[1]]
        )  # fmt: skip
    sc = report.get("scaling")
    if sc:
        n = sc["events"]
        rows.append(
            ["e2e 2 workers (sum)", n, sc["two_workers_events_per_s"],
             sc["one_worker_events_per_s"], sc["speedup"], "", ""]
        )  # fmt: skip
        for i, v in enumerate(sc["two_workers_per_worker_events_per_s"]):
            rows.append([f"  worker {i}", n, v, None, None, "", ""])
        same = sc["pain_point_ids"]["identical"]
        rows.append(
            ["pain point ids 2 workers == 1", n, "identical" if same else "DIFFER",
             sc["pain_point_ids"]["right"], None, "identical", "PASS" if same else "MISS"]
        )  # fmt: skip
    return rows


HEADERS = ["metric", "N", "value", "reference", "ratio", "target", "status"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="touchpath benchmark suite: raw Kafka consume, bare Faust, the real worker "
        "end to end, latency to care decision, memory per customer, backtest, sink and "
        "scaling, in one run on one embedded broker.",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small version: 20k events, no scaling, small latency and memory runs (~2 min)",
    )
    ap.add_argument(
        "--events",
        type=int,
        nargs="+",
        default=None,
        help="simulator events per size (default 100000 1000000; --quick: 20000)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="JSON report path")
    ap.add_argument("--seed", type=int, default=7, help="simulator seed")
    ap.add_argument(
        "--scaling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="1-vs-2-worker comparison (default: on; off with --quick)",
    )
    ap.add_argument(
        "--scaling-events",
        type=int,
        default=None,
        help="N of the 1-vs-2-worker comparison (default: the smallest --events)",
    )
    ap.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="events/s of the latency run (default: 50%% of the highest measured e2e rate)",
    )
    ap.add_argument(
        "--latency-seconds",
        type=float,
        default=None,
        help="measured window in s (default 20; quick 4)",
    )
    ap.add_argument(
        "--rss-customers",
        type=int,
        default=None,
        help="CRM customers of the memory run (default 100000; quick 2000)",
    )
    ap.add_argument("--rss-days", type=int, default=2, help="simulated days of the memory run")
    ap.add_argument(
        "--sink-rows", type=int, default=None, help="rows of the sink run (default 200000)"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also run py-spy on a separate e2e run (smallest N) and report the top functions",
    )
    ap.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["bare", "backtest", "latency", "rss", "sink"],
        help="parts to leave out",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    q = args.quick
    args.events = args.events or ([20_000] if q else [100_000, 1_000_000])
    args.latency_seconds = args.latency_seconds or (4.0 if q else 20.0)
    args.rss_customers = args.rss_customers or (2_000 if q else 100_000)
    if args.scaling is None:
        args.scaling = not q
    args.sink_rows = args.sink_rows or (20_000 if q else 200_000)
    args.scaling_events = args.scaling_events or min(args.events)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the suite; print the table, write the JSON report and return it."""
    args = parse_args(argv)
    started = time.time()
    machine = machine_info()
    log(f"machine: {machine['nproc']} CPUs, load {machine['loadavg_at_start']}")
    root = Path(tempfile.mkdtemp(prefix="touchpath-bench-"))
    report: dict[str, Any] = {
        "benchmark": "touchpath benchmarks.run",
        "command": "python -m benchmarks.run "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine,
        "runs": {},
    }
    broker = EmbeddedBroker(log_dir=root / "broker").start()
    try:
        singles: dict[int, tuple[E2EResult, SimLog]] = {}
        for n in args.events:
            log(f"=== N = {n:,} ===")
            out, res, data = run_size(broker, root, n, args)
            report["runs"][str(n)] = out
            singles[n] = (res, data)
        if args.scaling:
            n = args.scaling_events
            if n not in singles:
                _, res, data = run_size(broker, root, n, args)
                singles[n] = (res, data)
            log(f"=== scaling: 2 workers, N = {n:,} ===")
            report["scaling"] = run_scaling(broker, root, singles[n][1], singles[n][0])
        if args.profile:
            n = min(singles)
            log(f"=== profile: py-spy on a separate e2e run, N = {n:,} ===")
            data = singles[n][1]
            prof = e2e(
                Pipeline(broker.bootstrap, root, broker.pid),
                data.records,
                data.customers,
                data.valid,
                profile=True,
            )
            report["profile"] = {
                "events": n,
                "e2e_events_per_s_while_profiled": prof.events_per_s,
                "sampler": "py-spy record --nonblocking --rate 50 --format raw --nolineno",
                **(prof.profile or {}),
            }
        best = max(r.events_per_s for r, _ in singles.values())
        if "latency" not in args.skip:
            rate = args.latency_rate or 0.5 * best
            log(f"=== latency at {rate:,.0f} ev/s ===")
            report["latency"] = run_latency(
                Pipeline(broker.bootstrap, root, broker.pid),
                rate,
                seconds=args.latency_seconds,
                warmup=2.0 if args.quick else 5.0,
                tail=2.0 if args.quick else 3.0,
            )
            report["latency"]["rate_basis"] = (
                "--latency-rate" if args.latency_rate else f"50% of max e2e ({best:,.0f} ev/s)"
            )
        if "rss" not in args.skip:
            log(f"=== memory: {args.rss_customers:,} customers, {args.rss_days} days ===")
            sim = simulate(SimConfig(customers=args.rss_customers, days=args.rss_days, seed=11))
            valid = len(sim.records) - len(sim.malformed)
            report["rss"] = rss(
                Pipeline(broker.bootstrap, root, broker.pid), sim.records, sim.customers, valid
            )
            report["rss"]["crm_customers"] = args.rss_customers
            report["rss"]["days"] = args.rss_days
            del sim
    finally:
        broker.stop()
    if "sink" not in args.skip:
        log(f"=== sink: {args.sink_rows:,} rows ===")
        report["sink"] = run_sink(args.sink_rows, 1 if args.quick else 3, root)

    headline = report["runs"][str(max(args.events))]
    report["headline_events"] = max(args.events)
    for key in (
        "e2e_events_per_s",
        "raw_consume_events_per_s",
        "e2e_to_raw_ratio",
        "bare_faust_events_per_s",
        "e2e_to_bare_faust_ratio",
        "backtest_events_per_s",
        "backtest_no_care_events_per_s",
        "backtest_engine_events_per_s",
    ):
        report[key] = headline.get(key)
    lat, mem, sink = report.get("latency"), report.get("rss"), report.get("sink")
    report["p50_ms"] = lat["p50_ms"] if lat else None
    report["p99_ms"] = lat["p99_ms"] if lat else None
    report["peak_rss_mb_per_100k_customers"] = (
        mem["peak_rss_mb_per_100k_customers"] if mem else None
    )
    report["sink_rows_per_s"] = sink["sink_rows_per_s"] if sink else None
    report["sink_to_raw_ratio"] = sink["sink_to_raw_ratio"] if sink else None
    report["targets"] = {
        k: {"target": target_text(k), "value": report.get(k), "status": status(k, report.get(k))[1]}
        for k in TARGETS
    }
    rows = table_rows(report)
    report["table_markdown"] = markdown_table(HEADERS, rows)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_seconds"] = time.time() - started

    print()
    print(
        f"touchpath benchmarks — {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"commit {machine['git_commit']}, load {machine['loadavg_at_start']} → "
        f"{report['machine']['loadavg_at_end']}"
    )
    print(text_table(HEADERS, rows))
    if report.get("profile"):
        print("\nworker top functions by own time (py-spy):")
        for row in report["profile"].get("top_own", []):
            print(f"  {row['share']:6.1%}  {row['function']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rounded(report), indent=2, default=str) + "\n")
    print(f"\nwrote {args.out} ({report['wall_seconds']:.0f}s)")
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
