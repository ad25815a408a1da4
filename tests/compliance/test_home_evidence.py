"""Evidence with an age, on a real SQLite database: what a laptop switched off during the nightly
run is judged on, how the report words its age, when it is stale, and that the hash chain covers
evidence collected between runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from compliance.collect_laptops import devices_with_evidence
from compliance.engine import evaluate_rule
from compliance.evidence import age_label, freshest, needs_refresh, store_evidence, verify_evidence_chain
from compliance.facts import DeviceFacts
from compliance.models import LaptopEvidence
from compliance.rules import load_baselines
from core.inventory import load_inventory
from tests.fixtures.compliance import laptop_facts, make_ctx

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


# ---- the nightly run and the watcher: laptops the watcher sees switched off are not contacted
@pytest.fixture
def home_setup(tmp_path, inventory_copy):  # type: ignore[no-untyped-def]
    """lap01 and lap02 home-office laptops, lap03 an office laptop; all three with an active peer."""
    from core.config import load_config
    from core.db import Database
    from provisioning.vpn.models import PEER_ACTIVE, VPNPeer

    hosts = inventory_copy / "hosts.yml"
    text = hosts.read_text(encoding="utf-8")
    for tag in ("DEMO-NB-0001", "DEMO-NB-0002"):
        text = text.replace(f"asset_tag: {tag}\n", f"asset_tag: {tag}\n          home_office: true\n")
    hosts.write_text(text, encoding="utf-8")
    cfg = tmp_path / "werne.toml"
    cfg.write_text(f'[site]\ninventory = "{inventory_copy}"\nstate_dir = "{tmp_path / "state"}"\n'
                   '[compliance]\ntimezone = "Europe/Berlin"\n[homeoffice]\npoll_interval_s = 15\n',
                   encoding="utf-8")
    config = load_config(cfg)
    db = Database(config.database_url)
    with db.session() as s:
        for i, host in enumerate(("lap01", "lap02", "lap03"), start=1):
            s.add(VPNPeer(host=host, status=PEER_ACTIVE, public_key=chr(64 + i) * 43 + "=",
                          address_v4=f"10.77.0.{10 + i}", key_created_at=YESTERDAY_1405))
    yield config, db
    db.dispose()


def _presence(db, host: str, online: bool, updated_at: datetime, handshake: datetime | None) -> None:  # type: ignore[no-untyped-def]
    from provisioning.home.models import LaptopPresence

    with db.session() as s:
        row = s.get(LaptopPresence, host) or LaptopPresence(host=host)
        row.online, row.updated_at, row.last_handshake_at = online, updated_at, handshake
        s.add(row)


def _nightly(config, db, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    """collect_laptops with the Ansible run replaced: every laptop it asks does not answer."""
    import compliance.collect_laptops as cl
    from provisioning.home.reach import inventory_in_use

    asked: list[str] = []

    def gather(config_, inventory, db_, names, artifact_dir, progress, now, times=None):  # type: ignore[no-untyped-def]
        asked.extend(names)
        return dict.fromkeys(names, ("unreachable", "ssh: connect to host timed out"))

    monkeypatch.setattr(cl, "gather_facts", gather)
    # The inventory as the CLI hands it over: home-office laptops at their tunnel addresses.
    inv = inventory_in_use(config, db, load_inventory(config.inventory_dir))
    assert str(inv.laptops["lap01"].ansible_host) == "10.77.0.11"
    devs = cl.collect_laptops(config, inv, db, tmp_path / "art", now=NIGHT)
    return sorted(asked), {d.device: d for d in devs}


def test_nightly_skips_home_office_laptops_the_running_watcher_sees_off(home_setup, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    config, db = home_setup
    store_evidence(config, db, {"lap01": laptop_facts()}, YESTERDAY_1405, "catch-up")
    last_hs = NIGHT - timedelta(hours=1, minutes=20)  # 01:10 in Berlin
    # The watcher polled 10 s ago: lap01 and lap02 (home office) and lap03 (office) are off.
    for host in ("lap01", "lap02", "lap03"):
        _presence(db, host, False, NIGHT - timedelta(seconds=10), last_hs if host != "lap02" else None)
    asked, devs = _nightly(config, db, monkeypatch, tmp_path)
    assert asked == ["lap03"]  # the office laptop is reached at its office address: tried as before
    off = devs["lap01"]  # switched off tonight, judged on yesterday's evidence, and the report says why
    assert (off.reachable, off.evidence_at) == (True, YESTERDAY_1405)
    assert off.evidence_label == "evidence from 14:05 yesterday"
    assert off.reason == ("switched off: no handshake since 01:10 (watcher); "
                          "judged on evidence from 14:05 yesterday")
    never = devs["lap02"]  # switched off and never collected: a different row
    assert (never.reachable, never.failure, never.evidence_label) == (False, "unreachable", "never seen")
    assert never.reason == "switched off: no handshake seen (watcher)"
    assert devs["lap03"].reason == "ssh: connect to host timed out" and devs["lap03"].evidence_label == "never seen"
    rule = load_baselines().rule("lx-evidence-fresh")
    ctx = make_ctx(config, NIGHT)
    assert evaluate_rule(rule, off, ctx).status == "pass"
    assert evaluate_rule(rule, never, ctx).status == "fail"
    # The report's rows: lap01 with its evidence and why, lap02 never seen.
    from compliance.reports.html import render_html
    from compliance.reports.model import build_report
    from tests.fixtures.compliance import store_run

    run_id = store_run(db, config, [off, never, devs["lap03"]], now=NIGHT)
    doc = build_report(db, run_id)
    rows = {d["id"]: (d["reachable"], d["evidence"], d["reason"]) for d in doc["devices"]}
    assert rows["lap01"] == (True, "evidence from 14:05 yesterday", off.reason)
    assert rows["lap02"] == (False, "never seen", "switched off: no handshake seen (watcher)")
    html = render_html(doc)
    assert "<b>evidence from 14:05 yesterday</b> <span class=\"muted\">(switched off: no handshake since 01:10" in html


def test_nightly_tries_them_when_the_presence_is_stale_or_online(home_setup, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    config, db = home_setup
    store_evidence(config, db, {"lap01": laptop_facts()}, YESTERDAY_1405, "catch-up")
    # No watcher for 46 s (more than 3 polls of 15 s): what it saw last is no longer known.
    _presence(db, "lap01", False, NIGHT - timedelta(seconds=46), NIGHT - timedelta(hours=2))
    # lap02 is online as the watcher sees it.
    _presence(db, "lap02", True, NIGHT - timedelta(seconds=5), NIGHT - timedelta(seconds=30))
    asked, devs = _nightly(config, db, monkeypatch, tmp_path)
    assert asked == ["lap01", "lap02", "lap03"]
    assert devs["lap01"].reason == ("unreachable now (ssh: connect to host timed out); "
                                    "judged on evidence from 14:05 yesterday")
    # Within 3 polls the same row is trusted.
    _presence(db, "lap01", False, NIGHT - timedelta(seconds=44), NIGHT - timedelta(hours=2))
    asked, _ = _nightly(config, db, monkeypatch, tmp_path)
    assert asked == ["lap02", "lap03"]
