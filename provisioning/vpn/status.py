"""Handshake evidence: `wg show <if> dump` from the gateway, matched against the peers in the database.

For each peer: key age, last-handshake age, endpoint and allowed IPs, with flags for what the
compliance report must see (stale or missing handshake, unknown or revoked keys on the gateway).
The dump's first line carries the gateway's private key; it is never collected (the playbook drops
it on the gateway) and `parse_wg_dump` ignores such a line if one gets here anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select

from core.config import Config
from core.db import Database
from core.findings import Findings
from core.inventory import Inventory
from provisioning.vpn.models import PEER_ACTIVE, PEER_REVOKED, PeerState, VPNPeer, VPNRetiredKey

Flag = Literal["stale_handshake", "no_handshake", "unknown_peer", "revoked_peer_present",
               "retired_key_present", "missing_on_gateway", "key_too_old", "not_in_inventory"]


@dataclass(frozen=True)
class DumpPeer:
    """One peer line of `wg show <if> dump`."""

    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # unix seconds; 0 = never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None


class DumpFormatError(ValueError):
    """A line of `wg show dump` output does not have the expected fields."""


def parse_wg_dump(text: str) -> list[DumpPeer]:
    """Parse the peer lines of `wg show <if> dump` (tab-separated, 8 fields each).

    The interface line (4 fields: private key, public key, port, fwmark) is skipped, never stored.
    """
    peers = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        f = line.split("\t")
        if len(f) == 4:  # the interface line: contains the private key, so drop it unread
            continue
        if len(f) != 8:
            raise DumpFormatError(f"wg dump line {n}: expected 8 tab-separated fields, got {len(f)}")
        pub, _psk, endpoint, allowed, handshake, rx, tx, keepalive = f
        try:
            peers.append(DumpPeer(
                public_key=pub,
                endpoint=None if endpoint == "(none)" else endpoint,
                allowed_ips=() if allowed == "(none)" else tuple(a for a in allowed.split(",") if a),
                latest_handshake=int(handshake), rx_bytes=int(rx), tx_bytes=int(tx),
                persistent_keepalive=None if keepalive == "off" else int(keepalive)))
        except ValueError:
            raise DumpFormatError(f"wg dump line {n}: a numeric field is not a number") from None
    return peers


class PeerStatus(BaseModel):
    """The VPN evidence for one peer (a laptop in the database, or a key only the gateway knows)."""

    host: str | None
    public_key: str | None
    status: Literal["active", "pending", "revoked", "unknown"]
    address: str | None = None
    key_age_days: float | None = None
    handshake_age_s: int | None = None
    endpoint: str | None = None
    allowed_ips: list[str] = []
    rx_bytes: int = 0
    tx_bytes: int = 0
    on_gateway: bool = False
    flags: list[Flag] = []

    @property
    def ok(self) -> bool:
        return not self.flags


@dataclass(frozen=True)
class PeerRecord:
    """What the database says about a peer, detached from the session."""

    host: str
    status: PeerState
    public_key: str | None
    address: str | None
    key_created_at: datetime | None


def handshake_flag(age_s: float | None, max_age_s: int) -> Flag | None:
    """The one judgment of a peer's last handshake: None while it is fresh enough. `werne vpn status`
    and the compliance rule vpn-handshake-fresh both ask here."""
    if age_s is None:
        return "no_handshake"
    if age_s > max_age_s:
        return "stale_handshake"
    return None


def key_too_old(age_days: float, max_age_days: int) -> bool:
    """The one judgment of a key's age (`werne vpn status` and the compliance rule vpn-key-age)."""
    return age_days > max_age_days


