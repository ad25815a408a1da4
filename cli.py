"""werne: provision and check a town's laptops and school iPads.

This module is the only place that knows about click. It parses, calls one library function,
and prints. Library errors (core.errors.WerneError) become `Error: ...` and a documented exit
code here, at the one error boundary; anything else is a bug and keeps its traceback.

Exit codes: 0 ok, 1 findings or failed hosts, 2 bad input or config, 3 could not run, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from core.config import Config, load_config
from core.errors import EXIT_INTERRUPTED, WerneError
from core.findings import Findings
from core.signals import exit_code_for, signal_name, termination_handlers
from core.text import terminal_safe

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# Ids of requests and runs are 64-bit integers in the database: a longer number is bad input (exit 2).
ID = click.IntRange(1, 2**63 - 1)


class AppContext:
    """Lazily loaded config, database and inventory, shared by the commands of one invocation."""

    def __init__(self, config_path: str | None, state_dir: str | None):
        self._config_path = config_path
        self._state_dir = state_dir
        self._config: Config | None = None
        self._db: Any = None
        self._inventory: Any = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self._config_path, self._state_dir)
        return self._config

    @property
    def db(self):  # type: ignore[no-untyped-def]
        if self._db is None:
            from core.db import Database

            self._db = Database(self.config.database_url)
        return self._db

    def close(self) -> None:
        """Return pooled database connections (PostgreSQL logs an unexpected EOF otherwise)."""
        if self._db is not None:
            self._db.dispose()
            self._db = None

    @property
    def inventory(self):  # type: ignore[no-untyped-def]
        if self._inventory is None:
            from core.inventory import load_inventory
            from provisioning.home.reach import inventory_in_use

            # Home-office laptops at their tunnel address once enrolled (the DB is read only if
            # the inventory marks a laptop `home_office: true`).
            self._inventory = inventory_in_use(self.config, _LazyDB(self), load_inventory(self.config.inventory_dir))
        return self._inventory


class _LazyDB:
    """The app's database, opened on first use (so commands on an office-only inventory never open it)."""

    def __init__(self, app: AppContext):
        self._app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app.db, name)


pass_app = click.make_pass_decorator(AppContext)


def echo(message: Any = "", err: bool = False) -> None:
    """click.echo, with text from others (web page, devices, CSV files) made terminal-safe."""
    click.echo(terminal_safe(message), err=err)


def finish(result: Findings) -> None:
    """End a command with its result's exit code (0 clean, 1 findings; core.findings decides)."""
    sys.exit(result.exit_code)


def echo_json(data: Any) -> None:
    # JSON escapes control characters itself (ensure_ascii), so it is safe as it is.
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def fail(message: str, code: int) -> None:
    """Print `Error: message` on stderr and exit with `code`."""
    echo(f"Error: {message}", err=True)
    sys.exit(code)


def error_boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn project errors into one line and an exit code; let real bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WerneError as e:
            problems = getattr(e, "problems", None)
            if problems and len(problems) > 1:
                for p in problems:
                    echo(f"Error: {p}", err=True)
                sys.exit(e.exit_code)
            fail(str(e), e.exit_code)
        except KeyboardInterrupt as e:
            # Ctrl-C, or SIGTERM/SIGHUP (core.signals.Terminated): the cleanup ran on the way here.
            code = exit_code_for(e)
            fail("interrupted" if code == EXIT_INTERRUPTED else f"terminated by {signal_name(e)}", code)

    return wrapper


class WerneGroup(click.Group):
    """A click group whose commands all run inside the error boundary."""

    def invoke(self, ctx: click.Context) -> Any:
        return error_boundary(super().invoke)(ctx)


@click.group(cls=WerneGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="WERNE_CONFIG",
              help="Site config file (TOML). Default: $WERNE_CONFIG, ./werne.toml, or built-in demo defaults.")
@click.option("--state-dir", type=click.Path(file_okay=False), envvar="WERNE_STATE_DIR",
              help="State directory (database, known_hosts, artifacts). Default: ~/.local/state/werne.")
@click.version_option(package_name="werne")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, state_dir: str | None) -> None:
    """Provision and check the city's laptops and school iPads.

    Example:

        werne inventory check
    """
    app = AppContext(config_path, state_dir)
    ctx.obj = app
    ctx.call_on_close(app.close)
    ctx.with_resource(termination_handlers())


# ---------------------------------------------------------------- inventory ----------------

@main.group(cls=WerneGroup)
def inventory() -> None:
    """Validate and show the site inventory.

    Example:

        werne inventory check
    """


@inventory.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def inventory_check(app: AppContext, as_json: bool) -> None:
    """Validate hosts.yml, schools.yml and ipads.csv; print every problem with file and line.

    Example:

        werne --config werne.toml inventory check
    """
    from core.inventory import check_inventory

    result = check_inventory(app.config.inventory_dir)
    if as_json:
        echo_json(result.to_dict())
    for p in result.problems:
        echo(f"Error: {p}", err=True)
    if result.ok and not as_json:
        echo(f"{result.root}: ok: {result.laptops} laptops, {result.vpn_gateways} VPN gateway(s), "
             f"{result.schools} schools, {result.ipads} iPads")
    finish(result)


# ---------------------------------------------------------------- lab ----------------------
# (owned by the lab work: `werne lab up|down|status`)

def _lab(app: AppContext):  # type: ignore[no-untyped-def]
    from lab.laptops import Lab

    cfg = app.config
    return Lab(cfg.state_dir, cache_dir=cfg.lab.cache_dir, suite=cfg.lab.suite)


@main.group(cls=WerneGroup)
def lab() -> None:
    """Start and stop the lab: real Linux laptops (systemd-nspawn) on this machine. Needs root.

    Example:

        werne lab up --laptops 3
    """


@lab.command("up")
@click.option("--laptops", type=click.IntRange(0, 244), default=3, show_default=True,
              help="How many laptops (lap01, lap02, ...) to boot.")
@click.option("--no-gateway", is_flag=True, help="Do not boot the VPN gateway host (vpngw).")
@click.option("--ipads", type=click.IntRange(0, None), default=0, show_default=True,
              help="How many simulated iPads to enrol (needs the MDM part of the lab).")
@pass_app
def lab_up(app: AppContext, laptops: int, no_gateway: bool, ipads: int) -> None:
    """Boot the lab's laptops (and gateway) and wait until each one's sshd answers; idempotent.

    Writes the lab's Ansible inventory (hosts.yml) with each host's address and the controller key.

    Example:

        werne lab up --laptops 3
    """
    from lab.laptops import lab_up as run_lab_up

    result = run_lab_up(_lab(app), laptops=laptops, gateway=not no_gateway, ipads=ipads, config=app.config,
                        progress=lambda message: echo(message, err=True))
    for h in result.hosts:
        echo(f"{h.name:<8} {h.address:<15} {'running' if h.running else 'stopped'}")
    echo(f"inventory: {result.inventory}")
    echo(f"key: {result.key_file}")
    if result.ipads is not None:
        echo(f"ipads: {result.ipads.ipads} (NanoMDM at {result.ipads.nanomdm_url})")


@lab.command("down")
@click.option("--purge", is_flag=True, help="Also delete the laptops' disks, host keys and inventory.")
@pass_app
def lab_down(app: AppContext, purge: bool) -> None:
    """Stop every lab host (and the lab's MDM); nothing stays running, mounted, or in cgroups and
    network devices.

    Example:

        werne lab down
    """
    from lab.laptops import lab_down as run_lab_down

    run_lab_down(_lab(app), purge=purge)
    echo("lab is down")


@lab.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the hosts as JSON.")
@pass_app
def lab_status(app: AppContext, as_json: bool) -> None:
    """Show each lab host: name, address, running or stopped.

    Example:

        werne lab status --json
    """
    hosts = _lab(app).status()
    if as_json:
        echo_json([h.to_dict() for h in hosts])
        return
    if not hosts:
        echo("the lab has no hosts (run `werne lab up`)")
    for h in hosts:
        echo(f"{h.name:<8} {h.address:<15} {'running' if h.running else 'stopped'}")


