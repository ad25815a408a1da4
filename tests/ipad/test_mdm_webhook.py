"""The webhook receiver over real HTTP (uvicorn on a free port): bad input, HMAC, idempotency, hooks."""

from __future__ import annotations

import base64
import json
import os
import plistlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from core.db import Database
from core.secrets import Secret
from ipad.store.registry import Registry
from ipad.webhook import on_enrolled, sign
from tests.fixtures.mdm import rows_in_db_file
from tests.fixtures.site import REPO, write_secret
from tests.ipad.webhook_events import AUTH, KEY, TOKEN, UDID, event, post


@pytest.fixture
def receiver(tmp_path: Path, webhook_server, migrated_db):  # type: ignore[no-untyped-def]
    db = Database(migrated_db(tmp_path / "werne.db"))
    registry = Registry(db, school_of=lambda s: ("gs-demo", "pupil") if s == "ZDWK1DEGZD" else None)
    server = webhook_server(registry, Secret(KEY, "test"), max_body=64 * 1024)
    yield server.url, registry
    db.dispose()


def test_checkins_fill_the_registry_in_nanomdm_order(receiver) -> None:
    url, registry = receiver
    seen = []
    remove = on_enrolled(seen.append)
    try:
        # NanoMDM posts concurrently: the TokenUpdate may arrive before its Authenticate.
        r1 = post(url, event("mdm.TokenUpdate", TOKEN, "e2", "2026-11-27T10:00:00.2Z", token_update_tally=1))
        r2 = post(url, event("mdm.Authenticate", AUTH, "e1", "2026-11-27T10:00:00.1Z"))
    finally:
        remove()
    assert (r1.status_code, r2.status_code) == (200, 200)
    (dev,) = registry.list_devices()
    assert (dev.enrollment_id, dev.serial, dev.school, dev.group, dev.state, dev.token_update_tally) == (
        UDID,
        "ZDWK1DEGZD",
        "gs-demo",
        "pupil",
        "enrolled",
        1,
    )
    assert dev.unlock_token == b"unlock"
    assert [(e.topic, e.serial, e.school) for e in seen] == [
        ("mdm.TokenUpdate", None, None),
        ("mdm.Authenticate", "ZDWK1DEGZD", "gs-demo"),
    ]
    assert [e.topic for e in registry.events_since(0)] == ["mdm.TokenUpdate", "mdm.Authenticate"]
    r3 = post(
        url,
        event(
            "mdm.CheckOut",
            {"MessageType": "CheckOut", "UDID": UDID, "Topic": "x"},
            "e3",
            "2026-11-27T10:00:01Z",
        ),
    )
    assert r3.status_code == 200 and registry.list_devices()[0].state == "checked_out"


def test_results_idle_and_duplicates(receiver) -> None:
    url, registry = receiver
    assert post(url, event("mdm.Authenticate", AUTH, "a1")).status_code == 200
    ack = {
        "UDID": UDID,
        "Status": "Error",
        "CommandUUID": "C1",
        "ErrorChain": [
            {
                "ErrorCode": 4001,
                "ErrorDomain": "MCInstallationErrorDomain",
                "LocalizedDescription": "x",
                "USEnglishDescription": "Profile Installation Failed",
            }
        ],
    }
    body = event("mdm.Connect", ack, "r1", status="Error", command_uuid="C1")
    first, again = post(url, body), post(url, body)
    assert (first.text, again.text) == ("ok\n", "duplicate\n")
    (cmd,) = registry.command_statuses(["C1"])
    assert cmd.status == "Error" and cmd.error_chain[0]["ErrorCode"] == 4001
    # Idle polls move last_seen and are not kept as event rows.
    before = registry.counts()
    idle = post(url, event("mdm.Connect", {"UDID": UDID, "Status": "Idle"}, "i1", status="Idle"))
    assert idle.status_code == 200 and registry.counts() == before


