#!/usr/bin/env python3
"""Derive data/mscp-ios-indigo.json from NIST mSCP's iOS rules: ids, payload keys, values, references.

Usage: tools/derive_mscp.py [REFERENCE_DIR] [OUTPUT]
    REFERENCE_DIR defaults to ../shared/reference/mscp-ios (a checkout of usnistgov/macos_security's
    iOS baselines and rules); OUTPUT defaults to data/mscp-ios-indigo.json.

Only facts are kept (rule ids, sections, supervision, the organisation-defined values (ODV) per
baseline, the configuration-profile keys that enforce a rule, and reference ids); no prose. The
output is deterministic, so re-running it on the same input reproduces the committed file.
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
DEFAULT_REFERENCE = REPO.parent / "shared" / "reference" / "mscp-ios"
DEFAULT_OUTPUT = REPO / "data" / "mscp-ios-indigo.json"
BASELINES = ("indigo_base", "indigo_high", "cis_lvl1_enterprise")


def _ios_platform(rule: dict[str, Any], version: str) -> dict[str, Any]:
    ios = (rule.get("platforms") or {}).get("iOS") or {}
    return ios.get(version) or {}


def _severity(platform: dict[str, Any], baseline: str) -> str | None:
    for b in platform.get("benchmarks") or []:
        if b.get("name") == baseline:
            return b.get("severity")
    return None


def _references(rule: dict[str, Any], os_key: str) -> dict[str, list[str]]:
    refs = rule.get("references") or {}
    nist = refs.get("nist") or {}
    disa = refs.get("disa") or {}
    cis = refs.get("cis") or {}
    bsi = refs.get("bsi") or {}
    out = {
        "800-53r5": nist.get("800-53r5") or [],
        "cce": (nist.get("cce") or {}).get(os_key) or [],
        "disa_stig": (disa.get("disa_stig") or {}).get(os_key) or [],
        "cis": (cis.get("benchmark") or {}).get(os_key) or [],
        "bsi_indigo": (bsi.get("indigo") or {}).get(os_key) or [],
    }
    return {k: [str(x) for x in v] for k, v in out.items() if v}


def derive(reference: Path) -> dict[str, Any]:
    source = (reference / "SOURCE.txt").read_text(encoding="utf-8").strip()
    baselines: dict[str, Any] = {}
    wanted: dict[str, str] = {}
    version = ""
    for name in BASELINES:
        matches = sorted((reference / "baselines").glob(f"{name}_ios_*.yaml"))
        if not matches:
            continue
        data = yaml.load(matches[-1].read_text(encoding="utf-8"), Loader=SAFE_LOADER)
        version = str(data["platform"]["version"])
        sections = []
        for section in data["profile"]:
            sections.append({"section": section["section"], "rules": list(section["rules"])})
            for rule_id in section["rules"]:
                wanted.setdefault(rule_id, section["section"])
        baselines[name] = {"ios": version, "sections": sections}
    os_key = "ios_" + version.split(".")[0]
    rules: dict[str, Any] = {}
    missing: list[str] = []
    for rule_id in sorted(wanted):
        path = reference / "rules" / f"{rule_id}.yaml"
        if not path.is_file():
            # Baselines name a few rules the data set does not ship; recorded, not invented.
            missing.append(rule_id)
            continue
        rule = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
        platform = _ios_platform(rule, version)
        odv = rule.get("odv") or {}
        entry: dict[str, Any] = {
            "section": wanted[rule_id],
            "supervised": platform.get("supervised"),
            "severity": {b: s for b in BASELINES if (s := _severity(platform, b))},
            "odv": {b: odv[b] for b in BASELINES if b in odv},
            "mobileconfig": [
                {"PayloadType": m["PayloadType"],
                 "keys": {k: v for item in m.get("PayloadContent") or [] for k, v in item.items()}}
                for m in rule.get("mobileconfig_info") or []
            ],
            "references": _references(rule, os_key),
        }
        if "recommended" in odv:
            entry["odv"]["recommended"] = odv["recommended"]
        rules[rule_id] = entry
    return {
        "_source": source,
        "_licence": "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/), see LICENSE.md of "
                    "usnistgov/macos_security; US Government contributions are public domain in the US",
        "_generated_by": "tools/derive_mscp.py (facts only: ids, keys, values, reference ids)",
        "_value_placeholder": "$ODV stands for the rule's organisation-defined value of the chosen baseline",
        "baselines": baselines,
        "missing_rules": missing,
        "rules": rules,
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    reference = Path(argv[1]) if len(argv) > 1 else DEFAULT_REFERENCE
    output = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    if not (reference / "baselines").is_dir():
        print(f"error: {reference} has no baselines/ folder", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(derive(reference)), encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
