"""The laptops' evidence check: a laptop switched off during the nightly run is judged on stored
evidence (compliance.evidence), and that evidence must not be older than the site allows."""

from __future__ import annotations

from typing import Any

from compliance.canonical import canonical_ts
from compliance.checks.registry import Outcome, python_check
from compliance.facts import DeviceFacts, EvalContext


@python_check("evidence_fresh")
def _evidence_fresh(dev: DeviceFacts, params: dict[str, Any], ctx: EvalContext) -> Outcome:
    """lx-evidence-fresh: the laptop was judged on evidence no older than evidence_max_age_days."""
    limit = ctx.config.compliance.evidence_max_age_days
    if dev.evidence_at is None:
        if not dev.reachable:
            return "fail", f"never seen: no evidence collected ({dev.reason or 'did not answer'})"
        return "pass", "collected during this run"
    age_days = (ctx.now - dev.evidence_at).total_seconds() / 86400
    label = dev.evidence_label or f"evidence from {canonical_ts(dev.evidence_at)}"
    if age_days > limit:
        return "fail", f"stale: {label}, {age_days:.1f} days old (limit {limit:g} days)"
    return "pass", f"{label} ({age_days:.1f} days old, limit {limit:g})"
