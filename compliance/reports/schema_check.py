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
    checker = _Checker(root)
    checker.check(instance, root, "$")
    return checker.problems


class _Checker:
    """Walks an instance along its schema, collecting problems in document order."""

    def __init__(self, root: dict[str, Any]):
        self.root = root
        self.problems: list[str] = []

    def check(self, value: Any, s: dict[str, Any], path: str) -> None:
        if "$ref" in s:
            s = self.root["$defs"][s["$ref"].rsplit("/", 1)[1]]
        if "const" in s and value != s["const"]:
            self.problems.append(f"{path}: must be {s['const']!r}")
        if "enum" in s and value not in s["enum"]:
            self.problems.append(f"{path}: {value!r} not one of {s['enum']}")
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if not any(_is_type(value, t) for t in types):
                self.problems.append(f"{path}: expected {'/'.join(types)}, got {type(value).__name__}")
                return
        if isinstance(value, dict):
            self._object(value, s, path)
        if isinstance(value, list):
            self._array(value, s, path)
        if isinstance(value, int | float) and not isinstance(value, bool):
            self._number(value, s, path)
        if isinstance(value, str):
            self._string(value, s, path)

    def _object(self, value: dict[str, Any], s: dict[str, Any], path: str) -> None:
        for k in s.get("required", []):
            if k not in value:
                self.problems.append(f"{path}: missing '{k}'")
        props = s.get("properties", {})
        for k, v in value.items():
            if k in props:
                self.check(v, props[k], f"{path}.{k}")
            elif s.get("additionalProperties") is False:
                self.problems.append(f"{path}: unexpected '{k}'")

    def _array(self, value: list[Any], s: dict[str, Any], path: str) -> None:
        if "maxItems" in s and len(value) > s["maxItems"]:
            self.problems.append(f"{path}: more than {s['maxItems']} items")
        for i, item in enumerate(value):
            if "items" in s:
                self.check(item, s["items"], f"{path}[{i}]")

    def _number(self, value: float, s: dict[str, Any], path: str) -> None:
        if "minimum" in s and value < s["minimum"]:
            self.problems.append(f"{path}: below {s['minimum']}")
        if "maximum" in s and value > s["maximum"]:
            self.problems.append(f"{path}: above {s['maximum']}")

    def _string(self, value: str, s: dict[str, Any], path: str) -> None:
        if "pattern" in s and not re.search(s["pattern"], value):
            self.problems.append(f"{path}: does not match {s['pattern']}")
        if "maxLength" in s and len(value) > s["maxLength"]:
            self.problems.append(f"{path}: longer than {s['maxLength']}")
