"""Named dashboard queries: ``<name>.sql`` files in this package, run by name.

The same files serve Grafana provisioning, the built-in ops page and the tests. In a file,
``{db}`` stands for the database and ClickHouse query parameters are written
``{name:Type}`` (bound server-side from ``params``). This package holds both the SQL and
the code, because a ``queries.py`` beside a ``queries/`` package would be shadowed by it.

Most of them are dashboard queries: small answers (a tile, a chart, a table of at most a few
thousand rows) held to the dashboard latency target (p95 < 500 ms at 10^7 touchpoints,
``benchmarks/query_bench.py``). :data:`EXPORT_QUERIES` are not: they return one row per
entity for reconciliation and backtest comparisons (integration tests, the demo, the
benchmarks), so their cost grows with the data and is mostly the transfer of the rows; no
dashboard panel runs them.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from clickhouse_connect.driver import Client

from sinks.clickhouse.sqlfiles import render

__all__ = ["EXPORT_QUERIES", "query_names", "query_sql", "run_query"]

#: Reconciliation exports: every event id, pain point, care action or journey's final
#: version, one row each (10^7 rows for ``touchpoint_ids`` at 10^7 touchpoints). Not
#: dashboard panels (neither Grafana's nor the ops page's), so not held to the dashboard
#: latency target; ``benchmarks/query_bench.py`` reports them apart.
EXPORT_QUERIES: frozenset[str] = frozenset(
    {"touchpoint_ids", "pain_point_ids", "care_action_ids", "journey_finals"}
)


@cache
def _sources() -> dict[str, str]:
    root = files(__name__)
    return {
        entry.name.removesuffix(".sql"): entry.read_text(encoding="utf-8")
        for entry in root.iterdir()
        if entry.name.endswith(".sql") and entry.is_file()
    }


def query_names() -> list[str]:
    """Names of the shipped queries, sorted."""
    return sorted(_sources())


def query_sql(name: str, database: str = "touchpath") -> str:
    """The SQL of query ``name`` with ``{db}`` filled in. Unknown names raise ``KeyError``."""
    try:
        sql = _sources()[name]
    except KeyError:
        raise KeyError(f"no dashboard query {name!r}; known: {query_names()}") from None
    return render(sql, database)


def run_query(
    client: Client,
    name: str,
    params: dict[str, Any] | None = None,
    *,
    database: str = "touchpath",
) -> list[dict[str, Any]]:
    """Run query ``name`` on ``database`` and return its rows as dicts (column → value)."""
    result = client.query(query_sql(name, database), parameters=params or None)
    return list(result.named_results())
