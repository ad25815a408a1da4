"""The nightly run alerts IT staff on a new critical finding or an expiry item past its limit, by
mail through a real SMTP server (aiosmtpd on loopback), once per new event: a finding that stays
is not sent again, one that was fixed and comes back is."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from compliance.alerting import alert_new_findings, alerting_rules
from compliance.collect_fleet import PUSH_CERT_DEVICE
from compliance.facts import DeviceFacts
from compliance.rules import load_baselines
from core.audit import list_events
from core.config import load_config
from core.db import Database
from tests.fixtures.compliance import NOW, fleet, laptop_facts, store_run


def push_cert(days_left: int, now=NOW) -> DeviceFacts:  # type: ignore[no-untyped-def]
    facts = {"push_cert": {"topic": "com.apple.mgmt.External.test", "serial": "1",
                           "not_after": (now + timedelta(days=days_left)).isoformat()}}
    return DeviceFacts(PUSH_CERT_DEVICE, "ipads", facts, name="MDM push certificate (APNs)", scope="fleet")


def night(db: Database, config, n: int, days_left: int, bad_laptop: bool = False) -> list:  # type: ignore[no-untyped-def]
    """Night `n`: the fleet, the push certificate with `days_left`, optionally a laptop with a
    (non-critical) new finding; stored and alerted as the nightly run does."""
    now = NOW + timedelta(days=n)
    devices = fleet(2, 2, now=now) + [push_cert(days_left, now)]
    if bad_laptop:
        devices[0] = DeviceFacts("lap01", "laptops", laptop_facts(sshd__permitrootlogin="yes"), name="DEMO-NB-0001")
    run_id = store_run(db, config, devices, now=now)
    b = load_baselines()
    return alert_new_findings(config, db, run_id, b.for_fleet("laptops") + b.for_fleet("ipads"))


def test_new_critical_and_expiry_findings_are_mailed_once(compliance_db, compliance_config, smtp_sink,
                                                           tmp_path: Path) -> None:
    port, sink = smtp_sink
    cfg_file = tmp_path / "alerts.toml"
    cfg_file.write_text(f'[site]\nstate_dir = "{compliance_config.state_dir}"\n[alerts]\nsmtp_host = "127.0.0.1"\n'
                        f'smtp_port = {port}\nmail_to = ["it@example-city.de"]\n', encoding="utf-8")
    config, db = load_config(cfg_file), compliance_db
    rules = alerting_rules(load_baselines().for_fleet("ipads"))
    assert "ios-push-cert-valid" in rules and "ios-scep-ca-valid" in rules and "ios-dep-token-valid" in rules
    assert "ios-passcode" not in rules  # high, not critical, not an expiry item

    assert night(db, config, 0, days_left=200) == []  # all well: nothing to say
    assert sink.messages == []
    found = night(db, config, 1, days_left=20, bad_laptop=True)  # the push cert crossed its 30 days
    assert [(f.device, f.rule_id, f.severity, f.expiry) for f in found] == [
        (PUSH_CERT_DEVICE, "ios-push-cert-valid", "critical", True)]  # the laptop's finding is not critical
    assert len(sink.messages) == 1
    mail = sink.messages[0][2]
    body = mail.get_body().get_content()
    assert "ios-push-cert-valid on mdm-push-certificate" in body and "[critical]" in body, body
    assert "1 new finding(s) to act on (1 critical, 1 of what expires past its limit)" in body
    assert mail["To"] == "it@example-city.de" and "new findings: compliance run" in mail["Subject"]

    assert night(db, config, 2, days_left=19, bad_laptop=True) == []  # the same finding: not again
    assert night(db, config, 3, days_left=18) == []
    assert len(sink.messages) == 1
    assert night(db, config, 4, days_left=380) == []  # renewed
    assert [f.rule_id for f in night(db, config, 5, days_left=5)] == ["ios-push-cert-valid"]  # and due again
    assert len(sink.messages) == 2
    alerts = [e for e in list_events(db) if e.action == "alert.new_findings"]
    assert [(a.detail["total"], a.detail["findings"][0]["rule"]) for a in alerts] == [
        (1, "ios-push-cert-valid"), (1, "ios-push-cert-valid")]
