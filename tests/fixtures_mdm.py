"""Pytest fixtures for the mdm tests (registered in tests/conftest.py).

webhook_server(registry, hmac_key) -> RunningWebhook   a real uvicorn server on a free port
mdm_world                 (module) a real NanoMDM (inmem, free loopback port) posting to a real
                          webhook receiver, 20 simulated iPads in two schools, a state
                          database, a werne.toml and secret files; all stopped afterwards
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import parts
from tests.conftest import write_secret

REPO = Path(__file__).resolve().parent.parent
NANOMDM = REPO / ".tools" / "bin" / "nanomdm"


def rows_in_db_file(db_file: Path, table: str) -> int:
    """Rows of a table in the SQLite database file alone, without its WAL (immutable=1): what a
    checkpoint has copied back so far."""
    import sqlite3

    con = sqlite3.connect(f"file:{db_file}?immutable=1", uri=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - tests' own table names
    finally:
        con.close()


@dataclass
class RunningWebhook:
    """A webhook receiver served by uvicorn in a thread."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_webhook(registry: Any, hmac_key: Any, max_body: int = 1024 * 1024) -> RunningWebhook:
    import uvicorn

    from ipad.webhook import WEBHOOK_PATH, create_app
    from lab.mdm import free_port

    port = free_port()
    app = create_app(registry, hmac_key, max_body=max_body, batch_ms=10)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise RuntimeError("the webhook receiver did not start")
        time.sleep(0.02)
    return RunningWebhook(f"http://127.0.0.1:{port}{WEBHOOK_PATH}", server, thread)


@pytest.fixture
def webhook_server() -> Iterator[Callable[..., RunningWebhook]]:
    started: list[RunningWebhook] = []

    def make(registry: Any, hmac_key: Any = None, max_body: int = 1024 * 1024) -> RunningWebhook:
        w = start_webhook(registry, hmac_key, max_body)
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


