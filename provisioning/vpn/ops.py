"""The VPN's operations: admit laptops (their own keys), apply the gateway, rotate, revoke, reinstate.

Order of every change: the gateway is changed first and the state database only after the gateway
took it, so an unreachable gateway leaves both as they were (exit 3). Laptops are only ever asked
for public keys; their private keys stay on them.

Rotation (per laptop): make the next key on the laptop -> gateway swaps old for new public key ->
laptop switches to the next key. If the laptop cannot switch, the gateway is swapped back, so the
old key keeps working and nothing is half-applied. Both keys never work at the same time.

A home-office laptop that werne reaches only through its tunnel cannot be told to switch over that
tunnel once the gateway has swapped (its SSH session runs through the key being replaced). So it
switches by itself: the prepare phase arms a timer on the laptop (playbooks/roles/wireguard_client/
templates/werne-wg-rotate.j2) that switches the running tunnel to the next key after
`[vpn] rotate_switch_after_s` and switches back after `rotate_revert_after_s` more, unless werne
commits through the tunnel before then. A commit that gets through is the proof that both sides
agree; one that does not (the laptop went away) makes werne swap the gateway back, and the laptop
goes back to its current key by itself (or boots with it, the files being untouched).
A home-office laptop that cannot be reached at all gets the rotation queued for `werne laptop watch`.
"""

from __future__ import annotations

import ipaddress
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit import current_actor, record
from core.config import Config
from core.db import Database
from core.findings import Findings
from core.inventory import Inventory
from core.locks import file_lock
from provisioning import ansible
from provisioning.home.models import KIND_VPN_ROTATE
from provisioning.home.pending import queue_for_later
from provisioning.home.reach import reach_map
from provisioning.vpn.errors import (
    GatewayNotReadyError,
    GatewayUnreachableError,
    PublicKeyError,
    UnknownPeerError,
    VPNError,
    VPNInputError,
)
from provisioning.vpn.gateway import GatewayPeer, GatewaySettings, peer_allowed_ips, render_gateway
from provisioning.vpn.keys import check_duplicates, validate_public_key
from provisioning.vpn.models import PEER_ACTIVE, PEER_PENDING, PEER_REVOKED, VPNGateway, VPNPeer, VPNRetiredKey
from provisioning.vpn.pool import AddressPool
from provisioning.vpn.runner import check_gateway_reachable, gateway_name, peer_reason, run_vpn_playbook

PUBLIC_KEY_TASK = "Report the WireGuard public key"
NEXT_KEY_TASK = "Report the next WireGuard public key"
CURRENT_KEY_TASK = "Report the tunnel's public key"
GATEWAY_KEY_TASK = "Report the gateway's public key"
GATEWAY_PEERS_TASK = "Report the gateway's peers"

Outcome = Literal["admitted", "unchanged", "replaced", "rotated", "revoked", "reinstated", "skipped",
                  "queued", "failed", "unreachable"]


class PeerResult(BaseModel):
    """What an operation did to one laptop's peer."""

    host: str
    outcome: Outcome
    reason: str | None = None
    address: str | None = None
    public_key: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome not in ("failed", "unreachable")


class GatewayResult(BaseModel):
    """The gateway as applied: its public key and how many peers it now has."""

    gateway: str
    public_key: str
    peers: int
    config_sha256: str
    artifact_dir: str


class VPNReport(Findings, BaseModel):
    """Result of enrol/rotate: per-laptop outcomes and the gateway apply (if one happened)."""

    action: str
    hosts: list[PeerResult]
    gateway: GatewayResult | None = None

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)


# ---------------------------------------------------------------- helpers ---------------------

@contextmanager
def vpn_lock(config: Config) -> Iterator[None]:
    """One VPN-changing operation per state dir at a time."""
    with file_lock(config.state_dir / "vpn.lock", what="VPN operation", unusable_error=VPNError):
        yield


def gateway_endpoint(config: Config, inventory: Inventory) -> str:
    if config.vpn.gateway_endpoint:
        return config.vpn.gateway_endpoint
    gw = inventory.gateways[gateway_name(inventory)]
    host = gw.ansible_host
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"{host}:{config.vpn.listen_port}"


