"""The main job as a real process: a run killed with SIGKILL is never complete and the next run
works (stale lock recovered); a second concurrent run exits 3. The "laptop" is a TCP endpoint that
accepts connections and never speaks SSH, so the run is really inside Ansible when it is killed."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.site import REPO, unreachable_laptop_site


class SilentSSH:
    """Accepts TCP connections and never sends an SSH banner (an SSH server that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def slow_site(tmp_path: Path):
    srv = SilentSSH()
    cfg, state = unreachable_laptop_site(tmp_path, "[ssh]\nconnect_timeout = 25\n", port=srv.port)
    yield cfg, state, srv
    srv.close()


def werne(cfg: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "--config", str(cfg), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def runs(state: Path) -> list[tuple[int, str, str | None]]:
    db = state / "werne.db"
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, status, record_hash FROM compliance_runs ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def wait_running(state: Path, srv: SilentSSH, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(s == "running" for _, s, _ in runs(state)) and srv.conns:
            return
        time.sleep(0.2)
    raise AssertionError(f"the run did not reach the laptop: {runs(state)}")


def kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.communicate()  # reap it and close its pipes


@pytest.mark.slow  # ~30 s: the second run waits for ansible to give up on the dead laptop
def test_sigkill_mid_run_leaves_no_complete_run_and_next_run_works(slow_site):
    cfg, state, srv = slow_site
    p = werne(cfg, "compliance", "run", "--laptops")
    try:
        wait_running(state, srv)  # inside ansible-playbook, waiting for the SSH banner
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        returncode = p.returncode
    finally:
        kill_group(p)
    assert returncode == -signal.SIGKILL
    assert runs(state) == [(1, "running", None)]
    assert (state / "compliance.lock").exists()
    srv.close()  # the laptop is now down: connection refused, quickly
    p2 = werne(cfg, "compliance", "run", "--laptops")
    out, err = p2.communicate(timeout=180)
    assert p2.returncode == 1, err  # findings: the laptop is unreachable
    assert "recovered a stale lock" in err
    assert out.startswith("run 2: 0/1 devices compliant")
    assert [(i, s) for i, s, _ in runs(state)] == [(1, "interrupted"), (2, "complete")]
    assert not (state / "compliance.lock").exists()
    v = werne(cfg, "compliance", "verify")
    vout, _ = v.communicate(timeout=60)
    assert v.returncode == 0 and vout.startswith("ok: 1 run(s)")


def test_second_concurrent_run_exits_3(slow_site):
    cfg, state, srv = slow_site
    p = werne(cfg, "compliance", "run", "--laptops")
    try:
        wait_running(state, srv)
        p2 = werne(cfg, "compliance", "run", "--laptops")
        out, err = p2.communicate(timeout=60)
        assert p2.returncode == 3
        assert out == ""
        assert err.startswith(f"Error: another compliance run is going on (pid {p.pid} since ")
        assert err.count("\n") == 1 and "Traceback" not in err
    finally:
        kill_group(p)
