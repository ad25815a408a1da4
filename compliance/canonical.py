"""The canonical form of a timestamp in the hash chains of runs (compliance.history) and of laptop
evidence (compliance.evidence): both hash exactly this text, so it must never change."""

from __future__ import annotations

from datetime import UTC, datetime


def canonical_ts(dt: datetime) -> str:
    """UTC with microseconds and a "Z"; a naive time (SQLite hands them back without a zone) is UTC."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def optional_ts(dt: datetime | None) -> str | None:
    """`canonical_ts`, with None for no time (a run that has not finished)."""
    return None if dt is None else canonical_ts(dt)
