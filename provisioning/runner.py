"""A provisioning run: host-key gate, ansible-runner with dict arguments, live progress, the stored run.

Flow of `provision()`:
  1. select the laptops and load the private key (bad input: exit 2, nothing stored);
  2. take the state dir's provisioning lock and mark runs left 'running' by a killed process
     'interrupted' (with the lock held, no live run can be 'running');
  3. check every host's key against the pinned known_hosts (paramiko, in parallel): a changed or
     unknown key, or an unreachable host, is refused here with its reason;
  4. store a ProvisioningRun ('running') and run the playbook through ansible_runner on the rest,
     with artifacts in <state_dir>/artifacts/<run id>/ and ssh pinned to the same known_hosts
     (StrictHostKeyChecking=yes), so a key that changes between 3 and 4 is refused by ssh too;
  5. turn runner events into progress callbacks and, at the end, into one HostOutcome per host;
  6. store the outcomes and the final status ('ok' / 'failed', or 'interrupted' on a signal).
"""

from __future__ import annotations

import difflib
import fcntl
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from core.config import REPO_ROOT, Config
from core.db import Database
from core.errors import LockHeldError
from core.inventory import Inventory
from core.models import ProvisioningHostResult, ProvisioningRun, utcnow
from provisioning.errors import AnsibleRunError, ProvisioningError, ProvisioningInterrupted
from provisioning.known_hosts import PinnedHostKeys
from provisioning.models import HostCheck, HostOutcome, Progress, ProvisioningReport, TaskChange
from provisioning.preflight import (
    HOST_KEY_CHANGED,
    check_many,
    known_hosts_path,
    load_private_key,
    select_targets,
)

PLAYBOOK_DIR = REPO_ROOT / "playbooks"
# The playbook's last task on every host (playbooks/laptop.yml): a host reporting it is done.
BASELINE_DONE_TASK = "Record the applied baseline"
HOST_KEY_UNKNOWN_PROVISION = "host key unknown: run `werne laptop preflight --accept-new` after verifying it"
REASON_MAX = 300

ProgressCallback = Callable[[Progress], None]

# The child's environment is written to the artifacts (artifacts/<id>/command). Only what Ansible
# needs goes in, so secrets held in environment variables (WERNE_*_KEY, tokens) never land there.
_ENV_KEEP = {
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "TZ",
    "TERM",
    "AD_HOC_COMMAND_ID",
    "ORIGINAL_STDOUT_CALLBACK",
    "VIRTUAL_ENV",
}
_ENV_KEEP_PREFIXES = ("ANSIBLE_", "RUNNER_", "AWX_", "LC_")


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


def scrub_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in _ENV_KEEP or k.startswith(_ENV_KEEP_PREFIXES)}


def ansible_envvars(config: Config, pipelining: bool | None = None) -> dict[str, str]:
    """Environment for ansible-playbook: pinned host keys, pipelining, key, venv on PATH.

    Also used by bench/provision.py so that plain ansible-playbook runs with the same settings.
    """
    known_hosts = known_hosts_path(config)
    ssh_args = [
        "-C",
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60s",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
    ]
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # Ansible splits ssh_args with shlex, so a state dir with spaces stays one argument.
        "ANSIBLE_SSH_ARGS": " ".join(shlex.quote(a) for a in ssh_args),
        "ANSIBLE_PIPELINING": str(config.provisioning.pipelining if pipelining is None else pipelining),
        "ANSIBLE_PRIVATE_KEY_FILE": str(config.ssh_key_file),
        "ANSIBLE_REMOTE_USER": config.ssh.user,
        "ANSIBLE_TIMEOUT": str(int(max(1, config.ssh.connect_timeout))),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_ROLES_PATH": str(PLAYBOOK_DIR / "roles"),
        # ansible_runner looks up ansible-playbook on PATH: the venv's bin comes first.
        "PATH": venv_bin + (os.pathsep + path if path else ""),
    }


def ansible_extravars(config: Config) -> dict[str, Any]:
    return {"nftables_firewall_admin_networks": list(config.provisioning.admin_networks)}


# ---------------------------------------------------------------- events -> outcomes ----------


def _after_header(d: dict[str, Any]) -> str:
    # The template module names its rendered temp file here; the template's name says more.
    header = str(d.get("after_header") or "after")
    return f"template {Path(header).name}" if "/.ansible/tmp/" in header else header


