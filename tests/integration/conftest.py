"""Fixtures for integration tests: one real embedded broker per test session."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from streams.runtime import EmbeddedBroker, ensure_topics


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A Tansu broker started once for the whole session (in-memory, logs under tmp)."""
    log_dir: Path = tmp_path_factory.mktemp("broker")
    with EmbeddedBroker(log_dir=log_dir) as b:
        yield b


TopicFactory = Callable[..., str]


@pytest.fixture
def topic_factory(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> TopicFactory:
    """Create a uniquely named topic: ``topic_factory(partitions=1, config=None) -> name``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:40]

    def make(partitions: int = 1, config: Mapping[str, str] | None = None) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:8]}"
        ensure_topics(broker.bootstrap, [(name, partitions, dict(config or {}))])
        return name

    return make


def wait_until(pred: Callable[[], bool], timeout: float, what: str, worker: WorkerHandle) -> None:
    """Poll ``pred`` until true; fail with ``what`` on timeout, or at once if the worker died."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        assert worker.alive(), f"worker died:\n{worker.log()[-3000:]}"
        time.sleep(0.5)
    pytest.fail(
        f"timed out waiting for {what}; the worker's gauges:\n{worker.gauges()}\n"
        f"its log ends:\n{worker.log()[-3000:]}"
    )


class WorkerHandle:
    """A ``touchpath worker`` child process and its HTTP API (metrics, named queries)."""

    def __init__(self, proc, base_url: str, log_path: Path, env: dict[str, str]) -> None:
        self.proc = proc
        self.base_url = base_url
        self.log_path = log_path
        self.env = env
        from streams.demo import WorkerClient

        self.client = WorkerClient(base_url)

    def query(self, name: str, **params: object) -> list[dict]:
        return self.client.query(name, **params)

    def counters(self) -> dict[str, float]:
        return self.client.counters()

    def gauges(self) -> str:
        """The worker's touchpath gauges and counters (no histograms): what a stall shows."""
        import httpx

        try:
            text = httpx.get(f"{self.base_url}/metrics", timeout=5).text
        except httpx.HTTPError as exc:
            return f"(metrics unavailable: {exc})"
        keep = [
            line
            for line in text.splitlines()
            if line.startswith("touchpath_") and "_bucket" not in line and "_created" not in line
        ]
        return "\n".join(keep)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def worker_factory(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Callable[..., WorkerHandle]]:
    """Start ``touchpath worker`` processes on the session broker, each test in its own
    topics (unique prefix), consumer groups and chDB directory; all stopped at teardown."""
    import os
    import sys
    import time

    from streams.config import Settings
    from streams.runtime import free_port, spawn, stop_process
    from streams.worker import prepare_kafka

    prefix = f"t{uuid.uuid4().hex[:8]}."
    started: list[WorkerHandle] = []

    def make(**env_overrides: str) -> WorkerHandle:
        port = free_port()
        data_dir = tmp_path / "data"
        env = {
            **os.environ,
            "TOUCHPATH_KAFKA_BOOTSTRAP": broker.bootstrap,
            "TOUCHPATH_TOPIC_PREFIX": prefix,
            "TOUCHPATH_APP_ID": f"app-{prefix.rstrip('.')}",
            "TOUCHPATH_DATA_DIR": str(data_dir),
            "TOUCHPATH_WEB_PORT": str(port),
            "TOUCHPATH_LOG_LEVEL": os.environ.get("TP_TEST_LOG", "info"),
            **env_overrides,
        }
        settings = Settings(
            kafka_bootstrap=broker.bootstrap, topic_prefix=prefix, data_dir=data_dir
        )
        prepare_kafka(settings, broker.bootstrap)
        log_path = tmp_path / f"worker-{len(started)}.log"
        proc = spawn([sys.executable, "-m", "streams.cli", "worker"], env=env, log_path=log_path)
        handle = WorkerHandle(proc, f"http://127.0.0.1:{port}", log_path, env)
        started.append(handle)
        deadline = time.monotonic() + 60
        while not handle.client.ready():
            if not handle.alive():
                pytest.fail(f"worker died on start:\n{handle.log()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker not ready in 60 s:\n{handle.log()[-3000:]}")
            time.sleep(0.3)
        handle.settings = settings  # type: ignore[attr-defined]
        return handle

    yield make
    for h in started:
        stop_process(h.proc, timeout=15)
