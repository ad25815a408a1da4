"""A provisioning run: host-key gate, ansible-runner with dict arguments, live progress, the stored run.

Flow of `provision()`:
  1. select the laptops and load the private key (bad input: exit 2, nothing stored);
  2. take the state dir's provisioning lock and mark runs left 'running' by a killed process
     'interrupted' (with the lock held, no live run can be 'running');
  3. check every host's key against the pinned known_hosts (paramiko, in parallel): a changed or
     unknown key, or an unreachable host, is refused here with its reason;
  4. store a ProvisioningRun ('running') and run the playbook through provisioning.ansible on the rest,
     with artifacts in <state_dir>/artifacts/<run id>/ and ssh pinned to the same known_hosts
     (StrictHostKeyChecking=yes), so a key that changes between 3 and 4 is refused by ssh too;
  5. turn runner events into progress callbacks and, at the end, into one HostOutcome per host;
  6. store the outcomes and the final status ('ok' / 'failed', or 'interrupted' on a signal).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select, update

from core.audit import current_actor, record
from core.config import Config
from core.db import Database
from core.errors import WerneError
from core.inventory import Inventory
from core.locks import file_lock
from core.models import ProvisioningHostResult, ProvisioningRun, utcnow
from provisioning import ansible
from provisioning.disk import escrow as disk_escrow
from provisioning.errors import AnsibleRunError, ProvisioningError, ProvisioningInterrupted
from provisioning.home.models import KIND_PROVISION
from provisioning.home.pending import queue_for_later
from provisioning.known_hosts import PinnedHostKeys
from provisioning.models import HostCheck, HostOutcome, Progress, ProvisioningReport, TaskChange
from provisioning.nodes import split_hosts
from provisioning.preflight import check_many, known_hosts_path, load_private_key, select_targets
from provisioning.vpn.ops import PUBLIC_KEY_TASK, provision_extravars, register_client_keys

# The playbook's last task on every host (playbooks/laptop.yml): a host reporting it is done.
BASELINE_DONE_TASK = "Record the applied baseline"
HOST_KEY_UNKNOWN_PROVISION = "host key unknown: run `werne laptop preflight --accept-new` after verifying it"

ProgressCallback = ansible.ProgressCallback


def ansible_extravars(config: Config) -> dict[str, Any]:
    return {"nftables_firewall_admin_networks": list(config.provisioning.admin_networks)}


def host_outcome(r: ansible.HostResult) -> HostOutcome:
    """A host's part of the Ansible run as the stored and rendered HostOutcome."""
    return HostOutcome(
        host=r.host,
        outcome=r.outcome,
        ok=r.ok,
        changed=r.changed,
        failed=r.failed,
        unreachable=r.unreachable,
        reason=r.reason,
        changes=[TaskChange(task=c.task, role=c.role, diff=c.diff) for c in r.changes],
    )


def run_playbook(
    config: Config,
    inventory_file: Path,
    hosts: list[str],
    private_data_dir: Path,
    ident: str,
    check_mode: bool = False,
    progress: ProgressCallback | None = None,
    forks: int | None = None,
    pipelining: bool | None = None,
    extravars: dict[str, Any] | None = None,
    report_tasks: frozenset[str] = frozenset(),
) -> ansible.AnsibleResult:
    """Run the configured baseline playbook on `hosts`; failures are results, not errors.

    A check run also shows diffs; SIGINT/SIGTERM cancel the run (status "canceled"). Raises
    AnsibleRunError when Ansible stops before it reports on the hosts.
    """
    result = ansible.run_playbook(
        config,
        config.provisioning.playbook,
        inventory=inventory_file,
        hosts=hosts,
        private_data_dir=private_data_dir,
        known_hosts=known_hosts_path(config),
        forks=forks or config.provisioning.forks,
        timeout_s=config.provisioning.timeout_s,
        ident=ident,
        extravars={**ansible_extravars(config), **(extravars or {})},
        check_mode=check_mode,
        diff=check_mode,
        pipelining=pipelining,
        report_tasks=report_tasks,
        done_task=BASELINE_DONE_TASK,
        progress=progress,
        cancel_on_signal=True,
        via_nodes=True,
    )
    if result.status == "canceled" or result.complete:
        return result
    tail = result.stdout_tail()
    if result.status == "timeout":
        tail = f"the run took longer than {config.provisioning.timeout_s} s"
    raise AnsibleRunError(
        f"ansible-playbook stopped before reporting on the hosts "
        f"(status {result.status}, rc {result.rc}): {tail or 'no output'}"
    )


# ---------------------------------------------------------------- the stored run ---------------


@contextmanager
def provisioning_lock(state_dir: Path) -> Iterator[None]:
    """One provisioning run per state dir at a time (so a 'running' row under the lock is stale)."""
    with file_lock(state_dir / "provision.lock", what="provisioning run", unusable_error=ProvisioningError):
        yield


