"""Where a compliance run's time went: every step with its wall and CPU time, stored with the run
(outside its record hash), in the JSON report, and printed by `werne compliance run --timings`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from compliance.collect_ipads import SweptIPad
from compliance.history import load_run, verify_chain
from compliance.reports import render
from compliance.reports.schema_check import validate
from compliance.run import run_compliance
from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from tests.fixtures.cli import werne
from tests.fixtures.site import DEMO_INVENTORY, unreachable_laptop_site, write_config

REPO = Path(__file__).resolve().parents[2]


def test_the_breakdown_is_stored_with_the_run_and_in_the_json_report(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = load_config(write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state))
    db = Database(config.database_url)
    inventory = load_inventory(config.inventory_dir)
    serials = sorted(inventory.ipads)

    def sweep(_deadline: float) -> list[SweptIPad]:
        info = {"OSVersion": "17.6.1", "IsSupervised": True, "SerialNumber": "x"}
        return [SweptIPad(s, "answered", {"DeviceInformation": info, "SecurityInfo": {"PasscodePresent": True},
                                          "ProfileList": []}) for s in serials[:3]]

    try:
        summary = run_compliance(config, db, inventory, ("ipads",), sweep=sweep)
        t = summary.timings
        assert t is not None
        steps = {s["name"]: s for s in t["steps"]}
        # The iPads' collection in its thread, what it consists of, and every step after it, in order.
        assert list(steps) == ["setup", "ipads", "ipads.facts", "fleet_facts", "evaluation", "waivers", "store",
                               "audit", "alerts", "metrics"]
        for s in t["steps"]:
            assert s["wall_s"] >= 0 and s["cpu_s"] >= 0 and s["count"] == 1 and s["cpu_of"] == "thread"
            assert s["start_s"] <= s["end_s"] <= t["wall_s"] and s["label"]
        assert steps["store"]["label"] == "storing and chaining"
        assert t["cpu_of"] == "process+children" and t["cpu_s"] >= 0
        # Stored with the run, not part of what its record hash covers.
        run = load_run(db, summary.run_id)
        assert run.timings == json.loads(json.dumps(t))
        assert verify_chain(db).ok
        report = json.loads(render(db, summary.run_id, "json"))
        assert report["run"]["timings"] == run.timings
        assert validate(report) == []
    finally:
        db.dispose()


def test_compliance_run_timings_prints_the_breakdown(tmp_path: Path) -> None:
    """A laptop that refuses SSH: the run ends (exit 1, unreachable) and prints each step."""
    cfg, _state = unreachable_laptop_site(tmp_path, "[ssh]\nconnect_timeout = 2\n")
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    r = werne(cfg, "compliance", "run", "--laptops", "--timings", env={"PATH": path}, cwd=REPO)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("step "))
    assert lines[header].split() == ["step", "wall", "s", "CPU", "s", "CPU", "of", "when", "s", "detail"]
    rows = [ln[:52].strip() for ln in lines[header + 1:]]  # the step column (render.TIMING_COLUMNS)
    assert rows[:4] == ["baselines, waivers, sweep set-up", "laptops: collection (their thread)",
                        "switched-off laptops (presence reads)", "facts playbook (ansible-playbook, ssh)"]
    assert {"evidence writes", "evidence reads", "evaluation", "storing and chaining", "whole run"} <= set(rows)
    playbook = next(ln for ln in lines if ln.startswith("  facts playbook"))
    assert "thread+children" in playbook
