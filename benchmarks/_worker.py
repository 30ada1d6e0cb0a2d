"""End-to-end runs of the real worker: throughput (1 or 2 workers), memory per customer.

Throughput protocol (``e2e``), so that consumption is measured and not production:

1. phase A: one worker of a fresh pipeline (topic prefix, app id, chDB directory) starts;
   the CRM feed is published and applied (``touchpath_profiles_total`` and the customers
   state gauge reach the feed size); the worker stops gracefully (state is in the changelogs);
2. the N raw records are published to the pipeline's raw topic (nobody consumes them yet);
   optional ``before_consume`` callbacks run here (the raw and bare-Faust references read the
   very same topic);
3. phase B: the worker(s) start, recover their state and consume the backlog. The sum of
   ``touchpath_sink_rows_total{table="touchpoints"}`` over the workers is polled every
   ``poll`` seconds; the rate is (valid − rows seen at the first non-zero poll) / (time of
   the poll that saw all valid rows − time of that first poll): first touchpoint landed to
   all valid touchpoints landed, group join and recovery excluded. Pain points and care
   decisions keep landing after the touchpoints; the time the last one landed is recorded
   and gives the stricter ``all_results_events_per_s``. CPU (worker, broker, machine) is
   read from ``/proc`` from the first landed touchpoint to the last landed result.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import (
    CARE_ROWS,
    CUSTOMERS_HELD,
    PAIN_POINT_ROWS,
    TOUCHPOINT_ROWS,
    Pipeline,
    Worker,
    cpu_seconds,
    log,
    machine_busy_seconds,
    wait_for,
)
from benchmarks._kafka import publish_customers, publish_log
from benchmarks._profile import top_functions

#: Appears in ``/metrics`` once ingest's confluent-kafka consumer has partitions assigned.
INGEST_ASSIGNED = "touchpath_consumer_lag_messages"
EVENTS_IN = "touchpath_events_in_total"

PY_SPY = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy"


@dataclass
class E2EResult:
    """What one end-to-end run measured."""

    workers: int
    valid: int
    landed: int
    events_per_s: float
    seconds: float
    per_worker_rows: list[int]
    per_worker_events_per_s: list[float]
    publish: dict[str, Any]
    startup_seconds: float
    first_landed_after_start_s: float
    last_pain_point_after_first_s: float | None
    last_care_after_first_s: float | None
    pain_points: int
    care_decisions: int
    pain_point_ids: set[str] = field(repr=False, default_factory=set)
    landed_totals: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: list[float | None] = field(default_factory=list)
    customers_held: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    #: raw records consumed by ingest per second (its own first → last poll), and when it was
    #: done relative to the first landed touchpoint: where the backlog waits
    ingest_events_per_s: float | None = None
    ingest_done_after_first_landed_s: float | None = None
    #: CPU seconds of the worker(s), the broker and the whole machine, from the first landed
    #: touchpoint to the last landed result
    cpu: dict[str, Any] = field(default_factory=dict)
    #: the stricter rate: events / (first touchpoint landed → last pain point, journey or
    #: care decision landed)
    all_results_events_per_s: float | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-able view (pain point ids summarised)."""
        d = {k: v for k, v in self.__dict__.items() if k != "pain_point_ids"}
        d["pain_point_ids_count"] = len(self.pain_point_ids)
        return d


def _cpu_snapshot(ws: Sequence[Worker], broker_pid: int | None) -> dict[str, Any]:
    """CPU seconds so far of the workers, the broker and the whole machine, and when."""
    busy, total = machine_busy_seconds()
    return {
        "workers": [cpu_seconds(w.pid) or 0.0 for w in ws],
        "broker": (cpu_seconds(broker_pid) or 0.0) if broker_pid else None,
        "machine_busy": busy,
        "machine_total": total,
        "at": time.monotonic(),
    }


