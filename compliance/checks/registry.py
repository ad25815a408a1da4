"""The registry of named Python checks: a baseline rule's `check: {python: NAME, params: {...}}`
calls the function registered under NAME with the `python_check` decorator. Also the one outcome
more than one check gives: something that expires (`expiry_outcome`).

A check gets the device's facts, the rule's params and the evaluation context, and returns
(status, evidence). A missing fact raises compliance.facts.MissingFact, and bad facts may raise
ValueError, TypeError, KeyError or AttributeError: the engine turns each into an `error` result.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from compliance.facts import DeviceFacts, EvalContext

Outcome = tuple[str, str]  # (status, evidence)
PythonCheck = Callable[[DeviceFacts, dict[str, Any], EvalContext], Outcome]
# Check name -> function. Complete once compliance.checks (which imports every check module) is.
PYTHON_CHECKS: dict[str, PythonCheck] = {}


def python_check(name: str) -> Callable[[PythonCheck], PythonCheck]:
    """Register the decorated function as the check `name` (baselines name checks by it)."""

    def register(fn: PythonCheck) -> PythonCheck:
        if name in PYTHON_CHECKS:
            raise ValueError(f"python check {name!r} is registered twice")
        PYTHON_CHECKS[name] = fn
        return fn

    return register


def expiry_outcome(what: str, expires: datetime, now: datetime, min_days: float, expired: str,
                   renew: str) -> Outcome:
    """Something that expires (a certificate, a token): fail when it has expired (saying `expired`:
    what stops working) or expires within `min_days` (saying `renew`: what to do), else pass."""
    days = (expires - now).total_seconds() / 86400
    when = f"{what} expires {expires.astimezone(UTC):%Y-%m-%d}"
    if days <= 0:
        return "fail", f"{when}: expired, {expired}"
    if days < min_days:
        return "fail", f"{when}, in {days:.0f} days (limit {min_days}): {renew}"
    return "pass", f"{when}, in {days:.0f} days"
