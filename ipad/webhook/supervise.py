"""Run the receiver: one uvicorn process per core (forked, SO_REUSEPORT sockets), stopped together."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from core import logs
from core.secrets import Secret
from ipad.errors import WebhookError
from ipad.store.registry import Registry
from ipad.webhook.serve import create_app

log = logging.getLogger("werne.mdm.webhook")




def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WebhookError(f"mdm.webhook_listen: expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def serve(
    registry: Registry,
    listen: str,
    hmac_key: Secret | None,
    max_body: int = 1024 * 1024,
    batch_ms: int = 0,
    batch_max: int = 500,
    log_level: str = "info",
    workers: int | None = None,
) -> None:
    """Run the receiver in the foreground until interrupted (uvicorn in `workers` processes).

    The default (also $WERNE_WEBHOOK_WORKERS) is one process per core, at most 2, on SQLite, and
    1 on PostgreSQL. Each process listens on its own SO_REUSEPORT socket (see listen_socket); on SQLite
    each batch's transaction holds a lock file beside the database, so they take turns writing
    without SQLite's busy sleep.
    """
    host, port = parse_listen(listen)
    db_file = _sqlite_file(registry.db.url)
    if workers is None:
        env = os.environ.get("WERNE_WEBHOOK_WORKERS", "")
        if env.strip():
            if not env.strip().isdigit() or not 1 <= int(env) <= 16:
                raise WebhookError(f"WERNE_WEBHOOK_WORKERS: expected 1-16, got {env[:20]!r}")
            workers = int(env)
        else:
            workers = min(2, os.cpu_count() or 1) if db_file is not None else 1
    if workers > 1 and db_file is None:
        # Without the lock file, two processes could insert the same new device at once.
        workers = 1
    socks = listen_socket(host, port, workers, listen)
    lock = db_file.with_name(db_file.name + ".webhook-lock") if db_file is not None and workers > 1 else None
    logs.install()  # the CLI did already; a library caller of serve() gets safe log lines too
    logging.basicConfig(level=logging.INFO, format=logs.SERVICE_FORMAT)
    # No connection may cross the fork: each process opens its own.
    registry.db.engine.dispose()
    children: list[int] = []
    for i in range(1, workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _exit_with_parent()
                for j, other in enumerate(socks):
                    if j != i:
                        other.close()
                app = create_app(registry, hmac_key, max_body, batch_ms, batch_max, lock, True)
                _run_uvicorn(app, socks[i], log_level)
            except BaseException:  # noqa: BLE001 - a child must never return into the caller's code
                log.exception("webhook: worker process failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    for other in socks[1:]:
        other.close()
    try:
        _run_uvicorn(create_app(registry, hmac_key, max_body, batch_ms, batch_max, lock, True), socks[0], log_level)
    finally:
        _stop_children(children)
        socks[0].close()


def listen_socket(host: str, port: int, workers: int, listen: str) -> list[Any]:
    """One listening socket per process. With several, each has SO_REUSEPORT, so the kernel spreads
    connections evenly over the processes (on one shared socket, the process that wakes first takes
    most of NanoMDM's keep-alive connections). A plain bind first, so that a port already in use,
    also by another receiver, is still an error rather than a silent share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        probe = socket.create_server((host, port), family=family, backlog=2048)
        if workers == 1:
            return [probe]
        probe.close()
        return [
            socket.create_server((host, port), family=family, backlog=2048, reuse_port=True) for _ in range(workers)
        ]
    except OSError as e:
        raise WebhookError(f"cannot listen on {listen}: {e.strerror}") from None


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return None
    return Path(url.removeprefix("sqlite:///"))


KEEP_ALIVE_S = 120


def _run_uvicorn(app: Starlette, sock: Any, log_level: str) -> None:
    # Imported here: only the serving processes need the server, not everyone who builds the app.
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        http=_http_impl(),
        loop=_loop_impl(),
        timeout_graceful_shutdown=5,
        # Longer than NanoMDM's HTTP client keeps an idle connection (Go's default transport: 90 s),
        # so the client always closes first. With uvicorn's 5 s, a post sent on a connection the
        # receiver was just closing got "connection reset by peer", and NanoMDM does not post again
        # (hundreds of lost answers in bench/mdm_replicas.py at 2,000 iPads).
        timeout_keep_alive=KEEP_ALIVE_S,
        # NanoMDM posts directly (loopback or the admin LAN); no proxy's X-Forwarded-For is trusted.
        proxy_headers=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _exit_with_parent() -> None:
    """Linux: the worker gets SIGTERM when the main process dies, even by SIGKILL."""
    try:
        import ctypes  # inside the try: an interpreter built without ctypes just skips this

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(0)


def _stop_children(pids: list[int], timeout: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)


def _http_impl() -> str:
    """uvicorn's fast HTTP parser where it is installed (the import is the check)."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def _loop_impl() -> str:
    """uvloop's event loop where it is installed (the import is the check)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"