def planned_peers(db: Database, *, keys: dict[str, str] | None = None,
                  remove: set[str] | None = None) -> list[GatewayPeer]:
    """The peers the gateway should have: every active peer, with `keys` overriding or adding
    (host -> public key) and `remove` left out. Sorted by host, so the config is reproducible."""
    keys = keys or {}
    remove = remove or set()
    with db.session() as s:
        rows = list(s.scalars(select(VPNPeer).order_by(VPNPeer.host)))
    out = []
    for p in rows:
        if p.host in remove or p.status == PEER_REVOKED:
            continue
        key = keys.get(p.host) or (p.public_key if p.status == PEER_ACTIVE else None)
        ips = peer_allowed_ips(p)
        if key and ips:
            out.append(GatewayPeer(p.host, key, ips))
    return out


def _apply(config: Config, db: Database, inventory: Inventory, peers: list[GatewayPeer],
           purpose: str) -> GatewayResult:
    """Install the rendered config on the gateway and check it took exactly these peers.

    Stores the gateway's public key; raises GatewayUnreachableError (nothing stored) otherwise.
    """
    name = check_gateway_reachable(config, inventory)
    settings = GatewaySettings.from_config(config.vpn, config.homeoffice.manage_from)
    rendered = render_gateway(peers, settings)
    extravars = {
        "wireguard_gateway_interface": config.vpn.interface,
        "wireguard_gateway_config": rendered.wg_conf,
        "wireguard_gateway_nftables": rendered.nftables,
        "wireguard_gateway_ipv6": settings.pool_v6 is not None,
        "wireguard_gateway_go_binary": str(config.vpn.wireguard_go),
    }
    if config.vpn.userspace:
        extravars["wireguard_gateway_userspace"] = True
    run = run_vpn_playbook(config, inventory, "vpn_gateway.yml", [name], extravars,
                           {GATEWAY_KEY_TASK, GATEWAY_PEERS_TASK}, purpose)
    r = run.outcomes[name]
    if not r.succeeded:
        raise GatewayUnreachableError(f"VPN gateway {name}: {r.reason}; the state database was not changed "
                                      f"(artifacts: {run.artifact_dir})")
    pub = validate_public_key(r.reported.get(GATEWAY_KEY_TASK), name)
    on_gw = set(r.reported.get(GATEWAY_PEERS_TASK, "").split())
    if on_gw != {p.public_key for p in peers}:
        raise GatewayUnreachableError(f"VPN gateway {name} did not take the new peer list "
                                      f"({len(on_gw)} peers there, {len(peers)} expected)")
    with db.session() as s:
        gw = s.scalar(select(VPNGateway).where(VPNGateway.host == name))
        if gw is None:
            gw = VPNGateway(host=name, public_key=pub, endpoint="", config_sha256="")
            s.add(gw)
        gw.public_key = pub
        gw.endpoint = gateway_endpoint(config, inventory)
        gw.config_sha256 = rendered.sha256
        gw.peers = len(peers)
        gw.applied_at = datetime.now(UTC)
    return GatewayResult(gateway=name, public_key=pub, peers=len(peers), config_sha256=rendered.sha256,
                         artifact_dir=run.artifact_dir)


def _peer(s: Session, host: str) -> VPNPeer | None:
    return s.scalar(select(VPNPeer).where(VPNPeer.host == host))


def _failure(r: ansible.HostResult) -> Literal["failed", "unreachable"]:
    """What a laptop the playbook did not bring where it should be counts as: unreachable, or failed."""
    return "unreachable" if r.outcome == "unreachable" else "failed"


def _in_use_keys(db: Database) -> tuple[dict[str, str], set[str]]:
    with db.session() as s:
        in_use = {p.public_key: p.host for p in s.scalars(select(VPNPeer)) if p.public_key}
        for gw in s.scalars(select(VPNGateway)):
            in_use[gw.public_key] = gw.host
        retired = set(s.scalars(select(VPNRetiredKey.public_key)))
    return in_use, retired