def _cpu_use(a: dict[str, Any], b: dict[str, Any], events: int) -> dict[str, Any]:
    """CPU used between two snapshots: per worker, broker, and the machine as a whole."""
    if not a or not b:
        return {}
    wall = max(b["at"] - a["at"], 1e-9)
    workers = [y - x for x, y in zip(a["workers"], b["workers"], strict=True)]
    busy = b["machine_busy"] - a["machine_busy"]
    total = b["machine_total"] - a["machine_total"]
    worker_cpu = sum(workers)
    return {
        "wall_seconds": wall,
        "worker_cpu_seconds": workers,
        "worker_cores_used": worker_cpu / wall,
        "broker_cpu_seconds": (b["broker"] - a["broker"]) if a["broker"] is not None else None,
        "machine_cores_busy": busy / wall,
        "machine_busy_share": busy / total if total else None,
        "other_processes_cores": (busy - worker_cpu) / wall,
        "events_per_worker_cpu_s": events / worker_cpu if worker_cpu > 0 else None,
    }


def apply_profiles(
    pipeline: Pipeline, customers: Sequence[dict[str, Any]], timeout: float = 600.0
) -> Worker:
    """Start worker 0 of ``pipeline``, publish the CRM feed and wait until it is applied
    (profiles counted and held as customer state) and ingest has its raw partitions.
    Returns the running worker.

    Waiting for ingest's assignment before stopping the worker: a confluent-kafka consumer
    closed while its JoinGroup is still pending leaves the embedded broker's (Tansu 0.6.0)
    group stuck; ``Ingestor.close`` avoids that now, and this wait checks ingest is live."""
    w = Worker(pipeline, 0).start()
    w.wait_ready()
    publish_customers(pipeline.bootstrap, pipeline.topic("customers"), customers)
    n = len(customers)

    def applied() -> bool:
        m = w.metrics()
        return m.get("touchpath_profiles_total", 0) >= n and m.get(CUSTOMERS_HELD, 0) >= n

    waited = wait_for(applied, timeout, f"{n} profiles applied", [w])
    log(f"{n:,} profiles applied in {waited:.1f}s")
    wait_for(lambda: INGEST_ASSIGNED in w.metrics(), 120, "ingest partitions assigned", [w])
    return w


