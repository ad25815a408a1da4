"""Whether a process we started is still the one running, read from /proc.

`kill(pid, 0)` is not enough on this kind of machine: PID 1 may leave zombies unreaped for
minutes (a zombie is dead), and a pid can be reused by another program (the start time or the
command line tells them apart).
"""

from __future__ import annotations

import time
from pathlib import Path

# A process in the middle of execve() has an empty /proc/PID/cmdline for a moment (its new memory
# is mapped before its arguments are): a launcher that execs the server is read again before its
# command line counts as "not ours". Seen under load as a lab service "not running" just after start.
EXEC_WINDOW_READS = 20
EXEC_WINDOW_SLEEP_S = 0.01


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw.rsplit(")", 1)[1].split()
    return rest[0], int(rest[19])


def pid_alive(pid: int | None, *, start: int | None = None, marker: str | None = None) -> bool:
    """True if `pid` runs and is not a zombie; with `start`, only if it started then (not a reused
    pid); with `marker`, only if its command line contains that text."""
    if not pid:
        return False
    st = _live_state(pid, start)
    if st is None:
        return False
    if marker is not None:
        cmdline = _cmdline(pid, st[1])
        return cmdline is not None and marker in cmdline
    return True


def _live_state(pid: int, start: int | None) -> tuple[str, int] | None:
    """proc_state of `pid` while it runs (not a zombie) and, with `start`, started then; else None."""
    st = proc_state(pid)
    if st is None or st[0] in ("Z", "X") or (start is not None and st[1] != start):
        return None
    return st


def _read_cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _cmdline(pid: int, start: int) -> str | None:
    """The command line of `pid` (started at `start`), read again while it is empty (mid-exec)."""
    for _ in range(EXEC_WINDOW_READS):
        raw = _read_cmdline(pid)
        if raw is None:
            return None
        if raw:
            return raw.replace(b"\0", b" ").decode(errors="replace")
        time.sleep(EXEC_WINDOW_SLEEP_S)
        if _live_state(pid, start) is None:
            return None
    return ""
