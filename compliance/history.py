"""The stored history of compliance runs, hash-chained so a municipality can show evidence later.

A run is inserted as `running` when it starts and becomes `complete` in ONE transaction that also
writes all its results, its summary and its hashes; a run killed midway therefore never looks
complete, and the next run marks it `interrupted`. Each complete run's `record_hash` is the SHA-256
of a canonical JSON record of the run (header, evidence hashes, summary, rule and device snapshots,
every result) that includes the previous complete run's `record_hash`. `verify_chain` recomputes
everything offline from the database alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from compliance.canonical import optional_ts
from compliance.errors import RunNotFoundError
from compliance.evidence import verify_evidence_chain
from compliance.facts import DeviceFacts
from compliance.models import ComplianceResult, ComplianceRun, LaptopEvidence
from compliance.results import FINDING_STATUSES, STATUSES, RuleResult
from core.db import Database
from core.findings import Findings

GENESIS = None  # the first run's prev_hash
# One stored result as the chain hashes it: device, rule id, status, evidence, waiver.
ResultRow = tuple[str, str, str, str, str | None]


def canonical_record(run: ComplianceRun, rows: list[ResultRow]) -> bytes:
    header = {
        "id": run.id,
        "started_at": optional_ts(run.started_at),
        "finished_at": optional_ts(run.finished_at),
        "status": run.status,
        "scope": run.scope,
        "actor": run.actor,
        "tool_version": run.tool_version,
        "inventory_hash": run.inventory_hash,
        "baselines_hash": run.baselines_hash,
        "waivers_hash": run.waivers_hash,
        "prev_hash": run.prev_hash,
        "summary": run.summary,
        "rules": run.rules,
        "devices": run.devices,
    }
    body = {"run": header, "results": sorted([list(r) for r in rows], key=lambda r: (r[0], r[1]))}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(run: ComplianceRun, rows: list[ResultRow]) -> str:
    return hashlib.sha256(canonical_record(run, rows)).hexdigest()


def summarise(results: list[RuleResult], devices: dict[str, DeviceFacts]) -> dict[str, Any]:
    """Counts per status, overall, per fleet, per school and per rule; device compliance."""

    def block() -> dict[str, Any]:
        return {"counts": dict.fromkeys(STATUSES, 0), "devices": 0, "compliant_devices": 0}

    total = block()
    fleets: dict[str, dict[str, Any]] = {}
    schools: dict[str, dict[str, Any]] = {}
    rules: dict[str, dict[str, int]] = {}
    per_device: dict[str, Counter[str]] = {d: Counter() for d in devices}

    def blocks_of(dev: DeviceFacts) -> list[dict[str, Any]]:
        """The totals a device counts in: overall, its fleet's and its school's."""
        out = [total, fleets.setdefault(dev.fleet, block())]
        if dev.school:
            out.append(schools.setdefault(dev.school, block()))
        return out

    for r in results:
        dev = devices[r.device]
        per_device[r.device][r.status] += 1
        for t in blocks_of(dev):
            t["counts"][r.status] += 1
        rules.setdefault(r.rule_id, dict.fromkeys(STATUSES, 0))[r.status] += 1
    for name, counts in per_device.items():
        dev = devices[name]
        if dev.scope == "fleet":
            continue  # a fleet-wide entry (the push certificate, a token) has results but is no device
        compliant = not any(counts[s] for s in FINDING_STATUSES)
        for t in blocks_of(dev):
            t["devices"] += 1
            t["compliant_devices"] += int(compliant)
    for b in [total, *fleets.values(), *schools.values()]:
        b["pass_rate"] = pass_rate(b["counts"])
    return {
        **total,
        "fleets": dict(sorted(fleets.items())),
        "schools": dict(sorted(schools.items())),
        "rules": dict(sorted(rules.items())),
    }


def pass_rate(counts: dict[str, int]) -> float:
    """Passed share of the results that apply (not_applicable left out; waived is not a pass)."""
    applicable = sum(v for k, v in counts.items() if k != "not_applicable")
    return round(counts.get("pass", 0) / applicable, 4) if applicable else 1.0


def tool_version() -> str:
    try:
        return version("werne")
    except Exception:  # noqa: BLE001 - a source checkout without metadata still runs
        return "0+unknown"


def begin_run(
    db: Database,
    scope: str,
    actor: str,
    inventory_hash: str,
    baselines_hash: str,
    waivers_hash: str,
    now: datetime | None = None,
) -> int:
    """Insert a `running` run. Call with the lock held: any other `running` run is dead, so it
    is marked `interrupted` here."""
    with db.session() as s:
        s.execute(
            update(ComplianceRun)
            .where(ComplianceRun.status == "running")
            .values(status="interrupted", error="the process running it stopped before it completed")
        )
        run = ComplianceRun(
            started_at=now or datetime.now(UTC),
            status="running",
            scope=scope,
            actor=actor,
            pid=os.getpid(),
            tool_version=tool_version(),
            inventory_hash=inventory_hash,
            baselines_hash=baselines_hash,
            waivers_hash=waivers_hash,
            summary={},
            rules={},
            devices={},
        )
        s.add(run)
        s.flush()
        return run.id


def complete_run(
    db: Database,
    run_id: int,
    results: list[RuleResult],
    devices: dict[str, DeviceFacts],
    rules: dict[str, Any],
    now: datetime | None = None,
) -> ComplianceRun:
    """Write every result and mark the run complete, with its chain link, in one transaction."""
    with db.session() as s:
        run = s.get(ComplianceRun, run_id)
        if run is None or run.status != "running":
            raise RunNotFoundError(f"run {run_id} is not running")
        prev = s.scalar(
            select(ComplianceRun.record_hash)
            .where(ComplianceRun.status == "complete")
            .order_by(ComplianceRun.id.desc())
            .limit(1)
        )
        # Round-trip through JSON so the hash is computed over exactly what the database returns.
        run.summary = json.loads(json.dumps(summarise(results, devices)))
        run.rules = json.loads(json.dumps(rules))
        run.devices = json.loads(json.dumps({k: d.info() for k, d in sorted(devices.items())}))
        run.finished_at = now or datetime.now(UTC)
        run.status = "complete"
        run.prev_hash = prev
        if results:
            s.execute(
                insert(ComplianceResult),
                [
                    {
                        "run_id": run_id,
                        "device": r.device,
                        "rule_id": r.rule_id,
                        "status": r.status,
                        "evidence": r.evidence,
                        "waiver": r.waiver,
                    }
                    for r in results
                ],
            )
        rows = [(r.device, r.rule_id, r.status, r.evidence, r.waiver) for r in results]
        run.record_hash = record_hash(run, rows)
        s.flush()
        s.expunge(run)
        return run


def store_timings(db: Database, run_id: int, timings: dict[str, Any]) -> None:
    """Keep where the run's time went (compliance.timings) with the run. Not part of its record
    hash: written after it, and how long a run took is no evidence."""
    with db.session() as s:
        s.execute(update(ComplianceRun).where(ComplianceRun.id == run_id).values(timings=timings))


def fail_run(db: Database, run_id: int, reason: str, status: str = "failed") -> None:
    with db.session() as s:
        s.execute(
            update(ComplianceRun)
            .where(ComplianceRun.id == run_id, ComplianceRun.status == "running")
            .values(status=status, error=reason[:2000], finished_at=datetime.now(UTC))
        )


# --- reading --------------------------------------------------------------------------------


@dataclass
class StoredRun:
    """A complete run as read back: header, snapshots and results keyed by (device, rule)."""

    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    scope: str
    actor: str
    tool_version: str
    inventory_hash: str
    baselines_hash: str
    waivers_hash: str
    prev_hash: str | None
    record_hash: str | None
    summary: dict[str, Any]
    rules: dict[str, Any]
    devices: dict[str, Any]
    results: dict[tuple[str, str], RuleResult] = field(default_factory=dict)
    timings: dict[str, Any] | None = None


def _stored(run: ComplianceRun, with_results: bool, s: Session) -> StoredRun:
    out = StoredRun(
        id=run.id,
        started_at=run.started_at,
        finished_at=run.finished_at,
        status=run.status,
        scope=run.scope,
        actor=run.actor,
        tool_version=run.tool_version,
        inventory_hash=run.inventory_hash,
        baselines_hash=run.baselines_hash,
        waivers_hash=run.waivers_hash,
        prev_hash=run.prev_hash,
        record_hash=run.record_hash,
        summary=run.summary,
        rules=run.rules,
        devices=run.devices,
        timings=run.timings,
    )
    if with_results:
        out.results = {(d, r): RuleResult(d, r, st, ev, w) for d, r, st, ev, w in _result_rows(s, run.id)}
    return out


def _result_rows(s: Session, run_id: int) -> list[ResultRow]:
    """The stored results of one run, as the chain hashes them."""
    rows = s.execute(
        select(
            ComplianceResult.device,
            ComplianceResult.rule_id,
            ComplianceResult.status,
            ComplianceResult.evidence,
            ComplianceResult.waiver,
        ).where(ComplianceResult.run_id == run_id)
    ).all()
    return [(d, r, st, ev, w) for d, r, st, ev, w in rows]


def load_run(db: Database, run_id: int | None = None, with_results: bool = True) -> StoredRun:
    """A complete run (the latest when `run_id` is None)."""
    with db.session() as s:
        q = select(ComplianceRun).where(ComplianceRun.status == "complete")
        q = q.where(ComplianceRun.id == run_id) if run_id is not None else q.order_by(ComplianceRun.id.desc())
        run = s.scalars(q.limit(1)).first()
        if run is None:
            if run_id is None:
                raise RunNotFoundError(
                    "no complete compliance run stored yet; run `werne compliance run` first"
                )
            raise RunNotFoundError(f"no complete compliance run with id {run_id}")
        return _stored(run, with_results, s)


def previous_run_id(db: Database, run_id: int) -> int | None:
    with db.session() as s:
        return s.scalar(
            select(func.max(ComplianceRun.id)).where(
                ComplianceRun.status == "complete", ComplianceRun.id < run_id
            )
        )


def recent_runs(db: Database, upto_id: int, limit: int = 30) -> list[dict[str, Any]]:
    """Up to `limit` complete runs ending with `upto_id`, oldest first: id, finished_at, summary only
    (the trend chart needs no more, and the device snapshots are the heavy part)."""
    with db.session() as s:
        rows = s.execute(
            select(ComplianceRun.id, ComplianceRun.finished_at, ComplianceRun.summary)
            .where(ComplianceRun.status == "complete", ComplianceRun.id <= upto_id)
            .order_by(ComplianceRun.id.desc())
            .limit(limit)
        ).all()
    return [{"id": i, "finished_at": f, "summary": summ} for i, f, summ in reversed(rows)]


def list_runs(db: Database, limit: int = 50) -> list[StoredRun]:
    with db.session() as s:
        runs = s.scalars(select(ComplianceRun).order_by(ComplianceRun.id.desc()).limit(limit)).all()
        return [_stored(r, False, s) for r in runs]


# --- verification ---------------------------------------------------------------------------


@dataclass
class ChainReport(Findings):
    """The outcome of `werne compliance verify`."""

    ok: bool
    runs_checked: int
    head: str | None
    problems: list[str] = field(default_factory=list)


def verify_chain(db: Database) -> ChainReport:
    """Recompute every complete run's hash and check each link to its predecessor."""
    problems: list[str] = []
    prev: str | None = GENESIS
    n = 0
    with db.session() as s:
        ids = s.scalars(
            select(ComplianceRun.id).where(ComplianceRun.status == "complete").order_by(ComplianceRun.id)
        ).all()
        for run_id in ids:
            run = s.get(ComplianceRun, run_id)
            assert run is not None
            rows = _result_rows(s, run_id)
            n += 1
            if run.prev_hash != prev:
                problems.append(
                    f"run {run_id}: link broken: previous hash {short_hash(run.prev_hash)} "
                    f"does not match run before it ({short_hash(prev)})"
                )
            actual = record_hash(run, rows)
            if actual != run.record_hash:
                problems.append(
                    f"run {run_id}: record altered: stored hash {short_hash(run.record_hash)}, "
                    f"recomputed {short_hash(actual)}"
                )
            prev = run.record_hash
            refs = {d: i.get("evidence_ref") for d, i in (run.devices or {}).items() if i.get("evidence_ref")}
            s.expunge(run)
            if refs:
                problems += _check_evidence_refs(s, run_id, refs)
    # Evidence collected between runs (laptops caught up by the watcher) has its own chain.
    _, ev_problems = verify_evidence_chain(db)
    problems += ev_problems
    return ChainReport(ok=not problems, runs_checked=n, head=prev, problems=problems)


def _check_evidence_refs(s: Session, run_id: int, refs: dict[str, dict[str, Any]]) -> list[str]:
    """Each device a run judged on stored evidence names a row that exists with that hash."""
    ids = [int(r["id"]) for r in refs.values()]
    found = dict(s.execute(select(LaptopEvidence.id, LaptopEvidence.record_hash)
                           .where(LaptopEvidence.id.in_(ids))).all())
    return [f"run {run_id}: {dev}: evidence {r['id']} missing or altered"
            for dev, r in sorted(refs.items()) if found.get(int(r["id"])) != r["record_hash"]]


def short_hash(h: str | None) -> str:
    return h[:12] if h else "none"
