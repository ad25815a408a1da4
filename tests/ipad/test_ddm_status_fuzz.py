"""Issue 22: property-based tests (Hypothesis, derandomized) of the DDM status path: generated status
reports (Apple's shape with hostile values: any JSON where a value belongs, reasons with odd details,
Errors of any shape, items missing) go to a real KMFDDM as a device's status channel would, are read
back by ipad.ddm.status and judged by the DDM rules. Never a traceback; every text is a string; and no
rule passes without the fact it judges in the report (the software-update install state, a
declaration's status)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compliance.engine import evaluate_rule
from compliance.facts import DeviceFacts, EvalContext
from compliance.rules import load_baselines
from core.config import Config
from core.secrets import Secret
from ipad.ddm.status import WANTED, read_ddm_status, status_item
from mdm_client.errors import MDMError
from mdm_client.kmfddm import KMFDDMClient
from tests.fixtures.kmfddm import KMFDDM_KEY

pytestmark = [pytest.mark.kmfddm, pytest.mark.slow]

DDM_RULES = [r for r in load_baselines().for_fleet("ipads") if r.check.params.get("requires_fact") == "ddm"]
IDS = itertools.count()

TEXT = st.text(max_size=20) | st.sampled_from(["", "\n", "\x1b[2J", "{'a': 1}", "x" * 2000, "none", "failed"])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=6)
REASON = st.fixed_dictionaries({}, optional={"code": JSON, "description": JSON, "details": JSON,
                                             "Code": JSON, "Description": JSON, "Details": JSON})
DECLARATION = st.fixed_dictionaries(
    {"identifier": TEXT},
    optional={"active": JSON, "valid": st.sampled_from(["valid", "invalid", "unknown"]) | TEXT,
              "server-token": TEXT, "reasons": st.lists(REASON, max_size=2) | JSON})


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}} (the shape of StatusItems)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = value
    return out


@st.composite
def reports(draw) -> Any:  # type: ignore[no-untyped-def]
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)  # anything at all
    items = draw(st.dictionaries(st.sampled_from(WANTED), JSON | st.sampled_from(["none", "failed", "17.6.1"]),
                                 max_size=len(WANTED)))
    status = nest(items)
    decls = draw(st.dictionaries(st.sampled_from(["activations", "configurations", "assets", "management"]),
                                 st.lists(DECLARATION, max_size=3), max_size=2))
    if decls:
        status.setdefault("management", {})["declarations"] = decls
    report: dict[str, Any] = {"StatusItems": status}
    if draw(st.booleans()):
        report["Errors"] = draw(st.lists(st.fixed_dictionaries({}, optional={"StatusItem": JSON, "Reasons": JSON}),
                                         max_size=2) | JSON)
    if draw(st.booleans()):
        report["FullReport"] = draw(JSON)
    return report


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@fuzz(120)
@given(report=reports())
def test_fuzz_status_reports_never_traceback_and_never_pass_without_evidence(kmfddm: str, report: Any) -> None:
    eid = f"FUZZ-{next(IDS)}"
    requests.put(f"{kmfddm}/status", data=json.dumps(report), headers={"X-Enrollment-ID": eid}, timeout=10)
    try:
        status = read_ddm_status(KMFDDMClient(kmfddm, Secret(KMFDDM_KEY, source="test")), [eid])
    except MDMError as e:  # KMFDDM's own refusal: the client's one-line error, never a traceback
        assert "\n" not in str(e)
        return
    if eid not in status:
        return  # KMFDDM did not keep it (not a report it could parse): no status, no DDM rules
    facts = status[eid].to_facts()
    json.dumps(facts)  # what the nightly stores
    assert all(isinstance(e, str) for e in facts["errors"])
    assert all(isinstance(d["reasons"], str) for d in facts["declarations"])
    for rule in DDM_RULES:
        result = evaluate_rule(rule, DeviceFacts(eid, "ipads", {"ddm": facts}), EvalContext(config=Config()))
        if result.status != "pass":
            continue
        items = report.get("StatusItems") if isinstance(report, dict) else None
        if rule.id == "ios-os-update-installs":
            found, value = status_item(items or {}, "softwareupdate.install-state")
            assert found and value is not None, (rule.id, result.evidence)
        if rule.id == "ios-declarations-valid":
            assert facts["declarations"], (rule.id, result.evidence)
