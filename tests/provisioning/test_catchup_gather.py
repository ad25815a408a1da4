"""The watcher's catch-ups without a lab: a lost laptop's erase applied before anything else (and
nothing else applied to it), an order refused for another laptop at its address waits without using
up an attempt, and provisioning runs gathered: batches that come while a run holds the lock go into
the next run together instead of one run each."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from provisioning.home import pending
from provisioning.home.models import KIND_ERASE, KIND_PROVISION, KIND_VPN_ROTATE
from provisioning.models import HostOutcome, ProvisioningReport

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture
def home(tmp_path: Path, inventory_copy: Path):  # type: ignore[no-untyped-def]
    hosts = inventory_copy / "hosts.yml"
    lines = []
    for line in hosts.read_text(encoding="utf-8").splitlines():
        lines.append(line)
        if line.strip().startswith("asset_tag:"):
            lines.append(line[: len(line) - len(line.lstrip())] + "home_office: true")
    hosts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = tmp_path / "werne.toml"
    cfg.write_text(f'[site]\ninventory = "{inventory_copy}"\nstate_dir = "{tmp_path / "state"}"\n'
                   "[homeoffice]\ncatchup_batch = 1\ncatchup_concurrency = 3\n", encoding="utf-8")
    config = load_config(cfg)
    db = Database(config.database_url)
    yield config, db
    db.dispose()


def watcher(config, db, provision, apply_lost=None):  # type: ignore[no-untyped-def]
    from provisioning.home.watch import Watcher

    w = Watcher(config=config, db=db, load_inventory=lambda: load_inventory(config.inventory_dir),
                collect=lambda inv, hosts, now: dict.fromkeys(hosts, "ok"),
                evidence_times=lambda hosts: dict.fromkeys(hosts, T0), clock=lambda: T0, wall_clock=lambda: T0,
                rng=random.Random(1), check_host_keys=lambda c, i, h: {}, provision=provision)
    if apply_lost is not None:
        w.apply_lost = apply_lost
    return w


def report(run_id: int, names: list[str]) -> ProvisioningReport:
    return ProvisioningReport(run_id=run_id, status="ok", check_mode=False, artifact_dir="-",
                              hosts=[HostOutcome(host=n, outcome="changed") for n in names])


def test_batches_waiting_for_a_run_are_gathered_into_the_next(home):  # type: ignore[no-untyped-def]
    config, db = home
    for h in ("lap01", "lap02", "lap03"):
        pending.enqueue(db, h, KIND_PROVISION, "it-admin")
    calls: list[list[str]] = []
    release = threading.Event()

    def provision(config_, db_, inv, names, **kw):  # type: ignore[no-untyped-def]
        calls.append(sorted(names))
        if len(calls) == 1:
            assert release.wait(30), "the first run was never released"
        return report(100 + len(calls), list(names))

    w = watcher(config, db, provision)
    first = threading.Thread(target=w.run_batch, args=(["lap01"], T0))
    first.start()
    deadline = time.monotonic() + 20
    while not calls:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # lap02 and lap03 come online while lap01's run holds the lock: their batches wait.
    others = [threading.Thread(target=w.run_batch, args=([h], T0)) for h in ("lap02", "lap03")]
    for t in others:
        t.start()
    while w._gatherer.waiting() < 2:
        assert time.monotonic() < deadline, "the other batches never came to provision"
        time.sleep(0.01)
    release.set()
    for t in (first, *others):
        t.join(30)
    assert calls == [["lap01"], ["lap02", "lap03"]]
    done = {i.host: i.result for i in pending.list_items(db, include_closed=True)}
    assert done == {"lap01": "provisioning run 101", "lap02": "provisioning run 102", "lap03": "provisioning run 102"}
    assert w._gatherer.runs == [1, 2]


def test_an_erase_goes_first_and_nothing_else_runs_on_the_erased_laptop(home):  # type: ignore[no-untyped-def]
    config, db = home
    pending.enqueue(db, "lap01", KIND_PROVISION, "it-admin")
    pending.enqueue(db, "lap01", KIND_VPN_ROTATE, "it-admin")
    pending.enqueue(db, "lap01", KIND_ERASE, "it-lead", "stolen", identity="SHA256:lap01key")
    applied: list[tuple[str, dict[str, str | None]]] = []

    def apply_lost(config_, db_, inv, action, wanted):  # type: ignore[no-untyped-def]
        applied.append((action, dict(wanted)))
        return {h: ("done", "erased") for h in wanted}

    w = watcher(config, db, lambda *a, **k: pytest.fail("no provisioning run on an erased laptop"), apply_lost)
    w.run_batch(["lap01"], T0)
    assert applied == [("erase", {"lap01": "SHA256:lap01key"})]
    assert [(s.action, s.outcome) for s in w.steps][0] == ("erase", "done")
    assert "ordered by it-lead at 2026-" in w.steps[0].detail
    state = {i.kind: (i.state, i.last_error) for i in pending.list_items(db, include_closed=True)}
    assert state["erase"][0] == "done"
    assert state["provision"] == ("pending", "the laptop was erased")
    assert not any(s.action in ("collect", "provision", "vpn_rotate") and s.outcome == "done" for s in w.steps)


def test_an_order_refused_for_another_laptop_waits_without_using_an_attempt(home):  # type: ignore[no-untyped-def]
    config, db = home
    item, _ = pending.enqueue(db, "lap02", KIND_ERASE, "it-lead", identity="SHA256:lap02key")

    def apply_lost(config_, db_, inv, action, wanted):  # type: ignore[no-untyped-def]
        return {h: ("refused", "the laptop at 10.77.0.12 shows host key SHA256:other") for h in wanted}

    w = watcher(config, db, lambda *a, **k: report(1, []), apply_lost)
    w.run_batch(["lap02"], T0)
    (now_item,) = pending.list_items(db, ["lap02"])
    assert (now_item.state, now_item.attempts) == ("pending", 0)
    assert "SHA256:other" in (now_item.last_error or "")
    assert ("erase", "refused") in [(s.action, s.outcome) for s in w.steps]
