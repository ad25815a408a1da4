"""The fleet-wide rule ios-push-cert-valid: the installed APNs push certificate must be valid for
compliance.push_cert_min_days more days; checked once for the iPad fleet, never per device."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from compliance.collect_fleet import PUSH_CERT_DEVICE, ipad_fleet_facts
from compliance.engine import evaluate
from compliance.facts import DeviceFacts, EvalContext
from compliance.rules import load_baselines
from core.config import Config
from core.db import Database
from ipad.golive.push_cert_store import record_push_cert
from ipad.models import MDMPushCertificate

NOW = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)
TOPIC = "com.apple.mgmt.External.0b0b0b0b-0000-4000-8000-00000000000b"


def install(db: Database, days_left: float) -> None:
    record_push_cert(db, MDMPushCertificate(
        topic=TOPIC, serial="1", fingerprint_sha256="0" * 64, subject=f"UID={TOPIC}",
        not_before=NOW - dt.timedelta(days=300), not_after=NOW + dt.timedelta(days=days_left), cert_pem="",
        installed_by="test"))


@pytest.fixture
def db(tmp_path: Path, migrated_db) -> Database:  # type: ignore[no-untyped-def]
    return Database(migrated_db(tmp_path / "w.db"))


def results(db: Database, config: Config | None = None) -> dict[tuple[str, str], tuple[str, str]]:
    rules = load_baselines().for_fleet("ipads")
    ipad = DeviceFacts(device="ZDWK1DEGZD", fleet="ipads", reachable=False, reason="did not answer")
    out = evaluate(rules, [ipad, *ipad_fleet_facts(db)], EvalContext(config=config or Config(), now=NOW))
    return {(r.device, r.rule_id): (r.status, r.evidence) for r in out}


def test_no_push_certificate_installed_means_nothing_to_check(db: Database) -> None:
    assert ipad_fleet_facts(db) == []
    assert not any(rule == "ios-push-cert-valid" for _, rule in results(db))


def test_valid_certificate_passes_once_for_the_fleet(db: Database) -> None:
    install(db, 200)
    r = results(db)
    assert r[(PUSH_CERT_DEVICE, "ios-push-cert-valid")] == ("pass", f"{TOPIC} expires 2027-09-17, in 200 days")
    # Checked for the fleet only: no device gets the fleet rule, the fleet gets no device rule.
    assert ("ZDWK1DEGZD", "ios-push-cert-valid") not in r
    assert {rule for dev, rule in r if dev == PUSH_CERT_DEVICE} == {"ios-push-cert-valid"}


def test_expiring_within_the_configured_days_fails(db: Database) -> None:
    install(db, 20)
    status, evidence = results(db)[(PUSH_CERT_DEVICE, "ios-push-cert-valid")]
    assert status == "fail"
    assert evidence == f"{TOPIC} expires 2027-03-21, in 20 days (limit 30): renew it under the same Apple ID"
    cfg = Config()
    cfg.compliance.push_cert_min_days = 14
    assert results(db, cfg)[(PUSH_CERT_DEVICE, "ios-push-cert-valid")][0] == "pass"


def test_expired_fails(db: Database) -> None:
    install(db, -1)
    assert results(db)[(PUSH_CERT_DEVICE, "ios-push-cert-valid")] == (
        "fail", f"{TOPIC} expires 2027-02-28: expired, NanoMDM cannot wake any iPad")


def test_rule_is_critical_and_references_mdm_review() -> None:
    rule = next(r for r in load_baselines().for_fleet("ipads") if r.id == "ios-push-cert-valid")
    assert rule.scope == "fleet" and rule.severity == "critical"
    assert rule.references.grundschutz == ["SYS.3.2.2.A20"]


def test_the_fleet_entry_has_results_but_is_not_counted_as_a_device(db: Database) -> None:
    from compliance.history import summarise

    install(db, 20)
    ipad = DeviceFacts(device="ZDWK1DEGZD", fleet="ipads", reachable=False, reason="did not answer")
    devices = {d.device: d for d in [ipad, *ipad_fleet_facts(db)]}
    out = evaluate(load_baselines().for_fleet("ipads"), list(devices.values()), EvalContext(config=Config(), now=NOW))
    s = summarise(out, devices)
    assert (s["devices"], s["fleets"]["ipads"]["devices"]) == (1, 1)
    assert s["rules"]["ios-push-cert-valid"]["fail"] == 1  # its finding still counts
