"""`werne vpn`: the WireGuard VPN of the home-office laptops (gateway, keys, revocation, status)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from commands import render
from commands.context import AppContext, finish, pass_app
from commands.options import hosts_argument, json_option

if TYPE_CHECKING:
    from provisioning.vpn.ops import VPNReport

STATUS_COLUMNS = (render.Col(12), render.Col(8), render.Col(15), render.Col(), render.Col(5), render.Col(),
                  render.Col(12), render.Col(21), render.Col())


@click.group()
def vpn() -> None:
    """The WireGuard VPN of the home-office laptops: gateway, keys, revocation, evidence.

    Example:

        werne vpn status
    """


@vpn.group("gateway")
def vpn_gateway() -> None:
    """The VPN gateway (the host in inventory group vpn_gateway).

    Example:

        werne vpn gateway apply
    """


def _vpn_peer_lines(report: VPNReport) -> None:
    for h in report.hosts:
        extra = f" ({h.address})" if h.address and h.ok else ""
        render.line(f"{h.host}: {h.outcome}{extra}" + (f": {h.reason}" if h.reason else ""))
    if report.gateway is not None:
        render.line(f"gateway {report.gateway.gateway}: {report.gateway.peers} active peer(s)")


@vpn_gateway.command("apply")
@json_option()
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
        render.json_out(result.model_dump())
        return
    render.line(f"gateway {result.gateway}: {result.peers} active peer(s), public key {result.public_key}")


@vpn.command("enrol")
@hosts_argument(required=True)
@json_option()
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
        render.json_out(report.model_dump())
    else:
        _vpn_peer_lines(report)
    finish(report)


@vpn.command("rotate")
@hosts_argument()
@click.option("--older-than", default=None, help="Rotate every key older than this, e.g. 90d, 12w, 36h.")
@json_option()
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
        render.json_out(report.model_dump())
    elif not report.hosts:
        render.line("no keys to rotate")
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
    render.line(f"{r.host}: {r.outcome}" + (f" ({r.reason})" if r.reason else ""))


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
    render.line(f"{r.host}: {r.outcome}: {r.reason}")


@vpn.command("status")
@json_option("one object per peer")
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
        render.json_out([p.model_dump() for p in report.peers])
    else:
        rows = []
        for p in report.peers:
            hs = "never" if p.handshake_age_s is None else f"{p.handshake_age_s}s ago"
            key_age = "-" if p.key_age_days is None else f"{p.key_age_days:.0f}d"
            rows.append((p.host or "?", p.status, p.address or "-", "key", key_age, "handshake", hs,
                         p.endpoint or "-", ",".join(p.flags) or "ok"))
        render.table(STATUS_COLUMNS, rows)
    finish(report)
