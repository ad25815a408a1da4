"""The nightly run in shards (issue 26 part 3): the laptops and iPads split by a stable hash of their
name into `[compliance] shards` shards, each collected, evaluated and waived by a `werne compliance
worker` through a PostgreSQL job queue (procrastinate), with the run's leader (`werne compliance
run`) assembling the results into the one hash-chained run that a single process would have stored.

The leader holds the run lock, begins the run, runs the iPads' MDM sweep once (one pass of pushes
and answers through NanoMDM; the shards get each iPad's outcome), writes one `compliance_shards` row
per shard with its work, defers one job per shard and collects the Apple TVs and the fleet-wide
entries itself meanwhile. A worker collects its laptops (Ansible over SSH), builds its iPads' facts,
evaluates and applies the waivers, and marks its row done with the results, once: a retried shard
never counts twice. A worker killed mid-shard stops sending heartbeats; the leader hands its job to
another worker (procrastinate's stalled jobs). When every shard is done, the leader orders the
results as `compliance.judging.fleet_devices` orders the devices and stores the run; past
`shard_timeout_s` it fails the run (exit 3) and nothing reaches the chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import make_url

from compliance.collect_ipads import SweptIPad, collect_ipads
from compliance.collect_laptops import collect_laptops
from compliance.errors import ComplianceError, ShardTimeout
from compliance.facts import DeviceFacts
from compliance.models import ComplianceRun, ComplianceShard
from compliance.results import RuleResult
from core.config import Config
from core.db import Database
from core.errors import InputError
from core.inventory import Inventory, load_inventory
from core.timing import StepTimes

if TYPE_CHECKING:
    from compliance.collect_ipads import QuerySweep
    from compliance.rules import BaselineSet
    from compliance.waivers import WaiverSet

QUEUE = "werne-compliance"
TASK = "werne.compliance.shard"
SHARDED_FLEETS = ("laptops", "ipads")
# How often the leader looks at the shards and for stalled jobs.
POLL_S = 0.5


def shard_of(name: str, shards: int) -> int:
    """The shard of a device: a stable hash of its name (the same on every host and every night)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % shards


def check_sharding(config: Config, db: Database) -> None:
    """A sharded run needs the PostgreSQL state database (the queue and the workers share it)."""
    if config.compliance.shards > 1 and make_url(db.url).get_backend_name() != "postgresql":
        raise InputError("compliance.shards > 1 needs the PostgreSQL state database (site.database_url); "
                         "with SQLite set shards = 1")


# --- the queue ----------------------------------------------------------------------------------


