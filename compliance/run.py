"""The main job: `werne compliance run` collects facts, evaluates the baselines, applies waivers and
stores the run in the hash-chained history. Library entry point: `run_compliance`.

Exit codes (RunSummary.exit_code): 0 every device compliant, 1 findings (fail, error or
unreachable), and errors raise: 2 bad input or config (BaselineError, WaiverError, InventoryError),
3 could not run (lock held, no collection possible, state database unusable).
"""

from __future__ import annotations

import functools
from concurrent.futures import wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compliance import history
from compliance.collect_ipads import QuerySweep, collect_ipads
from compliance.collect_laptops import Progress, ProgressCallback, collect_laptops
from compliance.engine import FINDING_STATUSES, DeviceFacts, EvalContext, RuleResult, evaluate
from compliance.errors import ComplianceError
from compliance.lock import RunLock
from compliance.rules import BaselineSet, load_baselines
from compliance.waivers import load_waivers
from core import audit
from core.config import Config
from core.db import Database
from core.errors import WerneError
from core.findings import Findings
from core.inventory import Inventory
from core.signals import start_daemon

FLEETS = ("laptops", "ipads")


@dataclass
class RunSummary(Findings):
    """What one compliance run found, for the CLI, the demo and the timer's journal."""

    run_id: int
    scope: str
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int]
    devices: int
    compliant_devices: int
    pass_rate: float
    record_hash: str
    fleets: dict[str, Any] = field(default_factory=dict)
    recovered_stale_lock: bool = False
    report_path: Path | None = None

    @property
    def findings(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINDING_STATUSES)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """The summary as `werne compliance run --json` prints it."""
        return {"run": self.run_id, "scope": self.scope, "devices": self.devices,
                "compliant_devices": self.compliant_devices, "pass_rate": self.pass_rate,
                "counts": self.counts, "record_hash": self.record_hash,
                "report": str(self.report_path) if self.report_path else None}


def lock_path(config: Config) -> Path:
    return config.state_dir / "compliance.lock"


def rules_snapshot(baselines: BaselineSet, fleets: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for fleet in fleets:
        for r in baselines.for_fleet(fleet):
            out[r.id] = {
                "fleet": fleet,
                "title": r.title,
                "severity": r.severity,
                "references": r.references.model_dump(),
                "remediation": r.remediation.describe(),
            }
    return out


def group_profile_identifiers(config: Config) -> Any:
    """device -> the profile identifiers its group must have, from ipad.profiles (cached per group)."""

    @functools.lru_cache(maxsize=16)
    def for_group(group: str) -> frozenset[str]:
        from ipad import profiles

        try:
            return frozenset(p.identifier for p in profiles.profile_set_for(group, config))
        except WerneError:
            # Building a profile can need a secret (the Wi-Fi password) that a checking host may
            # lack; the identifiers do not depend on it.
            a = profiles.load_group_assignment(config)
            return frozenset(f"{a.identifier_prefix}.{n}" for n in a.groups.get(group, []))

    def lookup(dev: DeviceFacts) -> set[str]:
        return set(for_group(dev.group or ""))

    return lookup


def run_compliance(
    config: Config,
    db: Database,
    inventory: Inventory,
    fleets: tuple[str, ...] | list[str] = FLEETS,
    progress: ProgressCallback | None = None,
    *,
    now: datetime | None = None,
    sweep: QuerySweep | None = None,
    hosts: list[str] | None = None,
) -> RunSummary:
    """Run the compliance job over the given fleets and store it. Raises on bad input (exit 2) or
    when it cannot run (exit 3); findings are in the returned summary."""
    fleets = tuple(f for f in FLEETS if f in fleets)
    if not fleets:
        raise ComplianceError("nothing to check: choose --laptops, --ipads or --all")
    scope = "all" if fleets == FLEETS else fleets[0]
    baselines = load_baselines(config.compliance.baselines_dir)
    waivers = load_waivers(config.compliance.waivers_file, baselines.rule_ids)
    if hosts:
        inventory.select_laptops(hosts)
    if "ipads" in fleets and inventory.ipads and sweep is None:
        from compliance.collect_ipads import mdm_ddm_sweep

        # DDM status where KMFDDM is set up and reachable; the full query set for the rest.
        sweep = mdm_ddm_sweep(config, db, inventory, now=now)
    with RunLock(lock_path(config)) as lock:
        run_id = history.begin_run(
            db, scope, audit.current_actor(), inventory.digest(), baselines.digest(), waivers.digest
        )
        try:
            at = now or datetime.now(UTC)
            artifacts = config.state_dir / "compliance" / "artifacts"
            jobs = {}
            # The two fleets are collected side by side: the laptops wait on Ansible and SSH, the
            # iPads on the MDM sweep's deadline; neither needs the other. Daemon threads, not a
            # pool: on Ctrl-C or SIGTERM the run ends now, not when a hung MDM call times out.
            if "laptops" in fleets:
                jobs["laptops"] = start_daemon(
                    collect_laptops, config, inventory, db, artifacts, hosts or None, progress, now=at,
                    name="werne-collect-laptops",
                )
            if "ipads" in fleets:
                jobs["ipads"] = start_daemon(
                    collect_ipads, config, inventory, db, progress, sweep, now=at, name="werne-collect-ipads"
                )
            devices: list[DeviceFacts] = []
            try:
                for fleet in fleets:
                    devices += jobs[fleet].result()
            except Exception:
                wait(list(jobs.values()))  # as a pool would: no collector still runs once the run has failed
                raise
            if "ipads" in fleets:
                from compliance.collect_fleet import apps_token_facts, ipad_fleet_facts

                devices += ipad_fleet_facts(db) + apps_token_facts(config)
            ctx = EvalContext(config=config, now=at, profile_set_for=group_profile_identifiers(config))
            results: list[RuleResult] = []
            for fleet in fleets:
                results += evaluate(baselines.for_fleet(fleet), [d for d in devices if d.fleet == fleet], ctx)
            by_id = {d.device: d for d in devices}
            results = waivers.apply(results, by_id, at)
            if progress is not None:
                progress(Progress("all", len(devices), len(devices), message="storing results"))
            run = history.complete_run(db, run_id, results, by_id, rules_snapshot(baselines, fleets))
        except KeyboardInterrupt:
            history.fail_run(db, run_id, "interrupted", status="interrupted")
            raise
        except BaseException as e:
            history.fail_run(db, run_id, f"{e.__class__.__name__}: {e}")
            raise
    s = run.summary
    summary = RunSummary(
        run_id=run.id,
        scope=scope,
        started_at=run.started_at,
        finished_at=run.finished_at or at,
        counts=s["counts"],
        devices=s["devices"],
        compliant_devices=s["compliant_devices"],
        pass_rate=s["pass_rate"],
        record_hash=run.record_hash or "",
        fleets=s["fleets"],
        recovered_stale_lock=lock.recovered is not None,
    )
    audit.record(
        db, "compliance.run", scope, {"run": run.id, "counts": s["counts"], "record_hash": run.record_hash}
    )
    if config.compliance.report_dir is not None:
        from compliance.reports import write_report

        out = config.compliance.report_dir / f"compliance-{run.id}.html"
        write_report(db, run.id, "html", out)
        latest = config.compliance.report_dir / "latest.html"
        latest.write_bytes(out.read_bytes())
        summary.report_path = out
    return summary
