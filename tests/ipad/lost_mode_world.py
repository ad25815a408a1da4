"""A few simulated iPads of the demo inventory on a real NanoMDM and webhook receiver, with the
Activation Lock escrow observer: the world of the lost-mode and return-to-service tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from tests.fixtures.site import DEMO_INVENTORY, write_secret


@dataclass
class World:
    root: Path
    config_path: Path
    serials: list[str]
    sim: Any
    db: Any
    nanomdm: Any

    def ctx(self) -> Any:
        from core.config import load_config
        from core.inventory import load_inventory
        from ipad.dispatch import IPadContext

        cfg = load_config(self.config_path)
        return IPadContext(cfg, self.db, load_inventory(cfg.inventory_dir), actor="it-admin")

    def cli(self, *args: str) -> Any:
        from cli import main

        return CliRunner().invoke(main, ["--config", str(self.config_path), *args])


def make_world(root: Path, n: int, faults: dict[int, dict[str, Any]] | None = None) -> Iterator[World]:
    """n simulated iPads of the demo inventory (device i with faults[i]) on a real NanoMDM and webhook."""
    import shutil
    import time

    from core.db import Database
    from core.inventory import load_inventory
    from core.secrets import Secret
    from ipad.actions.activation_lock import BypassCodeEscrow, key_of, new_key
    from ipad.store.registry import Registry
    from tests.fixtures.mdm import run_mdm

    inv = root / "inventory"
    shutil.copytree(DEMO_INVENTORY, inv)
    inventory = load_inventory(inv)
    serials = sorted(inventory.ipads)[:n]
    state = root / "state"
    state.mkdir()
    api_key, hmac_key = "lost-api-key-0123456789", "lost-hmac-key-9876543210"
    write_secret(root / "api_key", api_key + "\n")
    escrow_key = new_key()
    write_secret(root / "escrow.key", escrow_key + "\n")
    write_secret(root / "wifi", "schul-wlan-passwort\n")
    db = Database(f"sqlite:///{state / 'werne.db'}")
    registry = Registry(db, school_of=lambda s: (inventory.ipads[s].school, inventory.ipads[s].group)
                        if s in inventory.ipads else None,
                        observers=[BypassCodeEscrow(key_of(Secret(escrow_key, "test")))])  # the receiver's escrow
    config_path = root / "werne.toml"

    def write_config(nanomdm_url: str) -> None:
        config_path.write_text(
            f'[site]\ninventory = "{inv}"\nstate_dir = "{state}"\n'
            f'[mdm]\nurl = "{nanomdm_url}"\napi_key_file = "{root / "api_key"}"\nwifi_secret_file = "{root / "wifi"}"\n'
            f'[activation_lock]\nkey_file = "{root / "escrow.key"}"\nallowed_users = ["it-admin"]\n',
            encoding="utf-8")

    device_faults = [(faults or {}).get(i, {}) for i in range(len(serials))]
    try:
        with run_mdm(root, registry, api_key, hmac_key, serials, device_faults, write_config) as mdm:
            assert mdm.sim.wait_enrolled(30)
            w = World(root, config_path, serials, mdm.sim, db, mdm.nanomdm)
            end = time.monotonic() + 20
            while sum(d.state == "enrolled" for d in registry.list_devices()) < len(serials):
                assert time.monotonic() < end, "the registry did not record every enrolment"
                time.sleep(0.1)
            yield w
    finally:
        db.dispose()
