"""Running the VPN playbooks through ansible-runner, with the same pinned host keys and SSH settings
as `werne laptop provision` (provisioning.runner.ansible_envvars), and reading back what named
tasks reported (public keys, the gateway's peer dump).

provisioning.runner.run_playbook runs only the configured baseline playbook with fixed extra vars,
so this is a thin wrapper over ansible_runner with dict arguments; a failed or unreachable host is
a result here, not an exception.
"""

from __future__ import annotations

import secrets
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.config import REPO_ROOT, Config
from core.inventory import Inventory
from provisioning.vpn.errors import GatewayUnreachableError, VPNError

PLAYBOOKS = REPO_ROOT / "playbooks"
REASON_MAX = 300


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


@dataclass
class HostRun:
    """One host's part of a run: ok/failed/unreachable, why, and the stdout of the tasks we read."""

    host: str
    outcome: str = "ok"  # ok | failed | unreachable
    reason: str | None = None
    reported: dict[str, str] = field(default_factory=dict)


@dataclass
class PlaybookRun:
    """What one ansible-runner invocation left."""

    status: str
    rc: int | None
    artifact_dir: str
    hosts: dict[str, HostRun]

    def ok_hosts(self) -> list[str]:
        return [h for h, r in self.hosts.items() if r.outcome == "ok"]


class _Collector:
    """Folds runner events into HostRun records; keeps stdout only for the tasks named in `read`."""

    def __init__(self, hosts: list[str], read: set[str]):
        self.hosts = {h: HostRun(h) for h in hosts}
        self.read = read
        self.stats_seen = False
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        with self._lock:
            if kind == "playbook_on_stats":
                self.stats_seen = True
                processed = set((data.get("processed") or {}).keys())
                for h, r in self.hosts.items():
                    if h not in processed and r.outcome == "ok":
                        r.outcome, r.reason = "failed", "Ansible did not run on this host"
                return True
            host = data.get("host")
            if not host or host not in self.hosts:
                return True
            task = str(data.get("task") or "")
            res = data.get("res") or {}
            rec = self.hosts[host]
            if kind == "runner_on_ok" and task in self.read:
                rec.reported[task] = str(res.get("stdout") or "")
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                msg = str(res.get("msg") or "failed")
                stderr = str(res.get("stderr") or "").strip()
                if stderr:
                    msg = f"{msg}: {stderr.splitlines()[-1]}"
                rec.outcome, rec.reason = "failed", _one_line(f"task '{task}' failed: {msg}")
            elif kind == "runner_on_unreachable":
                rec.outcome = "unreachable"
                rec.reason = _one_line(str(res.get('msg') or 'cannot connect'))
        return True


def run_vpn_playbook(config: Config, inventory: Inventory, playbook: str, hosts: list[str],
                     extravars: dict[str, Any], read: set[str], purpose: str) -> PlaybookRun:
    """Run playbooks/<playbook> on `hosts` (a --limit) and return per-host results."""
    from ansible_runner import Runner, RunnerConfig

    from provisioning.runner import ansible_envvars, scrub_env

    if not hosts:
        return PlaybookRun("successful", 0, "", {})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    ident = f"vpn-{purpose}-{stamp}-{secrets.token_hex(3)}"
    private_data_dir = config.state_dir / "artifacts" / ident
    try:
        private_data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VPNError(f"cannot create {private_data_dir}: {e.strerror}") from None
    collector = _Collector(hosts, read)
    rc = RunnerConfig(
        private_data_dir=str(private_data_dir),
        project_dir=str(PLAYBOOKS),
        playbook=playbook,
        inventory=str(inventory.hosts_file),
        limit=",".join(hosts),
        forks=max(1, min(config.provisioning.forks, len(hosts))),
        envvars=ansible_envvars(config),
        extravars=extravars,
        ident=ident,
        quiet=True,
        timeout=config.vpn.run_timeout_s,
        suppress_env_files=True,
    )
    try:
        rc.prepare()
    except Exception as e:  # ansible_runner raises ConfigurationError and plain OSErrors here
        raise VPNError(f"cannot prepare the Ansible run: {e}") from None
    rc.env = scrub_env(rc.env)
    runner = Runner(rc, event_handler=collector)
    runner.run()
    artifact_dir = str(rc.artifact_dir)
    if not collector.stats_seen:
        raise VPNError(f"ansible-playbook {playbook} stopped before reporting on the hosts "
                       f"(status {runner.status}, rc {runner.rc}); see {artifact_dir}")
    return PlaybookRun(runner.status, runner.rc, artifact_dir, collector.hosts)


def gateway_name(inventory: Inventory) -> str:
    if not inventory.gateways:
        from provisioning.vpn.errors import VPNInputError

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
    r = run.hosts[name]
    if r.outcome != "ok":
        raise GatewayUnreachableError(f"cannot read the VPN gateway {name}: {r.reason}")
    return r.reported.get("Report the gateway's peer dump", "")
