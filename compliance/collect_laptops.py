"""Collect the laptops' facts: ONE Ansible task per host (the werne_facts script, run by `raw`), in
check mode, through provisioning.ansible.

The same run reads the VPN gateway's `wg show all dump` (werne_facts on the gateway), which is the
run's only VPN evidence: matched to the peers in the database (provisioning.vpn.status.build_status)
and, for laptops without a peer record, to their VPN address. Per-host failures are results
(unreachable / error), not exceptions; only a run that cannot start at all raises CollectionError.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compliance.errors import CollectionError
from compliance.evidence import age_label, clock_label, freshest, store_evidence
from compliance.facts import DeviceFacts
from compliance.vulns.laptops import add_controller_facts
from compliance.vulns.packages import keep_package_lists
from core.config import Config
from core.db import Database
from core.inventory import Inventory
from core.timing import StepTimes, timed
from provisioning import ansible
from provisioning.ansible import one_line
from provisioning.errors import AnsibleRunError
from provisioning.home.presence import seen_off_by_watcher
from provisioning.home.reach import is_home_office, reach_map
from provisioning.preflight import known_hosts_path
from provisioning.vpn.status import DumpPeer, build_status, load_records

PLAYBOOK = ansible.PLAYBOOK_DIR / "compliance_facts.yml"
# The playbook's one task; its result carries the host's facts.
FACTS_TASK = "Collect all compliance facts in one task"


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

# What a host's runner event means for the facts: its status in the run.
_EVENT_STATUS = {"ok": "ok", "unreachable": "unreachable", "failed": "error"}


def ansible_env(config: Config) -> dict[str, str]:
    """ansible-playbook's environment: provisioning's (pinned known_hosts, key, venv on PATH, with
    pipelining)."""
    return ansible.ansible_envvars(config, known_hosts_path(config), pipelining=True)


def _host_reason(res: dict[str, Any]) -> str:
    stderr = [ln for ln in str(res.get("stderr") or "").splitlines() if ln.strip()]
    # The script's own failure (a traceback, a missing python3) says more than raw's "non-zero return code".
    msg = str((stderr[-1] if stderr else "") or res.get("msg") or res.get("module_stderr") or "failed").strip()
    return " ".join(msg.split())[:200]


def _script_output(res: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The facts script's JSON line from the task's stdout (its last line), or why there is none."""
    lines = [ln for ln in str(res.get("stdout") or "").splitlines() if ln.strip()]
    if not lines:
        return None, "the facts script printed nothing"
    try:
        out = json.loads(lines[-1])
    except ValueError:
        return None, "the facts script printed no JSON: " + " ".join(lines[-1].split())[:150]
    if not isinstance(out, dict) or not isinstance(out.get("werne_facts"), dict):
        return None, "the facts script printed no facts"
    return out, ""


def run_facts_playbook(
    config: Config,
    inventory: Inventory,
    hosts: list[str],
    artifact_dir: Path,
    progress: ProgressCallback | None = None,
    times: StepTimes | None = None,
) -> dict[str, tuple[str, Any]]:
    """Run the one-task playbook on `hosts` and the VPN gateways; returns host -> ("ok", facts) |
    ("unreachable"|"error", reason). `times` gets the playbook's step and what the hosts measured."""
    if not config.ssh_key_file.exists():
        raise CollectionError(f"SSH key {config.ssh_key_file} does not exist (ssh.private_key_file)")
    total = len(hosts)
    seen: dict[str, str] = {}

    def on_progress(p: ansible.RunProgress) -> None:
        if p.host is None or p.event is None:
            return
        seen[p.host] = _EVENT_STATUS[p.event]
        if progress is not None and p.host in hosts:
            progress(Progress("laptops", sum(1 for h in seen if h in hosts), total, p.host, seen[p.host]))

    try:
        with timed(times, "laptops.playbook", children=True):
            run = ansible.run_playbook(
                config,
                PLAYBOOK.name,
                inventory=inventory.hosts_file,
                hosts=hosts + list(inventory.gateways),
                private_data_dir=artifact_dir,
                known_hosts=known_hosts_path(config),
                forks=config.compliance.forks,
                timeout_s=int(max(300, 10 * len(hosts))),
                extravars={"werne_admin_user": config.ssh.user},
                check_mode=True,
                pipelining=True,
                report_tasks=frozenset({FACTS_TASK}),
                progress=on_progress,
                keep_events=False,  # facts go to the database, not to the artifacts
                rotate_artifacts=5,
                via_nodes=True,
            )
    except AnsibleRunError as e:
        raise CollectionError(f"cannot run ansible-playbook: {e}") from None
    out: dict[str, tuple[str, Any]] = {}
    host_times = []
    for host, r in run.outcomes.items():
        res = r.results.get(FACTS_TASK)
        if r.outcome == "unreachable":
            out[host] = ("unreachable", _host_reason(r.failure or {}))
        elif r.failure is not None:
            out[host] = ("error", _host_reason(r.failure))
        elif res is not None:
            printed, why = _script_output(res)
            out[host] = ("ok", printed["werne_facts"]) if printed is not None else ("error", why)
            host_times.append((printed or {}).get("werne_timings"))
    if not out and run.rc != 0:
        raise CollectionError(
            f"ansible-playbook failed before reaching any host (rc {run.rc}, "
            f"status {run.status}); see {artifact_dir}"
        )
    for h in hosts:
        out.setdefault(h, ("error", f"no result from Ansible (status {run.status})"))
    if times is not None:
        add_host_times(times, host_times)
    return out


