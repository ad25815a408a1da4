"""Whether a process we started is still the one running, read from /proc.

`kill(pid, 0)` is not enough on this kind of machine: PID 1 may leave zombies unreaped for
minutes (a zombie is dead), and a pid can be reused by another program (the start time or the
command line tells them apart).
"""

from __future__ import annotations

from pathlib import Path


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
    st = proc_state(pid)
    if st is None or st[0] in ("Z", "X") or (start is not None and st[1] != start):
        return False
    if marker is not None:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return marker in cmdline
    return True
