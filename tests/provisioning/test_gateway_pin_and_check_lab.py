"""In a lab with the VPN gateway: `werne laptop preflight --accept-new --all` pins the gateway's
host key too, so `werne vpn gateway apply` reaches it (before, nothing could pin it and its refusal
read "host key changed: possible interception"); and `werne laptop provision --check` on a laptop
never provisioned reports what would change (its VPN key pair included) and changes nothing."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import main

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_gateway_pinned_by_preflight_and_check_mode_on_a_new_laptop(lab_factory, lab_config) -> None:
    lab = lab_factory(1, gateway=True)
    cfg = lab_config(lab, extra='\n[vpn]\nuserspace = true\n[compliance]\nluks_missing = "not_applicable"\n')

    def cli(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, ["--config", str(cfg), *args], catch_exceptions=False)

    # Unpinned, the gateway is refused as never pinned, not as an interception.
    r = cli("vpn", "gateway", "apply")
    assert r.exit_code != 0 and "possible interception" not in r.output, r.output
    assert "not pinned" in r.output, r.output
    r = cli("laptop", "preflight", "--accept-new", "--all")
    assert r.exit_code == 0, r.output
    assert "vpngw: pinned new host key" in r.output
    gateway = next(h for h in lab.status() if h.name == "vpngw")
    assert gateway.address in (lab.state_dir / "known_hosts").read_text()
    r = cli("vpn", "gateway", "apply")
    assert r.exit_code == 0, r.output
    # lap01 was never provisioned: the check run reports what would change, the key pair included.
    r = cli("laptop", "provision", "--check", "lap01")
    assert r.exit_code == 0, r.output
    assert "(check mode)" in r.output and "A key pair would be made (check mode, no key yet)" in r.output
    assert lab.exec("lap01", ["test", "-e", "/etc/wireguard/wg0.key"]).returncode != 0  # nothing changed