def _validate_reported(reported: dict[str, str | None], db: Database,
                       results: dict[str, PeerResult]) -> dict[str, str]:
    """Validated keys by host; a malformed or duplicate key makes that host 'failed' (nothing stored)."""
    good: dict[str, str] = {}
    for host, raw in reported.items():
        try:
            good[host] = validate_public_key(raw, host)
        except PublicKeyError as e:
            results[host] = PeerResult(host=host, outcome="failed", reason=str(e))
    in_use, retired = _in_use_keys(db)
    # Check each key alone, so one duplicate does not fail the others.
    seen: dict[str, str] = {}
    for host in sorted(good):
        key = good[host]
        try:
            check_duplicates({host: key}, {**in_use, **{k: h for k, h in seen.items()}}, retired)
        except PublicKeyError as e:
            results[host] = PeerResult(host=host, outcome="failed", reason=str(e))
            continue
        seen[key] = host
    return {h: k for h, k in good.items() if h not in results}


# ---------------------------------------------------------------- gateway ---------------------

def gateway_apply(config: Config, db: Database, inventory: Inventory,
                  actor: str | None = None) -> GatewayResult:
    """`werne vpn gateway apply`: render from all active peers and install on the gateway."""
    with vpn_lock(config):
        result = _apply(config, db, inventory, planned_peers(db), "gateway")
    record(db, "vpn.gateway.apply", result.gateway,
           {"peers": result.peers, "config_sha256": result.config_sha256}, actor=actor)
    return result


# ---------------------------------------------------------------- admitting laptops -----------

def client_extravars(config: Config, db: Database, inventory: Inventory, hosts: list[str]) -> dict[str, Any]:
    """Extra vars for the wireguard_client role (in playbooks/laptop.yml or vpn_client.yml).

    Allocates (and stores) each laptop's addresses; revoked laptops are left out, so the role gives
    them no tunnel. Raises GatewayNotReadyError if the gateway was never applied.
    """
    with db.session() as s:
        gw = s.scalar(select(VPNGateway).order_by(VPNGateway.applied_at.desc()))
        if gw is None:
            raise GatewayNotReadyError("the VPN gateway has no key yet: run `werne vpn gateway apply` first")
        gw_key = gw.public_key
    pool = AddressPool.from_config(config.vpn)
    clients: dict[str, dict[str, Any]] = {}
    revoked: list[str] = []
    unknown = [h for h in hosts if h not in inventory.laptops]
    if unknown:
        raise UnknownPeerError(f"unknown laptop: {unknown[0]} (not in {inventory.hosts_file})")
    # One transaction: an exhausted pool or a collision leaves no allocation behind.
    with db.session() as s:
        for host in hosts:
            peer = _peer(s, host)
            if peer is None:
                peer = VPNPeer(host=host, status=PEER_PENDING)
                s.add(peer)
                s.flush()
            if peer.status == PEER_REVOKED:
                revoked.append(host)
                continue
            pool.assign(s, peer, inventory.laptops[host].vpn_address)
            addrs = [f"{peer.address_v4}/32"] + ([f"{peer.address_v6}/128"] if peer.address_v6 else [])
            clients[host] = {"addresses": addrs, "rekey": peer.public_key is None}
    ev: dict[str, Any] = {
        "wireguard_client_peers": clients,
        "wireguard_client_revoked": revoked,
        "wireguard_client_interface": config.vpn.interface,
        "wireguard_client_gateway_public_key": gw_key,
        "wireguard_client_endpoint": gateway_endpoint(config, inventory),
        "wireguard_client_dns": list(config.vpn.dns),
        "wireguard_client_killswitch_allow": list(config.vpn.killswitch_allow),
        "wireguard_client_admin_networks": list(config.provisioning.admin_networks),
        "wireguard_client_go_binary": str(config.vpn.wireguard_go),
    }
    if config.vpn.userspace:
        ev["wireguard_client_userspace"] = True
    return ev


def provision_extravars(config: Config, db: Database, inventory: Inventory, hosts: list[str]) -> dict[str, Any]:
    """For `werne laptop provision`: client_extravars, or {} while the VPN gateway was never applied
    (the wireguard_client role then leaves the laptops alone and says why)."""
    try:
        return client_extravars(config, db, inventory, hosts)
    except GatewayNotReadyError:
        return {}


