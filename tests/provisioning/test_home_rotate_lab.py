"""VPN key rotation of home-office laptops that werne reaches only through their tunnel, on the real
lab: two laptops enrolled on the office network, then sent home behind their own NAT routers.

1. lap01 is rotated through its tunnel: it switches by itself (the timer the prepare phase armed),
   werne commits through the tunnel with the new key, and nothing is left armed on the laptop.
2. lap02 stays on, but werne loses its way to it right after the gateway swapped keys (a blackhole
   route on the controller): werne cannot commit, swaps the gateway back and queues the rotation;
   the laptop goes back to its old key by itself and is reachable through the tunnel again.
3. lap02 is switched off while its rotation is under way: the gateway is swapped back, the laptop
   boots with its old key; the watcher then applies the queued rotation through the tunnel once.

Handshakes are real: judged from the gateway's `wg show dump`.
"""

from __future__ import annotations

import subprocess
import time

import pytest

# The test waits on purpose for the laptops' own timers (up to REVERT_S twice): more than the
# suite's per-test timeout on a loaded machine.
pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1800)]

# The laptop's own revert, shorter than the default (120 s) so the two waits for it stay short, and
# long enough for a commit through the tunnel on a loaded machine (the setting allows 20 s).
SWITCH_S, REVERT_S = 2, 45


def _dump(config, inventory):  # type: ignore[no-untyped-def]
    from provisioning.home.presence import GatewayReader

    reader = GatewayReader(config, inventory)
    try:
        return {p.public_key: p for p in reader.dump()}
    finally:
        reader.close()


def _wait_handshake(config, inventory, key, after, timeout=60.0):  # type: ignore[no-untyped-def]
    """Wait until the gateway saw a handshake with `key` later than `after` (a unix time)."""
    deadline = time.monotonic() + timeout
    while True:
        p = _dump(config, inventory).get(key)
        if p is not None and p.latest_handshake and p.latest_handshake >= after:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no handshake with {key[:8]}… since {after}: {p}")
        time.sleep(1)


def _laptop_key(lab, host):  # type: ignore[no-untyped-def]
    """(the running tunnel's public key, the public key of the key file, next key file present?)"""
    running = lab.exec(host, ["wg", "show", "wg0", "public-key"]).stdout.strip()
    on_disk = lab.exec(host, ["sh", "-c", "wg pubkey < /etc/wireguard/wg0.key"]).stdout.strip()
    nxt = lab.exec(host, ["test", "-e", "/etc/wireguard/wg0.key.next"]).returncode == 0
    return running, on_disk, nxt


def _rotate_log(lab, host):  # type: ignore[no-untyped-def]
    return lab.exec(host, ["journalctl", "--no-pager", "-o", "cat", "-t", "werne-wg-rotate"]).stdout


def _peer_key(db, host):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from provisioning.vpn.models import VPNPeer

    with db.session() as s:
        return s.scalars(select(VPNPeer).where(VPNPeer.host == host)).one().public_key


