"""The metrics files (node_exporter's textfile collector) parsed by the rules of Prometheus' text
exposition format 0.0.4 (tests/fixtures/metrics.parse): written by a real nightly run (iPads, a
stand-in sweep as in test_run_timings) and by `werne mdm check`'s lines. Scraped over HTTP from a
real node_exporter: test_metrics_scrape.py."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest

from compliance.collect_ipads import SweptIPad
from compliance.run import run_compliance
from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from core.metrics import Family, render
from enrolment.live_check import CheckResult, check_families
from tests.fixtures.metrics import parse
from tests.fixtures.site import DEMO_INVENTORY, write_config


def test_the_renderer_escapes_and_refuses_what_the_format_cannot_hold() -> None:
    text = render([Family("werne_x", 'a "help"\nline').add(1.5, item='push "cert"\\x\n')])
    assert parse(text) == {"werne_x": {(("item", 'push "cert"\\x\n'),): 1.5}}
    assert "\n" not in text.split("\n")[0][7:]  # HELP is one line
    assert parse(render([Family("werne_y", "h").add(math.inf)]))["werne_y"][()] == math.inf
    with pytest.raises(ValueError):
        render([Family("werne-bad", "h")])
    with pytest.raises(ValueError):
        render([Family("werne_z", "h").add(1, **{"__reserved": "x"})])


def test_the_nightly_run_writes_its_metrics(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = load_config(write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state))
    db = Database(config.database_url)
    inventory = load_inventory(config.inventory_dir)
    serials = sorted(inventory.ipads)

    def sweep(_deadline: float) -> list[SweptIPad]:
        info = {"OSVersion": "17.6.1", "IsSupervised": True, "SerialNumber": "x"}
        return [SweptIPad(s, "answered", {"DeviceInformation": info, "SecurityInfo": {"PasscodePresent": False},
                                          "ProfileList": []}) for s in serials[:3]]

    def broken(_deadline: float) -> list[SweptIPad]:
        raise RuntimeError("NanoMDM went away")

    try:
        summary = run_compliance(config, db, inventory, ("ipads",), sweep=sweep)
        folder = state / "metrics"
        seen: set[str] = set()
        results = parse((folder / "werne_compliance.prom").read_text(), seen)
        status = parse((folder / "werne_compliance_status.prom").read_text(), seen)
        findings = results["werne_compliance_findings"]
        assert sum(findings.values()) == summary.findings > 0
        assert set(findings) == {(("scope", "ipads"), ("severity", s)) for s in ("critical", "high", "medium", "low")}
        assert findings[(("scope", "ipads"), ("severity", "high"))] >= 3  # three iPads without a passcode
        assert {dict(k)["status"]: v for k, v in results["werne_compliance_results"].items()} == summary.counts
        assert results["werne_compliance_devices"][(("fleet", "ipads"),)] == summary.devices
        assert results["werne_compliance_compliant_devices"][(("fleet", "ipads"),)] == summary.compliant_devices
        assert results["werne_mdm_devices"][(("state", "enrolled"),)] == 0  # none in this state database
        assert status["werne_compliance_last_run_success"] == {(("scope", "ipads"),): 1.0}
        ended = status["werne_compliance_last_run_timestamp_seconds"][(("scope", "ipads"),)]
        assert abs(ended - summary.finished_at.timestamp()) < 1
        assert status["werne_compliance_last_run_duration_seconds"][(("scope", "ipads"),)] >= 0
        assert oct((folder / "werne_compliance.prom").stat().st_mode & 0o777) == "0o644"

        with pytest.raises(RuntimeError):
            run_compliance(config, db, inventory, ("ipads",), sweep=broken)
        failed = parse((folder / "werne_compliance_status.prom").read_text())
        assert failed["werne_compliance_last_run_success"] == {(("scope", "ipads"),): 0.0}
        assert parse((folder / "werne_compliance.prom").read_text()) == results  # the last complete run's stay
    finally:
        db.dispose()


def test_mdm_check_lines_become_days_left_per_item() -> None:
    at = dt.datetime(2026, 12, 6, 22, 0, tzinfo=dt.UTC)
    checks = [CheckResult("tls", True, "x", {"days_left": 80, "limit_days": 21}),
              CheckResult("webhook", False, "refused"),
              CheckResult("scep-ca", False, "soon", {"days_left": 12.5, "limit_days": 30}),
              CheckResult("identities", True, "x", {"limit_days": 30, "days_left": 200.0, "known": 20,
                                                    "within_limit": 0, "expired": 0, "unknown": 1})]
    m = parse(render(check_families(checks, at)))
    assert m["werne_mdm_check_ok"] == {(("check", "tls"),): 1, (("check", "webhook"),): 0,
                                       (("check", "scep-ca"),): 0, (("check", "identities"),): 1}
    assert m["werne_mdm_expiry_days_left"] == {(("item", "tls"),): 80, (("item", "scep-ca"),): 12.5,
                                               (("item", "identities"),): 200}
    assert m["werne_mdm_expiry_limit_days"][(("item", "scep-ca"),)] == 30
    assert m["werne_mdm_identities"][(("state", "known"),)] == 20
    assert m["werne_mdm_check_timestamp_seconds"] == {(): at.timestamp()}
