"""The nightly run's metrics (core.metrics, node_exporter's textfile format): the last run's time,
duration and whether it completed (`werne_compliance_status.prom`, written on failure too), and
its results: findings by severity, results by status, devices and compliant devices per fleet,
the iPads' MDM devices by enrolment state (`werne_compliance.prom`, written by a complete run)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select

from compliance.results import FINDING_STATUSES, RuleResult
from compliance.rules import BaselineSet
from core.config import Config
from core.db import Database
from core.errors import WerneError
from core.metrics import Family, write_textfile
from ipad.models import MDMDevice

log = logging.getLogger("werne.compliance")

SEVERITIES = ("critical", "high", "medium", "low")


def status_families(scope: str, started: datetime, finished: datetime, ok: bool) -> list[Family]:
    return [
        Family("werne_compliance_last_run_success", "1 when the last compliance run completed, 0 when it failed")
        .add(int(ok), scope=scope),
        Family("werne_compliance_last_run_timestamp_seconds", "When the last compliance run ended (Unix time)")
        .add(finished.timestamp(), scope=scope),
        Family("werne_compliance_last_run_duration_seconds", "How long the last compliance run took")
        .add(max(0.0, (finished - started).total_seconds()), scope=scope),
    ]


def result_families(db: Database, scope: str, summary: dict, results: list[RuleResult],  # type: ignore[type-arg]
                    baselines: BaselineSet) -> list[Family]:
    severity: dict[str, str] = {r.id: r.severity for b in baselines.baselines for r in b.rules}
    by_severity = dict.fromkeys(SEVERITIES, 0)
    for r in results:
        if r.status in FINDING_STATUSES:
            sev = severity.get(r.rule_id, "medium")
            by_severity[sev] = by_severity.get(sev, 0) + 1
    with db.session() as s:
        states = dict(s.execute(select(MDMDevice.state, func.count(MDMDevice.id)).group_by(MDMDevice.state)).all())
    findings = Family("werne_compliance_findings", "Findings (fail, error, unreachable) of the last complete run")
    for sev, n in by_severity.items():
        findings.add(n, scope=scope, severity=sev)
    statuses = Family("werne_compliance_results", "Results of the last complete run by status")
    for status, n in sorted(summary["counts"].items()):
        statuses.add(n, scope=scope, status=status)
    devices = Family("werne_compliance_devices", "Devices checked by the last complete run, per fleet")
    compliant = Family("werne_compliance_compliant_devices", "Devices without findings in the last complete run")
    for fleet, f in sorted(summary.get("fleets", {}).items()):
        devices.add(f.get("devices", 0), fleet=fleet)
        compliant.add(f.get("compliant_devices", 0), fleet=fleet)
    mdm = Family("werne_mdm_devices", "The MDM's device channels by state (enrolled, authenticated, checked_out)")
    for state in sorted({"enrolled", "authenticated", "checked_out", *states}):
        mdm.add(states.get(state, 0), state=state)
    return [findings, statuses, devices, compliant, mdm]


def write_run_metrics(config: Config, families: list[Family], name: str) -> None:
    """Write one metrics file; a file that cannot be written is logged, never the run's failure."""
    try:
        write_textfile(config, name, families)
    except (WerneError, OSError) as e:
        log.warning("metrics file %s not written: %s", name, e)
