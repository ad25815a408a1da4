"""Gathering the catch-ups' provisioning runs: while one run holds the provisioning lock, the
laptops whose batches come to provision wait, and the next run takes all of them together, instead
of one run per batch behind each other (70 laptops switched on at 8 a.m. whose batches all carry a
queued run become one run, then one more for those that came in while it ran).

Each batch hands its items to `Gatherer.run` and waits. Whoever holds the run lock next takes every
item waiting at that moment (its own and other batches'), runs them in one call, and leaves each
item's outcome for the batch that brought it; a batch whose items were taken by another run returns
their outcomes without running anything itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class Gatherer(Generic[Item, Outcome]):
    """One run at a time; items that wait meanwhile go into the next run together."""

    def __init__(self, key: Callable[[Item], int]):
        self.key = key
        self._run_lock = threading.Lock()
        self._lock = threading.Lock()
        self._waiting: dict[int, Item] = {}
        self._done: dict[int, Outcome] = {}
        # How many items each run took (for the tests and the audit trail).
        self.runs: list[int] = []

    def waiting(self) -> int:
        """How many items wait for the next run."""
        with self._lock:
            return len(self._waiting)

    def run(self, items: list[Item], run: Callable[[list[Item]], dict[int, Outcome]]) -> dict[int, Outcome]:
        """Outcomes of `items` (by key), from whichever run took them. `run` gets the gathered
        items and returns an outcome for each key; if it raises, the exception goes to the batch
        whose thread ran it, and the other batches' items taken with it get that exception too."""
        mine = [self.key(i) for i in items]
        with self._lock:
            for i in items:
                self._waiting[self.key(i)] = i
        with self._run_lock:
            with self._lock:
                take = list(self._waiting.values())
                self._waiting.clear()
            if take:
                self.runs.append(len(take))
                try:
                    outcomes = run(take)
                except BaseException as e:
                    with self._lock:
                        for i in take:
                            self._done[self.key(i)] = e  # type: ignore[assignment]
                else:
                    with self._lock:
                        self._done.update(outcomes)
        with self._lock:
            got = {k: self._done.pop(k) for k in mine if k in self._done}
        for v in got.values():
            if isinstance(v, BaseException):
                raise v
        return got
