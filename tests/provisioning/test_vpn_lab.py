"""A real WireGuard tunnel between lab hosts (systemd-nspawn containers, each its own network
namespace, userspace wireguard-go): admission, kill switch, status evidence, rotation, revocation,
reinstatement, bad keys, unreachable laptop and gateway, and a leak check for private keys.

The tests share one lab and run in file order; each states the situation it leaves behind.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from core.errors import EXIT_COULD_NOT_RUN, EXIT_FINDINGS
from core.models import AuditEvent
from provisioning.vpn.models import VPNPeer, VPNRetiredKey
from tests.fixtures.site import REPO

pytestmark = [pytest.mark.lab, pytest.mark.slow]



def peer_row(vl, host: str) -> VPNPeer:
    with vl.db.session() as s:
        return s.scalar(select(VPNPeer).where(VPNPeer.host == host))


def audit_actions(vl) -> list[tuple[str, str, dict]]:
    with vl.db.session() as s:
        return [(e.action, e.target, e.detail) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def test_tunnel_carries_traffic_and_the_gateway_sees_a_handshake(vpn_lab):
    vl = vpn_lab
    assert vl.ping_gateway("lap01") and vl.ping_gateway("lap02")
    dump = vl.gateway_dump()
    for host, addr in (("lap01", "10.77.0.11"), ("lap02", "10.77.0.12")):
        pub = vl.public_key(host)
        assert peer_row(vl, host).public_key == pub
        assert dump[pub][3] == f"{addr}/32"
        assert int(dump[pub][4]) > 0, "the gateway saw no handshake"
        # The key pair was made on the laptop: root-only file, and it matches what the gateway has.
        st = vl.sh(host, "stat -c '%a %U %G' /etc/wireguard/wg0.key").stdout.split()
        assert st == ["600", "root", "root"]
        priv = vl.private_key(host)
        derived = subprocess.run(["wg", "pubkey"], input=priv, capture_output=True, text=True).stdout
        assert derived.strip() == pub
    conf = vl.sh("lap01", "cat /etc/wireguard/wg0.conf").stdout
    assert "AllowedIPs = 0.0.0.0/0, ::/0" in conf and "PrivateKey" not in conf
    assert vl.sh("lap01", "systemctl is-enabled wg-quick@wg0").stdout.strip() == "enabled"
    # Full tunnel: an Internet address is routed into wg0; the city's DNS is in use.
    assert "dev wg0" in vl.sh("lap01", "ip route get 198.51.100.7").stdout
    assert vl.sh("lap01", "cat /etc/resolv.conf").stdout.strip() == "nameserver 10.77.0.1"


def test_kill_switch_blocks_traffic_outside_the_tunnel_but_keeps_the_admin_network(vpn_lab):
    vl = vpn_lab
    host_side = vl.lab.network()["host_address"]
    try:
        assert vl.sh("lap01", "systemctl stop wg-quick@wg0").returncode == 0
        out = vl.sh("lap01", "ping -c 1 -W 1 198.51.100.7")
        assert out.returncode != 0 and "Packet filtered" in out.stdout
        counters = vl.sh("lap01", "nft list table inet werne_vpn_killswitch").stdout
        assert "reject" in counters and "counter packets 0 " not in counters
        # The admins' network (here: the lab bridge's host side) stays reachable, so does SSH.
        assert vl.sh("lap01", f"ping -c 1 -W 2 {host_side}").returncode == 0
    finally:
        vl.sh("lap01", "systemctl start wg-quick@wg0")
    assert vl.ping_gateway("lap01")


def test_status_reports_key_age_handshake_and_endpoint(vpn_lab):
    vl = vpn_lab
    r = vl.cli("vpn", "status", "--json")
    assert r.exit_code == 0, r.output
    rows = {p["host"]: p for p in json.loads(r.stdout)}
    assert set(rows) == {"lap01", "lap02"}
    lap01 = rows["lap01"]
    assert lap01["status"] == "active" and lap01["flags"] == [] and lap01["on_gateway"]
    assert lap01["allowed_ips"] == ["10.77.0.11/32"]
    assert lap01["endpoint"].startswith(vl.inventory.laptops["lap01"].ansible_host + ":")
    assert lap01["handshake_age_s"] is not None and lap01["key_age_days"] is not None
    # An unknown key on the gateway is flagged (put there by hand, as an intruder would).
    made = subprocess.run(["sh", "-c", "wg genkey | wg pubkey"], capture_output=True, text=True)
    intruder = made.stdout.strip()
    vl.sh("vpngw", f"wg set wg0 peer {intruder} allowed-ips 10.77.0.200/32")
    try:
        r = vl.cli("vpn", "status", "--json")
        assert r.exit_code == EXIT_FINDINGS
        rows = {p["public_key"]: p for p in json.loads(r.stdout)}
        assert rows[intruder]["flags"] == ["unknown_peer"] and rows[intruder]["host"] is None
    finally:
        vl.sh("vpngw", f"wg set wg0 peer {intruder} remove")


def test_rotation_switches_to_a_new_key_and_the_old_one_stops_working(vpn_lab):
    vl = vpn_lab
    old_pub, old_priv = vl.public_key("lap01"), vl.private_key("lap01")
    vl.sh("lap01", "umask 077; cp /etc/wireguard/wg0.key /root/old-wg.key")
    r = vl.cli("vpn", "rotate", "lap01")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("lap01: rotated (10.77.0.11)")
    new_pub, new_priv = vl.public_key("lap01"), vl.private_key("lap01")
    assert new_pub != old_pub and new_priv != old_priv
    assert peer_row(vl, "lap01").public_key == new_pub
    dump = vl.gateway_dump()
    assert new_pub in dump and old_pub not in dump
    assert vl.ping_gateway("lap01")
    assert int(vl.gateway_dump()[new_pub][4]) > 0
    # The old key no longer gets in.
    vl.sh("lap01", "wg set wg0 private-key /root/old-wg.key")
    try:
        assert not vl.ping_gateway("lap01", attempts=4)
    finally:
        vl.sh("lap01", "wg set wg0 private-key /etc/wireguard/wg0.key; rm -f /root/old-wg.key")
    assert vl.ping_gateway("lap01")
    with vl.db.session() as s:
        assert s.scalar(select(VPNRetiredKey).where(VPNRetiredKey.public_key == old_pub)).reason == "rotated"


def test_laptop_unreachable_during_rotation_keeps_its_old_key_working(vpn_lab):
    from provisioning.vpn.ops import rotate

    vl = vpn_lab
    before_pub = vl.public_key("lap02")
    before_row = peer_row(vl, "lap02")

    def take_lap02_away(hosts: list[str]) -> None:
        assert hosts == ["lap02"]
        vl.lab.stop_host("lap02")

    try:
        report = rotate(vl.config, vl.db, vl.inventory, ["lap02"], after_gateway_switch=take_lap02_away)
    finally:
        vl.lab.start_host("lap02")
    [res] = report.hosts
    assert res.outcome == "unreachable" and "old key still in use" in res.reason
    assert not report.ok
    # Nothing half-applied: the database and the gateway have the old key, which still works.
    after_row = peer_row(vl, "lap02")
    assert after_row.public_key == before_row.public_key
    assert after_row.key_created_at == before_row.key_created_at
    assert before_pub in vl.gateway_dump()
    vl.wait_tunnel("lap02")  # it rebooted: wg-quick@wg0 starts at boot with the old key
    assert vl.public_key("lap02") == before_pub
    assert vl.ping_gateway("lap02")


def test_laptop_unreachable_before_rotation_is_reported_and_nothing_changes(vpn_lab):
    vl = vpn_lab
    before = vl.public_key("lap02")
    vl.lab.stop_host("lap02")
    try:
        r = vl.cli("vpn", "rotate", "lap02")
    finally:
        vl.lab.start_host("lap02")
    assert r.exit_code == EXIT_FINDINGS
    assert r.stdout.startswith("lap02: unreachable: ") and "old key still in use" in r.stdout
    assert peer_row(vl, "lap02").public_key == before and before in vl.gateway_dump()
    vl.wait_tunnel("lap02")
    assert vl.public_key("lap02") == before
    assert vl.ping_gateway("lap02")


@pytest.mark.parametrize("wrapper_output,reason", [
    ("this-is-not-a-key", "lap02: returned a malformed public key"),
    ("LAP01", "lap02: returned a public key already used by lap01"),
])
def test_malformed_or_duplicate_public_key_from_a_laptop_is_refused(vpn_lab, wrapper_output, reason):
    vl = vpn_lab
    if wrapper_output == "LAP01":
        wrapper_output = vl.public_key("lap01")
    before_row, before_dump = peer_row(vl, "lap02"), set(vl.gateway_dump())
    # A laptop whose `wg pubkey` answers something else (broken tools, or a cloned disk).
    script = ("#!/bin/sh\n"
              f'if [ "$1" = pubkey ]; then cat >/dev/null; echo {wrapper_output}\n'
              'else exec /usr/bin/wg "$@"; fi\n')
    vl.sh("lap02", "cat > /usr/local/bin/wg && chmod 755 /usr/local/bin/wg", input=script)
    try:
        r = vl.cli("vpn", "rotate", "lap02")
    finally:
        vl.sh("lap02", "rm -f /usr/local/bin/wg")
    assert r.exit_code == EXIT_FINDINGS, r.output
    assert r.stdout.startswith(f"lap02: failed: {reason}") and "old key still in use" in r.stdout
    assert "Traceback" not in r.output
    after = peer_row(vl, "lap02")
    assert (after.public_key, after.key_created_at) == (before_row.public_key, before_row.key_created_at)
    assert set(vl.gateway_dump()) == before_dump
    assert vl.sh("lap02", "test -e /etc/wireguard/wg0.key.next").returncode != 0, "next key left behind"
    assert vl.ping_gateway("lap02")


def test_gateway_unreachable_changes_nothing_and_exits_3(vpn_lab):
    vl = vpn_lab
    before = peer_row(vl, "lap01")
    n_audit = len(audit_actions(vl))
    vl.lab.stop_host("vpngw")
    try:
        r = vl.cli("vpn", "revoke", "lap01", "--reason", "test: gateway down")
        r2 = vl.cli("vpn", "rotate", "lap01")
        r3 = vl.cli("vpn", "status")
    finally:
        vl.lab.start_host("vpngw")
    for res in (r, r2, r3):
        assert res.exit_code == EXIT_COULD_NOT_RUN, res.output
        assert res.stderr.startswith("Error: VPN gateway vpngw (") and "unreachable" in res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.output
    after = peer_row(vl, "lap01")
    assert (after.status, after.public_key, after.address_v4) == ("active", before.public_key, "10.77.0.11")
    assert len(audit_actions(vl)) == n_audit
    vl.wait_tunnel("vpngw")
    assert vl.ping_gateway("lap01", attempts=30), "the gateway did not bring the tunnel back at boot"


def test_revocation_cuts_the_laptop_off_at_once_and_provisioning_does_not_bring_it_back(vpn_lab):
    from provisioning.vpn.ops import enrol

    vl = vpn_lab
    pub = vl.public_key("lap01")
    vl.private_key("lap01")  # remembered for the leak check
    vl.lab.stop_host("lap01")  # a stolen laptop is not reachable: revocation must not need it
    try:
        r = vl.cli("vpn", "revoke", "lap01", "--reason", "reported stolen, ticket 4711")
    finally:
        vl.lab.start_host("lap01")
    vl.wait_tunnel("lap01")
    assert r.exit_code == 0, r.output
    assert r.stdout == "lap01: revoked (reported stolen, ticket 4711)\n"
    assert pub not in vl.gateway_dump()
    row = peer_row(vl, "lap01")
    assert (row.status, row.public_key, row.address_v4) == ("revoked", None, None)
    assert row.last_address_v4 == "10.77.0.11"
    action, target, detail = audit_actions(vl)[-1]
    assert (action, target, detail["reason"], detail["public_key"]) == (
        "vpn.revoke", "lap01", "reported stolen, ticket 4711", pub)
    # Traffic stops and the handshake no longer renews.
    hs_before = vl.sh("lap01", "wg show wg0 latest-handshakes").stdout.split()[1]
    assert not vl.ping_gateway("lap01", attempts=6)
    assert vl.sh("lap01", "wg show wg0 latest-handshakes").stdout.split()[1] == hs_before
    assert pub not in vl.gateway_dump()
    assert vl.ping_gateway("lap02"), "the other laptop lost its tunnel when lap01 was removed"
    # A later provisioning run leaves it out.
    report = enrol(vl.config, vl.db, vl.inventory, ["lap01"])
    assert [(h.host, h.outcome) for h in report.hosts] == [("lap01", "skipped")]
    assert peer_row(vl, "lap01").status == "revoked" and pub not in vl.gateway_dump()
    assert not vl.ping_gateway("lap01", attempts=3)


def test_reinstate_needs_a_new_key_made_on_the_laptop(vpn_lab):
    from provisioning.vpn.ops import enrol

    vl = vpn_lab
    old_pub = vl.public_key("lap01")  # the revoked key, still loaded on the laptop
    r = vl.cli("vpn", "reinstate", "lap01")
    assert r.exit_code == 0 and r.stdout.startswith("lap01: reinstated"), r.output
    report = enrol(vl.config, vl.db, vl.inventory, ["lap01"])
    assert [(h.host, h.outcome) for h in report.hosts] == [("lap01", "admitted")], report
    new_pub = vl.public_key("lap01")
    assert new_pub != old_pub and peer_row(vl, "lap01").public_key == new_pub
    assert peer_row(vl, "lap01").address_v4 == "10.77.0.11"
    vl.private_key("lap01")
    assert vl.ping_gateway("lap01")


def test_no_private_key_in_repo_database_artifacts_logs_or_reports(vpn_lab):
    vl = vpn_lab
    for host in ("lap01", "lap02", "vpngw"):
        vl.private_key(host)
    keys = sorted(vl.private_keys)
    # At least both laptops' and the gateway's; in a full run also lap01's rotated-out and revoked keys.
    assert len(keys) >= 3
    state = vl.config.state_dir
    # The devices' own disks (overlay layers) are where the keys belong; their console logs are not.
    lab_disks = [d / part for d in (state / "lab" / "hosts").iterdir() for part in ("upper", "root", "work")]
    searched: list[Path] = []
    for root in (state, REPO):
        for p in root.rglob("*"):
            if not p.is_file() or any(d in p.parents for d in lab_disks):
                continue
            if root == REPO and any(part in (".venv", ".tools", ".git", "node_modules") for part in p.parts):
                continue
            searched.append(p)
    assert any(p.name.startswith("werne.db") for p in searched)
    assert any("artifacts" in p.parts and p.parent.name == "job_events" for p in searched)
    leaks = []
    for p in searched:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        leaks += [str(p) for k in keys if k.encode() in data]
    leaks += [f"cli output {i}" for i, out in enumerate(vl.cli_output) for k in keys if k in out]
    assert leaks == []
