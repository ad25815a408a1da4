"""A stored compliance run as OSCAL assessment results (the OSCAL version of BSI's Kernel catalogue).

The run is one result; each device (and each fleet-wide entry) an inventory item that observations
name as their subject; each device+rule result an observation with its evidence; each finding
(fail, error, unreachable: what werne counts as findings) an OSCAL finding whose target is the
statement of the Grundschutz++ Kernel control the rule cites, with the IT-Grundschutz 2023
requirements beside it; a rule that cites no Kernel control is kept, marked unmapped. Waivers are
risks with their expiry as deadline. Identifiers are UUIDv5 of the run's record hash, so the same
run always gives the same document.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from compliance.history import StoredRun
from compliance.oscal.catalogue import Citation, KernelCatalogue
from compliance.results import FINDING_STATUSES

OSCAL_VERSION = "1.1.3"
WERNE_NS = "https://werne.invalid/ns/oscal"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, WERNE_NS)
BSI_LIBRARY = "https://github.com/BSI-Bund/Stand-der-Technik-Bibliothek"
# waivers.WaiverSet.apply writes these two forms at the start of a waived / expired result's evidence.
WAIVED = re.compile(r"^waived by (?P<name>.+?) until (?P<expires>\d{4}-\d{2}-\d{2}) \(approved by (?P<by>.*?)\): ")
EXPIRED = re.compile(r"^waiver (?P<name>.+?) expired on (?P<expires>\d{4}-\d{2}-\d{2}): ")


@dataclass(frozen=True)
class HeadSignature:
    """The signed chain head embedded in the document: the statement and its detached signature."""

    statement: bytes
    signature: bytes
    key_id: str


@dataclass(frozen=True)
class Signing:
    """How the document is to be signed: `detached` (a .sig beside it) or `unsigned`, and why."""

    state: str  # detached | unsigned
    note: str = ""
    head: HeadSignature | None = None


def _ts(dt: datetime | None) -> str:
    dt = dt or datetime.now(UTC)
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def _text(value: object, default: str) -> str:
    """A non-empty single string without edge whitespace (OSCAL's token and string types)."""
    text = " ".join(str(value or "").split())
    return text or default


def _prop(name: str, value: object, ns: str | None = WERNE_NS) -> dict[str, str]:
    p = {"name": name, "value": _text(value, "none")}
    if ns:
        p["ns"] = ns
    return p


class _Ids:
    """Deterministic UUIDv5s per run: the same run, the same identifiers."""

    def __init__(self, seed: str):
        self.seed = seed

    def __call__(self, *parts: object) -> str:
        return str(uuid.uuid5(NAMESPACE, "/".join([self.seed, *map(str, parts)])))


def _inventory_item(ids: _Ids, device: str, info: dict[str, Any]) -> dict[str, Any]:
    props = [_prop("asset-id", device, None), _prop("fleet", info.get("fleet"))]
    for key in ("school", "group"):
        if info.get(key):
            props.append(_prop(key, info[key]))
    props.append(_prop("reachable", "true" if info.get("reachable") else "false"))
    return {"uuid": ids("device", device), "description": _text(info.get("name"), device), "props": props}


def _observation(ids: _Ids, run: StoredRun, device: str, rule_id: str, status: str, evidence: str) -> dict[str, Any]:
    rule = run.rules.get(rule_id, {})
    refs = rule.get("references", {})
    props = [_prop("rule", rule_id), _prop("status", status)]
    props += [_prop("it-grundschutz", r) for r in refs.get("grundschutz", [])]
    return {
        "uuid": ids("observation", device, rule_id),
        "title": _text(f"{rule_id} on {device}", rule_id),
        "description": _text(rule.get("title"), rule_id),
        "props": props,
        "methods": ["TEST"],
        "subjects": [{"subject-uuid": ids("device", device), "type": "inventory-item"}],
        "relevant-evidence": [{"description": _text(evidence, "no evidence text recorded")}],
        "collected": _ts(run.finished_at),
    }


def _finding(ids: _Ids, run: StoredRun, device: str, rule_id: str, status: str,
             citations: list[Citation]) -> dict[str, Any]:
    rule = run.rules.get(rule_id, {})
    refs = rule.get("references", {})
    props = [_prop("rule", rule_id), _prop("status", status)]
    props += [_prop("it-grundschutz", r) for r in refs.get("grundschutz", [])]
    for c in citations:
        props.append(_prop("grundschutz-plus-plus", c.control))
        if c.via:
            props.append(_prop("mapped-from", f"{c.control} <- {', '.join(c.via)} ({c.relationship})"))
    target: dict[str, Any]
    if citations:
        target = {"type": "statement-id", "target-id": f"{citations[0].control}_stm",
                  "title": _text(f"{citations[0].control} {citations[0].title}", citations[0].control)}
    else:
        props.append(_prop("unmapped", "no Grundschutz++ control named or mapped for this rule"))
        target = {"type": "objective-id", "target-id": f"werne-rule-{rule_id}", "title": rule_id}
    target["status"] = {"state": "not-satisfied", "reason": "fail" if status == "fail" else "other"}
    return {
        "uuid": ids("finding", device, rule_id),
        "title": _text(f"{rule.get('title', rule_id)} ({device})", rule_id),
        "description": _text(f"{status}: rule {rule_id} on {device}", rule_id),
        "props": props,
        "target": target,
        "related-observations": [{"observation-uuid": ids("observation", device, rule_id)}],
    }


def _waiver_risks(ids: _Ids, run: StoredRun, justifications: dict[str, str]) -> list[dict[str, Any]]:
    grouped: dict[str, dict[str, Any]] = {}
    for (device, rule_id), r in sorted(run.results.items()):
        if not r.waiver:
            continue
        m = WAIVED.match(r.evidence) or EXPIRED.match(r.evidence)
        if m is None:
            continue
        active = r.status == "waived"
        risk = grouped.setdefault(r.waiver, {"rule": rule_id, "expires": m["expires"], "active": active,
                                             "by": m.groupdict().get("by") or "", "obs": []})
        risk["active"] = risk["active"] or active
        risk["obs"].append(ids("observation", device, rule_id))
    out = []
    for name, risk in sorted(grouped.items()):
        expires = datetime.combine(date.fromisoformat(risk["expires"]), time(23, 59, 59), UTC)
        state = "deviation-approved" if risk["active"] else "open"
        why = justifications.get(name) or "justification in the waivers file (not the one the run used)"
        props = [_prop("waiver", name), _prop("rule", risk["rule"])]
        if risk["by"]:
            props.append(_prop("approved-by", risk["by"]))
        out.append({
            "uuid": ids("risk", name),
            "title": _text(f"Waiver {name} for rule {risk['rule']}", name),
            "description": _text(why, "accepted exception"),
            "statement": _text(
                f"Accepted exception to rule {risk['rule']} until {risk['expires']}"
                + ("" if risk["active"] else " (expired: the results count as failures again)"), name),
            "props": props,
            "status": state,
            "deadline": _ts(expires),
            "related-observations": [{"observation-uuid": o} for o in risk["obs"]],
        })
    return out


def _back_matter(ids: _Ids, run: StoredRun, catalogue: KernelCatalogue, signing: Signing) -> list[dict[str, Any]]:
    import base64

    resources: list[dict[str, Any]] = [
        {"uuid": ids("plan"), "title": "werne compliance baselines (the assessment plan)",
         "description": _text(f"The rules of run {run.id}, digest {run.baselines_hash}, as the plan: BSI's "
                              "assessment layer for Grundschutz++ has no assessment plans yet.", "plan"),
         "props": [_prop("baselines-hash", run.baselines_hash)]},
        {"uuid": ids("catalogue"), "title": "BSI Stand-der-Technik Kernel (Grundschutz++)",
         "description": _text(catalogue.source, "BSI catalogue"),
         "props": [_prop("catalogue-uuid", catalogue.catalogue_uuid)],
         "rlinks": [{"href": BSI_LIBRARY}]},
    ]
    if signing.head is not None:
        for kind, data in (("statement", signing.head.statement), ("signature", signing.head.signature)):
            resources.append({
                "uuid": ids("chain-head", kind),
                "title": f"Hash-chain head {kind} of run {run.id}",
                "props": [_prop("key-id", signing.head.key_id)],
                "base64": {"filename": f"run-{run.id}.head" + (".sig" if kind == "signature" else ""),
                           "media-type": "application/octet-stream",
                           "value": base64.b64encode(data).decode("ascii")},
            })
    return resources


def _citations(run: StoredRun, catalogue: KernelCatalogue) -> dict[str, list[Citation]]:
    return {rule_id: catalogue.cite(meta.get("references", {})) for rule_id, meta in run.rules.items()}


def unmapped_rules(run: StoredRun, catalogue: KernelCatalogue) -> list[str]:
    """Rules of the run that cite no Kernel control (listed, never dropped)."""
    return sorted(r for r, cites in _citations(run, catalogue).items() if not cites)


def _metadata(run: StoredRun, site: str, signing: Signing, unmapped: Iterable[str]) -> dict[str, Any]:
    props = [
        _prop("signature", signing.state),
        _prop("record-hash", run.record_hash or "none"),
        _prop("prev-hash", run.prev_hash or "genesis"),
        _prop("tool-version", run.tool_version),
    ]
    if signing.note:
        props.append(_prop("signature-note", signing.note))
    props += [_prop("unmapped-rule", r) for r in unmapped]
    return {
        "title": _text(f"werne compliance run {run.id} ({site}): Grundschutz++ assessment results", "werne"),
        "last-modified": _ts(run.finished_at),
        "version": f"run-{run.id}",
        "oscal-version": OSCAL_VERSION,
        "props": props,
        "roles": [{"id": "assessor", "title": "Assessor (werne, automated)"}],
        "parties": [{"uuid": str(uuid.uuid5(NAMESPACE, f"party/{site}")), "type": "organization",
                     "name": _text(site, "city")}],
    }


def build_assessment_results(run: StoredRun, catalogue: KernelCatalogue, site: str = "demo",
                             signing: Signing | None = None,
                             justifications: dict[str, str] | None = None) -> dict[str, Any]:
    """The OSCAL assessment-results document of one stored run, as a JSON-ready dict."""
    signing = signing or Signing("unsigned", "no signing key configured")
    ids = _Ids(run.record_hash or f"run-{run.id}")
    cites = _citations(run, catalogue)
    observations, findings = [], []
    for (device, rule_id), r in sorted(run.results.items()):
        observations.append(_observation(ids, run, device, rule_id, r.status, r.evidence))
        if r.status in FINDING_STATUSES:
            findings.append(_finding(ids, run, device, rule_id, r.status, cites.get(rule_id, [])))
    controls = sorted({c.control for cs in cites.values() for c in cs})
    result: dict[str, Any] = {
        "uuid": ids("result"),
        "title": f"Compliance run {run.id}",
        "description": _text(f"Scope {run.scope}, started by {run.actor}; {len(run.devices)} devices, "
                             f"{len(run.results)} results, {len(findings)} findings.", "run"),
        "start": _ts(run.started_at),
        "end": _ts(run.finished_at),
        "props": [_prop("run", run.id), _prop("scope", run.scope), _prop("inventory-hash", run.inventory_hash),
                  _prop("waivers-hash", run.waivers_hash)],
        "reviewed-controls": {"control-selections": [
            {"include-controls": [{"control-id": c} for c in controls]} if controls else {"include-all": {}}]},
    }
    if run.devices:
        result["local-definitions"] = {
            "inventory-items": [_inventory_item(ids, d, i) for d, i in sorted(run.devices.items())]}
    if observations:
        result["observations"] = observations
    risks = _waiver_risks(ids, run, justifications or {})
    if risks:
        result["risks"] = risks
    if findings:
        result["findings"] = findings
    if not run.results:
        result["remarks"] = "The run has no results: nothing was judged."
    return {"assessment-results": {
        "uuid": ids("document"),
        "metadata": _metadata(run, site, signing, sorted(r for r, c in cites.items() if not c)),
        "import-ap": {"href": f"#{ids('plan')}"},
        "results": [result],
        "back-matter": {"resources": _back_matter(ids, run, catalogue, signing)},
    }}
