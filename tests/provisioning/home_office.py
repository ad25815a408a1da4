"""Helpers of the home-office lab tests: the CLI on a lab's config, and waiting until the gateway
has seen a handshake from each laptop."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from click.testing import CliRunner


def cli(cfg, *args):  # type: ignore[no-untyped-def]
    from cli import main

    return CliRunner().invoke(main, ["--config", str(cfg), *args], catch_exceptions=False)


def wait_handshakes(config, db, inventory, hosts, timeout=60):  # type: ignore[no-untyped-def]
    from provisioning.home.presence import GatewayReader, peers_seen

    reader = GatewayReader(config, inventory)
    deadline = time.monotonic() + timeout
    try:
        while True:
            seen = peers_seen(db, reader.dump(), datetime.now(UTC), config.homeoffice.online_window_s)
            if all(seen.get(h) and seen[h].online for h in hosts):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no handshake from {[h for h in hosts if not seen.get(h)]}")
            time.sleep(1)
    finally:
        reader.close()
