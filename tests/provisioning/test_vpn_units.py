"""The VPN's pure parts: public keys, the address pool on a real database, gateway rendering
(golden), `wg show dump` parsing and the handshake flags, the migration and the [vpn] config."""

from __future__ import annotations

import ipaddress
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jinja2 import UndefinedError
from sqlalchemy import inspect, select

from core.config import load_config
from core.db import Database
from core.errors import EXIT_INPUT, ConfigError
from provisioning.vpn.errors import AddressCollisionError, PoolExhaustedError, PublicKeyError
from provisioning.vpn.gateway import (
    GatewayPeer,
    GatewaySettings,
    _environment,
    render_gateway_config,
    render_gateway_nftables,
)
from provisioning.vpn.keys import check_duplicates, validate_public_key
from provisioning.vpn.models import PEER_REVOKED, VPNPeer
from provisioning.vpn.pool import AddressPool
from provisioning.vpn.status import DumpFormatError, PeerRecord, build_status, parse_wg_dump
from tests.fixtures.vpn import admit_peer

K1 = "MJM9kWVdAiKVHmnMqeXUU7kXzo3364himCaSIhHE0TI="
K2 = "dLvlYDP4QDVXLJOO1gIn5vvopGFKGH5RCP65VVkt3ig="
K3 = "lAEOo+lCCbp5aqQZhd+vvHIveLeXcb7O2x5FsCoJfVM="


def wg_keypair() -> tuple[str, str]:
    priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
    pub = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True, check=True).stdout
    return priv.strip(), pub.strip()


# --- keys -----------------------------------------------------------------------------------

def test_real_wg_public_key_is_accepted_with_surrounding_whitespace():
    _, pub = wg_keypair()
    assert validate_public_key(pub + "\n", "lap01") == pub
    assert validate_public_key(pub.encode(), "lap01") == pub


@pytest.mark.parametrize("raw", [
    "", "   ", None, "not a key", K1[:-2] + "=", K1 + "A", K1.replace("=", "A"),
    "A" * 43 + "=" + "\n" + K2,           # two lines
    "MJM9kWVdAiKVHmnMqeXUU7kXzo3364himCaSIhHE0TJ=",  # last char leaves non-zero padding bits
    "////////////////////////////////////////////////////",
    "-----BEGIN PRIVATE KEY-----",
])
def test_malformed_public_keys_are_refused_with_exit_2(raw):
    with pytest.raises(PublicKeyError) as e:
        validate_public_key(raw, "lap02")
    assert str(e.value).startswith("lap02: returned ")
    assert e.value.exit_code == EXIT_INPUT


def test_duplicate_keys_between_new_hosts_are_refused():
    with pytest.raises(PublicKeyError, match="lap02: returned the same public key as lap01"):
        check_duplicates({"lap01": K1, "lap02": K1}, {})


def test_key_of_another_peer_or_the_gateway_is_refused():
    with pytest.raises(PublicKeyError, match="already used by vpngw"):
        check_duplicates({"lap01": K1}, {K1: "vpngw"})


def test_retired_key_is_refused_but_own_current_key_is_fine():
    with pytest.raises(PublicKeyError, match="was retired"):
        check_duplicates({"lap01": K2}, {}, retired=[K2])
    check_duplicates({"lap01": K1, "lap02": K2}, {K1: "lap01"})


# --- pool -----------------------------------------------------------------------------------

@pytest.fixture
def db(tmp_path: Path, migrated_db):  # type: ignore[no-untyped-def]
    d = Database(migrated_db(tmp_path / "werne.db"))
    yield d
    d.dispose()


def pool_of(v4: str, v6: str | None = None) -> AddressPool:
    return AddressPool(ipaddress.ip_network(v4), ipaddress.ip_network(v6) if v6 else None)  # type: ignore[arg-type]





