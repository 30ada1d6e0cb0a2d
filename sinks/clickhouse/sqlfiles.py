"""Reading the shipped SQL files: ``{db}`` substitution and splitting into statements."""

from __future__ import annotations

from sinks.clickhouse.client import check_database_name

DB_PLACEHOLDER = "{db}"


def render(sql: str, database: str) -> str:
    """Replace ``{db}`` with the database name (a checked identifier).

    Plain replacement rather than ``str.format`` so ClickHouse's own braces (query
    parameters ``{name:Type}``, map literals) pass through untouched.
    """
    return sql.replace(DB_PLACEHOLDER, check_database_name(database))


def split_statements(sql: str) -> list[str]:
    """Split SQL text on ``;`` outside quotes and comments; drop empty/comment-only parts."""
    statements: list[str] = []
    buf: list[str] = []
    has_code = False
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            j = i + 1
            while j < n and sql[j] != ch:
                j += 2 if sql[j] == "\\" else 1
            buf.append(sql[i : j + 1])
            has_code = True
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            buf.append(sql[i:j])
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            buf.append(sql[i:j])
            i = j
        elif ch == ";":
            if has_code:
                statements.append("".join(buf).strip())
            buf, has_code = [], False
            i += 1
        else:
            buf.append(ch)
            has_code = has_code or not ch.isspace()
            i += 1
    if has_code:
        statements.append("".join(buf).strip())
    return statements
