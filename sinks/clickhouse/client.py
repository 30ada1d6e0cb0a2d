"""Open a clickhouse-connect client: embedded chDB or a ClickHouse server, same API.

The embedded engine (chDB, ClickHouse 26.x in-process) is what a bare ``touchpath`` uses:
its data directory is owned by one process, and a process can have one directory open at
a time. Any other configuration talks HTTP(S) to a server.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import clickhouse_connect
from clickhouse_connect.driver import Client

from sinks.clickhouse.errors import ClickHouseError, ClickHouseUnavailable, one_line

if TYPE_CHECKING:
    from streams.config import Settings

logger = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_database_name(database: str) -> str:
    """Return ``database`` if it is a plain identifier (it is pasted into DDL), else raise."""
    if not _IDENTIFIER.match(database):
        raise ValueError(f"ClickHouse database name must be a plain identifier, got {database!r}")
    return database


def connect(settings: Settings, *, connect_timeout: float = 3.0) -> Client:
    """Return a client on ``settings.clickhouse_database``, creating the database if missing.

    Embedded (``settings.embedded_clickhouse``): chDB in ``settings.chdb_path`` (created).
    Otherwise a server client with the configured host/port/user/password/secure. Datetimes
    come back timezone-aware (UTC columns as UTC). Any failure raises
    :class:`ClickHouseUnavailable` with one line saying where and why, within about
    ``connect_timeout`` seconds for an unreachable server.
    """
    try:
        database = check_database_name(settings.clickhouse_database)
    except ValueError as exc:  # a settings mistake: one line through the CLI, not a traceback
        raise ClickHouseError(f"TOUCHPATH_CLICKHOUSE_DATABASE: {exc}") from None
    if settings.embedded_clickhouse:
        path = settings.chdb_path
        where = f"embedded ClickHouse (chDB) at {path}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(
                interface="chdb", path=str(path), tz_mode="aware"
            )
        except Exception as exc:
            raise ClickHouseUnavailable(
                f"cannot open {where}: {one_line(exc)} (one process may open a chDB directory, "
                "and a process one directory at a time)"
            ) from exc
    else:
        host, port = settings.clickhouse_host, settings.clickhouse_port
        where = f"ClickHouse at {host}:{port}"
        try:
            with _quiet_drivers():
                client = _server_client(settings, connect_timeout)
        except Exception as exc:
            raise ClickHouseUnavailable(
                f"cannot reach {where}: {one_line(exc)} (check TOUCHPATH_CLICKHOUSE_HOST, _PORT, "
                "_SECURE, _USER, _PASSWORD)"
            ) from exc
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    except Exception as exc:
        client.close()
        raise ClickHouseUnavailable(
            f"cannot create database {database} on {where}: {one_line(exc)}"
        ) from exc
    client.database = database
    logger.info(
        "connected to %s (ClickHouse %s), database %s", where, client.server_version, database
    )
    return client


def _server_client(settings: Settings, connect_timeout: float) -> Client:
    return clickhouse_connect.get_client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        username=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        secure=settings.clickhouse_secure,
        verify=settings.clickhouse_verify,
        ca_cert=str(settings.clickhouse_ca_cert) if settings.clickhouse_ca_cert else None,
        connect_timeout=connect_timeout,
        query_retries=0,
        tz_mode="aware",
    )


@contextmanager
def _quiet_drivers() -> Iterator[None]:
    """Mute urllib3's and the driver's own warnings while connecting: a failure is reported
    once, as :class:`ClickHouseUnavailable`, not as three log lines before it."""
    loggers = [logging.getLogger(n) for n in ("urllib3.connectionpool", "clickhouse_connect")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