@lab.command("home-office")
@click.argument("hosts", nargs=-1, required=True)
@click.option("--back", is_flag=True, help="Bring the laptops back to the office network.")
@pass_app
def lab_home_office(app: AppContext, hosts: tuple[str, ...], back: bool) -> None:
    """Send lab laptops home: each restarts behind its own NAT router (192.168.178.0/24), reachable
    from here only through the VPN; the inventory marks it `home_office: true`. Enrol them in the
    VPN first (on the office network), and route the VPN pool to vpngw (done here).

    Example:

        werne lab home-office lap01 lap02
    """
    lab_ = _lab(app)
    for h in lab_.home_office(list(hosts), home=not back):
        echo(f"{h.name:<8} {'office ' + h.address if back else 'home (192.168.178.20 behind its router)'}")
    if not back:
        lab_.route_vpn_pool(app.config.vpn.pool_v4)
        echo(f"route: {app.config.vpn.pool_v4} via vpngw")


@lab.command("off")
@click.argument("hosts", nargs=-1, required=True)
@pass_app
def lab_off(app: AppContext, hosts: tuple[str, ...]) -> None:
    """Switch lab laptops off (disk, host key and home network stay).

    Example:

        werne lab off lap03 lap04
    """
    _lab(app).switch_off(list(hosts))
    echo(f"switched off: {' '.join(hosts)}")


@lab.command("on")
@click.argument("hosts", nargs=-1, required=True)
@pass_app
def lab_on(app: AppContext, hosts: tuple[str, ...]) -> None:
    """Switch lab laptops on and wait for their sshd.

    Example:

        werne lab on lap03 lap04
    """
    for h in _lab(app).switch_on(list(hosts)):
        echo(f"{h.name:<8} {'running' if h.running else 'stopped'}")


# ---------------------------------------------------------------- laptop -------------------
# (owned by the provisioning work: `werne laptop preflight|provision`)

def _rich_console(stderr: bool = False):  # type: ignore[no-untyped-def]
    from rich.console import Console

    # Made per call, on the current sys stream (CliRunner swaps them), never at import time.
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 120, highlight=False, soft_wrap=True)


@main.group(cls=WerneGroup)
def laptop() -> None:
    """Check and provision the home-office laptops over SSH (pre-flight, then Ansible).

    Example:

        werne laptop preflight --all --accept-new
    """


