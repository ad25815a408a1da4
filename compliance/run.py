"""The main job: `werne compliance run` collects facts, evaluates the baselines, applies waivers and
stores the run in the hash-chained history. Library entry point: `run_compliance`.

Exit codes (RunSummary.exit_code): 0 every device compliant, 1 findings (fail, error or
unreachable), and errors raise: 2 bad input or config (BaselineError, WaiverError, InventoryError),
3 could not run (lock held, no collection possible, state database unusable).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compliance import history
from compliance.alerting import alert_new_findings
from compliance.collect_appletvs import collect_appletvs
from compliance.collect_ipads import QuerySweep, collect_ipads, mdm_ddm_sweep
from compliance.collect_laptops import Progress, ProgressCallback, collect_laptops
from compliance.errors import ComplianceError
from compliance.facts import DeviceFacts
from compliance.judging import fleet_devices, judge
from compliance.lock import RunLock
from compliance.metrics import result_families, status_families, write_run_metrics
from compliance.reports import write_report
from compliance.results import FINDING_STATUSES
from compliance.rules import BaselineSet, load_baselines
from compliance.timings import RunTimes
from compliance.waivers import load_waivers
from core import audit
from core.config import Config
from core.db import Database
from core.files import write_output
from core.findings import Findings
from core.inventory import Inventory
from core.signals import start_daemon

FLEETS = ("laptops", "ipads", "appletvs")


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
    # Why the run's chain head is not signed although a signing key is configured.
    signing_problem: str | None = None
    # Where the run's time went (compliance.timings.RunTimes.finish), also stored with the run.
    timings: dict[str, Any] | None = None
    # How many new critical or expiry findings this run alerted IT staff about (compliance.alerting).
    new_alerts: int = 0

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
    when it cannot run (exit 3); findings are in the returned summary, where each step's time
    is too (`timings`, compliance.timings), also stored with the run."""
    times = RunTimes()
    started = datetime.now(UTC)
    fleets = tuple(f for f in FLEETS if f in fleets)
    if not fleets:
        raise ComplianceError("nothing to check: choose --laptops, --ipads or --all")
    scope = "all" if fleets == FLEETS else fleets[0]
    with times.step("setup"):
        baselines = load_baselines(config.compliance.baselines_dir)
        waivers = load_waivers(config.compliance.waivers_file, baselines.rule_ids)
        if config.compliance.shards > 1:
            from compliance.shards import check_sharding

            check_sharding(config, db)
        if hosts:
            inventory.select_laptops(hosts)
        if "ipads" in fleets or "appletvs" in fleets:
            # The iPad side's ORM models, before the collector threads start: one thread importing
            # ipad.models half-way while another's first query configures the mappers fails that
            # query (SchoolClass before Lesson; seen with a given sweep, which imports nothing here).
            import ipad.models  # noqa: F401
        if "ipads" in fleets and inventory.ipads and sweep is None:
            # DDM status where KMFDDM is set up and reachable; the full query set for the rest.
            sweep = mdm_ddm_sweep(config, db, inventory, now=now, times=times)
    with RunLock(lock_path(config)) as lock:
        run_id = history.begin_run(
            db, scope, audit.current_actor(), inventory.digest(), baselines.digest(), waivers.digest
        )
        try:
            at = now or datetime.now(UTC)
            artifacts = config.state_dir / "compliance" / "artifacts"
            jobs: dict[str, Future[list[DeviceFacts]]] = {}
            # The two fleets are collected side by side: the laptops wait on Ansible and SSH, the
            # iPads on the MDM sweep's deadline; neither needs the other. Daemon threads, not a
            # pool: on Ctrl-C or SIGTERM the run ends now, not when a hung MDM call times out.
            sharded = config.compliance.shards > 1
            if "laptops" in fleets and not sharded:
                jobs["laptops"] = start_daemon(
                    times.timed_call, "laptops", collect_laptops, config, inventory, db, artifacts, hosts or None,
                    progress, now=at, times=times, name="werne-collect-laptops",
                )
            if "appletvs" in fleets:
                jobs["appletvs"] = start_daemon(
                    times.timed_call, "appletvs", collect_appletvs, config, inventory, db, progress, now=at,
                    name="werne-collect-appletvs",
                )
            if "ipads" in fleets and not sharded:
                jobs["ipads"] = start_daemon(
                    times.timed_call, "ipads", collect_ipads, config, inventory, db, progress, sweep, now=at,
                    times=times, name="werne-collect-ipads",
                )
            if config.compliance.shards > 1:
                # Here, not at the top: the job queue is the postgres extra's, and one server never needs it.
                from compliance.shards import collect_and_judge_in_shards

                devices, results = collect_and_judge_in_shards(
                    config, db, inventory, baselines, waivers, fleets, run_id, at, jobs,
                    sweep=sweep, hosts=hosts, times=times)
            else:
                devices = fleet_devices(db, config, fleets, jobs, times)
                results = judge(config, db, inventory, baselines, waivers, fleets, devices, at, times)
            by_id = {d.device: d for d in devices}
            if progress is not None:
                progress(Progress("all", len(devices), len(devices), message="storing results"))
            with times.step("store"):
                run = history.complete_run(db, run_id, results, by_id, rules_snapshot(baselines, fleets))
        except KeyboardInterrupt:
            history.fail_run(db, run_id, "interrupted", status="interrupted")
            write_run_metrics(config, status_families(scope, started, datetime.now(UTC), False),
                              "werne_compliance_status")
            raise
        except BaseException as e:
            history.fail_run(db, run_id, f"{e.__class__.__name__}: {e}")
            write_run_metrics(config, status_families(scope, started, datetime.now(UTC), False),
                              "werne_compliance_status")
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
    with times.step("audit"):
        audit.record(
            db, "compliance.run", scope, {"run": run.id, "counts": s["counts"], "record_hash": run.record_hash}
        )
    with times.step("alerts"):
        summary.new_alerts = len(alert_new_findings(config, db, run.id, [r for f in fleets for r in
                                                                         baselines.for_fleet(f)]))
    with times.step("metrics"):
        write_run_metrics(config, result_families(db, scope, s, results, baselines), "werne_compliance")
        write_run_metrics(config, status_families(scope, run.started_at, summary.finished_at, True),
                          "werne_compliance_status")
    if config.compliance.signing_key_file is not None:
        from compliance.signing import sign_run_head

        with times.step("signing"):
            summary.signing_problem = sign_run_head(config.compliance.signing_key_file, db, run.id)
    if config.compliance.report_dir is not None:
        with times.step("report"):
            out = config.compliance.report_dir / f"compliance-{run.id}.html"
            write_report(db, run.id, "html", out)
            write_output(config.compliance.report_dir / "latest.html", out.read_bytes())
        summary.report_path = out
    summary.timings = times.finish()
    history.store_timings(db, run.id, summary.timings)
    return summary
