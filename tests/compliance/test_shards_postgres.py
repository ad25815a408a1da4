"""The nightly run in shards (issue 26 part 3) on a real PostgreSQL with real procrastinate workers:
the sharded run stores what one process stores for the same fleet (same results in the same order,
same summary, snapshots and report, a chain that verifies); a worker killed with SIGKILL mid-shard
has its shard done by another worker and counted once; a leader whose shards never finish fails
with exit 3 and chains nothing.

The fleets are tools/nightly_golden.py's recording (6 laptops through the recorded facts playbook,
12 iPads through their recorded answers) and a larger one: the example city's 523 iPads, each
answering as one of the recorded iPads did."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from compliance.history import verify_chain
from compliance.models import ComplianceResult, ComplianceRun, ComplianceShard
from core.db import Database
from tools.nightly_golden import FLEET, REPO, replay

pytestmark = [pytest.mark.postgres]

WAIT_S = 300  # generous: a loaded machine is slow; never a timing assertion


def recorded_fleet() -> dict[str, Any]:
    return json.loads(FLEET.read_text(encoding="utf-8"))


def larger_fleet() -> dict[str, Any]:
    """The example city's 523 iPads, each answering as one of the 12 recorded iPads did."""
    fleet = recorded_fleet()
    rows = (REPO / "inventories" / "example-city" / "ipads.csv").read_text(encoding="utf-8").splitlines()[1:]
    serials = [r.split(";", 1)[0] for r in rows if r.strip()]
    fleet["ipads"] = [{**rec, "serial": s} for s, rec in zip(serials, itertools.cycle(fleet["ipads"]), strict=False)]
    return fleet


@contextlib.contextmanager
def thread_workers(count: int) -> Iterator[Any]:
    """`count` procrastinate workers in threads of this process (so the recorded playbook, rebound
    here, is theirs too), each taking shards until the run is over."""
    from compliance.shards import run_worker

    stop = threading.Event()
    errors: list[BaseException] = []

    def around(config: Any) -> Iterator[None]:
        def work() -> None:
            db = Database(config.database_url)
            try:
                while not stop.is_set():
                    run_worker(config, db, wait=False, signals=False)
                    time.sleep(0.2)
            except BaseException as e:  # noqa: BLE001 - reported by the test below
                errors.append(e)
            finally:
                db.dispose()

        threads = [threading.Thread(target=work, daemon=True) for _ in range(count)]
        for t in threads:
            t.start()
        try:
            yield
        finally:
            stop.set()
            for t in threads:
                t.join(WAIT_S)

    yield contextlib.contextmanager(around), errors


def ordered_rows(url: str) -> dict[str, Any]:
    """The stored run as the database holds it: results in storage order, summary, snapshots
    (laptops' evidence row ids and hashes left out: the shards write their evidence rows in another
    order, each row still named with its hash and checked by verify_chain)."""
    db = Database(url)
    try:
        with db.session() as s:
            run = s.scalars(select(ComplianceRun).where(ComplianceRun.status == "complete")).one()
            rows = s.execute(select(ComplianceResult.device, ComplianceResult.rule_id, ComplianceResult.status,
                                    ComplianceResult.evidence, ComplianceResult.waiver)
                             .where(ComplianceResult.run_id == run.id).order_by(ComplianceResult.id)).all()
            devices = {k: {f: v for f, v in d.items() if f != "evidence_ref"} for k, d in run.devices.items()}
            out = {"rows": [list(r) for r in rows], "summary": run.summary, "rules": run.rules, "devices": devices}
            shards_left = s.scalar(select(func.count()).select_from(ComplianceShard))
        chain = verify_chain(db)
    finally:
        db.dispose()
    assert chain.ok, chain.problems
    assert shards_left == 0  # the scratch rows are gone with the run stored
    return out


def without_evidence_refs(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: without_evidence_refs(x) for k, x in v.items() if k != "evidence_ref"}
    if isinstance(v, list):
        return [without_evidence_refs(x) for x in v]
    return v


