#!/usr/bin/env python3
"""Derive data/dep-skip-keys.json from Apple's device-management schema (other/skipkeys.yaml).

Keeps only facts: each skip key and, per OS, the version it was introduced in (or "n/a") and the
version it was deprecated in. No prose is copied.

Usage: tools/derive_dep_skipkeys.py PATH/TO/apple-device-management [OUT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.yamlio import SAFE_LOADER  # noqa: E402

OSES = ("iOS", "macOS", "tvOS")


def derive(root: Path) -> dict[str, object]:
    doc = yaml.load((root / "other" / "skipkeys.yaml").read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    source = (root / "SOURCE.txt").read_text(encoding="utf-8").split("(")[0].strip().removeprefix("Source: ")
    default_os = doc["payload"]["supportedOS"]
    keys: dict[str, dict[str, dict[str, str]]] = {}
    for item in doc["payloadkeys"]:
        per_os: dict[str, dict[str, str]] = {}
        for os_name in OSES:
            info = (item.get("supportedOS") or {}).get(os_name) or default_os.get(os_name) or {}
            entry = {"introduced": str(info.get("introduced", "n/a"))}
            if info.get("deprecated"):
                entry["deprecated"] = str(info["deprecated"])
            per_os[os_name] = entry
        keys[item["key"]] = per_os
    return {
        "source": source + " other/skipkeys.yaml",
        "licence": "MIT, Copyright (c) 2022-2024 Apple Inc. (derived facts only: key names and OS versions)",
        "generated_by": "tools/derive_dep_skipkeys.py",
        "keys": dict(sorted(keys.items())),
    }


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = (
        Path(sys.argv[2])
        if len(sys.argv) > 2
        else Path(__file__).resolve().parent.parent / "data" / "dep-skip-keys.json"
    )
    out.write_text(json.dumps(derive(Path(sys.argv[1])), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