def render_diff(diff: Any) -> str:
    """Ansible's diff result (one dict or a list of them) as unified-diff text."""
    diffs = diff if isinstance(diff, list) else [diff]
    out: list[str] = []
    for d in diffs:
        if not isinstance(d, dict):
            continue
        if d.get("prepared"):
            out.append(str(d["prepared"]).rstrip("\n"))
        before, after = d.get("before"), d.get("after")
        if isinstance(before, str) and isinstance(after, str):
            out += [
                line.rstrip("\n")
                for line in difflib.unified_diff(
                    before.splitlines(True),
                    after.splitlines(True),
                    fromfile=str(d.get("before_header") or "before"),
                    tofile=_after_header(d),
                )
            ]
        elif isinstance(before, dict) and isinstance(after, dict):
            path = after.get("path") or before.get("path") or ""
            for key in sorted(set(before) | set(after)):
                if key != "path" and before.get(key) != after.get(key):
                    out.append(f"{path}: {key}: {before.get(key)!r} -> {after.get(key)!r}")
    return "\n".join(line for line in out if line)


def _failure_message(res: dict[str, Any]) -> str:
    msg = str(res.get("msg") or "")
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("failed"):
            msg = str(item.get("msg") or msg)
            break
    lines = [ln.strip() for ln in str(res.get("stderr") or "").splitlines() if ln.strip()]
    if lines:
        # Tools such as nft and sshd -t print the error first and then context (the line, carets).
        detail = next((ln for ln in lines if "error" in ln.lower()), lines[0])
        msg = f"{msg}: {detail}" if msg else detail
    return msg or "failed"


# What ssh says when the pinned key does not match (OpenSSH's warning box, then its verdict).
_SSH_KEY_MISMATCH = ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed")
_SSH_FAILURES = (
    "Connection timed out",
    "No route to host",
    "Connection refused",
    "Permission denied",
    "Could not resolve hostname",
    "Connection reset",
    "Connection closed",
)


def unreachable_reason(msg: str) -> str:
    """One line from Ansible's (long, multi-line) unreachable message."""
    if any(marker in msg for marker in _SSH_KEY_MISMATCH):
        return f"unreachable: {HOST_KEY_CHANGED} (ssh refused the pinned key)"
    for line in msg.splitlines():
        if any(f in line for f in _SSH_FAILURES):
            return _one_line(f"unreachable: ssh: {line.strip()}")
    return _one_line(f"unreachable: {msg or 'cannot connect'}")


@dataclass
class _HostTrack:
    changes: list[TaskChange] = field(default_factory=list)
    reason: str | None = None
    done: bool = False
    changed: bool = False


