"""What a rule's evaluation gives: its status (and which statuses are findings), the RuleResult of
one rule on one device, and how evidence text is kept short."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.text import truncate

STATUSES: tuple[str, ...] = ("pass", "fail", "error", "not_applicable", "unreachable", "waived")
# What counts as a finding (exit code 1, "failing" in reports and diffs).
FINDING_STATUSES = frozenset({"fail", "error", "unreachable"})
# The longest evidence a result stores.
EVIDENCE_MAX = 240


@dataclass
class RuleResult:
    """The outcome of one rule on one device, with short evidence."""

    device: str
    rule_id: str
    status: str
    evidence: str = ""
    waiver: str | None = None


def clip_evidence(text: str) -> str:
    """Evidence as stored: one line (each run of whitespace one space), at most EVIDENCE_MAX characters."""
    return truncate(" ".join(text.split()), EVIDENCE_MAX)


def short(value: Any, limit: int = 80) -> str:
    """A fact's value for evidence text: a list comma-separated, cut to `limit` characters."""
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return truncate(text, limit)
