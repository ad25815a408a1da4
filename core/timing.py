"""Where a job's time goes: wall and CPU time per named step, recorded from any thread.

`StepTimes.step(name)` times a block: its wall time (time.perf_counter) and the CPU time of the
thread that runs it (time.thread_time), so two steps that run side by side in two threads each
get their own CPU. Work whose CPU is not this thread's is added with `add`, which says whose CPU
it is (`cpu_of`): "thread" (the thread that ran the step), "threads" (worker threads, summed),
"children" (child processes reaped during the step, e.g. ansible-playbook and its forks),
"hosts" (what the managed hosts measured themselves), or "" (not measured). Each step also keeps
when it started and ended, as seconds from the recorder's start, so overlapping steps show. A
step recorded again adds up (wall, CPU, count) and widens its span.

`timed(times, name)` is `times.step(name)`, or nothing when there is no recorder (library
functions take `times: StepTimes | None = None`).
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def children_cpu_s() -> float:
    """User + system CPU of this process's reaped child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def process_cpu_s() -> float:
    """User + system CPU of this process (all its threads) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class StepTime:
    """One step: wall and CPU seconds, whose CPU that is, how often it ran, and when (offsets)."""

    name: str
    wall_s: float = 0.0
    cpu_s: float | None = 0.0
    cpu_of: str = "thread"
    count: int = 0
    start_s: float | None = None
    end_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wall_s": round(self.wall_s, 4),
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 4),
            "cpu_of": self.cpu_of,
            "count": self.count,
            "start_s": None if self.start_s is None else round(self.start_s, 4),
            "end_s": None if self.end_s is None else round(self.end_s, 4),
            "detail": self.detail,
        }


class StepTimes:
    """The steps of one job, thread-safe."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.wall0 = time.time()  # the same instant on the wall clock (for times stored elsewhere)
        self._steps: dict[str, StepTime] = {}
        self._lock = threading.Lock()

    @contextmanager
    def step(self, name: str, children: bool = False) -> Iterator[dict[str, Any]]:
        """Time the block in this thread; `children`: add the CPU of child processes reaped
        meanwhile (the step then says "thread+children"). Yields the step's detail dict."""
        detail: dict[str, Any] = {}
        w0, c0 = time.perf_counter(), time.thread_time()
        k0 = children_cpu_s() if children else 0.0
        try:
            yield detail
        finally:
            w1 = time.perf_counter()
            cpu = time.thread_time() - c0 + ((children_cpu_s() - k0) if children else 0.0)
            self.add(name, w1 - w0, cpu, "thread+children" if children else "thread",
                     start=w0 - self.t0, end=w1 - self.t0, **detail)

    def add(self, name: str, wall_s: float, cpu_s: float | None, cpu_of: str = "thread",
            start: float | None = None, end: float | None = None, count: int = 1, **detail: Any) -> None:
        """Record (or add to) a step measured elsewhere."""
        with self._lock:
            st = self._steps.get(name)
            if st is None:
                st = self._steps[name] = StepTime(name, cpu_s=None if cpu_s is None else 0.0, cpu_of=cpu_of)
            st.wall_s += wall_s
            if cpu_s is not None:
                st.cpu_s = (st.cpu_s or 0.0) + cpu_s
            st.count += count
            if start is not None:
                st.start_s = start if st.start_s is None else min(st.start_s, start)
            if end is not None:
                st.end_s = end if st.end_s is None else max(st.end_s, end)
            for k, v in detail.items():
                st.detail[k] = st.detail.get(k, 0) + v if isinstance(v, int | float) and k in st.detail else v

    def now(self) -> float:
        """Seconds since the recorder started (for `add`'s start and end)."""
        return time.perf_counter() - self.t0

    def offset(self, at: datetime) -> float:
        """A wall-clock time (e.g. a row's timestamp written by another process) as seconds from
        the recorder's start."""
        return at.timestamp() - self.wall0

    def get(self, name: str) -> StepTime | None:
        with self._lock:
            return self._steps.get(name)

    def steps(self) -> list[StepTime]:
        with self._lock:
            return list(self._steps.values())


def timed(times: StepTimes | None, name: str, children: bool = False) -> Any:
    """`times.step(name)`, or a no-op context (yielding a throwaway dict) without a recorder."""
    return times.step(name, children) if times is not None else nullcontext({})
