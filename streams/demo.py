"""``touchpath demo``: the whole pipeline on the embedded default, with a live view.

Starts the embedded broker, a worker process (which owns embedded ClickHouse), and the
simulator as producer; shows progress from the worker's ``/metrics``; then reads the
summary back from ClickHouse through the worker's query API and compares it with what
the simulator generated.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.config import Settings
from streams.runtime import EmbeddedBroker, free_port, spawn, stop_process
from streams.simulator import SimConfig, publish, simulate
from streams.worker import prepare_kafka


@dataclass(frozen=True)
class DemoOptions:
    customers: int = 2000
    days: int = 30
    duration: float = 20.0
    seed: int = 7
    keep: bool = False
    timeout: float = 180.0


class WorkerClient:
    """Reads a worker's metrics and named queries over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=5.0)

    def ready(self) -> bool:
        try:
            return self.http.get("/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def counters(self) -> dict[str, float]:
        """Sum of every ``*_total`` sample by metric name (labels summed), plus per-label."""
        text = self.http.get("/metrics").text
        sums: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name.endswith("_total"):
                    sums[s.name] = sums.get(s.name, 0.0) + s.value
                    for k, v in s.labels.items():
                        key = f"{s.name}{{{k}={v}}}"
                        sums[key] = sums.get(key, 0.0) + s.value
        return sums

    def query(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of the worker's named query ``name`` (parameters as query-string values)."""
        # Longer than the other calls: a scan on a worker busy with a backlog takes seconds.
        r = self.http.get(
            f"/api/query/{name}", params={k: str(v) for k, v in params.items()}, timeout=30.0
        )
        r.raise_for_status()
        return r.json()["rows"]


def run_demo(settings: Settings, opts: DemoOptions, console: Console) -> bool:
    """Run the demo; returns True when ClickHouse holds exactly what was generated."""
    data_dir = (settings.data_dir / "demo").resolve()
    shutil.rmtree(data_dir, ignore_errors=True)
    (data_dir / "logs").mkdir(parents=True)

    console.print(f"[bold]touchpath demo[/] — {opts.customers} customers, {opts.days} days")
    sim = simulate(SimConfig(customers=opts.customers, days=opts.days, seed=opts.seed))
    m = sim.manifest
    console.print(
        f"simulated {m['events_total']} records ({m['events_malformed']} malformed on purpose), "
        f"{len(sim.ground_truth)} injected pain points"
    )
    broker = EmbeddedBroker(log_dir=data_dir / "logs").start()
    worker_proc = None
    try:
        console.print(f"broker   : [cyan]{broker.bootstrap}[/] (embedded Kafka protocol, Tansu)")
        settings = settings.model_copy(
            update={"kafka_bootstrap": broker.bootstrap, "data_dir": data_dir}
        )
        prepare_kafka(settings, broker.bootstrap)
        port = free_port()
        env = {
            **os.environ,
            "TOUCHPATH_KAFKA_BOOTSTRAP": broker.bootstrap,
            "TOUCHPATH_DATA_DIR": str(data_dir),
            "TOUCHPATH_WEB_PORT": str(port),
            "TOUCHPATH_LOG_LEVEL": "warn",
        }
        worker_log = data_dir / "logs" / "worker.log"
        worker_proc = spawn(
            [sys.executable, "-m", "streams.cli", "worker"], env=env, log_path=worker_log
        )
        client = WorkerClient(f"http://127.0.0.1:{port}")
        _wait_ready(client, worker_proc, worker_log, timeout=90)
        console.print(f"worker   : [cyan]http://127.0.0.1:{port}[/] (/metrics /health /api/query)")
        console.print(f"ClickHouse: embedded chDB in {settings.chdb_path}")
        _send_profiles(settings, sim.customers, client)
        ok = _run_traffic(settings, sim, opts, client, console)
        _wait_pain_points(client, len(sim.ground_truth), timeout=60)
        ok = _summary(client, m, sim.ground_truth, console) and ok
        if opts.keep:
            console.print("[bold]--keep[/]: running; Ctrl-C to stop.")
            while worker_proc.poll() is None:
                time.sleep(1)
        return ok
    except KeyboardInterrupt:
        console.print("interrupted: stopping the worker and the broker")
        raise
    finally:
        if worker_proc is not None:
            stop_process(worker_proc, timeout=15)
        broker.stop()


def _wait_ready(client: WorkerClient, proc: Any, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError("worker exited during start-up: " + " | ".join(tail))
        if client.ready():
            return
        time.sleep(0.3)
    raise RuntimeError(f"worker not ready within {timeout:.0f} s (see {log_path})")


def _send_profiles(
    settings: Settings, customers: list[dict[str, Any]], client: WorkerClient
) -> None:
    """The CRM feed first, so phone/loyalty-only events are attributed as they arrive."""
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap, **settings.kafka_client_config()})
    topic = settings.topic(settings.topic_customers)
    for c in customers:
        p.produce(topic, orjson.dumps(c), c["customer_id"].encode())
    p.flush(30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if client.counters().get("touchpath_profiles_total", 0) >= len(customers):
            return
        time.sleep(0.3)


def _wait_pain_points(client: WorkerClient, want: int, timeout: float) -> None:
    """Pain points decided by timers land a moment after the last touchpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(client.query("pain_point_ids")) < want:
        time.sleep(0.5)


def _run_traffic(
    settings: Settings, sim: Any, opts: DemoOptions, client: WorkerClient, console: Console
) -> bool:
    total = len(sim.records)
    rate = total / opts.duration if opts.duration > 0 else None
    sent = [0]

    def produce() -> None:
        sent[0] = publish(
            sim.records,
            bootstrap=settings.kafka_bootstrap,
            topic=settings.topic(settings.topic_raw),
            rate=rate,
            client_config=settings.kafka_client_config(),
            progress=lambda n: sent.__setitem__(0, n),
            flush_timeout=10.0,
            stop=stop,
        )

    stop = threading.Event()
    producer = threading.Thread(target=produce, name="demo-producer", daemon=True)
    started = time.monotonic()
    producer.start()
    expected_rows = sim.manifest["events_valid"] + sim.manifest["events_malformed"]
    columns = (
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
    )
    deadline = started + opts.timeout
    try:
        with Progress(*columns, console=console) as progress:
            t_sent = progress.add_task("produced", total=total, extra="")
            t_in = progress.add_task("ingested", total=total, extra="")
            t_land = progress.add_task("landed", total=expected_rows, extra="")
            while time.monotonic() < deadline:
                c = client.counters()
                n_in = int(c.get("touchpath_events_in_total", 0))
                dead = int(c.get("touchpath_events_dead_lettered_total", 0))
                # the touchpoints and dead letters themselves: rows of the other tables
                # (journeys, pain points, links) must not stand in for them
                landed = int(
                    c.get("touchpath_sink_rows_total{table=touchpoints}", 0)
                    + c.get("touchpath_sink_rows_total{table=dead_letters}", 0)
                )
                elapsed = max(time.monotonic() - started, 1e-6)
                progress.update(t_sent, completed=sent[0], extra=f"{sent[0] / elapsed:,.0f} ev/s")
                progress.update(t_in, completed=n_in, extra=f"{dead} dead letters")
                progress.update(t_land, completed=landed, extra="rows in ClickHouse")
                if not producer.is_alive() and landed >= expected_rows:
                    break
                time.sleep(0.5)
    finally:
        stop.set()  # on Ctrl-C too: the producer lets go of the broker before it stops
        producer.join(timeout=15)
    elapsed = time.monotonic() - started
    console.print(f"pipeline drained in {elapsed:.1f} s ({total / elapsed:,.0f} events/s overall)")
    return landed >= expected_rows


def _summary(
    client: WorkerClient,
    manifest: dict[str, Any],
    ground_truth: list[dict[str, Any]],
    console: Console,
) -> bool:
    totals = client.query("landed_totals")[0]
    by_reason = {r["reason"]: int(r["n"]) for r in client.query("dead_letters_by_reason")}
    by_channel = client.query("landed_by_channel")
    t = Table(title="summary (read back from ClickHouse)")
    t.add_column("what")
    t.add_column("generated", justify="right")
    t.add_column("in ClickHouse", justify="right")
    t.add_column("")
    ok = True

    def row(what: str, expected: int | None, got: int) -> None:
        nonlocal ok
        good = expected is None or expected == got
        ok = ok and good
        mark = "" if expected is None else ("[green]✓[/]" if good else "[red]✗[/]")
        t.add_row(what, "" if expected is None else str(expected), str(got), mark)

    row("valid touchpoints", manifest["events_valid"], int(totals["touchpoints"]))
    row("dead letters", manifest["events_malformed"], int(totals["dead_letters"]))
    for reason, n in sorted(manifest["malformed_by_reason"].items()):
        row(f"  dead: {reason}", n, by_reason.get(reason, 0))
    for r in by_channel:
        row(f"  channel: {r['channel']}", None, int(r["events"]))
    row("customers named by customer_id", None, int(totals["customers"]))
    found = client.query("pain_point_ids")
    truth = {(g["customer_id"], g["rule_id"], g["anchor_event_id"]) for g in ground_truth}
    got = {(r["customer_id"], r["rule_id"], r["anchor_event_id"]) for r in found}
    row("pain points (injected → found)", len(truth), len(truth & got))
    row("pain points on clean journeys", 0, len(got - truth))
    by_rule: dict[str, int] = {}
    for _, rule_id, _ in got:
        by_rule[rule_id] = by_rule.get(rule_id, 0) + 1
    for rule_id, n in sorted(by_rule.items()):
        row(f"  pain: {rule_id}", None, n)
    # care decided per status (no webhook is configured in the demo: decided and recorded)
    for r in client.query("care_status_totals"):
        row(f"  care: {r['status']}", None, int(r["actions"]))
    console.print(t)
    console.print("[green]all counts match[/]" if ok else "[red]counts differ[/]")
    return ok
