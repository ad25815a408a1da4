"""Two things that go wrong with home-office laptops, on the real lab (two laptops at home behind
their NAT routers, reached only through the VPN): a laptop that shows up with a new SSH host key
at its tunnel address, and a laptop switched off while its catch-up's provisioning run is going on.

Both start from a provisioning run queued while the laptop was off (`werne laptop provision` on a
switched-off home-office laptop), then the laptop comes online and the watcher catches it up.
Handshakes are real; the watcher's own times are passed explicitly, so back-offs are skipped over
without waiting."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.provisioning.home_office import cli, wait_handshakes

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LAPTOPS = ["lap01", "lap02"]


@dataclass
class HomeLab:
    lab: Any
    cfg: Path
    config: Any
    db: Any

    def inventory(self) -> Any:
        from core.inventory import load_inventory
        from provisioning.home.reach import inventory_in_use

        return inventory_in_use(self.config, self.db, load_inventory(self.config.inventory_dir))

    def watcher(self) -> Any:
        from compliance.catchup import make_watcher

        return make_watcher(self.config, self.db, self.inventory, rng=random.Random(4))

    def queue_while_off(self, host: str) -> None:
        """Switch the laptop off, ask for a provisioning run (queued), switch it on again."""
        self.lab.switch_off([host])
        r = cli(self.cfg, "laptop", "provision", host, "--json")
        assert r.exit_code == 0, r.output
        out = json.loads(r.output[r.output.index("{"):])
        assert [(h["host"], h["outcome"]) for h in out["hosts"]] == [(host, "queued")]
        self.lab.switch_on([host])
        wait_handshakes(self.config, self.db, self.inventory(), [host], timeout=90)


@pytest.fixture(scope="module")
def home_lab(lab_factory):  # type: ignore[no-untyped-def]
    from tests.fixtures.vpn import home_office_lab

    lab = lab_factory(len(LAPTOPS), gateway=True)
    cfg, config, db = home_office_lab(lab, LAPTOPS)
    try:
        hl = HomeLab(lab, cfg, config, db)
        wait_handshakes(config, db, hl.inventory(), LAPTOPS)
        yield hl
    finally:
        db.dispose()


def _catch_up(w: Any, at: datetime) -> list[str]:
    """One poll at `at`, then the batches due after the jitter (catchup_jitter_s = 1)."""
    w.tick(at)
    return w.tick(at + timedelta(seconds=2))


def test_a_laptop_with_a_new_host_key_at_its_tunnel_address_is_refused(home_lab):  # type: ignore[no-untyped-def]
    from compliance.evidence import freshest
    from core.audit import list_events
    from provisioning.home.pending import list_items

    hl, host = home_lab, "lap01"
    hl.lab.regenerate_host_key(host)  # as an interceptor at the tunnel address would look
    hl.queue_while_off(host)
    w = hl.watcher()
    _catch_up(w, datetime.now(UTC))
    mine = [(s.action, s.outcome, s.detail) for s in w.steps if s.host == host]
    assert [(a, o) for a, o, _ in mine] == [("preflight", "refused")], w.steps  # nothing applied, nothing collected
    assert mine[0][2].startswith("host key changed: possible interception (at 10.77.")
    [item] = list_items(hl.db, [host])
    assert (item.state, item.attempts, item.done_at) == ("pending", 1, None)
    assert item.last_error.startswith("host key changed: possible interception")
    assert freshest(hl.db, [host]) == {}  # no facts from it stored as evidence
    events = [e for e in list_events(hl.db) if e.action == "laptop.catchup.preflight" and e.target == host]
    assert [e.detail["outcome"] for e in events] == ["refused"]
    assert "host key changed" in events[0].detail["detail"]
    r = cli(hl.cfg, "laptop", "pending", host)
    assert r.exit_code == 0 and "attempts 1; last error: host key changed: possible interception" in r.output, r.output


def test_a_laptop_switched_off_during_its_catch_up_gets_it_again_once(home_lab):  # type: ignore[no-untyped-def]
    from compliance.evidence import evidence_times
    from provisioning.home.pending import list_items

    hl, host = home_lab, "lap02"
    hl.queue_while_off(host)
    before = evidence_times(hl.db, [host]).get(host)
    w = hl.watcher()
    switched: list[str] = []

    def off_once_the_run_has_started(p: Any) -> None:
        # Called by the provisioning run after each host event: the playbook is under way on it.
        if p.host == host and not switched:
            switched.append(p.task or "?")
            hl.lab.switch_off([host])

    w.on_provision_progress = off_once_the_run_has_started
    t0 = datetime.now(UTC)
    assert host in _catch_up(w, t0)
    assert switched, "the provisioning run never reported progress on the laptop"
    steps = {(s.host, s.action): (s.outcome, s.detail) for s in w.steps}
    assert steps[(host, "provision")][0] == "retry", w.steps
    assert steps.get((host, "collect"), ("unreachable",))[0] != "done"
    [item] = list_items(hl.db, [host])
    assert (item.state, item.attempts, item.done_at) == ("pending", 1, None)
    assert item.last_error.startswith("provisioning run ") and item.not_before is not None
    failed_run = item.last_error.split(":")[0]
    assert evidence_times(hl.db, [host]).get(host) == before  # nothing recorded as fresh

    # It comes back: after the back-off the next catch-up applies the run once and closes the item.
    hl.lab.switch_on([host])
    wait_handshakes(hl.config, hl.db, hl.inventory(), [host], timeout=90)
    w.steps.clear()
    w.on_provision_progress = None
    t1 = max(datetime.now(UTC), item.not_before) + timedelta(seconds=1)
    assert host in _catch_up(w, t1)
    provs = [s for s in w.steps if s.host == host and s.action == "provision"]
    assert [s.outcome for s in provs] == ["done"], w.steps
    [closed] = list_items(hl.db, [host], include_closed=True)
    assert (closed.state, closed.attempts) == ("done", 2)
    assert closed.result.startswith("provisioning run ") and closed.result != failed_run
    assert [(s.action, s.outcome) for s in w.steps if s.host == host][-1] == ("collect", "done")
    after = evidence_times(hl.db, [host]).get(host)
    assert after is not None and (before is None or after > before)
    # Nothing more to apply: a further catch-up does not run it again.
    w.steps.clear()
    _catch_up(w, t1 + timedelta(minutes=1))
    assert [s for s in w.steps if s.host == host and s.action == "provision"] == []