def register_client_keys(config: Config, db: Database, inventory: Inventory,
                         reported: dict[str, str | None], actor: str | None = None) -> VPNReport:
    """Store the public keys laptops reported (the stdout of the role's task PUBLIC_KEY_TASK, after
    `werne laptop provision` ran playbooks/laptop.yml) and update the gateway.

    A malformed or duplicate key fails that laptop only. The gateway is applied first; if it is
    unreachable, no key is stored (GatewayUnreachableError, exit 3).
    """
    with vpn_lock(config):
        return _register_client_keys(config, db, inventory, reported, actor)


def _register_client_keys(config: Config, db: Database, inventory: Inventory,
                          reported: dict[str, str | None], actor: str | None = None) -> VPNReport:
    results: dict[str, PeerResult] = {}
    with db.session() as s:
        for host in list(reported):
            peer = _peer(s, host)
            if peer is None or peer.status == PEER_REVOKED:
                why = "revoked: `werne vpn reinstate` first" if peer else "not admitted"
                results[host] = PeerResult(host=host, outcome="skipped", reason=why)
                reported.pop(host)
    good = _validate_reported(reported, db, results)
    changes: dict[str, str] = {}
    with db.session() as s:
        for host, key in good.items():
            peer = _peer(s, host)
            assert peer is not None
            if peer.public_key == key and peer.status == PEER_ACTIVE:
                results[host] = PeerResult(host=host, outcome="unchanged", address=peer.address_v4,
                                           public_key=key)
            else:
                changes[host] = key
    gateway = None
    if changes:
        gateway = _apply(config, db, inventory, planned_peers(db, keys=changes), "admit")
        now = datetime.now(UTC)
        with db.session() as s:
            for host, key in changes.items():
                peer = _peer(s, host)
                assert peer is not None
                outcome: Outcome = "admitted"
                if peer.public_key and peer.public_key != key:
                    s.add(VPNRetiredKey(public_key=peer.public_key, host=host, reason="replaced"))
                    outcome = "replaced"
                peer.public_key, peer.status, peer.key_created_at = key, PEER_ACTIVE, now
                results[host] = PeerResult(host=host, outcome=outcome, address=peer.address_v4,
                                           public_key=key)
        record(db, "vpn.admit", ",".join(sorted(changes)),
               {h: results[h].outcome for h in sorted(changes)}, actor=actor)
    return VPNReport(action="admit", hosts=[results[h] for h in sorted(results)], gateway=gateway)


def enrol(config: Config, db: Database, inventory: Inventory, hosts: list[str],
          actor: str | None = None) -> VPNReport:
    """Run the wireguard_client role on `hosts` alone (vpn_client.yml) and admit their keys."""
    with vpn_lock(config):
        ev = client_extravars(config, db, inventory, hosts)
        targets = list(ev["wireguard_client_peers"])
        run = run_vpn_playbook(config, inventory, "vpn_client.yml", targets, ev, {PUBLIC_KEY_TASK}, "enrol")
        reported = {h: r.reported.get(PUBLIC_KEY_TASK) for h, r in run.outcomes.items() if r.succeeded}
        report = _register_client_keys(config, db, inventory, reported, actor=actor)
    extra = [PeerResult(host=h, outcome=_failure(r), reason=peer_reason(r))
             for h, r in run.outcomes.items() if not r.succeeded]
    extra += [PeerResult(host=h, outcome="skipped", reason="revoked: `werne vpn reinstate` first")
              for h in ev["wireguard_client_revoked"]]
    report.action = "enrol"
    report.hosts = sorted(report.hosts + extra, key=lambda r: r.host)
    return report


# ---------------------------------------------------------------- revoke / reinstate ----------

