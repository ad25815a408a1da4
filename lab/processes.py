"""The lab's background processes: one descriptor per server, started detached with a pid file and
a log, waited for until ready, and stopped by their pid file (also from another process).

A `Service` says what a server is (name, argv, environment, readiness check, where its pid file and
log go, which services it needs first). `start` launches it through `setsid --fork` and a fixed
shell launcher that joins the given cgroups, writes its own pid and execs the server, so the server
is nobody's child: it outlives the process that started it (`werne lab up` returns) and no
`Popen` object has to be kept to reap it. The pid file holds the pid, a marker from its command line
and its start time, so `stop` never signals a process that merely reuses the pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import requests

from core.procs import pid_alive, proc_state
from lab.errors import LabServiceError

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Fixed launcher: join each cgroup, write our pid, become the server. Paths and argv arrive as
# positional arguments ($1 the pid file, $2 the number of cgroups, then the cgroups, then argv);
# nothing is interpolated into the script.
LAUNCHER = ('pidfile=$1; n=$2; shift 2; while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 125; '
            'shift; n=$((n - 1)); done; echo $$ > "$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile" && exec "$@"')
POLL_S = 0.05


class ReadyCheck(Protocol):
    """Whether a started server answers yet; `describe()` names what is asked, for messages."""

    def __call__(self) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class HTTPReady:
    """Ready when a GET of `url` answers (below 500; with any_status, any answer at all)."""

    url: str
    ca: Path | None = None
    any_status: bool = False

    def __call__(self) -> bool:
        try:
            r = requests.get(self.url, timeout=1, verify=str(self.ca) if self.ca else True)
        except requests.RequestException:
            return False
        return self.any_status or r.status_code < 500

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class PortReady:
    """Ready when a TCP connection to host:port succeeds."""

    host: str
    port: int

    def __call__(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def describe(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Service:
    """One lab server: what to run, how to tell it is ready, and where its pid file and log go.

    `directory` holds NAME.pid and logs/NAME.log and is the working directory. `env` is added to
    this process's environment (secrets go here, never into argv). `ready` None means "running is
    ready" (a process with no port). `depends_on` names the services `start_all` starts first.
    `user` runs the server under that account (setpriv, same pid); `cgroups` are cgroup directories
    it joins before it execs, so a lab's teardown that kills its cgroups finds it too. With
    `inherit_env` False, `env` is the whole environment (PATH added if it has none).
    """

    name: str
    argv: tuple[str, ...]
    directory: Path
    env: Mapping[str, str] = field(default_factory=dict)
    ready: ReadyCheck | None = None
    ready_timeout: float = 15.0
    depends_on: tuple[str, ...] = ()
    what: str = ""
    stop_signal: int = signal.SIGTERM
    user: str | None = None
    cgroups: tuple[Path, ...] = ()
    inherit_env: bool = True

    @property
    def pid_file(self) -> Path:
        return self.directory / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.directory / "logs" / f"{self.name}.log"

    @property
    def label(self) -> str:
        return self.what or self.name


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def launch(argv: Sequence[str], *, pid_file: Path, log: Path, env: Mapping[str, str] | None = None,
           cwd: Path | None = None, cgroups: Sequence[Path] = (), timeout: float = 10.0,
           inherit_env: bool = True) -> tuple[int, int | None]:
    """Start argv detached (its own session, not our child); returns (pid, start time).

    The launcher writes `pid_file` (the pid only) before it execs argv. `env` is added to this
    process's environment, or with inherit_env False is the whole environment.
    """
    base = dict(os.environ) if inherit_env else {}
    # The system directories last: setsid, sh and setpriv are found, the caller's PATH still wins.
    environ = {**base, "PATH": f"{base['PATH']}:{SAFE_PATH}" if base.get("PATH") else SAFE_PATH, **(env or {})}
    log.parent.mkdir(parents=True, exist_ok=True)
    pid_file.unlink(missing_ok=True)
    with open(log, "ab") as out:
        p = subprocess.run(
            ["setsid", "--fork", "/bin/sh", "-c", LAUNCHER, "werne-lab-launch", str(pid_file), str(len(cgroups)),
             *map(str, cgroups), *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=30, check=False,
            env=environ,
            cwd=str(cwd) if cwd else None)
    if p.returncode != 0:
        raise LabServiceError(f"could not start {argv[0]} (setsid exit {p.returncode}); see {log}")
    end = time.monotonic() + timeout
    while True:
        try:
            pid = int(pid_file.read_text(encoding="utf-8").split()[0])
            break
        except (OSError, ValueError, IndexError):
            if time.monotonic() > end:
                raise LabServiceError(f"{argv[0]} did not start (no pid file {pid_file}); see {log}") from None
            time.sleep(0.01)
    st = proc_state(pid)
    return pid, st[1] if st else None


def _write_pid_file(path: Path, pid: int, marker: str, start: int | None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{pid}\n{marker}\n{start if start is not None else ''}\n", encoding="utf-8")
    tmp.replace(path)


def read_pid_file(path: Path) -> tuple[int, str, int | None] | None:
    """(pid, command-line marker, start time or None) from a pid file, or None if there is none."""
    try:
        lines = [*path.read_text(encoding="utf-8").splitlines(), "", ""]
        start = lines[2].strip() if len(lines) > 2 else ""
        return int(lines[0]), lines[1], int(start) if start else None
    except (OSError, ValueError):
        return None


def start(svc: Service) -> int:
    """Start a service (not waiting for it to be ready); returns its pid."""
    argv = list(svc.argv)
    if svc.user is not None:
        # setpriv execs in place: the pid in the pid file stays the server's own.
        argv = ["setpriv", f"--reuid={svc.user}", f"--regid={svc.user}", "--init-groups", "--", *argv]
    svc.directory.mkdir(parents=True, exist_ok=True)
    pid, started = launch(argv, pid_file=svc.pid_file, log=svc.log, env=svc.env, cwd=svc.directory,
                          cgroups=svc.cgroups, inherit_env=svc.inherit_env)
    _write_pid_file(svc.pid_file, pid, svc.argv[0], started)
    return pid


def last_log_line(log: Path) -> str:
    if not log.is_file():
        return ""
    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return lines[-1][:200] if lines else ""


def wait_for(ready: ReadyCheck | None, *, pid: int | None, timeout: float, what: str, log: Path | None = None,
             start_time: int | None = None) -> None:
    """Wait until `ready` says yes (None: until `pid` shows as running); raises LabServiceError,
    with the log's last line, when the process `pid` dies first or the time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pid is not None and not pid_alive(pid, start=start_time):
            break
        if ready is None or ready():
            return
        time.sleep(POLL_S if ready is None else 0.1)
    where = f" ({ready.describe()})" if ready is not None else ""
    last = last_log_line(log) if log is not None else ""
    raise LabServiceError(f"{what} did not start{where}" + (f": {last}" if last else f"; see {log}" if log else ""))


