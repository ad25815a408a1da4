"""The Grundschutz++ Kernel controls and BSI's IT-Grundschutz 2023 -> Grundschutz++ mapping, as derived
into data/bsi-gspp.json by tools/derive_bsi_mapping.py, and which controls a rule's references cite."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from compliance.errors import BSIDataError

DATA_FILE = Path(__file__).resolve().parent.parent.parent / "data" / "bsi-gspp.json"


@dataclass(frozen=True)
class Citation:
    """One Grundschutz++ control a rule cites: named in the baseline, or reached through BSI's mapping."""

    control: str
    title: str
    # "baseline" (the rule names it) or "bsi-mapping" (an IT-Grundschutz id of the rule maps to it)
    source: str
    via: tuple[str, ...] = ()  # the IT-Grundschutz requirements that map to it
    relationship: str = ""  # the mapping's relationship (subset-of, intersects-with, ...)


@dataclass(frozen=True)
class KernelCatalogue:
    """The Kernel's controls (title, target object categories) and the mapping pairs into it."""

    controls: dict[str, dict[str, Any]]
    itgs_to_gspp: dict[str, dict[str, str]]
    device_categories: tuple[str, ...]
    oscal_version: str
    catalogue_uuid: str
    source: str
    refused: list[list[str]] = field(default_factory=list)

    def title(self, control: str) -> str:
        return str(self.controls.get(control, {}).get("title", ""))

    def device_related(self) -> list[str]:
        """Controls whose statement names a device category (IT-Systeme, Endgeräte, Hostsysteme)."""
        cats = set(self.device_categories)
        return sorted(c for c, info in self.controls.items() if cats & set(info.get("targets", [])))

    def cite(self, references: dict[str, Any]) -> list[Citation]:
        """The controls a rule's references cite: its own `gspp` ids first, then those its
        IT-Grundschutz ids map to (each once). Empty when the rule is unmapped."""
        out: dict[str, Citation] = {}
        for control in references.get("gspp", []):
            out[control] = Citation(control, self.title(control), "baseline")
        mapped: dict[str, list[tuple[str, str]]] = {}
        for itgs in references.get("grundschutz", []):
            for control, rel in self.itgs_to_gspp.get(itgs, {}).items():
                mapped.setdefault(control, []).append((itgs, rel))
        for control, pairs in sorted(mapped.items()):
            if control in out:
                continue
            rels = sorted({r for _, r in pairs})
            out[control] = Citation(control, self.title(control), "bsi-mapping",
                                    tuple(i for i, _ in pairs), ",".join(rels))
        return list(out.values())


def check_catalogue(data: dict[str, Any], path: Path) -> list[str]:
    """Every contradiction in a derived file: a mapping (or baseline) naming a control the catalogue lacks."""
    controls = data.get("controls")
    mapping = data.get("itgs_to_gspp")
    if not isinstance(controls, dict) or not isinstance(mapping, dict):
        return [f"{path}: needs 'controls' and 'itgs_to_gspp' objects (run tools/derive_bsi_mapping.py)"]
    problems = []
    for itgs, targets in sorted(mapping.items()):
        for control in sorted(targets):
            if control not in controls:
                problems.append(f"{path}: mapping {itgs} -> {control}: the Kernel catalogue has no control {control}")
    return problems


@lru_cache(maxsize=4)
def load_catalogue(path: Path = DATA_FILE) -> KernelCatalogue:
    """Load and check the derived file; raises BSIDataError (a mapping entry naming a control the
    catalogue lacks is refused here too, not only when the file is derived)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BSIDataError(f"cannot read {path}: {e.__class__.__name__}") from None
    if not isinstance(data, dict):
        raise BSIDataError(f"{path}: not a JSON object")
    problems = check_catalogue(data, path)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BSIDataError(problems[0] + more)
    return KernelCatalogue(
        controls=data["controls"],
        itgs_to_gspp=data["itgs_to_gspp"],
        device_categories=tuple(data.get("device_categories", [])),
        oscal_version=str(data.get("catalogue_oscal_version", "")),
        catalogue_uuid=str(data.get("catalogue_uuid", "")),
        source=str(data.get("source", "")),
        refused=list(data.get("refused", [])),
    )
