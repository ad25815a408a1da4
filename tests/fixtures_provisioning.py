"""Pytest fixtures for the provisioning tests (registered in tests/conftest.py).

werne_cli(config, *args) -> click Result     the real CLI in-process, with only --config (so the
                                             lab's state dir, key and pinned known_hosts apply)
lab_ssh(config, host, command) -> (rc, out)  read a laptop back over SSH with paramiko, with the
                                             pinned host key and the controller's key
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result


@pytest.fixture(scope="session")
def werne_cli() -> Callable[..., Result]:
    from cli import main

    def invoke(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(main, ["--config", str(config), *args], env=env, catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def lab_ssh() -> Callable[[Path, str, str], tuple[int, str]]:
    from core.config import load_config
    from core.inventory import load_inventory
    from provisioning.known_hosts import PinnedHostKeys
    from provisioning.preflight import (
        known_hosts_path,
        load_private_key,
        open_transport,
        run_command,
        select_targets,
    )

    def run(config_path: Path, host: str, command: str) -> tuple[int, str]:
        cfg = load_config(config_path)
        (target,) = select_targets(cfg, load_inventory(cfg.inventory_dir), [host], False)
        pins = PinnedHostKeys(known_hosts_path(cfg)).lookup(target.host_id)
        assert pins, f"{host}: no pinned host key; run pre-flight with --accept-new first"
        transport = open_transport(target, list(pins), 10.0, 3)
        try:
            server_key = transport.get_remote_server_key()
            assert any(server_key.asbytes() == k.asbytes() for k in pins.values()), (
                f"{host}: host key changed"
            )
            transport.auth_publickey(target.user, load_private_key(cfg.ssh_key_file))
            return run_command(transport, command, 60.0)
        finally:
            transport.close()

    return run
