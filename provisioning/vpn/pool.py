"""Tunnel address allocation from the configured pools (vpn.pool_v4, optional vpn.pool_v6).

An allocation is stored on the peer's row and stays the same across runs. The gateway holds the
first host address of each pool. A laptop's inventory `vpn_address` is used when it lies in the
pool. An address held by an active or pending peer is never handed out again; revocation releases
it (the unique columns make a collision impossible even under races).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import VPNConfig
from provisioning.vpn.errors import AddressCollisionError, PoolExhaustedError
from provisioning.vpn.models import VPNPeer

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _hosts(net: IPNetwork) -> Iterator[IPAddress]:
    # ipaddress.hosts() on a /64 would build nothing up front but is slow to skip; walk lazily.
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    for i in range(first, last + 1):
        yield ipaddress.ip_address(i) if net.version == 4 else ipaddress.IPv6Address(i)


@dataclass(frozen=True)
class AddressPool:
    """The v4 pool and the optional v6 pool, with the gateway's own address reserved in each."""

    v4: ipaddress.IPv4Network
    v6: ipaddress.IPv6Network | None = None

    @classmethod
    def from_config(cls, vpn: VPNConfig) -> AddressPool:
        v4 = ipaddress.ip_network(vpn.pool_v4)
        v6 = ipaddress.ip_network(vpn.pool_v6) if vpn.pool_v6 else None
        if not isinstance(v4, ipaddress.IPv4Network):
            raise AddressCollisionError(f"vpn.pool_v4 {vpn.pool_v4} is not an IPv4 network")
        if v6 is not None and not isinstance(v6, ipaddress.IPv6Network):
            raise AddressCollisionError(f"vpn.pool_v6 {vpn.pool_v6} is not an IPv6 network")
        return cls(v4, v6)

    @property
    def gateway_v4(self) -> ipaddress.IPv4Address:
        return self.v4.network_address + 1

    @property
    def gateway_v6(self) -> ipaddress.IPv6Address | None:
        return self.v6.network_address + 1 if self.v6 is not None else None

    def _preferred_usable(self, host: str, preferred: IPAddress, net: IPNetwork,
                          taken: dict[str, str]) -> bool:
        """True if the inventory's address can be used; False if it lies outside the pool's host
        range (then the pool picks one); AddressCollisionError if another peer holds it."""
        if preferred.version != net.version:
            return False
        first = int(net.network_address) + 1
        last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
        if not first <= int(preferred) <= last:
            return False
        if preferred in (self.gateway_v4, self.gateway_v6):
            raise AddressCollisionError(f"{host}: vpn_address {preferred} is the gateway's own address")
        holder = taken.get(str(preferred))
        if holder is not None and holder != host:
            raise AddressCollisionError(f"{host}: vpn_address {preferred} is already held by {holder}")
        return True

    def _first_free(self, host: str, net: IPNetwork, taken: dict[str, str], gateway: IPAddress) -> str:
        for addr in _hosts(net):
            s = str(addr)
            if addr != gateway and s not in taken:
                return s
        raise PoolExhaustedError(f"{host}: the VPN address pool {net} is exhausted "
                                 f"({len(taken)} addresses held; revoke a peer or widen the pool)")

    def assign(self, session: Session, peer: VPNPeer, preferred: IPAddress | None = None) -> None:
        """Give `peer` its addresses if it has none: the inventory's vpn_address when it lies in the
        pool (refused if another peer holds it), else the first free one. An address the peer
        already holds is kept (stable across runs)."""
        for version, net, column in ((4, self.v4, "address_v4"), (6, self.v6, "address_v6")):
            if net is None:
                continue
            current = getattr(peer, column)
            if current is not None:
                if ipaddress.ip_address(current) not in net:
                    raise AddressCollisionError(f"{peer.host}: its address {current} is outside the pool "
                                                f"{net} (was the pool changed?)")
                continue
            col = getattr(VPNPeer, column)
            taken = {a: h for a, h in session.execute(select(col, VPNPeer.host).where(col.is_not(None)))}
            gateway = self.gateway_v4 if version == 4 else self.gateway_v6
            assert gateway is not None
            if preferred is not None and self._preferred_usable(peer.host, preferred, net, taken):
                setattr(peer, column, str(preferred))
            else:
                setattr(peer, column, self._first_free(peer.host, net, taken, gateway))
            session.flush()

    @staticmethod
    def release(peer: VPNPeer) -> None:
        """Free the peer's addresses (on revocation), keeping what they were for the record."""
        if peer.address_v4 is not None:
            peer.last_address_v4 = peer.address_v4
        if peer.address_v6 is not None:
            peer.last_address_v6 = peer.address_v6
        peer.address_v4 = None
        peer.address_v6 = None
