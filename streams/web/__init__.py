"""The built-in ops page: ``/dashboard``, served by the worker, offline (no CDN, no build).

``register(app, warehouse)`` adds three Faust pages:

- ``/dashboard``: the page (``static/index.html``);
- ``/dashboard/static/{name}``: its script and style sheet, shipped in this package;
- ``/dashboard/queries``: the named queries with their parameters and defaults (JSON), so
  the page and the SQL files agree on them.

The figures themselves come from the worker's query API, ``/api/query/{name}``, which runs
the same named SQL files as Grafana and the tests.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import orjson

from streams.web.params import catalogue

if TYPE_CHECKING:
    import faust

    from streams.warehouse import Warehouse

__all__ = ["register", "static_file"]

_CONTENT_TYPES = {
    # no charset parameter: aiohttp refuses one inside content_type; the files are ASCII
    ".js": "application/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".html": "text/html",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NO_CACHE = {"Cache-Control": "no-cache"}


@cache
def static_file(name: str) -> tuple[bytes, str] | None:
    """``(body, content type)`` of shipped asset ``name``, or None if there is none."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if not _NAME.match(name) or ".." in name or suffix not in _CONTENT_TYPES:
        return None
    entry = files(__name__) / "static" / name
    if not entry.is_file():
        return None
    return entry.read_bytes(), _CONTENT_TYPES[suffix]


def register(app: faust.App, warehouse: Warehouse) -> None:
    """Add the ops page to the worker's web server (the query API is already there).

    ``warehouse`` is accepted so the page can grow views of its own; today every figure
    goes through ``/api/query/{name}``.
    """
    del warehouse

    @app.page("/dashboard")
    async def dashboard(web: Any, request: Any) -> Any:
        page = static_file("index.html")
        assert page is not None, "streams/web/static/index.html is missing from the package"
        return web.html(page[0].decode("utf-8"), headers=dict(_NO_CACHE))

    @app.page("/dashboard/static/{name}")
    async def static(web: Any, request: Any, name: str) -> Any:
        found = static_file(name)
        if found is None:
            return web.json({"error": f"no such file {name!r}"}, status=404)
        body, content_type = found
        return web.bytes(body, content_type=content_type, headers=dict(_NO_CACHE))

    @app.page("/dashboard/queries")
    async def queries(web: Any, request: Any) -> Any:
        return web.bytes(orjson.dumps(catalogue()), content_type="application/json")
