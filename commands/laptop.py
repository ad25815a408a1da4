"""`werne laptop`: pre-flight and provision the home-office laptops over SSH, the work that waits
for laptops to come online, and the watcher that catches them up."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from commands import render
from commands.context import AppContext, finish, pass_app
from commands.options import hosts_argument, json_option

if TYPE_CHECKING:
    from provisioning.home.watch import Step
    from provisioning.models import PreflightReport, Progress, ProvisioningReport

F = TypeVar("F", bound=Callable[..., Any])
PENDING_COLUMNS = (render.Col(5, right=True), render.Col(10), render.Col(11), render.Col(8), render.Col())


@click.group()
def laptop() -> None:
    """Check and provision the home-office laptops over SSH (pre-flight, then Ansible).

    Example:

        werne laptop preflight --all --accept-new
    """


def _preflight_lines(report: PreflightReport) -> None:
    mark = {"ok": "ok", "failed": "FAIL", "not checked": "-"}
    rows = []
    for h in report.hosts:
        c = h.checks
        os_cell = f"{mark[c['os']]} {h.os}" if h.os else mark[c["os"]]
        disk = f"{mark[c['disk']]} {h.free_disk_mb} MB" if h.free_disk_mb is not None else mark[c["disk"]]
        rows.append((h.host, h.address, mark[c["reachable"]], mark[c["host_key"]], mark[c["login"]],
                     mark[c["sudo"]], os_cell, mark[c["python3"]], disk, "ok" if h.ok else "FAILED"))
    render.rich_table(("host", "address", "reachable", "host key", "login", "sudo", "OS", "python3", "disk",
                       "result"), rows)
    for h in report.hosts:
        if h.host_key_recorded:
            render.line(f"{h.host}: pinned new host key {h.host_key_fingerprint}")
    for h in report.failed:
        render.line(f"{h.host}: {h.reason}")
    render.line(f"{len(report.hosts)} checked, {len(report.failed)} failed")


@laptop.command("preflight")
@hosts_argument()
@click.option("--all", "all_hosts", is_flag=True, help="Check every laptop in the inventory.")
@click.option("--accept-new", is_flag=True,
              help="Pin the host key of laptops seen for the first time (compare the fingerprints first).")
@json_option("the results")
@pass_app
def laptop_preflight(app: AppContext, hosts: tuple[str, ...], all_hosts: bool, accept_new: bool,
                     as_json: bool) -> None:
    """Check that laptops can be provisioned: reachable, pinned host key, key login, sudo, OS, python3, disk.

    All hosts are checked at once. Each failing host gets one line with its reason; the exit code
    is 1 if any host fails. A changed host key is never accepted.

    Example:

        werne laptop preflight --all --accept-new
        werne laptop preflight lap01 lap02 --json
    """
    from provisioning.preflight import run_preflight

    report = run_preflight(app.config, app.inventory, hosts, all_hosts, accept_new,
                           db=app.db if accept_new else None)
    if as_json:
        render.json_out({"ok": report.ok, "known_hosts": report.known_hosts,
                         "hosts": [{**h.model_dump(), "ok": h.ok} for h in report.hosts]})
    else:
        _preflight_lines(report)
    finish(report)


def _provision_lines(report: ProvisioningReport, check_mode: bool) -> None:
    # The reasons follow the table, one line per host, so the table never wraps them.
    render.rich_table(("host", "outcome", "ok", "changed", "failed", "unreachable"),
                      [(h.host, h.outcome, h.ok, h.changed, h.failed, h.unreachable) for h in report.hosts])
    if check_mode:
        for h in report.hosts:
            if not h.changes:
                continue
            render.line(f"{h.host}: would change {len(h.changes)} task(s):")
            for c in h.changes:
                render.line(f"  - {c.role + ': ' if c.role else ''}{c.task}")
                for d in c.diff.splitlines():
                    render.line(f"      {d}")
    for h in report.hosts:
        if h.reason:
            render.line(f"{h.host}: {h.reason}")
    if report.interrupted_runs:
        render.line(f"marked interrupted: run(s) {', '.join(map(str, report.interrupted_runs))}")
    render.line(f"run {report.run_id}: {report.status}{' (check mode)' if check_mode else ''}; "
                f"artifacts in {report.artifact_dir}")


@laptop.command("provision")
@hosts_argument()
@click.option("--all", "all_hosts", is_flag=True, help="Provision every laptop in the inventory.")
@click.option("--check", "check_mode", is_flag=True,
              help="Ansible check mode with diff: show per host what would change; change nothing.")
@json_option("the summary")
@pass_app
def laptop_provision(app: AppContext, hosts: tuple[str, ...], all_hosts: bool, check_mode: bool,
                     as_json: bool) -> None:
    """Apply the laptop security baseline (playbooks/laptop.yml) through Ansible and store the run.

    Host keys are checked against the pinned known_hosts first; changed or unknown keys are
    refused. Progress goes to stderr, the per-host summary to stdout. Exit code 1 if any host
    failed or was unreachable; the other hosts still finish.

    Example:

        werne laptop provision --all --check
        werne laptop provision lap01 lap02
    """
    from provisioning.runner import provision

    def line(p: Progress) -> str:
        last = f"  {p.host}: {p.task}" if p.host else ""
        verb = "check" if check_mode else "provision"
        return (f"{verb}: {p.done}/{p.total} hosts done, {p.changed} changed, "
                f"{p.failed} failed, {p.unreachable} unreachable{last}")

    with render.live_status() as status:
        inventory = app.inventory  # a bad inventory stops here, before the database is opened
        report = provision(app.config, app.db, inventory, hosts, all_hosts, check_mode,
                           lambda p: status(line(p)))
    if as_json:
        render.json_out(report.model_dump())
    else:
        _provision_lines(report, check_mode)
    finish(report)


# ---- home office (issue 15): pending work, the watcher
@laptop.command("pending")
@hosts_argument()
@click.option("--all", "include_closed", is_flag=True, help="Also list items already done or failed.")
@json_option("the items")
@pass_app
def laptop_pending(app: AppContext, hosts: tuple[str, ...], include_closed: bool, as_json: bool) -> None:
    """List the work that waits for laptops to come online (queued provisioning runs, key rotations).

    Example:

        werne laptop pending
        werne laptop pending lap07 --all --json
    """
    from provisioning.home.pending import list_items

    items = list_items(app.db, list(hosts) or None, include_closed=include_closed)
    if as_json:
        render.json_out([i.to_dict() for i in items])
        return
    if not items:
        render.line("nothing pending")
    rows = []
    for i in items:
        extra = f"; last error: {i.last_error}" if i.last_error and i.state != "done" else ""
        done = f"; {i.result}" if i.result else ""
        rows.append((i.id, i.host, i.kind, i.state, f"since {i.created_at:%Y-%m-%d %H:%M} by {i.created_by}, "
                     f"attempts {i.attempts}{done}{extra}"))
    render.table(PENDING_COLUMNS, rows)


@laptop.command("watch")
@click.option("--once", is_flag=True, help="One poll and the catch-ups due now, then exit (for tests and cron).")
@pass_app
def laptop_watch(app: AppContext, once: bool) -> None:
    """Watch the VPN gateway's handshakes and catch up laptops that come online: collect their
    compliance facts when their evidence is old, apply pending provisioning runs and key rotations.

    Runs until stopped (deploy/werne-watch.service). Every step goes to the audit trail and stderr.

    Example:

        werne laptop watch
    """
    import threading

    from compliance.catchup import make_watcher
    from core.signals import Terminated

    def report(step: Step) -> None:
        render.to_stderr(f"{step.host}: {step.action} {step.outcome}{': ' + step.detail if step.detail else ''}")

    w = make_watcher(app.config, app.db, app.fresh_inventory)
    w.on_step = report
    if once:
        w.tick()
        return
    stop = threading.Event()
    try:
        w.run(stop)
    except (KeyboardInterrupt, Terminated):
        stop.set()
        raise


# ---- a lost, stolen or found laptop (issue 25): lock, erase, unlock; the recovery key
LOST_COLUMNS = (render.Col(12), render.Col(8), render.Col())


def _lost(app: AppContext, action: str, hosts: tuple[str, ...], yes: bool, max_hosts: int | None,
          reason: str, as_json: bool, revoke_vpn: bool = False) -> None:
    from provisioning.disk.lost import CONFIRMED, order
    from provisioning.preflight import select_targets

    inventory = app.inventory
    typed = None
    if action in CONFIRMED and not yes:
        select_targets(app.config, inventory, hosts, False)  # unknown laptops: exit 2 before asking
        verb = "ERASES (crypto-erase: the data can never be read again)" if action == "erase" else "LOCKS"
        typed = click.prompt(f"This {verb} {len(hosts)} laptop(s). Type the name(s) again to confirm",
                             default="", show_default=False)
    report = order(app.config, app.db, inventory, action, list(hosts), typed=typed, yes=yes, max_hosts=max_hosts,
                   revoke_vpn=revoke_vpn, reason=reason)
    if as_json:
        render.json_out(report.to_dict())
    else:
        render.table(LOST_COLUMNS, [(h.host, h.outcome, h.detail) for h in report.hosts])
    finish(report)


def _lost_options(fn: F) -> F:
    fn = json_option()(fn)
    fn = click.option("--reason", default="",
                      help="Why (kept in the audit trail), e.g. 'stolen, police report 123'.")(fn)
    fn = click.option("--max-hosts", type=click.IntRange(0, None), default=None,
                      help="Confirm more laptops than provisioning.blast_radius (must cover the count).")(fn)
    fn = click.option("--yes", is_flag=True, help="Do not ask; needs --max-hosts equal to the number of laptops.")(fn)
    return hosts_argument(required=True)(fn)


@laptop.command("lock")
@_lost_options
@pass_app
def laptop_lock(app: AppContext, hosts: tuple[str, ...], yes: bool, max_hosts: int | None, reason: str,
                as_json: bool) -> None:
    """Lock a lost laptop: no logins except the city's admin key, sessions ended, the VPN left up.

    A laptop that is off is queued; `werne laptop watch` locks it first when it comes online, and
    only if it shows the host key pinned now. Asks you to type the names again.

    Example:

        werne laptop lock lap07 --reason "left on the train"
    """
    _lost(app, "lock", hosts, yes, max_hosts, reason, as_json)


@laptop.command("erase")
@_lost_options
@click.option("--revoke-vpn", is_flag=True, help="Also revoke the laptop's VPN peer once the erase has run.")
@pass_app
def laptop_erase(app: AppContext, hosts: tuple[str, ...], yes: bool, max_hosts: int | None, reason: str,
                 as_json: bool, revoke_vpn: bool) -> None:
    """Crypto-erase a stolen laptop: its LUKS keyslots destroyed, then power off.

    A laptop that is off is queued; `werne laptop watch` erases it first when it comes online, and
    only if it shows the host key pinned now. Asks you to type the names again.

    Example:

        werne laptop erase lap07 --revoke-vpn --reason "stolen, police report 2026-1234"
    """
    _lost(app, "erase", hosts, yes, max_hosts, reason, as_json, revoke_vpn)


@laptop.command("unlock")
@hosts_argument(required=True)
@click.option("--max-hosts", type=click.IntRange(0, None), default=None,
              help="Confirm more laptops than provisioning.blast_radius (must cover the count).")
@click.option("--reason", default="", help="Why (kept in the audit trail).")
@json_option()
@pass_app
def laptop_unlock(app: AppContext, hosts: tuple[str, ...], max_hosts: int | None, reason: str, as_json: bool) -> None:
    """Undo `werne laptop lock` for a laptop that was found (queued if it is off).

    Example:

        werne laptop unlock lap07 --reason "found at the lost property office"
    """
    _lost(app, "unlock", hosts, False, max_hosts, reason, as_json)


@laptop.group("recovery-key")
def laptop_recovery_key() -> None:
    """The laptops' escrowed LUKS recovery keys.

    Example:

        werne laptop recovery-key show lap07
    """


@laptop_recovery_key.command("show")
@click.argument("host")
@pass_app
def laptop_recovery_key_show(app: AppContext, host: str) -> None:
    """Print one laptop's recovery key (users in recovery_keys.allowed_users, by real uid; audited).

    Example:

        werne laptop recovery-key show lap07
    """
    from provisioning.disk.escrow import show_recovery_key

    render.line(show_recovery_key(app.config, app.db, host))


@laptop_recovery_key.command("new-key")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Write a new escrow key to this file (mode 0600); name it in recovery_keys.key_file.")
def laptop_recovery_key_new_key(out_path: str) -> None:
    """Make a new escrow key file for the recovery keys (refuses to overwrite one).

    Example:

        werne laptop recovery-key new-key --out /etc/werne/recovery-keys.key
    """
    import os

    from core.errors import InputError
    from core.escrow import new_key

    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"{out_path} exists; an escrow key is never overwritten") from None
    with os.fdopen(fd, "w") as f:
        f.write(new_key() + "\n")
    render.line(f"wrote {out_path}; set recovery_keys.key_file to it")


# ---- known vulnerabilities (issue 25)
VULN_PACKAGE_COLUMNS = (render.Col(24), render.Col(6, right=True), render.Col(6, right=True), render.Col(16),
                        render.Col())
VULN_HOST_COLUMNS = (render.Col(18), render.Col(20), render.Col(22), render.Col(22), render.Col())


@laptop.group("vulns", invoke_without_command=True)
@json_option("the per-package view")
@click.pass_context
def laptop_vulns(ctx: click.Context, as_json: bool) -> None:
    """Known vulnerabilities per package across the fleet, from each laptop's freshest evidence.

    Without a subcommand: one row per source package (vulnerabilities, how many have a fix, the
    worst urgency, the laptops). `import` reads Debian's or Ubuntu's security data; `show HOST`
    lists one laptop's.

    Example:

        werne laptop vulns
        werne laptop vulns import tracker.json
        werne laptop vulns show lap07
    """
    if ctx.invoked_subcommand is not None:
        return
    from compliance.vulns.laptops import fleet_by_package
    from compliance.vulns.laptops import laptop_vulns as per_laptop

    app = ctx.find_object(AppContext)
    assert app is not None
    results = per_laptop(app.config, app.db, sorted(app.inventory.laptops))
    rows = fleet_by_package(results)
    if as_json:
        render.json_out({"packages": [r.to_dict() for r in rows],
                         "laptops": {lv.host: lv.reason or "ok" for lv in results}})
        return
    if not rows:
        render.line("no known vulnerability on any laptop")
    render.table(VULN_PACKAGE_COLUMNS, [(r.source, len(r.ids), len(r.fixable), r.worst,
                                         ", ".join(f"{h} {v}" for h, v in sorted(r.laptops.items()))) for r in rows])
    for lv in results:
        if lv.reason:
            render.line(f"{lv.host}: {lv.reason}")


@laptop_vulns.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="When Debian's tracker file was downloaded (default: the file's modification time).")
@pass_app
def laptop_vulns_import(app: AppContext, file: Path, as_of: datetime | None) -> None:
    """Import security data: Debian's tracker JSON or Ubuntu's USN database (plain or .gz).

    Older, truncated or foreign files are refused (exit 2) and nothing changes.

    Example:

        werne laptop vulns import /srv/werne/debian-tracker.json
    """
    from compliance.vulns.snapshots import import_snapshot

    when = as_of.replace(tzinfo=UTC) if as_of is not None else None
    snap = import_snapshot(app.config, app.db, file, when)
    c = snap.counts
    render.line(f"snapshot {snap.id}: {snap.distro} data of {snap.as_of:%Y-%m-%d %H:%M} UTC, {c['releases']} releases, "
                f"{c['sources']} source packages, {c['entries']} entries")


@laptop_vulns.command("show")
@click.argument("host")
@json_option("the findings")
@pass_app
def laptop_vulns_show(app: AppContext, host: str, as_json: bool) -> None:
    """One laptop's known vulnerabilities: id, source package, installed and fixed version, urgency.

    Example:

        werne laptop vulns show lap07
    """
    from compliance.vulns.laptops import laptop_vulns as per_laptop
    from provisioning.preflight import select_targets

    select_targets(app.config, app.inventory, [host], False)
    lv = per_laptop(app.config, app.db, [host])[0]
    if as_json:
        render.json_out({"host": host, "reason": lv.reason, "snapshot": lv.snapshot,
                         "evidence_at": lv.evidence_at.isoformat() if lv.evidence_at else None,
                         "findings": [f.to_dict() for f in lv.findings]})
        return
    if lv.reason:
        render.line(f"{host}: {lv.reason}")
    render.table(VULN_HOST_COLUMNS, [(f.id, f.source, f.installed, f.fixed or "no fix yet", f.urgency)
                                     for f in lv.findings])
    fixable = sum(f.fix_available for f in lv.findings)
    render.line(f"{len(lv.findings)} known, {fixable} with a fix available")


@laptop.command("packages")
@click.argument("host")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the CSV here instead of stdout.")
@pass_app
def laptop_packages(app: AppContext, host: str, out_path: Path | None) -> None:
    """Export a laptop's installed packages (its freshest evidence) as CSV for Excel.

    Example:

        werne laptop packages lap07 --out lap07-packages.csv
    """
    from compliance.vulns.laptops import inventory_csv
    from provisioning.preflight import select_targets

    select_targets(app.config, app.inventory, [host], False)
    text = inventory_csv(app.db, host)
    if out_path is None:
        render.document(text)
    else:
        out_path.write_text(text, encoding="utf-8")
        render.line(f"wrote {out_path}")