def _start_profiler(pid: int, out: Path, rate: int) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` attached to ``pid`` (collapsed stacks to ``out``) until stopped."""
    if not PY_SPY.exists():
        log("py-spy not found: no profile")
        return None
    cmd = [str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--nolineno",
           "--rate", str(rate), "--nonblocking", "-o", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_profiler(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any] | None:
    """Stop py-spy (it writes its output on SIGINT) and summarise the top functions."""
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not out.exists():
        return None
    return top_functions(out.read_text(errors="replace"), 10)


def e2e(
    pipeline: Pipeline,
    records: Sequence[bytes],
    customers: Sequence[dict[str, Any]],
    valid: int,
    *,
    workers: int = 1,
    before_consume: Sequence[Callable[[], None]] = (),
    profile: bool = False,
    profile_rate: int = 50,
    poll: float = 0.25,
    timeout: float = 3600.0,
) -> E2EResult:
    """One end-to-end run (module docstring); ``valid`` is the number of valid records."""
    pipeline.prepare()
    w0 = apply_profiles(pipeline, customers)
    w0.stop()
    raw_topic = pipeline.topic("touchpoints.raw")
    pub = publish_log(pipeline.bootstrap, raw_topic, records)
    log(f"published {pub['records']:,} records to {raw_topic} ({pub['events_per_s']:,.0f}/s)")
    for fn in before_consume:
        fn()

    ws = [Worker(pipeline, i) for i in range(workers)]
    for w in ws:
        w.start()
    t_start = time.monotonic()
    prof_proc: subprocess.Popen[bytes] | None = None
    prof_out = pipeline.root / f"{pipeline.name}-profile.txt"
    try:
        for w in ws:
            w.wait_ready()
        startup = time.monotonic() - t_start
        if profile:
            prof_proc = _start_profiler(ws[0].pid, prof_out, profile_rate)
        log(f"{workers} worker(s) ready in {startup:.1f}s; consuming {len(records):,} records")

        t_first: float | None = None
        rows_first = 0
        t_done: float | None = None
        profile_result: dict[str, Any] | None = None
        t_in_first: float | None = None
        t_in_done: float | None = None
        in_first = 0.0
        last: dict[str, float] = {}
        last_change: dict[str, float] = {}
        per: list[dict[str, float]] = [{} for _ in ws]
        deadline = time.monotonic() + timeout
        snap0: dict[str, Any] = {}
        snap1: dict[str, Any] = {}
        while True:
            now = time.monotonic()
            per = [w.metrics() or p for w, p in zip(ws, per, strict=True)]
            snap = _cpu_snapshot(ws, pipeline.broker_pid)
            tot = Counter[str]()
            for m in per:
                tot.update(
                    {k: m.get(k, 0.0) for k in (TOUCHPOINT_ROWS, PAIN_POINT_ROWS, CARE_ROWS)}
                )
            rows = int(tot[TOUCHPOINT_ROWS])
            consumed = sum(m.get(EVENTS_IN, 0.0) for m in per)
            if t_in_first is None and consumed > 0:
                t_in_first, in_first = now, consumed
            if t_in_done is None and consumed >= len(records):
                t_in_done = now
            if t_first is None and rows > 0:
                t_first, rows_first, snap0 = now, rows, snap
            for k, v in tot.items():
                if v != last.get(k):
                    last[k], last_change[k] = v, now
                    snap1 = snap  # CPU up to the last landed result of any kind
            if t_done is None and rows >= valid:
                t_done = now
                if prof_proc is not None:
                    profile_result = _stop_profiler(prof_proc, prof_out)
                    prof_proc = None
                log(f"all {valid:,} valid touchpoints landed; waiting for results to settle")
            # results settled: nothing new for 3 s after the touchpoints are in
            if t_done is not None and now - max(last_change.values()) >= 3.0:
                break
            for w in ws:
                w.check()
            if now > deadline:
                raise TimeoutError(f"e2e: {rows:,}/{valid:,} touchpoints after {timeout:.0f}s")
            time.sleep(poll)
        assert t_first is not None and t_done is not None
        seconds = max(t_done - t_first, 1e-9)
        rate = (valid - rows_first) / seconds if t_done > t_first else float("nan")
        per_rows = [int(m.get(TOUCHPOINT_ROWS, 0)) for m in per]

        def after_first(key: str) -> float | None:
            return last_change[key] - t_first if last.get(key) else None  # type: ignore[operator]

        ids: set[str] = set()
        totals: Counter[str] = Counter()
        for w in ws:
            ids |= {r["pain_point_id"] for r in w.query("pain_point_ids")}
            for k, v in w.query("landed_totals")[0].items():
                totals[k] += int(v)
        summed: Counter[str] = Counter()
        for m in per:
            for k, v in m.items():
                if k.endswith("_total") or "_total{" in k:
                    summed[k] += v
        counters = dict(summed)
        ingest_rate = None
        if t_in_first is not None and t_in_done is not None and t_in_done > t_in_first:
            ingest_rate = (len(records) - in_first) / (t_in_done - t_in_first)
        # CPU from the first landed touchpoint to the last landed result (pain points and
        # care decisions trail the touchpoints: identify lands them, the journey stage follows)
        cpu = _cpu_use(snap0, snap1, valid - rows_first)
        t_results = max(last_change.values())
        cpu["window"] = "first touchpoint landed → last result (any table) landed"
        res = E2EResult(
            workers=workers,
            valid=valid,
            landed=int(last.get(TOUCHPOINT_ROWS, 0)),
            events_per_s=rate,
            seconds=seconds,
            per_worker_rows=per_rows,
            per_worker_events_per_s=[r / seconds for r in per_rows],
            publish=pub,
            startup_seconds=startup,
            first_landed_after_start_s=t_first - t_start,
            last_pain_point_after_first_s=after_first(PAIN_POINT_ROWS),
            last_care_after_first_s=after_first(CARE_ROWS),
            pain_points=len(ids),
            care_decisions=int(last.get(CARE_ROWS, 0)),
            pain_point_ids=ids,
            landed_totals=dict(totals),
            peak_rss_mb=[w.peak_rss_mb() for w in ws],
            customers_held=int(sum(m.get(CUSTOMERS_HELD, 0) for m in per)),
            counters=counters,
            profile=profile_result,
            ingest_events_per_s=ingest_rate,
            cpu=cpu,
            ingest_done_after_first_landed_s=t_in_done - t_first if t_in_done else None,
            all_results_events_per_s=(valid - rows_first) / max(t_results - t_first, 1e-9),
        )
        log(
            f"e2e x{workers}: {rate:,.0f} ev/s ({seconds:.1f}s first→last landed), "
            f"per worker {per_rows}, {len(ids)} pain points"
        )
        return res
    finally:
        if prof_proc is not None:
            with contextlib.suppress(Exception):
                _stop_profiler(prof_proc, prof_out)
        for w in ws:
            w.stop()


def rss(
    pipeline: Pipeline,
    records: Sequence[bytes],
    customers: Sequence[dict[str, Any]],
    valid: int,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    """Peak RSS (VmHWM) of one worker holding ``customers`` in state after landing
    ``records``; also its RSS right after start (the baseline: Python, Faust, chDB)."""
    pipeline.prepare()
    w = Worker(pipeline, 0).start()
    try:
        w.wait_ready()
        time.sleep(1.0)
        baseline = w.rss_mb() or 0.0
        publish_customers(pipeline.bootstrap, pipeline.topic("customers"), customers)
        publish_log(pipeline.bootstrap, pipeline.topic("touchpoints.raw"), records)
        wait_for(
            lambda: w.metrics().get(TOUCHPOINT_ROWS, 0) >= valid,
            timeout,
            f"{valid:,} touchpoints landed",
            [w],
            interval=1.0,
        )
        # The journey stage trails landing (and a busy worker can miss a scrape): wait
        # until the events it has applied and the customers it holds stop changing.
        last: list[tuple[float, float] | None] = [None]

        def journeys_settled() -> bool:
            m = w.metrics()
            if CUSTOMERS_HELD not in m:
                return False
            now = (m[CUSTOMERS_HELD], m.get("touchpath_event_lag_seconds_count", 0.0))
            done, last[0] = now == last[0], now
            return done

        wait_for(journeys_settled, timeout, "journey stage settled", [w], interval=3.0)
        m = w.metrics()
        peak = w.peak_rss_mb() or 0.0
        held = int(m.get(CUSTOMERS_HELD, 0))
        identity = int(m.get("touchpath_state_keys{table=identity}", 0))
        now_rss = w.rss_mb() or 0.0
    finally:
        w.stop()
    per100k = 100_000 / max(held, 1)
    out = {
        "customers_held": held,
        "identity_keys_held": identity,
        "events": len(records),
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak,
        "rss_at_end_mb": now_rss,
        "state_rss_mb": peak - baseline,
        "state_mb_per_100k_customers": (peak - baseline) * per100k,
        # what a worker holding 100k such customers would peak at: its baseline plus the
        # measured per-customer growth scaled to 100k (= the peak itself when held = 100k)
        "peak_rss_mb_per_100k_customers": baseline + (peak - baseline) * per100k,
    }
    log(
        f"RSS: baseline {baseline:.0f} MiB, peak {peak:.0f} MiB holding {held:,} customers "
        f"→ {out['peak_rss_mb_per_100k_customers']:.0f} MiB per 100k"
    )
    return out