def build_status(records: list[PeerRecord], dump: list[DumpPeer], now: datetime, *,
                 handshake_max_age_s: int, key_max_age_days: int,
                 retired_keys: dict[str, str] | None = None,
                 inventory_hosts: set[str] | None = None) -> list[PeerStatus]:
    """Match database peers and gateway peers by public key and flag what is wrong. Pure function."""
    retired_keys = retired_keys or {}
    on_gw = {d.public_key: d for d in dump}
    now_s = int(now.timestamp())
    out: list[PeerStatus] = []
    known_keys: set[str] = set()
    for r in sorted(records, key=lambda r: r.host):
        flags: list[Flag] = []
        d = on_gw.get(r.public_key) if r.public_key else None
        if r.public_key:
            known_keys.add(r.public_key)
        key_age = None
        if r.key_created_at is not None:
            created = r.key_created_at if r.key_created_at.tzinfo else r.key_created_at.replace(tzinfo=UTC)
            key_age = round((now - created).total_seconds() / 86400, 2)
        hs_age = None
        if d is not None and d.latest_handshake > 0:
            hs_age = max(0, now_s - d.latest_handshake)
        if r.status == PEER_ACTIVE:
            if d is None:
                flags.append("missing_on_gateway")
            elif (flag := handshake_flag(hs_age, handshake_max_age_s)) is not None:
                flags.append(flag)
            if key_age is not None and key_too_old(key_age, key_max_age_days):
                flags.append("key_too_old")
        elif r.status == PEER_REVOKED and d is not None:
            flags.append("revoked_peer_present")
        if inventory_hosts is not None and r.host not in inventory_hosts and r.status != PEER_REVOKED:
            flags.append("not_in_inventory")
        out.append(PeerStatus(
            host=r.host, public_key=r.public_key, status=r.status,
            address=r.address, key_age_days=key_age, handshake_age_s=hs_age,
            endpoint=d.endpoint if d else None, allowed_ips=list(d.allowed_ips) if d else [],
            rx_bytes=d.rx_bytes if d else 0, tx_bytes=d.tx_bytes if d else 0,
            on_gateway=d is not None, flags=flags))
    for d in dump:
        if d.public_key in known_keys:
            continue
        hs_age = max(0, now_s - d.latest_handshake) if d.latest_handshake > 0 else None
        holder = retired_keys.get(d.public_key)
        out.append(PeerStatus(
            host=holder, public_key=d.public_key, status="unknown", handshake_age_s=hs_age,
            endpoint=d.endpoint, allowed_ips=list(d.allowed_ips), rx_bytes=d.rx_bytes, tx_bytes=d.tx_bytes,
            on_gateway=True, flags=["retired_key_present" if holder else "unknown_peer"]))
    return out


def load_records(db: Database) -> tuple[list[PeerRecord], dict[str, str]]:
    with db.session() as s:
        records = [PeerRecord(p.host, p.status, p.public_key,
                              p.address_v4 or p.address_v6 or p.last_address_v4, p.key_created_at)
                   for p in s.scalars(select(VPNPeer))]
        retired = {k.public_key: k.host for k in s.scalars(select(VPNRetiredKey))}
    return records, retired


@dataclass
class StatusReport(Findings):
    """`werne vpn status`: every peer; a flagged peer is a finding."""

    peers: list[PeerStatus]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.peers)


def collect_status(config: Config, inventory: Inventory, db: Database | None = None,
                   now: datetime | None = None) -> list[PeerStatus]:
    """Read `wg show <if> dump` from the gateway and return one PeerStatus per peer.

    Raises GatewayUnreachableError (exit 3) when the gateway cannot be read. Used by
    `werne vpn status`; the nightly compliance run reads the dump in its own facts run instead
    (compliance.collect_laptops) and passes it to build_status.
    """
    # Lazy: reading the gateway needs SSH and Ansible (paramiko, ~200 modules); compliance.engine
    # imports this module for the pure flag rules and stays without them.
    from provisioning.vpn.runner import read_gateway_dump

    own_db = db is None
    db = db or Database(config.database_url)
    try:
        dump = parse_wg_dump(read_gateway_dump(config, inventory))
        records, retired = load_records(db)
    finally:
        if own_db:
            db.dispose()
    return build_status(records, dump, now or datetime.now(UTC),
                        handshake_max_age_s=config.vpn.handshake_max_age_s,
                        key_max_age_days=config.vpn.key_max_age_days, retired_keys=retired,
                        inventory_hosts=set(inventory.laptops))