BAD_INPUTS = {
    "malformed plist in raw_payload": (
        lambda: json.dumps(
            {
                "topic": "mdm.Connect",
                "event_id": "b1",
                "created_at": "2026-11-27T10:00:00Z",
                "acknowledge_event": {
                    "udid": UDID,
                    "raw_payload": base64.b64encode(b"<plist><dict><key>").decode(),
                },
            }
        ).encode(),
        400,
        "raw_payload: command report: not a valid plist",
    ),
    "raw_payload not base64": (
        lambda: json.dumps(
            {
                "topic": "mdm.Connect",
                "event_id": "b2",
                "acknowledge_event": {"raw_payload": "%%%not base64%%%"},
            }
        ).encode(),
        400,
        "raw_payload is not base64",
    ),
    "JSON that is not a webhook": (
        lambda: json.dumps({"hello": "world", "event_id": "b3"}).encode(),
        400,
        "not a NanoMDM webhook event",
    ),
    "JSON array": (lambda: b"[1, 2, 3]", 400, "not a NanoMDM webhook event"),
    "not JSON": (lambda: b"topic=mdm.Connect&x=1", 400, "body is not JSON"),
    "non-UTF-8 text": (
        lambda: '{"topic": "mdm.Connect", "x": "Gr\u00fc\u00dfe"}'.encode("latin-1"),
        400,
        "body is not UTF-8",
    ),
    "huge body": (
        lambda: b'{"topic": "mdm.Connect", "pad": "' + b"x" * (200 * 1024) + b'"}',
        413,
        "body too large",
    ),
    "plist that is not a report": (
        lambda: event("mdm.Connect", {"Hello": "x"}, "b4"),
        400,
        "raw_payload: command report: missing UDID",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_4xx_and_stores_nothing(receiver, case: str, caplog: pytest.LogCaptureFixture) -> None:
    url, registry = receiver
    assert post(url, event("mdm.Authenticate", AUTH, "a1")).status_code == 200
    before = registry.counts()
    make, status, reason = BAD_INPUTS[case]
    with caplog.at_level("WARNING", logger="werne.mdm.webhook"):
        r = post(url, make())
    assert r.status_code == status and r.text.startswith(reason)
    assert registry.counts() == before
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "werne.mdm.webhook"]
    assert len(lines) == 1 and lines[0].startswith(f"webhook: {status} from 127.0.0.1: {reason}")
    # Still serving.
    assert post(url, event("mdm.Authenticate", AUTH, "a2")).status_code == 200


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_missing_or_wrong_signature_is_401(receiver, key: str | None) -> None:
    url, registry = receiver
    r = post(url, event("mdm.Authenticate", AUTH, "s1"), key=key)
    assert r.status_code == 401 and registry.counts() == {
        "mdm_devices": 0,
        "mdm_device_facts": 0,
        "mdm_commands": 0,
        "mdm_webhook_events": 0,
    }


PLAIN_REPORT = {
    "UDID": UDID,
    "Status": "Acknowledged",
    "CommandUUID": "Q1",
    "QueryResponses": {"OSVersion": "17.6.1", "BatteryLevel": 0.5, "Capacity": 0x40, "IsSupervised": True},
    "CertificateList": [{"CommonName": "x", "Data": b"\x00\x01", "IsIdentity": False}],
    "When": __import__("datetime").datetime(2026, 11, 27, 10, 0, 0),
}
# Shapes the fast reader hands to plistlib (or must read exactly as plistlib does).
ODD_PLISTS = [
    plistlib.dumps(PLAIN_REPORT),
    plistlib.dumps(PLAIN_REPORT, fmt=plistlib.FMT_BINARY),
    b"<plist><dict><key>UDID</key><string>a&amp;&lt;</string><key>N</key><integer>0x1F</integer>"
    b"<key>S</key><string/><key>T</key><true>x</true><key>D</key><data>AAE=\n</data></dict></plist>",
    b"<plist><dict><key>UDID</key><string>a<![CDATA[<b>]]></string></dict></plist>",
    b"<?xml version='1.0'?><plist><dict><key>UDID</key><!-- c --><string>u</string></dict></plist>",
    b"<plist><dict><key>UDID</key><string>u<b/>v</string><foo/></dict></plist>",
    b"<?xml version='1.0'?><dict><key>UDID</key><string>u</string></dict>",
    b"<plist><dict><key></key><key>UDID</key><string>u</string></dict><array/></plist>",
]


@pytest.mark.parametrize("raw", ODD_PLISTS, ids=range(len(ODD_PLISTS)))
def test_fast_report_reader_reads_exactly_what_plistlib_reads(raw: bytes) -> None:
    from ipad.webhook.parse import fast_plist as _fast_plist

    fast = _fast_plist(raw)
    # The plain shape takes the fast path and reads what plistlib reads; the odd ones fall back
    # (None). Each case has one right answer, so either outcome can no longer pass.
    takes_fast_path = raw in (ODD_PLISTS[0], ODD_PLISTS[2])
    assert fast == (plistlib.loads(raw) if takes_fast_path else None)


def test_fast_report_path_stores_what_parse_report_gives() -> None:
    from ipad.results import parse_report
    from ipad.webhook import parse_event

    chain = [{"ErrorCode": 12, "ErrorDomain": "D", "USEnglishDescription": "e", "Other": 1}]
    for report in (PLAIN_REPORT, {"UDID": UDID, "Status": "Error", "CommandUUID": "E1", "ErrorChain": chain}):
        raw = plistlib.dumps(report)
        ev = parse_event(event("mdm.Connect", report, "f1", status=report["Status"], command_uuid="x"))
        want = parse_report(raw)
        assert (ev.status, ev.command_uuid, ev.request_type, ev.payload) == (
            want.status,
            want.command_uuid,
            want.request_type,
            want.response,
        )
        assert ev.error_chain == [e.model_dump(by_alias=True, exclude_none=True) for e in want.error_chain]


def start_receiver(tmp_path: Path, log: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    """`werne mdm serve-webhook` as its own process (WERNE_WEBHOOK_WORKERS processes), ready; and its port."""
    from lab.processes import free_port, wait_http

    key_file = tmp_path / "hmac"
    write_secret(key_file, KEY + "\n")
    key_file.chmod(0o600)
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())", "--state-dir",
             str(tmp_path / "state"), "mdm", "serve-webhook", "--listen", f"127.0.0.1:{port}",
             "--hmac-key-file", str(key_file)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "WERNE_WEBHOOK_WORKERS": str(workers)},
        )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 120, proc.pid, "webhook", log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


