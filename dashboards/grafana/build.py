"""Build ``dashboards/touchpath.json`` (Grafana) from the named query files.

Every panel runs one named query (``sinks/clickhouse/queries/<name>.sql``); its ``rawSql`` is
that file's text with two mechanical changes, both made by :func:`grafana_sql`:

- ``{db}`` becomes the database (``touchpath``, as docker-compose deploys it);
- each ClickHouse parameter ``{name:Type}`` becomes ``CAST(${name:sqlstring} AS Type)``, a
  Grafana dashboard variable (a text box holding the default from the file's
  ``-- param:`` line): Grafana's ClickHouse plugin does not bind ClickHouse query
  parameters (grafana/clickhouse-datasource#1200), and ``sqlstring`` quotes and escapes.

Run ``python dashboards/grafana/build.py`` after changing a query file and commit the output;
``--check`` exits 1 when the committed JSON is stale (the unit tests check it too).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinks.clickhouse.queries import query_sql
from streams.web.params import PLACEHOLDER, QueryParam, declared_params

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards" / "touchpath.json"
DATABASE = "touchpath"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "touchpath-clickhouse"}
DASHBOARD_UID = "touchpath-ops"


@dataclass(frozen=True)
class Panel:
    query: str
    title: str
    kind: str  # Grafana panel type
    x: int
    y: int
    w: int
    h: int
    timeseries: bool = False
    options: dict[str, Any] | None = None
    transformations: tuple[dict[str, Any], ...] = ()
    unit: str | None = None


PANELS: tuple[Panel, ...] = (
    Panel("overview", "Overview", "stat", 0, 0, 24, 4),
    Panel(
        "live_volume_by_channel",
        "Touchpoints per channel per hour",
        "timeseries",
        0,
        4,
        16,
        9,
        timeseries=True,
    ),
    Panel("dead_letter_rate", "Dead letters by reason (share of input)", "table", 16, 4, 8, 9),
    Panel("top_pain_points", "Top pain points (vs previous period)", "table", 0, 13, 12, 9),
    Panel(
        "pain_points_trend",
        "Pain points per day per rule",
        "timeseries",
        12,
        13,
        12,
        9,
        timeseries=True,
    ),
    Panel(
        "care_funnel",
        "Care funnel per action kind",
        "barchart",
        0,
        22,
        12,
        9,
        options={"orientation": "horizontal", "stacking": "none", "showValue": "auto"},
        transformations=(
            {
                "id": "groupingToMatrix",
                "options": {"columnField": "status", "rowField": "kind", "valueField": "actions"},
            },
        ),
    ),
    Panel(
        "care_suppressions",
        "Care actions held / suppressed / failed, by reason",
        "table",
        12,
        22,
        12,
        9,
    ),
    Panel("journey_map", "Journey map: channel to channel", "table", 0, 31, 8, 10),
    Panel(
        "experience_score_by_tier",
        "Experience score by tier (closed journeys)",
        "table",
        8,
        31,
        10,
        10,
    ),
    Panel("repeat_contact_rate", "Repeat-contact rate", "stat", 18, 31, 6, 10, unit="percentunit"),
    Panel("worst_journeys", "Worst journeys", "table", 0, 41, 24, 10),
    Panel(
        "customer_journey", "Customer drill-down (set customer_id above)", "table", 0, 51, 24, 12
    ),
)


def grafana_sql(name: str, database: str = DATABASE) -> str:
    """The panel SQL of query ``name``: its file text, ``{db}`` and parameters replaced."""
    sql = query_sql(name, database)
    return PLACEHOLDER.sub(lambda m: f"CAST(${{{m['name']}:sqlstring}} AS {m['type']})", sql)


def _variables() -> list[dict[str, Any]]:
    """One text-box variable per parameter name; a name must mean one thing everywhere."""
    seen: dict[str, QueryParam] = {}
    for panel in PANELS:
        for p in declared_params(query_sql(panel.query)):
            other = seen.setdefault(p.name, p)
            if (other.type, other.default) != (p.type, p.default):
                raise SystemExit(
                    f"parameter {p.name!r} is declared as {other.type} = {other.default!r} and "
                    f"as {p.type} = {p.default!r}: one dashboard variable cannot be both"
                )
    return [
        {
            "type": "textbox",
            "name": p.name,
            "label": p.name,
            "description": p.doc,
            "query": p.default,
            "current": {"text": p.default, "value": p.default},
            "options": [{"selected": True, "text": p.default, "value": p.default}],
            "hide": 0,
        }
        for p in seen.values()
    ]


def _description(name: str) -> str:
    lines = []
    for line in query_sql(name).splitlines():
        if not line.startswith("--"):
            break
        text = line.lstrip("-").strip()
        if not text.startswith("param:"):
            lines.append(text)
    return " ".join(lines) + f" (query: {name})"


def _panel(n: int, panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if panel.unit:
        defaults["unit"] = panel.unit
    return {
        "id": n,
        "type": panel.kind,
        "title": panel.title,
        "description": _description(panel.query),
        "datasource": DATASOURCE,
        "gridPos": {"x": panel.x, "y": panel.y, "w": panel.w, "h": panel.h},
        "targets": [
            {
                "refId": "A",
                "datasource": DATASOURCE,
                "editorType": "sql",
                "queryType": "timeseries" if panel.timeseries else "table",
                "format": 0 if panel.timeseries else 1,
                "rawSql": grafana_sql(panel.query),
            }
        ],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": panel.options or {},
        "transformations": list(panel.transformations),
    }


def build() -> dict[str, Any]:
    """The dashboard as a dict."""
    return {
        "uid": DASHBOARD_UID,
        "title": "touchpath — customer experience",
        "description": "Generated by dashboards/grafana/build.py from sinks/clickhouse/queries/",
        "tags": ["touchpath"],
        "timezone": "utc",
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-30d", "to": "now"},
        "templating": {"list": _variables()},
        "panels": [_panel(n, p) for n, p in enumerate(PANELS, start=1)],
    }


def render() -> str:
    """The dashboard JSON text as committed."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is stale: run python dashboards/grafana/build.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(PANELS)} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
