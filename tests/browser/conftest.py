"""Browser tests reuse the integration fixtures: the session broker and real worker processes."""

from tests.integration.conftest import broker, worker_factory

__all__ = ["broker", "worker_factory"]