@pytest.mark.slow
def test_the_receiver_never_closes_a_connection_nanomdm_may_reuse(tmp_path: Path) -> None:
    """NanoMDM's HTTP client (Go's default transport) keeps an idle connection for 90 s and sends
    the next post on it; a receiver that closed it first (uvicorn's default: after 5 s) makes that
    post fail with "connection reset by peer", and NanoMDM does not post it again. The receiver keeps
    an idle keep-alive connection open past that (KEEP_ALIVE_S), so the client always closes first."""
    import socket
    import time

    from ipad.webhook.supervise import KEEP_ALIVE_S

    assert KEEP_ALIVE_S > 90
    proc, port = start_receiver(tmp_path, tmp_path / "webhook.log", workers=1)
    try:
        body = event("mdm.Connect", {"UDID": UDID, "Status": "NotNow", "CommandUUID": "K1"}, "k1",
                     status="NotNow", command_uuid="K1")
        request = (f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"X-Hmac-Signature: {sign(body, KEY)}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        def response(sock: socket.socket) -> bytes:
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(4096) or b"<closed>"
                assert not data.endswith(b"<closed>"), data
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            while len(rest) < length:
                rest += sock.recv(4096)
            return head.split(b"\r\n", 1)[0]

        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            assert response(sock) == b"HTTP/1.1 200 OK"
            time.sleep(7)  # past uvicorn's default keep-alive of 5 s
            sock.setblocking(False)
            try:
                closed = sock.recv(1, socket.MSG_PEEK) == b""
            except BlockingIOError:
                closed = False  # nothing to read: the connection is still open
            assert not closed, "the receiver closed an idle keep-alive connection"
            sock.setblocking(True)
            sock.sendall(request)
            assert response(sock) == b"HTTP/1.1 200 OK"
    finally:
        proc.terminate()
        proc.wait(30)


def test_two_receiver_processes_store_each_event_once(tmp_path: Path) -> None:
    """`werne mdm serve-webhook` with two processes on one SQLite file: every event once, then a clean stop."""
    import signal
    import time
    from concurrent.futures import ThreadPoolExecutor

    log = tmp_path / "webhook.log"
    proc, port = start_receiver(tmp_path, log, workers=2)
    try:
        url = f"http://127.0.0.1:{port}/webhook"
        bodies = [
            event("mdm.Connect", {"UDID": UDID, "Status": "NotNow", "CommandUUID": f"C{i}"}, f"n{i}",
                  status="NotNow", command_uuid=f"C{i}")
            for i in range(60)
        ]  # fmt: skip
        # 16 keep-alive connections, as NanoMDM keeps them: each process gets a share (SO_REUSEPORT).
        sessions = [requests.Session() for _ in range(16)]

        def send(i: int, body: bytes) -> requests.Response:
            headers = {"Content-Type": "application/json", "X-Hmac-Signature": sign(body, KEY)}
            return sessions[i % 16].post(url, data=body, headers=headers, timeout=10)

        with ThreadPoolExecutor(16) as pool:
            first = list(pool.map(send, range(60), bodies))
            again = list(pool.map(send, range(60), bodies))
        assert [r.text for r in first] == ["ok\n"] * 60 and [r.text for r in again] == ["duplicate\n"] * 60
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(workers) == 1
        # The writer checkpoints the WAL on its 2-second tick (its commits do not): the database
        # file alone (read immutable, without the WAL) holds every event within a few seconds.
        db_file = tmp_path / "state" / "werne.db"

        end = time.monotonic() + 15
        while rows_in_db_file(db_file, "mdm_webhook_events") < 60 and time.monotonic() < end:
            time.sleep(0.2)
        assert rows_in_db_file(db_file, "mdm_webhook_events") == 60
    finally:
        for sess in locals().get("sessions", []):
            sess.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # The worker exits once its parent has stopped (it may take a while on a loaded machine).
    def worker_gone() -> bool:
        try:
            return "zombie" in Path(f"/proc/{workers[0]}/status").read_text()
        except FileNotFoundError:
            return True

    end = time.monotonic() + 30
    while not worker_gone() and time.monotonic() < end:
        time.sleep(0.2)
    assert worker_gone()
    # Each process logs its totals on a clean stop; both wrote a share of the 60 events and 60 repeats.
    totals = re.findall(r"webhook: wrote (\d+) events in \d+ batches .*, (\d+) of them duplicates", log.read_text())
    assert len(totals) == 2 and all(int(n) > 0 for n, _ in totals)
    assert (sum(int(n) for n, _ in totals), sum(int(d) for _, d in totals)) == (120, 60)
    db = Database(f"sqlite:///{tmp_path / 'state' / 'werne.db'}")
    try:
        counts = Registry(db).counts()
        assert (counts["mdm_commands"], counts["mdm_webhook_events"], counts["mdm_devices"]) == (60, 60, 1)
    finally:
        db.dispose()


def test_concurrent_events_are_committed_together(tmp_path: Path, webhook_server) -> None:  # type: ignore[no-untyped-def]
    """Group commit: events that arrive while a batch is written share the next transaction."""
    from concurrent.futures import ThreadPoolExecutor

    db = Database(f"sqlite:///{tmp_path / 'werne.db'}")
    server = webhook_server(Registry(db), Secret(KEY, "test"))
    writer = server.server.config.app.state.writer
    bodies = [
        event("mdm.Connect", {"UDID": UDID, "Status": "NotNow", "CommandUUID": f"G{i}"}, f"g{i}",
              status="NotNow", command_uuid=f"G{i}")
        for i in range(64)
    ]  # fmt: skip
    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda b: post(server.url, b), bodies))
        assert [r.text for r in answers] == ["ok\n"] * 64
        assert writer.events == 64 and writer.batches < 64
        assert Registry(db).counts()["mdm_commands"] == 64
    finally:
        db.dispose()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """Also against another receiver's SO_REUSEPORT sockets: a second receiver must not share the port."""
    import socket

    from ipad.errors import WebhookError
    from ipad.webhook.supervise import listen_socket as _listen

    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        for workers in (1, 2):
            with pytest.raises(WebhookError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
                _listen("127.0.0.1", port, workers, f"127.0.0.1:{port}")
    finally:
        taken.close()
    first = _listen("127.0.0.1", port, 2, f"127.0.0.1:{port}")
    try:
        assert len(first) == 2 and all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in first)
        with pytest.raises(WebhookError, match="Address already in use"):
            _listen("127.0.0.1", port, 2, f"127.0.0.1:{port}")
    finally:
        for sock in first:
            sock.close()
