"""A small JSON Schema checker for the subset compliance/report.schema.json uses (type, const, enum,
required, properties, additionalProperties, items, maxItems, minimum, maximum, pattern, maxLength,
$ref to #/$defs). It keeps the jsonschema package out of the runtime dependencies."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "report.schema.json"
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is_type(value: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[t])


def validate(instance: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Every violation as `path: problem`; empty when the instance conforms."""
    root = schema or json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    problems: list[str] = []

    def check(value: Any, s: dict[str, Any], path: str) -> None:
        if "$ref" in s:
            s = root["$defs"][s["$ref"].rsplit("/", 1)[1]]
        if "const" in s and value != s["const"]:
            problems.append(f"{path}: must be {s['const']!r}")
        if "enum" in s and value not in s["enum"]:
            problems.append(f"{path}: {value!r} not one of {s['enum']}")
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if not any(_is_type(value, t) for t in types):
                problems.append(f"{path}: expected {'/'.join(types)}, got {type(value).__name__}")
                return
        if isinstance(value, dict):
            for k in s.get("required", []):
                if k not in value:
                    problems.append(f"{path}: missing '{k}'")
            props = s.get("properties", {})
            for k, v in value.items():
                if k in props:
                    check(v, props[k], f"{path}.{k}")
                elif s.get("additionalProperties") is False:
                    problems.append(f"{path}: unexpected '{k}'")
        if isinstance(value, list):
            if "maxItems" in s and len(value) > s["maxItems"]:
                problems.append(f"{path}: more than {s['maxItems']} items")
            for i, item in enumerate(value):
                if "items" in s:
                    check(item, s["items"], f"{path}[{i}]")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in s and value < s["minimum"]:
                problems.append(f"{path}: below {s['minimum']}")
            if "maximum" in s and value > s["maximum"]:
                problems.append(f"{path}: above {s['maximum']}")
        if isinstance(value, str):
            if "pattern" in s and not re.search(s["pattern"], value):
                problems.append(f"{path}: does not match {s['pattern']}")
            if "maxLength" in s and len(value) > s["maxLength"]:
                problems.append(f"{path}: longer than {s['maxLength']}")

    check(instance, root, "$")
    return problems
