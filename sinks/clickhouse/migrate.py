"""Apply the versioned DDL files (``ddl/NNNN_name.sql``) once each, in order.

Applied versions are recorded in ``<db>.schema_migrations``; running :func:`migrate` again
applies only files it has not seen, so every process can call it at start.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from clickhouse_connect.driver import Client

from sinks.clickhouse.errors import MigrationError, one_line
from sinks.clickhouse.sqlfiles import render, split_statements

logger = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")

_CREATE_MIGRATIONS = f"""
CREATE TABLE IF NOT EXISTS {{db}}.{MIGRATIONS_TABLE}
(
    version     UInt32,
    name        String,
    applied_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One DDL file."""

    version: int
    name: str
    sql: str


def default_ddl_dir() -> Traversable:
    """The DDL files shipped with the package."""
    return files("sinks.clickhouse") / "ddl"


def load_migrations(ddl_dir: Traversable | Path | None = None) -> list[Migration]:
    """Read ``NNNN_name.sql`` files from ``ddl_dir`` sorted by version; other files are ignored.

    Two files with one version number raise :class:`MigrationError`.
    """
    root = default_ddl_dir() if ddl_dir is None else ddl_dir
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        match = _FILE_NAME.match(entry.name)
        if not match or not entry.is_file():
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"two DDL files with version {version:04d}: "
                f"{found[version].name!r} and {match.group(2)!r}"
            )
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def applied_versions(client: Client, database: str) -> set[int]:
    """Versions recorded in ``schema_migrations`` (empty if the table does not exist yet)."""
    client.command(render(_CREATE_MIGRATIONS, database))
    result = client.query(f"SELECT DISTINCT version FROM {database}.{MIGRATIONS_TABLE}")
    return {int(row[0]) for row in result.result_rows}


def migrate(
    client: Client, database: str, *, ddl_dir: Traversable | Path | None = None
) -> list[int]:
    """Create ``database`` if needed and apply the DDL files not yet applied, in order.

    Returns the versions applied by this call (empty when the schema is current). A file
    is recorded only after all its statements succeeded; a failure raises
    :class:`MigrationError` naming the file and the statement.
    """
    client.command(f"CREATE DATABASE IF NOT EXISTS {render('{db}', database)}")
    done = applied_versions(client, database)
    applied: list[int] = []
    for mig in load_migrations(ddl_dir):
        if mig.version in done:
            continue
        label = f"{mig.version:04d}_{mig.name}.sql"
        for n, statement in enumerate(split_statements(render(mig.sql, database)), start=1):
            try:
                client.command(statement)
            except Exception as exc:
                raise MigrationError(
                    f"{label} statement {n} failed on database {database}: {one_line(exc)}"
                ) from exc
        client.insert(
            MIGRATIONS_TABLE,
            [[mig.version], [mig.name], [datetime.now(UTC)]],
            column_names=["version", "name", "applied_at"],
            column_oriented=True,
            database=database,
        )
        logger.info("applied ClickHouse migration %s to %s", label, database)
        applied.append(mig.version)
    return applied
