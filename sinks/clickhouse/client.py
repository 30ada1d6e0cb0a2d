"""Open a clickhouse-connect client: embedded chDB or a ClickHouse server, same API.

The embedded engine (chDB, ClickHouse 26.x in-process) is what a bare ``touchpath`` uses:
its data directory is owned by one process, and a process can have one directory open at
a time. Any other configuration talks HTTP(S) to a server.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import clickhouse_connect
from clickhouse_connect.driver import Client

from sinks.clickhouse.errors import ClickHouseUnavailable, one_line

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
    database = check_database_name(settings.clickhouse_database)
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
            client = clickhouse_connect.get_client(
                host=host,
                port=port,
                username=settings.clickhouse_user,
                password=settings.clickhouse_password.get_secret_value(),
                secure=settings.clickhouse_secure,
                connect_timeout=connect_timeout,
                query_retries=0,
                tz_mode="aware",
            )
        except Exception as exc:
            raise ClickHouseUnavailable(f"cannot reach {where}: {one_line(exc)}") from exc
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
