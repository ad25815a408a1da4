"""Pytest fixtures for the vpn tests (registered in tests/conftest.py).

    vpn_lab -> VPNLab   a lab with the gateway and two laptops, host keys pinned, the gateway
                        applied and both laptops admitted through the real playbooks (module scope)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class VPNLab:
    """A running lab plus the werne config, database and inventory that point at it."""

    lab: Any
    config_path: Path
    config: Any
    db: Any
    inventory: Any
    # Every private key seen during the tests (read from the devices), for the leak check.
    private_keys: set[str] = field(default_factory=set)
    cli_output: list[str] = field(default_factory=list)

    def sh(self, host: str, script: str, timeout: float = 60, input: str | None = None) -> Any:
        return self.lab.exec(host, ["sh", "-c", script], timeout=timeout, input=input)

    def private_key(self, host: str, path: str = "/etc/wireguard/wg0.key") -> str:
        p = self.sh(host, f"cat {path}")
        assert p.returncode == 0, p.stderr
        key = p.stdout.strip()
        assert len(key) == 44
        self.private_keys.add(key)
        return key

    def wait_tunnel(self, host: str, attempts: int = 30) -> None:
        """After a (re)boot: wait until wg-quick has brought wg0 up with its key."""
        for _ in range(attempts):
            p = self.sh(host, "systemctl is-active wg-quick@wg0 && wg show wg0 private-key >/dev/null "
                              "&& test \"$(wg show wg0 public-key)\" != '(none)'")
            if p.returncode == 0:
                return
            time.sleep(1)
        raise AssertionError(f"{host}: the tunnel did not come up")

    def public_key(self, host: str) -> str:
        p = self.sh(host, "wg show wg0 public-key")
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    def gateway_dump(self) -> dict[str, list[str]]:
        """Gateway peers by public key (read inside the gateway; the interface line is dropped)."""
        p = self.sh("vpngw", "wg show wg0 dump | tail -n +2")
        assert p.returncode == 0, p.stderr
        return {f[0]: f for f in (line.split("\t") for line in p.stdout.splitlines() if line)}

    def ping_gateway(self, host: str, attempts: int = 12) -> bool:
        """True as soon as one ping from `host` to the gateway's tunnel address is answered."""
        for _ in range(attempts):
            if self.sh(host, "ping -c 1 -W 2 10.77.0.1").returncode == 0:
                return True
            time.sleep(1)
        return False

    def cli(self, *args: str) -> Any:
        from click.testing import CliRunner

        from cli import main

        r = CliRunner().invoke(main, ["--config", str(self.config_path), *args], catch_exceptions=False)
        self.cli_output.append(r.output)
        return r


def pin_lab_host_keys(lab: Any, state_dir: Path) -> None:
    """What `werne laptop preflight --accept-new` does after the admin checked the keys."""
    lines = []
    for h in lab.status():
        kind, key = lab.host_public_key(h.name).split()[:2]
        lines.append(f"{h.address} {kind} {key}")
    (state_dir / "known_hosts").write_text("\n".join(lines) + "\n", encoding="utf-8")


def start_vpn_lab(lab_factory: Callable[..., Any]) -> VPNLab:
    """Two laptops and the gateway, host keys pinned, a werne config (userspace WireGuard) and
    database pointing at them, and the gateway applied; no laptop enrolled yet."""
    from core.config import load_config
    from core.db import Database
    from core.inventory import load_inventory
    from provisioning.vpn.ops import gateway_apply
    from tests.fixtures_lab import write_lab_config

    lab = lab_factory(2, gateway=True)
    pin_lab_host_keys(lab, lab.state_dir)
    path = write_lab_config(lab, extra="\n[vpn]\nuserspace = true\n")
    config = load_config(path)
    db = Database(config.database_url)
    inventory = load_inventory(config.inventory_dir)
    gateway_apply(config, db, inventory)
    return VPNLab(lab, path, config, db, inventory)


@pytest.fixture(scope="module")
def vpn_lab(lab_factory: Callable[..., Any]) -> Iterator[VPNLab]:
    from provisioning.vpn.ops import enrol

    vl = start_vpn_lab(lab_factory)
    config, db, inventory = vl.config, vl.db, vl.inventory
    report = enrol(config, db, inventory, ["lap01", "lap02"])
    outcomes = [(h.host, h.outcome) for h in report.hosts]
    assert outcomes == [("lap01", "admitted"), ("lap02", "admitted")], report
    vl.private_key("vpngw")
    yield vl
    db.dispose()


def home_office_lab(lab: Any, hosts: list[str], *, vpn: str = "", connect_timeout: float = 3,
                    homeoffice: str = "") -> tuple[Path, Any, Any]:
    """The home-office start of a lab test: host keys pinned, a config with the VPN in userspace,
    the gateway applied and `hosts` enrolled on the office network, then sent home behind their
    NAT routers with the pool routed through the gateway. `vpn` and `homeoffice` are extra lines
    for those sections. Returns (config path, config, database); the caller disposes the database."""
    from core.config import load_config
    from core.db import Database
    from core.inventory import load_inventory
    from provisioning.vpn.ops import enrol, gateway_apply
    from tests.fixtures_lab import write_lab_config

    pool = lab.vpn_pool()
    pin_lab_host_keys(lab, lab.state_dir)
    cfg = write_lab_config(lab, extra=(
        f'\n[vpn]\nuserspace = true\npool_v4 = "{pool}"\n{vpn}'
        f'[ssh]\nconnect_timeout = {connect_timeout}\n'
        '[compliance]\nluks_missing = "not_applicable"\napt_lists_missing = "not_applicable"\n'
        f'[homeoffice]\nmanage_from = ["10.200.0.0/16"]\ncatchup_jitter_s = 1\n{homeoffice}'))
    config = load_config(cfg)
    db = Database(config.database_url)
    try:
        gateway_apply(config, db, load_inventory(config.inventory_dir))
        report = enrol(config, db, load_inventory(config.inventory_dir), hosts)
        assert {h.outcome for h in report.hosts} == {"admitted"}, report
        lab.home_office(hosts)
        lab.route_vpn_pool(pool)
    except BaseException:
        db.dispose()
        raise
    return cfg, config, db
