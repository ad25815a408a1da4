"""Evaluate baseline rules against collected facts: declarative comparisons and named Python checks.

A declarative check names a fact by dotted path (keys that themselves contain dots, such as sysctl
names, are matched greedily; compliance.facts.lookup), an operator and an expected value;
`expected: {config: "vpn.key_max_age_days"}` takes the value from the site config. A named check
is a function of compliance.checks. A missing fact is an `error` ("no evidence"), never a silent pass.
"""

from __future__ import annotations

import re
from typing import Any

from compliance.checks import PYTHON_CHECKS
from compliance.facts import DeviceFacts, EvalContext, MissingFact, lookup
from compliance.results import RuleResult, clip_evidence, short
from compliance.rules import FactCheck, Rule


def resolve_expected(expected: Any, ctx: EvalContext) -> Any:
    if isinstance(expected, dict) and set(expected) == {"config"}:
        node: Any = ctx.config
        for part in str(expected["config"]).split("."):
            node = getattr(node, part)
        return node
    return expected


def _version(v: Any) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(v))[:4]) or (0,)


def _num(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    return float(str(v).strip())


def _norm(v: Any) -> Any:
    """Compare config words case-insensitively (sshd -T prints lower case, files may not)."""
    return v.strip().lower() if isinstance(v, str) else v


def compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "exists":
        return actual is not None
    if op == "absent":
        return actual is None
    if op == "true":
        return actual is True
    if op == "false":
        return actual is False
    if op == "empty":
        return not actual
    if op == "nonempty":
        return bool(actual)
    if op == "eq":
        return _norm(actual) == _norm(expected) or (
            not isinstance(actual, bool | list | dict) and str(_norm(actual)) == str(_norm(expected))
        )
    if op == "ne":
        return not compare(actual, "eq", expected)
    if op == "in":
        return any(compare(actual, "eq", e) for e in expected)
    if op == "not_in":
        return not compare(actual, "in", expected)
    if op in ("ge", "gt", "le", "lt"):
        a, e = _num(actual), _num(expected)
        return {"ge": a >= e, "gt": a > e, "le": a <= e, "lt": a < e}[op]
    if op == "version_ge":
        return _version(actual) >= _version(expected)
    if op == "version_lt":
        return _version(actual) < _version(expected)
    items = actual if isinstance(actual, list | tuple | set) else [actual]
    norm = {str(_norm(i)) for i in items}
    if op == "contains":
        return str(_norm(expected)) in norm
    if op == "not_contains":
        return str(_norm(expected)) not in norm
    if op == "subset":
        return norm <= {str(_norm(e)) for e in expected}
    if op == "superset":
        return norm >= {str(_norm(e)) for e in expected}
    if op == "matches":
        return re.fullmatch(str(expected), str(actual)) is not None
    raise ValueError(f"unknown operator {op}")


def evaluate_fact_check(facts: dict[str, Any], fc: FactCheck, ctx: EvalContext) -> tuple[bool, str]:
    """(passed, evidence) for one comparison; raises MissingFact."""
    expected = resolve_expected(fc.expected, ctx)
    try:
        actual = lookup(facts, fc.fact)
    except MissingFact:
        if fc.op == "absent":
            return True, f"{fc.fact} absent"
        raise
    ok = compare(actual, fc.op, expected)
    exp = "" if fc.expected is None else f" (want {fc.op} {short(expected, 60)})"
    return ok, f"{fc.fact}={short(actual)}" + ("" if ok else exp)


def _comparisons(rule: Rule, facts: dict[str, Any], ctx: EvalContext) -> tuple[str, str]:
    """A declarative check: pass with every comparison's evidence, or fail on the first that fails."""
    notes = []
    for fc in rule.check.comparisons():
        ok, ev = evaluate_fact_check(facts, fc, ctx)
        if not ok:
            return "fail", ev
        notes.append(ev)
    return "pass", "; ".join(notes)


def evaluate_rule(rule: Rule, dev: DeviceFacts, ctx: EvalContext) -> RuleResult:
    """One rule on one device. Never raises for bad or missing facts: that is an `error` result."""
    if not dev.reachable and not rule.when_unreachable:
        return RuleResult(dev.device, rule.id, dev.failure, clip_evidence(dev.reason or "did not answer"))
    try:
        if rule.check.python:
            status, evidence = PYTHON_CHECKS[rule.check.python](dev, dict(rule.check.params), ctx)
        else:
            status, evidence = _comparisons(rule, dev.facts, ctx)
    except MissingFact as e:
        # No evidence: never a pass; an error, so the report lists it as a finding.
        status, evidence = "error", f"no evidence: fact {e.args[0]} not collected"
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        status, evidence = "error", f"{e.__class__.__name__}: {e}"
    return RuleResult(dev.device, rule.id, status, clip_evidence(evidence))


def _applies(rule: Rule, dev: DeviceFacts) -> bool:
    """Rules of a scope apply to the devices of that scope; a rule with a `requires_fact` param only
    to those whose facts carry that key (a fleet fact such as the push certificate or one Apps and
    Books token; a per-device fact collected only where the site uses the feature, e.g. escrow). A
    device that is not enrolled gets only the rules that judge contact: one finding, not one a rule."""
    if rule.scope != dev.scope or (not dev.enrolled and not rule.when_unreachable):
        return False
    fact = rule.check.params.get("requires_fact")
    return fact is None or fact in dev.facts


def evaluate(rules: list[Rule], devices: list[DeviceFacts], ctx: EvalContext) -> list[RuleResult]:
    return [evaluate_rule(r, d, ctx) for d in devices for r in rules if _applies(r, d)]