def revoke(config: Config, db: Database, inventory: Inventory, host: str, reason: str,
           actor: str | None = None) -> PeerResult:
    """Remove the laptop's peer from the gateway at once (the laptop is not contacted), then mark it
    revoked, retire its key and free its address. Gateway unreachable: nothing changes (exit 3)."""
    reason = " ".join(reason.split())
    if not reason:
        raise VPNInputError("a revocation needs a reason (--reason TEXT)")
    if host not in inventory.laptops:
        with db.session() as s:
            if _peer(s, host) is None:
                raise UnknownPeerError(f"unknown laptop: {host} (not in {inventory.hosts_file})")
    actor = actor or current_actor()
    with vpn_lock(config):
        with db.session() as s:
            peer = _peer(s, host)
            if peer is not None and peer.status == PEER_REVOKED:
                return PeerResult(host=host, outcome="unchanged", reason="already revoked")
        gateway = _apply(config, db, inventory, planned_peers(db, remove={host}), "revoke")
        with db.session() as s:
            peer = _peer(s, host)
            if peer is None:  # never admitted: record the revocation so it can never be admitted
                peer = VPNPeer(host=host, status=PEER_PENDING)
                s.add(peer)
            old_key, old_addr = peer.public_key, peer.address_v4
            if peer.public_key:
                s.add(VPNRetiredKey(public_key=peer.public_key, host=host, reason="revoked"))
            peer.public_key = None
            peer.status = PEER_REVOKED
            peer.revoked_at = datetime.now(UTC)
            peer.revoked_by = actor
            peer.revocation_reason = reason
            AddressPool.release(peer)
    record(db, "vpn.revoke", host, {"reason": reason, "public_key": old_key, "address": old_addr,
                                    "gateway_peers": gateway.peers}, actor=actor)
    return PeerResult(host=host, outcome="revoked", reason=reason, address=old_addr, public_key=old_key)


def reinstate(config: Config, db: Database, inventory: Inventory, host: str,
              actor: str | None = None) -> PeerResult:
    """Let a revoked laptop back in: it becomes pending and must make a NEW key at its next
    provisioning (`werne laptop provision` or `werne vpn enrol`); its old key stays retired."""
    if host not in inventory.laptops:
        raise UnknownPeerError(f"unknown laptop: {host} (not in {inventory.hosts_file})")
    with vpn_lock(config), db.session() as s:
        peer = _peer(s, host)
        if peer is None or peer.status != PEER_REVOKED:
            raise VPNInputError(f"{host} is not revoked")
        peer.status = PEER_PENDING
        peer.revoked_at = peer.revoked_by = peer.revocation_reason = None
    record(db, "vpn.reinstate", host, {}, actor=actor)
    return PeerResult(host=host, outcome="reinstated",
                      reason="makes a new key at its next `werne laptop provision` / `werne vpn enrol`")


# ---------------------------------------------------------------- rotation --------------------

def select_for_rotation(db: Database, inventory: Inventory, hosts: list[str],
                        older_than_days: float | None, now: datetime | None = None) -> list[str]:
    """Named hosts (must be active peers), or every active peer whose key is older than the limit."""
    now = now or datetime.now(UTC)
    with db.session() as s:
        peers = {p.host: p for p in s.scalars(select(VPNPeer))}
    if hosts:
        for h in hosts:
            if h not in inventory.laptops and h not in peers:
                raise UnknownPeerError(f"unknown laptop: {h} (not in {inventory.hosts_file})")
            p = peers.get(h)
            if p is None or p.status != PEER_ACTIVE or not p.public_key:
                state = p.status if p else "never admitted"
                raise VPNInputError(f"{h} has no active VPN key to rotate ({state})")
        return list(dict.fromkeys(hosts))
    if older_than_days is None:
        raise VPNInputError("name hosts to rotate, or use --older-than")
    limit = now - timedelta(days=older_than_days)
    out = []
    for h, p in sorted(peers.items()):
        created = p.key_created_at
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if p.status == PEER_ACTIVE and p.public_key and created is not None and created <= limit:
            out.append(h)
    return out


