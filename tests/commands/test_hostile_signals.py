"""Issue 11: SIGINT and SIGTERM during a hung MDM call. The real CLI runs `compliance run --ipads`
in a subprocess against a real local socket server that accepts connections and never answers;
the signal must end the run within seconds, with the documented exit code and one Error line,
the run stored as interrupted and the lock file gone."""

from __future__ import annotations

import base64
import json
import os
import plistlib
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.site import REPO, write_config

UDID = "00008120-0011223344556677"
# Bounds, not timings (before the fix SIGINT waited for the MDM's timeout and SIGTERM left the
# lock): the CLI may take long to start on a loaded machine, and the run must end on the signal
# long before the MDM's timeout of an hour would end it.
START_BOUND_S = 300


class HungServer:
    """Accepts TCP connections on a free loopback port and never answers (a hung NanoMDM)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def hung() -> Iterator[HungServer]:
    srv = HungServer()
    yield srv
    srv.close()


def _enrol_one_ipad(database_url: str) -> None:
    """Store an Authenticate and a TokenUpdate as the webhook receiver would: one enrolled iPad."""
    from core.db import Database
    from ipad.store.registry import Registry
    from ipad.webhook import parse_event

    def event(topic: str, payload: dict, eid: str) -> bytes:
        raw = base64.b64encode(plistlib.dumps(payload)).decode()
        return json.dumps({"topic": topic, "event_id": eid, "created_at": "2026-11-27T10:00:00Z",
                           "checkin_event": {"udid": UDID, "ids": {"id": UDID, "type": "Device"},
                                             "raw_payload": raw}}).encode()

    auth = {"MessageType": "Authenticate", "UDID": UDID, "SerialNumber": "ZDWK1DEGZD", "Topic": "com.apple.mgmt.x",
            "OSVersion": "17.6.1", "ProductName": "iPad13,18"}
    token = {"MessageType": "TokenUpdate", "UDID": UDID, "Topic": "com.apple.mgmt.x", "Token": b"t",
             "PushMagic": "m", "UnlockToken": b"u"}
    db = Database(database_url)
    try:
        Registry(db, school_of=lambda s: ("gs-demo", "pupil")).apply_events(
            [parse_event(event("mdm.Authenticate", auth, "e1")), parse_event(event("mdm.TokenUpdate", token, "e2"))]
        )
    finally:
        db.dispose()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("sig", "code", "line"), [(signal.SIGINT, 130, "Error: interrupted"),
                                                   (signal.SIGTERM, 143, "Error: terminated by SIGTERM")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_hung_mdm_call_ends_the_run_promptly(sig: int, code: int, line: str, tmp_path: Path,
                                                               inventory_copy: Path, state_dir: Path,
                                                               hung: HungServer) -> None:
    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir,
                       f'[mdm]\nurl = "http://127.0.0.1:{hung.port}"\ntimeout = 3600.0\n')
    _enrol_one_ipad(f"sqlite:///{state_dir / 'werne.db'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WERNE_")}
    env.update(PYTHONPATH=str(REPO), WERNE_MDM_API_KEY="test-api-key")
    argv = [sys.executable, str(REPO / "cli.py"), "--config", str(cfg), "compliance", "run", "--ipads"]
    # A user's Ctrl-C reaches a process whose SIGINT is not ignored; a suite started in the background
    # (`nohup ... &`) passes on an ignored SIGINT, and Python then never turns it into an interrupt.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)
    try:
        for _ in range(START_BOUND_S):
            if hung.accepted.wait(1) or proc.poll() is not None:
                break
        assert hung.accepted.is_set(), f"the CLI never called the MDM: {proc.poll()}"
        time.sleep(0.5)  # well inside the hung call now
        assert (state_dir / "compliance.lock").exists()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # and close its pipes
    assert (proc.returncode, err.strip().splitlines()) == (code, [line]), err
    assert "Traceback" not in err
    assert not (state_dir / "compliance.lock").exists()
    with sqlite3.connect(state_dir / "werne.db") as conn:
        runs = conn.execute("SELECT status FROM compliance_runs").fetchall()
    assert runs == [("interrupted",)]
