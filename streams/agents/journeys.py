"""Identity and journey agents: thin glue around the pure engine.

``identify`` (keyed by identity key) reads validated micro-batches and identity links,
resolves each event to a customer (holding anonymous ones), and forwards identified events
as micro-batches keyed by customer. ``profiles`` turns the CRM feed into links and profile
updates. ``journey`` (keyed by customer) runs :class:`JourneyStage`: journeys, rules,
scores, timers; it emits pain points and journey records.

Every agent folds a batch in local dicts, writes each touched key to its table once,
sends its outputs, flushes (outputs, changelogs, markers) and only then lets the batch be
acked — so Faust commits source offsets after state and outputs are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from pydantic import ValidationError

from schemas.customer import CustomerProfile
from schemas.pii import PiiHasher
from streams import faults, faust_fixes, metrics
from streams.agents.land import decode_all, touchpoint_rows
from streams.agents.state import FastTable, fast_table, live_items
from streams.config import Settings
from streams.engine.identity import (
    IdentityLimits,
    IdentityOutput,
    KeyState,
    apply_link,
    customer_of_key,
    observe_event,
    profile_links,
)
from streams.engine.journey import REPLAY_FLAG, CustomerState, JourneyEngine, Outputs
from streams.engine.stage import JourneyStage, customer_key
from streams.ingest import KEEPALIVE_SECONDS
from streams.partitioning import partition_for
from streams.producer import MARKER_KEY, WorkerProducer
from streams.warehouse import Warehouse
from streams.watermark import SourceWatermarks

log = logging.getLogger(__name__)

MAX_ITEMS = 500
#: Bytes per outgoing micro-batch message: under the 1 MB default message limit.
MAX_BYTES = 900_000
#: Watermark inputs are never dropped for silence (see ``forward_watermarks``).
_NEVER = float("inf")
#: Late events explained in the log per worker (the rest are only counted).
LATE_LOG_LIMIT = 20
_NINF = float("-inf")
#: A customer's state (one changelog record) above this applies its oldest buffered events
#: early (:meth:`JourneyStage.persist`): under the 1 MB default message limit.
STATE_LIMIT_BYTES = 600_000


def _encode_state(st: CustomerState) -> bytes:
    return orjson.dumps(st.to_json())


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


class _Outbox:
    """Outputs of one batch grouped by target partition, sent as micro-batches."""

    def __init__(self, producer: WorkerProducer, partitions: int) -> None:
        self.producer = producer
        self.partitions = partitions
        self.parts: dict[tuple[str, int], list[Any]] = defaultdict(list)

    def add(self, topic: str, key: bytes, item: Any) -> None:
        self.parts[(topic, partition_for(key, self.partitions))].append(item)

    def send(self, field: str) -> None:
        """One message per partition per ``MAX_ITEMS`` items or ``MAX_BYTES`` bytes."""
        for (topic, part), items in self.parts.items():
            chunk: list[bytes] = []
            size = 0
            for item in items:
                raw = orjson.dumps(item)
                if chunk and (len(chunk) >= MAX_ITEMS or size + len(raw) > MAX_BYTES):
                    self._produce(topic, part, field, chunk)
                    chunk, size = [], 0
                chunk.append(raw)
                size += len(raw) + 1
            if chunk:
                self._produce(topic, part, field, chunk)
        self.parts.clear()

    def _produce(self, topic: str, part: int, field: str, chunk: list[bytes]) -> None:
        value = b'{"' + field.encode() + b'":[' + b",".join(chunk) + b"]}"
        self.producer.produce(topic, value, None, part)


def register(
    app: faust.App,
    settings: Settings,
    producer: WorkerProducer,
    engine: JourneyEngine,
    limits: IdentityLimits,
    warehouse: Warehouse,
) -> None:
    """Declare tables and agents of the identity and journey stages on ``app``."""
    n = settings.partitions
    t_valid = settings.topic(settings.topic_valid)
    t_links = settings.topic(settings.topic_links)
    t_events = settings.topic(settings.topic_journey_events)
    t_pains = settings.topic(settings.topic_pain_points)
    t_journeys = settings.topic(settings.topic_journeys)
    t_care = settings.topic(settings.topic_care_actions)
    hasher = PiiHasher(settings.pii_secret.get_secret_value())

    identity: FastTable = fast_table(app, "identity", producer, "identity key -> customer, held")
    customers: FastTable = fast_table(app, "customers", producer, "customer -> journey state")

    def load_customer(cid: str) -> CustomerState:
        raw = customers.get(customer_key(cid))
        return CustomerState.from_json(orjson.loads(raw)) if raw else CustomerState(cid)

    stage = JourneyStage(engine, n, load_customer, keep=settings.journey_cache_customers)
    ready_parts: set[int] = set()
    # per journey partition: watermark over the identify partitions feeding it
    journey_wms: dict[int, SourceWatermarks] = {}
    # When each links/events partition was assigned here (wall time). Progress announced
    # before that is not trusted: after a crash it was promised by an identify instance
    # that died, and what its successor re-reads (from an older commit, with the state it
    # recovered) can release events that promise already covered; they would all be late.
    # The successors announce again within KEEPALIVE_SECONDS. This compares a message's
    # CreateTime with this worker's clock: a skewed clock delays the stream clock, never
    # stalls it.
    assigned_at: dict[tuple[str, int], float] = {}

    def trusted(event: Any) -> bool:
        """Whether progress in ``event`` was announced since its partition came here."""
        msg = event.message
        since = assigned_at.get((msg.topic, msg.partition))
        return since is None or msg.timestamp is None or msg.timestamp >= since

    def emit_identity(io: IdentityOutput, events: _Outbox, links: _Outbox) -> None:
        for r in io.resolved:
            item = {"c": r.customer_id, "ts": r.ts, "ev": r.event}
            events.add(t_events, customer_key(r.customer_id), item)
        for ln in io.links:
            for k in ln.keys:
                links.add(t_links, k.encode(), [k, ln.customer_id])
        if io.expired:
            metrics.IDENTITY_EXPIRED.inc(len(io.expired))

    # --- identify --------------------------------------------------------------------------
    # Event-time progress of each identify partition q: what ingest promised on q, and what
    # every identify partition q' promised on the links topic (a link is caused by an event
    # on q', so once q' is past W no link for an event before W can still be in flight).
    # Inputs are partitions (raw, identify), never worker instances: a partition that moves
    # to another worker holds event time back until its new owner reports it, so no input
    # is ever dropped for silence (an instance that dies takes its partitions' promises
    # with it, and their new owner re-reads what it had not committed).
    # What q's promises cover is what was read of q: a rebalance rewinds q to its committed
    # offset, so they are forgotten with the partition (even when it comes back here) and
    # learnt again from the messages re-read; kept, they released the re-read events late.
    ingest_wms: dict[int, SourceWatermarks] = defaultdict(
        lambda: SourceWatermarks(idle_after=_NEVER)
    )
    link_wms: dict[int, SourceWatermarks] = {}
    sent_links_wm: dict[int, tuple[float, float]] = {}
    sent_journey_wm: dict[int, tuple[float, float]] = {}

    def link_wm(q: int, now: float) -> SourceWatermarks:
        wms = link_wms.get(q)
        if wms is None:
            wms = link_wms[q] = SourceWatermarks(idle_after=_NEVER)
            for src in range(n):
                wms.touch(str(src), now)
        return wms

    def due(sent: dict[int, tuple[float, float]], q: int, wm: float, now: float) -> bool:
        """Send ``wm`` for ``q``: it moved on, or it is time to repeat it (after a
        rebalance the receiving partition's new owner waits to hear from every ``q``)."""
        last, at = sent.get(q, (_NINF, _NINF))
        if wm == _NINF or (wm <= last and now - at < KEEPALIVE_SECONDS):
            return False
        sent[q] = (max(wm, last), now)
        return True

    def forward_watermarks(sources: set[int], now: float) -> None:
        for q in sorted(sources):
            iw = ingest_wms[q].value(now)
            if due(sent_links_wm, q, iw, now):
                msg = orjson.dumps({"links": [], "wm": iw, "src": q})
                for part in range(n):
                    producer.produce(t_links, msg, None, part)
            out = min(iw, link_wm(q, now).value(now))
            if due(sent_journey_wm, q, out, now):
                msg = orjson.dumps({"items": [], "wm": out, "src": q})
                for part in range(n):
                    producer.produce(t_events, msg, None, part)

    rescan_held = asyncio.Event()

    @app.agent(
        app.topic(t_valid, t_links, value_serializer="raw", key_serializer="raw"), name="identify"
    )
    async def identify(stream: faust.StreamT[bytes]) -> None:
        async for batch in stream.take_events(50, within=0.05):
            await faust_fixes.process_batch(app, "identify", batch, _identify_batch)

    async def _identify_batch(batch: list[Any]) -> None:
        if rescan_held.is_set():
            # first batch after a (re)assignment: the recovered table is complete by now
            rescan_held.clear()
            held = 0
            for k, v in identity.data.items():
                if v and k != MARKER_KEY:
                    held += len(orjson.loads(v).get("h") or ())
            metrics.HELD_EVENTS.set(held)
        states: dict[str, KeyState] = {}
        #: each touched key's value as read: most touches change nothing (a link already
        #: known, an event of a known key), and an unchanged state is not written again
        read: dict[str, bytes | None] = {}
        held_before = 0

        def key_state(key: str) -> KeyState:
            nonlocal held_before
            st = states.get(key)
            if st is None:
                raw = read[key] = identity.get(key.encode())
                st = states[key] = KeyState.from_json(orjson.loads(raw)) if raw else KeyState()
                held_before += len(st.held)
            return st

        events, links = _Outbox(producer, n), _Outbox(producer, n)
        now = time.monotonic()
        sources: set[int] = set()
        generation = app.consumer_generation_id
        link_rows: list[dict[str, Any]] = []
        landed_at = datetime.now(UTC)
        for event in batch:
            obj = orjson.loads(event.value)
            q = event.message.partition
            if "links" in obj:
                for key, cid in obj["links"]:
                    st = key_state(key)
                    if st.customer_id != cid:  # new or changed: the dashboards resolve keys
                        link_rows.append(
                            {
                                "identity_key": key,
                                "customer_id": cid,
                                "linked_at": landed_at,
                                "landed_at": landed_at,
                            }
                        )
                    emit_identity(apply_link(st, cid), events, links)
                if obj.get("wm") is not None and trusted(event):
                    link_wm(q, now).observe(str(obj["src"]), obj["wm"], now)
                    sources.add(q)
                continue
            for item in obj["items"]:
                key, tp = item["k"], item["tp"]
                if item.get("r"):
                    tp[REPLAY_FLAG] = True  # rides with the event: its care is not delivered
                st = KeyState() if customer_of_key(key) else key_state(key)
                emit_identity(
                    observe_event(st, key, _ts(tp["occurred_at"]), tp, limits), events, links
                )
            progress = obj.get("wms")
            if progress is not None:
                wms = ingest_wms[q]
                if len(wms.expected) < obj.get("nr", 0):
                    for r in range(obj["nr"]):
                        wms.touch(str(r), now)
                for r, v in progress.items():
                    if v is None:
                        wms.caught_up(r, now)  # idle, nothing known: not waited for
                    else:
                        wms.observe(r, v, now)
                sources.add(q)
        events.send("items")
        links.send("links")
        # Progress goes out after the events it covers: downstream applies a watermark
        # only to what follows it in the partition. Not from a batch a rebalance overtook:
        # the new owner of its partitions re-reads them and says how far it has got.
        if faust_fixes.still_current(app, generation):
            forward_watermarks(sources, now)
        # The batch's touchpoints land once its events and progress have gone out (an
        # insert into embedded chDB takes ~60 ms, which every event and both passes of the
        # links round trip waited for), and before its state is written and it is acked.
        valid = [e.value for e in batch if e.message.topic == t_valid]
        rows = decode_all(valid, touchpoint_rows, "identify")
        if rows:
            await warehouse.land("touchpoints", rows)
        if link_rows:
            await warehouse.land("identity_links", link_rows)
        if not faust_fixes.still_current(app, generation):
            # Rebalanced while landing: the partitions' new owner re-reads them from the
            # commit (its outputs repeat these; downstream drops repeated event ids), and
            # this worker must not write state for keys it may no longer own.
            return
        # State after the outputs it stands for (streams/producer.py: order of a flush).
        held_after = 0
        for key, st in states.items():
            data = orjson.dumps(st.to_json())
            if data != read[key]:
                identity[key.encode()] = data
            held_after += len(st.held)
        metrics.HELD_EVENTS.inc(held_after - held_before)
        metrics.STATE_KEYS.labels(table="identity").set(len(identity.data))
        await producer.flush()

    # --- profiles (CRM feed) ---------------------------------------------------------------
    @app.agent(
        app.topic(
            settings.topic(settings.topic_customers), value_serializer="raw", key_serializer="raw"
        ),
        name="profiles",
    )
    async def profiles(stream: faust.StreamT[bytes]) -> None:
        async for taken in stream.take_events(500, within=0.2):
            await faust_fixes.process_batch(app, "profiles", taken, _profiles_batch)

    async def _profiles_batch(batch: list[Any]) -> None:
        events, links = _Outbox(producer, n), _Outbox(producer, n)
        for value in (e.value for e in batch):
            try:
                p = CustomerProfile.model_validate_json(value, context={"hasher": hasher})
            except ValidationError as exc:
                metrics.AGENT_ERRORS.labels(agent="profiles").inc()
                log.warning("invalid customer profile skipped: %s", exc.errors()[0]["msg"])
                continue
            prof = p.model_dump(mode="json")
            metrics.PROFILES.inc()
            events.add(t_events, customer_key(p.customer_id), {"c": p.customer_id, "profile": prof})
            pl = profile_links(prof)
            if pl is not None:
                for k in pl.keys:
                    links.add(t_links, k.encode(), [k, p.customer_id])
        events.send("items")
        links.send("links")
        await producer.flush()

    # --- journey ---------------------------------------------------------------------------
    def ensure_partition(p: int) -> None:
        if p in ready_parts:
            return
        # After (re)assignment: rebuild this partition's clock and timers from the table.
        states = [
            CustomerState.from_json(orjson.loads(v))
            for _, v in live_items(customers, lambda k: partition_for(k, n), p)
        ]
        stage.rebuild(p, states)
        ready_parts.add(p)

    async def publish(out: Outputs, states: list[tuple[str, bytes]]) -> None:
        now = datetime.now(UTC).isoformat()
        for pp in out.pain_points:
            key = customer_key(pp["customer_id"])
            producer.produce(t_pains, orjson.dumps(pp), key, partition_for(key, n))
            metrics.PAIN_POINTS.labels(rule=pp["rule_id"]).inc()
        box, care = _Outbox(producer, n), _Outbox(producer, n)
        for j in out.journeys.values():
            box.add(t_journeys, customer_key(j["customer_id"]), {**j, "updated_at": now})
        box.send("journeys")
        for outcome, count in Counter(j["outcome"] for j in out.journeys.values()).items():
            metrics.JOURNEY_UPDATES.labels(outcome=outcome).inc(count)
        for a in out.care_actions:
            care.add(t_care, customer_key(a["customer_id"]), a)
        care.send("actions")
        if out.late:
            metrics.EVENTS_LATE.inc(out.late)
        if out.duplicates:
            metrics.EVENTS_DUPLICATE.inc(out.duplicates)
        # State after the outputs it stands for (streams/producer.py: order of a flush).
        for cid, data in states:
            customers[customer_key(cid)] = data
        await producer.flush()

    @app.agent(app.topic(t_events, value_serializer="raw", key_serializer="raw"), name="journey")
    async def journey(stream: faust.StreamT[bytes]) -> None:
        async for taken in stream.take_events(50, within=0.05):
            try:
                await faust_fixes.process_batch(app, "journey", taken, _journey_batch)
            except BaseException:
                # The batch changed decoded states it never persisted: start again from the
                # table (states, and each partition's reorder buffer and timers).
                stage.invalidate()
                ready_parts.clear()
                raise

    late_logged = [0]
    # per journey partition since its (re)assignment: the first offset read and the offset
    # of the first progress trusted (for the late-event log: was it re-read after that?)
    read_from: dict[int, list[int | None]] = {}

    def _log_late(p: int, ts: float, offset: int) -> None:
        """Say why an event is late (the first few): which input's progress passed it."""
        if late_logged[0] >= LATE_LOG_LIMIT:
            return
        late_logged[0] += 1
        wms = journey_wms.get(p)
        inputs = {s: wms.progress(s) for s in sorted(wms.expected)} if wms else {}
        log.warning(
            "late event on %s[%d]@%d: event time %.0f, clock %.0f; progress by identify "
            "partition %s; read from offset %s since assigned, first progress trusted at %s",
            t_events,
            p,
            offset,
            ts,
            stage.clocks.get(p, _NINF),
            inputs,
            *read_from.get(p, (None, None)),
        )

    def _offsets(batch: list[Any]) -> str:
        """First and last offset of each partition in ``batch`` (for logs)."""
        spans: dict[int, list[int]] = {}
        for e in batch:
            span = spans.setdefault(e.message.partition, [e.message.offset, e.message.offset])
            span[1] = e.message.offset
        return ", ".join(f"[{p}]@{a}-{b}" for p, (a, b) in sorted(spans.items()))

    async def _journey_batch(batch: list[Any]) -> None:
        await faults.hold("journey.batch", lambda: _offsets(batch))
        lateness = engine.cfg.lateness_seconds
        out = Outputs()
        now = time.monotonic()
        wall = time.time()
        parts: set[int] = set()
        lags: list[float] = []
        for event in batch:
            p = event.message.partition
            if p not in ready_parts:
                read_from[p] = [event.message.offset, None]
                log.info("journey: %s[%d] read from offset %d", t_events, p, event.message.offset)
            ensure_partition(p)
            parts.add(p)
            obj = orjson.loads(event.value)
            for item in obj["items"]:
                if "profile" in item:
                    stage.profile(item["c"], item["profile"])
                else:
                    late_before = out.late
                    stage.step(item["c"], item["ev"], item["ts"], out)
                    if out.late > late_before:
                        _log_late(p, item["ts"], event.message.offset)
                    lags.append(wall - item["ts"])
            if obj.get("wm") is not None and trusted(event):
                wms = journey_wms.get(p)
                if wms is None:
                    wms = journey_wms[p] = SourceWatermarks(idle_after=_NEVER)
                    for q in range(n):
                        wms.touch(str(q), now)
                wms.observe(str(obj["src"]), obj["wm"], now)
                if read_from[p][1] is None:
                    read_from[p][1] = event.message.offset
                stage.advance(p, wms.value(now) - lateness, out)
        metrics.observe_many(metrics.EVENT_LAG, lags)
        states, early = stage.persist(out, _encode_state, STATE_LIMIT_BYTES)
        if early:
            metrics.EVENTS_RELEASED_EARLY.inc(early)
        await publish(out, states)
        metrics.STATE_KEYS.labels(table="customers").set(len(customers.data))
        for p in parts:
            metrics.JOURNEY_WAITING.labels(partition=str(p)).set(stage.waiting(p))
            wm = journey_wms[p].value(now) if p in journey_wms else _NINF
            if wm != _NINF:
                metrics.JOURNEY_WATERMARK.labels(partition=str(p)).set(wm)

    @app.on_rebalance_complete.connect
    async def _rescan(sender: Any, **_: Any) -> None:
        rescan_held.set()  # tables change with the assignment: count again

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: Any, **_: Any) -> None:
        now = time.time()
        for tp in assigned:
            if tp.topic in (t_events, t_links):
                assigned_at[(tp.topic, tp.partition)] = now

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: Any, **_: Any) -> None:
        for tp in revoked:
            if tp.topic == t_events:
                stage.forget(tp.partition)
                ready_parts.discard(tp.partition)
                journey_wms.pop(tp.partition, None)
                for gauge in (metrics.JOURNEY_WAITING, metrics.JOURNEY_WATERMARK):
                    with contextlib.suppress(KeyError):  # never set for this partition
                        gauge.remove(str(tp.partition))
            elif tp.topic == t_links:
                link_wms.pop(tp.partition, None)  # learnt again from what is announced next
            elif tp.topic == t_valid:
                ingest_wms.pop(tp.partition, None)  # learnt again from what is re-read
                sent_links_wm.pop(tp.partition, None)
                sent_journey_wm.pop(tp.partition, None)
