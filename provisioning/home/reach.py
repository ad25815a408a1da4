"""Which address werne uses for each laptop, and why: the office address from the inventory, or,
for a laptop marked `home_office: true` in the inventory once it has an active VPN peer, its
tunnel address from the peer record. Bootstrap (first provisioning, VPN enrolment) happens on the
office network; from then on a home-office laptop is reached only through the VPN.

`inventory_in_use` is the one place that applies this: it returns an inventory whose laptops'
`ansible_host` is the address in use (written to `<state_dir>/reach/hosts.yml` for Ansible), and
it pins the tunnel address with the host key already pinned for the office address: the same
laptop, the same key, a new address. A laptop that shows another key at its tunnel address is
refused by pre-flight and by ssh, as on the office network. A tunnel address that no longer
belongs to an active home-office peer (revoked, or its address changed) loses that pin again, so
an address given to another laptop later is pinned with that laptop's key.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from sqlalchemy import select

from core import audit
from core.config import Config
from core.db import Database
from core.inventory import Gateway, Inventory, Laptop, load_inventory
from core.yamlio import load_file
from provisioning.known_hosts import PinnedHostKeys, address_of, host_id
from provisioning.preflight import known_hosts_path
from provisioning.vpn.models import PEER_ACTIVE, VPNPeer

REACH_DIR = "reach"


@dataclass(frozen=True)
class Reach:
    """How werne reaches one laptop now."""

    host: str
    address: str
    port: int
    via: Literal["office", "vpn"]
    why: str
    office_address: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_home_office(inventory: Inventory, host: str) -> bool:
    lap = inventory.laptops.get(host)
    return lap is not None and lap.home_office


def reach_map(db: Database, inventory: Inventory) -> dict[str, Reach]:
    """Every laptop's address in use, with the reason."""
    home = [h for h in inventory.laptops if is_home_office(inventory, h)]
    peers: dict[str, VPNPeer] = {}
    if home:
        with db.session() as s:
            peers = {p.host: p for p in s.scalars(select(VPNPeer).where(VPNPeer.host.in_(home)))}
            for p in peers.values():
                s.expunge(p)
    out = {}
    for name, lap in inventory.laptops.items():
        office = str(lap.ansible_host)
        peer = peers.get(name)
        if name not in home:
            r = Reach(name, office, lap.ansible_port, "office", "office laptop: inventory address", office)
        elif peer is not None and peer.status == PEER_ACTIVE and peer.address_v4:
            r = Reach(name, peer.address_v4, lap.ansible_port, "vpn",
                      "home-office laptop with an active VPN peer: tunnel address", office)
        else:
            state = peer.status if peer is not None else "no VPN peer"
            r = Reach(name, office, lap.ansible_port, "office",
                      f"home-office laptop not (or no longer) enrolled ({state}): office address, for bootstrap",
                      office)
        out[name] = r
    return out


def _pin_tunnel_addresses(config: Config, reach: dict[str, Reach]) -> None:
    """Pin each tunnel address with the key pinned for the office address (never replacing a pin)."""
    pinned = PinnedHostKeys(known_hosts_path(config))
    new = {}
    for r in reach.values():
        if r.via != "vpn":
            continue
        for key in pinned.lookup(host_id(r.office_address, r.port)).values():
            new[host_id(r.address, r.port)] = key
    # add() merges under the file lock and skips any address that already has a key of that type.
    fresh = {hid: k for hid, k in new.items() if k.get_name() not in pinned.lookup(hid)}
    if fresh:
        pinned.add(fresh)


def _unpin_old_tunnel_addresses(config: Config, db: Database, inventory: Inventory,
                                reach: dict[str, Reach]) -> list[str]:
    """Remove the pins `_pin_tunnel_addresses` made for tunnel addresses that are no longer an active
    home-office peer's address, or that now belong to a laptop with another key. Only addresses in
    the VPN pool, never an inventory address, and only keys copied from a pin of another address."""
    pools = [ipaddress.ip_network(p) for p in (config.vpn.pool_v4, config.vpn.pool_v6) if p]
    hosts: list[Laptop | Gateway] = [*inventory.laptops.values(), *inventory.gateways.values()]
    inventory_addresses = {str(h.ansible_host) for h in hosts}

    def in_scope(hid: str) -> bool:
        addr = address_of(hid)
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return addr not in inventory_addresses and any(ip in p for p in pools)

    pinned = PinnedHostKeys(known_hosts_path(config))
    wanted = {host_id(r.address, r.port): {(k.get_name(), k.get_base64())
                                           for k in pinned.lookup(host_id(r.office_address, r.port)).values()}
              for r in reach.values() if r.via == "vpn"}
    removed = pinned.remove_copies(in_scope, wanted)
    if removed:
        audit.record(db, "laptop.reach.unpin", ",".join(removed),
                     {"why": "tunnel address no longer in use by this laptop (peer revoked or address changed)"})
    return removed


def _write_hosts(src: Path, dst_dir: Path, reach: dict[str, Reach]) -> None:
    data = load_file(src) or {}
    for group in ((data.get("all") or {}).get("children") or {}).values():
        for name, hv in ((group or {}).get("hosts") or {}).items():
            if name in reach and reach[name].via == "vpn":
                hv["ansible_host"] = reach[name].address
    dst_dir.mkdir(parents=True, exist_ok=True)
    tmp = dst_dir / f".hosts.yml.{os.getpid()}"
    tmp.write_text(f"# Written by werne from {src}: home-office laptops at their tunnel addresses. Do not edit.\n"
                   + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    tmp.replace(dst_dir / "hosts.yml")
    # The rest of the inventory (schools, iPads, group_vars, host_vars) is the original's.
    for name in ("schools.yml", "ipads.csv", "group_vars", "host_vars"):
        link, target = dst_dir / name, src.parent / name
        if target.exists() and not link.is_symlink():
            link.symlink_to(target)
        elif not target.exists() and link.is_symlink():
            link.unlink()


def inventory_in_use(config: Config, db: Database, inventory: Inventory) -> Inventory:
    """The inventory with every home-office laptop at the address in use (see the module doc).

    Without any `home_office: true` laptop this is the inventory itself, and the database is not read.
    """
    if not any(is_home_office(inventory, h) for h in inventory.laptops):
        return inventory
    reach = reach_map(db, inventory)
    _unpin_old_tunnel_addresses(config, db, inventory, reach)
    if not any(r.via == "vpn" for r in reach.values()):
        return inventory
    _pin_tunnel_addresses(config, reach)
    dst = config.state_dir / REACH_DIR
    _write_hosts(inventory.hosts_file, dst, reach)
    return load_inventory(dst)
