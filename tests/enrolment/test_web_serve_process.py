"""Issue 22: `werne web serve` as a process. A port in use is one `Error:` line and exit 3 (not
uvicorn's own log line); Ctrl-C (SIGINT) stops it cleanly and exits 130 as documented, not 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from lab.processes import free_port, wait_http
from tests.fixtures.site import DEMO_INVENTORY, write_config

REPO = Path(__file__).resolve().parents[2]


def start(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, tmp_path / "state")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WERNE_")}
    return subprocess.Popen([sys.executable, str(REPO / "cli.py"), "--config", str(cfg), "web", "serve", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "PYTHONPATH": str(REPO), "WERNE_WEB_SECRET": "s" * 40})


def test_a_port_in_use_is_one_line_and_exit_3(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = start(tmp_path, port)
        out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (3, "", f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n")


def test_ctrl_c_stops_it_with_exit_130(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc.pid, "web")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out, err) == (130, "", "Error: interrupted\n")


def test_sigterm_still_ends_it_as_killed_by_sigterm(tmp_path: Path) -> None:
    """What systemd counts as a clean stop (README: Exit codes) stays as it was."""
    port = free_port()
    proc = start(tmp_path, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc.pid, "web")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGTERM
