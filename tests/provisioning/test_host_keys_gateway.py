"""Host keys of the VPN gateway: `werne laptop preflight` can name (and pin) it like a laptop, and a
host ssh refuses because its key was never pinned is reported as that, not as interception."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Config
from core.errors import InventoryError
from core.inventory import load_inventory
from provisioning.ansible import unreachable_reason
from provisioning.errors import HOST_KEY_CHANGED, HOST_KEY_NOT_PINNED
from provisioning.preflight import select_targets

DEMO = Path(__file__).resolve().parent.parent.parent / "inventories" / "demo"

# OpenSSH's words (8.x/9.x) for a host with no pinned key under StrictHostKeyChecking=yes, and for a
# pinned key that no longer matches.
UNPINNED = ("No ED25519 host key is known for 10.200.0.2 and you have requested strict checking.\r\n"
            "Host key verification failed.")
CHANGED = ("@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
           "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
           "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\nHost key verification failed.")


def test_preflight_targets_include_the_gateway_by_name_and_with_all() -> None:
    inv = load_inventory(DEMO)
    assert "vpngw" in inv.gateways
    cfg = Config()
    only = select_targets(cfg, inv, ["vpngw"], False, gateways=True)
    assert [(t.name, t.address) for t in only] == [("vpngw", inv.gateways["vpngw"].ansible_host)]
    mixed = select_targets(cfg, inv, ["lap01", "vpngw"], False, gateways=True)
    assert [t.name for t in mixed] == ["lap01", "vpngw"]
    everything = {t.name for t in select_targets(cfg, inv, [], True, gateways=True)}
    assert everything == {*inv.laptops, "vpngw"}
    with pytest.raises(InventoryError):
        select_targets(cfg, inv, ["nosuchhost"], False, gateways=True)


def test_provisioning_targets_are_laptops_only() -> None:
    """`laptop provision --all` and the watcher select laptops: the laptop playbook never runs on
    the gateway, and naming it there is an unknown laptop."""
    inv = load_inventory(DEMO)
    cfg = Config()
    assert {t.name for t in select_targets(cfg, inv, [], True)} == set(inv.laptops)
    with pytest.raises(InventoryError):
        select_targets(cfg, inv, ["vpngw"], False)


@pytest.mark.parametrize(("msg", "reason"), [
    (UNPINNED, f"unreachable: {HOST_KEY_NOT_PINNED}"),
    (CHANGED, f"unreachable: {HOST_KEY_CHANGED} (ssh refused the pinned key)"),
])
def test_unpinned_is_not_reported_as_interception(msg: str, reason: str) -> None:
    assert unreachable_reason(msg) == reason
