"""Evidence with an age, on a real SQLite database: what a laptop switched off during the nightly
run is judged on, how the report words its age, when it is stale, and that the hash chain covers
evidence collected between runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from compliance.collect_laptops import devices_with_evidence
from compliance.engine import DeviceFacts, evaluate_rule
from compliance.evidence import age_label, freshest, needs_refresh, store_evidence, verify_evidence_chain
from compliance.models import LaptopEvidence
from compliance.rules import load_baselines
from core.inventory import load_inventory
from tests.fixtures_compliance import laptop_facts, make_ctx

NIGHT = datetime(2026, 11, 20, 1, 30, tzinfo=UTC)  # 02:30 in Berlin
YESTERDAY_1405 = datetime(2026, 11, 19, 13, 5, tzinfo=UTC)  # 14:05 in Berlin


def test_age_label_in_the_site_zone():
    assert age_label(YESTERDAY_1405, NIGHT, "Europe/Berlin") == "evidence from 14:05 yesterday"
    assert age_label(NIGHT - timedelta(minutes=30), NIGHT, "Europe/Berlin") == "evidence from 02:00 today"
    assert age_label(NIGHT - timedelta(days=5), NIGHT, "Europe/Berlin") == "evidence from 02:30 on 2026-11-15"
    assert age_label(None, NIGHT, "Europe/Berlin") == "never seen"
    assert needs_refresh(None, NIGHT, timedelta(hours=12))
    assert needs_refresh(NIGHT - timedelta(hours=13), NIGHT, timedelta(hours=12))
    assert not needs_refresh(NIGHT - timedelta(hours=11), NIGHT, timedelta(hours=12))


def test_off_tonight_fresh_never_seen_are_different_rows(compliance_config, compliance_db):  # type: ignore[no-untyped-def]
    inv = load_inventory(compliance_config.inventory_dir)
    # lap02 was caught up yesterday at 14:05 and is off tonight; lap03 was never seen.
    store_evidence(compliance_config, compliance_db, {"lap02": laptop_facts()}, YESTERDAY_1405, "catch-up")
    collected = {"lap01": ("ok", laptop_facts()), "lap02": ("unreachable", "ssh: connect timed out"),
                 "lap03": ("unreachable", "ssh: connect timed out")}
    devs = {d.device: d for d in devices_with_evidence(compliance_config, inv, compliance_db,
                                                        ["lap01", "lap02", "lap03"], collected, NIGHT, "nightly")}
    assert (devs["lap01"].reachable, devs["lap01"].evidence_at, devs["lap01"].evidence_label) == (
        True, None, "collected during this run")
    assert (devs["lap02"].reachable, devs["lap02"].evidence_at, devs["lap02"].evidence_label) == (
        True, YESTERDAY_1405, "evidence from 14:05 yesterday")
    assert devs["lap02"].info()["evidence_at"] == YESTERDAY_1405.isoformat()
    assert (devs["lap03"].reachable, devs["lap03"].evidence_label) == (False, "never seen")
    rule = load_baselines().rule("lx-evidence-fresh")
    ctx = make_ctx(compliance_config, NIGHT)
    got = {n: evaluate_rule(rule, d, ctx) for n, d in devs.items()}
    assert got["lap01"].status == "pass" and got["lap01"].evidence == "collected during this run"
    assert got["lap02"].status == "pass"
    assert got["lap02"].evidence == "evidence from 14:05 yesterday (0.5 days old, limit 3)"
    assert got["lap03"].status == "fail" and got["lap03"].evidence.startswith("never seen: no evidence collected")
    # lap02's other rules are judged on yesterday's facts, not "unreachable"
    ssh = evaluate_rule(load_baselines().rule("lx-ssh-no-root-login"), devs["lap02"], ctx)
    assert ssh.status == "pass"
    # the nightly run stored lap01's facts too: freshest is per host
    fr = freshest(compliance_db)
    assert {h: (e.source, e.collected_at) for h, e in fr.items()} == {
        "lap01": ("nightly", NIGHT), "lap02": ("catch-up", YESTERDAY_1405)}


def test_stale_after_the_configured_days(compliance_config):  # type: ignore[no-untyped-def]
    rule = load_baselines().rule("lx-evidence-fresh")
    old = NIGHT - timedelta(days=4)
    dev = DeviceFacts("lap02", "laptops", laptop_facts(), evidence_at=old,
                      evidence_label=age_label(old, NIGHT, "Europe/Berlin"))
    r = evaluate_rule(rule, dev, make_ctx(compliance_config, NIGHT))
    assert (r.status, r.evidence) == ("fail", "stale: evidence from 02:30 on 2026-11-16, 4.0 days old (limit 3 days)")
    assert "OPS.1.2.4.A2" in rule.references.grundschutz


def test_evidence_chain_verifies_and_catches_tampering(compliance_config, compliance_db):  # type: ignore[no-untyped-def]
    from compliance.history import verify_chain

    store_evidence(compliance_config, compliance_db, {"lap01": laptop_facts(), "lap02": laptop_facts()},
                   YESTERDAY_1405, "catch-up")
    store_evidence(compliance_config, compliance_db, {"lap01": laptop_facts()}, NIGHT, "nightly")
    assert verify_evidence_chain(compliance_db) == (3, [])
    assert verify_chain(compliance_db).ok
    with compliance_db.session() as s:  # someone makes yesterday's lap02 facts look better
        s.execute(update(LaptopEvidence).where(LaptopEvidence.host == "lap02")
                  .values(facts={**laptop_facts(), "sshd": {"permitrootlogin": "yes"}}))
    n, problems = verify_evidence_chain(compliance_db)
    assert n == 3 and problems == ["evidence 2 (lap02): facts altered"]
    report = verify_chain(compliance_db)
    assert not report.ok and "evidence 2 (lap02): facts altered" in report.problems
