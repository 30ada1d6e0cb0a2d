"""Parameters of the named dashboard queries, declared in each SQL file's header.

A query file declares every ClickHouse parameter it uses, with a default, in a comment line::

    -- param: days UInt32 = 30  how many days to show

(``''`` is the empty string). The defaults make each query runnable as it is: by the ops
page, by ``/api/query/{name}`` without a query string, and by Grafana, whose ClickHouse
plugin does not bind ClickHouse parameters and gets them as dashboard variables instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sinks.clickhouse.queries import query_names, query_sql

__all__ = ["QueryParam", "declared_params", "query_params", "used_params", "with_defaults"]

_DECLARATION = re.compile(
    r"^--\s*param:\s*(?P<name>[A-Za-z_]\w*)\s+(?P<type>[A-Za-z][\w(), ]*?)\s*=\s*"
    r"(?P<default>''|\S+)\s*(?P<doc>.*)$",
    re.MULTILINE,
)
#: A ClickHouse query parameter in SQL text: ``{name:Type}``.
PLACEHOLDER = re.compile(r"\{(?P<name>[A-Za-z_]\w*):(?P<type>[^{}]+)\}")


@dataclass(frozen=True, slots=True)
class QueryParam:
    """One declared parameter: ClickHouse type, default (as text) and what it does."""

    name: str
    type: str
    default: str
    doc: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "default": self.default, "doc": self.doc}


def declared_params(sql: str) -> list[QueryParam]:
    """The ``-- param:`` declarations of ``sql``, in file order."""
    params = []
    for m in _DECLARATION.finditer(sql):
        default = "" if m["default"] == "''" else m["default"]
        params.append(QueryParam(m["name"], m["type"].strip(), default, m["doc"].strip()))
    return params


def used_params(sql: str) -> dict[str, str]:
    """The ``{name:Type}`` placeholders of ``sql`` outside comments: name -> type."""
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return {m["name"]: m["type"].strip() for m in PLACEHOLDER.finditer(code)}


def query_params(name: str) -> list[QueryParam]:
    """The declared parameters of named query ``name`` (``KeyError`` if unknown)."""
    return declared_params(query_sql(name))


def with_defaults(name: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters to run query ``name`` with: its defaults, overridden by ``given``.

    Keys that the query does not declare are dropped (a query string may carry others).
    """
    given = given or {}
    return {p.name: given.get(p.name, p.default) for p in query_params(name)}


def catalogue() -> dict[str, list[dict[str, str]]]:
    """Every named query with its parameters (served to the ops page)."""
    return {name: [p.as_json() for p in query_params(name)] for name in query_names()}
