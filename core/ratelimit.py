"""A rate limit per client in memory: a token bucket for each key (a client address), in a table of
bounded size, so neither a flood from one address nor one from many can grow it without end.

Each key may make `burst` requests at once and then `per_second` more each second. When the table
holds `max_keys`, the key used longest ago is forgotten first (it starts again with a full bucket,
which favours nobody an attacker could pick). Thread-safe: the web app calls it from its threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """Token buckets per key; `allow(key)` takes one token or says no."""

    def __init__(self, burst: int, per_second: float, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if burst < 1 or per_second <= 0 or max_keys < 1:
            raise ValueError("burst and max_keys must be at least 1, per_second above 0")
        self.burst = burst
        self.per_second = per_second
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Take a token for `key`: True if there was one (go on), False if not (refuse)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return allowed

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)
