"""The compliance side of `werne laptop watch`: collect a caught-up laptop's facts as evidence.

provisioning.home.watch never imports compliance (the layers); this module gives it the two
callables it needs, and `make_watcher` is the library call behind the CLI command.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from compliance.collect_laptops import gather_facts
from compliance.evidence import evidence_times, store_evidence
from compliance.lock import holder_alive
from compliance.run import lock_path
from core.config import Config
from core.db import Database
from core.inventory import Inventory
from provisioning.home.watch import Watcher


def compliance_run_going_on(config: Config) -> bool:
    """A nightly run holds the compliance lock: it collects every laptop itself, so a catch-up
    waits (it never takes that lock, so the nightly run is never refused because of a catch-up)."""
    try:
        info = json.loads(lock_path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return holder_alive(info)


def collector(config: Config, db: Database) -> Callable[[Inventory, list[str], datetime], dict[str, str]]:
    artifacts = config.state_dir / "compliance" / "catchup-artifacts"

    def collect(inventory: Inventory, hosts: list[str], now: datetime) -> dict[str, str]:
        if compliance_run_going_on(config):
            return dict.fromkeys(hosts, "deferred")
        # One private data dir per worker thread: ansible-runner rotates (deletes) old artifacts
        # in its dir, which raced with a second catch-up batch writing into the same one.
        mine = artifacts / f"worker-{threading.get_ident()}"
        gathered = gather_facts(config, inventory, db, hosts, mine, None, now)
        store_evidence(config, db, {h: f for h, (st, f) in gathered.items() if st == "ok"}, now, "catch-up")
        return {h: st for h, (st, _) in gathered.items()}

    return collect


def make_watcher(config: Config, db: Database, load_inventory: Callable[[], Inventory], *,
                 clock: Callable[[], datetime] | None = None, rng: random.Random | None = None,
                 reader: object = None) -> Watcher:
    """The watcher with this site's evidence collection (see provisioning.home.watch)."""
    return Watcher(config=config, db=db, load_inventory=load_inventory, collect=collector(config, db),
                   evidence_times=lambda hosts: evidence_times(db, hosts),
                   clock=clock or (lambda: datetime.now(UTC)), rng=rng or random.Random(), reader=reader)