# The werne_facts sections the breakdown names (the module times each; see werne_timings there).
HOST_STEPS = {"total": "laptops.on_hosts", "patch": "laptops.patch", "packages": "laptops.packages"}


def add_host_times(times: StepTimes, per_host: list[Any]) -> None:
    """What werne_facts measured on each host (`werne_timings`: section -> [wall s, CPU s], the CPU
    of the module and the commands it ran), as steps: wall the slowest host's, CPU the sum."""
    for section, name in HOST_STEPS.items():
        pairs = [t[section] for t in per_host if isinstance(t, dict) and isinstance(t.get(section), list)]
        if pairs:
            walls = sorted(float(w) for w, _ in pairs)
            times.add(name, walls[-1], sum(float(c) for _, c in pairs), "hosts", count=len(pairs),
                      wall_median_s=round(walls[len(walls) // 2], 4), wall_sum_s=round(sum(walls), 3))


def _gateway_dump(peers: list[dict[str, Any]], interface: str) -> list[DumpPeer]:
    """The peers werne_facts read on the gateway (`wg show all dump`), on the VPN's interface."""
    return [
        DumpPeer(
            public_key=p["public_key"],
            endpoint=None if p.get("endpoint") in (None, "(none)") else p["endpoint"],
            allowed_ips=tuple(p.get("allowed_ips") or ()),
            latest_handshake=int(p.get("latest_handshake") or 0),
            rx_bytes=int(p.get("rx") or 0),
            tx_bytes=int(p.get("tx") or 0),
            persistent_keepalive=None,
        )
        for p in peers
        if p.get("interface") == interface
    ]


def vpn_evidence(
    config: Config,
    inventory: Inventory,
    db: Database,
    gathered: dict[str, tuple[str, Any]],
    now: datetime | None = None,
) -> tuple[dict[str, dict[str, Any]], str]:
    """Per laptop: the gateway's view of its peer, from the dump this run gathered on the gateway.
    Returns (evidence by host, why there is none). Ages are taken against `now`; whether they are
    too old is for the compliance rules to judge."""
    reason = ""
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
    evidence: dict[str, dict[str, Any]] = {}
    if gw_peers is not None:
        # Peers the database knows: matched by public key, with key age from the database.
        records, retired = load_records(db)
        statuses = build_status(records, _gateway_dump(gw_peers, config.vpn.interface), now or datetime.now(UTC),
                                handshake_max_age_s=config.vpn.handshake_max_age_s,
                                key_max_age_days=config.vpn.key_max_age_days, retired_keys=retired,
                                inventory_hosts=set(inventory.laptops))
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
    for name, lap in inventory.laptops.items():
        if name in evidence:
            continue
        if gw_peers is None:
            evidence[name] = {"evidence": False, "reason": reason or "no gateway evidence"}
            continue
        # No peer record (the VPN was set up outside werne): matched by the laptop's VPN address.
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
    db: Database,
    artifact_dir: Path,
    hosts: list[str] | None = None,
    progress: ProgressCallback | None = None,
    now: datetime | None = None,
    times: StepTimes | None = None,
) -> list[DeviceFacts]:
    """Facts for every laptop in the inventory (or the named ones), with the gateway's VPN evidence.
    `now` is the run's clock, against which the gateway's handshake and key ages are computed;
    `times` gets the steps (compliance.timings)."""
    names = hosts if hosts is not None else sorted(inventory.laptops)
    if not names:
        return []
    if shutil.which("ansible-playbook", path=ansible_env(config)["PATH"]) is None:
        raise CollectionError("ansible-playbook is not installed (run scripts/setup.sh)")
    at = now or datetime.now(UTC)
    with timed(times, "laptops.presence"):
        off = switched_off(config, inventory, db, names, at)
    ask = [n for n in names if n not in off]
    collected: dict[str, tuple[str, Any]] = {h: ("off", why) for h, why in off.items()}
    if ask:
        collected.update(gather_facts(config, inventory, db, ask, artifact_dir, progress, at, times))
    devices = devices_with_evidence(config, inventory, db, names, collected, at, source="nightly", times=times)
    # What only the controller knows (known vulnerabilities, the escrowed recovery key), judged with
    # each laptop's freshest evidence; not stored as evidence.
    with timed(times, "laptops.controller_facts"):
        add_controller_facts(config, db, devices, at)
    return devices


def switched_off(config: Config, inventory: Inventory, db: Database, names: list[str],
                 now: datetime) -> dict[str, str]:
    """Home-office laptops (reached through the VPN) that `werne laptop watch` sees switched off
    now: not contacted, so the run spends no SSH time-out on them. Only while the watcher is
    running, i.e. their presence row was written within 3 poll intervals; otherwise the presence
    is stale and they are tried as before. host -> why, in words for the report."""
    if not any(is_home_office(inventory, n) for n in names):
        return {}
    vpn = [n for n, r in reach_map(db, inventory).items() if r.via == "vpn" and n in names]
    h = config.homeoffice
    seen = seen_off_by_watcher(db, vpn, now, 3 * h.poll_interval_s)
    zone = config.compliance.timezone
    return {host: ("switched off: no handshake since " + clock_label(at, now, zone) if at is not None
                   else "switched off: no handshake seen") + " (watcher)"
            for host, at in sorted(seen.items())}


def gather_facts(
    config: Config,
    inventory: Inventory,
    db: Database,
    names: list[str],
    artifact_dir: Path,
    progress: ProgressCallback | None,
    now: datetime,
    times: StepTimes | None = None,
) -> dict[str, tuple[str, Any]]:
    """host -> ("ok", facts with the gateway's VPN evidence) | ("unreachable"|"error", reason)."""
    gathered = run_facts_playbook(config, inventory, names, artifact_dir, progress, times)
    # The package lists go to their own table; the evidence keeps each list's digest and count.
    with timed(times, "laptops.package_lists"):
        keep_package_lists(db, {h: p for h, (st, p) in gathered.items() if st == "ok" and isinstance(p, dict)})
    with timed(times, "laptops.vpn_evidence"):
        vpn, _ = vpn_evidence(config, inventory, db, gathered, now)
    out: dict[str, tuple[str, Any]] = {}
    for name in names:
        status, payload = gathered[name]
        if status == "ok":
            facts = dict(payload)
            facts["vpn"] = vpn.get(name, {"evidence": False, "reason": "no gateway evidence"})
            out[name] = ("ok", facts)
        else:
            out[name] = (status, payload)
    return out


def devices_with_evidence(
    config: Config,
    inventory: Inventory,
    db: Database,
    names: list[str],
    collected: dict[str, tuple[str, Any]],
    now: datetime,
    source: str,
    times: StepTimes | None = None,
) -> list[DeviceFacts]:
    """Store what was collected as evidence and judge each laptop on its freshest evidence: what
    this run collected, else the newest stored facts (a laptop switched off tonight), with their age.
    `collected` is host -> ("ok", facts) | ("unreachable"|"error", reason) | ("off", why it was
    not contacted)."""
    with timed(times, "laptops.evidence_write"):
        stored = store_evidence(config, db, {h: f for h, (st, f) in collected.items() if st == "ok"}, now, source)
    missing = [n for n in names if n not in stored]
    with timed(times, "laptops.evidence_read"):
        older = freshest(db, missing) if missing else {}
    zone = config.compliance.timezone
    out = []
    for name in names:
        status, payload = collected[name]
        lap = inventory.laptops[name]
        if name in stored:
            ev = stored[name]
            out.append(DeviceFacts(device=name, fleet="laptops", facts=ev.facts, name=lap.asset_tag,
                                   evidence_label="collected during this run",
                                   evidence_ref={"id": ev.id, "record_hash": ev.record_hash}))
        elif name in older:
            ev = older[name]
            label = age_label(ev.collected_at, now, zone)
            # "off": not contacted, the watcher sees it switched off (the payload says since when).
            why = str(payload) if status == "off" else f"{status} now ({one_line(str(payload))[:120]})"
            out.append(DeviceFacts(device=name, fleet="laptops", facts=ev.facts, name=lap.asset_tag,
                                   reason=f"{why}; judged on {label}",
                                   evidence_at=ev.collected_at, evidence_label=label,
                                   evidence_ref={"id": ev.id, "record_hash": ev.record_hash}))
        else:
            out.append(
                DeviceFacts(
                    device=name,
                    fleet="laptops",
                    reachable=False,
                    reason=str(payload),
                    failure="unreachable" if status in ("unreachable", "off") else "error",
                    name=lap.asset_tag,
                    evidence_label="never seen",
                )
            )
    return out
