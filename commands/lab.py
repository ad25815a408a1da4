"""`werne lab`: the lab of real Linux laptops (systemd-nspawn) and simulated iPads on this machine."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from commands import render
from commands.context import AppContext, pass_app
from commands.options import hosts_argument, json_option

if TYPE_CHECKING:
    from lab.laptops import Lab, LabHost

HOST_COLUMNS = (render.Col(8), render.Col(15), render.Col())


def _lab(app: AppContext) -> Lab:
    from lab.laptops import Lab

    cfg = app.config
    return Lab(cfg.state_dir, cache_dir=cfg.lab.cache_dir, suite=cfg.lab.suite)


def _state(host: LabHost) -> str:
    return "running" if host.running else "stopped"


def _host_table(hosts: Iterable[LabHost]) -> None:
    render.table(HOST_COLUMNS, ((h.name, h.address, _state(h)) for h in hosts))


@click.group()
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
                        progress=render.to_stderr)
    _host_table(result.hosts)
    render.line(f"inventory: {result.inventory}")
    render.line(f"key: {result.key_file}")
    if result.ipads is not None:
        render.line(f"ipads: {result.ipads.ipads} (NanoMDM at {result.ipads.nanomdm_url})")


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
    render.line("lab is down")


@lab.command("status")
@json_option("the hosts")
@pass_app
def lab_status(app: AppContext, as_json: bool) -> None:
    """Show each lab host: name, address, running or stopped.

    Example:

        werne lab status --json
    """
    hosts = _lab(app).status()
    if as_json:
        render.json_out([h.to_dict() for h in hosts])
        return
    if not hosts:
        render.line("the lab has no hosts (run `werne lab up`)")
    _host_table(hosts)


@lab.command("home-office")
@hosts_argument(required=True)
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
    moved = lab_.home_office(list(hosts), home=not back)
    render.table((render.Col(8), render.Col()),
                 ((h.name, "office " + h.address if back else "home (192.168.178.20 behind its router)")
                  for h in moved))
    if not back:
        lab_.route_vpn_pool(app.config.vpn.pool_v4)
        render.line(f"route: {app.config.vpn.pool_v4} via vpngw")


@lab.command("off")
@hosts_argument(required=True)
@pass_app
def lab_off(app: AppContext, hosts: tuple[str, ...]) -> None:
    """Switch lab laptops off (disk, host key and home network stay).

    Example:

        werne lab off lap03 lap04
    """
    _lab(app).switch_off(list(hosts))
    render.line(f"switched off: {' '.join(hosts)}")


@lab.command("on")
@hosts_argument(required=True)
@pass_app
def lab_on(app: AppContext, hosts: tuple[str, ...]) -> None:
    """Switch lab laptops on and wait for their sshd.

    Example:

        werne lab on lap03 lap04
    """
    render.table((render.Col(8), render.Col()), ((h.name, _state(h)) for h in _lab(app).switch_on(list(hosts))))
