"""External merge sort of validated events by event time, in bounded memory.

The backtest must feed the engine in ``(event time, event_id)`` order, but a log does not
fit in memory. Events are collected in runs of at most ``run_size``; a full run is sorted
and spilled to a temporary file (one orjson array per line), and :meth:`sorted` merges the
spilled runs with the last, in-memory one. Python's sort is stable and ``heapq.merge``
takes equal keys from the earlier run first, so the order is exactly that of one stable
in-memory sort of the whole input: the backtest output stays byte-identical.
"""

from __future__ import annotations

import heapq
import logging
import tempfile
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger(__name__)

#: ``(event time as epoch seconds, event_id, identity key, event)``
SortItem = tuple[float, str, str, dict[str, Any]]

_KEY = itemgetter(0, 1)


class ExternalSorter:
    """Collect :data:`SortItem` values with :meth:`add`; read them back sorted once.

    Use as a context manager (or call :meth:`close`) so spilled files are removed.
    """

    def __init__(self, run_size: int = 200_000, tmp_dir: Path | None = None) -> None:
        if run_size < 1:
            raise ValueError("run_size must be at least 1")
        self.run_size = run_size
        self.tmp_dir = tmp_dir
        self.count = 0
        self._run: list[SortItem] = []
        self._spilled: list[IO[bytes]] = []

    @property
    def spilled_runs(self) -> int:
        return len(self._spilled)

    def add(self, item: SortItem) -> None:
        """Add one event; spills the current run when it is full."""
        run = self._run
        run.append(item)
        self.count += 1
        if len(run) >= self.run_size:
            self._spill()

    def _spill(self) -> None:
        run = self._run
        run.sort(key=_KEY)
        f = tempfile.TemporaryFile(prefix="touchpath-sort-", dir=self.tmp_dir)  # noqa: SIM115
        dumps = orjson.dumps
        # one write per chunk: per-line writes would cost more than the encoding
        for i in range(0, len(run), 10_000):
            f.write(b"\n".join(dumps(x) for x in run[i : i + 10_000]) + b"\n")
        f.seek(0)
        self._spilled.append(f)
        self._run = []
        log.debug("spilled run %d (%d events)", len(self._spilled), len(run))

    def sorted(self) -> Iterator[SortItem]:
        """All events in ``(time, event_id)`` order, stable for equal keys."""
        run = self._run
        run.sort(key=_KEY)
        if not self._spilled:
            return iter(run)
        runs: list[Iterator[SortItem]] = [_read_run(f) for f in self._spilled]
        runs.append(iter(run))
        return heapq.merge(*runs, key=_KEY)

    def close(self) -> None:
        for f in self._spilled:
            f.close()
        self._spilled.clear()
        self._run = []

    def __enter__(self) -> ExternalSorter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _read_run(f: IO[bytes]) -> Iterator[SortItem]:
    loads = orjson.loads
    for line in f:
        ts, eid, key, ev = loads(line)
        yield ts, eid, key, ev
