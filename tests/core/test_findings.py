"""core.findings: every result type that can carry findings maps `ok` to the one exit code."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from compliance.history import ChainReport
from compliance.run import RunSummary
from core.errors import EXIT_FINDINGS, EXIT_INPUT, EXIT_OK
from core.inventory import InventoryCheck
from enrolment.arrival import ArrivalReport
from enrolment.live_check import CheckReport, CheckResult
from ipad.ddm.group_sets import GroupSetsReport
from ipad.dispatch import ActionReport, CommandOutcome, DeviceReport
from provisioning.models import HostCheck, HostOutcome, PreflightReport, ProvisioningReport
from provisioning.vpn.ops import PeerResult, VPNReport
from provisioning.vpn.status import PeerStatus, StatusReport

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _summary(fail: int) -> RunSummary:
    return RunSummary(run_id=1, scope="all", started_at=NOW, finished_at=NOW, devices=1,
                      compliant_devices=1 - min(fail, 1), pass_rate=1.0, record_hash="h",
                      counts={"pass": 3, "fail": fail, "error": 0, "unreachable": 0})


def _device(status: str) -> DeviceReport:
    return DeviceReport(serial="S1", school="gs", enrollment_id="E1",
                        outcomes=[CommandOutcome(request_type="DeviceLock", status=status)])


CASES = [
    (PreflightReport(hosts=[HostCheck(host="a", address="x")], known_hosts="k"),
     PreflightReport(hosts=[HostCheck(host="a", address="x", reason="no route")], known_hosts="k")),
    (ProvisioningReport(run_id=1, status="ok", check_mode=False, artifact_dir="d",
                        hosts=[HostOutcome(host="a", outcome="ok")]),
     ProvisioningReport(run_id=1, status="failed", check_mode=False, artifact_dir="d",
                        hosts=[HostOutcome(host="a", outcome="failed")])),
    (VPNReport(action="enrol", hosts=[PeerResult(host="a", outcome="admitted")]),
     VPNReport(action="enrol", hosts=[PeerResult(host="a", outcome="unreachable")])),
    (StatusReport([PeerStatus(host="a", status="active", public_key="k")]),
     StatusReport([PeerStatus(host="a", status="active", public_key="k", flags=["stale_handshake"])])),
    (_summary(0), _summary(2)),
    (ChainReport(ok=True, runs_checked=2, head="h"), ChainReport(ok=False, runs_checked=2, head="h")),
    (ArrivalReport(enrolled=["S1"]), ArrivalReport(failed={"S1": "refused"})),
    (GroupSetsReport(), GroupSetsReport(not_enrolled=["S1"])),
    (CheckReport([CheckResult("tls", True, "ok")]),
     CheckReport([CheckResult("tls", True, "ok"), CheckResult("scep", False, "connection refused")])),
    (ActionReport(action="lock", devices=[_device("Acknowledged")]),
     ActionReport(action="lock", devices=[_device("Acknowledged"), _device("Error")])),
]


@pytest.mark.parametrize("clean, with_findings", CASES, ids=lambda r: type(r).__name__)
def test_ok_is_exit_0_and_findings_exit_1(clean, with_findings) -> None:
    assert (clean.ok, clean.exit_code) == (True, EXIT_OK)
    assert (with_findings.ok, with_findings.exit_code) == (False, EXIT_FINDINGS)


def test_a_bad_inventory_is_bad_input_not_a_finding() -> None:
    assert InventoryCheck(root=Path("inv")).exit_code == EXIT_OK
    bad = InventoryCheck(root=Path("inv"), problems=["hosts.yml:3: bad"])
    assert (bad.ok, bad.exit_code) == (False, EXIT_INPUT)
    assert bad.to_dict() == {"ok": False, "problems": ["hosts.yml:3: bad"]}