class EventCollector:
    """Folds ansible-runner events into per-host changes and reasons, and reports live progress."""

    def __init__(self, hosts: list[str], progress: ProgressCallback | None,
                 report_tasks: frozenset[str] = frozenset()):
        self.hosts = {h: _HostTrack() for h in hosts}
        # Tasks whose stdout is wanted per host (e.g. the WireGuard public key the laptop made).
        self.report_tasks = report_tasks
        self.reported: dict[str, dict[str, str]] = {}
        self.progress_cb = progress
        self.progress = Progress(total=len(hosts))
        self.stats: dict[str, dict[str, int]] | None = None
        self._lock = threading.Lock()

    def _track(self, host: str) -> _HostTrack:
        return self.hosts.setdefault(host, _HostTrack())

    def _recount(self, host: str | None, task: str | None) -> None:
        tracks = self.hosts.values()
        self.progress.done = sum(t.done for t in tracks)
        self.progress.changed = sum(t.changed for t in tracks)
        self.progress.host, self.progress.task = host, task
        if self.progress_cb is not None:
            self.progress_cb(self.progress.model_copy())

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        with self._lock:
            if kind == "playbook_on_stats":
                self.stats = {
                    k: dict(data.get(k) or {})
                    for k in (
                        "ok",
                        "changed",
                        "failures",
                        "dark",
                        "skipped",
                        "processed",
                        "ignored",
                        "rescued",
                    )
                }
                for t in self.hosts.values():
                    t.done = True
                self._recount(None, None)
                return True
            host = data.get("host")
            if not host or kind not in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
                return True
            task = str(data.get("task") or "")
            track = self._track(host)
            res = data.get("res") or {}
            if kind == "runner_on_ok":
                if res.get("changed"):
                    track.changed = True
                    diff = res.get("diff")
                    if diff is None and res.get("results"):
                        diff = [
                            r.get("diff") for r in res["results"] if isinstance(r, dict) and r.get("changed")
                        ]
                        diff = [d for ds in diff for d in (ds if isinstance(ds, list) else [ds]) if d]
                    track.changes.append(
                        TaskChange(
                            task=task, role=data.get("role") or None, diff=render_diff(diff) if diff else ""
                        )
                    )
                if task == BASELINE_DONE_TASK:
                    track.done = True
                if task in self.report_tasks:
                    self.reported.setdefault(host, {})[task] = str(res.get("stdout") or "")
            elif kind == "runner_on_failed":
                if data.get("ignore_errors"):
                    return True
                track.reason = _one_line(f"task '{task}' failed: {_failure_message(res)}")
                track.done = True
                self.progress.failed = sum(
                    1 for t in self.hosts.values() if t.reason and not t.reason.startswith("unreachable")
                )
            else:
                track.reason = unreachable_reason(str(res.get("msg") or ""))
                track.done = True
                self.progress.unreachable = sum(
                    1 for t in self.hosts.values() if t.reason and t.reason.startswith("unreachable")
                )
            self._recount(host, task)
        return True

    def outcomes(self) -> dict[str, HostOutcome]:
        stats = self.stats or {}
        out: dict[str, HostOutcome] = {}
        for host, track in self.hosts.items():

            def n(key: str, h: str = host) -> int:
                return int((stats.get(key) or {}).get(h, 0))

            ok, changed, failures, dark = n("ok"), n("changed"), n("failures"), n("dark")
            if dark:
                outcome = "unreachable"
            elif failures:
                outcome = "failed"
            elif host not in (stats.get("processed") or {}):
                outcome = "failed"
                track.reason = track.reason or "Ansible did not run on this host (not in its inventory?)"
            else:
                outcome = "changed" if changed else "ok"
            out[host] = HostOutcome(
                host=host,
                outcome=outcome,
                ok=ok,
                changed=changed,
                failed=failures,
                unreachable=dark,
                reason=track.reason if outcome in ("failed", "unreachable") else None,
                changes=track.changes,
            )
        return out


# ---------------------------------------------------------------- running ansible --------------


@dataclass
class AnsibleResult:
    """What one ansible-runner invocation left: its status, rc, artifacts and per-host outcomes."""

    status: str
    rc: int | None
    artifact_dir: str
    outcomes: dict[str, HostOutcome]
    reported: dict[str, dict[str, str]] = field(default_factory=dict)


@contextmanager
def _cancel_on_signal() -> Iterator[Callable[[], bool]]:
    """SIGINT/SIGTERM ask ansible-runner to stop the playbook; the old handlers come back after."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event.is_set
        return

    def _handler(_signum: int, _frame: Any) -> None:
        event.set()

    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event.is_set
    finally:
        for s, h in old.items():
            signal.signal(s, h)


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
) -> AnsibleResult:
    """Run the configured playbook on `hosts` through ansible-runner; failures are results, not errors."""
    from ansible_runner import Runner, RunnerConfig

    playbook = PLAYBOOK_DIR / config.provisioning.playbook
    if not playbook.is_file():
        raise ProvisioningError(f"playbook {playbook} does not exist")
    private_data_dir.mkdir(parents=True, exist_ok=True)
    collector = EventCollector(hosts, progress, report_tasks)
    rc_config = RunnerConfig(
        private_data_dir=str(private_data_dir),
        project_dir=str(PLAYBOOK_DIR),
        playbook=playbook.name,
        inventory=str(inventory_file),
        limit=",".join(hosts),
        forks=forks or config.provisioning.forks,
        envvars=ansible_envvars(config, pipelining),
        extravars={**ansible_extravars(config), **(extravars or {})},
        # A fixed option string, nothing from the user in it (RunnerConfig only takes a string here).
        cmdline="--check --diff" if check_mode else None,
        ident=ident,
        quiet=True,
        timeout=config.provisioning.timeout_s,
        suppress_env_files=True,
    )
    try:
        rc_config.prepare()
    except Exception as e:  # ansible_runner raises ConfigurationError and plain OSErrors here
        raise AnsibleRunError(f"cannot prepare the Ansible run: {e}") from None
    rc_config.env = scrub_env(rc_config.env)
    with _cancel_on_signal() as cancelled:
        runner = Runner(rc_config, event_handler=collector, cancel_callback=cancelled)
        runner.run()
    artifact_dir = str(rc_config.artifact_dir)
    if runner.status == "canceled":
        return AnsibleResult("canceled", runner.rc, artifact_dir, collector.outcomes(), collector.reported)
    if collector.stats is None:
        tail = ""
        try:
            lines = [
                ln
                for ln in Path(artifact_dir, "stdout").read_text(errors="replace").splitlines()
                if ln.strip()
            ]
            tail = _one_line(" ".join(lines[-2:]))
        except OSError:
            pass
        if runner.status == "timeout":
            tail = f"the run took longer than {config.provisioning.timeout_s} s"
        raise AnsibleRunError(
            f"ansible-playbook stopped before reporting on the hosts "
            f"(status {runner.status}, rc {runner.rc}): {tail or 'no output'}"
        )
    return AnsibleResult(runner.status, runner.rc, artifact_dir, collector.outcomes(), collector.reported)


# ---------------------------------------------------------------- the stored run ---------------


@contextmanager
def provisioning_lock(state_dir: Path) -> Iterator[None]:
    """One provisioning run per state dir at a time (so a 'running' row under the lock is stale)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fh = open(state_dir / "provision.lock", "w")  # noqa: SIM115 - held for the whole run
    except OSError as e:
        raise ProvisioningError(f"cannot use state directory {state_dir}: {e.strerror}") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(
                f"another provisioning run is active (lock {state_dir / 'provision.lock'})"
            ) from None
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
    from provisioning.vpn.ops import provision_extravars

    return provision_extravars(config, db, inventory, hosts)


