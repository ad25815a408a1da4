"""Issue 22: every log line stays one terminal-safe line, whatever text from outside it quotes
(core.logs: the process's log records escape their message, for every handler)."""

from __future__ import annotations

import logging
import plistlib
import subprocess
import sys
from pathlib import Path

import requests

from core import logs
from core.config import write_endpoints
from tests.fakes.fake_apple import FakeAppleDevice, shared_device_ca
from tests.fixtures.enrolment import make_site, start_web

HOSTILE = "X\x1b]0;pwned\x07\x1b[2J\n2026-01-01 00:00:00 WARNING werne: forged line\u202e"


def test_a_log_record_quoting_outside_text_is_one_safe_line() -> None:
    r = subprocess.run(
        [sys.executable, "-c",
         "import logging, sys\nfrom core import logs\nlogs.install()\n"
         "logging.getLogger('werne.test').warning('refused %s: %r', sys.argv[1], sys.argv[1])", HOSTILE],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and "\u202e" not in r.stderr
    assert r.stderr.startswith("refused X\\x1b]0;pwned\\x07\\x1b[2J\\n2026-01-01 00:00:00 WARNING werne: forged line")


def test_the_record_factory_is_what_every_handler_formats() -> None:
    old = logging.getLogRecordFactory()
    try:
        logs.install()
        record = logging.getLogger("werne.test").makeRecord("werne.test", logging.WARNING, __file__, 1,
                                                            "a %s b", (HOSTILE,), None)
        assert isinstance(record, logs.SafeLogRecord)
        assert "\n" not in logging.Formatter(logs.SERVICE_FORMAT).format(record)
    finally:
        logging.setLogRecordFactory(old)


def test_machineinfo_fields_reach_the_web_log_escaped(tmp_path: Path) -> None:
    """A device posts a MachineInfo whose serial carries an OSC title, a clear-screen and a line feed
    that would forge a log line; werne web serve logs the refusal as one escaped line."""
    site = make_site(tmp_path / "site")
    # The signature verifies (the fake device CA is the configured one), so the serial is read.
    (tmp_path / "device-ca.pem").write_bytes(shared_device_ca().pem())
    write_endpoints(site.state_dir, "dep", {"machineinfo_ca_file": tmp_path / "device-ca.pem"})
    web = start_web(site)
    try:
        device = FakeAppleDevice("ZZZZ00000001")
        info = {"UDID": device.udid, "SERIAL": HOSTILE, "PRODUCT": "iPad13,18", "OS_VERSION": "18.5"}
        r = requests.post(web.url + "/mdm/enroll", data=device.sign(plistlib.dumps(info, fmt=plistlib.FMT_BINARY)),
                          headers={"Content-Type": "application/pkcs7-signature"}, timeout=30)
        assert r.status_code == 403
    finally:
        web.stop()
    log = web.service.log.read_text(encoding="utf-8", errors="replace")
    refused = [ln for ln in log.splitlines() if "ADE enrolment refused" in ln]
    assert len(refused) == 1, log
    assert "forged line" in refused[0] and "\\x1b]0;pwned\\x07" in refused[0]
    assert "\x1b" not in log and "\x07" not in log and "\u202e" not in log
    assert not any(ln.startswith("2026-01-01") for ln in log.splitlines())
