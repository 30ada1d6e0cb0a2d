"""Reading historic event logs: JSONL / JSONL.gz files, directories and globs of them, and
the ClickHouse ``touchpoints`` table.

Everything streams: a file is read line by line (a 10 GB log takes constant memory, and a
runaway line is cut at a bound instead of being read whole), the table through one ordered
block stream. Positions are reported as ``file:line`` (bad lines, resume state) or as the
``(occurred_at, event_id)`` cursor of the table.
"""

from __future__ import annotations

import glob
import gzip
import io
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sinks.clickhouse.errors import one_line

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

_GZIP_MAGIC = b"\x1f\x8b"
_LOG_SUFFIXES = (".jsonl", ".jsonl.gz")
_GLOB_CHARS = frozenset("*?[")
_READ_BUFFER = 1 << 16


class SourceError(Exception):
    """A log cannot be read on (missing, truncated gzip, I/O error); says ``file:line``."""


def open_log(path: Path) -> IO[bytes]:
    """Open a log for binary reading; ``.gz`` files (by magic bytes) are decompressed."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_lines(
    path: Path,
    *,
    start_after: int = 0,
    max_bytes: int | None = None,
    raw_file: list[IO[bytes]] | None = None,
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)`` for each non-blank line, newline stripped.

    ``start_after`` skips the first lines (resume); they are still read, a gzip stream
    cannot seek. With ``max_bytes`` a longer line is cut to ``max_bytes + 1`` bytes (so it
    still reads as too large) and the rest of it is skipped without being held in memory.
    ``raw_file``, if given, receives the underlying (compressed) file object, whose
    ``tell()`` is the read progress in bytes. A truncated or corrupt gzip stream raises
    :class:`SourceError` naming the last good line.
    """
    limit = -1 if max_bytes is None else max_bytes + 3  # + room for "\r\n"
    lineno = 0
    try:
        raw = open(path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - closed in the finally
    except OSError as exc:
        raise SourceError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        magic = raw.read(2)
        raw.seek(0)
        f: IO[bytes] = raw
        if magic == _GZIP_MAGIC:
            # GzipFile.readline is Python code per call; a buffer over it reads lines in C.
            f = io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), _READ_BUFFER)
        if raw_file is not None:
            raw_file.append(raw)
        readline = f.readline
        while True:
            line = readline(limit)
            if not line:
                return
            lineno += 1
            if limit > 0 and len(line) == limit and line[-1:] != b"\n":
                rest = line
                while rest and rest[-1:] != b"\n":
                    rest = readline(1 << 20)
                line = line[: limit - 2]
            elif line[-1:] == b"\n":
                line = line[:-2] if line[-2:-1] == b"\r" else line[:-1]
            if lineno > start_after and line and not line.isspace():
                yield lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise SourceError(
            f"{path}:{lineno + 1}: corrupt or truncated gzip stream ({exc}); "
            f"lines up to {lineno} were read"
        ) from None
    except OSError as exc:
        raise SourceError(f"{path}:{lineno + 1}: read error: {exc}") from None
    finally:
        raw.close()


def expand(paths: Iterable[Path | str]) -> list[Path]:
    """Log files in order: files named directly, ``*.jsonl``/``*.jsonl.gz`` found (sorted,
    recursively) inside named directories, and matches of glob patterns (``logs/*.gz``,
    ``logs/**/*.jsonl``; sorted). A name that matches nothing is returned as it is, so the
    caller reports it as missing. Each file appears once, at its first mention.
    """
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        text = str(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.name.endswith(_LOG_SUFFIXES)))
        elif not p.exists() and _GLOB_CHARS & set(text):
            matches = [m for m in sorted(map(Path, glob.glob(text, recursive=True))) if m.is_file()]
            out.extend(matches or [p])
        else:
            out.append(p)
    seen: set[Path] = set()
    unique = []
    for p in out:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(p)
    return unique


@dataclass
class FileSet:
    """Several log files read one after another, with resumable ``(file, line)`` positions.

    ``position`` is ``(file_index, line)``: every line up to ``line`` of that file, and all
    earlier files, have been handled. :attr:`bytes_read` / :attr:`bytes_total` (on-disk,
    so compressed for gzip) give progress and an ETA without knowing the line count.
    """

    paths: Sequence[Path]
    max_bytes: int | None = None
    _raw: list[IO[bytes]] = field(default_factory=list, repr=False)
    _done_bytes: int = 0

    @property
    def bytes_total(self) -> int:
        return sum(p.stat().st_size for p in self.paths)

    @property
    def bytes_read(self) -> int:
        cur = 0
        if self._raw:
            try:
                cur = self._raw[-1].tell()
            except (OSError, ValueError):  # closed between files
                cur = 0
        return self._done_bytes + cur

    def describe(self, position: tuple[int, int]) -> str:
        """``file:line`` of a position."""
        index, line = position
        return f"{self.paths[index]}:{line}"

    def records(self, start: tuple[int, int] = (0, 0)) -> Iterator[tuple[tuple[int, int], bytes]]:
        """``((file_index, line), raw)`` from just after ``start``; see :func:`iter_lines`."""
        first, after = start
        self._done_bytes = sum(p.stat().st_size for p in self.paths[:first])
        for index in range(first, len(self.paths)):
            path = self.paths[index]
            self._raw.clear()
            skip = after if index == first else 0
            for line, raw in iter_lines(
                path, start_after=skip, max_bytes=self.max_bytes, raw_file=self._raw
            ):
                yield (index, line), raw
            self._done_bytes += path.stat().st_size
            self._raw.clear()

    def files_state(self, position: tuple[int, int], complete: bool) -> list[dict[str, Any]]:
        """Per-file acknowledged line numbers, as the resume state shows them to people."""
        index, line = position
        return [
            {
                "path": str(p.resolve()),
                "done": complete or i < index,
                "line": line if i == index and not complete else None,
            }
            for i, p in enumerate(self.paths)
        ]

    @staticmethod
    def position_to_json(position: tuple[int, int]) -> list[int]:
        return list(position)

    @staticmethod
    def position_from_json(data: Any) -> tuple[int, int]:
        return (int(data[0]), int(data[1])) if data else (0, 0)