def _vpn_report_tasks() -> frozenset[str]:
    from provisioning.vpn.ops import PUBLIC_KEY_TASK

    return frozenset({PUBLIC_KEY_TASK})


def _admit_vpn_keys(config: Config, db: Database, inventory: Inventory, result: AnsibleResult,
                    outcomes: dict[str, HostOutcome], actor: str) -> None:
    """Admit the public keys the laptops reported to the gateway; a laptop whose key was refused,
    or all of them when the gateway cannot be reached, fails with the reason (its old key, if any,
    keeps working: the gateway is changed first and the database only after it took the change)."""
    from core.errors import WerneError
    from provisioning.vpn.ops import PUBLIC_KEY_TASK, register_client_keys

    reported = {h: r.get(PUBLIC_KEY_TASK) for h, r in result.reported.items()
                if outcomes.get(h) is not None and outcomes[h].outcome in ("ok", "changed")}
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
) -> ProvisioningReport:
    """Provision the selected laptops (or, with check_mode, show what would change) and store the run."""
    from core.audit import current_actor, record

    targets = select_targets(config, inventory, names, all_hosts)
    load_private_key(config.ssh_key_file)  # fail early, with one line, on an unusable key
    actor = actor or current_actor()
    with provisioning_lock(config.state_dir):
        interrupted = mark_stale_runs(db)
        pinned = PinnedHostKeys(known_hosts_path(config))
        gate = check_many(targets, config, pinned, None, unknown_reason=HOST_KEY_UNKNOWN_PROVISION)
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
        allowed = [c.host for c, _ in gate if c.ok]
        progress = _with_refused(progress, list(outcomes.values()))
        if progress is not None and outcomes:
            progress(Progress(total=len(targets)).model_copy(update=_refused_counts(list(outcomes.values()))))
        status = "ok"
        artifact_dir = str(private_data_dir / "artifacts" / str(run_id))
        try:
            if allowed:
                vpn_vars = _vpn_extravars(config, db, inventory, allowed)
                result = run_playbook(
                    config,
                    inventory.hosts_file,
                    allowed,
                    private_data_dir,
                    str(run_id),
                    check_mode=check_mode,
                    progress=progress,
                    extravars=vpn_vars,
                    report_tasks=_vpn_report_tasks() if vpn_vars else frozenset(),
                )
                artifact_dir = result.artifact_dir
                outcomes.update(result.outcomes)
                if result.status == "canceled":
                    status = "interrupted"
                elif vpn_vars and not check_mode:
                    _admit_vpn_keys(config, db, inventory, result, outcomes, actor)
        except BaseException:
            _finish(db, run_id, "error", {}, artifact_dir)
            raise
        ordered = [outcomes[t.name] for t in targets if t.name in outcomes]
        if status != "interrupted":
            status = "ok" if all(o.outcome in ("ok", "changed") for o in ordered) else "failed"
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
            check_mode=check_mode,  # type: ignore[arg-type]
            artifact_dir=artifact_dir,
            interrupted_runs=interrupted,
            hosts=ordered,
        )


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
