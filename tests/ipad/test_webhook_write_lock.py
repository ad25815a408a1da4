"""Two receiver processes share one SQLite file and take turns on a write lock: while the other one
holds it, a receiver goes on reading requests (its loop never waits on the lock), and what arrived
meanwhile is stored, each event once, as soon as the lock is free."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import requests

from core.db import Database
from core.locks import FileLock
from core.secrets import Secret
from ipad.store.registry import Registry
from ipad.webhook import create_app, sign
from lab.processes import free_port
from tests.ipad.webhook_events import KEY, UDID, event


def test_the_loop_keeps_reading_while_another_process_writes(tmp_path: Path) -> None:
    import uvicorn

    lock_file = tmp_path / "werne.db.webhook-lock"
    db = Database(f"sqlite:///{tmp_path / 'werne.db'}")
    app = create_app(Registry(db), Secret(KEY, "test"), write_lock=lock_file)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    other = FileLock(lock_file, wait=None)  # the other receiver process, in the middle of its batch
    socks: list[socket.socket] = []
    try:
        while not server.started:
            time.sleep(0.02)
        other.acquire()
        bodies = [event("mdm.Connect", {"UDID": UDID, "Status": "Acknowledged", "CommandUUID": f"L{i}"}, f"l{i}",
                        status="Acknowledged", command_uuid=f"L{i}") for i in range(8)]
        for body in bodies:  # sent, not waited for: each answer comes only after its event is stored
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Hmac-Signature: "
                      + sign(body, KEY).encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            socks.append(s)
        time.sleep(0.5)  # the receiver has read them and wants the lock
        # Its loop is not stuck on the lock: another request is answered meanwhile, nothing is stored.
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).text == "ok\n"
        assert app.state.writer.events == 0
        other.release()
        answers = []
        for s in socks:
            s.settimeout(30)
            data = b""
            while not data.endswith(b"\n\n") and b"ok\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            answers.append(data.split(b"\r\n", 1)[0])
        assert answers == [b"HTTP/1.1 200 OK"] * 8
        assert Registry(db).counts()["mdm_commands"] == 8
    finally:
        other.release()
        other.close()
        for s in socks:
            s.close()
        server.should_exit = True
        thread.join(15)
        db.dispose()
