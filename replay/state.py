"""Resumable replay: what the producer has acknowledged, and the small file that keeps it.

Kafka acknowledges records out of order across partitions, so "the last record sent" is
not a safe resume point. Records are grouped in epochs of consecutive input; an epoch is
acknowledged once every record in it was delivered, and the resume position is the end
of the last epoch in the acknowledged *prefix*. A restart from there re-sends at most the
records of the epochs still in flight (at-least-once; ClickHouse deduplicates by
``event_id``), and never skips one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

STATE_VERSION = 1


def run_key(sources: list[str], topic: str, filters: dict[str, Any]) -> str:
    """Stable id of a replay: same sources, topic and filters → same state file."""
    blob = orjson.dumps(
        {"sources": sources, "topic": topic, "filters": filters}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(blob).hexdigest()[:16]


def state_path(data_dir: Path, key: str) -> Path:
    """Where the state file of replay ``key`` lives."""
    return data_dir / "replay" / f"{key}.json"


@dataclass
class ReplayState:
    """The acknowledged position of one replay, as saved between runs.

    ``position`` is source-specific and JSON-able: ``[file_index, line]`` for files,
    ``[occurred_at_iso, event_id]`` for the ClickHouse table. ``counts`` are the totals
    (sent, filtered, bad) up to that position, so a resumed run reports whole-run figures.
    """

    key: str
    run_id: str
    topic: str
    sources: list[str]
    filters: dict[str, Any]
    position: Any = None
    files: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    updated_at: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"version": STATE_VERSION, **self.__dict__},
            option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2,
        )

    @classmethod
    def load(cls, path: Path) -> ReplayState | None:
        """The saved state, or None if there is none (or it is unreadable: logged)."""
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("ignoring unreadable replay state %s: %s", path, exc)
            return None
        if not isinstance(data, dict) or data.pop("version", None) != STATE_VERSION:
            log.warning("ignoring replay state %s of another version", path)
            return None
        try:
            return cls(**data)
        except TypeError as exc:
            log.warning("ignoring malformed replay state %s: %s", path, exc)
            return None

    def save(self, path: Path) -> None:
        """Write atomically (a crash mid-write leaves the previous state, never half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(self.to_json())
        os.replace(tmp, path)


class _Epoch:
    """Consecutive input records; complete when all its sends were delivered."""

    __slots__ = ("acked", "counts", "errors", "position", "sent")

    def __init__(self, errors: list[str]) -> None:
        self.sent = -1  # unknown until closed
        self.acked = 0
        self.errors = errors  # shared with the tracker: a failure is seen at once
        self.position: Any = None
        self.counts: dict[str, int] = {}

    def on_delivery(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.acked += 1
        else:
            self.errors.append(str(err))


class AckTracker:
    """Turns per-record delivery reports into an acknowledged input position.

    Use :attr:`callback` as the ``on_delivery`` of every produce (one bound method per
    epoch, so no allocation per record), :meth:`close` an epoch at a position every few
    thousand records, and read :meth:`acknowledged` after polling the producer.
    """

    def __init__(self, position: Any = None, counts: dict[str, int] | None = None) -> None:
        #: Delivery errors (librdkafka has retried each before giving up); an epoch with
        #: one never completes, so the position stays before it.
        self.errors: list[str] = []
        self._open = _Epoch(self.errors)
        self._pending: deque[_Epoch] = deque()
        self._sent_at_open = 0
        self.position = position
        self.counts: dict[str, int] = dict(counts or {})
        self.callback: Callable[[Any, Any], None] = self._open.on_delivery

    def close(self, position: Any, sent_total: int, counts: dict[str, int]) -> None:
        """End the open epoch after the record at ``position`` (``sent_total`` produced so
        far, ``counts`` the run totals at that point) and open the next one."""
        e = self._open
        e.sent = sent_total - self._sent_at_open
        e.position, e.counts = position, counts
        self._pending.append(e)
        self._sent_at_open = sent_total
        self._open = _Epoch(self.errors)
        self.callback = self._open.on_delivery

    def acknowledged(self) -> Any:
        """Advance over fully delivered epochs; return the acknowledged position."""
        pending = self._pending
        while pending and pending[0].acked >= pending[0].sent:
            e = pending.popleft()
            self.position, self.counts = e.position, e.counts
        return self.position

    @property
    def in_flight(self) -> int:
        """Epochs closed but not yet fully acknowledged."""
        return len(self._pending)