def conninfo(url: str) -> str:
    """The libpq connection string of a state database URL (SQLAlchemy's URL without the driver)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def queue_app(db: Database) -> Any:
    """A procrastinate App on the state database (its tables are created once, on first use)."""
    import procrastinate

    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(db.url)))


def ensure_queue_schema(db: Database) -> None:
    """Create procrastinate's tables in the state database unless they exist (under an advisory lock:
    the leader and the workers may start together)."""
    import psycopg

    with psycopg.connect(conninfo(db.url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('werne.procrastinate.schema'))")
        try:
            exists = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
            if exists is None or exists[0] is None:
                from procrastinate.schema import SchemaManager

                conn.execute(SchemaManager.get_schema())  # no parameters: no % escaping
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('werne.procrastinate.schema'))")


def _requeue_stalled(db: Database, stall_s: float) -> int:
    """Give the jobs of workers that missed their heartbeats back to the queue; how many."""

    async def run() -> int:
        app = queue_app(db)
        async with app.open_async():
            jobs = list(await app.job_manager.get_stalled_jobs(queue=QUEUE, task_name=TASK,
                                                               seconds_since_heartbeat=stall_s))
            for job in jobs:
                await app.job_manager.retry_job(job)
            return len(jobs)

    return asyncio.run(run())


def _cancel_jobs(db: Database, run_id: int) -> None:
    """Cancel the run's shard jobs still queued (a timed-out run's), so no worker starts them later."""
    import psycopg

    with psycopg.connect(conninfo(db.url), autocommit=True) as conn:
        conn.execute("UPDATE procrastinate_jobs SET status = 'cancelled' WHERE queue_name = %s AND task_name = %s "
                     "AND status = 'todo' AND (args->>'run_id')::int = %s", (QUEUE, TASK, run_id))


# --- what travels between leader and workers ---------------------------------------------------


def _to_json(v: Any) -> Any:
    """JSON with datetimes kept as datetimes (tagged): the facts must come back exactly."""
    if isinstance(v, datetime):
        return {"__datetime__": v.isoformat()}
    if isinstance(v, dict):
        return {k: _to_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_to_json(x) for x in v]
    return v


def _from_json(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"__datetime__"}:
            return datetime.fromisoformat(v["__datetime__"])
        return {k: _from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    return v


def _device_record(d: DeviceFacts) -> dict[str, Any]:
    """A device as the leader needs it (snapshot and summary): everything but its facts."""
    out: dict[str, Any] = _to_json({k: v for k, v in asdict(d).items() if k != "facts"})
    return out


def _device_from_record(r: dict[str, Any]) -> DeviceFacts:
    known = {f.name for f in fields(DeviceFacts)}
    return DeviceFacts(**{k: v for k, v in _from_json(r).items() if k in known})


# --- the worker's side ---------------------------------------------------------------------------


def run_shard(config: Config, db: Database, run_id: int, shard: int, worker: str = "") -> bool:
    """Collect, evaluate and waive one shard and mark it done. False when there was nothing to do
    (done already by an earlier attempt, or the run is no longer running)."""
    from compliance.judging import judge
    from compliance.rules import load_baselines
    from compliance.waivers import load_waivers

    with db.session() as s:
        row = s.scalars(select(ComplianceShard).where(ComplianceShard.run_id == run_id,
                                                      ComplianceShard.shard == shard)).first()
        run = s.get(ComplianceRun, run_id)
        if row is None or row.status != "pending" or run is None or run.status != "running":
            return False
        row.attempts += 1
        row.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        work = _from_json(row.work)
        want = (run.inventory_hash, run.baselines_hash, run.waivers_hash)
    inventory = load_inventory(config.inventory_dir)
    baselines = load_baselines(config.compliance.baselines_dir)
    waivers = load_waivers(config.compliance.waivers_file, baselines.rule_ids)
    if (inventory.digest(), baselines.digest(), waivers.digest) != want:
        raise ComplianceError(f"shard {shard} of run {run_id}: the inventory, baselines or waivers "
                              "differ from the leader's; deploy the same files on every worker")
    times = StepTimes()
    at: datetime = work["now"]
    devices = shard_devices(config, db, inventory, work, at, times)
    fleets = tuple(f for f in SHARDED_FLEETS if f in work["fleets"])
    results = judge(config, db, inventory, baselines, waivers, fleets, devices, at, times)
    with db.session() as s:
        s.execute(
            update(ComplianceShard)
            .where(ComplianceShard.run_id == run_id, ComplianceShard.shard == shard,
                   ComplianceShard.status == "pending")
            .values(status="done", finished_at=datetime.now(UTC),
                    results=[[r.device, r.rule_id, r.status, r.evidence, r.waiver] for r in results],
                    devices={d.device: _device_record(d) for d in devices},
                    timings={"steps": [st.to_dict() for st in times.steps()]})
        )
    return True


def shard_devices(config: Config, db: Database, inventory: Inventory, work: dict[str, Any], at: datetime,
                  times: StepTimes) -> list[DeviceFacts]:
    """The shard's devices with their facts: its laptops collected now, its iPads from the sweep."""
    devices: list[DeviceFacts] = []
    if work["laptops"]:
        artifacts = config.state_dir / "compliance" / "artifacts"
        devices += collect_laptops(config, inventory, db, artifacts, work["laptops"], now=at, times=times)
    if work["ipads"]:
        swept = [SweptIPad(**s) for s in work["ipads"]]
        mine = replace(inventory, ipads={s.serial: inventory.ipads[s.serial] for s in swept})
        devices += collect_ipads(config, mine, db, None, sweep=lambda _deadline: swept, now=at, times=times)
    return devices


