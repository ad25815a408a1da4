"""`werne demo`, the README's first command, end to end in a subprocess: a real lab in its own
state dir, then its report checked against the database and the JSON report. The lab is taken
down (and purged) whatever happens."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from core.config import LabConfig
from tests.fixtures.lab import require_root
from tests.fixtures.site import DEMO_INVENTORY, REPO

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# The demo's iPads are the demo inventory's (inventories/demo/ipads.csv): with fewer simulated
# iPads than that, the rest count as devices that never checked in. So: all of them, as `make demo`.
LAPTOPS, IPADS = 2, 12


class DataCells(HTMLParser):
    """The text of every element with a data-summary or data-count attribute, and the fleets table."""

    def __init__(self) -> None:
        super().__init__()
        self.summary: dict[str, str] = {}
        self.counts: dict[str, str] = {}
        self.fleet_devices: dict[str, str] = {}
        self._fleet: str | None = None
        self._into: tuple[dict[str, str], str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-fleet" in a:
            self._fleet = a["data-fleet"]
        if "data-summary" in a:
            self._into = (self.summary, a["data-summary"] or "")
        elif "data-count" in a:
            self._into = (self.counts, a["data-count"] or "")
        elif a.get("data-field") == "devices" and self._fleet:
            self._into = (self.fleet_devices, self._fleet)

    def handle_data(self, data: str) -> None:
        if self._into is not None:
            target, key = self._into
            target[key] = target.get(key, "") + data

    def handle_endtag(self, tag: str) -> None:
        self._into = None
        if tag == "tr":
            self._fleet = None


def werne(config: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WERNE_")}
    return subprocess.run([sys.executable, str(REPO / "cli.py"), "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=config.parent)


def test_werne_demo_runs_end_to_end_and_its_report_agrees_with_the_database(tmp_path):
    require_root()
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "werne.toml"
    # Its own state dir (its own lab, network and database); the shared image cache, so the base
    # image is built once per machine, as `make demo` does.
    config.write_text(f'[site]\ninventory = "{DEMO_INVENTORY}"\nstate_dir = "{state}"\n\n'
                      f'[lab]\ncache_dir = "{LabConfig().cache_dir}"\n', encoding="utf-8")
    try:
        demo = werne(config, "demo", "--laptops", str(LAPTOPS), "--ipads", str(IPADS), timeout=1800)
        assert demo.returncode == 0, demo.stdout + demo.stderr[-4000:]
        m = re.search(r"^compliance run +run (\d+): (\d+)/(\d+) devices compliant; pass (\d+), fail (\d+), "
                      r"unreachable (\d+), waived (\d+)$", demo.stdout, re.M)
        assert m, demo.stdout
        run_id, compliant, devices = int(m[1]), int(m[2]), int(m[3])
        report = Path(re.search(r"^Report: (.+)$", demo.stdout, re.M)[1])  # type: ignore[index]
        assert report.is_file() and report.parent == state / "reports"
        provisioned = re.search(r"^provisioning +(.+)$", demo.stdout, re.M)
        assert provisioned, demo.stdout
        outcomes = [h.rsplit(" ", 1)[1] for h in provisioned[1].split(", ")]
        assert len(outcomes) == LAPTOPS and set(outcomes) <= {"ok", "changed"}, provisioned[0]

        # The JSON report of the same run, through the CLI, and the database itself.
        js = werne(config, "report", "--run", str(run_id), "--format", "json", "--out", str(tmp_path / "r.json"),
                   timeout=300)
        assert js.returncode == 0, js.stderr
        doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
        from compliance.history import load_run
        from core.config import load_config
        from core.db import Database
        from core.inventory import load_inventory

        db = Database(load_config(config).database_url)
        try:
            run = load_run(db, run_id, with_results=True)
        finally:
            db.dispose()
        s = run.summary
        fleets = {f["fleet"]: f for f in doc["fleets"]}
        assert len(load_inventory(DEMO_INVENTORY).ipads) == IPADS
        assert fleets["laptops"]["devices"] == LAPTOPS and fleets["ipads"]["devices"] == IPADS
        # The classroom Apple TVs are in the demo too: in the run, and per school in the report.
        tvs = load_inventory(DEMO_INVENTORY).appletvs
        assert fleets["appletvs"]["devices"] == len(tvs) == 4
        assert re.search(r"^Apple TVs +4 in ", demo.stdout, re.M), demo.stdout
        assert {sc["school"]: sc["appletvs"] for sc in doc["schools"]} == {"gs-demo": 2, "gym-demo": 2}
        assert (devices, compliant) == (s["devices"], s["compliant_devices"]) == (
            doc["summary"]["devices"], doc["summary"]["compliant_devices"])
        assert devices >= LAPTOPS + IPADS + 4
        assert compliant < devices  # some simulated iPads are faulty on purpose
        assert (int(m[4]), int(m[5]), int(m[6]), int(m[7])) == tuple(
            s["counts"][k] for k in ("pass", "fail", "unreachable", "waived"))

        cells = DataCells()
        cells.feed(report.read_text(encoding="utf-8"))
        assert int(cells.summary["devices"]) == devices
        assert int(cells.summary["compliant_devices"]) == compliant
        statuses = {r.status for r in run.results.values()}
        assert "pass" in statuses and "fail" in statuses
        for status, n in s["counts"].items():
            assert int(cells.counts[status]) == n == doc["summary"]["counts"][status] == sum(
                1 for r in run.results.values() if r.status == status), status
        assert {k: int(v) for k, v in cells.fleet_devices.items()} == {f: b["devices"] for f, b in fleets.items()}

        # The demo run as OSCAL: valid against NIST's schema, and compliance-trestle finds the same findings.
        from tests.fixtures.oscal import schema_errors, trestle_read

        oscal = werne(config, "report", "--run", str(run_id), "--format", "oscal", "--out",
                      str(tmp_path / "r.oscal.json"), timeout=300)
        assert oscal.returncode == 0, oscal.stderr
        ar = json.loads((tmp_path / "r.oscal.json").read_text(encoding="utf-8"))
        assert schema_errors(ar) == []
        findings = s["counts"]["fail"] + s["counts"]["error"] + s["counts"]["unreachable"]
        assert len(ar["assessment-results"]["results"][0]["findings"]) == findings > 0
        assert trestle_read(tmp_path / "r.oscal.json")["findings"] == findings
    finally:
        down = werne(config, "lab", "down", "--purge", timeout=600)
        assert down.returncode == 0, down.stdout + down.stderr
