#!/usr/bin/env python3
"""Derive data/apple-mdm-schema.json from Apple's device-management YAML: keys, types, presence, ranges.

Usage: tools/derive_apple_schema.py [REFERENCE_DIR] [OUTPUT]
    REFERENCE_DIR defaults to ../shared/reference/apple-device-management (a checkout of
    github.com/apple/device-management); OUTPUT defaults to data/apple-mdm-schema.json.

The output keeps facts only (no titles, descriptions or content), is deterministic, and handles
the two traps of the data:
  * recursive YAML anchors (a `subkeys` list that contains itself, e.g. the home screen layout's
    folders): cycles are found by object identity while walking, the list is stored once under
    "defs" and the recursive place gets {"ref": NAME};
  * payload types that several files define (com.apple.MCX has six): every file is kept as one
    variant, and ipad.schema validates a payload against each variant (union).

Node format: {"key", "type", "req": true (only when required), "values": [rangelist],
"min"/"max" (range), "sub": [nodes] | "ref": NAME, "ios": false (only when not on iOS),
"tvos": false (only when not on tvOS: the Apple TVs), "ue": true (on iOS only with User
Enrollment, so not required for school iPads)}. Commands and payload variants carry "ios"/"tvos"
false the same way. A key inherits its parent's (the payload's) support for an OS it does not name,
as Apple's docs/schema.md says.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.yamlio import SAFE_LOADER  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = REPO.parent / "shared" / "reference" / "apple-device-management"
DEFAULT_OUTPUT = REPO / "data" / "apple-mdm-schema.json"
FORMAT_VERSION = 1


class _Compiler:
    """Turns YAML payload-key lists into compact nodes, breaking anchor cycles by identity."""

    def __init__(self) -> None:
        self.defs: dict[str, list[dict[str, Any]]] = {}
        self._names: dict[int, str] = {}
        self._active: set[int] = set()
        self._prefix = ""

    def begin_file(self, prefix: str) -> None:
        # Ids are per file (PyYAML objects are per document); names carry the file for readability.
        self._names = {}
        self._prefix = prefix

    def keys(self, items: list[Any] | None, parent_ios: bool = True,
             parent_tvos: bool = True) -> list[dict[str, Any]]:
        return [self.node(item, parent_ios, parent_tvos) for item in items or [] if isinstance(item, dict)]

    def node(self, item: dict[str, Any], parent_ios: bool, parent_tvos: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"key": str(item.get("key", "")),
                               "type": str(item.get("type", "<any>")).strip("<>")}
        if item.get("presence") == "required":
            out["req"] = True
        if "rangelist" in item and item["rangelist"] is not None:
            out["values"] = list(item["rangelist"])
        rng = item.get("range") or {}
        if "min" in rng:
            out["min"] = rng["min"]
        if "max" in rng:
            out["max"] = rng["max"]
        ios = _on_ios(item.get("supportedOS"), parent_ios)
        if not ios and parent_ios:
            out["ios"] = False
        tvos = _on_os(item.get("supportedOS"), "tvOS", parent_tvos)
        if not tvos and parent_tvos:
            out["tvos"] = False
        if _user_enrollment_only(item.get("supportedOS")):
            out["ue"] = True
        subkeys = item.get("subkeys")
        if isinstance(subkeys, list) and subkeys:
            ident = id(subkeys)
            if ident in self._active:
                # A cycle: this very list is being compiled further up; refer to it by name.
                name = self._names.setdefault(ident, f"{self._prefix}#{len(self._names) + 1}")
                out["ref"] = name
                return out
            self._active.add(ident)
            try:
                compiled = self.keys(subkeys, ios, tvos)
            finally:
                self._active.discard(ident)
            if ident in self._names:
                self.defs[self._names[ident]] = compiled
            out["sub"] = compiled
        return out


def _on_ios(supported: Any, inherited: bool) -> bool:
    """False when Apple marks the key as not introduced on iOS ('n/a'); else the parent's answer."""
    return _on_os(supported, "iOS", inherited)


