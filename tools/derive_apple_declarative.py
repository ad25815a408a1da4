#!/usr/bin/env python3
"""Derive data/apple-ddm-schema.json from Apple's declarative-management YAML: declarations and status items.

Usage: tools/derive_apple_declarative.py [REFERENCE_DIR] [OUTPUT]
    REFERENCE_DIR defaults to ../shared/reference/apple-device-management (a checkout of
    github.com/apple/device-management); OUTPUT defaults to data/apple-ddm-schema.json.

Facts only (no titles, descriptions or content), deterministic. Key nodes use the format of
tools/derive_apple_schema.py (key, type, req, values, min, max, sub/ref, ios: false), plus
"since": the iOS version that introduced a key when it is later than its declaration's, and
"supervised": true when iOS allows the key only on supervised devices.

Top level: "base" (the DeclarationBase keys), "declarations" (Type -> {file, kind, apply, ios:
the iOS version that introduced it or false, supervised, keys}) and "status_items" (name ->
{file, ios, type}).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from derive_apple_schema import _Compiler  # noqa: E402

from core.yamlio import SAFE_LOADER  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = REPO.parent / "shared" / "reference" / "apple-device-management"
DEFAULT_OUTPUT = REPO / "data" / "apple-ddm-schema.json"
FORMAT_VERSION = 1
KINDS = ("activations", "assets", "configurations", "management")


def _ios_introduced(supported: Any) -> str | None | bool:
    """The iOS version string, False when not on iOS ('n/a' or removed), None when not stated."""
    if not isinstance(supported, dict) or "iOS" not in supported:
        return None
    ios = supported.get("iOS") or {}
    introduced = str(ios.get("introduced", ""))
    if introduced == "n/a" or "removed" in ios:
        return False
    return introduced or None


def _supervised_only(supported: Any) -> bool:
    if not isinstance(supported, dict):
        return False
    ios = supported.get("iOS") or {}
    return isinstance(ios, dict) and ios.get("allowed-enrollments") == ["supervised"]


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


class _DeclarativeCompiler(_Compiler):
    """The profile compiler, plus each key's iOS version and supervision requirement."""

    def __init__(self) -> None:
        super().__init__()
        self.since = "0"

    def node(self, item: dict[str, Any], parent_ios: bool, parent_tvos: bool = True) -> dict[str, Any]:
        out = super().node(item, parent_ios, parent_tvos)
        out.pop("tvos", None)  # the declarations werne sends are for iPads only
        supported = item.get("supportedOS")
        introduced = _ios_introduced(supported)
        if isinstance(introduced, str) and _version(introduced) > _version(self.since):
            out["since"] = introduced
        if _supervised_only(supported):
            out["supervised"] = True
        return out


def _load(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
        raise ValueError(f"{path}: not a schema file (no 'payload' mapping)")
    return data


def derive(reference: Path) -> dict[str, Any]:
    root = reference / "declarative"
    comp = _DeclarativeCompiler()
    base = _load(root / "declarations" / "declarationbase.yaml")
    comp.begin_file("declarationbase")
    base_keys = comp.keys(base.get("payloadkeys"))
    declarations: dict[str, Any] = {}
    for kind in KINDS:
        for path in sorted((root / "declarations" / kind).glob("*.yaml")):
            data = _load(path)
            dtype = data["payload"].get("declarationtype")
            if not dtype:
                continue
            supported = data["payload"].get("supportedOS")
            introduced = _ios_introduced(supported)
            comp.since = introduced if isinstance(introduced, str) else "0"
            comp.begin_file(f"{kind}/{path.stem}")
            entry: dict[str, Any] = {
                "file": f"{kind}/{path.name}",
                "kind": kind.rstrip("s"),
                "ios": introduced if introduced is not None else False,
                "keys": comp.keys(data.get("payloadkeys"), introduced is not False),
            }
            if data["payload"].get("apply"):
                entry["apply"] = data["payload"]["apply"]
            if _supervised_only(supported):
                entry["supervised"] = True
            declarations[dtype] = entry
    status_items: dict[str, Any] = {}
    for path in sorted((root / "status").glob("*.yaml")):
        data = _load(path)
        name = data["payload"].get("statusitemtype")
        if not name:
            continue
        introduced = _ios_introduced(data["payload"].get("supportedOS"))
        keys = data.get("payloadkeys") or [{}]
        status_items[name] = {
            "file": path.name,
            "ios": introduced if introduced is not None else False,
            "type": str(keys[0].get("type", "<any>")).strip("<>"),
        }
    source_file = reference / "SOURCE.txt"
    source = source_file.read_text(encoding="utf-8").strip() if source_file.is_file() else str(reference)
    return {
        "_format": FORMAT_VERSION,
        "_source": source,
        "_licence": "MIT licence, Copyright (c) 2022-2024 Apple Inc. "
                    "(LICENSE.txt of apple/device-management); derived facts only: "
                    "key names, types, presence, value lists, ranges and supported iOS versions",
        "_generated_by": "tools/derive_apple_declarative.py",
        "base": base_keys,
        "declarations": declarations,
        "status_items": status_items,
        "defs": dict(sorted(comp.defs.items())),
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


def main(argv: list[str]) -> int:
    reference = Path(argv[1]) if len(argv) > 1 else DEFAULT_REFERENCE
    output = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    if not (reference / "declarative" / "declarations").is_dir():
        print(f"error: {reference} has no declarative/declarations folder", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(derive(reference)), encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
