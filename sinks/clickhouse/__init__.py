"""ClickHouse sink: connection, versioned DDL, batching writer and named dashboard queries.

Works the same against a ClickHouse server and the embedded chDB engine.
"""

from sinks.clickhouse.client import connect
from sinks.clickhouse.errors import (
    ClickHouseError,
    ClickHouseRejected,
    ClickHouseUnavailable,
    MigrationError,
)
from sinks.clickhouse.migrate import migrate
from sinks.clickhouse.queries import query_names, run_query
from sinks.clickhouse.tables import TABLE_COLUMNS, TABLES, TableSpec
from sinks.clickhouse.writer import ClickHouseWriter

__all__ = [
    "TABLES",
    "TABLE_COLUMNS",
    "ClickHouseError",
    "ClickHouseRejected",
    "ClickHouseUnavailable",
    "ClickHouseWriter",
    "MigrationError",
    "TableSpec",
    "connect",
    "migrate",
    "query_names",
    "run_query",
]
