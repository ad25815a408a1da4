"""Alerts reach IT staff through a real SMTP server (aiosmtpd, on loopback) and a real HTTP
server for the webhook; a mail server that is down is logged and named, and changes nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.alerts import free_port
from tests.fixtures.http import serving

MONITOR = {"MONITOR_SERVICE_RESULT": "exit-code", "MONITOR_EXIT_CODE": "exited", "MONITOR_EXIT_STATUS": "3"}


@pytest.fixture
def hook_server() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Hook)) as server:
        yield server.server_address[1], received


def alerts_config(path: Path, port: int, extra: str = "") -> Path:
    path.write_text(f'[alerts]\nmail_to = ["it-bereitschaft@example-city.de"]\nmail_from = "werne@example-city.de"\n'
                    f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\ntimeout_s = 5.0\n{extra}', encoding="utf-8")
    return path


def test_a_failed_nightly_run_is_mailed(run_cli, tmp_path: Path, smtp_sink) -> None:
    port, sink = smtp_sink
    cfg = alerts_config(tmp_path / "werne.toml", port)
    r = run_cli("alert", "unit-failed", "werne-compliance.service", config=cfg, env=MONITOR)
    assert r.exit_code == 0, r.output
    [(sender, rcpts, msg)] = sink.messages
    assert (sender, rcpts) == ("werne@example-city.de", ["it-bereitschaft@example-city.de"])
    assert msg["Subject"].endswith("] werne-compliance.service failed")
    body = msg.get_content()
    assert "werne-compliance.service exited with 3 (could not run)" in body
    assert "journalctl -u werne-compliance.service" in body and "result=exit-code" in body


def test_an_smtp_server_that_is_down_is_logged_and_named(run_cli, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    cfg = alerts_config(tmp_path / "werne.toml", port)
    r = run_cli("alert", "unit-failed", "werne-compliance.service", "--json", config=cfg, env=MONITOR)
    assert r.exit_code == 3
    result = json.loads(r.output)
    assert result["delivered"] is False
    [mail] = result["deliveries"]
    assert mail["channel"] == "mail" and mail["ok"] is False and f"127.0.0.1:{port}" in mail["detail"]
    assert any("alert mail through" in rec.getMessage() for rec in caplog.records)


def test_the_webhook_gets_json_and_its_url_stays_out_of_messages(run_cli, tmp_path: Path, smtp_sink,
                                                                  hook_server) -> None:
    port, sink = smtp_sink
    hook_port, received = hook_server
    url_file = tmp_path / "hook-url"
    url_file.write_text(f"http://127.0.0.1:{hook_port}/hooks/SECRET-TOKEN-123\n")
    cfg = alerts_config(tmp_path / "werne.toml", port, f'webhook_url_file = "{url_file}"\n')
    r = run_cli("alert", "test", config=cfg)
    assert r.exit_code == 0, r.output
    assert len(sink.messages) == 1
    [body] = received
    assert body["kind"] == "test" and body["subject"] == "test alert" and "text" in body and "host" in body
    assert "SECRET-TOKEN" not in r.output


def test_no_channel_configured_is_bad_input(run_cli, tmp_path: Path) -> None:
    cfg = tmp_path / "werne.toml"
    cfg.write_text("[alerts]\nmail_to = []\n")
    r = run_cli("alert", "test", config=cfg)
    assert (r.exit_code, r.output) == (2, "Error: no alert channel configured: set [alerts] smtp_host and "
                                          "mail_to, or webhook_url_file\n")
