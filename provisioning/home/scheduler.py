"""Spreading the catch-up work: a laptop seen online becomes due after a random delay (jitter),
due laptops are taken in batches (one Ansible run each), and at most `concurrency` batches run at
once. Pure logic with an injected clock and random source, so tests check the spreading exactly.

Why batches: an Ansible run costs the controller about 2-3 CPU seconds to start plus ~0.2 s per
task and host; ten laptops in one run cost far less than ten runs of one. Why jitter: 70 laptops
switched on at 8 a.m. are seen within one poll, and without it the first batches would all start
in the same second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class CatchupScheduler:
    """Which laptops to work on now. `seen(host, now)` when a laptop needs a catch-up, `take(now)`
    for the next batch (or []), `finished(hosts)` when its batch ended."""

    concurrency: int
    batch: int
    jitter_s: float
    rng: random.Random = field(default_factory=random.Random)
    _ready_at: dict[str, datetime] = field(default_factory=dict)
    _running: set[str] = field(default_factory=set)
    _batches: int = 0

    def seen(self, host: str, now: datetime) -> None:
        """A laptop that needs work: due after its jitter (a host already waiting keeps its time)."""
        if host in self._running or host in self._ready_at:
            return
        self._ready_at[host] = now + timedelta(seconds=self.rng.uniform(0, self.jitter_s))

    def forget(self, host: str) -> None:
        """It went offline (or needs nothing any more) before its turn."""
        self._ready_at.pop(host, None)

    def waiting(self) -> list[str]:
        return sorted(self._ready_at)

    @property
    def running_batches(self) -> int:
        return self._batches

    def take(self, now: datetime) -> list[str]:
        """The next batch of due laptops (earliest first), if a slot is free; else []."""
        if self._batches >= self.concurrency:
            return []
        due = sorted((t, h) for h, t in self._ready_at.items() if t <= now)[: self.batch]
        hosts = [h for _, h in due]
        if not hosts:
            return []
        for h in hosts:
            del self._ready_at[h]
            self._running.add(h)
        self._batches += 1
        return hosts

    def finished(self, hosts: list[str]) -> None:
        for h in hosts:
            self._running.discard(h)
        self._batches = max(0, self._batches - 1)

    def next_due(self) -> datetime | None:
        return min(self._ready_at.values(), default=None)
