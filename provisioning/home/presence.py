"""Who is online: the gateway's WireGuard handshakes, read with one SSH command per poll.

`wg show <if> dump` runs on the gateway over one kept-open paramiko connection (the gateway's host
key pinned as for Ansible); `tail -n +2` drops the interface line, which holds the gateway's
private key, on the gateway itself. A peer whose latest handshake is younger than
`[homeoffice] online_window_s` is online. No agent on the laptops: a laptop with its tunnel up
re-handshakes every two minutes (PersistentKeepalive keeps the tunnel alive), and a laptop that
boots handshakes at once, so a laptop switched on is seen within one poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import paramiko
from sqlalchemy import select

from core.config import Config
from core.db import Database
from core.inventory import Inventory
from provisioning.errors import HostUnreachable, PinnedKeyRefused, ProvisioningError
from provisioning.home.models import LaptopPresence
from provisioning.known_hosts import PinnedHostKeys, same_key
from provisioning.preflight import (
    SSHTarget,
    known_hosts_path,
    load_private_key,
    open_transport,
    run_command,
)
from provisioning.vpn.models import PEER_ACTIVE, VPNPeer
from provisioning.vpn.status import DumpPeer, parse_wg_dump


class GatewayReadError(ProvisioningError):
    """The gateway's WireGuard dump could not be read (unreachable, key changed, wg failed)."""


@dataclass(frozen=True)
class PeerSeen:
    """One laptop as the gateway sees it now."""

    host: str
    online: bool
    last_handshake_at: datetime | None
    endpoint: str | None


class GatewayReader:
    """One kept-open SSH connection to the gateway; `dump()` reads the peers (reconnects as needed)."""

    def __init__(self, config: Config, inventory: Inventory):
        if not inventory.gateways:
            raise GatewayReadError(f"no host in group 'vpn_gateway' in {inventory.hosts_file}")
        name, gw = next(iter(inventory.gateways.items()))
        user = str((gw.model_extra or {}).get("ansible_user") or config.ssh.user)
        self.target = SSHTarget(name, str(gw.ansible_host), gw.ansible_port, user)
        self.config = config
        self.interface = config.vpn.interface  # validated: letters, digits and _=+.- only
        self._transport: paramiko.Transport | None = None

    def _connect(self) -> paramiko.Transport:
        pinned = PinnedHostKeys(known_hosts_path(self.config)).lookup(self.target.host_id)
        if not pinned:
            raise GatewayReadError(f"gateway {self.target.name}: host key not pinned "
                                   "(run `werne laptop preflight` / pin it first)")
        timeout = self.config.ssh.connect_timeout
        try:
            t = open_transport(self.target, sorted(pinned), timeout, attempts=2)
        except HostUnreachable as e:
            raise GatewayReadError(f"gateway {self.target.name} unreachable: {e}") from None
        except PinnedKeyRefused:
            raise GatewayReadError(f"gateway {self.target.name}: host key changed; refused") from None
        key = t.get_remote_server_key()
        if not any(same_key(key, k) for k in pinned.values()):
            t.close()
            raise GatewayReadError(f"gateway {self.target.name}: host key changed; refused")
        try:
            t.auth_publickey(self.target.user, load_private_key(self.config.ssh_key_file))
        except paramiko.SSHException as e:
            t.close()
            raise GatewayReadError(f"gateway {self.target.name}: login failed: {e}") from None
        return t

    def dump(self) -> list[DumpPeer]:
        for attempt in (1, 2):
            if self._transport is None or not self._transport.is_active():
                self._transport = self._connect()
            try:
                rc, out = run_command(self._transport, f"sudo -n wg show {self.interface} dump | tail -n +2",
                                      self.config.ssh.connect_timeout * 2)
            except (paramiko.SSHException, OSError, TimeoutError, EOFError):
                self.close()
                if attempt == 2:
                    raise GatewayReadError(f"gateway {self.target.name}: connection lost") from None
                continue
            if rc != 0:
                raise GatewayReadError(f"gateway {self.target.name}: wg show failed: {out.strip()[:200]}")
            return parse_wg_dump(out)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def peers_seen(db: Database, dump: list[DumpPeer], now: datetime, online_window_s: int) -> dict[str, PeerSeen]:
    """The active peers of the database, matched to the dump by public key."""
    by_key = {p.public_key: p for p in dump}
    with db.session() as s:
        peers = [(p.host, p.public_key) for p in s.scalars(select(VPNPeer).where(VPNPeer.status == PEER_ACTIVE))]
    out = {}
    for host, key in peers:
        d = by_key.get(key or "")
        at = datetime.fromtimestamp(d.latest_handshake, UTC) if d and d.latest_handshake else None
        online = at is not None and now - at <= timedelta(seconds=online_window_s)
        out[host] = PeerSeen(host, online, at, d.endpoint if d else None)
    return out


def record_presence(db: Database, seen: dict[str, PeerSeen], now: datetime) -> tuple[list[str], list[str]]:
    """Store what was seen; returns (came online, went offline) since the last poll."""
    came, went = [], []
    with db.session() as s:
        rows = {r.host: r for r in s.scalars(select(LaptopPresence))}
        for host, p in seen.items():
            row = rows.get(host)
            if row is None:
                row = LaptopPresence(host=host, online=False, updated_at=now)
                s.add(row)
            if p.online and not row.online:
                came.append(host)
                row.online_since, row.offline_since = now, None
            elif not p.online and row.online:
                went.append(host)
                row.offline_since = now
            row.online = p.online
            row.last_handshake_at = p.last_handshake_at
            row.endpoint = p.endpoint
            row.updated_at = now
    return sorted(came), sorted(went)


def seen_off_by_watcher(db: Database, hosts: list[str], now: datetime,
                        max_age_s: float) -> dict[str, datetime | None]:
    """Laptops a running watcher saw switched off: their presence row says offline and was written
    no longer than `max_age_s` before `now` (an older row means no watcher is polling: we know
    nothing). host -> its last handshake (None: never seen by the gateway)."""
    if not hosts:
        return {}
    since = now - timedelta(seconds=max_age_s)
    with db.session() as s:
        rows = s.scalars(select(LaptopPresence).where(LaptopPresence.host.in_(hosts),
                                                      LaptopPresence.online.is_(False))).all()
        out: dict[str, datetime | None] = {}
        for r in rows:
            updated = r.updated_at if r.updated_at.tzinfo else r.updated_at.replace(tzinfo=UTC)
            if updated >= since:
                at = r.last_handshake_at
                out[r.host] = at if at is None or at.tzinfo else at.replace(tzinfo=UTC)
        return out
