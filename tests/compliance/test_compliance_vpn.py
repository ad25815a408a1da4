"""The VPN rules over a real WireGuard lab (gateway + 2 laptops, userspace wireguard-go): handshake
age and key age come from the gateway's evidence (provisioning.vpn.status), the full tunnel from the laptop;
a split tunnel on one laptop fails exactly that rule there; old keys and stale handshakes fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from compliance.history import load_run
from compliance.run import run_compliance

pytestmark = [pytest.mark.lab, pytest.mark.slow]

VPN_RULES = ("vpn-handshake-fresh", "vpn-full-tunnel", "vpn-key-age")


def vpn_results(vl, **kw):  # type: ignore[no-untyped-def]
    s = run_compliance(vl.config, vl.db, vl.inventory, ("laptops",), **kw)
    run = load_run(vl.db, s.run_id)
    return {k: v for k, v in run.results.items() if k[1] in VPN_RULES}


def test_vpn_rules_from_gateway_evidence(vpn_lab):
    vl = vpn_lab
    assert vl.ping_gateway("lap01") and vl.ping_gateway("lap02")
    res = vpn_results(vl)
    assert {k: v.status for k, v in res.items()} == {
        (h, r): "pass" for h in ("lap01", "lap02") for r in VPN_RULES
    }, {k: v.evidence for k, v in res.items()}
    assert res[("lap01", "vpn-handshake-fresh")].evidence.startswith("last handshake ")

    # Drift: lap01's tunnel config is narrowed to the city network only (a split tunnel).
    original = vl.sh("lap01", "grep '^AllowedIPs' /etc/wireguard/wg0.conf").stdout.strip()
    assert original == "AllowedIPs = 0.0.0.0/0, ::/0"
    p = vl.sh("lap01", "sed -i 's|^AllowedIPs.*|AllowedIPs = 10.77.0.0/24|' /etc/wireguard/wg0.conf")
    assert p.returncode == 0
    try:
        res = vpn_results(vl)
        assert {k for k, v in res.items() if v.status != "pass"} == {("lap01", "vpn-full-tunnel")}
        assert res[("lap01", "vpn-full-tunnel")].evidence == "split tunnel: AllowedIPs=10.77.0.0/24"
    finally:
        vl.sh("lap01", f"sed -i 's|^AllowedIPs.*|{original}|' /etc/wireguard/wg0.conf")

    # 120 days later (clock injection): the keys are older than vpn.key_max_age_days and no
    # handshake is younger than vpn.handshake_max_age_s.
    res = vpn_results(vl, now=datetime.now(UTC) + timedelta(days=120))
    failing = {k: v.evidence for k, v in res.items() if v.status == "fail"}
    assert set(failing) == {
        (h, r) for h in ("lap01", "lap02") for r in ("vpn-key-age", "vpn-handshake-fresh")
    }
    assert failing[("lap02", "vpn-key-age")].endswith(f"days old (limit {vl.config.vpn.key_max_age_days})")