def test_pool_skips_network_and_gateway_address_and_is_stable_across_runs(db, tmp_path):
    pool = pool_of("10.77.0.0/24", "fd77:77::/64")
    assert pool.gateway_v4 == ipaddress.ip_address("10.77.0.1")
    assert admit_peer(db, pool, "lap01") == ("10.77.0.2", "fd77:77::2")
    assert admit_peer(db, pool, "lap02") == ("10.77.0.3", "fd77:77::3")
    # A new process on the same database file gives the same answers.
    db2 = Database(db.url)
    try:
        assert admit_peer(db2, pool, "lap01") == ("10.77.0.2", "fd77:77::2")
        assert admit_peer(db2, pool, "lap03") == ("10.77.0.4", "fd77:77::4")
    finally:
        db2.dispose()


def test_preferred_inventory_address_is_used_and_collisions_are_refused(db):
    pool = pool_of("10.77.0.0/24")
    assert admit_peer(db, pool, "lap01", "10.77.0.11") == ("10.77.0.11", None)
    with pytest.raises(AddressCollisionError, match="10.77.0.11 is already held by lap01"):
        admit_peer(db, pool, "lap02", "10.77.0.11")
    with pytest.raises(AddressCollisionError, match="gateway's own address"):
        admit_peer(db, pool, "lap02", "10.77.0.1")
    with db.session() as s:  # the refused host's transaction was rolled back: nothing stored
        assert s.scalar(select(VPNPeer).where(VPNPeer.host == "lap02")) is None


def test_inventory_address_outside_the_pool_or_not_a_host_address_gets_a_pool_address(db):
    pool = pool_of("10.77.0.8/29")
    assert admit_peer(db, pool, "lap01", "10.99.0.5") == ("10.77.0.10", None)
    assert admit_peer(db, pool, "lap02", "10.77.0.15") == ("10.77.0.11", None)  # the broadcast address
    assert admit_peer(db, pool, "lap03", "10.77.0.14") == ("10.77.0.14", None)


def test_exhausted_pool_is_a_clear_input_error(db):
    pool = pool_of("10.77.0.0/29")  # .1 gateway, .2-.6 laptops
    got = [admit_peer(db, pool, f"lap{i:02d}")[0] for i in range(1, 6)]
    assert got == [f"10.77.0.{i}" for i in range(2, 7)]
    with pytest.raises(PoolExhaustedError) as e:
        admit_peer(db, pool, "lap06")
    assert e.value.exit_code == EXIT_INPUT
    assert "pool 10.77.0.0/29 is exhausted" in str(e.value)


def test_address_is_reused_only_after_revocation(db):
    pool = pool_of("10.77.0.0/29")
    for i in range(1, 6):
        admit_peer(db, pool, f"lap{i:02d}")
    with db.session() as s:
        peer = s.scalar(select(VPNPeer).where(VPNPeer.host == "lap03"))
        peer.status = PEER_REVOKED
        AddressPool.release(peer)
    with db.session() as s:
        peer = s.scalar(select(VPNPeer).where(VPNPeer.host == "lap03"))
        assert (peer.address_v4, peer.last_address_v4) == (None, "10.77.0.4")
    assert admit_peer(db, pool, "lap06") == ("10.77.0.4", None)


def test_pool_from_config_refuses_a_changed_pool_for_held_addresses(db):
    admit_peer(db, pool_of("10.77.0.0/24"), "lap01")
    with pytest.raises(AddressCollisionError, match="was the pool changed"):
        admit_peer(db, pool_of("10.78.0.0/24"), "lap01")


# --- gateway rendering (golden) -------------------------------------------------------------

SETTINGS = GatewaySettings(interface="wg0", listen_port=51820, addresses=("10.77.0.1/24", "fd77:77::1/64"),
                           pool_v4="10.77.0.0/24", pool_v6="fd77:77::/64")
PEERS = [GatewayPeer("lap01", K1, ("10.77.0.11/32", "fd77:77::b/128")),
         GatewayPeer("lap02", K2, ("10.77.0.12/32",))]

