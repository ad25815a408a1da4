"""The production path of werne's metrics: a real nightly run (`werne compliance run`) and
`werne mdm check` write their files into [metrics] textfile_dir, a real node_exporter reads that
folder with its textfile collector, and what Prometheus scrapes from it over HTTP is what werne
stored: the last run's time and status, findings by severity, results, devices, the MDM's devices
by state, and days left per expiring item. node_exporter drops a malformed file (and says so in
node_textfile_scrape_error), so a writer that breaks the format fails here."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.config import load_config
from core.db import Database
from ipad.golive.scep_ca import init_scep_ca
from ipad.models import MDMDevice
from tests.fixtures.cli import werne as run_werne
from tests.fixtures.enrolment_profile import install_topic
from tests.fixtures.metrics import Samples, scrape
from tests.fixtures.site import REPO, unreachable_laptop_site

FINDING_STATUSES = ("fail", "error", "unreachable")  # what werne_compliance_findings counts
MDM_STATES = {"enrolled": 2, "authenticated": 1, "checked_out": 1}


def werne(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI as its own process, with the venv's tools first on PATH (tests/fixtures/cli.py)."""
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    return run_werne(cfg, *args, env={"PATH": path}, cwd=REPO, timeout=300, process=True, strip=())


def by(samples: Samples, family: str, label: str, **fixed: str) -> dict[str, float]:
    """One family's samples keyed by `label`, those with the `fixed` labels only."""
    out: dict[str, float] = {}
    for key, value in samples.get(family, {}).items():
        labels = dict(key)
        if all(labels.get(k) == v for k, v in fixed.items()):
            out[labels[label]] = value
    return out


def seconds(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def seed_mdm_devices(db: Database) -> None:
    """Device channels in the states the webhook records (ipad.models.MDMDevice.state)."""
    n = 0
    with db.session() as s:
        for state, count in MDM_STATES.items():
            for _ in range(count):
                n += 1
                s.add(MDMDevice(enrollment_id=f"ENR-{n}", udid=f"UDID-{n}", serial=f"SER{n:05d}", state=state))


@pytest.mark.slow  # a real `werne compliance run` (ansible-runner against a laptop that refuses SSH), ~20 s
def test_node_exporter_serves_what_the_nightly_run_and_mdm_check_stored(tmp_path: Path, node_exporter: Any) -> None:
    textfile_dir = tmp_path / "node-exporter"  # outside the state dir, as docs/operations.md sets it up
    cfg, state = unreachable_laptop_site(
        tmp_path, f'[ssh]\nconnect_timeout = 2\n[metrics]\ntextfile_dir = "{textfile_dir}"\n'
                  '[mdm]\nserver_url = "https://127.0.0.1:1/mdm"\ntimeout = 2.0\n[dep]\nenabled = false\n')
    config = load_config(cfg)
    init_scep_ca(config)  # two items with days left: the SCEP CA and the push certificate
    install_topic(config)
    db = Database(config.database_url)
    try:
        seed_mdm_devices(db)
    finally:
        db.dispose()

    run = werne(cfg, "compliance", "run", "--laptops")
    assert run.returncode == 1, run.stderr  # findings: the laptop is unreachable
    check = werne(cfg, "mdm", "check", "--json")
    assert check.returncode == 1, check.stderr  # no live MDM here: its live checks fail, the expiry view stands
    checks = json.loads(check.stdout)["checks"]
    report = werne(cfg, "report", "--format", "json", "--out", "-")
    assert report.returncode == 0, report.stderr
    stored = json.loads(report.stdout)
    assert sorted(p.name for p in textfile_dir.iterdir()) == [
        "werne_compliance.prom", "werne_compliance_status.prom", "werne_mdm.prom"]

    url = node_exporter(textfile_dir)
    m = scrape(url)

    # node_exporter read every file and refused none.
    assert m["node_textfile_scrape_error"] == {(): 0}
    assert set(by(m, "node_textfile_mtime_seconds", "file")) == {
        str(textfile_dir / f) for f in ("werne_compliance.prom", "werne_compliance_status.prom", "werne_mdm.prom")}

    # The last run: when it ended, how long it took, that it completed (the stored run's record).
    r = stored["run"]
    assert by(m, "werne_compliance_last_run_success", "scope") == {"laptops": 1}
    assert by(m, "werne_compliance_last_run_timestamp_seconds", "scope")["laptops"] == pytest.approx(
        seconds(r["finished_at"]), abs=1e-3)
    assert by(m, "werne_compliance_last_run_duration_seconds", "scope")["laptops"] == pytest.approx(
        seconds(r["finished_at"]) - seconds(r["started_at"]), abs=1e-3)

    # Its results: findings by the rules' severities, results by status, devices per fleet.
    findings: Counter[str] = Counter(dict.fromkeys(("critical", "high", "medium", "low"), 0))
    for rule in stored["rules"]:
        findings[rule["severity"]] += sum(rule["counts"][s] for s in FINDING_STATUSES)
    assert by(m, "werne_compliance_findings", "severity", scope="laptops") == dict(findings)
    assert sum(findings.values()) > 0
    assert by(m, "werne_compliance_results", "status", scope="laptops") == stored["summary"]["counts"]
    fleets = {f["fleet"]: f for f in stored["fleets"]}
    assert by(m, "werne_compliance_devices", "fleet") == {k: f["devices"] for k, f in fleets.items()} == {"laptops": 1}
    assert by(m, "werne_compliance_compliant_devices", "fleet") == {
        k: f["compliant_devices"] for k, f in fleets.items()}

    # The MDM's device channels by state, as the state database holds them.
    with sqlite3.connect(state / "werne.db") as con:
        states = dict(con.execute("SELECT state, count(*) FROM mdm_devices GROUP BY state").fetchall())
    assert by(m, "werne_mdm_devices", "state") == states == MDM_STATES

    # `werne mdm check`: each check's result, and days left and the limit per expiring item.
    assert by(m, "werne_mdm_check_ok", "check") == {c["name"]: int(c["ok"]) for c in checks}
    days_left = {c["name"]: c["values"]["days_left"] for c in checks if "days_left" in c["values"]}
    assert by(m, "werne_mdm_expiry_days_left", "item") == days_left
    assert {"push-cert", "scep-ca"} <= set(days_left)
    assert by(m, "werne_mdm_expiry_limit_days", "item") == {
        c["name"]: c["values"]["limit_days"] for c in checks if "limit_days" in c["values"]}
    identities = next(c["values"] for c in checks if c["name"] == "identities")
    assert by(m, "werne_mdm_identities", "state") == {
        s: identities[s] for s in ("known", "within_limit", "expired", "unknown")}
    assert identities["unknown"] == MDM_STATES["enrolled"]  # enrolled, no CertificateList answer yet

    # The scrape-error check above can fail: a file node_exporter cannot read is reported, and dropped.
    (textfile_dir / "broken.prom").write_text("werne_broken{item=\"x} 1\n", encoding="utf-8")
    broken = scrape(url)
    assert broken["node_textfile_scrape_error"] == {(): 1}
    assert "werne_broken" not in broken and broken["werne_mdm_devices"] == m["werne_mdm_devices"]