def run_worker(config: Config, db: Database, *, wait: bool = True, signals: bool = True) -> None:
    """`werne compliance worker`: take shard jobs until stopped (SIGTERM/SIGINT end it after the
    shard in hand); with wait=False until the queue is empty. signals=False: in a thread."""
    check_sharding(config, db)
    ensure_queue_schema(db)
    app = queue_app(db)

    def shard_task(run_id: int, shard: int) -> None:
        run_shard(config, db, run_id, shard)

    app.task(name=TASK, queue=QUEUE, pass_context=False)(shard_task)

    heartbeat = config.compliance.worker_heartbeat_s
    app.run_worker(queues=[QUEUE], wait=wait, concurrency=1, update_heartbeat_interval=heartbeat,
                   stalled_worker_timeout=3 * heartbeat, install_signal_handlers=signals)


# --- the leader's side ---------------------------------------------------------------------------


def plan_shards(config: Config, inventory: Inventory, fleets: tuple[str, ...], swept: list[SweptIPad],
                hosts: list[str] | None, at: datetime) -> list[dict[str, Any]]:
    """Each shard's work: its laptops (in the run's order) and its iPads' sweep outcomes."""
    n = config.compliance.shards
    laptops = (hosts or sorted(inventory.laptops)) if "laptops" in fleets else []
    plan: list[dict[str, Any]] = [{"now": at, "fleets": list(fleets), "laptops": [], "ipads": []} for _ in range(n)]
    for name in laptops:
        plan[shard_of(name, n)]["laptops"].append(name)
    by_serial = {s.serial: s for s in swept}
    for serial in sorted(inventory.ipads) if "ipads" in fleets else []:
        s = by_serial.get(serial) or SweptIPad(serial, "not_enrolled", reason="not enrolled in the MDM")
        plan[shard_of(serial, n)]["ipads"].append(asdict(s))
    return plan


def collect_and_judge_in_shards(
    config: Config, db: Database, inventory: Inventory, baselines: BaselineSet, waivers: WaiverSet,
    fleets: tuple[str, ...], run_id: int, at: datetime, jobs: dict[str, Future[list[DeviceFacts]]], *,
    sweep: QuerySweep | None, hosts: list[str] | None, times: StepTimes,
) -> tuple[list[DeviceFacts], list[RuleResult]]:
    """The leader's part of a sharded run (run_id begun, the lock held): the devices and the results
    in the order a single process stores them. `jobs` are the collectors the leader runs itself."""
    from compliance.judging import fleet_devices, judge

    swept: list[SweptIPad] = []
    if "ipads" in fleets and inventory.ipads and sweep is not None:
        with times.step("ipads"):
            swept = sweep(config.compliance.query_deadline_s)
    plan = plan_shards(config, inventory, fleets, swept, hosts, at)
    laptops = (hosts or sorted(inventory.laptops)) if "laptops" in fleets else []
    with _shards_of_run(db, run_id):
        with times.step("shards.enqueue"):
            enqueue_shards(db, run_id, plan)
        own = fleet_devices(db, config, fleets, jobs, times)
        own_results = judge(config, db, inventory, baselines, waivers, fleets, own, at, times)
        with times.step("shards.wait"):
            done = wait_for_shards(config, db, run_id, len(plan))
        add_worker_times(times, done.values())
    return assemble(fleets, laptops, done, own, own_results)


def add_worker_times(times: StepTimes, rows: Any) -> None:
    """The workers' steps in the leader's breakdown as `shard.STEP`: wall and CPU summed over the
    shards (the workers' busy time, not the run's span)."""
    for row in rows:
        for st in (row.timings or {}).get("steps", []):
            times.add(f"shard.{st['name']}", st["wall_s"], st.get("cpu_s"), "workers", count=st.get("count", 1))


