"""`werne laptop provision` enrols laptops in the VPN (the wireguard_client role in laptop.yml),
and never lets a revoked laptop back in. Real lab, real ansible-runner, real wireguard-go tunnel."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from provisioning.vpn.models import VPNPeer
from tests.fixtures.vpn import VPNLab, start_vpn_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def prov_vpn_lab(lab_factory):  # type: ignore[no-untyped-def]
    vl = start_vpn_lab(lab_factory)
    yield vl
    vl.db.dispose()


def peer(vl: VPNLab, host: str) -> VPNPeer | None:
    with vl.db.session() as s:
        return s.scalar(select(VPNPeer).where(VPNPeer.host == host))


def test_provision_admits_the_laptops_keys_and_a_revoked_one_stays_out(prov_vpn_lab):
    vl = prov_vpn_lab
    r = vl.cli("laptop", "provision", "--all")
    assert r.exit_code == 0, r.output
    for host in ("lap01", "lap02"):
        row = peer(vl, host)
        assert row is not None and row.status == "active"
        # The key the laptop made itself is the one the gateway admitted.
        assert row.public_key == vl.public_key(host)
        assert row.public_key in vl.gateway_dump()
        vl.wait_tunnel(host)
        assert vl.ping_gateway(host), f"{host}: no traffic through the tunnel after provisioning"

    revoked_key = peer(vl, "lap02").public_key
    r = vl.cli("vpn", "revoke", "lap02", "--reason", "lost on the train")
    assert r.exit_code == 0, r.output
    r = vl.cli("laptop", "provision", "lap02")
    assert r.exit_code == 0, r.output
    row = peer(vl, "lap02")
    assert row.status == "revoked" and row.public_key is None
    dump = vl.gateway_dump()
    assert revoked_key not in dump and vl.public_key("lap02") not in dump
    assert not vl.ping_gateway("lap02", attempts=3)
    assert vl.ping_gateway("lap01"), "provisioning lap02 cut lap01's tunnel"
