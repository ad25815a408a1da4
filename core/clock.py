"""The wall clock of werne's timers (the lesson loop), with one seam for tests and drills.

`now()` is the current time in UTC; when the environment names a file in WERNE_CLOCK_FILE, it is
the time written there instead (ISO 8601 with a zone, e.g. 2026-12-07T10:00:00+01:00). The tests
use it to run a lesson "at 10:00" across a restart of the real `werne web serve`; nothing else reads
it. A missing or unreadable file is an error, never silently the real time.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from core.errors import InputError

CLOCK_ENV = "WERNE_CLOCK_FILE"


def now() -> datetime:
    path = os.environ.get(CLOCK_ENV)
    if not path:
        return datetime.now(UTC)
    try:
        with open(path, encoding="utf-8") as f:
            value = datetime.fromisoformat(f.read().strip())
    except (OSError, ValueError) as e:
        raise InputError(f"{CLOCK_ENV}: {path} does not hold a time ({e.__class__.__name__})") from None
    if value.tzinfo is None:
        raise InputError(f"{CLOCK_ENV}: {path}: the time has no zone")
    return value.astimezone(UTC)
