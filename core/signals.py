"""Stopping promptly and cleanly on SIGINT, SIGTERM and SIGHUP.

SIGTERM (what systemd sends) and SIGHUP (the terminal went away) would otherwise kill the process
on the spot: no `Error:` line, the run left `running`, the lock left behind. `termination_handlers`
turns them into `Terminated`, a KeyboardInterrupt, so every cleanup path written for Ctrl-C (the
run marked interrupted, the lock released, the audit line) runs for them too. The exit code is
128 + the signal's number, as a shell reports a process killed by it: 130 SIGINT, 143 SIGTERM,
129 SIGHUP (README, "Exit codes").

`start_daemon` runs work the main thread waits on in a daemon thread: when an interrupt arrives
while that work hangs in a network call, the process can end at once; a thread pool's worker would
be waited for at interpreter exit, for as long as the call takes to time out.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The process got a terminating signal (SIGTERM, SIGHUP); handled like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def exit_code_for(exc: BaseException) -> int:
    """128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)


def signal_name(exc: BaseException) -> str:
    return signal.Signals(exc.signum).name if isinstance(exc, Terminated) else "SIGINT"


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise Terminated(signum)


@contextmanager
def termination_handlers() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated in the main thread while the block runs; the previous
    handlers come back afterwards. Outside the main thread (where Python cannot set handlers) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_terminated) for s in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def default_termination() -> None:
    """Give SIGTERM and SIGHUP back their default action, for servers whose framework (uvicorn)
    handles them itself and stops cleanly."""
    if threading.current_thread() is threading.main_thread():
        for s in TERMINATING_SIGNALS:
            signal.signal(s, signal.SIG_DFL)


def start_daemon(fn: Callable[..., T], *args: Any, name: str = "werne-worker", **kwargs: Any) -> Future[T]:
    """Run `fn(*args, **kwargs)` in a daemon thread; its result or exception lands in the Future."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(e)
        else:
            future.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
