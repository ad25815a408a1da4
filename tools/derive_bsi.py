"""Derive data/bsi-ids.json: the BSI requirement ids the compliance baselines may reference.

Reads (only when run by a maintainer; tests and runtime read the derived file, never the sources):
  - the Grundschutz++ kernel catalogue (OSCAL JSON) from BSI-Bund/Stand-der-Technik-Bibliothek: control ids;
  - the IT-Grundschutz 2023 -> Grundschutz++ mapping collection (draft) from the same repository:
    which classic requirement maps to which Grundschutz++ control, and the relationship;
  - the project's notes on IT-Grundschutz-Kompendium requirement ids and levels (B/S/H).
Writes ids, levels and mapping facts only: no titles, no prose. Source licence: CC BY-SA 4.0.

Usage: python tools/derive_bsi.py [REFERENCE_DIR] [NOTES_FILE] [OUT]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REF = Path("../shared/reference/bsi-grundschutz")
DEFAULT_NOTES = Path("../shared/notes/baselines.md")
DEFAULT_OUT = REPO / "data" / "bsi-ids.json"

# A Kompendium line in the notes: "- **SYS.2.3, Linux clients:**" then "  - A4 kernel updates (B)",
# or inline "**OPS.1.2.4, telework:** A2 ... (B)."
MODULE_RE = re.compile(r"\*\*([A-Z]{3,4}(?:\.\d+)+),")
REQ_RE = re.compile(r"\bA(\d+)\b[^()\n]*\((B|S|H)\)")
MINDESTSTANDARD_RE = re.compile(r"\b(MDM\.\d+\.\d+\.\d+)\b")


def catalogue_ids(catalog: dict) -> list[str]:
    ids: list[str] = []

    def walk(node: dict) -> None:
        for ctl in node.get("controls", []):
            ids.append(ctl["id"])
            walk(ctl)
        for grp in node.get("groups", []):
            walk(grp)

    walk(catalog["catalog"])
    return sorted(set(ids))


def mapping_facts(collection: dict) -> dict[str, dict[str, str]]:
    """Classic requirement id (sub-requirement suffix -UA.n dropped) -> {GS++ id: relationship}."""
    out: dict[str, dict[str, str]] = {}
    for mapping in collection["mapping-collection"]["mappings"]:
        for m in mapping["maps"]:
            for src in m["sources"]:
                base = re.sub(r"-UA\.\d+$", "", src["id-ref"])
                for tgt in m["targets"]:
                    out.setdefault(base, {})[tgt["id-ref"]] = m["relationship"]
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def kompendium_levels(notes: str) -> dict[str, str]:
    levels: dict[str, str] = {}
    module = None
    for line in notes.splitlines():
        m = MODULE_RE.search(line)
        if m:
            module = m.group(1)
        elif not line.startswith("  "):
            module = None if not line.strip().startswith("-") else module
        if module is None:
            continue
        tail = line[m.end() :] if m else line
        for num, level in REQ_RE.findall(tail):
            levels[f"{module}.A{num}"] = level
    return dict(sorted(levels.items()))


def main(argv: list[str]) -> int:
    ref = Path(argv[1]) if len(argv) > 1 else REPO / DEFAULT_REF
    notes_file = Path(argv[2]) if len(argv) > 2 else REPO / DEFAULT_NOTES
    out = Path(argv[3]) if len(argv) > 3 else DEFAULT_OUT
    catalog = json.loads((ref / "BSI-Stand-der-Technik-Kernel-catalog.json").read_text(encoding="utf-8"))
    collection = json.loads((ref / "ITGS-to-GS++-mapping_collection.json").read_text(encoding="utf-8"))
    source = (ref / "SOURCE.txt").read_text(encoding="utf-8").split(":")[0].strip()
    notes = notes_file.read_text(encoding="utf-8")
    mapping = mapping_facts(collection)
    levels = kompendium_levels(notes)
    classic = sorted(set(levels) | set(mapping))
    data = {
        "source": f"{source} (Grundschutz++ kernel catalogue and the IT-Grundschutz -> Grundschutz++ "
        "mapping, draft); IT-Grundschutz-Kompendium 2022/2023 requirement ids and levels",
        "licence": "CC BY-SA 4.0 (BSI Stand-der-Technik-Bibliothek); ids and mapping facts only",
        "derived_by": "tools/derive_bsi.py",
        "grundschutz_pp": catalogue_ids(catalog),
        "itgs": classic,
        "itgs_levels": levels,
        "itgs_to_gspp": mapping,
        "mindeststandard_mdm": sorted(set(MINDESTSTANDARD_RE.findall(notes))),
    }
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    print(
        f"{out}: {len(data['grundschutz_pp'])} Grundschutz++ ids, {len(classic)} IT-Grundschutz ids, "
        f"{len(mapping)} mapped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
