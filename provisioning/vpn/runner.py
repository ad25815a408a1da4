"""Running the VPN playbooks through provisioning.ansible (the same pinned host keys and SSH
settings as `werne laptop provision`), and reading back what named tasks reported (public keys,
the gateway's peer dump). A failed or unreachable host is a result here, not an exception.
"""

from __future__ import annotations

import secrets
import socket
from datetime import UTC, datetime
from typing import Any

from core.config import Config
from core.inventory import Inventory
from provisioning import ansible
from provisioning.errors import AnsibleRunError
from provisioning.preflight import known_hosts_path
from provisioning.vpn.errors import GatewayUnreachableError, VPNError, VPNInputError


def peer_reason(r: ansible.HostResult) -> str | None:
    """A host's reason next to its outcome: without the "unreachable: " the outcome already says."""
    return r.reason.removeprefix("unreachable: ") if r.reason else r.reason


def run_vpn_playbook(config: Config, inventory: Inventory, playbook: str, hosts: list[str],
                     extravars: dict[str, Any], read: set[str], purpose: str) -> ansible.AnsibleResult:
    """Run playbooks/<playbook> on `hosts` (a --limit) and return per-host results; the stdout of
    the tasks named in `read` is in each host's `reported`."""
    if not hosts:
        return ansible.AnsibleResult("successful", 0, "", {})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    ident = f"vpn-{purpose}-{stamp}-{secrets.token_hex(3)}"
    try:
        run = ansible.run_playbook(
            config,
            playbook,
            inventory=inventory.hosts_file,
            hosts=hosts,
            private_data_dir=config.state_dir / "artifacts" / ident,
            known_hosts=known_hosts_path(config),
            forks=max(1, min(config.provisioning.forks, len(hosts))),
            timeout_s=config.vpn.run_timeout_s,
            ident=ident,
            extravars=extravars,
            report_tasks=frozenset(read),
        )
    except AnsibleRunError as e:
        raise VPNError(str(e)) from None
    if not run.complete:
        raise VPNError(f"ansible-playbook {playbook} stopped before reporting on the hosts "
                       f"(status {run.status}, rc {run.rc}); see {run.artifact_dir}")
    return run


def gateway_name(inventory: Inventory) -> str:
    if not inventory.gateways:
        raise VPNInputError(f"no host in group 'vpn_gateway' in {inventory.hosts_file}")
    return next(iter(inventory.gateways))


def check_gateway_reachable(config: Config, inventory: Inventory) -> str:
    """TCP-connect to the gateway's SSH port (with the configured timeout) before changing anything."""
    name = gateway_name(inventory)
    gw = inventory.gateways[name]
    try:
        with socket.create_connection((gw.ansible_host, gw.ansible_port), timeout=config.ssh.connect_timeout):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError | socket.timeout) else (e.strerror or str(e))
        raise GatewayUnreachableError(f"VPN gateway {name} ({gw.ansible_host}:{gw.ansible_port}) is "
                                      f"unreachable: {reason}; nothing was changed") from None
    return name


def read_gateway_dump(config: Config, inventory: Inventory) -> str:
    """`wg show <if> dump` from the gateway, without its interface line (which holds the private key)."""
    name = check_gateway_reachable(config, inventory)
    run = run_vpn_playbook(config, inventory, "vpn_status.yml", [name],
                           {"wireguard_gateway_interface": config.vpn.interface}, {"Report the gateway's peer dump"},
                           "status")
    r = run.outcomes[name]
    if not r.succeeded:
        raise GatewayUnreachableError(f"cannot read the VPN gateway {name}: {r.reason}")
    return r.reported.get("Report the gateway's peer dump", "")