def single_and_sharded(fleet: dict[str, Any], tmp_path: Path, postgres_cluster: Any, shards: int,
                       workers: int) -> tuple[Any, Any]:
    one_url = postgres_cluster.create_database("single")
    one = replay(fleet, tmp_path / "single", database_url=one_url)
    many_url = postgres_cluster.create_database("sharded")
    with thread_workers(workers) as (around, errors):
        many = replay(fleet, tmp_path / "sharded", database_url=many_url, settings=f"shards = {shards}\n",
                      around=around)
    assert not errors
    return (without_evidence_refs(one), ordered_rows(one_url)), (without_evidence_refs(many), ordered_rows(many_url))


def test_sharded_run_stores_what_one_process_stores_on_the_recorded_fleet(tmp_path: Path,
                                                                         postgres_cluster: Any) -> None:
    (one, one_rows), (many, many_rows) = single_and_sharded(recorded_fleet(), tmp_path, postgres_cluster, 3, 2)
    assert many_rows["rows"] == one_rows["rows"]  # same results, in the same stored order
    assert many_rows == one_rows
    assert many == one  # the report and counts too
    statuses = {r[2] for r in one_rows["rows"]}
    assert {"pass", "fail", "unreachable", "not_applicable"} <= statuses
    assert {d["fleet"] for d in one_rows["devices"].values()} == {"laptops", "ipads"}


def test_sharded_run_stores_what_one_process_stores_on_a_larger_fleet(tmp_path: Path, postgres_cluster: Any) -> None:
    (one, one_rows), (many, many_rows) = single_and_sharded(larger_fleet(), tmp_path, postgres_cluster, 5, 2)
    assert len(one_rows["devices"]) > 500
    assert many_rows["rows"] == one_rows["rows"]
    assert many_rows == one_rows
    assert many == one


# --- faults: real worker processes ----------------------------------------------------------------

# A worker process that takes a shard and stops before marking it done (as if busy), so the test
# can SIGKILL it mid-shard: the real procrastinate worker, with run_shard held at its last step.
HELD_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    import compliance.shards as shards
    from core.config import load_config
    from core.db import Database
    original = shards.shard_devices
    def held(*a, **k):
        out = original(*a, **k)
        Path(sys.argv[3]).write_text("holding")
        while True:
            time.sleep(1)
    shards.shard_devices = held
    config = load_config(Path(sys.argv[1]))
    shards.run_worker(config, Database(config.database_url), wait=True)
""")


def write_config(work: Path, url: str, fleet: dict[str, Any], settings: str) -> Path:
    """An iPads-only site like replay's (the example city's inventory, the fleet's iPads)."""
    import shutil

    inv = work / "inventory"
    shutil.copytree(REPO / "inventories" / "example-city", inv)
    serials = {i["serial"] for i in fleet["ipads"]}
    header, *rows = (inv / "ipads.csv").read_text(encoding="utf-8").splitlines()
    (inv / "ipads.csv").write_text("\n".join([header, *(r for r in rows if r.split(";", 1)[0] in serials)]) + "\n",
                                   encoding="utf-8")
    cfg = work / "werne.toml"
    cfg.write_text(f'[site]\ninventory = "{inv}"\nstate_dir = "{work / "state"}"\ndatabase_url = "{url}"\n'
                   f'[compliance]\n{settings}', encoding="utf-8")
    return cfg


def run_leader(cfg: Path, fleet: dict[str, Any]) -> Any:
    from datetime import datetime

    from compliance.collect_ipads import SweptIPad
    from compliance.run import run_compliance
    from core.config import load_config
    from core.inventory import load_inventory

    config = load_config(cfg)
    db = Database(config.database_url)
    try:
        return run_compliance(config, db, load_inventory(config.inventory_dir), ("ipads",),
                              sweep=lambda _d: [SweptIPad(i["serial"], i["status"], dict(i["answers"]))
                                                for i in fleet["ipads"]],
                              now=datetime.fromisoformat(fleet["now"]))
    finally:
        db.dispose()


def wait_for(cond: Any, what: str) -> None:
    end = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.2)