@laptop.command("preflight")
@click.argument("hosts", nargs=-1)
@click.option("--all", "all_hosts", is_flag=True, help="Check every laptop in the inventory.")
@click.option("--accept-new", is_flag=True,
              help="Pin the host key of laptops seen for the first time (compare the fingerprints first).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
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
        echo_json({"ok": report.ok, "known_hosts": report.known_hosts,
                   "hosts": [{**h.model_dump(), "ok": h.ok} for h in report.hosts]})
    else:
        from rich.table import Table

        table = Table("host", "address", "reachable", "host key", "login", "sudo", "OS", "python3", "disk",
                      "result", box=None, pad_edge=False)
        mark = {"ok": "ok", "failed": "FAIL", "not checked": "-"}
        for h in report.hosts:
            c = h.checks
            os_cell = f"{mark[c['os']]} {h.os}" if h.os else mark[c["os"]]
            disk = f"{mark[c['disk']]} {h.free_disk_mb} MB" if h.free_disk_mb is not None else mark[c["disk"]]
            table.add_row(h.host, h.address, mark[c["reachable"]], mark[c["host_key"]], mark[c["login"]],
                          mark[c["sudo"]], os_cell, mark[c["python3"]], disk, "ok" if h.ok else "FAILED")
        _rich_console().print(table)
        for h in report.hosts:
            if h.host_key_recorded:
                echo(f"{h.host}: pinned new host key {h.host_key_fingerprint}")
        for h in report.failed:
            echo(f"{h.host}: {h.reason}")
        echo(f"{len(report.hosts)} checked, {len(report.failed)} failed")
    finish(report)


@laptop.command("provision")
@click.argument("hosts", nargs=-1)
@click.option("--all", "all_hosts", is_flag=True, help="Provision every laptop in the inventory.")
@click.option("--check", "check_mode", is_flag=True,
              help="Ansible check mode with diff: show per host what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
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
    from rich.live import Live
    from rich.text import Text

    from provisioning.models import Progress
    from provisioning.runner import provision

    def line(p: Progress) -> Text:
        last = f"  {p.host}: {p.task}" if p.host else ""
        verb = "check" if check_mode else "provision"
        return Text(f"{verb}: {p.done}/{p.total} hosts done, {p.changed} changed, "
                    f"{p.failed} failed, {p.unreachable} unreachable{last}")

    console = _rich_console(stderr=True)
    with Live(Text(""), console=console, transient=console.is_terminal, refresh_per_second=4) as live:
        def on_progress(p: Progress) -> None:
            live.update(line(p))

        inventory = app.inventory  # a bad inventory stops here, before the database is opened
        report = provision(app.config, app.db, inventory, hosts, all_hosts, check_mode, on_progress)
    if as_json:
        echo_json(report.model_dump())
    else:
        from rich.table import Table

        # The reasons follow the table, one line per host, so the table never wraps them.
        table = Table("host", "outcome", "ok", "changed", "failed", "unreachable", box=None, pad_edge=False)
        for h in report.hosts:
            table.add_row(h.host, h.outcome, str(h.ok), str(h.changed), str(h.failed), str(h.unreachable))
        _rich_console().print(table)
        if check_mode:
            for h in report.hosts:
                if not h.changes:
                    continue
                echo(f"{h.host}: would change {len(h.changes)} task(s):")
                for c in h.changes:
                    echo(f"  - {c.role + ': ' if c.role else ''}{c.task}")
                    for d in c.diff.splitlines():
                        echo(f"      {d}")
        for h in report.hosts:
            if h.reason:
                echo(f"{h.host}: {h.reason}")
        if report.interrupted_runs:
            echo(f"marked interrupted: run(s) {', '.join(map(str, report.interrupted_runs))}")
        echo(f"run {report.run_id}: {report.status}{' (check mode)' if check_mode else ''}; "
                   f"artifacts in {report.artifact_dir}")
    finish(report)


# ---- home office (issue 15): pending work, the watcher
@laptop.command("pending")
@click.argument("hosts", nargs=-1)
@click.option("--all", "include_closed", is_flag=True, help="Also list items already done or failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the items as JSON.")
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
        echo_json([i.to_dict() for i in items])
        return
    if not items:
        echo("nothing pending")
    for i in items:
        extra = f"; last error: {i.last_error}" if i.last_error and i.state != "done" else ""
        done = f"; {i.result}" if i.result else ""
        echo(f"{i.id:>5} {i.host:<10} {i.kind:<11} {i.state:<8} since {i.created_at:%Y-%m-%d %H:%M} "
             f"by {i.created_by}, attempts {i.attempts}{done}{extra}")


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

    def report(step) -> None:  # type: ignore[no-untyped-def]
        echo(f"{step.host}: {step.action} {step.outcome}{': ' + step.detail if step.detail else ''}", err=True)

    w = make_watcher(app.config, app.db, lambda: _fresh_inventory(app))
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


def _fresh_inventory(app: AppContext):  # type: ignore[no-untyped-def]
    """The inventory as it is now (the watcher runs for days: enrolments change tunnel addresses)."""
    app._inventory = None
    return app.inventory

# ---------------------------------------------------------------- vpn ----------------------
# (owned by the VPN work)

@main.group(cls=WerneGroup)
def vpn() -> None:
    """The WireGuard VPN of the home-office laptops: gateway, keys, revocation, evidence.

    Example:

        werne vpn status
    """


@vpn.group("gateway", cls=WerneGroup)
def vpn_gateway() -> None:
    """The VPN gateway (the host in inventory group vpn_gateway).

    Example:

        werne vpn gateway apply
    """


def _vpn_peer_lines(report: Any) -> None:
    for h in report.hosts:
        extra = f" ({h.address})" if h.address and h.ok else ""
        echo(f"{h.host}: {h.outcome}{extra}" + (f": {h.reason}" if h.reason else ""))
    if report.gateway is not None:
        echo(f"gateway {report.gateway.gateway}: {report.gateway.peers} active peer(s)")


@vpn_gateway.command("apply")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def vpn_gateway_apply(app: AppContext, as_json: bool) -> None:
    """Render the gateway config from all active peers and install it (keys stay on the gateway).

    Exit 3 if the gateway is unreachable; nothing is changed then.

    Example:

        werne vpn gateway apply
    """
    from provisioning.vpn.ops import gateway_apply

    result = gateway_apply(app.config, app.db, app.inventory)
    if as_json:
        echo_json(result.model_dump())
        return
    echo(f"gateway {result.gateway}: {result.peers} active peer(s), public key {result.public_key}")


@vpn.command("enrol")
@click.argument("hosts", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def vpn_enrol(app: AppContext, hosts: tuple[str, ...], as_json: bool) -> None:
    """Run only the wireguard_client role on laptops and admit their (device-made) public keys.

    `werne laptop provision` does the same as part of the whole baseline. Exit 1 if a laptop failed.

    Example:

        werne vpn enrol lap01 lap02
    """
    from provisioning.vpn.ops import enrol

    report = enrol(app.config, app.db, app.inventory, list(hosts))
    if as_json:
        echo_json(report.model_dump())
    else:
        _vpn_peer_lines(report)
    finish(report)


@vpn.command("rotate")
@click.argument("hosts", nargs=-1)
@click.option("--older-than", default=None, help="Rotate every key older than this, e.g. 90d, 12w, 36h.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def vpn_rotate(app: AppContext, hosts: tuple[str, ...], older_than: str | None, as_json: bool) -> None:
    """Give laptops new keys: made on the laptop, swapped in on the gateway, old key removed.

    A laptop that cannot be reached keeps its old, working key and is reported (exit 1); for a
    home-office laptop (off or away) the rotation is queued for `werne laptop watch` instead
    (exit 0). A laptop reached only through its tunnel switches keys by itself (docs/vpn.md).
    Exit 3 if the gateway is unreachable (nothing changed).

    Example:

        werne vpn rotate --older-than 90d
    """
    from provisioning.vpn.ops import rotate

    report = rotate(app.config, app.db, app.inventory, list(hosts), older_than)
    if as_json:
        echo_json(report.model_dump())
    elif not report.hosts:
        echo("no keys to rotate")
    else:
        _vpn_peer_lines(report)
    finish(report)


@vpn.command("revoke")
@click.argument("host")
@click.option("--reason", required=True, help="Why (recorded in the audit trail), e.g. 'laptop stolen'.")
@pass_app
def vpn_revoke(app: AppContext, host: str, reason: str) -> None:
    """Remove a laptop from the gateway at once (the laptop is not contacted) and record why.

    It stays out, also through later provisioning runs, until `werne vpn reinstate`.
    Exit 3 if the gateway is unreachable (nothing changed).

    Example:

        werne vpn revoke lap07 --reason "reported stolen, ticket 4711"
    """
    from provisioning.vpn.ops import revoke

    r = revoke(app.config, app.db, app.inventory, host, reason)
    echo(f"{r.host}: {r.outcome}" + (f" ({r.reason})" if r.reason else ""))


@vpn.command("reinstate")
@click.argument("host")
@pass_app
def vpn_reinstate(app: AppContext, host: str) -> None:
    """Let a revoked laptop back in; it makes a new key at its next provisioning run.

    Example:

        werne vpn reinstate lap07
    """
    from provisioning.vpn.ops import reinstate

    r = reinstate(app.config, app.db, app.inventory, host)
    echo(f"{r.host}: {r.outcome}: {r.reason}")


@vpn.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one object per peer as JSON.")
@pass_app
def vpn_status(app: AppContext, as_json: bool) -> None:
    """Key age, last handshake and endpoint of every peer, from `wg show` on the gateway.

    Flags stale handshakes, unknown keys on the gateway, revoked peers still present. Exit 1 if
    any active peer is flagged.

    Example:

        werne vpn status --json
    """
    from provisioning.vpn.status import StatusReport, collect_status

    report = StatusReport(collect_status(app.config, app.inventory, app.db))
    if as_json:
        echo_json([p.model_dump() for p in report.peers])
    else:
        for p in report.peers:
            hs = "never" if p.handshake_age_s is None else f"{p.handshake_age_s}s ago"
            key_age = "-" if p.key_age_days is None else f"{p.key_age_days:.0f}d"
            echo(f"{p.host or '?':<12} {p.status:<8} {p.address or '-':<15} key {key_age:<5} "
                       f"handshake {hs:<12} {p.endpoint or '-':<21} {','.join(p.flags) or 'ok'}")
    finish(report)

# ---------------------------------------------------------------- mdm / ipad ---------------
# (owned by the MDM work)

_json_opt_early = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@main.group(cls=WerneGroup)
def mdm() -> None:
    """The NanoMDM side: webhook receiver, push certificate, SCEP, enrolment profile.

    Example:

        werne mdm serve-webhook --listen 127.0.0.1:9080
    """


@mdm.command("serve-webhook")
@click.option("--listen", default=None, help="HOST:PORT to listen on. Default: mdm.webhook_listen.")
@click.option("--hmac-key-file", type=click.Path(dir_okay=False), default=None,
              help="File with the webhook HMAC key (NanoMDM's -webhook-hmac-key). "
                   "Default: mdm.webhook_hmac_key_file or $WERNE_WEBHOOK_HMAC_KEY; none: signatures not checked.")
@pass_app
def mdm_serve_webhook(app: AppContext, listen: str | None, hmac_key_file: str | None) -> None:
    """Receive NanoMDM's webhook events and store check-ins and command results (runs until stopped).

    Example:

        werne mdm serve-webhook --listen 127.0.0.1:9080 --hmac-key-file /etc/werne/webhook_hmac_key
    """
    import os

    from core.secrets import read_secret
    from core.signals import default_termination
    from ipad.ops import open_store
    from ipad.webhook import serve

    cfg = app.config.mdm
    key = None
    key_file = hmac_key_file or cfg.webhook_hmac_key_file
    if key_file or os.environ.get(cfg.webhook_hmac_key_env):
        key = read_secret(file=key_file, env=None if hmac_key_file else cfg.webhook_hmac_key_env,
                          what="webhook HMAC key")
    default_termination()  # uvicorn stops cleanly on SIGTERM by itself (systemd's stop)
    from ipad.activation_lock import install_escrow

    install_escrow(app.config)  # bypass codes are escrowed encrypted, or dropped when no key is set
    serve(open_store(app.db, app.inventory), listen or cfg.webhook_listen, key, cfg.webhook_max_body,
          cfg.webhook_batch_ms, cfg.webhook_batch_max)


@mdm.group("push-cert", cls=WerneGroup)
def mdm_push_cert() -> None:
    """The APNs push certificate: key and CSR, install the signed certificate, show it (docs/go-live.md).

    Example:

        werne mdm push-cert csr --out push.csr
    """


@mdm_push_cert.command("csr")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write the CSR (PEM) here. Default: print it.")
@pass_app
def mdm_push_cert_csr(app: AppContext, out_path: str | None) -> None:
    """Make the push certificate key (once, mode 0600) and a CSR for the vendor signing step.

    Example:

        werne mdm push-cert csr --out push.csr
    """
    from pathlib import Path

    from ipad.pushcert import make_csr

    result = make_csr(app.config)
    if out_path:
        Path(out_path).write_bytes(result.csr_pem)
        click.echo(f"CSR written to {out_path}; key {'created' if result.key_created else 'kept'}: "
                   f"{result.key_file}")
    else:
        click.echo(result.csr_pem.decode(), nl=False)


@mdm_push_cert.command("install")
@click.argument("cert_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--force", is_flag=True, help="Install even if the topic differs from the installed one "
                                            "(every iPad must then be enrolled again).")
@pass_app
def mdm_push_cert_install(app: AppContext, cert_file: str, force: bool) -> None:
    """Check the certificate Apple signed, upload it with its key to NanoMDM, and record it.

    Example:

        werne mdm push-cert install MDM_Stadt_Werne_Certificate.pem
    """
    from pathlib import Path

    from ipad.pushcert import install_push_cert
    from mdm_client.factory import nanomdm_client

    data = Path(cert_file).read_bytes()
    installed = install_push_cert(app.config, app.db, nanomdm_client(app.config), data, source=cert_file, force=force)
    click.echo(f"installed push certificate {installed.topic}, valid until {installed.not_after:%Y-%m-%d}")


@mdm.command("enrolment-profile")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Write the signed profile (.mobileconfig, CMS DER) here.")
@pass_app
def mdm_enrolment_profile(app: AppContext, out_path: str) -> None:
    """Write the signed MDM enrolment profile, for iPads enrolled by hand (Apple Configurator).

    Example:

        werne mdm enrolment-profile --out enrol.mobileconfig
    """
    import os

    from ipad.enrolment_profile import signed_enrolment_profile

    data = signed_enrolment_profile(app.config, app.db)
    # It carries the SCEP challenge: readable by its owner only.
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    click.echo(f"signed enrolment profile written to {out_path} ({len(data)} bytes)")


@mdm.group("scep", cls=WerneGroup)
def mdm_scep() -> None:
    """The SCEP CA and server that issue the iPads' device identities (micromdm/scep).

    Example:

        werne mdm scep init
    """


@mdm_scep.command("init")
@click.option("--import-ca-cert", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Use this existing CA certificate (PEM) instead of making one; needs --import-ca-key.")
@click.option("--import-ca-key", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The existing CA's RSA key (unencrypted PEM).")
@_json_opt_early
@pass_app
def mdm_scep_init(app: AppContext, import_ca_cert: str | None, import_ca_key: str | None, as_json: bool) -> None:
    """Make (or import) the SCEP CA in scepserver's depot layout, and the challenge (mode 0600); idempotent.

    Example:

        werne mdm scep init
    """
    from pathlib import Path

    from ipad.scep_ca import init_scep_ca

    ca = init_scep_ca(app.config, Path(import_ca_cert) if import_ca_cert else None,
                      Path(import_ca_key) if import_ca_key else None)
    if as_json:
        echo_json(ca.to_dict())
        return
    click.echo(f"SCEP CA {'created' if ca.created else 'kept'}: {ca.subject}")
    click.echo(f"  depot:      {ca.depot} (scepserver -depot; NanoMDM -ca {ca.ca_cert})")
    click.echo(f"  challenge:  {ca.challenge_file}")
    click.echo(f"  sha256:     {ca.fingerprint_sha256}")


@mdm_scep.command("check")
@click.option("--url", default=None, help="SCEP URL to ask. Default: scep.url.")
@_json_opt_early
@pass_app
def mdm_scep_check(app: AppContext, url: str | None, as_json: bool) -> None:
    """Ask the SCEP server for its capabilities and CA, and compare the CA with the local depot's.

    Example:

        werne mdm scep check --url http://127.0.0.1:9002/scep
    """
    from ipad.scep_ca import check_scep_server
    from mdm_client.scep import SCEPClient

    result = check_scep_server(app.config, SCEPClient(url or app.config.scep.url, timeout=app.config.scep.timeout))
    if as_json:
        echo_json(result.to_dict())
        return
    same = {True: "werne's CA", False: "another CA", None: "no local depot to compare"}[result.matches_depot]
    click.echo(f"{result.url}: {', '.join(result.caps)}")
    click.echo(f"CA {result.ca_subject} ({same}), sha256 {result.ca_fingerprint_sha256}")


@mdm.command("check")
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="CA bundle to trust for the HTTPS front. Default: mdm.tls_ca_file, else the system's.")
@_json_opt_early
@pass_app
def mdm_check(app: AppContext, ca_file: str | None, as_json: bool) -> None:
    """Check a live installation, one line per check: TLS, NanoMDM API, push certificate, SCEP,
    enrolment endpoint, webhook receiver, NanoDEP token. Exit 1 if any check fails.

    Example:

        werne mdm check --json
    """
    from pathlib import Path

    from enrolment.live_check import CheckReport, run_checks

    report = CheckReport(run_checks(app.config, app.db, Path(ca_file) if ca_file else None))
    if as_json:
        echo_json({"ok": report.ok, "checks": [r.to_dict() for r in report.checks]})
    else:
        for r in report.checks:
            echo(f"{'ok  ' if r.ok else 'FAIL'} {r.name:<12} {r.detail}")
    finish(report)


@mdm.command("db-init")
@pass_app
def mdm_db_init(app: AppContext) -> None:
    """Load NanoMDM's PostgreSQL schema (from the installed NanoMDM module) once; idempotent.

    The DSN comes from mdm.storage_dsn_file or $NANOMDM_STORAGE_DSN, never the command line.

    Example:

        NANOMDM_STORAGE_DSN='host=/run/postgresql dbname=nanomdm user=nanomdm' werne mdm db-init
    """
    from ipad.nanomdm_db import load_schema, storage_dsn

    result = load_schema(storage_dsn(app.config))
    click.echo(f"NanoMDM schema {'loaded' if result.created else 'already there'} ({result.tables} tables; "
               f"from {result.schema_file})")


@mdm_push_cert.command("show")
@_json_opt_early
@pass_app
def mdm_push_cert_show(app: AppContext, as_json: bool) -> None:
    """Show the installed push certificate: topic, expiry, who installed it.

    Example:

        werne mdm push-cert show --json
    """
    from datetime import UTC, datetime

    from ipad.pushcert import show_push_cert

    cert = show_push_cert(app.db)
    if as_json:
        echo_json(cert.to_dict())
        return
    days = (cert.not_after - datetime.now(UTC)).days
    click.echo(f"topic:      {cert.topic}")
    click.echo(f"expires:    {cert.not_after:%Y-%m-%d %H:%M} UTC ({days} days)")
    click.echo(f"serial:     {cert.serial}")
    click.echo(f"installed:  {cert.installed_at:%Y-%m-%d %H:%M} UTC by {cert.installed_by}")


@main.group(cls=WerneGroup)
def ipad() -> None:
    """School iPads through NanoMDM: list, query, configure, lock, lost mode, clear passcode, wipe.

    Example:

        werne ipad list --school gs-demo
    """


def _ipad_ctx(app: AppContext):  # type: ignore[no-untyped-def]
    from ipad.ops import IPadContext

    return IPadContext(app.config, app.db, app.inventory)


def _print_action(report: Any, as_json: bool) -> None:
    if as_json:
        echo_json(report.to_dict())
    else:
        if report.plan is not None:
            for school, changes in sorted(report.plan.items()):
                echo(f"{school}:")
                for change, n in sorted(changes.items()):
                    echo(f"  {n:4d} iPad{'s' if n != 1 else ' '}  {change}")
            echo("Plan only: nothing was sent.")
            return
        for d in report.devices:
            echo(f"{d.serial:<13} {d.school or '-':<12} {'ok' if d.ok else 'NOT OK':<7} {d.summary()}")
        counts = report.counts()
        echo(f"{report.action}: {counts.get('ok', 0)} ok, {counts.get('not ok', 0)} not ok"
                   + (f"; no answer from: {', '.join(report.not_answered)}" if report.not_answered else ""))
    finish(report)


_deadline_opt = click.option("--deadline", "deadline", type=float, default=None,
                             help="Seconds to wait for the iPads' answers (default: mdm.query_deadline_s; "
                                  "30 for lock/lost-mode/clear-passcode/wipe).")
_max_devices_opt = click.option("--max-devices", type=click.IntRange(0, None), default=None,
                                help="Confirm an action on more iPads than mdm.blast_radius (must cover the count).")
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@ipad.command("list")
@click.option("--school", default=None, help="Only this school's iPads.")
@_json_opt
@pass_app
def ipad_list(app: AppContext, school: str | None, as_json: bool) -> None:
    """List iPads: enrolment state, last seen, pending/NotNow commands, identity cert expiry, problems.

    Example:

        werne ipad list --school gs-demo --json
    """
    from ipad.ops import list_ipads

    rows = list_ipads(_ipad_ctx(app), school)
    if as_json:
        echo_json([r.to_dict() for r in rows])
        return
    echo(f"{'SERIAL':<13} {'SCHOOL':<12} {'GROUP':<8} {'STATE':<13} {'LAST SEEN':<17} {'OS':<8} "
               f"{'PEND':>4} {'NOTNOW':>6} {'CERT UNTIL':<10}  PROBLEMS")
    for r in rows:
        seen = r.last_seen.strftime("%Y-%m-%d %H:%M") if r.last_seen else "-"
        cert = r.identity_cert_not_after.strftime("%Y-%m-%d") if r.identity_cert_not_after else "-"
        echo(f"{r.serial:<13} {r.school or '-':<12} {r.group or '-':<8} {r.state:<13} {seen:<17} "
                   f"{r.os_version or '-':<8} {r.pending:>4} {r.not_now:>6} {cert:<10}  {'; '.join(r.problems)}")
    echo(f"{len(rows)} iPads, {sum(1 for r in rows if r.problems)} with problems")


@ipad.command("query")
@click.option("--school", default=None, help="All iPads of this school.")
@click.argument("serials", nargs=-1)
@_deadline_opt
@_json_opt
@pass_app
def ipad_query(app: AppContext, school: str | None, serials: tuple[str, ...], deadline: float | None,
               as_json: bool) -> None:
    """Ask iPads for device info, security info, profiles and certificates; store the answers.

    Waits up to the deadline and names the iPads that did not answer (exit 1 if any).

    Example:

        werne ipad query --school gs-demo --deadline 60
    """
    from ipad.ops import query

    _print_action(query(_ipad_ctx(app), school, serials, deadline), as_json)


@ipad.command("configure")
@click.option("--school", default=None, help="All iPads of this school.")
@click.argument("serials", nargs=-1)
@click.option("--plan", is_flag=True, help="Only show per school how many iPads get which change.")
@_max_devices_opt
@_deadline_opt
@_json_opt
@pass_app
def ipad_configure(app: AppContext, school: str | None, serials: tuple[str, ...], plan: bool,
                   max_devices: int | None, deadline: float | None, as_json: bool) -> None:
    """Install or remove profiles so each iPad has exactly its group's profile set.

    Example:

        werne ipad configure --school gs-demo --plan
    """
    from ipad.ops import configure

    _print_action(configure(_ipad_ctx(app), school, serials, plan, max_devices, deadline), as_json)


@ipad.command("lock")
@click.argument("serials", nargs=-1, required=True)
@click.option("--message", default=None, help="Text on the lock screen.")
@click.option("--phone", default=None, help="Phone number on the lock screen.")
@_max_devices_opt
@_deadline_opt
@_json_opt
@pass_app
def ipad_lock(app: AppContext, serials: tuple[str, ...], message: str | None, phone: str | None,
              max_devices: int | None, deadline: float | None, as_json: bool) -> None:
    """Lock iPads now (DeviceLock).

    Example:

        werne ipad lock ZDWK1DEGZD --message "Bitte im Sekretariat abgeben"
    """
    from ipad.ops import lock

    _print_action(lock(_ipad_ctx(app), serials, message, phone, max_devices, deadline), as_json)


@ipad.command("lost-mode")
@click.argument("serials", nargs=-1, required=True)
@click.option("--message", default=None, help="Lost-mode message (default: names the school).")
@click.option("--phone", default=None, help="Phone number to call (default: the school's support phone).")
@click.option("--footnote", default=None, help="Footnote on the lost-mode screen.")
@click.option("--off", "disable", is_flag=True, help="Leave lost mode (DisableLostMode); deletes the stored location.")
@click.option("--sound", is_flag=True, help="Play a sound on iPads already in lost mode (PlayLostModeSound).")
@_max_devices_opt
@_deadline_opt
@_json_opt
@pass_app
def ipad_lost_mode(app: AppContext, serials: tuple[str, ...], message: str | None, phone: str | None,
                   footnote: str | None, disable: bool, sound: bool, max_devices: int | None,
                   deadline: float | None, as_json: bool) -> None:
    """Put supervised iPads into lost mode (or take them out with --off, or play a sound with --sound).

    Example:

        werne ipad lost-mode ZDWK1DEGZD --phone "+49 2389 0000"
    """
    from core.errors import InputError
    from ipad.ops import lost_mode

    if sound:
        from ipad.lost_mode import play_sound

        if disable or message or phone or footnote:
            raise InputError("--sound plays a sound on an iPad already in lost mode; give it alone")
        _print_action(play_sound(_ipad_ctx(app), serials, deadline), as_json)
        return
    _print_action(lost_mode(_ipad_ctx(app), serials, message, phone, footnote, disable, max_devices, deadline),
                  as_json)


@ipad.command("locate")
@click.argument("serials", nargs=-1, required=True)
@_deadline_opt
@_json_opt
@pass_app
def ipad_locate(app: AppContext, serials: tuple[str, ...], deadline: float | None, as_json: bool) -> None:
    """Ask iPads in lost mode where they are (DeviceLocation); refused for any iPad not in lost mode.

    Audited (who asked, never where); the location is deleted when lost mode ends.

    Example:

        werne ipad locate ZDWK1DEGZD
    """
    from ipad.lost_mode import locate

    _print_action(locate(_ipad_ctx(app), serials, deadline), as_json)


@ipad.command("clear-passcode")
@click.argument("serials", nargs=-1, required=True)
@_max_devices_opt
@_deadline_opt
@_json_opt
@pass_app
def ipad_clear_passcode(app: AppContext, serials: tuple[str, ...], max_devices: int | None,
                        deadline: float | None, as_json: bool) -> None:
    """Remove the passcode of iPads (ClearPasscode with the device's UnlockToken).

    Example:

        werne ipad clear-passcode ZDWK1DEGZD
    """
    from ipad.ops import clear_passcode

    _print_action(clear_passcode(_ipad_ctx(app), serials, max_devices, deadline), as_json)


@ipad.command("wipe")
@click.argument("serials", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Do not ask; needs --max-devices equal to the number of serials.")
@click.option("--return-to-service", is_flag=True,
              help="The iPad enrols again by itself and gets its group's profiles and apps (iPadOS 17+).")
@_max_devices_opt
@_deadline_opt
@_json_opt
@pass_app
def ipad_wipe(app: AppContext, serials: tuple[str, ...], yes: bool, return_to_service: bool,
              max_devices: int | None, deadline: float | None, as_json: bool) -> None:
    """Erase iPads (EraseDevice). Asks you to type the serials again, unless --yes --max-devices N.

    Example:

        werne ipad wipe ZDWK1DEGZD
    """
    from ipad.app_licences import wipe_and_release
    from ipad.ops import select_targets

    ctx = _ipad_ctx(app)
    typed = None
    if not yes:
        select_targets(ctx, serials=serials, require_serials=True)  # unknown serials: exit 2 before asking
        typed = click.prompt(f"This ERASES {len(serials)} iPad(s). Type the serial(s) again to confirm",
                             default="", show_default=False)
    _print_action(wipe_and_release(ctx, serials, typed, yes, max_devices, deadline, return_to_service), as_json)


def _print_moves(report: Any, as_json: bool) -> None:
    if as_json:
        echo_json(report.to_dict())
    else:
        for m in report.moves:
            echo(f"{m.serial:<13} {m.old_school}/{m.old_group} -> {m.school}/{m.group}  "
                 f"{'ok' if m.ok else 'NOT OK'}  {'; '.join(m.lines)}")
        if report.unchanged:
            echo(f"already there: {', '.join(report.unchanged)}")
        if report.planned:
            echo("Plan only: nothing was changed.")
        elif report.backup is not None:
            echo(f"ipads.csv changed; the previous version is {report.backup}")
    finish(report)


@ipad.command("move")
@click.argument("serials", nargs=-1)
@click.option("--school", default=None, help="The new school (default: the iPad's own).")
@click.option("--group", default=None, help="The new group: pupil, teacher or shared (default: the iPad's own).")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A class list: a serial column, optional school and group columns.")
@click.option("--plan", is_flag=True, help="Only show what would change.")
@_max_devices_opt
@_deadline_opt
@_json_opt
@pass_app
def ipad_move(app: AppContext, serials: tuple[str, ...], school: str | None, group: str | None,
              csv_file: Path | None, plan: bool, max_devices: int | None, deadline: float | None,
              as_json: bool) -> None:
    """Move iPads to another school or group: ipads.csv, profiles, app licences and DDM sets follow.

    Example:

        werne ipad move --csv klasse-5b.csv --school gs-demo --group pupil --plan
    """
    from ipad.moves import move

    _print_moves(move(_ipad_ctx(app), serials, school, group, csv_file, plan, max_devices, deadline), as_json)


@ipad.command("retire")
@click.argument("serials", nargs=-1, required=True)
@_json_opt
@pass_app
def ipad_retire(app: AppContext, serials: tuple[str, ...], as_json: bool) -> None:
    """Take iPads out of use: app licences back, rows out of ipads.csv (a backup is kept). Wipe first.

    Example:

        werne ipad retire ZDWK1DEGZD
    """
    from ipad.moves import retire

    _print_moves(retire(_ipad_ctx(app), serials), as_json)


# ---------------------------------------------------------------- apps and activation lock --
# (issue 14: app licences through Apple's Apps and Books service; Activation Lock escrow)

@ipad.group("activation-lock", cls=WerneGroup)
def ipad_activation_lock() -> None:
    """Activation Lock bypass codes: escrow them (encrypted) and show one to IT staff.

    Example:

        werne ipad activation-lock show ZDWK1DEGZD
    """


@ipad_activation_lock.command("escrow")
@click.option("--school", default=None, help="All iPads of this school.")
@click.argument("serials", nargs=-1)
@_max_devices_opt
@_deadline_opt
@_json_opt
@pass_app
def ipad_activation_lock_escrow(app: AppContext, school: str | None, serials: tuple[str, ...],
                                max_devices: int | None, deadline: float | None, as_json: bool) -> None:
    """Ask iPads for their bypass code (ActivationLockBypassCode); the webhook stores it encrypted.

    Example:

        werne ipad activation-lock escrow --school gs-demo
    """
    from ipad.activation_lock import request_codes

    _print_action(request_codes(_ipad_ctx(app), school, serials, max_devices, deadline), as_json)


@ipad_activation_lock.command("show")
@click.argument("serial")
@pass_app
def ipad_activation_lock_show(app: AppContext, serial: str) -> None:
    """Print one iPad's escrowed bypass code (users in activation_lock.allowed_users; audited).

    Example:

        werne ipad activation-lock show ZDWK1DEGZD
    """
    from ipad.activation_lock import show_code

    click.echo(show_code(app.config, app.db, serial))


@ipad_activation_lock.command("key")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Write a new escrow key to this file (mode 0600); name it in activation_lock.key_file.")
@pass_app
def ipad_activation_lock_key(app: AppContext, out_path: str) -> None:
    """Make a new escrow key file (refuses to overwrite one).

    Example:

        werne ipad activation-lock key --out /etc/werne/activation-lock.key
    """
    import os

    from core.errors import InputError
    from ipad.activation_lock import new_key

    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"{out_path} exists; an escrow key is never overwritten") from None
    with os.fdopen(fd, "w") as f:
        f.write(new_key() + "\n")
    click.echo(f"wrote {out_path}; set activation_lock.key_file to it")


@main.group(cls=WerneGroup)
def apps() -> None:
    """App Store apps on the school iPads: licences (Apple's Apps and Books) and installs.

    Example:

        werne apps plan --school gs-demo
    """


def _print_apps_plan(p: Any) -> None:
    for school, changes in sorted(p.summary().items()):
        click.echo(f"{school}:")
        for change, n in sorted(changes.items()):
            click.echo(f"  {n:4d} iPad{'s' if n != 1 else ' '}  {change}")
    for c in p.checks:
        state = "enough" if c.enough else "TOO FEW"
        click.echo(f"licences {c.location} {c.app}: {c.needed_new} new, {c.freed} freed, {c.free} free of "
                   f"{c.bought}: {state}")
    for sid in p.skipped_schools:
        click.echo(f"{sid}: no apps_location in schools.yml, no apps")
    click.echo(f"Plan only: nothing was changed ({p.api_calls} Apps and Books calls).")


@apps.command("plan")
@click.option("--school", default=None, help="Only this school's iPads.")
@_json_opt
@pass_app
def apps_plan(app: AppContext, school: str | None, as_json: bool) -> None:
    """Show per school which iPads get or lose which app, and whether the licences suffice.

    Exit 1 when a location has too few licences for the plan.

    Example:

        werne apps plan --school gs-demo
    """
    from ipad.app_licences import plan

    p = plan(_ipad_ctx(app), school)
    if as_json:
        echo_json(p.to_dict())
    else:
        _print_apps_plan(p)
    finish(p)


@apps.command("apply")
@click.option("--school", default=None, help="Only this school's iPads.")
@_max_devices_opt
@click.option("--deadline", type=float, default=0.0, show_default=True,
              help="Seconds to wait for the iPads to answer Install/RemoveApplication (0: queue and go).")
@_json_opt
@pass_app
def apps_apply(app: AppContext, school: str | None, max_devices: int | None, deadline: float,
               as_json: bool) -> None:
    """Assign or take back app licences (Apps and Books), then install or remove the apps.

    Exit 0 all done, 1 some iPads not (listed), 2 bad input (unknown app, too few licences,
    blast radius), 3 Apple refused a location token or could not be reached.

    Example:

        werne apps apply --school gs-demo --max-devices 120
    """
    from ipad.app_licences import apply

    report = apply(_ipad_ctx(app), school, max_devices, deadline)
    if as_json:
        echo_json(report.to_dict())
    else:
        for d in report.devices:
            click.echo(f"{d.serial:<13} {d.school or '-':<12} {'ok' if d.ok else 'NOT OK':<7} {'; '.join(d.lines)}")
        click.echo(f"apps apply: {len(report.devices) - len(report.failed)} ok, {len(report.failed)} not ok; "
                   f"{report.api_calls} Apps and Books calls ({report.licence_calls} licence calls)")
    finish(report)


@apps.command("licences")
@click.option("--format", "fmt", type=click.Choice(["csv", "html"]), default="csv", show_default=True,
              help="Report format.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="Write the report here.")
@pass_app
def apps_licences(app: AppContext, fmt: str, out_path: str) -> None:
    """Licence report per school and app: bought, assigned, free, what the plan needs.

    Example:

        werne apps licences --format html --out lizenzen.html
    """
    from pathlib import Path

    from ipad.app_licences import licence_report, render_licences_csv, render_licences_html

    rows = licence_report(_ipad_ctx(app))
    text = render_licences_csv(rows) if fmt == "csv" else render_licences_html(rows)
    Path(out_path).write_text(text, encoding="utf-8")
    short = sum(1 for r in rows if not r.enough)
    click.echo(f"wrote {out_path}: {len(rows)} rows" + (f", {short} with too few licences" if short else ""))


@ipad.command("update")
@click.argument("serials", nargs=-1)
@click.option("--to", "version", required=True, help="The iPadOS version to install, e.g. 18.3.")
@click.option("--by", "deadline", required=True,
              help="Deadline, local time at the school (schools.yml time_zone), e.g. '2027-01-15 18:00'.")
@click.option("--school", default=None, help="All iPads of this school.")
@click.option("--group", type=click.Choice(["pupil", "teacher", "shared"]), default=None,
              help="Only iPads of this group.")
@click.option("--plan", is_flag=True,
              help="Only show per model how many iPads get the target, have it, cannot take it.")
@_max_devices_opt
@_json_opt
@pass_app
def ipad_update(app: AppContext, serials: tuple[str, ...], version: str, deadline: str, school: str | None,
                group: str | None, plan: bool, max_devices: int | None, as_json: bool) -> None:
    """Enforce an iPadOS version by a deadline (declarative device management through KMFDDM).

    Which models can take the version comes from Apple's catalogue (werne ipad catalogue import).

    Example:

        werne ipad update --school gs-demo --to 18.3 --by "2027-01-15 18:00" --plan
    """
    from ipad.update import update

    report = update(_ipad_ctx(app), version, deadline, school, group, serials, plan, max_devices)
    if as_json:
        echo_json(report.to_dict())
    elif plan:
        for model, changes in sorted(report.plan().items()):
            click.echo(f"{model}:")
            for change, n in sorted(changes.items()):
                click.echo(f"  {n:4d} iPad{'s' if n != 1 else ' '}  {change}")
        click.echo("Plan only: nothing was sent.")
    else:
        for r in report.rows:
            what = report.mapped.get(r.serial) or r.detail or r.outcome
            click.echo(f"{r.serial:<13} {r.school or '-':<12} {r.model or '-':<12} {r.os_version or '-':<8} "
                       f"{r.outcome:<12} {what}")
        c = report.counts()
        click.echo(f"update to {report.target} by {report.deadline}: {c.get('update', 0)} to update, "
                   f"{c.get('already', 0)} already there, {c.get('cannot', 0)} cannot take it, "
                   f"{c.get('not enrolled', 0)} not enrolled")
    if not plan:  # a plan only shows; it has no findings of its own
        finish(report)


@ipad.group("declarations", cls=WerneGroup)
def ipad_declarations() -> None:
    """The group sets of declarations in KMFDDM (declarative device management).

    Example:

        werne ipad declarations apply --school gs-demo
    """


@ipad_declarations.command("apply")
@click.option("--school", default=None, help="Only this school's sets and iPads.")
@_max_devices_opt
@_json_opt
@pass_app
def ipad_declarations_apply(app: AppContext, school: str | None, max_devices: int | None, as_json: bool) -> None:
    """Put each group's declarations into its KMFDDM set and every enrolled iPad into its group's set.

    Example:

        werne ipad declarations apply --school gs-demo
    """
    from ipad.group_sets import apply_group_sets

    report = apply_group_sets(_ipad_ctx(app), school, max_devices)
    if as_json:
        echo_json(report.to_dict())
    else:
        for name, idents in sorted(report.sets.items()):
            click.echo(f"{name}: {len(idents)} declarations")
        for serial, what in sorted(report.mapped.items()):
            click.echo(f"{serial:<13} {what}")
        click.echo(f"{len(report.sets)} sets, {len(report.mapped)} iPads mapped, "
                   f"{len(report.not_enrolled)} not enrolled")
    finish(report)


@ipad.group("catalogue", cls=WerneGroup)
def ipad_catalogue() -> None:
    """Apple's catalogue of iPadOS versions per model (a saved gdmf.apple.com/v2/pmv answer).

    Example:

        werne ipad catalogue import pmv.json
    """


@ipad_catalogue.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@pass_app
def ipad_catalogue_import(app: AppContext, file: str) -> None:
    """Check a saved pmv answer and store it for `werne ipad update` (ddm.catalogue_file).

    Example:

        werne ipad catalogue import pmv.json
    """
    from pathlib import Path

    from ipad.catalogue import import_catalogue

    path, catalogue = import_catalogue(app.config, Path(file))
    versions = catalogue.offered_versions(catalogue.taken_at.date())
    click.echo(f"stored {path}: {len(catalogue.releases)} iOS releases, offered now: {', '.join(versions[-5:])}")


# ---------------------------------------------------------------- compliance / report ------
# (owned by the compliance work)

@main.group(cls=WerneGroup)
def compliance() -> None:
    """Run the compliance checks, verify the stored history, compare runs.

    Example:

        werne compliance run --all
    """


@compliance.command("run")
@click.option("--laptops", "fleet", flag_value="laptops", help="Check the laptops (and the VPN) only.")
@click.option("--ipads", "fleet", flag_value="ipads", help="Check the iPads only.")
@click.option("--all", "fleet", flag_value="all", default=True, help="Check both fleets (the default).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@pass_app
def compliance_run(app: AppContext, fleet: str, as_json: bool) -> None:
    """Collect facts, evaluate the baselines, apply waivers and store the run.

    Exit codes: 0 every device compliant, 1 findings (fail, error or unreachable),
    2 bad input or configuration, 3 could not run (e.g. another run holds the lock).

    Example:

        werne compliance run --laptops
    """
    from compliance.run import FLEETS, run_compliance

    fleets = FLEETS if fleet == "all" else (fleet,)
    stderr = sys.stderr
    live = stderr.isatty() and not as_json

    def progress(p: Any) -> None:
        if live:
            line = terminal_safe(f"{p.fleet}: {p.done}/{p.total} {p.device} {p.status} {p.message}")
            stderr.write(f"\r{line}".ljust(78)[:78])
            stderr.flush()

    summary = run_compliance(app.config, app.db, app.inventory, fleets, progress=progress)
    if live:
        stderr.write("\n")
    if as_json:
        echo_json(summary.to_dict())
    else:
        if summary.recovered_stale_lock:
            echo("note: recovered a stale lock left by a run that died", err=True)
        c = summary.counts
        echo(f"run {summary.run_id}: {summary.compliant_devices}/{summary.devices} devices compliant, "
                   f"pass rate {summary.pass_rate * 100:.1f} %; pass {c['pass']}, fail {c['fail']}, "
                   f"error {c['error']}, unreachable {c['unreachable']}, waived {c['waived']}, "
                   f"not applicable {c['not_applicable']}")
        if summary.report_path:
            echo(f"report: {summary.report_path}")
    finish(summary)


@compliance.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def compliance_verify(app: AppContext, as_json: bool) -> None:
    """Check the hash chain of every stored run, offline; exit 1 if any record was altered.

    Example:

        werne compliance verify
    """
    from compliance.history import verify_chain

    rep = verify_chain(app.db)
    if as_json:
        echo_json({"ok": rep.ok, "runs": rep.runs_checked, "head": rep.head, "problems": rep.problems})
    elif rep.ok:
        echo(f"ok: {rep.runs_checked} run(s), chain head {rep.head or 'none'}")
    for p in rep.problems if not as_json else []:
        echo(f"Error: {p}", err=True)
    finish(rep)


@compliance.command("diff")
@click.argument("run_a", type=ID)
@click.argument("run_b", type=ID)
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
@pass_app
def compliance_diff(app: AppContext, run_a: int, run_b: int, as_json: bool) -> None:
    """Print what changed between two runs: newly failing first, then fixed, then still failing.

    Example:

        werne compliance diff 41 42
    """
    from compliance.diff import diff_stored

    d = diff_stored(app.db, run_a, run_b)
    sections = [("newly failing", d.newly_failing), ("fixed", d.fixed), ("still failing", d.still_failing),
                ("other changes", d.changed)]
    if as_json:
        echo_json({"run_a": d.run_a, "run_b": d.run_b,
                   **{k.replace(" ", "_"): [c.as_dict() for c in v] for k, v in sections}})
        return
    for title, changes in sections:
        echo(f"{title} ({len(changes)}):")
        for c in changes:
            echo(f"  {c.device:<14} {c.rule_id:<26} {c.before or '-'} -> {c.after or '-'}  {c.evidence}")


@main.command("report")
@click.option("--run", "run_id", type=ID, help="Run id (default: the latest complete run).")
@click.option("--format", "fmt", type=click.Choice(["html", "csv", "json", "junit"]), default="html",
              show_default=True, help="Report format.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="Output file.")
@pass_app
def report_cmd(app: AppContext, run_id: int | None, fmt: str, out_path: str) -> None:
    """Write the report of a compliance run: HTML, CSV (German Excel), JSON or JUnit XML.

    Example:

        werne report --format html --out compliance.html
    """
    from compliance.reports import write_report

    path = write_report(app.db, run_id, fmt, out_path)
    echo(str(path))

# ---------------------------------------------------------------- enrol / user / web -------
# (owned by the enrolment work)

def _read_new_password(from_stdin: bool) -> str:
    """A new password from one line of stdin, or an interactive hidden prompt; never from argv."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@main.group(cls=WerneGroup)
def user() -> None:
    """Manage web accounts: IT admins and school coordinators.

    Example:

        werne user add anna.schmidt --role coordinator --school gs-demo
    """


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "coordinator"]), required=True, help="admin or coordinator.")
@click.option("--school", "schools", multiple=True, help="School id the coordinator may see (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
@pass_app
def user_add(app: AppContext, username: str, role: str, schools: tuple[str, ...], password_stdin: bool) -> None:
    """Create a local web account; the password is prompted for (or read from stdin), never an argument.

    Example:

        printf '%s\\n' "$PW" | werne user add anna.schmidt --role coordinator --school gs-demo --password-stdin
    """
    from core.audit import current_actor
    from enrolment.accounts import add_user

    password = _read_new_password(password_stdin)
    p = add_user(app.db, username, password, role, list(schools), set(app.inventory.schools), current_actor())
    echo(f"user {p.username} added ({p.role}{': ' + ', '.join(sorted(p.schools)) if p.schools else ''})")


@user.command("disable")
@click.argument("username")
@pass_app
def user_disable(app: AppContext, username: str) -> None:
    """Disable an account; its sessions stop working at their next request.

    Example:

        werne user disable anna.schmidt
    """
    from core.audit import current_actor
    from enrolment.accounts import set_active

    set_active(app.db, username, False, current_actor())
    echo(f"user {username} disabled")


@user.command("reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
@pass_app
def user_reset_password(app: AppContext, username: str, password_stdin: bool) -> None:
    """Set a new password (prompted, or from stdin) and clear failed-login counters.

    Example:

        werne user reset-password anna.schmidt
    """
    from core.audit import current_actor
    from enrolment.accounts import reset_password

    reset_password(app.db, username, _read_new_password(password_stdin), current_actor())
    echo(f"password of {username} reset")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the users as JSON.")
@pass_app
def user_list(app: AppContext, as_json: bool) -> None:
    """List web accounts with role and schools.

    Example:

        werne user list
    """
    from enrolment.accounts import list_users

    users = list_users(app.db)
    if as_json:
        echo_json(users)
        return
    for u in users:
        echo(f"{u['username']:<24} {u['role']:<12} {'active' if u['active'] else 'disabled':<9} "
                   f"{', '.join(u['schools'])}")  # type: ignore[arg-type]


@main.group(cls=WerneGroup)
def enrol() -> None:
    """Enrolment requests from schools: list, show, approve (DEP assignment), reject, close.

    Example:

        werne enrol list
    """


def _print_request(view: Any) -> None:
    echo(f"request {view.id}: {view.school_id} {view.group} '{view.purpose}' {view.status} "
               f"({view.enrolled} of {view.total} enrolled, {view.configured} configured) by {view.created_by}")
    if view.reason:
        echo(f"  reason: {view.reason}")
    for s in view.serials:
        echo(f"  {s.serial:<13} {s.status:<11} {s.reason or ''}".rstrip())


@enrol.command("list")
@click.option("--status", help="Only requests in this state (submitted, approved, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print the requests as JSON.")
@pass_app
def enrol_list(app: AppContext, status: str | None, as_json: bool) -> None:
    """List enrolment requests of every school, newest first.

    Example:

        werne enrol list --status submitted
    """
    from core.audit import current_actor
    from enrolment.accounts import cli_principal
    from enrolment.requests import list_requests

    items = list_requests(app.db, cli_principal(current_actor()), status=status)
    if as_json:
        echo_json([i.as_dict() for i in items])
        return
    for v in items:
        echo(f"{v.id:>5}  {v.status:<10} {v.school_id:<12} {v.group:<8} {v.enrolled}/{v.total}  {v.purpose}")


@enrol.command("show")
@click.argument("request_id", type=ID)
@click.option("--json", "as_json", is_flag=True, help="Print the request as JSON.")
@pass_app
def enrol_show(app: AppContext, request_id: int, as_json: bool) -> None:
    """Show one request with the status of each serial.

    Example:

        werne enrol show 12
    """
    from core.audit import current_actor
    from enrolment.accounts import cli_principal
    from enrolment.requests import get_request

    view = get_request(app.db, cli_principal(current_actor()), request_id)
    if as_json:
        echo_json(view.as_dict())
    else:
        _print_request(view)


@enrol.command("approve")
@click.argument("request_id", type=ID)
@pass_app
def enrol_approve(app: AppContext, request_id: int) -> None:
    """Approve a request: assign its serials to the school's DEP profile through NanoDEP.

    Run it again to retry serials Apple answered THROTTLED. Exit 1 if any serial failed.

    Example:

        werne enrol approve 12
    """
    from core.audit import current_actor
    from enrolment.accounts import cli_principal
    from enrolment.requests import approve_request

    view = approve_request(app.db, app.config, app.inventory, cli_principal(current_actor()), request_id)
    _print_request(view)
    finish(view)


@enrol.command("reject")
@click.argument("request_id", type=ID)
@click.option("--reason", required=True, help="Why; the coordinator sees it.")
@pass_app
def enrol_reject(app: AppContext, request_id: int, reason: str) -> None:
    """Reject a submitted request, with a reason the coordinator sees.

    Example:

        werne enrol reject 12 --reason "Geräte gehören nicht der Stadt"
    """
    from core.audit import current_actor
    from enrolment.accounts import cli_principal
    from enrolment.requests import reject_request

    _print_request(reject_request(app.db, cli_principal(current_actor()), request_id, reason))


@enrol.command("close")
@click.argument("request_id", type=ID)
@pass_app
def enrol_close(app: AppContext, request_id: int) -> None:
    """Mark a configured request done.

    Example:

        werne enrol close 12
    """
    from core.audit import current_actor
    from enrolment.accounts import cli_principal
    from enrolment.requests import close_request

    _print_request(close_request(app.db, cli_principal(current_actor()), request_id))


@enrol.command("dep-status")
@pass_app
def enrol_dep_status(app: AppContext) -> None:
    """Check NanoDEP and the Apple DEP account behind dep.name (tokens valid, terms accepted).

    Example:

        werne enrol dep-status
    """
    from enrolment.dep import dep_status

    st = dep_status(app.config)
    echo(f"NanoDEP {st.nanodep_version or '?'} at {st.nanodep_url}, DEP name {st.dep_name}: "
               f"server '{st.server_name}' of '{st.org_name}' (admin {st.admin_id or '?'})")


@enrol.command("sync")
@pass_app
def enrol_sync(app: AppContext) -> None:
    """Install profiles on newly enrolled iPads of approved requests, and record acknowledgements.

    `werne web serve` does this every few seconds; this runs one sweep.

    Example:

        werne enrol sync
    """
    from enrolment.arrival import process_arrivals

    r = process_arrivals(app.db, app.config)
    echo(f"enrolled {len(r.enrolled)}, configured {len(r.configured)}, failed {len(r.failed)}, "
               f"deferred {len(r.deferred)}, commands sent {r.commands_sent}")
    for serial, why in {**r.failed, **r.deferred}.items():
        echo(f"  {serial}: {why}")
    finish(r)


@main.group(cls=WerneGroup)
def web() -> None:
    """The coordinators' web page.

    Example:

        werne web serve
    """


@web.command("serve")
@click.option("--host", help="Listen address (default: web.listen).")
@click.option("--port", type=click.IntRange(1, 65535), help="Listen port (default: web.listen).")
@pass_app
def web_serve(app: AppContext, host: str | None, port: int | None) -> None:
    """Serve the web page and sweep for arriving iPads until interrupted.

    Example:

        werne web serve --port 8080
    """
    from core.signals import default_termination
    from enrolment.web.app import serve

    default_termination()  # uvicorn stops cleanly on SIGTERM by itself (systemd's stop)
    serve(app.config, host, port)

# ---------------------------------------------------------------- deploy -------------------

@main.group(cls=WerneGroup)
def deploy() -> None:
    """The production deployment of the iPad side: systemd units and the nginx HTTPS front.

    Example:

        werne deploy write --host mdm.example-city.de --out deploy-out
    """


@deploy.command("write")
@click.option("--host", required=True, help="The public host name (DNS) of the MDM server.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder to write systemd/ and nginx/ into.")
@click.option("--tls", type=click.Choice(["acme", "city"]), default="acme", show_default=True,
              help="acme: certbot's certificate (http-01 on port 80); city: the city's certificate.")
@click.option("--tls-cert", default=None, help="With --tls city: the certificate chain (PEM) on the server.")
@click.option("--tls-key", default=None, help="With --tls city: its key (PEM) on the server.")
@_json_opt_early
@pass_app
def deploy_write(app: AppContext, host: str, out_dir: str, tls: str, tls_cert: str | None, tls_key: str | None,
                 as_json: bool) -> None:
    """Write the units (NanoMDM, scepserver, webhook, web) and the nginx site for one host.

    Example:

        werne deploy write --host mdm.example-city.de --out deploy-out --tls city \\
            --tls-cert /etc/ssl/werne/fullchain.pem --tls-key /etc/ssl/werne/privkey.pem
    """
    from pathlib import Path

    from enrolment.deploy import write_deployment

    result = write_deployment(app.config, host, Path(out_dir), tls, tls_cert, tls_key)
    if as_json:
        echo_json(result.to_dict())
        return
    for f in result.files:
        click.echo(f"{f.path}  ->  {f.install_to}")


# ---------------------------------------------------------------- audit --------------------

@main.command("audit")
@click.option("--since", type=click.DateTime(), help="Only events at or after this time (UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
@pass_app
def audit_cmd(app: AppContext, since: Any, as_json: bool) -> None:
    """Show the audit trail: who did what, to which devices, when.

    Example:

        werne audit --since 2026-11-01
    """
    from datetime import UTC

    from core.audit import list_events

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    events = list_events(app.db, since)
    rows = [{"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "target": e.target,
             "detail": e.detail} for e in events]
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        detail = json.dumps(r["detail"], sort_keys=True)
        echo(f"{r['at']}  {r['actor']:<12} {r['action']:<24} {r['target']}  {detail}")


# ---------------------------------------------------------------- demo ---------------------
# (the README's first command)

@main.command("demo")
@click.option("--laptops", type=click.IntRange(1, 70), default=3, show_default=True,
              help="How many lab laptops to boot.")
@click.option("--ipads", type=click.IntRange(1, 600), default=12, show_default=True,
              help="How many simulated iPads to enrol.")
@pass_app
def demo_cmd(app: AppContext, laptops: int, ipads: int) -> None:
    """Run the nightly job on the built-in demo fleet, from nothing, and write the HTML report.

    Boots the lab (laptops, VPN gateway, NanoMDM and simulated iPads), pins host keys, applies
    the VPN gateway, provisions the laptops (which enrols them in the VPN), installs the iPads'
    profiles, runs the compliance check over both fleets and writes the report. Needs root. Some simulated
    iPads are faulty on purpose (offline, no passcode, old iPadOS), so the report has findings.
    Stop the lab afterwards with `werne lab down`.

    Example:

        werne demo --laptops 3 --ipads 12
    """
    from lab.demo import run_demo

    result = run_demo(app.config, laptops=laptops, ipads=ipads, say=lambda m: echo(m, err=True))
    echo("")
    for name, outcome in result.steps:
        echo(f"{name:<16} {outcome}")
    echo("")
    echo(f"Report: {result.report_path}")
    echo("Stop the lab with: werne lab down")


if __name__ == "__main__":  # pragma: no cover
    main()
