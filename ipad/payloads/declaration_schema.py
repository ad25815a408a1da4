"""Checks declarations against Apple's declarative schema (data/apple-ddm-schema.json).

The JSON is derived from github.com/apple/device-management by tools/derive_apple_declarative.py.
`validate_declaration` returns one-line problems, empty when valid: the DeclarationBase keys, an
unknown or non-iOS Type, and the Payload's keys, types, value lists and ranges (the same walker as
ipad.payloads.mdm_schema), plus the names in a status subscription, which must be status items iOS reports.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from core.config import REPO_ROOT
from ipad.errors import SchemaError
from ipad.payloads.mdm_schema import SchemaValidator

DDM_SCHEMA_FILE = REPO_ROOT / "data" / "apple-ddm-schema.json"
STATUS_SUBSCRIPTIONS = "com.apple.configuration.management.status-subscriptions"


@functools.lru_cache(maxsize=4)
def load_ddm_schema(path: Path = DDM_SCHEMA_FILE) -> dict[str, Any]:
    """The derived declarative schema; raises SchemaError if it is missing or not in the expected format."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(f"Apple declarative schema {path} does not exist "
                          "(run tools/derive_apple_declarative.py)") from None
    except (OSError, ValueError) as e:
        raise SchemaError(f"Apple declarative schema {path} is unreadable: {e.__class__.__name__}") from None
    for key in ("base", "declarations", "status_items", "defs"):
        if key not in data:
            raise SchemaError(f"Apple declarative schema {path}: missing section {key!r}")
    return data


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def ios_introduced(declaration_type: str, schema: dict[str, Any] | None = None) -> str | None:
    """The iOS version that introduced a declaration type, None if iOS does not have it."""
    entry = (schema or load_ddm_schema())["declarations"].get(declaration_type)
    ios = entry.get("ios") if entry else None
    return ios if isinstance(ios, str) else None


def validate_declaration(declaration: object, schema: dict[str, Any] | None = None) -> list[str]:
    """Problems of one declaration (Type, Identifier, ServerToken, Payload) for an iPad; anything
    but a dictionary is one problem (declarations also come from data files)."""
    schema = schema or load_ddm_schema()
    check = SchemaValidator(schema, "iOS")
    if not isinstance(declaration, dict):
        return ["declaration: expected dictionary"]
    check.dictionary(declaration, schema["base"], "")
    dtype = declaration.get("Type")
    for key in ("Identifier", "ServerToken"):
        value = declaration.get(key)
        if isinstance(value, str) and len(value.encode()) > 64:
            check.errors.append(f"{key}: longer than 64 octets")
    entry = schema["declarations"].get(dtype) if isinstance(dtype, str) else None
    if isinstance(dtype, str) and entry is None:
        check.errors.append(f"Type: unknown declaration type {dtype!r}")
    elif entry is not None and entry.get("ios") is False:
        check.errors.append(f"Type: {dtype} is not supported on iOS")
    payload = declaration.get("Payload")
    if entry is not None and isinstance(payload, dict):
        check.dictionary(payload, entry["keys"], "Payload")
        if dtype == STATUS_SUBSCRIPTIONS:
            items = schema["status_items"]
            for i, item in enumerate(payload.get("StatusItems") or []):
                name = item.get("Name") if isinstance(item, dict) else None
                if not isinstance(name, str):
                    continue
                if name not in items:
                    check.errors.append(f"Payload.StatusItems[{i}].Name: unknown status item {name!r}")
                elif items[name].get("ios") is False:
                    check.errors.append(f"Payload.StatusItems[{i}].Name: {name} is not reported on iOS")
    return check.errors


def newer_than(version: str, floor: str) -> bool:
    """True when `version` is a later iOS than `floor` (e.g. '18.0' than '17.0')."""
    return _version(version) > _version(floor)