def test_rotation_through_the_tunnel(lab_factory):  # type: ignore[no-untyped-def]
    from compliance.catchup import make_watcher
    from core.inventory import load_inventory
    from provisioning.home.pending import list_items
    from provisioning.home.reach import inventory_in_use
    from provisioning.vpn.ops import rotate
    from tests.fixtures.vpn import home_office_lab

    lab = lab_factory(2, gateway=True)
    _, config, db = home_office_lab(
        lab, ["lap01", "lap02"], connect_timeout=10,
        vpn=f"rotate_switch_after_s = {SWITCH_S}\nrotate_revert_after_s = {REVERT_S}\n")

    def inv():  # type: ignore[no-untyped-def]
        return inventory_in_use(config, db, load_inventory(config.inventory_dir))

    try:
        inventory = inv()
        tunnel = {h: str(inventory.laptops[h].ansible_host) for h in ("lap01", "lap02")}
        start = time.time()
        for h in tunnel:
            _wait_handshake(config, inventory, _peer_key(db, h), start - 180)

        # --- 1. through the tunnel: the laptop switches by itself, werne commits through the tunnel
        old1 = _peer_key(db, "lap01")
        t0 = time.time()
        report = rotate(config, db, inventory, ["lap01"])
        (r1,) = report.hosts
        assert r1.outcome == "rotated", r1
        assert r1.public_key != old1 and _peer_key(db, "lap01") == r1.public_key
        assert _laptop_key(lab, "lap01") == (r1.public_key, r1.public_key, False)
        gw = _dump(config, inventory)
        assert old1 not in gw and r1.public_key in gw
        _wait_handshake(config, inventory, r1.public_key, t0)
        timers = lab.exec("lap01", ["systemctl", "list-units", "--all", "--no-legend", "werne-wg-rotate*"]).stdout
        assert timers.strip() == "", timers  # nothing left armed that could undo the commit
        # Past the revert time the laptop still uses the new key, and werne still reaches it.
        time.sleep(max(0.0, t0 + SWITCH_S + REVERT_S + 2 - time.time()))
        assert _laptop_key(lab, "lap01")[0] == r1.public_key
        again = rotate(config, db, inv(), ["lap01"]).hosts
        assert again[0].outcome == "rotated", again

        # --- 2. werne loses its way to lap02 after the gateway swap: no commit, so both sides go back
        old2 = _peer_key(db, "lap02")

        def cut_off(hosts):  # type: ignore[no-untyped-def]
            subprocess.run(["ip", "route", "add", "blackhole", f"{tunnel['lap02']}/32"], check=True)

        try:
            report = rotate(config, db, inventory, ["lap02"], after_gateway_switch=cut_off)
        finally:
            subprocess.run(["ip", "route", "del", "blackhole", f"{tunnel['lap02']}/32"], check=False)
        (r2,) = report.hosts
        assert r2.outcome == "queued", r2
        assert "gateway switched back" in r2.reason and "old key by itself" in r2.reason
        assert _peer_key(db, "lap02") == old2 and old2 in _dump(config, inventory)
        # The laptop's own revert (its journal says so), then a handshake with the old key at once.
        deadline = time.monotonic() + REVERT_S + 30
        while "did not commit the next key in time" not in _rotate_log(lab, "lap02"):
            assert time.monotonic() < deadline, _rotate_log(lab, "lap02")
            time.sleep(1)
        _wait_handshake(config, inventory, old2, time.time() - 10)
        running, on_disk, nxt = _laptop_key(lab, "lap02")
        assert running == on_disk == old2 and nxt  # the next key was never made current
        (item,) = list_items(db)
        assert (item.host, item.kind, item.state) == ("lap02", "vpn_rotate", "pending")

        # --- 3. lap02 is switched off in the middle: the gateway goes back; it boots with its old key
        def switch_off(hosts):  # type: ignore[no-untyped-def]
            lab.switch_off(["lap02"])

        report = rotate(config, db, inventory, ["lap02"], after_gateway_switch=switch_off)
        assert report.hosts[0].outcome == "queued", report.hosts
        assert _peer_key(db, "lap02") == old2
        assert len(list_items(db)) == 1  # the same open item, not a second one
        lab.switch_on(["lap02"])
        _wait_handshake(config, inventory, old2, time.time() - 1, timeout=90)

        # --- the watcher applies the queued rotation once, through the tunnel
        w = make_watcher(config, db, inv)
        w.tick()
        time.sleep(1.5)  # past the scheduler's jitter ([homeoffice] catchup_jitter_s = 1)
        w.tick()
        rot = [s for s in w.steps if s.action == "vpn_rotate"]
        if [(s.host, s.outcome) for s in rot] != [("lap02", "done")]:
            diag = lab.exec("lap02", ["sh", "-c", "journalctl --no-pager -o short-precise -t werne-wg-rotate "
                                      "-u 'werne-wg-rotate*' | tail -n 20; wg show wg0; date"]).stdout
            raise AssertionError(f"{w.steps}\n{diag}\n{_dump(config, inventory)}")
        new2 = _peer_key(db, "lap02")
        assert new2 != old2 and _laptop_key(lab, "lap02") == (new2, new2, False)
        assert [(i.host, i.state) for i in list_items(db, include_closed=True)] == [("lap02", "done")]
        assert list_items(db) == []
    finally:
        db.dispose()
