"""Errors raised by the ClickHouse sink. Each carries one line a user can act on."""

from __future__ import annotations


class ClickHouseError(Exception):
    """Base class of the ClickHouse sink errors."""


class ClickHouseUnavailable(ClickHouseError):
    """ClickHouse cannot be reached (or kept failing) within the allowed time.

    Raised by :func:`~sinks.clickhouse.client.connect` and by
    :meth:`~sinks.clickhouse.writer.ClickHouseWriter.flush`; a writer keeps its buffered rows,
    so the caller may simply flush again later.
    """


class ClickHouseRejected(ClickHouseError):
    """A batch cannot be inserted because of its content (not retried: it would fail again).

    The writer keeps the rows; the caller decides (usually
    :meth:`~sinks.clickhouse.writer.ClickHouseWriter.discard` them into a dead-letter path).
    """

    def __init__(self, message: str, table: str) -> None:
        super().__init__(message)
        self.table = table


class MigrationError(ClickHouseError):
    """A DDL file is malformed or failed to apply."""


def one_line(exc: BaseException, limit: int = 240) -> str:
    """The innermost cause of ``exc`` as one short line (e.g. ``[Errno 111] Connection refused``).

    Driver errors wrap urllib3 errors wrapping socket errors; the innermost one says what
    actually went wrong, the outer ones repeat it inside pool and URL noise.
    """
    inner = exc
    seen = {id(inner)}
    while True:
        nxt = inner.__cause__ or inner.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        inner = nxt
    text = str(inner).strip() or type(inner).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
