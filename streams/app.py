"""The Faust app of a touchpath worker: ingest service, agents, web endpoints.

Everything is built by :func:`create_app` from a :class:`Settings`, nothing at import time,
so tests and the CLI can build as many apps as they need.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
import mode
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.validation import Validator
from streams import faust_fixes, metrics
from streams.agents import care, journeys, land
from streams.config import DEV_PII_SECRET, Settings
from streams.engine_settings import build_engine
from streams.ingest import Ingestor
from streams.ingest_process import IngestProcessService
from streams.producer import WorkerProducer
from streams.warehouse import Warehouse
from streams.web import register as register_ops_page
from streams.web.params import with_defaults

log = logging.getLogger(__name__)


class IngestService(mode.Service):
    """Runs :class:`Ingestor` batches in a thread for as long as the worker runs."""

    settings: Settings
    bootstrap: str

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ingest")
        self.ingestor: Ingestor | None = None

    async def on_start(self) -> None:
        loop = asyncio.get_running_loop()
        validator = Validator.from_settings(self.settings)
        self.ingestor = await loop.run_in_executor(
            self._executor, Ingestor, self.settings, self.bootstrap, validator
        )
        log.info("ingest consuming %s", self.ingestor.raw_topic)

    @mode.Service.task
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.should_stop:
            if self.ingestor is None:
                await self.sleep(0.05)
                continue
            # supervised: an error is counted and logged, and ingest goes on after a pause
            if not await loop.run_in_executor(self._executor, self.ingestor.run_guarded):
                await self.sleep(1.0)

    async def on_stop(self) -> None:
        if self.ingestor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.ingestor.close)
        self._executor.shutdown(wait=False)


def ingest_service(settings: Settings, bootstrap: str) -> mode.Service:
    """Ingest as a service of the worker (``TOUCHPATH_INGEST_MODE``: a child process or a
    thread). It is handed to ``faust.Worker`` beside the app, not declared with
    ``app.service``: Faust starts those only after its group join and table recovery, and
    ingest needs neither; started first, its own group join (~5 s on the embedded broker)
    overlaps Faust's instead of following it."""
    service = IngestProcessService if settings.ingest_mode == "process" else IngestService
    return type("Ingest", (service,), {"settings": settings, "bootstrap": bootstrap})()


def create_app(settings: Settings, bootstrap: str, warehouse: Warehouse) -> faust.App:
    """Build the worker's Faust app against ``bootstrap``, landing through ``warehouse``."""
    faust_fixes.apply()  # no loss of messages fetched before a rebalance (see the module)
    if settings.pii_secret.get_secret_value() == DEV_PII_SECRET and not settings.embedded_kafka:
        log.warning("TOUCHPATH_PII_SECRET is not set: using the development key")
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        broker_credentials=settings.faust_broker_credentials(),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        # Join the group in ~4 s instead of ~30 s (measured against the local broker).
        broker_rebalance_timeout=4,
        broker_session_timeout=8,
        broker_heartbeat_interval=1,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        # Shut down promptly: offsets are committed only for acked messages anyway.
        stream_wait_empty=False,
        # Faust's default (4,096) lets a backlog of micro-batches, up to 500 events each,
        # pile up in memory ahead of a slower stage; Kafka is the better place for it.
        stream_buffer_maxsize=settings.stream_buffer_messages,
    )
    land.register(app, settings, warehouse)
    land.register_results(app, settings, warehouse)
    engine, limits = build_engine(settings)
    producer = WorkerProducer(bootstrap, settings.kafka_client_config())
    faust_fixes.seal_changelogs_before_recovery(app, producer.seal)
    journeys.register(app, settings, producer, engine, limits, warehouse)
    care.register(app, settings, producer, warehouse)
    _register_web(app, warehouse)
    register_ops_page(app, warehouse)

    @app.on_rebalance_complete.connect
    async def _ready(sender: Any, **_: Any) -> None:
        # Ready = partitions assigned and agents running (the first rebalance is done).
        metrics.WORKER_READY.set(1)

    return app


def _register_web(app: faust.App, warehouse: Warehouse) -> None:
    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 anyway.
        ctype = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
        return web.bytes(generate_latest(metrics.REGISTRY), content_type=ctype)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        is_ready = metrics.WORKER_READY._value.get() == 1
        return web.json({"ready": is_ready}, status=200 if is_ready else 503)

    @app.page("/api/query/{name}")
    async def query(web: Any, request: Any, name: str) -> Any:
        from sinks.clickhouse.queries import query_names

        if name not in query_names():
            return web.json({"error": f"unknown query {name!r}"}, status=404)
        params = with_defaults(name, dict(request.query))
        try:
            rows = await warehouse.query(name, params or None)
        except Exception as exc:
            log.warning("query %s failed: %s", name, exc)
            return web.json({"error": str(exc)[:300]}, status=400)
        body = orjson.dumps({"query": name, "rows": rows}, default=str)
        return web.bytes(body, content_type="application/json")
