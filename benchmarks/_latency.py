"""Produce → care-decision latency at a fixed, real-time rate.

The stream: ``customers`` CRM profiles (tier B, SMS consent, a fixed-offset time zone in
which it is around noon now, so the quiet hours 21:00–08:00 never hold the SMS); then, at
``rate`` events/s with ``occurred_at`` = the wall-clock time each is produced, a mix like
the simulator's: a share ``pain_share`` (default 2%) of call-centre ``answered`` events with
``wait_seconds`` 420, each for another customer, and web ``page_view`` events of the same
customers for the rest (they cost the normal per-event path and move the watermark). Each
call fires ``long_queue`` (threshold ``wait_seconds > 300``) at once and the care policy
answers tier B with an SMS (``sent``: one long queue per customer, so no cooldown).

A consumer reads ``pain-points`` and ``care-actions``; each decision is mapped back to its
call through its ``pain_point_id`` (uuid5 of rule, customer and anchor event, recomputed
here). Latency = Kafka CreateTime of the decision's message (when the worker produced it)
− the wall time the call was produced; the same for the pain point message; and, less
exact (our consumer shares the CPUs), when our consumer received the decision. Only calls
of the measured window count (after ``warmup`` seconds, before the ``tail`` that keeps
the watermark moving past the last measured call).

Care is decided in event-time order once the low watermark (over all raw partitions,
forwarded ingest → identify → journey) has passed the pain point's time, so the latency
includes waiting for every partition to deliver a later event plus the watermark hops.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from benchmarks._common import TOUCHPOINT_ROWS, Pipeline, Worker, log
from benchmarks._worker import apply_profiles
from streams.engine.ids import pain_point_id


def noon_zone(now: datetime | None = None) -> str:
    """A fixed-offset IANA zone (``Etc/GMT±h``) in which it is about noon at ``now``."""
    now = now or datetime.now(UTC)
    offset = 12 - now.hour  # hours east of UTC
    if offset > 14:
        offset -= 24
    if offset < -12:
        offset += 24
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _stats(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }


class _Collector(threading.Thread):
    """Consumes the pipeline's topics from the beginning and remembers, per event id of a
    call, the CreateTime of the first message that carried it out of each stage: ingest
    (``touchpoints.valid``), identify (``journey.events``), journey (``pain-points``), and the
    care decision (``care-actions``) with the time we received it and its status."""

    def __init__(self, bootstrap: str, pipeline: Pipeline, calls: dict[str, str]) -> None:
        super().__init__(name="latency-collector", daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-latency-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                "log_level": 0,
            }
        )
        self.t_valid = pipeline.topic("touchpoints.valid")
        self.t_events = pipeline.topic("journey.events")
        self.t_pains = pipeline.topic("pain-points")
        self.t_care = pipeline.topic("care-actions")
        # assigned, not subscribed: a group join on the embedded broker takes seconds
        parts = []
        for t in (self.t_valid, self.t_events, self.t_pains, self.t_care):
            meta = self.consumer.list_topics(t, timeout=10).topics[t]
            parts += [TopicPartition(t, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        self.consumer.assign(parts)
        self.calls = calls  # event id -> pain point id (filled by the producer)
        self.hops: dict[str, dict[str, float]] = {
            "ingest": {},  # event id -> CreateTime
            "identify": {},
            "pain_point": {},  # pain point id -> CreateTime
        }
        self.care_at: dict[str, tuple[float, float, str]] = {}  # ppid -> (CreateTime, recv, st)
        self.stop_flag = threading.Event()

    def _events(self, hop: str, created: float, ids: list[str]) -> None:
        seen = self.hops[hop]
        for eid in ids:
            if eid in self.calls and eid not in seen:
                seen[eid] = created

    def run(self) -> None:
        loads = orjson.loads
        try:
            while not self.stop_flag.is_set():
                for m in self.consumer.consume(1000, 0.05):
                    if m.error() is not None:
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            log(f"latency consumer: {m.error()}")
                        continue
                    recv = time.time()
                    created = m.timestamp()[1] / 1000.0
                    topic = m.topic()
                    obj = loads(m.value())
                    if topic == self.t_valid:
                        ids = [it["tp"]["event_id"] for it in obj.get("items") or ()]
                        self._events("ingest", created, ids)
                    elif topic == self.t_events:
                        ids = [it["ev"]["event_id"] for it in obj.get("items") or () if "ev" in it]
                        self._events("identify", created, ids)
                    elif topic == self.t_pains:
                        self.hops["pain_point"].setdefault(obj["pain_point_id"], created)
                    else:
                        for a in obj.get("actions") or ():
                            pp = a.get("pain_point_id")
                            if pp and pp not in self.care_at:
                                self.care_at[pp] = (created, recv, a.get("status", "?"))
        finally:
            self.consumer.close()


def _record(run: str, i: int, cid: str, now: float, pain: bool) -> bytes:
    at = datetime.fromtimestamp(now, UTC).isoformat()
    if pain:
        rec: dict[str, Any] = {
            "event_id": f"lat-{run}-{i}",
            "channel": "call_centre",
            "type": "answered",
            "occurred_at": at,
            "identifiers": {"customer_id": cid},
            "call_id": f"call-{run}-{i}",
            "wait_seconds": 420,
        }
    else:
        rec = {
            "event_id": f"lat-{run}-{i}",
            "channel": "web",
            "type": "page_view",
            "occurred_at": at,
            "identifiers": {"customer_id": cid},
            "session_id": f"s-{run}-{cid}",
            "url": "/products",
        }
    return orjson.dumps(rec)


def run_latency(
    pipeline: Pipeline,
    rate: float,
    *,
    seconds: float,
    warmup: float = 5.0,
    tail: float = 3.0,
    pain_share: float = 0.02,
    min_customers: int = 2_000,
    drain: float = 30.0,
) -> dict[str, Any]:
    """Produce at ``rate`` events/s for ``warmup + seconds + tail`` and measure the calls of
    the ``seconds`` window (module docstring)."""
    pipeline.prepare()
    total = int(rate * (warmup + seconds + tail))
    every = max(1, round(1 / pain_share))
    n_pain = (total + every - 1) // every
    n_cust = max(n_pain, min_customers)
    tz = noon_zone()
    run = pipeline.name
    cids = [f"LAT{run}-{i:06d}" for i in range(n_cust)]
    profiles = [
        {
            "customer_id": c,
            "tier": "B",
            "timezone": tz,
            "consents": {"sms": True, "email": True, "call": True},
        }
        for c in cids
    ]
    w: Worker = apply_profiles(pipeline, profiles)
    calls: dict[str, str] = {}  # event id of each call -> its pain point id
    collector = _Collector(pipeline.bootstrap, pipeline, calls)
    collector.start()
    producer = Producer(
        {
            "bootstrap.servers": pipeline.bootstrap,
            "linger.ms": 1,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 500_000,
        }
    )
    topic = pipeline.topic("touchpoints.raw")
    produced: dict[str, tuple[float, str]] = {}  # pain_point_id -> (produced at, window)
    step = max(1, int(rate / 200))  # ~5 ms of events per burst
    try:
        rows_before = w.metrics().get(TOUCHPOINT_ROWS, 0.0)
        log(
            f"latency: {rate:,.0f} ev/s for {warmup:g}+{seconds:g}+{tail:g}s, "
            f"{n_pain:,} long-queue calls among {total:,} events, {n_cust:,} customers"
        )
        started = time.monotonic()
        for i in range(total):
            if i % step == 0:
                ahead = started + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                producer.poll(0)
            pain = i % every == 0
            cid = cids[(i // every) % n_cust] if pain else cids[i % n_cust]
            now = time.time()
            value = _record(run, i, cid, now, pain)
            if pain:
                elapsed = i / rate
                window = (
                    "warmup" if elapsed < warmup else "tail" if elapsed >= warmup + seconds else "m"
                )
                eid = f"lat-{run}-{i}"
                pp = pain_point_id("long_queue", cid, eid)
                produced[pp] = (now, window)
                calls[eid] = pp
            while True:
                try:
                    producer.produce(topic, value, cid.encode())
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush(30)
        produce_seconds = time.monotonic() - started
        measured = {pp for pp, (_, win) in produced.items() if win == "m"}
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and not measured <= collector.care_at.keys():
            w.check()
            time.sleep(0.25)
        landed = w.metrics().get(TOUCHPOINT_ROWS, 0.0) - rows_before
        peak = w.peak_rss_mb()
    finally:
        collector.stop_flag.set()
        collector.join(10)
        w.stop()
    care_ms, recv_ms, pain_ms, ingest_ms, identify_ms = [], [], [], [], []
    statuses: dict[str, int] = {}
    eid_of = {pp: eid for eid, pp in calls.items()}
    hops = collector.hops
    for pp in measured:
        t0 = produced[pp][0]
        eid = eid_of[pp]
        if pp in collector.care_at:
            created, recv, status = collector.care_at[pp]
            care_ms.append((created - t0) * 1000)
            recv_ms.append((recv - t0) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
        if pp in hops["pain_point"]:
            pain_ms.append((hops["pain_point"][pp] - t0) * 1000)
        if eid in hops["ingest"]:
            ingest_ms.append((hops["ingest"][eid] - t0) * 1000)
        if eid in hops["identify"]:
            identify_ms.append((hops["identify"][eid] - t0) * 1000)
    care = _stats(care_ms)
    out = {
        "rate_target": rate,
        "rate_achieved": total / produce_seconds,
        "events_total": total,
        "pain_share": 1 / every,
        "calls_total": n_pain,
        "calls_measured": len(measured),
        "decisions_missing": len(measured) - care["n"],
        "landed_touchpoints": int(landed),
        "customers": n_cust,
        "customer_timezone": tz,
        "statuses": statuses,
        "produce_to_care_emitted": care,
        "produce_to_care_received": _stats(recv_ms),
        "produce_to_pain_point_emitted": _stats(pain_ms),
        "produce_to_ingest_emitted": _stats(ingest_ms),
        "produce_to_identify_emitted": _stats(identify_ms),
        "p50_ms": care["p50_ms"],
        "p99_ms": care["p99_ms"],
        "worker_peak_rss_mb": peak,
    }
    log(
        f"latency @ {out['rate_achieved']:,.0f} ev/s: care p50 {care['p50_ms']:.0f} ms, "
        f"p99 {care['p99_ms']:.0f} ms; pain point p50 "
        f"{out['produce_to_pain_point_emitted']['p50_ms']:.0f} ms; missing "
        f"{out['decisions_missing']}"
    )
    return out
