"""Pytest fixtures for the enrolment tests (registered in tests/conftest.py): a fake Apple DEP
server, a real NanoDEP (depserver) pointed at it, a site config, and the real web app under uvicorn."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import parts
from tests.conftest import write_secret
from tests.fake_dep import FakeDEP

REPO = Path(__file__).resolve().parent.parent
DEPSERVER = REPO / ".tools" / "bin" / "depserver"
DEMO_INVENTORY = REPO / "inventories" / "demo"
# Demo schools; gs-demo is school A, gym-demo school B in the authorization tests.
SCHOOL_A, SCHOOL_B = "gs-demo", "gym-demo"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@dataclass
class NanoDEP:
    """A running depserver: its URL, API key file and process."""

    url: str
    api_key: str
    key_file: Path
    proc: subprocess.Popen[bytes]
    log: Any = None

    def configure(self, name: str, fake: FakeDEP) -> None:
        """Point DEP name `name` at the fake and give it the fake's OAuth tokens."""
        auth = ("depserver", self.api_key)
        r = requests.put(f"{self.url}/v1/config/{name}", json={"base_url": fake.url}, auth=auth, timeout=5)
        r.raise_for_status()
        r = requests.put(f"{self.url}/v1/tokens/{name}", json=fake.tokens.as_json(), auth=auth, timeout=5)
        r.raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()


def start_nanodep(tmp: Path, port: int | None = None) -> NanoDEP:
    parts.require_file("NanoDEP", DEPSERVER, marker="nanodep", hint="scripts/setup.sh installs depserver")
    tmp.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    key_file = tmp / "dep-api-key"
    write_secret(key_file, key + "\n")
    key_file.chmod(0o600)
    port = port or free_port()
    log = (tmp / "depserver.log").open("wb")
    proc = subprocess.Popen(
        [
            str(DEPSERVER),
            "-api",
            key,
            "-listen",
            f"127.0.0.1:{port}",
            "-storage",
            "filekv",
            "-storage-dsn",
            str(tmp / "db"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    dep = NanoDEP(f"http://127.0.0.1:{port}", key, key_file, proc, log)
    try:
        wait_http(f"{dep.url}/version", proc)
    except RuntimeError:
        dep.stop()
        raise
    return dep


@pytest.fixture(scope="module")
def nanodep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NanoDEP]:
    """A real NanoDEP per test module, storage in a tmp dir, a random API key."""
    dep = start_nanodep(tmp_path_factory.mktemp("nanodep"))
    yield dep
    dep.stop()


@pytest.fixture
def fake_dep() -> Iterator[FakeDEP]:
    with FakeDEP() as fake:
        yield fake


@dataclass
class EnrolSite:
    """A site for enrolment tests: config file, state dir, inventory copy and NanoDEP wiring."""

    root: Path
    config_path: Path
    state_dir: Path
    inventory: Path
    dep_name: str
    env: dict[str, str]

    def config(self):  # type: ignore[no-untyped-def]
        from core.config import load_config

        return load_config(self.config_path)

    def db(self):  # type: ignore[no-untyped-def]
        import enrolment.models  # noqa: F401
        from core.db import Database

        return Database(self.config().database_url)

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `werne` CLI in a subprocess with this site's config."""
        return subprocess.run(
            [sys.executable, str(REPO / "cli.py"), "--config", str(self.config_path), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            cwd=str(self.root),
        )


def make_site(
    root: Path,
    nanodep_url: str = "http://127.0.0.1:9",
    dep_key_file: Path | None = None,
    dep_name: str | None = None,
    extra: str = "",
) -> EnrolSite:
    root.mkdir(parents=True, exist_ok=True)
    inv = root / "inv"
    if not inv.exists():
        shutil.copytree(DEMO_INVENTORY, inv)
    state = root / "state"
    state.mkdir(exist_ok=True)
    web_key = root / "web-secret"
    write_secret(web_key, secrets.token_urlsafe(32))
    key_file = dep_key_file or (root / "dep-key-unused")
    if not key_file.exists():
        write_secret(key_file, "unused")
    name = dep_name or ("t" + secrets.token_hex(4))
    cfg = root / "werne.toml"
    cfg.write_text(
        f'[site]\ninventory = "{inv}"\nstate_dir = "{state}"\n\n'
        f'[dep]\nurl = "{nanodep_url}"\nname = "{name}"\napi_key_file = "{key_file}"\ntimeout = 5.0\n'
        f"max_retry_wait_s = 2.0\n\n"
        f'[web]\nsecret_key_file = "{web_key}"\nsecure_cookies = false\n{extra}',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WERNE_")}
    env["WERNE_ACTOR"] = "it-admin"
    env["PYTHONPATH"] = str(REPO)
    return EnrolSite(root, cfg, state, inv, name, env)


@pytest.fixture
def enrol_site(tmp_path: Path, nanodep: NanoDEP, fake_dep: FakeDEP) -> EnrolSite:
    """A site whose DEP name in the real NanoDEP points at a fresh fake DEP."""
    site = make_site(tmp_path / "site", nanodep.url, nanodep.key_file)
    nanodep.configure(site.dep_name, fake_dep)
    return site


@dataclass
class WebServer:
    """`werne web serve` running in a subprocess (real uvicorn) on a free loopback port."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Any = None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()


def start_web(site: EnrolSite) -> WebServer:
    port = free_port()
    log = (site.root / "web.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "cli.py"),
            "--config",
            str(site.config_path),
            "web",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=site.env,
        cwd=str(site.root),
    )
    server = WebServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_http(f"{server.url}/healthz", proc)
    except RuntimeError:
        server.stop()
        raise RuntimeError((site.root / "web.log").read_text(errors="replace")[-2000:]) from None
    return server


def add_user(site: EnrolSite, username: str, role: str, *schools: str) -> None:
    args = ["user", "add", username, "--role", role, "--password-stdin"]
    for s in schools:
        args += ["--school", s]
    r = site.cli(*args, input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr


class Browserless:
    """A logged-in HTTP session against the real server (requests), with the CSRF token at hand."""

    def __init__(self, base: str):
        self.base = base
        self.s = requests.Session()

    def csrf(self, path: str = "/login") -> str:
        import re

        html = self.s.get(self.base + path, timeout=10).text
        m = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert m, f"no CSRF token on {path}"
        return m.group(1)

    def login(self, username: str, password: str = PASSWORD) -> requests.Response:
        token = self.csrf("/login")
        return self.s.post(
            self.base + "/login",
            data={"csrf_token": token, "username": username, "password": password},
            timeout=10,
            allow_redirects=False,
        )

    def get(self, path: str, **kw):  # type: ignore[no-untyped-def]
        return self.s.get(self.base + path, timeout=10, allow_redirects=False, **kw)

    def post(self, path: str, data: dict | None = None, files: dict | None = None, csrf: bool = True, **kw):  # type: ignore[no-untyped-def]
        data = dict(data or {})
        if csrf:
            data["csrf_token"] = self.csrf("/requests/new")
        return self.s.post(self.base + path, data=data, files=files, timeout=30, allow_redirects=False, **kw)


class InThreadServer:
    """A Starlette app under real uvicorn in a thread (for configs a subprocess test does not need)."""

    def __init__(self, app: Any):
        import threading

        import uvicorn

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> InThreadServer:
        self.thread.start()
        wait_http(self.url + "/healthz")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