class NanoMDMProcess:
    """A real NanoMDM on a free loopback port (in-memory storage), stopped by `stop()`."""

    def __init__(
        self,
        workdir: Path,
        ca: Path,
        webhook_url: str | None,
        api_key: str,
        hmac_key: str | None,
        storage_env: dict[str, str] | None = None,
    ):
        """No -cert-header: NanoMDM verifies every device message by its Mdm-Signature against `ca`.
        storage_env (NANOMDM_STORAGE=pgsql, NANOMDM_STORAGE_DSN=...) picks another storage."""
        from lab.mdm import free_port, nanomdm_argv

        parts.require_file("NanoMDM", NANOMDM, marker="mdm", hint="scripts/setup.sh installs it")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "NANOMDM_API": api_key, **(storage_env or {})}
        if hmac_key:
            env["NANOMDM_WEBHOOK_HMAC_KEY"] = hmac_key
        self.log = workdir / "nanomdm.log"
        self._log = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            nanomdm_argv(f"127.0.0.1:{self.port}", ca, webhook_url, None,
                         storage="pgsql" if storage_env else None),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        end = time.monotonic() + 15
        while True:
            try:
                if requests.get(self.url + "/version", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > end or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"NanoMDM did not start: {self.log.read_text(errors='replace')[-300:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


SCHOOLS = ("gs-demo", "gym-demo")


@dataclass
class MDMWorld:
    """Everything the end-to-end tests drive."""

    root: Path
    state_dir: Path
    config_path: Path
    inventory: Path
    serials: dict[str, list[str]]  # school -> serials
    groups: dict[str, str]  # serial -> group
    api_key: str
    hmac_key: str
    nanomdm: NanoMDMProcess
    webhook: RunningWebhook
    sim: Any
    db: Any
    enrolled_events: list[Any] = field(default_factory=list)

    def config(self) -> Any:
        from core.config import load_config

        return load_config(self.config_path)

    def context(self) -> Any:
        from core.inventory import load_inventory
        from ipad.ops import IPadContext

        cfg = self.config()
        return IPadContext(cfg, self.db, load_inventory(cfg.inventory_dir), actor="pytest")

    def client(self, **kw: Any) -> Any:
        from core.secrets import Secret
        from mdm_client.nanomdm import NanoMDMClient

        return NanoMDMClient(self.nanomdm.url, Secret(self.api_key, "test"), **kw)

    def counts(self) -> dict[str, int]:
        from ipad.store import Registry

        return Registry(self.db).counts()


def _write_world_inventory(dst: Path, n_per_school: int) -> tuple[dict[str, list[str]], dict[str, str]]:
    from lab.mdm import generated_serials

    shutil.copytree(REPO / "inventories" / "demo", dst)
    serials: dict[str, list[str]] = {}
    groups: dict[str, str] = {}
    all_serials = iter(generated_serials(len(SCHOOLS) * n_per_school, start=9000))
    rows = ["serial;model;school;group;name"]
    for school in SCHOOLS:
        for i in range(n_per_school):
            s = next(all_serials)
            g = ("pupil", "pupil", "teacher", "shared")[i % 4]
            serials.setdefault(school, []).append(s)
            groups[s] = g
            rows.append(f"{s};iPad (10th generation);{school};{g};{school}-{i:02d}")
    (dst / "ipads.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return serials, groups


# Faults of the world's devices, by (school index, device index).
WORLD_FAULTS = {
    (0, 1): {"not_now_streak": 2},
    (1, 0): {"refuse_profile": "webfilter"},
    (1, 4): {"erase_never_answers": True},
}


@pytest.fixture(scope="module")
def mdm_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MDMWorld]:
    from core.db import Database
    from core.secrets import Secret
    from ipad.store import Registry
    from ipad.webhook import on_enrolled
    from lab.ipad_sim import DeviceFaults, SimDevice, Simulator
    from lab.mdm import issue_identities, make_scep_ca

    root = tmp_path_factory.mktemp("mdm-world")
    state = root / "state"
    state.mkdir()
    inv = root / "inventory"
    serials, groups = _write_world_inventory(inv, 10)
    api_key, hmac_key = "test-api-key-0123456789", "test-hmac-key-9876543210"
    secrets_dir = root / "secrets"
    secrets_dir.mkdir(mode=0o700)
    write_secret((secrets_dir / "api_key"), api_key + "\n")
    (secrets_dir / "wifi").write_text("schul-wlan-passwort\n")
    ca, ca_key = make_scep_ca(root / "scep")  # the devices' identities chain to the SCEP CA

    from core.inventory import load_inventory

    db = Database(f"sqlite:///{state / 'werne.db'}")
    inventory = load_inventory(inv)
    registry = Registry(
        db,
        school_of=lambda s: (
            (inventory.ipads[s].school, inventory.ipads[s].group) if s in inventory.ipads else None
        ),
    )
    events: list[Any] = []
    unregister = on_enrolled(events.append)
    webhook = start_webhook(registry, Secret(hmac_key, "test"))
    nanomdm = None
    sim = None
    try:
        nanomdm = NanoMDMProcess(root, ca, webhook.url, api_key, hmac_key)
        config_path = root / "werne.toml"
        config_path.write_text(
            f'[site]\ninventory = "{inv}"\nstate_dir = "{state}"\n'
            f'[mdm]\nurl = "{nanomdm.url}"\napi_key_file = "{secrets_dir / "api_key"}"\n'
            f'wifi_secret_file = "{secrets_dir / "wifi"}"\nblast_radius = 5\nquery_deadline_s = 20.0\n',
            encoding="utf-8",
        )
        devices = []
        for si, school in enumerate(SCHOOLS):
            for di, (serial, udid, pem, key) in enumerate(issue_identities(ca, ca_key, serials[school])):
                devices.append(
                    SimDevice(
                        serial=serial,
                        udid=udid,
                        cert_pem=pem,
                        key_pem=key,
                        faults=DeviceFaults(**WORLD_FAULTS.get((si, di), {})),
                    )
                )
        sim = Simulator(nanomdm.url, devices, poll_interval=0.3).start()
        yield MDMWorld(
            root,
            state,
            config_path,
            inv,
            serials,
            groups,
            api_key,
            hmac_key,
            nanomdm,
            webhook,
            sim,
            db,
            events,
        )
    finally:
        unregister()
        if sim is not None:
            sim.stop()
        if nanomdm is not None:
            nanomdm.stop()
        webhook.stop()
        db.dispose()
