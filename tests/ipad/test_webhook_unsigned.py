"""Issue 22: the webhook receiver without an HMAC key would store whatever anyone who reaches it
posts (forged check-ins, forged command results). It refuses to start, with one line, unless
mdm.webhook_allow_unsigned says that is meant; then it starts, and says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from lab.processes import free_port, wait_http
from tests.fixtures.site import DEMO_INVENTORY, write_config

REPO = Path(__file__).resolve().parents[2]


def start(cfg: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WERNE_")}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, str(REPO / "cli.py"), "--config", str(cfg), "mdm", "serve-webhook",
                                 "--listen", f"127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT,
                                env={**env, "PYTHONPATH": str(REPO)})


def test_without_a_key_the_receiver_refuses_to_start(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, tmp_path / "state")
    proc = start(cfg, free_port(), tmp_path / "log")
    try:
        code = proc.wait(timeout=30)  # before: it started and served unsigned events until killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = (tmp_path / "log").read_text()
    assert (code, out) == (2, "Error: the webhook receiver has no HMAC key (mdm.webhook_hmac_key_file, "
                              "$WERNE_WEBHOOK_HMAC_KEY or --hmac-key-file): it would store events anyone could "
                              "forge; give it NanoMDM's -webhook-hmac-key, or set mdm.webhook_allow_unsigned = "
                              "true\n")


def test_with_the_explicit_opt_out_it_starts_and_warns(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, tmp_path / "state",
                       "[mdm]\nwebhook_allow_unsigned = true\n")
    port = free_port()
    proc = start(cfg, port, tmp_path / "log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc.pid, "webhook", tmp_path / "log")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "no HMAC key; unsigned events are accepted (mdm.webhook_allow_unsigned)" in (tmp_path / "log").read_text()
