"""The data behind every report format: one plain, JSON-ready dict built from a stored run.

Its shape is the JSON report's, documented in compliance/report.schema.json.
"""

from __future__ import annotations

from typing import Any

from compliance.canonical import optional_ts
from compliance.diff import diff_runs
from compliance.history import StoredRun, load_run, pass_rate, previous_run_id, recent_runs
from compliance.results import FINDING_STATUSES, STATUSES
from core.db import Database

SCHEMA_ID = "werne-compliance-report/1"
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def _change_rows(changes: list[Any], run: StoredRun, prev: StoredRun | None) -> list[dict[str, Any]]:
    rows = []
    for c in changes:
        dev = run.devices.get(c.device) or (prev.devices.get(c.device) if prev else None) or {}
        rule = run.rules.get(c.rule_id) or (prev.rules.get(c.rule_id) if prev else None) or {}
        rows.append(
            {
                "device": c.device,
                "name": dev.get("name", c.device),
                "fleet": dev.get("fleet", ""),
                "school": dev.get("school"),
                "rule": c.rule_id,
                "title": rule.get("title", c.rule_id),
                "severity": rule.get("severity", ""),
                "before": c.before,
                "after": c.after,
                "evidence": c.evidence,
            }
        )
    # Real failures before checks that could not run, then by severity, rule and device: what got
    # worse is on top, and one silent iPad does not push a failing laptop off the first screen.
    rank = {"fail": 0, "error": 1, "unreachable": 2}
    rows.sort(
        key=lambda r: (
            rank.get(r["after"] or "", 3),
            SEVERITY_ORDER.get(r["severity"], 9),
            r["rule"],
            r["device"],
        )
    )
    return rows


def _totals(block: dict[str, Any]) -> dict[str, Any]:
    """A fleet's or school's totals from the run's summary, in the report's order."""
    return {k: block[k] for k in ("devices", "compliant_devices", "counts", "pass_rate")}


# The rule whose failures are iPads to replace (Apple offers no iPadOS for the model any more).
REPLACE_RULE = "ios-model-supported"


def build_report(db: Database, run_id: int | None = None, with_trend: bool = True) -> dict[str, Any]:
    run = load_run(db, run_id)
    prev_id = previous_run_id(db, run.id)
    prev = load_run(db, prev_id) if prev_id is not None else None
    d = diff_runs(prev, run)
    # Per school and per fleet, per rule counts (the summary holds only totals per school).
    per_group_rule: dict[tuple[str, str, str], dict[str, int]] = {}
    for (device, rule_id), r in run.results.items():
        dev = run.devices.get(device, {})
        for kind, key in (("fleet", dev.get("fleet")), ("school", dev.get("school"))):
            if key:
                c = per_group_rule.setdefault((kind, key, rule_id), dict.fromkeys(STATUSES, 0))
                c[r.status] += 1

    def group_rules(kind: str, key: str) -> list[dict[str, Any]]:
        out = []
        for (k, g, rule_id), counts in sorted(per_group_rule.items()):
            if k == kind and g == key:
                out.append({"rule": rule_id, "counts": counts, "pass_rate": pass_rate(counts)})
        return out

    # iPads whose model Apple no longer updates, per school: the list a school plans replacements from.
    replace: dict[str, list[dict[str, Any]]] = {}
    for (device, rule_id), r in sorted(run.results.items()):
        dev = run.devices.get(device, {})
        if rule_id == REPLACE_RULE and r.status == "fail" and dev.get("school"):
            replace.setdefault(dev["school"], []).append(
                {"id": device, "name": dev.get("name") or device, "group": dev.get("group"),
                 "evidence": r.evidence})

    s = run.summary
    fleets = [
        {"fleet": f, **_totals(b), "rules": group_rules("fleet", f)} for f, b in s.get("fleets", {}).items()
    ]
    # Devices of each kind per school: the report shows a school's iPads and Apple TVs side by side.
    kinds: dict[str, dict[str, int]] = {}
    for dev in run.devices.values():
        if dev.get("school") and dev.get("fleet") in ("ipads", "appletvs"):
            per = kinds.setdefault(dev["school"], {"ipads": 0, "appletvs": 0})
            per[dev["fleet"]] += 1
    schools = [
        {"school": sc, **_totals(b), **kinds.get(sc, {"ipads": 0, "appletvs": 0}), "rules": group_rules("school", sc),
         "replace": replace.get(sc, [])}
        for sc, b in s.get("schools", {}).items()
    ]
    rules = []
    for rule_id, meta in sorted(run.rules.items(), key=lambda kv: (kv[1]["fleet"], kv[0])):
        counts = s.get("rules", {}).get(rule_id, dict.fromkeys(STATUSES, 0))
        rules.append(
            {
                "id": rule_id,
                "fleet": meta["fleet"],
                "title": meta["title"],
                "severity": meta["severity"],
                "references": meta["references"],
                "remediation": meta["remediation"],
                "counts": counts,
                "pass_rate": pass_rate(counts),
            }
        )
    by_device: dict[str, list[dict[str, Any]]] = {}
    for (device, rule_id), r in sorted(run.results.items()):
        by_device.setdefault(device, []).append(
            {"rule": rule_id, "status": r.status, "evidence": r.evidence, "waiver": r.waiver}
        )
    devices = []
    for device, info in sorted(
        run.devices.items(), key=lambda kv: (kv[1]["fleet"], kv[1].get("school") or "", kv[0])
    ):
        results = by_device.get(device, [])
        devices.append(
            {
                "id": device,
                "name": info.get("name") or device,
                "fleet": info["fleet"],
                "school": info.get("school"),
                "group": info.get("group"),
                "reachable": info["reachable"],
                "reason": info.get("reason") or "",
                "last_seen": info.get("last_seen"),
                # Laptops: when the facts the device was judged on were collected, in words too.
                "evidence_at": info.get("evidence_at"),
                "evidence": info.get("evidence") or "",
                "compliant": not any(x["status"] in FINDING_STATUSES for x in results),
                "results": results,
            }
        )
    trend = []
    if with_trend:
        for past in recent_runs(db, run.id, 30):
            summ = past["summary"]
            trend.append(
                {
                    "run": past["id"],
                    "finished_at": optional_ts(past["finished_at"]),
                    "pass_rate": summ.get("pass_rate", 1.0),
                    "counts": summ.get("counts", {}),
                    "compliant_devices": summ.get("compliant_devices", 0),
                    "devices": summ.get("devices", 0),
                }
            )
    return {
        "schema": SCHEMA_ID,
        "run": {
            "id": run.id,
            "scope": run.scope,
            "started_at": optional_ts(run.started_at),
            "finished_at": optional_ts(run.finished_at),
            "actor": run.actor,
            "tool_version": run.tool_version,
            "inventory_hash": run.inventory_hash,
            "baselines_hash": run.baselines_hash,
            "waivers_hash": run.waivers_hash,
            "prev_hash": run.prev_hash,
            "record_hash": run.record_hash,
            # Where the run's time went (compliance.timings); null for runs stored before it existed.
            "timings": run.timings,
        },
        "previous_run": prev.id if prev else None,
        "summary": {
            "devices": s["devices"],
            "compliant_devices": s["compliant_devices"],
            "counts": s["counts"],
            "pass_rate": s["pass_rate"],
        },
        "fleets": fleets,
        "schools": schools,
        "rules": rules,
        "changes": {
            "newly_failing": _change_rows(d.newly_failing, run, prev),
            "fixed": _change_rows(d.fixed, run, prev),
            "still_failing": _change_rows(d.still_failing, run, prev),
        },
        "devices": devices,
        "trend": trend,
    }