# --------------------------------------------------------------------------------------------
# ClickHouse
# --------------------------------------------------------------------------------------------

TABLE_NAME = "clickhouse:touchpoints"

#: ``(occurred_at, event_id)`` of the last row handled: the table source's resume cursor.
Cursor = tuple[datetime, str]


@dataclass(frozen=True)
class TableQuery:
    """A time range (and optional pushed-down filters) of the ``touchpoints`` table."""

    start: datetime | None = None
    end: datetime | None = None
    channels: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()

    def where(self, after: Cursor | None = None) -> tuple[str, dict[str, Any]]:
        """SQL ``WHERE`` clause and its parameters (every value is a bound parameter)."""
        conds, params = ["1"], {}
        if self.start is not None:
            conds.append("occurred_at >= {start:DateTime64(3, 'UTC')}")
            params["start"] = self.start
        if self.end is not None:
            conds.append("occurred_at < {end:DateTime64(3, 'UTC')}")
            params["end"] = self.end
        if self.channels:
            conds.append("channel IN {channels:Array(String)}")
            params["channels"] = list(self.channels)
        if self.customers:
            conds.append("customer_id IN {customers:Array(String)}")
            params["customers"] = list(self.customers)
        if after is not None:
            conds.append(
                "(occurred_at, event_id) > ({after_t:DateTime64(3, 'UTC')}, {after_id:String})"
            )
            params["after_t"], params["after_id"] = after
        return " AND ".join(conds), params


def check_table(client: Client) -> None:
    """Raise :class:`SourceError` unless the ``touchpoints`` table exists in the client's
    database (reading never creates it: an empty or wrong database is an error)."""
    try:
        exists = client.command("EXISTS TABLE touchpoints")
    except Exception as exc:
        raise SourceError(f"{TABLE_NAME}: {one_line(exc)}") from None
    if str(exists).strip() != "1":
        raise SourceError(
            f"no touchpoints table in ClickHouse database {client.database!r} "
            "(has a worker landed anything there?)"
        )


def count_touchpoints(client: Client, query: TableQuery, after: Cursor | None = None) -> int:
    """Rows (after deduplication) :func:`iter_touchpoints` would yield."""
    where, params = query.where(after)
    sql = f"SELECT count() FROM touchpoints FINAL WHERE {where}"
    try:
        return int(client.query(sql, parameters=params).result_rows[0][0])
    except Exception as exc:
        raise SourceError(f"{TABLE_NAME}: {one_line(exc)}") from None


def iter_touchpoints(
    client: Client, query: TableQuery, after: Cursor | None = None
) -> Iterator[tuple[datetime, str, bytes]]:
    """``(occurred_at, event_id, payload)`` of landed touchpoints in event-time order.

    ``payload`` is the touchpoint as ingest validated it (PII already hashed): a valid
    wire record that validates to the same event again. ``FINAL`` collapses the copies a
    retry or an earlier replay landed; one ordered block stream keeps client memory
    bounded whatever the range (the server sorts, spilling to disk as it needs).
    """
    where, params = query.where(after)
    sql = (
        "SELECT occurred_at, event_id, payload FROM touchpoints FINAL "
        f"WHERE {where} ORDER BY occurred_at, event_id"
    )
    try:
        with client.query_row_block_stream(sql, parameters=params) as stream:
            for block in stream:
                for occurred_at, event_id, payload in block:
                    yield occurred_at, event_id, payload.encode()
    except GeneratorExit:
        raise
    except Exception as exc:  # the driver's errors differ between chDB and HTTP
        raise SourceError(f"{TABLE_NAME}: {one_line(exc)}") from None


@dataclass
class TableSource:
    """The ``touchpoints`` table as a replay source; positions are :data:`Cursor` values."""

    client: Client
    query: TableQuery = field(default_factory=TableQuery)

    name = TABLE_NAME

    def records(self, start: Cursor | None = None) -> Iterator[tuple[Cursor, bytes]]:
        """``((occurred_at, event_id), payload)`` after ``start``, in event-time order."""
        for occurred_at, event_id, payload in iter_touchpoints(self.client, self.query, start):
            yield (occurred_at, event_id), payload

    def count(self, start: Cursor | None = None) -> int:
        return count_touchpoints(self.client, self.query, start)

    def describe(self, position: Cursor) -> str:
        return f"{self.name}@{position[0].isoformat()}/{position[1]}"

    @staticmethod
    def position_to_json(position: Cursor | None) -> list[str] | None:
        return None if position is None else [position[0].isoformat(), position[1]]

    @staticmethod
    def position_from_json(data: Any) -> Cursor | None:
        return None if not data else (datetime.fromisoformat(data[0]), str(data[1]))