@contextmanager
def _shards_of_run(db: Database, run_id: int) -> Iterator[None]:
    """The run's shard rows are scratch: gone when the leader is done, whatever the outcome."""
    try:
        yield
    finally:
        with db.session() as s:
            s.execute(delete(ComplianceShard).where(ComplianceShard.run_id == run_id))


def enqueue_shards(db: Database, run_id: int, plan: list[dict[str, Any]]) -> None:
    """One row and one job per shard (rows first: a worker that takes the job finds its work)."""
    ensure_queue_schema(db)
    with db.session() as s:
        s.add_all([ComplianceShard(run_id=run_id, shard=i, status="pending", work=_to_json(w), attempts=0)
                   for i, w in enumerate(plan)])
    app = queue_app(db)
    with app.open():
        task = app.configure_task(name=TASK, queue=QUEUE, allow_unknown=True)
        for i in range(len(plan)):
            task.defer(run_id=run_id, shard=i)


def wait_for_shards(config: Config, db: Database, run_id: int, count: int) -> dict[int, ComplianceShard]:
    """Every shard's done row, waiting up to shard_timeout_s and requeueing stalled jobs meanwhile."""
    deadline = time.monotonic() + config.compliance.shard_timeout_s
    stall_s = 3 * config.compliance.worker_heartbeat_s
    next_stall_check = 0.0
    while True:
        # Only the numbers of the done shards while waiting; their results once, at the end.
        with db.session() as s:
            done = set(s.scalars(select(ComplianceShard.shard).where(ComplianceShard.run_id == run_id,
                                                                     ComplianceShard.status == "done")))
        if len(done) == count:
            with db.session() as s:
                rows = s.scalars(select(ComplianceShard).where(ComplianceShard.run_id == run_id)).all()
                for r in rows:
                    s.expunge(r)
            return {r.shard: r for r in rows}
        now = time.monotonic()
        if now >= deadline:
            _cancel_jobs(db, run_id)
            missing = sorted(set(range(count)) - set(done))
            raise ShardTimeout(
                f"compliance run {run_id}: shard(s) {', '.join(map(str, missing))} of {count} not done within "
                f"{config.compliance.shard_timeout_s:g}s (is `werne compliance worker` running?); "
                "the run is not stored")
        if now >= next_stall_check:
            _requeue_stalled(db, stall_s)
            next_stall_check = now + max(1.0, config.compliance.worker_heartbeat_s)
        time.sleep(POLL_S)


def assemble(fleets: tuple[str, ...], laptops: list[str], done: dict[int, ComplianceShard],
             own: list[DeviceFacts], own_results: list[RuleResult]) -> tuple[list[DeviceFacts], list[RuleResult]]:
    """The shards' and the leader's devices and results in the single process's order: per fleet,
    the laptops in the run's order and the iPads by serial (as the collectors give them), then the
    leader's devices of that fleet (Apple TVs, the iPads' fleet-wide entries); each device's results
    in rule order, as the shard evaluated them."""
    results_of: dict[str, list[RuleResult]] = {}
    shard_devices: dict[str, DeviceFacts] = {}
    for row in done.values():
        for d, r, st, ev, w in row.results or []:
            results_of.setdefault(d, []).append(RuleResult(d, r, st, ev, w))
        shard_devices.update({k: _device_from_record(v) for k, v in (row.devices or {}).items()})
    for res in own_results:
        results_of.setdefault(res.device, []).append(res)
    order: dict[str, list[str]] = {"laptops": list(laptops),
                                   "ipads": sorted(d.device for d in shard_devices.values() if d.fleet == "ipads")}
    for d in own:
        order.setdefault(d.fleet, []).append(d.device)
    devices = [*shard_devices.values(), *own]
    results = [r for f in fleets for name in order.get(f, []) for r in results_of.get(name, [])]
    return devices, results