def parse_age_days(text: str | None) -> float | None:
    """'90d', '12w', '36h' or a plain number of days -> days; None stays None."""
    if text is None:
        return None
    t = text.strip().lower()
    units = {"d": 1.0, "w": 7.0, "h": 1 / 24}
    factor = units.get(t[-1:], None)
    number = t[:-1] if factor is not None else t
    try:
        value = float(number) * (factor or 1.0)
    except ValueError:
        raise VPNInputError(f"--older-than: '{text}' is not an age like 90d, 12w or 36h") from None
    if value < 0:
        raise VPNInputError(f"--older-than: '{text}' is negative")
    return value


def _through_tunnel(db: Database, inventory: Inventory, hosts: list[str]) -> set[str]:
    """The hosts werne reaches only through their tunnel (provisioning.home.reach)."""
    reach = reach_map(db, inventory)
    return {h for h in hosts if h in reach and reach[h].via == "vpn"}


def _commit(config: Config, inventory: Inventory, hosts: list[str], armed: set[str], base: dict[str, Any],
            started: float) -> dict[str, ansible.HostResult]:
    """The commit phase: at once where werne reaches the laptop directly; through the tunnel once an
    armed laptop has switched (retried while it may still be handshaking), and never so late that
    the laptop's own revert could overtake the commit."""
    extravars = {**base, "wireguard_client_rotate_phase": "commit"}
    out: dict[str, ansible.HostResult] = {}
    direct = [h for h in hosts if h not in armed]
    if direct:
        out.update(run_vpn_playbook(config, inventory, "vpn_rotate.yml", direct, extravars, {CURRENT_KEY_TASK},
                                    "rotate-commit").outcomes)
    waiting = [h for h in hosts if h in armed]
    if not waiting:
        return out
    v = config.vpn
    # `started` is before the laptops armed their timers, so their switch and revert come later still.
    time.sleep(max(0.0, started + v.rotate_switch_after_s + 1 - time.monotonic()))
    give_up = started + v.rotate_switch_after_s + v.rotate_revert_after_s - (10 + 2 * config.ssh.connect_timeout)
    while waiting:
        # A new SSH connection each time: the master connection kept open by the prepare phase ran
        # through the tunnel as it was; across the switch it stalls long enough to time out.
        with tempfile.TemporaryDirectory(prefix="werne-cp-") as cp:
            run = run_vpn_playbook(config, inventory, "vpn_rotate.yml", waiting,
                                   {**extravars, "ansible_control_path_dir": cp}, {CURRENT_KEY_TASK},
                                   "rotate-commit")
        out.update(run.outcomes)
        waiting = [h for h in waiting if run.outcomes[h].outcome == "unreachable"]
        if not waiting or time.monotonic() + COMMIT_RETRY_S > give_up:
            break
        time.sleep(COMMIT_RETRY_S)
    return out


COMMIT_RETRY_S = 3.0


def _queue(db: Database, inventory: Inventory, results: dict[str, PeerResult], actor: str) -> None:
    """Home-office laptops that could not be reached get the rotation queued for the watcher."""
    off = {h: r.reason or "unreachable" for h, r in results.items() if r.outcome == "unreachable"}
    for h, reason in queue_for_later(db, inventory, KIND_VPN_ROTATE, actor, off, "vpn rotate",
                                     "rotates it").items():
        results[h] = results[h].model_copy(update={"outcome": "queued", "reason": reason})