def test_worker_killed_mid_shard_is_retried_by_another_and_counted_once(tmp_path: Path,
                                                                        postgres_cluster: Any) -> None:
    fleet = larger_fleet()
    one_cfg = write_config(tmp_path / "one", postgres_cluster.create_database("single"), fleet, "")
    one = run_leader(one_cfg, fleet)
    url = postgres_cluster.create_database("killed")
    cfg = write_config(tmp_path / "many", url, fleet, "shards = 3\nworker_heartbeat_s = 1\nshard_timeout_s = 600\n")
    holding = tmp_path / "holding"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (tmp_path / "workers.log").open("wb")
    held = subprocess.Popen([sys.executable, "-c", HELD_WORKER, str(cfg), str(REPO), str(holding)], env=env,
                            stdout=subprocess.DEVNULL, stderr=log)
    other: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = {}
    leader = threading.Thread(target=lambda: result.update(summary=run_leader(cfg, fleet)), daemon=True)
    try:
        leader.start()
        wait_for(lambda: holding.exists() or held.poll() is not None, "the held worker to take a shard")
        assert held.poll() is None, (tmp_path / "workers.log").read_text(errors="replace")
        held.send_signal(signal.SIGKILL)  # mid-shard: facts built, results not yet written
        held.wait(60)
        other = subprocess.Popen([sys.executable, "cli.py", "--config", str(cfg), "compliance", "worker"],
                                 cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)
        killed_shard_attempts = 0

        def note_attempts() -> bool:
            nonlocal killed_shard_attempts
            db = Database(url)
            try:
                with db.session() as s:
                    killed_shard_attempts = max([0, *s.scalars(select(ComplianceShard.attempts))])
            finally:
                db.dispose()
            return killed_shard_attempts >= 2 or not leader.is_alive()

        wait_for(note_attempts, "the killed worker's shard to be tried again")
        leader.join(WAIT_S)
        assert not leader.is_alive(), "the leader did not finish"
    finally:
        for p in (held, other):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(60)
        log.close()
    summary = result["summary"]
    assert summary.counts == one.counts
    assert summary.devices == one.devices
    db = Database(url)
    try:
        with db.session() as s:
            stored = s.scalar(select(func.count()).select_from(ComplianceResult)
                              .where(ComplianceResult.run_id == summary.run_id))
            pairs = s.scalar(select(func.count()).select_from(
                select(ComplianceResult.device, ComplianceResult.rule_id).distinct()
                .where(ComplianceResult.run_id == summary.run_id).subquery()))
        assert verify_chain(db).ok
    finally:
        db.dispose()
    assert stored == pairs == sum(one.counts.values())  # none counted twice
    import psycopg

    from compliance.shards import TASK, conninfo

    with psycopg.connect(conninfo(url)) as conn:
        jobs = conn.execute("SELECT status, count(*) FROM procrastinate_jobs WHERE task_name = %s GROUP BY status",
                            (TASK,)).fetchall()
    assert jobs == [("succeeded", 3)]  # the killed worker's job too, done by the other worker
    assert killed_shard_attempts == 2


def test_leader_timeout_is_exit_3_with_nothing_chained(tmp_path: Path, postgres_cluster: Any,
                                                       werne_cli: Any) -> None:
    """No worker runs: the leader gives up after shard_timeout_s (the laptops: a sharded leader
    collects none itself)."""
    url = postgres_cluster.create_database("timeout")
    cfg = write_config(tmp_path, url, recorded_fleet(), "shards = 2\nshard_timeout_s = 2\n")
    out = werne_cli(cfg, "compliance", "run", "--laptops")
    assert out.exit_code == 3, out.output
    assert out.output.startswith("Error: compliance run 1: shard(s) 0, 1 of 2 not done within 2s")
    assert len(out.output.strip().splitlines()) == 1
    db = Database(url)
    try:
        with db.session() as s:
            runs = s.execute(select(ComplianceRun.status, ComplianceRun.record_hash)).all()
            shards_left = s.scalar(select(func.count()).select_from(ComplianceShard))
        chain = verify_chain(db)
    finally:
        db.dispose()
    assert runs == [("failed", None)]
    assert shards_left == 0
    assert chain.ok and chain.runs_checked == 0
    import psycopg

    from compliance.shards import TASK, conninfo

    with psycopg.connect(conninfo(url)) as conn:
        left = conn.execute("SELECT status, count(*) FROM procrastinate_jobs WHERE task_name = %s GROUP BY status",
                            (TASK,)).fetchall()
    assert left == [("cancelled", 2)]  # no worker starting later picks up the failed run's shards