def _on_os(supported: Any, os_name: str, inherited: bool) -> bool:
    """False when Apple marks the key as not introduced on `os_name` ('n/a') or removed; else the
    parent's answer (a key that does not name the OS inherits it)."""
    if not isinstance(supported, dict) or os_name not in supported:
        return inherited
    entry = supported.get(os_name) or {}
    return str(entry.get("introduced", "")) != "n/a" and "removed" not in entry


def _user_enrollment_only(supported: Any) -> bool:
    """True when Apple says the key exists on iOS only with User Enrollment (e.g. EnrollmentID)."""
    if not isinstance(supported, dict):
        return False
    ios = supported.get("iOS") or {}
    return isinstance(ios, dict) and (ios.get("userenrollment") or {}).get("mode") == "required"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
        raise ValueError(f"{path}: not a schema file (no 'payload' mapping)")
    return data


def derive(reference: Path) -> dict[str, Any]:
    mdm = reference / "mdm"
    comp = _Compiler()
    commands: dict[str, Any] = {}
    for path in sorted((mdm / "commands").glob("*.yaml")):
        data = _load(path)
        request_type = data["payload"].get("requesttype")
        if not request_type:
            continue
        comp.begin_file(f"commands/{path.stem}")
        ios = _on_ios(data["payload"].get("supportedOS"), True)
        tvos = _on_os(data["payload"].get("supportedOS"), "tvOS", False)
        entry: dict[str, Any] = {"file": path.name, "request": comp.keys(data.get("payloadkeys"), ios, tvos),
                                 "response": comp.keys(data.get("responsekeys"), ios, tvos)}
        if not ios:
            entry["ios"] = False
        if not tvos:
            entry["tvos"] = False
        commands[request_type] = entry
    checkin: dict[str, Any] = {}
    for path in sorted((mdm / "checkin").glob("*.yaml")):
        data = _load(path)
        message_type = data["payload"].get("requesttype") or path.stem
        comp.begin_file(f"checkin/{path.stem}")
        checkin[message_type] = {"file": path.name, "keys": comp.keys(data.get("payloadkeys")),
                                 "response": comp.keys(data.get("responsekeys"))}
    profiles: dict[str, list[dict[str, Any]]] = {}
    top_level: list[dict[str, Any]] = []
    common: list[dict[str, Any]] = []
    for path in sorted((mdm / "profiles").glob("*.yaml")):
        data = _load(path)
        comp.begin_file(f"profiles/{path.stem}")
        keys = comp.keys(data.get("payloadkeys"))
        if path.name == "TopLevel.yaml":
            top_level = keys
            continue
        if path.name == "CommonPayloadKeys.yaml":
            common = keys
            continue
        payload_type = data["payload"].get("payloadtype")
        if not payload_type:
            continue
        variant: dict[str, Any] = {"file": path.name, "keys": keys}
        if not _on_ios(data["payload"].get("supportedOS"), True):
            variant["ios"] = False
        if not _on_os(data["payload"].get("supportedOS"), "tvOS", False):
            variant["tvos"] = False
        profiles.setdefault(payload_type, []).append(variant)
    source_file = reference / "SOURCE.txt"
    source = source_file.read_text(encoding="utf-8").strip() if source_file.is_file() else str(reference)
    return {
        "_format": FORMAT_VERSION,
        "_source": source,
        "_licence": "MIT licence, Copyright (c) 2022-2024 Apple Inc. "
                    "(LICENSE.txt of apple/device-management); derived facts only: "
                    "key names, types, presence, value lists and ranges",
        "_generated_by": "tools/derive_apple_schema.py",
        "commands": commands,
        "checkin": checkin,
        "profile_top_level": top_level,
        "profile_common": common,
        "profiles": profiles,
        "defs": dict(sorted(comp.defs.items())),
    }


def render(data: dict[str, Any]) -> str:
    # One JSON object per line would be easier to diff but twice the size; compact separators,
    # sorted keys and a trailing newline keep it small and byte-for-byte reproducible.
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


def main(argv: list[str]) -> int:
    reference = Path(argv[1]) if len(argv) > 1 else DEFAULT_REFERENCE
    output = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    if not (reference / "mdm" / "commands").is_dir():
        print(f"error: {reference} has no mdm/commands folder", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(derive(reference)), encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
