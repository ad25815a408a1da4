"""CSV (German Excel: BOM, ';', formulas neutralised), JSON and JUnit XML renderings of a report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from core.csvio import write_csv

CSV_HEADER = [
    "run",
    "device",
    "name",
    "fleet",
    "school",
    "group",
    "rule",
    "title",
    "severity",
    "status",
    "evidence",
    "waiver",
    "grundschutz",
    "grundschutz_plus_plus",
    "other_references",
    "remediation",
    "device_evidence",
]


def _rule_index(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in report["rules"]}


def render_csv(report: dict[str, Any]) -> str:
    rules = _rule_index(report)
    rows: list[list[object]] = [[*CSV_HEADER]]
    for dev in report["devices"]:
        for res in dev["results"]:
            rule = rules.get(
                res["rule"], {"title": res["rule"], "severity": "", "references": {}, "remediation": ""}
            )
            refs = rule["references"]
            other = [
                *refs.get("mindeststandard", []),
                *[f"CIS {c}" for c in refs.get("cis", [])],
                *[f"mSCP {m}" for m in refs.get("mscp", [])],
            ]
            rows.append(
                [
                    report["run"]["id"],
                    dev["id"],
                    dev["name"],
                    dev["fleet"],
                    dev["school"] or "",
                    dev["group"] or "",
                    res["rule"],
                    rule["title"],
                    rule["severity"],
                    res["status"],
                    res["evidence"],
                    res["waiver"] or "",
                    ", ".join(refs.get("grundschutz", [])),
                    ", ".join(refs.get("gspp", [])),
                    ", ".join(other),
                    rule["remediation"],
                    dev.get("evidence", ""),
                ]
            )
    return write_csv(rows, excel=True)


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def render_junit(report: dict[str, Any]) -> bytes:
    """One testsuite per device, one testcase per device+rule. fail -> <failure>, error and
    unreachable -> <error>, not_applicable and waived -> <skipped> (a waiver is not a pass)."""
    rules = _rule_index(report)
    root = ET.Element("testsuites", name="werne compliance", timestamp=report["run"]["finished_at"] or "")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for dev in report["devices"]:
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        suite = ET.SubElement(root, "testsuite", name=f"{dev['fleet']}/{dev['id']}")
        props = ET.SubElement(suite, "properties")
        for k in ("name", "school", "group"):
            if dev.get(k):
                ET.SubElement(props, "property", name=k, value=str(dev[k]))
        for res in dev["results"]:
            rule = rules.get(res["rule"], {"title": res["rule"], "severity": ""})
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{dev['fleet']}.{dev['id']}",
                name=f"{res['rule']}: {rule['title']}",
                time="0",
            )
            counts["tests"] += 1
            st = res["status"]
            if st == "fail":
                el = ET.SubElement(case, "failure", message=res["evidence"], type=rule["severity"] or "fail")
                el.text = res["evidence"]
                counts["failures"] += 1
            elif st in ("error", "unreachable"):
                el = ET.SubElement(case, "error", message=res["evidence"], type=st)
                el.text = res["evidence"]
                counts["errors"] += 1
            elif st in ("not_applicable", "waived"):
                ET.SubElement(case, "skipped", message=f"{st}: {res['evidence']}")
                counts["skipped"] += 1
            else:
                ET.SubElement(case, "system-out").text = res["evidence"]
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("time", "0")
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml + b"\n"
