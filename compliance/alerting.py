"""The nightly run tells IT staff what needs a human soon: a new critical finding, and anything in
the expiry view (push certificate, SCEP CA, identities, tokens, TLS, signing certificate) that
crossed its limit. Through core.alerts.raise_alert: the audit trail, the log, and the [alerts]
channels (mail, webhook).

Once per new event: a finding is new when the same device and rule did not fail the last time a
complete run checked that pair (or never was checked). A finding that stays, night after night,
is not sent again; once fixed and failing again, it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, tuple_

from compliance.models import ComplianceResult, ComplianceRun
from compliance.results import FINDING_STATUSES
from compliance.rules import Rule
from core.alerts import raise_alert
from core.config import Config
from core.db import Database
from core.text import one_line, truncate

# The severities that alert whenever they newly fail.
ALERT_SEVERITIES = frozenset({"critical"})
# The checks of the expiry view's items (ipad.golive.expiry): each alerts whatever its severity.
EXPIRY_CHECKS = frozenset({"expiry_item_valid", "push_cert_valid", "apps_token_valid"})
# At most this many findings are listed in one alert; the rest are counted.
LISTED = 20


@dataclass(frozen=True)
class NewFinding:
    """A device and rule that fail now and did not fail when last checked."""

    device: str
    rule_id: str
    severity: str
    title: str
    status: str
    evidence: str
    expiry: bool

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "rule": self.rule_id, "severity": self.severity, "status": self.status,
                "expiry": self.expiry}


def alerting_rules(rules: list[Rule]) -> dict[str, Rule]:
    """The rules whose new findings alert: the critical ones and those of the expiry view."""
    return {r.id: r for r in rules if r.severity in ALERT_SEVERITIES or (r.check.python or "") in EXPIRY_CHECKS}


def _failed_before(db: Database, run_id: int, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Of (device, rule) `pairs`, those whose latest result in a complete run before `run_id` failed."""
    if not pairs:
        return set()
    r = ComplianceResult
    latest = (select(r.device, r.rule_id, func.max(r.run_id).label("run_id"))
              .join(ComplianceRun, ComplianceRun.id == r.run_id)
              .where(ComplianceRun.status == "complete", r.run_id < run_id, tuple_(r.device, r.rule_id).in_(pairs))
              .group_by(r.device, r.rule_id).subquery())
    with db.session() as s:
        same = and_(r.device == latest.c.device, r.rule_id == latest.c.rule_id, r.run_id == latest.c.run_id)
        rows = s.execute(select(r.device, r.rule_id, r.status).join(latest, same)).all()
    return {(d, rule) for d, rule, status in rows if status in FINDING_STATUSES}


def new_findings(db: Database, run_id: int, rules: dict[str, Rule]) -> list[NewFinding]:
    """The findings of run `run_id` on `rules` that are new (see the module docstring)."""
    if not rules:
        return []
    r = ComplianceResult
    with db.session() as s:
        failing = s.execute(select(r.device, r.rule_id, r.status, r.evidence).where(
            r.run_id == run_id, r.rule_id.in_(sorted(rules)), r.status.in_(sorted(FINDING_STATUSES)))
            .order_by(r.rule_id, r.device)).all()
    old = _failed_before(db, run_id, [(d, rule) for d, rule, _, _ in failing])
    return [NewFinding(d, rule, rules[rule].severity, rules[rule].title, status, evidence or "",
                       (rules[rule].check.python or "") in EXPIRY_CHECKS)
            for d, rule, status, evidence in failing if (d, rule) not in old]


def alert_text(run_id: int, found: list[NewFinding]) -> str:
    critical = sum(1 for f in found if f.severity in ALERT_SEVERITIES)
    expiring = sum(1 for f in found if f.expiry)
    head = (f"compliance run {run_id}: {len(found)} new finding(s) to act on ({critical} critical, "
            f"{expiring} of what expires past its limit)")
    lines = [f"- [{f.severity}] {f.rule_id} on {f.device}: {truncate(one_line(f.evidence or f.status), 200)}"
             for f in found[:LISTED]]
    if len(found) > LISTED:
        lines.append(f"- ... and {len(found) - LISTED} more")
    return "\n".join([head, *lines, f"The run's report: werne report --run {run_id} --out run-{run_id}.html"])


def alert_new_findings(config: Config, db: Database, run_id: int, rules: list[Rule]) -> list[NewFinding]:
    """Raise one alert for the run's new alerting findings (none when there are none)."""
    found = new_findings(db, run_id, alerting_rules(rules))
    if found:
        raise_alert(db, "new_findings", f"compliance run {run_id}", alert_text(run_id, found),
                    {"run": run_id, "findings": [f.to_dict() for f in found[:100]], "total": len(found)},
                    channels_cfg=config.alerts)
    return found
