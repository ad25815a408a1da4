"""What the checks read: the facts collected for one device (DeviceFacts), what else they may consult
(EvalContext), and how a fact is found by its dotted path (`lookup`; a missing one is MissingFact).

Facts are a nested dict per device (see collect_laptops / collect_ipads). Shared by the collectors,
the engine and the named Python checks (compliance.checks), so it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class DeviceFacts:
    """What collection found for one device: its facts, or why it could not be asked."""

    device: str
    fleet: str  # laptops | ipads
    facts: dict[str, Any] = field(default_factory=dict)
    reachable: bool = True
    reason: str = ""
    # The status every rule gets when the device could not be asked: unreachable, or error when
    # it answered but the collector failed on it.
    failure: str = "unreachable"
    # False for an iPad of the inventory that is not enrolled in the MDM: only the rules that judge
    # contact (when_unreachable) apply to it, so it is one finding, not one per rule.
    enrolled: bool = True
    school: str | None = None
    group: str | None = None
    name: str = ""
    last_seen: datetime | None = None
    # "fleet": not a device but the fleet's shared facts (compliance.collect_fleet); only rules of
    # scope "fleet" are evaluated on it, and only on it.
    scope: str = "device"
    # A laptop judged on stored evidence (it was off during the run): when that was collected,
    # the words the report shows ("evidence from 14:05 yesterday"), and the stored row.
    evidence_at: datetime | None = None
    evidence_label: str = ""
    evidence_ref: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.fleet == "laptops":
            # Only laptops have evidence with an age; the iPads' snapshot keeps its old shape.
            extra = {"evidence_at": self.evidence_at.isoformat() if self.evidence_at else None,
                     "evidence": self.evidence_label, "evidence_ref": self.evidence_ref}
        return {
            "fleet": self.fleet,
            "school": self.school,
            "group": self.group,
            "name": self.name or self.device,
            "reachable": self.reachable,
            "reason": self.reason,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            **extra,
        }


@dataclass
class EvalContext:
    """What checks may consult besides the facts: the site config, the clock, the MDM profile sets."""

    config: Any
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # device -> the set of profile identifiers its group must have (ipad.profiles.profile_set_for)
    profile_set_for: Callable[[DeviceFacts], set[str]] | None = None


class MissingFact(LookupError):
    """A fact the rule needs was not collected."""


def lookup(facts: Any, path: str) -> Any:
    """The value at a dotted path; keys containing dots (sysctl names) are matched longest first."""
    node = facts
    rest = path
    while rest:
        if not isinstance(node, dict):
            raise MissingFact(path)
        parts = rest.split(".")
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in node:
                node = node[key]
                rest = ".".join(parts[n:])
                break
        else:
            # A collector that failed for a whole section says why in its "error" key.
            why = node.get("error") or node.get("reason") if isinstance(node, dict) else None
            raise MissingFact(f"{path} ({why})" if why else path)
    return node


def need(facts: Any, path: str) -> Any:
    """The value at a dotted path that a check judges: like `lookup`, and a None there is no evidence
    either (a collector that keeps the key but was told nothing), so a check never passes on it."""
    value = lookup(facts, path)
    if value is None:
        raise MissingFact(path)
    return value


def age_s(value: Any, now: datetime) -> float | None:
    """Seconds from a fact's time (epoch seconds, a datetime or ISO text; naive means UTC) to `now`;
    None when the fact holds no time."""
    if value in (None, 0, "0", ""):
        return None
    if isinstance(value, int | float):
        ts = datetime.fromtimestamp(float(value), UTC)
    elif isinstance(value, datetime):
        ts = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        ts = datetime.fromisoformat(str(value))
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return (now - ts).total_seconds()
