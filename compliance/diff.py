"""What changed between two stored runs: newly failing first, then fixed, then still failing."""

from __future__ import annotations

from dataclasses import dataclass, field

from compliance.history import StoredRun, load_run
from compliance.results import FINDING_STATUSES
from core.db import Database


@dataclass
class Change:
    """One device+rule whose status is compared across two runs."""

    device: str
    rule_id: str
    before: str | None
    after: str | None
    evidence: str = ""

    def as_dict(self) -> dict[str, str | None]:
        return {
            "device": self.device,
            "rule": self.rule_id,
            "before": self.before,
            "after": self.after,
            "evidence": self.evidence,
        }


@dataclass
class RunDiff:
    """The difference between run A (older) and run B (newer)."""

    run_a: int | None
    run_b: int
    newly_failing: list[Change] = field(default_factory=list)
    fixed: list[Change] = field(default_factory=list)
    still_failing: list[Change] = field(default_factory=list)
    # Other status changes: waived, not applicable, devices or rules added or removed.
    changed: list[Change] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.newly_failing or self.fixed or self.changed)


def _failing(status: str | None) -> bool:
    return status in FINDING_STATUSES


def diff_runs(a: StoredRun | None, b: StoredRun) -> RunDiff:
    """Compare two runs; with no older run every finding of B is newly failing."""
    out = RunDiff(run_a=a.id if a else None, run_b=b.id)
    before = a.results if a else {}
    for key in sorted(set(before) | set(b.results)):
        old = before.get(key)
        new = b.results.get(key)
        s_old, s_new = (old.status if old else None), (new.status if new else None)
        latest = new or old
        ch = Change(key[0], key[1], s_old, s_new, latest.evidence if latest is not None else "")
        if _failing(s_new) and not _failing(s_old):
            out.newly_failing.append(ch)
        elif _failing(s_old) and _failing(s_new):
            out.still_failing.append(ch)
        elif _failing(s_old) and s_new in ("pass", "not_applicable"):
            out.fixed.append(ch)
        elif s_old != s_new and a is not None:
            out.changed.append(ch)
    return out


def diff_stored(db: Database, run_a: int, run_b: int) -> RunDiff:
    """`werne compliance diff RUN_A RUN_B`: both must be complete runs."""
    return diff_runs(load_run(db, run_a), load_run(db, run_b))
