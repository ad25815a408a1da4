"""The gateway's WireGuard config and its forwarding/NAT rules, rendered from the active peers.

Only public keys appear in what is rendered here: the gateway's private key is made on the gateway
and wg-quick loads it from a file there (PostUp), so the rendered text can travel through Ansible.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import VPNConfig
from provisioning.vpn.models import PEER_ACTIVE, VPNPeer
from provisioning.vpn.pool import AddressPool

TEMPLATES = Path(__file__).resolve().parent / "templates"
NFT_TABLE = "werne_vpn_gw"


@dataclass(frozen=True)
class GatewayPeer:
    """One [Peer] block: a laptop's public key and the tunnel addresses it may use."""

    host: str
    public_key: str
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True)
class GatewaySettings:
    """The [Interface] part of the gateway config."""

    interface: str
    listen_port: int
    addresses: tuple[str, ...]
    pool_v4: str
    pool_v6: str | None = None
    key_path: str = "/etc/wireguard/wg0.key"
    nft_path: str = "/etc/werne/vpn-gateway.nft"
    nft_table: str = NFT_TABLE
    # Networks that may open SSH to the laptops' tunnel addresses ([homeoffice] manage_from).
    manage_from: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, vpn: VPNConfig, manage_from: list[str] | tuple[str, ...] = ()) -> GatewaySettings:
        pool = AddressPool.from_config(vpn)
        addresses = [f"{pool.gateway_v4}/{pool.v4.prefixlen}"]
        if pool.v6 is not None:
            addresses.append(f"{pool.gateway_v6}/{pool.v6.prefixlen}")
        return cls(interface=vpn.interface, listen_port=vpn.listen_port, addresses=tuple(addresses),
                   pool_v4=str(pool.v4), pool_v6=str(pool.v6) if pool.v6 else None,
                   key_path=f"/etc/wireguard/{vpn.interface}.key", manage_from=tuple(manage_from))


@dataclass(frozen=True)
class RenderedGateway:
    """What `werne vpn gateway apply` installs: the wg-quick config and the nftables rules."""

    wg_conf: str
    nftables: str
    peers: list[GatewayPeer] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256((self.wg_conf + "\0" + self.nftables).encode()).hexdigest()


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                       keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=False,
                       autoescape=False)


def peer_allowed_ips(peer: VPNPeer) -> tuple[str, ...]:
    ips = []
    if peer.address_v4:
        ips.append(f"{peer.address_v4}/32")
    if peer.address_v6:
        ips.append(f"{peer.address_v6}/128")
    return tuple(ips)


def active_peers(session: Session, exclude: set[str] | None = None,
                 replace_keys: dict[str, str] | None = None) -> list[GatewayPeer]:
    """The active peers with a key, sorted by host; optionally without some hosts or with new keys."""
    exclude = exclude or set()
    replace_keys = replace_keys or {}
    rows = session.scalars(select(VPNPeer).where(VPNPeer.status == PEER_ACTIVE,
                                                 VPNPeer.public_key.is_not(None)).order_by(VPNPeer.host))
    return [GatewayPeer(p.host, replace_keys.get(p.host, p.public_key or ""), peer_allowed_ips(p))
            for p in rows if p.host not in exclude]


def render_gateway_config(peers: list[GatewayPeer], settings: GatewaySettings) -> str:
    """The wg-quick config for the gateway (no private key in it)."""
    return _environment().get_template("gateway-wg.conf.j2").render(peers=peers, settings=settings)


def render_gateway_nftables(settings: GatewaySettings) -> str:
    """Forwarding and NAT rules for the pool, as one atomically reloadable nftables file."""
    return _environment().get_template("gateway-nftables.nft.j2").render(
        table=settings.nft_table, interface=settings.interface, pool_v4=settings.pool_v4,
        pool_v6=settings.pool_v6, manage_v4=[n for n in settings.manage_from if ":" not in n],
        manage_v6=[n for n in settings.manage_from if ":" in n])


def render_gateway(peers: list[GatewayPeer], settings: GatewaySettings) -> RenderedGateway:
    return RenderedGateway(render_gateway_config(peers, settings), render_gateway_nftables(settings), peers)
