"""One compliance run at a time: a lock file in the state dir naming the holder's pid and start time.

The lock is created with O_EXCL. When it exists, the holder is alive only if a process with that
pid exists, is not a zombie, and started at the recorded time (`/proc/PID/stat` field 22), so a pid
reused by an unrelated process does not keep a dead run's lock. A stale lock is removed under a
short flock on a guard file, so two recovering processes cannot both win.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from compliance.errors import ComplianceLockHeld
from core.errors import StateError
from core.locks import file_lock
from core.procs import proc_state


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    state = proc_state(pid)
    return None if state is None or state[0] in ("Z", "X") else state[1]


def holder_alive(info: dict[str, object]) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    if info.get("host") not in (None, socket.gethostname()):
        return True  # a holder on another machine sharing the state dir: cannot check, assume alive
    return process_start_ticks(pid) == info.get("start_ticks")


class RunLock:
    """Context manager holding the compliance lock; raises ComplianceLockHeld when taken."""

    def __init__(self, path: Path):
        self.path = path
        self.recovered: dict[str, object] | None = None
        self._held = False

    def _read(self) -> dict[str, object]:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        # Anything but a JSON object is garbage, like a file that is no JSON at all.
        return info if isinstance(info, dict) else {}

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot create {self.path.parent}: {e.strerror}") from None
        me = {
            "pid": os.getpid(),
            "start_ticks": process_start_ticks(os.getpid()),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        # The lock appears with its content or not at all: written to a file of our own first, then
        # linked into place (a link fails when the lock exists). A full disk never leaves an empty
        # lock file behind for the next run to puzzle over.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(me, f)
                    f.flush()
                    os.fsync(f.fileno())
                for _ in range(3):
                    try:
                        os.link(tmp, self.path)
                    except FileExistsError:
                        self._recover_or_raise()
                        continue
                    self._held = True
                    return self
            except OSError as e:
                raise StateError(f"cannot take the compliance lock {self.path}: "
                                 f"{e.strerror or e.__class__.__name__}") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise ComplianceLockHeld(f"could not take the compliance lock {self.path}")

    def _recover_or_raise(self) -> None:
        guard = self.path.with_name(self.path.name + ".guard")
        with file_lock(guard, wait=None):
            info = self._read()
            if not info and self.path.exists():
                # Being written right now by its new holder, or garbage: treat an old empty file as stale.
                age = datetime.now().timestamp() - self.path.stat().st_mtime
                if age < 5:
                    raise ComplianceLockHeld(f"another compliance run is starting ({self.path})")
            if info and holder_alive(info):
                raise ComplianceLockHeld(
                    f"another compliance run is going on (pid {info.get('pid')} since {info.get('since')}); "
                    f"lock {self.path}"
                )
            self.recovered = info or {"pid": None}
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def release(self) -> None:
        if self._held:
            try:
                if self._read().get("pid") == os.getpid():
                    self.path.unlink()
            except FileNotFoundError:
                pass
            self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