GOLDEN_WG = f"""\
# Managed by werne (`werne vpn gateway apply`); changes here are overwritten.
# Rendered from the 2 active peer(s) in the state database.
[Interface]
Address = 10.77.0.1/24, fd77:77::1/64
ListenPort = 51820
# The private key was made on this gateway and never leaves it: wg-quick loads it from its file.
PostUp = wg set %i private-key /etc/wireguard/wg0.key
PostUp = nft -f /etc/werne/vpn-gateway.nft
PostDown = nft delete table inet werne_vpn_gw

[Peer]
# lap01
PublicKey = {K1}
AllowedIPs = 10.77.0.11/32, fd77:77::b/128

[Peer]
# lap02
PublicKey = {K2}
AllowedIPs = 10.77.0.12/32
"""

GOLDEN_NFT = """\
#!/usr/sbin/nft -f
# Managed by werne (`werne vpn gateway apply`): forwarding and NAT for the VPN pool.
# Declare, delete and re-create, so that loading it again replaces the table atomically.
table inet werne_vpn_gw
delete table inet werne_vpn_gw
table inet werne_vpn_gw {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		# Laptops may reach anything through the gateway; nothing may open a connection to them.
		iifname "wg0" ip saddr 10.77.0.0/24 accept
		iifname "wg0" ip6 saddr fd77:77::/64 accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.77.0.0/24 oifname != "wg0" masquerade
		ip6 saddr fd77:77::/64 oifname != "wg0" masquerade
	}
}
"""


def test_gateway_config_golden():
    assert render_gateway_config(PEERS, SETTINGS) == GOLDEN_WG


