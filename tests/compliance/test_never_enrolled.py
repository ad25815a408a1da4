"""Issue 22: an iPad in the inventory that is not enrolled in the MDM is one finding (not enrolled,
and since when it was last seen), not a failing row for every rule that could not be judged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from compliance.collect_ipads import SweptIPad, collect_ipads
from compliance.engine import evaluate
from compliance.facts import EvalContext
from compliance.results import FINDING_STATUSES
from compliance.rules import load_baselines
from core.config import load_config
from core.inventory import load_inventory
from tests.fixtures.site import DEMO_INVENTORY, write_config

NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def test_an_ipad_that_never_enrolled_is_one_finding(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "werne.toml", DEMO_INVENTORY, tmp_path))
    inventory = load_inventory(DEMO_INVENTORY)
    serials = sorted(inventory.ipads)
    # One iPad checked out yesterday (the registry still knows it), the others never seen at all.
    gone = SweptIPad(serials[0], "not_enrolled", reason="not enrolled in the MDM", last_seen=NOW - timedelta(days=1))
    devices = collect_ipads(config, inventory, None, sweep=lambda _deadline: [gone], now=NOW)
    results = evaluate(load_baselines().for_fleet("ipads"), devices, EvalContext(config=config, now=NOW))
    by_device: dict[str, list[tuple[str, str, str]]] = {}
    for r in results:
        by_device.setdefault(r.device, []).append((r.rule_id, r.status, r.evidence))
    assert set(by_device) == set(serials)
    for serial, rows in by_device.items():
        assert len(rows) == 1, (serial, rows)
        rule, status, evidence = rows[0]
        assert (rule, status) == ("ios-in-contact", "fail") and status in FINDING_STATUSES
        assert evidence.startswith("not enrolled in the MDM"), evidence
    assert by_device[serials[0]][0][2] == "not enrolled in the MDM; last seen 2026-03-01 06:00 UTC"
    assert by_device[serials[1]][0][2] == "not enrolled in the MDM; never seen"
