"""JSON Schema export of the wire formats, so producers can validate on their side."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
from pydantic import TypeAdapter

from schemas.customer import CustomerProfile
from schemas.dead_letter import DeadLetter
from schemas.touchpoint import TOUCHPOINT_ADAPTER

_RAW_PII = {
    "phone": {"type": "string", "description": "raw phone number; hashed on ingest"},
    "email": {"type": "string", "description": "raw e-mail address; hashed on ingest"},
}


def _wire_touchpoint_schema() -> dict[str, Any]:
    """The touchpoint union as producers write it: raw phone/email, extra keys allowed."""
    schema = copy.deepcopy(TOUCHPOINT_ADAPTER.json_schema(mode="validation"))
    defs = schema.get("$defs", {})
    for name, d in defs.items():
        if name.endswith("Touchpoint"):
            d["additionalProperties"] = True  # unknown keys are kept under `attributes`
            d["properties"]["occurred_at"]["description"] = (
                "ISO 8601 with offset; not before 2000, not more than 7 days ahead"
            )
        if name == "Identifiers":
            d["properties"].update(_RAW_PII)
            d["minProperties"] = 1
    schema["title"] = "Touchpoint"
    return schema


def _wire_customer_schema() -> dict[str, Any]:
    schema = copy.deepcopy(CustomerProfile.model_json_schema(mode="validation"))
    schema["properties"].update(_RAW_PII)
    return schema


def schemas() -> dict[str, dict[str, Any]]:
    """All exported schemas by file stem."""
    return {
        "touchpoint": _wire_touchpoint_schema(),
        "customer": _wire_customer_schema(),
        "dead_letter": TypeAdapter(DeadLetter).json_schema(mode="serialization"),
    }


def export(out_dir: Path) -> list[Path]:
    """Write ``<name>.schema.json`` files into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in schemas().items():
        path = out_dir / f"{name}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        paths.append(path)
    return paths
