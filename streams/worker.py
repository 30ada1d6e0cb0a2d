"""Run a touchpath worker: check Kafka and ClickHouse, create topics, start the Faust app."""

from __future__ import annotations

import logging
from contextlib import ExitStack

import faust

from streams import faults
from streams.app import create_app, ingest_service
from streams.config import Settings
from streams.engine_settings import care, rules
from streams.runtime import EmbeddedBroker, ensure_topics, tune_gc, wait_for_kafka
from streams.warehouse import Warehouse

log = logging.getLogger(__name__)


def topic_specs(settings: Settings) -> list[tuple[str, int, dict[str, str]]]:
    """Every topic touchpath itself reads or writes, with partitions and config."""
    n = settings.partitions
    return [
        (settings.topic(settings.topic_raw), n, {}),
        (settings.topic(settings.topic_valid), n, {}),
        (settings.topic(settings.topic_dlq), n, {}),
        (settings.topic(settings.topic_customers), n, {"cleanup.policy": "compact"}),
        (settings.topic(settings.topic_links), n, {}),
        (settings.topic(settings.topic_journey_events), n, {}),
        (settings.topic(settings.topic_pain_points), n, {}),
        (settings.topic(settings.topic_journeys), n, {}),
        (settings.topic(settings.topic_care_actions), n, {}),
        (settings.topic(settings.topic_care_dlq), n, {}),
    ]


def prepare_kafka(settings: Settings, bootstrap: str) -> None:
    """Fail fast (one line) if Kafka is unreachable; create missing topics."""
    conf = settings.kafka_client_config()
    wait_for_kafka(bootstrap, conf, timeout=5.0)
    ensure_topics(bootstrap, topic_specs(settings), client_config=conf)


def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM. Starts an embedded broker when no Kafka is configured."""
    # a bad rules or care policy file fails here, in one line, before anything starts
    rules(settings)
    care(settings)
    faults.configure(settings.fault_hold_at)
    with ExitStack() as stack:
        if settings.embedded_kafka:
            broker = stack.enter_context(EmbeddedBroker(log_dir=settings.data_dir / "logs"))
            bootstrap = broker.bootstrap
            log.warning("no TOUCHPATH_KAFKA_BOOTSTRAP: started an embedded broker at %s", bootstrap)
        else:
            bootstrap = settings.kafka_bootstrap  # type: ignore[assignment]
        prepare_kafka(settings, bootstrap)
        warehouse = Warehouse(settings)
        warehouse.open()
        stack.callback(warehouse.close)
        (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
        app = create_app(settings, bootstrap, warehouse)
        app.conf.datadir = settings.data_dir / "faust"  # type: ignore[misc]
        # ingest starts before the app (faust.Worker starts its services first)
        ingest = ingest_service(settings, bootstrap)
        worker = faust.Worker(app, ingest, loglevel=settings.log_level, quiet=True)
        log.info(
            "worker up: kafka %s, web http://%s:%d", bootstrap, settings.web_host, settings.web_port
        )
        tune_gc(settings.gc_young_threshold)  # start-up is built: keep it out of collections
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