def rotate(config: Config, db: Database, inventory: Inventory, hosts: list[str],
           older_than: str | float | None = None, actor: str | None = None,
           after_gateway_switch: Callable[[list[str]], None] | None = None,
           queue_unreachable: bool = True) -> VPNReport:
    """`werne vpn rotate`: new keys made on the laptops, the gateway swaps them in, old keys removed.

    Laptops reached only through their tunnel switch by themselves (see the module doc). A
    home-office laptop that cannot be reached gets the rotation queued (outcome "queued") unless
    `queue_unreachable` is False (the watcher itself). `after_gateway_switch` runs between the
    gateway swap and the laptops' switch (a seam for tests that take a laptop away at that moment).
    """
    actor = actor or current_actor()
    if hosts and older_than is not None:
        raise VPNInputError("name hosts or use --older-than, not both")
    days = older_than if isinstance(older_than, int | float) else parse_age_days(older_than)
    targets = select_for_rotation(db, inventory, hosts, days)
    if not targets:
        return VPNReport(action="rotate", hosts=[])
    results: dict[str, PeerResult] = {}
    gateway = None
    with vpn_lock(config):
        check_gateway_reachable(config, inventory)
        armed = _through_tunnel(db, inventory, targets)
        base = {"wireguard_client_interface": config.vpn.interface,
                "wireguard_client_rotate_armed": sorted(armed),
                "wireguard_client_rotate_switch_after_s": config.vpn.rotate_switch_after_s,
                "wireguard_client_rotate_revert_after_s": config.vpn.rotate_revert_after_s}
        started = time.monotonic()
        prep = run_vpn_playbook(config, inventory, "vpn_rotate.yml", targets,
                                {**base, "wireguard_client_rotate_phase": "prepare"}, {NEXT_KEY_TASK},
                                "rotate-prepare")
        for h, r in prep.outcomes.items():
            if not r.succeeded:
                results[h] = PeerResult(host=h, outcome=_failure(r),
                                        reason=f"{peer_reason(r)}; old key still in use")
        reported = {h: r.reported.get(NEXT_KEY_TASK) for h, r in prep.outcomes.items() if r.succeeded}
        new_keys = _validate_reported(reported, db, results)
        bad = [h for h in reported if h not in new_keys]
        if bad:
            run_vpn_playbook(config, inventory, "vpn_rotate.yml", bad,
                             {**base, "wireguard_client_rotate_phase": "abort"}, set(), "rotate-abort")
            for h in bad:
                results[h].reason = f"{results[h].reason}; old key still in use"
        if new_keys:
            try:
                gateway = _apply(config, db, inventory, planned_peers(db, keys=new_keys), "rotate-switch")
            except GatewayUnreachableError:
                run_vpn_playbook(config, inventory, "vpn_rotate.yml", list(new_keys),
                                 {**base, "wireguard_client_rotate_phase": "abort"}, set(), "rotate-abort")
                raise
            if after_gateway_switch is not None:
                after_gateway_switch(list(new_keys))
            commit = _commit(config, inventory, list(new_keys), armed, base, started)
            switched = {h: k for h, k in new_keys.items()
                        if commit[h].succeeded and commit[h].reported.get(CURRENT_KEY_TASK, "").strip() == k}
            failed = [h for h in new_keys if h not in switched]
            # The switched laptops use their new keys from now on: store them before anything else can
            # fail, so a later `werne vpn gateway apply` renders what the laptops really use.
            now = datetime.now(UTC)
            with db.session() as s:
                for h, key in switched.items():
                    peer = _peer(s, h)
                    assert peer is not None
                    if peer.public_key:
                        s.add(VPNRetiredKey(public_key=peer.public_key, host=h, reason="rotated"))
                    peer.public_key, peer.key_created_at, peer.rotated_at = key, now, now
                    results[h] = PeerResult(host=h, outcome="rotated", address=peer.address_v4, public_key=key)
            if failed:
                # Put the old keys back for laptops that did not switch: they keep working as before.
                try:
                    gateway = _apply(config, db, inventory, planned_peers(db), "rotate-rollback")
                except GatewayUnreachableError as e:
                    record(db, "vpn.rotate", ",".join(targets), {"rollback_failed": failed, "error": str(e)},
                           actor=actor)
                    raise GatewayUnreachableError(
                        f"{e}; could not switch the gateway back for {', '.join(failed)}: "
                        "run `werne vpn gateway apply` when the gateway is back") from None
                for h in failed:
                    r = commit[h]
                    back = ("; it goes back to its old key by itself" if h in armed
                            else "; old key still in use")
                    results[h] = PeerResult(host=h, outcome=_failure(r),
                                            reason=f"{peer_reason(r) or 'did not switch to the new key'}; "
                                                   f"gateway switched back{back}")
        if queue_unreachable:
            _queue(db, inventory, results, actor)
    record(db, "vpn.rotate", ",".join(targets), {h: results[h].outcome for h in sorted(results)}, actor=actor)
    return VPNReport(action="rotate", hosts=[results[h] for h in sorted(results)], gateway=gateway)