def mark_stale_runs(db: Database) -> list[int]:
    """Runs still 'running' (their process was killed) become 'interrupted'; returns their ids."""
    with db.session() as s:
        ids = list(s.scalars(select(ProvisioningRun.id).where(ProvisioningRun.status == "running")))
        if ids:
            s.execute(
                update(ProvisioningRun)
                .where(ProvisioningRun.id.in_(ids))
                .values(status="interrupted", finished_at=utcnow())
            )
    return ids


def _gate_outcome(check: HostCheck) -> HostOutcome:
    unreachable = check.checks.get("reachable") == "failed"
    return HostOutcome(
        host=check.host,
        outcome="unreachable" if unreachable else "failed",
        unreachable=int(unreachable),
        failed=int(not unreachable),
        reason=check.reason,
    )


def _refused_counts(refused: list[HostOutcome]) -> dict[str, int]:
    unreachable = sum(o.outcome == "unreachable" for o in refused)
    return {"done": len(refused), "unreachable": unreachable, "failed": len(refused) - unreachable}


def _with_refused(progress: ProgressCallback | None, refused: list[HostOutcome]) -> ProgressCallback | None:
    """Progress over all selected hosts: the ones refused before Ansible count as done already."""
    if progress is None or not refused:
        return progress
    extra = _refused_counts(refused)

    def report(p: Progress) -> None:
        progress(
            p.model_copy(
                update={
                    "total": p.total + len(refused),
                    "done": p.done + extra["done"],
                    "failed": p.failed + extra["failed"],
                    "unreachable": p.unreachable + extra["unreachable"],
                }
            )
        )

    return report


def _vpn_extravars(config: Config, db: Database, inventory: Inventory, hosts: list[str]) -> dict[str, Any]:
    """The wireguard_client role's vars from the VPN state ({} while no gateway was ever applied,
    and revoked laptops are left out: a provision run never lets them back in)."""
    if not inventory.gateways:
        return {}
    return provision_extravars(config, db, inventory, hosts)


def _vpn_report_tasks() -> frozenset[str]:
    return frozenset({PUBLIC_KEY_TASK})


def _admit_vpn_keys(config: Config, db: Database, inventory: Inventory, result: ansible.AnsibleResult,
                    outcomes: dict[str, HostOutcome], actor: str) -> None:
    """Admit the public keys the laptops reported to the gateway; a laptop whose key was refused,
    or all of them when the gateway cannot be reached, fails with the reason (its old key, if any,
    keeps working: the gateway is changed first and the database only after it took the change)."""
    # register_client_keys takes out (pops) the hosts it skips; the rest are marked failed below on an error.
    reported: dict[str, str | None] = {h: r.reported[PUBLIC_KEY_TASK] for h, r in result.outcomes.items()
                if PUBLIC_KEY_TASK in r.results
                and outcomes.get(h) is not None and outcomes[h].outcome in ("ok", "changed")}
    if not reported:
        return
    try:
        report = register_client_keys(config, db, inventory, reported, actor=actor)
    except WerneError as e:
        for h in reported:
            outcomes[h] = outcomes[h].model_copy(update={"outcome": "failed", "reason": f"VPN: {e}"})
        return
    for peer in report.hosts:
        if peer.outcome in ("failed", "unreachable") and peer.host in outcomes:
            outcomes[peer.host] = outcomes[peer.host].model_copy(
                update={"outcome": "failed", "reason": f"VPN key not admitted: {peer.reason}"})