def test_gateway_nftables_golden_and_valid_for_nft():
    text = render_gateway_nftables(SETTINGS)
    assert text == GOLDEN_NFT
    # nft's own parser (check mode, no change to this machine's rules) accepts it.
    without_delete = text.replace("delete table inet werne_vpn_gw\n", "")
    check = subprocess.run(["nft", "-c", "-f", "-"], input=without_delete, capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stderr


def test_gateway_config_with_no_peers_and_v4_only_settings_from_config(tmp_path):
    cfg = load_config(None, tmp_path)
    settings = GatewaySettings.from_config(cfg.vpn)
    assert settings.addresses == ("10.77.0.1/24",)
    text = render_gateway_config([], settings)
    assert "[Peer]" not in text and "Rendered from the 0 active peer(s)" in text
    assert "ip6" not in render_gateway_nftables(settings)


def test_templates_are_strict_about_undefined_values():
    with pytest.raises(UndefinedError):
        _environment().get_template("gateway-wg.conf.j2").render(peers=[])


# --- wg show dump ---------------------------------------------------------------------------

PRIV = "gBr0qgcJ5EtPRSxa0X4vKb9sXxgBpvUm0Eu2u/T0kF8="
# Captured from wireguard-go (`wg show wgcap dump`); the interface line is made up here.
DUMP = (
    f"{PRIV}\t{K3}\t51820\toff\n"
    f"{K1}\t(none)\t192.0.2.5:40000\t10.77.0.11/32,fd77::11/128\t1764237600\t1234\t5678\t25\n"
    f"{K2}\t(none)\t(none)\t10.77.0.12/32\t0\t0\t0\toff\n"
)


def test_dump_parser_reads_peers_and_never_keeps_the_interface_private_key():
    peers = parse_wg_dump(DUMP)
    assert [p.public_key for p in peers] == [K1, K2]
    assert peers[0].endpoint == "192.0.2.5:40000"
    assert peers[0].allowed_ips == ("10.77.0.11/32", "fd77::11/128")
    p0, p1 = peers
    assert (p0.latest_handshake, p0.rx_bytes, p0.tx_bytes) == (1764237600, 1234, 5678)
    assert p0.persistent_keepalive == 25
    assert p1.endpoint is None and p1.latest_handshake == 0 and p1.persistent_keepalive is None
    assert PRIV not in repr(peers)


@pytest.mark.parametrize("bad", ["a\tb\tc\n", f"{K1}\t(none)\t(none)\t(none)\tsoon\t0\t0\toff\n"])
def test_dump_parser_refuses_broken_lines(bad):
    with pytest.raises(DumpFormatError):
        parse_wg_dump(bad)


def test_status_flags_stale_missing_unknown_revoked_and_old_keys():
    now = datetime.fromtimestamp(1764237600 + 4 * 3600, UTC)
    k4, k5, k6 = wg_keypair()[1], wg_keypair()[1], wg_keypair()[1]
    records = [
        PeerRecord("lap01", "active", K1, "10.77.0.11", now - timedelta(days=100)),
        PeerRecord("lap02", "active", K2, "10.77.0.12", now - timedelta(days=1)),
        PeerRecord("lap03", "active", k4, "10.77.0.13", now - timedelta(days=2)),
        PeerRecord("lap04", "revoked", k5, None, now - timedelta(days=3)),
    ]
    dump = parse_wg_dump(DUMP + f"{k5}\t(none)\t(none)\t10.77.0.14/32\t0\t0\t0\toff\n"
                         + f"{K3}\t(none)\t198.51.100.7:1234\t10.77.0.99/32\t"
                         + f"{int(now.timestamp()) - 60}\t1\t2\toff\n"
                         + f"{k6}\t(none)\t(none)\t10.77.0.98/32\t0\t0\t0\toff\n")
    out = {(s.host or s.public_key): s for s in build_status(
        records, dump, now, handshake_max_age_s=3 * 3600, key_max_age_days=90, retired_keys={k6: "lap09"},
        inventory_hosts={"lap01", "lap02", "lap03", "lap04"})}
    assert out["lap01"].flags == ["stale_handshake", "key_too_old"]
    assert out["lap01"].handshake_age_s == 4 * 3600 and out["lap01"].key_age_days == 100.0
    assert out["lap01"].endpoint == "192.0.2.5:40000"
    assert out["lap02"].flags == ["no_handshake"] and out["lap02"].handshake_age_s is None
    assert out["lap03"].flags == ["missing_on_gateway"] and not out["lap03"].on_gateway
    assert out["lap04"].flags == ["revoked_peer_present"]
    assert out[K3].status == "unknown" and out[K3].flags == ["unknown_peer"] and out[K3].handshake_age_s == 60
    assert out[K3].allowed_ips == ["10.77.0.99/32"]
    assert out["lap09"].flags == ["retired_key_present"]


def test_fresh_handshake_gives_no_flags():
    now = datetime.fromtimestamp(1764237600 + 30, UTC)
    records = [PeerRecord("lap01", "active", K1, "10.77.0.11", now)]
    got = build_status(records, parse_wg_dump(DUMP), now, handshake_max_age_s=180, key_max_age_days=90)
    [s] = [x for x in got if x.host == "lap01"]
    assert s.flags == [] and s.ok and s.handshake_age_s == 30


# --- migration and config -------------------------------------------------------------------

def test_migration_creates_and_drops_the_vpn_tables(db):
    from alembic import command

    from core.db import alembic_config

    names = set(inspect(db.engine).get_table_names())
    assert {"vpn_peers", "vpn_retired_keys", "vpn_gateways"} <= names
    cfg = alembic_config(db.url)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert not {"vpn_peers", "vpn_retired_keys", "vpn_gateways"} & set(inspect(db.engine).get_table_names())


@pytest.mark.parametrize("extra,msg", [
    ('pool_v4 = "10.77.0.1/24"', "vpn.pool_v4"),
    ('killswitch_allow = ["everything"]', "vpn.killswitch_allow"),
    ('dns = ["not-an-ip"]', "vpn.dns"),
    ('interface = "wg0; rm -rf /"', "vpn.interface"),
])
def test_bad_vpn_settings_are_config_errors(tmp_path, extra, msg):
    p = tmp_path / "werne.toml"
    p.write_text(f"[vpn]\n{extra}\n")
    with pytest.raises(ConfigError, match=msg):
        load_config(p, tmp_path)


def test_killswitch_allow_accepts_dhcp_and_networks(tmp_path):
    p = tmp_path / "werne.toml"
    p.write_text('[vpn]\nkillswitch_allow = ["dhcp", "dhcpv6", "192.0.2.10/32"]\n')
    assert load_config(p, tmp_path).vpn.killswitch_allow == ["dhcp", "dhcpv6", "192.0.2.10/32"]
