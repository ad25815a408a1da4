#!/usr/bin/env python3
"""Derive data/bsi-gspp.json: the Grundschutz++ Kernel controls and BSI's IT-Grundschutz 2023 ->
Grundschutz++ mapping, compact, for the OSCAL assessment results and the A.4 check.

Reads (only when run by a maintainer; tests and runtime read the derived file, never the sources),
from BSI-Bund/Stand-der-Technik-Bibliothek:
  - BSI-Stand-der-Technik-Kernel-catalog.json (OSCAL catalog): per control its id, its short title
    and its statement's target object categories (a few words each, e.g. "IT-Systeme");
  - ITGS-to-GS++-mapping_collection.json (OSCAL mapping collection, draft): the pairs
    (IT-Grundschutz requirement, Grundschutz++ control) with their relationship.
A mapping pair whose control the Kernel catalogue lacks is refused: it is left out of the mapping
and named under "refused" (and on stderr), so nothing can cite a control that is not there.
Writes ids, short titles, categories and pairs only; no statement or guidance prose.
Source licence: CC BY-SA 4.0 (this derived file is under the same licence).

Usage: python tools/derive_bsi_mapping.py [REFERENCE_DIR] [OUT]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REF = REPO / ".." / "shared" / "reference" / "bsi-grundschutz"
DEFAULT_OUT = REPO / "data" / "bsi-gspp.json"
CATALOGUE = "BSI-Stand-der-Technik-Kernel-catalog.json"
MAPPING = "ITGS-to-GS++-mapping_collection.json"
# The Kernel's target object categories that are devices: its definition of "device-related"
# (docs/architecture.md, Evidence). Read from each control's statement prop target_object_categories.
DEVICE_CATEGORIES = ("IT-Systeme", "Endgeräte", "Hostsysteme")
SUB_REQUIREMENT = re.compile(r"-UA\.\d+$")


def _prop(props: list[dict[str, Any]], name: str) -> str | None:
    for p in props:
        if p.get("name") == name:
            return str(p.get("value"))
    return None


def kernel_controls(catalog: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Control id -> {title, targets (target object categories), level (sec_level)}."""
    out: dict[str, dict[str, Any]] = {}

    def walk(node: dict[str, Any]) -> None:
        for ctl in node.get("controls", []):
            statement: dict[str, Any] = next((p for p in ctl.get("parts", []) if p.get("name") == "statement"), {})
            cats = _prop(statement.get("props", []), "target_object_categories") or ""
            out[ctl["id"]] = {
                "title": ctl.get("title", ""),
                "targets": [c.strip() for c in cats.split(",") if c.strip()],
                "level": _prop(ctl.get("props", []), "sec_level") or "",
            }
            walk(ctl)
        for grp in node.get("groups", []):
            walk(grp)

    walk(catalog["catalog"])
    return dict(sorted(out.items()))


def mapping_pairs(
    collection: dict[str, Any], known: set[str]
) -> tuple[dict[str, dict[str, str]], list[list[str]]]:
    """(classic requirement -> {control: relationship}, refused [requirement, control] pairs).

    A classic sub-requirement (APP.3.6.A1-UA.2) counts for its requirement (APP.3.6.A1); a pair
    whose control is not in `known` (the Kernel catalogue) is refused."""
    out: dict[str, dict[str, str]] = {}
    refused: set[tuple[str, str]] = set()
    for mapping in collection["mapping-collection"]["mappings"]:
        for m in mapping["maps"]:
            for src in m["sources"]:
                base = SUB_REQUIREMENT.sub("", src["id-ref"])
                for tgt in m["targets"]:
                    if tgt["id-ref"] not in known:
                        refused.add((base, tgt["id-ref"]))
                        continue
                    out.setdefault(base, {})[tgt["id-ref"]] = m["relationship"]
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}, [list(p) for p in sorted(refused)]


def derive(ref: Path) -> dict[str, Any]:
    catalog = json.loads((ref / CATALOGUE).read_text(encoding="utf-8"))
    collection = json.loads((ref / MAPPING).read_text(encoding="utf-8"))
    source = (ref / "SOURCE.txt").read_text(encoding="utf-8").split(":")[0].strip()
    controls = kernel_controls(catalog)
    mapping, refused = mapping_pairs(collection, set(controls))
    return {
        "source": f"{source}: {CATALOGUE} (OSCAL {catalog['catalog']['metadata']['oscal-version']}, "
        f"version {catalog['catalog']['metadata']['version']}) and {MAPPING} (draft, OSCAL "
        f"{collection['mapping-collection']['metadata']['oscal-version']})",
        "licence": "CC BY-SA 4.0 (BSI Stand-der-Technik-Bibliothek); ids, short titles, target object "
        "categories and mapping pairs only",
        "derived_by": "tools/derive_bsi_mapping.py",
        "catalogue_oscal_version": catalog["catalog"]["metadata"]["oscal-version"],
        "catalogue_uuid": catalog["catalog"]["uuid"],
        "device_categories": list(DEVICE_CATEGORIES),
        "controls": controls,
        "itgs_to_gspp": mapping,
        "refused": refused,
    }


def main(argv: list[str]) -> int:
    ref = Path(argv[1]) if len(argv) > 1 else DEFAULT_REF
    out = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUT
    data = derive(ref)
    for itgs, gspp in data["refused"]:
        print(f"refused: {itgs} -> {gspp} (the Kernel catalogue has no control {gspp})", file=sys.stderr)
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    n_pairs = sum(len(v) for v in data["itgs_to_gspp"].values())
    print(f"{out}: {len(data['controls'])} Kernel controls, {n_pairs} mapping pairs, "
          f"{len(data['refused'])} refused")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
