"""Collect the laptops' facts: ONE Ansible task per host (werne_facts), in check mode, via ansible-runner.

The VPN evidence comes from the gateway: `vpn.status.collect_status` when the VPN package and its
peer records are there, else the gateway's own `wg show all dump` peers gathered by the same task
(matched to laptops by their VPN address). Per-host failures are results (unreachable / error), not
exceptions; only a run that cannot start at all raises CollectionError.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from compliance.engine import DeviceFacts
from compliance.errors import CollectionError
from core.config import REPO_ROOT, Config
from core.inventory import Inventory

PLAYBOOK = REPO_ROOT / "playbooks" / "compliance_facts.yml"


@dataclass
class Progress:
    """One step of a run, for live progress: which fleet, how far, what just happened."""

    fleet: str
    done: int
    total: int
    device: str = ""
    status: str = ""
    message: str = ""


ProgressCallback = Callable[[Progress], None]


def known_hosts_file(config: Config) -> Path:
    """The pinned host keys that `werne laptop preflight --accept-new` records."""
    return config.state_dir / "known_hosts"


def ansible_env(config: Config) -> dict[str, str]:
    """ansible-playbook's environment: the provisioning runner's (pinned known_hosts, key, pipelining,
    venv on PATH) when that package is there, plus this repo's module library."""
    try:
        from provisioning.runner import ansible_envvars

        env = ansible_envvars(config, pipelining=True)
    except ImportError:
        kh = known_hosts_file(config)
        env = {
            "ANSIBLE_SSH_ARGS": (
                "-o ControlMaster=auto -o ControlPersist=60s -o BatchMode=yes "
                f"-o UserKnownHostsFile={kh} -o GlobalKnownHostsFile=/dev/null "
                "-o StrictHostKeyChecking=yes"
            ),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_PRIVATE_KEY_FILE": str(config.ssh_key_file),
            "ANSIBLE_REMOTE_USER": config.ssh.user,
            "ANSIBLE_TIMEOUT": str(int(max(1, config.ssh.connect_timeout))),
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "True",
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        }
    env["ANSIBLE_LIBRARY"] = str(PLAYBOOK.parent / "library")
    return env


def _host_reason(res: dict[str, Any]) -> str:
    msg = str(res.get("msg") or res.get("stderr") or res.get("module_stderr") or "failed").strip()
    return " ".join(msg.split())[:200]


def run_facts_playbook(
    config: Config,
    inventory: Inventory,
    hosts: list[str],
    artifact_dir: Path,
    progress: ProgressCallback | None = None,
) -> dict[str, tuple[str, Any]]:
    """Run the one-task playbook; returns host -> ("ok", facts) | ("unreachable"|"error", reason)."""
    import ansible_runner

    if not config.ssh_key_file.exists():
        raise CollectionError(f"SSH key {config.ssh_key_file} does not exist (ssh.private_key_file)")
    artifact_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[str, Any]] = {}
    total = len(hosts)
    lock = threading.Lock()

    def on_event(ev: dict[str, Any]) -> bool:
        kind = ev.get("event", "")
        if kind not in ("runner_on_ok", "runner_on_unreachable", "runner_on_failed"):
            return True
        data = ev.get("event_data", {})
        host = data.get("host", "")
        res = data.get("res", {}) or {}
        if kind == "runner_on_ok" and "werne_facts" in res:
            out[host] = ("ok", res["werne_facts"])
        elif kind == "runner_on_unreachable":
            out[host] = ("unreachable", _host_reason(res))
        else:
            out[host] = ("error", _host_reason(res))
        if progress is not None and host in hosts:
            with lock:
                progress(Progress("laptops", sum(1 for h in out if h in hosts), total, host, out[host][0]))
        return False  # do not keep event files: facts go to the database, not to artifacts

    limit = ",".join(hosts + list(inventory.gateways))
    try:
        runner = ansible_runner.run(
            private_data_dir=str(artifact_dir),
            playbook=str(PLAYBOOK),
            inventory=str(inventory.hosts_file),
            limit=limit,
            forks=config.compliance.forks,
            cmdline="--check",
            quiet=True,
            envvars=ansible_env(config),
            extravars={"werne_admin_user": config.ssh.user},
            event_handler=on_event,
            rotate_artifacts=5,
            timeout=int(max(300, 10 * len(hosts))),
        )
    except (OSError, ValueError) as e:
        raise CollectionError(f"cannot run ansible-playbook: {e}") from None
    if not out and runner.rc != 0:
        raise CollectionError(
            f"ansible-playbook failed before reaching any host (rc {runner.rc}, "
            f"status {runner.status}); see {artifact_dir}"
        )
    for h in hosts:
        out.setdefault(h, ("error", f"no result from Ansible (status {runner.status})"))
    return out


