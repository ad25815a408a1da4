"""Issue 22: no rule ever returns "pass" without the fact it judges. A pass is a statement in an
audit document; without the fact behind it, the result must be "no evidence" (status error, the
evidence saying what was not collected), never "pass".

Every rule of every baseline is evaluated on a device whose facts are gone (only the section that
makes the rule apply, empty), and on a device whose facts each rule read were removed, leaf by leaf,
from a complete compliant set: neither may pass."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from compliance.engine import evaluate_rule
from compliance.facts import DeviceFacts, EvalContext
from compliance.rules import Rule, load_baselines
from core.config import Config
from tests.fixtures.compliance import NOW, PUPIL_SET, ipad_facts, laptop_facts

# Rules that judge the device's record, not its facts: when the MDM last saw the iPad (a device the
# MDM never saw fails), and how old the laptop's evidence is (the facts of this run are fresh).
RECORD_RULES = {"ios-in-contact": "DeviceFacts.last_seen", "tv-in-contact": "DeviceFacts.last_seen",
                "lx-evidence-fresh": "DeviceFacts.evidence_at"}
RULES = [r for b in load_baselines().baselines for r in b.rules if r.id not in RECORD_RULES]
CTX = EvalContext(config=Config(), now=NOW, profile_set_for=lambda d: set(PUPIL_SET))

# What an iPad that reports through declarative management said: its OS, no update pending, every
# declaration valid (the complete facts the DDM rules judge).
DDM = {
    "reported_at": NOW.isoformat(), "model": "iPad13,18", "os_version": "18.1", "build": "22B83",
    "install_state": "none", "pending_version": None, "failure_count": 0, "failure_reason": None,
    "declarations": [{"identifier": "werne-status", "active": True, "valid": "valid", "current": True,
                      "reasons": ""}],
    "errors": [],
}


LAPTOP_RULES = load_baselines().for_fleet("laptops")


def device_for(rule: Rule, facts: dict[str, Any]) -> DeviceFacts:
    fleet = "laptops" if rule in LAPTOP_RULES else "ipads"
    return DeviceFacts("dev1", fleet, facts, scope=rule.scope, school="gs-demo", group="pupil", name="dev1")


def empty_facts(rule: Rule) -> dict[str, Any]:
    """No facts at all, but the section whose presence makes the rule apply (empty)."""
    fact = rule.check.params.get("requires_fact")
    return {fact: {}} if fact else {}


@pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
def test_no_rule_passes_on_a_device_without_facts(rule: Rule) -> None:
    result = evaluate_rule(rule, device_for(rule, empty_facts(rule)), CTX)
    assert result.status != "pass", f"{rule.id} passed without facts: {result.evidence}"
    if result.status == "error" and "Error" not in result.evidence:
        assert result.evidence.startswith("no evidence: fact "), result.evidence


def test_the_record_rules_exist_and_judge_the_record() -> None:
    """The rules left out above are real rules, and they do not pass without their record either."""
    by_id = {r.id: r for b in load_baselines().baselines for r in b.rules}
    assert set(RECORD_RULES) <= set(by_id)
    never_seen = DeviceFacts("dev1", "ipads", ipad_facts(), last_seen=None)
    assert evaluate_rule(by_id["ios-in-contact"], never_seen, CTX).status == "fail"


class Reading(dict[str, Any]):
    """A facts dict that notes every key path a check reads (nested dicts are Readings too)."""

    def __init__(self, data: dict[str, Any], read: set[tuple[str, ...]], at: tuple[str, ...] = ()):
        super().__init__({k: Reading(v, read, (*at, k)) if isinstance(v, dict) else v for k, v in data.items()})
        self.read, self.at = read, at

    def _note(self, key: Any) -> None:
        self.read.add((*self.at, str(key)))

    def __getitem__(self, key: Any) -> Any:
        self._note(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._note(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return super().__contains__(key)


def complete_ipad() -> dict[str, Any]:
    return {**ipad_facts(), "ddm": copy.deepcopy(DDM)}


DDM_RULES = [r for r in RULES if r.check.params.get("requires_fact") == "ddm"]
JUDGED = [r for r in RULES if r.scope == "device" and not r.check.params.get("requires_fact")] + DDM_RULES


@pytest.mark.parametrize("rule", JUDGED, ids=[r.id for r in JUDGED])
def test_no_rule_passes_once_the_facts_it_read_are_removed(rule: Rule) -> None:
    """Evaluated on complete facts, each rule reads some of them; with exactly those removed (the
    leaves: the sections stay, as when one query of a collector found nothing), it must not pass."""
    base = laptop_facts() if rule in LAPTOP_RULES else complete_ipad()
    read: set[tuple[str, ...]] = set()
    evaluate_rule(rule, device_for(rule, Reading(base, read)), CTX)
    assert read, f"{rule.id} read no fact at all"
    stripped = copy.deepcopy(base)
    for path in sorted(read, key=len, reverse=True):
        node: Any = stripped
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and not isinstance(node.get(path[-1]), dict):
            node.pop(path[-1], None)
    result = evaluate_rule(rule, device_for(rule, stripped), CTX)
    assert result.status != "pass", f"{rule.id} passed with the facts it read removed: {result.evidence}"