def wait_http(url: str, timeout: float, pid: int | None = None, what: str = "service",
              log_file: Path | None = None) -> None:
    """Wait until a GET of `url` answers below 500 (for a process started some other way)."""
    wait_for(HTTPReady(url), pid=pid, timeout=timeout, what=what, log=log_file)


def wait_ready(svc: Service, pid: int, timeout: float | None = None) -> None:
    """Wait until the service answers its readiness check (or, without one, shows as running)."""
    info = read_pid_file(svc.pid_file)
    wait_for(svc.ready, pid=pid, timeout=svc.ready_timeout if timeout is None else timeout, what=svc.label,
             log=svc.log, start_time=info[2] if info and info[0] == pid else None)


def up(svc: Service) -> int:
    """Start a service (stopping an earlier one of the same pid file first) and wait until it is
    ready; on failure it is stopped again. Returns its pid."""
    stop(svc.name, svc.directory, signal_=svc.stop_signal)
    pid = start(svc)
    try:
        wait_ready(svc, pid)
    except BaseException:
        stop(svc.name, svc.directory, signal_=svc.stop_signal)
        raise
    return pid


def ordered(services: Iterable[Service]) -> list[Service]:
    """The services in an order that starts each after the ones it depends on."""
    by_name = {s.name: s for s in services}
    out: list[Service] = []
    state: dict[str, str] = {}

    def visit(s: Service, path: tuple[str, ...]) -> None:
        if state.get(s.name) == "done":
            return
        if s.name in path:
            raise LabServiceError(f"lab services depend on each other in a circle: {' -> '.join((*path, s.name))}")
        for dep in s.depends_on:
            if dep not in by_name:
                raise LabServiceError(f"lab service {s.name} depends on {dep}, which is not among them")
            visit(by_name[dep], (*path, s.name))
        state[s.name] = "done"
        out.append(s)

    for s in by_name.values():
        visit(s, ())
    return out


def start_all(services: Iterable[Service], on_ready: Callable[[Service], None] | None = None) -> dict[str, int]:
    """Start services in dependency order, each ready before the next starts; `on_ready(svc)` runs
    after each (set-up that needs it, e.g. loading data into it). On any failure everything started
    here is stopped again, in reverse order. Returns the pids by name."""
    done: list[Service] = []
    pids: dict[str, int] = {}
    try:
        for svc in ordered(services):
            pids[svc.name] = up(svc)
            done.append(svc)
            if on_ready is not None:
                on_ready(svc)
    except BaseException:
        for svc in reversed(done):
            stop(svc.name, svc.directory, signal_=svc.stop_signal)
        raise
    return pids


def running(name: str, directory: Path) -> int | None:
    """The pid of the service NAME whose pid file is in `directory`, if that process still runs."""
    info = read_pid_file(directory / f"{name}.pid")
    if info is None:
        return None
    pid, marker, started = info
    return pid if pid_alive(pid, start=started, marker=marker or None) else None


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid`."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            rest = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if rest[0] not in ("Z", "X") and rest[2] == str(pgid):
            out.append(int(d.name))
    return out


def stop(name: str, directory: Path, timeout: float = 10.0, signal_: int = signal.SIGTERM) -> None:
    """Stop the service NAME of `directory` (by its pid file) and whatever its process group still
    runs; SIGKILL after `timeout`. Nothing happens if it does not run."""
    pid_file = directory / f"{name}.pid"
    info = read_pid_file(pid_file)
    if info is None:
        pid_file.unlink(missing_ok=True)
        return
    pid, marker, started = info
    # Only the process we started, not one that reuses its pid (after a reboot, say).
    if pid_alive(pid, start=started, marker=marker or None):
        _signal(pid, signal_)
        end = time.monotonic() + timeout
        while time.monotonic() < end and pid_alive(pid, start=started):
            time.sleep(POLL_S)
        if pid_alive(pid, start=started):
            _signal(pid, signal.SIGKILL)
        # A server's forked workers outlive their parent by their graceful shutdown.
        end = time.monotonic() + timeout
        while time.monotonic() < end and _group_members(pid):
            time.sleep(POLL_S)
        for member in _group_members(pid):
            _signal(member, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def stop_all(names: Iterable[str], directory: Path) -> None:
    """Stop several services of one directory, in the order given."""
    for name in names:
        stop(name, directory)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
