"""The web filter per group: built from profiles/webfilter.yaml with each group's lists (schema-valid),
and the rule ios-webfilter-installed: the iPad holds exactly its group's filter, by PayloadUUID."""

from __future__ import annotations

from compliance.checks import PYTHON_CHECKS
from compliance.collect_ipads import webfilter_expectations
from compliance.engine import evaluate
from compliance.facts import DeviceFacts, EvalContext
from compliance.rules import load_baselines
from core.config import Config
from ipad.payloads import mdm_schema, profiles


def _rule():
    return next(r for b in load_baselines().baselines for r in b.rules if r.id == "ios-webfilter-installed")


def test_each_group_gets_its_own_lists() -> None:
    cfg = Config()
    want = webfilter_expectations(cfg)
    assert set(want) == {"pupil", "shared"}  # teachers' iPads have no filter
    assert want["pupil"]["uuid"] != want["shared"]["uuid"]
    spec = profiles.load_profile_spec("webfilter")
    shared = profiles.build_profile(spec, cfg, "Stadt Werne", "de.werne.ipad", profiles.DeviceContext("", "shared"))
    payload = shared.content["PayloadContent"][0]
    assert payload["AutoFilterEnabled"] is True and "https://www.youtube.com" in payload["DenyListURLs"]
    assert mdm_schema.validate_profile(shared.to_bytes(), "iOS") == []


def test_the_rule_passes_only_on_the_groups_own_filter() -> None:
    cfg = Config()
    want = webfilter_expectations(cfg)
    rule = _rule()
    assert "ipad_webfilter_installed" in PYTHON_CHECKS

    def dev(serial: str, group: str, installed: dict[str, str]) -> DeviceFacts:
        facts = {"profiles": {"identifiers": sorted(installed), "uuids": installed}}
        if group in want:
            facts["webfilter"] = want[group]
        return DeviceFacts(serial, "ipads", facts, school="gs-demo", group=group)

    ident = want["pupil"]["identifier"]
    devices = [dev("P1", "pupil", {ident: want["pupil"]["uuid"]}),
               dev("P2", "pupil", {ident: want["shared"]["uuid"]}),   # the shared group's lists
               dev("P3", "pupil", {}),                                  # no filter at all
               dev("T1", "teacher", {})]                                # not checked
    results = {r.device: r for r in evaluate([rule], devices, EvalContext(config=cfg))}
    assert {k: v.status for k, v in results.items()} == {"P1": "pass", "P2": "fail", "P3": "fail"}
    assert "other lists" in results["P2"].evidence and "not installed" in results["P3"].evidence
