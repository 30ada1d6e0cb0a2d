"""Fault injection for outage tests: a client that fails while a control file exists.

Embedded ClickHouse (chDB) lives inside the worker process and cannot be made unreachable
from outside, so the outage tests switch this on (``TOUCHPATH_FAULT_CLICKHOUSE_FILE``) and
create / remove the file to start / end an "outage". Off (the default) nothing is wrapped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class InjectedOutage(ConnectionError):
    """What every call raises during an injected outage (looks like a refused connection)."""


class FaultInjectingClient:
    """Delegates to ``client``; ``insert``/``query``/``command`` fail while ``path`` exists."""

    def __init__(self, client: Any, path: Path) -> None:
        self._client = client
        self._path = path
        log.warning("ClickHouse fault injection is on (control file %s)", path)

    def _check(self) -> None:
        if self._path.exists():
            raise InjectedOutage("[Errno 111] Connection refused (injected outage)")

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return self._client.insert(*args, **kwargs)

    def query(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return self._client.query(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return self._client.command(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
