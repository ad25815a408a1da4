"""Issue 22: real DDM status reports (KMFDDM's own test data, tests/ipad/vectors) sent to a real
KMFDDM as the iPad's status channel would (PUT /status with the enrolment id), then read back by
ipad.ddm.status and judged by the compliance rules: a declaration's failure reasons keep their
details (two failures with the same code read differently), status errors are text and never a
Python repr, the supplemental OS version "(a)" is kept, and an iPad that reported no
software-update status is "no evidence" for ios-os-update-installs, never "pass"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from compliance.engine import evaluate_rule
from compliance.facts import DeviceFacts, EvalContext
from compliance.rules import load_baselines
from core.config import Config
from core.secrets import Secret
from ipad.ddm.status import DDMStatus, read_ddm_status
from mdm_client.kmfddm import KMFDDMClient
from tests.fixtures.kmfddm import KMFDDM_KEY

pytestmark = [pytest.mark.kmfddm]

VECTORS = Path(__file__).resolve().parent / "vectors"
RULES = {r.id: r for r in load_baselines().for_fleet("ipads")}


def send_report(url: str, enrollment_id: str, name: str) -> None:
    """What NanoMDM does with a DeclarativeManagement check-in whose Endpoint is "status"."""
    body = (VECTORS / name).read_bytes()
    resp = requests.put(f"{url}/status", data=body, headers={"X-Enrollment-ID": enrollment_id}, timeout=10)
    assert resp.status_code in (200, 204), resp.text


def read_back(url: str, *reports: tuple[str, str]) -> dict[str, DDMStatus]:
    for eid, name in reports:
        send_report(url, eid, name)
    return read_ddm_status(KMFDDMClient(url, Secret(KMFDDM_KEY, source="test")), [eid for eid, _ in reports])


def judge(rule_id: str, ddm: dict[str, Any]) -> tuple[str, str]:
    dev = DeviceFacts("ipad1", "ipads", {"ddm": ddm})
    r = evaluate_rule(RULES[rule_id], dev, EvalContext(config=Config()))
    return r.status, r.evidence


def test_failure_reasons_keep_their_details(kmfddm: str) -> None:
    status = read_back(kmfddm, ("IPAD-1", "kmfddm-status-invalid-configurations.json"))["IPAD-1"]
    facts = status.to_facts()
    reasons = {d["identifier"]: d["reasons"] for d in facts["declarations"] if d["valid"] == "invalid"}
    assert reasons == {
        "0FCD2F56-D5BC-48EA-B98D-E0CCC0C6F9E0": "Error.ConfigurationCannotBeApplied: Configuration cannot be "
                                                "applied (Error: An internal error has occurred.)",
        "4D6F8451-C089-4E65-A615-7C6EFF154F72": "Error.ConfigurationCannotBeApplied: Configuration cannot be "
                                                "applied (Error: Profile Installation Failed)",
    }
    verdict, evidence = judge("ios-declarations-valid", facts)
    assert verdict == "fail" and "(Error: An internal error has occurred.)" in evidence


def test_status_errors_are_text_not_python_reprs(kmfddm: str) -> None:
    status = read_back(kmfddm, ("IPAD-2", "kmfddm-status-not-referenced.json"))["IPAD-2"]
    errors = status.to_facts()["errors"]
    assert errors == [".StatusItems.management.declarations.configurations: com.example.test unknown: "
                      "Info.NotReferencedByActivation: Configuration “com.example.test:7c6d85989e823101” is not "
                      "referenced by an activation. (Identifier: com.example.test, ServerToken: 7c6d85989e823101)"]
    assert not any("{'" in e or "':" in e for e in errors)


def test_the_supplemental_os_version_is_kept(kmfddm: str) -> None:
    facts = read_back(kmfddm, ("MAC-1", "kmfddm-status-supplemental-version.json"))["MAC-1"].to_facts()
    assert (facts["os_version"], facts["os_extra_version"], facts["build"]) == ("13.3.1", "(a)", "22E261")


def test_no_software_update_status_is_no_evidence_never_a_pass(kmfddm: str) -> None:
    """None of these real reports carries softwareupdate.*: the update rule has nothing to judge."""
    status = read_back(kmfddm, ("IPAD-3", "kmfddm-status-supplemental-version.json"),
                       ("IPAD-4", "kmfddm-status-invalid-configurations.json"))
    for eid in ("IPAD-3", "IPAD-4"):
        facts = status[eid].to_facts()
        assert facts["install_state"] is None
        verdict, evidence = judge("ios-os-update-installs", facts)
        assert (verdict, evidence) == ("error", "no evidence: fact ddm.install_state not collected")
    # With the status reported, the same rule judges it.
    reported = {**status["IPAD-3"].to_facts(), "install_state": "none"}
    assert judge("ios-os-update-installs", reported) == ("pass", "iPadOS 13.3.1 (a) (22E261), no update pending (none)")


def test_the_vectors_are_unchanged_copies() -> None:
    """The vectors parse as JSON reports with Apple's top-level keys (a damaged copy fails here first)."""
    for name in ("kmfddm-status-invalid-configurations.json", "kmfddm-status-not-referenced.json",
                 "kmfddm-status-supplemental-version.json"):
        report = json.loads((VECTORS / name).read_text(encoding="utf-8"))
        assert "StatusItems" in report, name