def provision(
    config: Config,
    db: Database,
    inventory: Inventory,
    names: list[str] | tuple[str, ...] = (),
    all_hosts: bool = False,
    check_mode: bool = False,
    progress: ProgressCallback | None = None,
    actor: str | None = None,
    queue_unreachable: bool = True,
) -> ProvisioningReport:
    """Provision the selected laptops (or, with check_mode, show what would change) and store the run.

    A home-office laptop that cannot be reached (switched off, away) is not a failure: its run is
    queued (outcome "queued") for `werne laptop watch` to apply when it comes online, unless
    `queue_unreachable` is False (the watcher itself) or this is a check run."""
    targets = select_targets(config, inventory, names, all_hosts)
    load_private_key(config.ssh_key_file)  # fail early, with one line, on an unusable key
    actor = actor or current_actor()
    with provisioning_lock(config.state_dir):
        interrupted = mark_stale_runs(db)
        pinned = PinnedHostKeys(known_hosts_path(config))
        # Laptops behind an execution node are out of this machine's reach: their node's ssh checks
        # their pinned keys (strictly) when it runs the playbook.
        by_node = split_hosts(config, inventory.hosts_file, [t.name for t in targets])
        via_node = [h for name, hs in by_node.items() if name is not None for h in hs]
        gate = check_many([t for t in targets if t.name not in via_node], config, pinned, None,
                          unknown_reason=HOST_KEY_UNKNOWN_PROVISION)
        with db.session() as s:
            run = ProvisioningRun(
                actor=actor,
                playbook=config.provisioning.playbook,
                check_mode=check_mode,
                hosts=[t.name for t in targets],
                status="running",
            )
            s.add(run)
            s.flush()
            run_id = run.id
            private_data_dir = config.state_dir / "artifacts" / str(run_id)
            run.artifact_dir = str(private_data_dir / "artifacts" / str(run_id))
        outcomes: dict[str, HostOutcome] = {c.host: _gate_outcome(c) for c, _ in gate if not c.ok}
        allowed = [c.host for c, _ in gate if c.ok] + via_node
        progress = _with_refused(progress, list(outcomes.values()))
        if progress is not None and outcomes:
            progress(Progress(total=len(targets)).model_copy(update=_refused_counts(list(outcomes.values()))))
        status: Literal["ok", "failed", "interrupted"] = "ok"
        artifact_dir = str(private_data_dir / "artifacts" / str(run_id))
        try:
            if allowed:
                vpn_vars = _vpn_extravars(config, db, inventory, allowed)
                identities = {c.host: c.host_key_fingerprint for c, _ in gate}
                disk_vars = disk_escrow.provision_extravars(config, db, allowed, identities, check_mode)
                result = run_playbook(
                    config,
                    inventory.hosts_file,
                    allowed,
                    private_data_dir,
                    str(run_id),
                    check_mode=check_mode,
                    progress=progress,
                    extravars={**vpn_vars, **disk_vars},
                    report_tasks=(_vpn_report_tasks() if vpn_vars else frozenset())
                    | ({disk_escrow.RECOVERY_KEY_TASK} if disk_vars else frozenset()),
                )
                artifact_dir = result.artifact_dir
                outcomes.update({h: host_outcome(r) for h, r in result.outcomes.items()})
                if result.status == "canceled":
                    status = "interrupted"
                elif vpn_vars and not check_mode:
                    _admit_vpn_keys(config, db, inventory, result, outcomes, actor)
                if disk_vars and not check_mode and status != "interrupted":
                    _record_recovery_keys(db, result, actor)
        except BaseException:
            _finish(db, run_id, "error", {}, artifact_dir)
            raise
        if queue_unreachable and not check_mode and status != "interrupted":
            _queue_unreachable(db, inventory, outcomes, actor, run_id)
        ordered = [outcomes[t.name] for t in targets if t.name in outcomes]
        if status != "interrupted":
            status = "ok" if all(o.outcome in ("ok", "changed", "queued") for o in ordered) else "failed"
        _finish(db, run_id, status, {o.host: o for o in ordered}, artifact_dir)
        record(
            db,
            "laptop.provision.check" if check_mode else "laptop.provision",
            ",".join(t.name for t in targets),
            {"run_id": run_id, "status": status, "outcomes": {o.host: o.outcome for o in ordered}},
            actor=actor,
        )
        if status == "interrupted":
            raise ProvisioningInterrupted(
                f"provisioning run {run_id} interrupted; artifacts in {artifact_dir}"
            )
        return ProvisioningReport(
            run_id=run_id,
            status=status,
            check_mode=check_mode,
            artifact_dir=artifact_dir,
            interrupted_runs=interrupted,
            hosts=ordered,
        )


def _record_recovery_keys(db: Database, result: ansible.AnsibleResult, actor: str) -> None:
    """What each laptop's test unlock said, stored for the rule lx-recovery-key and in the audit trail."""
    said = {h: r.results[disk_escrow.RECOVERY_KEY_TASK] for h, r in result.outcomes.items()
            if disk_escrow.RECOVERY_KEY_TASK in r.results}
    for host, line in sorted(disk_escrow.record_results(db, said).items()):
        record(db, "laptop.recovery_key.check", host, {"result": line}, actor=actor)


def _queue_unreachable(db: Database, inventory: Inventory, outcomes: dict[str, HostOutcome], actor: str,
                       run_id: int) -> None:
    """Home-office laptops this run could not reach get the run queued (one open item per laptop)."""
    off = {h: o.reason or "unreachable" for h, o in outcomes.items() if o.outcome == "unreachable"}
    for h, reason in queue_for_later(db, inventory, KIND_PROVISION, actor, off, f"run {run_id}",
                                     "applies it").items():
        outcomes[h] = outcomes[h].model_copy(update={"outcome": "queued", "reason": reason})


def _finish(
    db: Database, run_id: int, status: str, outcomes: dict[str, HostOutcome], artifact_dir: str
) -> None:
    with db.session() as s:
        run = s.get(ProvisioningRun, run_id)
        if run is None:  # pragma: no cover - the row was committed above
            return
        run.status = status
        run.finished_at = utcnow()
        run.artifact_dir = artifact_dir
        for o in outcomes.values():
            s.add(
                ProvisioningHostResult(
                    run_id=run_id,
                    host=o.host,
                    outcome=o.outcome,
                    ok=o.ok,
                    changed=o.changed,
                    failed=o.failed,
                    unreachable=o.unreachable,
                    reason=o.reason,
                )
            )