def vpn_evidence(
    config: Config,
    inventory: Inventory,
    db: Any,
    gathered: dict[str, tuple[str, Any]],
    now: datetime | None = None,
) -> tuple[dict[str, dict[str, Any]], str]:
    """Per laptop: the gateway's view of its peer. Returns (evidence by host, source description)."""
    evidence: dict[str, dict[str, Any]] = {}
    reason = ""
    try:
        from provisioning.vpn.status import collect_status

        statuses = collect_status(config, inventory, db, now=now)
        for st in statuses:
            if st.host and st.status in ("active", "pending"):
                evidence[st.host] = {
                    "evidence": True,
                    "peer": st.on_gateway,
                    "handshake_age_s": st.handshake_age_s,
                    "key_age_days": st.key_age_days,
                    "gateway_allowed_ips": st.allowed_ips,
                    "flags": list(st.flags),
                    "source": "vpn.status",
                }
    except ImportError:
        reason = "the VPN package is not installed"
    except Exception as e:  # noqa: BLE001 - any failure here falls back to the gathered dump
        reason = f"{e.__class__.__name__}: {e}"
    gw_peers: list[dict[str, Any]] | None = None
    for gw in inventory.gateways:
        status, facts = gathered.get(gw, ("error", "not asked"))
        if status == "ok" and (facts.get("wg_gateway") or {}).get("available"):
            gw_peers = facts["wg_gateway"]["peers"]
        elif not reason:
            why = facts if isinstance(facts, str) else (facts.get("wg_gateway") or {}).get("reason")
            reason = f"gateway {gw}: {why}"
    if not inventory.gateways and not reason:
        reason = "no host in group vpn_gateway"
    for name, lap in inventory.laptops.items():
        if name in evidence:
            continue
        if gw_peers is None:
            evidence[name] = {"evidence": False, "reason": reason or "no gateway evidence"}
            continue
        addr = ipaddress.ip_address(str(lap.vpn_address))
        peer = next(
            (
                p
                for p in gw_peers
                if any(
                    addr in ipaddress.ip_network(a, strict=False)
                    and ipaddress.ip_network(a, strict=False).prefixlen >= 24
                    for a in p["allowed_ips"]
                )
            ),
            None,
        )
        lap_status, lap_facts = gathered.get(name, ("error", None))
        key_mtime = lap_facts.get("wg", {}).get("key_mtime") if lap_status == "ok" else None
        evidence[name] = {
            "evidence": True,
            "peer": peer is not None,
            "source": "gateway wg dump",
            "latest_handshake": peer["latest_handshake"] if peer else None,
            "key_created": key_mtime,
            "gateway_allowed_ips": peer["allowed_ips"] if peer else [],
        }
    return evidence, reason


def collect_laptops(
    config: Config,
    inventory: Inventory,
    db: Any,
    artifact_dir: Path,
    hosts: list[str] | None = None,
    progress: ProgressCallback | None = None,
    now: datetime | None = None,
) -> list[DeviceFacts]:
    """Facts for every laptop in the inventory (or the named ones), with the gateway's VPN evidence.
    `now` is the run's clock, against which the gateway's handshake and key ages are computed."""
    names = hosts if hosts is not None else sorted(inventory.laptops)
    if not names:
        return []
    if shutil.which("ansible-playbook", path=ansible_env(config)["PATH"]) is None:
        raise CollectionError("ansible-playbook is not installed (run scripts/setup.sh)")
    gathered = run_facts_playbook(config, inventory, names, artifact_dir, progress)
    vpn, _ = vpn_evidence(config, inventory, db, gathered, now)
    out = []
    for name in names:
        status, payload = gathered[name]
        lap = inventory.laptops[name]
        if status == "ok":
            facts = dict(payload)
            facts["vpn"] = vpn.get(name, {"evidence": False, "reason": "no gateway evidence"})
            out.append(DeviceFacts(device=name, fleet="laptops", facts=facts, name=lap.asset_tag))
        else:
            out.append(
                DeviceFacts(
                    device=name,
                    fleet="laptops",
                    reachable=False,
                    reason=str(payload),
                    failure="unreachable" if status == "unreachable" else "error",
                    name=lap.asset_tag,
                )
            )
    return out
