"""Behind nginx's API front over several NanoMDM replicas ([mdm] replicas > 1), a replica that is
restarting makes nginx answer 502 for a few seconds; werne's client waits that out (enqueue is
idempotent by CommandUUID), while a single NanoMDM keeps the short retries. A real HTTP server
answers 502 three times, then as NanoMDM does."""

from __future__ import annotations

import json
import plistlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.config import Config
from mdm_client.factory import nanomdm_client
from mdm_client.nanomdm import Command, NanoMDMError
from tests.fixtures.http import serving

FAILURES = 3


class Front(ThreadingHTTPServer):
    calls = 0
    # The first PUT is stored (its CommandUUID kept) before the 502, as when nginx's replica is
    # killed after it stored the enqueue; a stored UUID sent again is answered as NanoMDM does.
    stored_then_502 = False
    stored: set[str] = set()


class Handler(BaseHTTPRequestHandler):
    server: Front

    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        body_in = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.calls += 1
        uuid = plistlib.loads(body_in)["CommandUUID"]
        if self.server.stored_then_502:
            ids = self.path.split("?")[0].rsplit("/", 1)[1].split(",")
            if self.server.calls == 1:
                self.server.stored = {uuid}
                body, status = b"<html>502 Bad Gateway</html>", 502
            elif uuid in self.server.stored:
                body, status = json.dumps({"command_error": "command already exists"}).encode(), 500
            else:
                body, status = json.dumps({"status": {i: {} for i in ids}, "no_push": True}).encode(), 200
        elif self.server.calls <= FAILURES:
            body, status = b"<html>502 Bad Gateway</html>", 502
        else:
            ids = self.path.rsplit("/", 1)[1].split(",")
            body, status = json.dumps({"status": {i: {"push_result": "ok"} for i in ids}}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def front() -> Iterator[Front]:
    with serving(Front(("127.0.0.1", 0), Handler)) as srv:
        yield srv


def config(front: Front, tmp_path: Path, replicas: int) -> Config:
    key = tmp_path / "api.key"
    key.write_text("secret-api-key\n")
    key.chmod(0o600)
    return Config.model_validate({"mdm": {"url": f"http://127.0.0.1:{front.server_address[1]}",
                                          "api_key_file": str(key), "replicas": replicas}})


def command() -> Command:
    from ipad.commands import device_information

    return device_information()


def test_with_replicas_a_502_while_one_restarts_is_waited_out(front: Front, tmp_path: Path) -> None:
    result = nanomdm_client(config(front, tmp_path, replicas=2)).enqueue(command(), ["udid-1"], push=False)
    assert front.calls == FAILURES + 1
    assert "udid-1" in result.queued


def test_an_enqueue_that_may_have_been_stored_is_not_sent_again_once_a_device_answered_it(
        front: Front, tmp_path: Path) -> None:
    """nginx answers 502 for an enqueue its replica stored before it was killed. If a device has
    answered that CommandUUID since (werne's registry knows), NanoMDM may have deleted the command
    (delete=1), and sending it again would queue it again: the client counts it as queued and sends
    nothing more. Asked once per resend, with the command's UUID."""
    front.stored_then_502 = True
    cmd = command()
    asked: list[str] = []

    def answered(uuid: str) -> bool:
        asked.append(uuid)
        return True

    result = nanomdm_client(config(front, tmp_path, replicas=2)).enqueue(cmd, ["udid-1", "udid-2"], push=False,
                                                                        answered=answered)
    assert front.calls == 1 and asked == [cmd.uuid]
    assert result.queued == ["udid-1", "udid-2"] and not result.failed


def test_an_enqueue_no_device_answered_yet_is_sent_again_with_the_same_uuid(front: Front, tmp_path: Path) -> None:
    """Nobody answered yet: sent again with the same CommandUUID, which NanoMDM still holds
    ("command already exists", counted as queued)."""
    front.stored_then_502 = True
    asked: list[str] = []
    result = nanomdm_client(config(front, tmp_path, replicas=2)).enqueue(
        command(), ["udid-1"], push=False, answered=lambda uuid: asked.append(uuid) is not None)
    assert front.calls == 2 and len(asked) == 1
    assert result.queued == ["udid-1"] and not result.failed


def test_one_nanomdm_keeps_the_short_retries(front: Front, tmp_path: Path) -> None:
    with pytest.raises(NanoMDMError, match="502"):
        nanomdm_client(config(front, tmp_path, replicas=1)).enqueue(command(), ["udid-1"], push=False)
    assert front.calls == FAILURES
