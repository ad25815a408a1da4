"""`werne vpn ...` bad input and an unreachable gateway, without a lab: one-line errors, documented
exit codes, and the state database left as it was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from cli import main
from core.config import load_config
from core.db import Database
from core.errors import EXIT_COULD_NOT_RUN, EXIT_INPUT
from core.inventory import load_inventory
from core.models import AuditEvent
from provisioning.vpn.errors import VPNInputError
from provisioning.vpn.models import PEER_ACTIVE, VPNGateway, VPNPeer
from provisioning.vpn.ops import parse_age_days, provision_extravars, select_for_rotation
from tests.fixtures.site import write_config

GW_KEY = "lAEOo+lCCbp5aqQZhd+vvHIveLeXcb7O2x5FsCoJfVM="
K1 = "MJM9kWVdAiKVHmnMqeXUU7kXzo3364himCaSIhHE0TI="
K2 = "dLvlYDP4QDVXLJOO1gIn5vvopGFKGH5RCP65VVkt3ig="


@pytest.fixture
def site(tmp_path: Path, inventory_copy: Path, state_dir: Path):
    """A config whose gateway is a closed local port (connection refused at once), and its database."""
    hosts = inventory_copy / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("ansible_host: 10.200.0.2",
                                               "ansible_host: 127.0.0.1\n          ansible_port: 1"))
    extra = '\n[vpn]\npool_v4 = "10.99.0.0/30"\n'
    cfg_path = write_config(tmp_path / "werne.toml", inventory_copy, state_dir, extra)
    config = load_config(cfg_path)
    db = Database(config.database_url)
    yield cfg_path, config, db
    db.dispose()


def cli(cfg: Path, *args: str):
    return CliRunner().invoke(main, ["--config", str(cfg), *args], catch_exceptions=False)


def snapshot(db: Database) -> list[tuple]:
    with db.session() as s:
        rows = s.scalars(select(VPNPeer).order_by(VPNPeer.host))
        peers = [(p.host, p.status, p.public_key, p.address_v4) for p in rows]
        audit = s.scalar(select(func.count()).select_from(AuditEvent))
    return [*peers, ("audit", audit)]


def add_gateway_and_peer(db: Database, key_created: datetime | None = None) -> None:
    with db.session() as s:
        s.add(VPNGateway(host="vpngw", public_key=GW_KEY, endpoint="127.0.0.1:51820", config_sha256="x",
                         peers=1))
        s.add(VPNPeer(host="lap01", status=PEER_ACTIVE, public_key=K1, address_v4="10.99.0.2",
                      key_created_at=key_created or datetime.now(UTC)))


def test_enrol_before_the_gateway_exists_is_bad_input(site):
    cfg, _, db = site
    before = snapshot(db)
    r = cli(cfg, "vpn", "enrol", "lap01")
    assert r.exit_code == EXIT_INPUT
    assert r.stderr == "Error: the VPN gateway has no key yet: run `werne vpn gateway apply` first\n"
    assert snapshot(db) == before


def test_exhausted_pool_is_exit_2_and_allocates_nothing(site):
    cfg, config, db = site
    with db.session() as s:
        s.add(VPNGateway(host="vpngw", public_key=GW_KEY, endpoint="127.0.0.1:51820", config_sha256="x",
                         peers=0))
    before = snapshot(db)
    # 10.99.0.0/30: .1 is the gateway's, .2 the only laptop address; the inventory's 10.77.0.x lie outside.
    r = cli(cfg, "vpn", "enrol", "lap01", "lap02")
    assert r.exit_code == EXIT_INPUT
    assert r.stderr == ("Error: lap02: the VPN address pool 10.99.0.0/30 is exhausted (1 addresses held; "
                        "revoke a peer or widen the pool)\n")
    assert snapshot(db) == before  # not even lap01's address was kept


def test_unknown_host_is_exit_2(site):
    cfg, _, db = site
    add_gateway_and_peer(db)
    for args in (["vpn", "revoke", "lap99", "--reason", "x"], ["vpn", "reinstate", "lap99"],
                 ["vpn", "rotate", "lap99"], ["vpn", "enrol", "lap99"]):
        r = cli(cfg, *args)
        assert r.exit_code == EXIT_INPUT, (args, r.output)
        assert r.stderr.startswith("Error: unknown laptop: lap99") and r.stderr.count("\n") == 1


@pytest.mark.parametrize("args,message", [
    (["vpn", "reinstate", "lap01"], "Error: lap01 is not revoked\n"),
    (["vpn", "rotate", "lap01", "--older-than", "90d"],
     "Error: name hosts or use --older-than, not both\n"),
    (["vpn", "rotate", "--older-than", "soon"],
     "Error: --older-than: 'soon' is not an age like 90d, 12w or 36h\n"),
    (["vpn", "rotate"], "Error: name hosts to rotate, or use --older-than\n"),
    (["vpn", "revoke", "lap01", "--reason", "   "], "Error: a revocation needs a reason (--reason TEXT)\n"),
    (["vpn", "rotate", "lap02"], "Error: lap02 has no active VPN key to rotate (never admitted)\n"),
])
def test_bad_arguments_are_one_line_exit_2(site, args, message):
    cfg, _, db = site
    add_gateway_and_peer(db)
    before = snapshot(db)
    r = cli(cfg, *args)
    assert (r.exit_code, r.stderr) == (EXIT_INPUT, message)
    assert snapshot(db) == before


@pytest.mark.parametrize("args", [
    ["vpn", "revoke", "lap01", "--reason", "lost on the train"],
    ["vpn", "rotate", "lap01"],
    ["vpn", "gateway", "apply"],
    ["vpn", "status"],
    ["vpn", "status", "--json"],
])
def test_unreachable_gateway_is_exit_3_and_changes_nothing(site, args):
    cfg, _, db = site
    add_gateway_and_peer(db)
    before = snapshot(db)
    r = cli(cfg, *args)
    assert r.exit_code == EXIT_COULD_NOT_RUN, r.output
    assert r.stderr.startswith("Error: VPN gateway vpngw (127.0.0.1:1) is unreachable: ")
    assert r.stderr.endswith("; nothing was changed\n") and r.stderr.count("\n") == 1
    assert r.stdout == ""
    assert snapshot(db) == before


def test_older_than_selects_only_old_active_keys(site):
    _, config, db = site
    add_gateway_and_peer(db, key_created=datetime.now(UTC) - timedelta(days=100))
    with db.session() as s:
        s.add(VPNPeer(host="lap02", status=PEER_ACTIVE, public_key=K2, address_v4="10.99.0.3",
                      key_created_at=datetime.now(UTC) - timedelta(days=10)))
    inv = load_inventory(config.inventory_dir)
    assert select_for_rotation(db, inv, [], parse_age_days("90d")) == ["lap01"]
    assert select_for_rotation(db, inv, [], parse_age_days("1w")) == ["lap01", "lap02"]
    assert select_for_rotation(db, inv, [], parse_age_days("101")) == []
    assert parse_age_days("36h") == 1.5
    with pytest.raises(VPNInputError):
        parse_age_days("-3d")


def test_provision_extravars_leave_the_vpn_out_until_the_gateway_exists_and_skip_revoked(site):
    _, config, db = site
    inv = load_inventory(config.inventory_dir)
    assert provision_extravars(config, db, inv, ["lap01"]) == {}
    add_gateway_and_peer(db)
    with db.session() as s:
        s.add(VPNPeer(host="lap02", status="revoked"))
    ev = provision_extravars(config, db, inv, ["lap01", "lap02"])
    assert ev["wireguard_client_peers"] == {"lap01": {"addresses": ["10.99.0.2/32"], "rekey": False}}
    assert ev["wireguard_client_revoked"] == ["lap02"]
    assert ev["wireguard_client_gateway_public_key"] == GW_KEY
    assert ev["wireguard_client_endpoint"] == "127.0.0.1:51820"
