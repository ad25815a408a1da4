"""Declarative device management through the real chain: `werne ipad update` puts the enforcement
into KMFDDM, KMFDDM enqueues DeclarativeManagement through NanoMDM, the simulated iPads fetch tokens,
declaration items and declarations through NanoMDM's check-in endpoint (forwarded to KMFDDM with
-dm), apply them and send status reports; at the deadline (on the clock the test moves) they update,
and the one whose model cannot take the version reports why. werne reads the status back from
KMFDDM and the nightly run uses it instead of queries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.ipad.ddm_world import SCHOOLS, DDMWorld

pytestmark = [pytest.mark.mdm, pytest.mark.kmfddm, pytest.mark.slow]

TARGET = "18.3"


def _deadline_local(days: int = 3) -> str:
    from datetime import UTC, datetime

    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%d 18:00")


def test_an_update_for_one_school_reaches_its_ipads_and_their_status_comes_back(ddm_world: DDMWorld) -> None:
    from ipad.ddm.status import read_ddm_status
    from ipad.ddm.update import update

    w = ddm_world
    school, other = SCHOOLS
    ctx = w.context()
    report = update(ctx, TARGET, _deadline_local(), school=school)
    assert report.counts() == {"update": len(w.serials[school])}
    ours = [w.device(s) for s in w.serials[school]]
    theirs = [w.device(s) for s in w.serials[other]]
    # KMFDDM notified NanoMDM, NanoMDM handed out DeclarativeManagement, the iPads synchronised and
    # reported: the enforcement is active and valid on each, the update pending.
    w.wait("the school's iPads to report the pending update", lambda: all(
        d.ddm.reported.get("softwareupdate.pending-version", {}).get("os-version") == TARGET for d in ours))
    assert all(not d.ddm.declarations for d in theirs)  # the other school got nothing
    ids = {s: ctx.registry.devices_by_serial()[s].enrollment_id for s in w.serials[school]}
    status = read_ddm_status(w.kmfddm(), ids.values())
    assert set(status) == set(ids.values())
    for s, eid in ids.items():
        facts = status[eid].to_facts()
        assert facts["pending_version"] == TARGET and facts["os_version"] == "17.6.1"
        enforcement = [x for x in facts["declarations"] if (x["identifier"] or "").startswith("de.werne.ddm.update.")]
        assert enforcement and enforcement[0]["active"] is True and enforcement[0]["valid"] == "valid", (s, facts)

    # The deadline passes on the iPads' clock: they install; the old model cannot and says why.
    w.clock.offset = timedelta(days=4)
    w.wait("the update or its failure to be reported", lambda: all(
        d.ddm.reported.get("device.operating-system.version") == TARGET
        or (d.ddm.reported.get("softwareupdate.failure-reason") or {}).get("count") for d in ours))
    status = read_ddm_status(w.kmfddm(), ids.values())
    for s, eid in ids.items():
        facts = status[eid].to_facts()
        if s == w.old_model:
            assert facts["os_version"] == "17.6.1" and facts["install_state"] == "failed"
            assert facts["failure_reason"] == "iPadOS 18.3 is not available for iPad6,11"
        else:
            assert facts["os_version"] == TARGET and facts["install_state"] == "none", facts
            assert facts["build"] and facts["pending_version"] is None


def test_the_nightly_takes_ddm_status_and_asks_fewer_queries(ddm_world: DDMWorld) -> None:
    """After the update test: the first nightly queries everything once (supervision and encryption
    are never reported through DDM); the next one asks the DDM-reporting iPads only ProfileList,
    Restrictions and CertificateList, takes OS and passcode from their status, and the rules show the
    failed update with its reason."""
    from collections import Counter

    from sqlalchemy import select

    from compliance.collect_ipads import collect_ipads
    from compliance.engine import evaluate
    from compliance.facts import EvalContext
    from compliance.rules import load_baselines
    from ipad.models import MDMCommand

    w = ddm_world
    school, other = SCHOOLS
    ctx = w.context()

    def uuids() -> set[str]:
        with w.db.session() as s:
            return {r.command_uuid for r in s.scalars(select(MDMCommand))}

    collect_ipads(ctx.config, ctx.inventory, w.db)  # the first night: static facts for everyone
    before = uuids()
    facts = {f.device: f for f in collect_ipads(ctx.config, ctx.inventory, w.db)}
    per_device: Counter = Counter()
    with w.db.session() as s:
        for r in s.scalars(select(MDMCommand)):
            if r.command_uuid not in before:
                per_device[r.request_type] += 1
    n_ddm, n_other = len(w.serials[school]), len(w.serials[other])
    # No ManagedApplicationList: this site has no apps.locations, so no app rule could use it (issue 27).
    assert per_device == {"DeviceInformation": n_other, "SecurityInfo": n_other, "ProfileList": n_ddm + n_other,
                          "Restrictions": n_ddm + n_other, "CertificateList": n_ddm + n_other}, per_device
    for s in w.serials[school]:
        f = facts[s]
        assert f.reachable and "ddm" in f.facts, (s, f.reason)
        want = "17.6.1" if s == w.old_model else "18.3"
        assert f.facts["device"]["os_version"] == want and f.facts["security"]["passcode_present"] is True
    for s in w.serials[other]:
        assert "ddm" not in facts[s].facts and facts[s].facts["device"]["os_version"] == "17.6.1"
    rules = [r for b in load_baselines().baselines for r in b.rules if r.id == "ios-os-update-installs"]
    results = {r.device: r for r in evaluate(rules, list(facts.values()), EvalContext(ctx.config))}
    assert results[w.old_model].status == "fail"
    assert results[w.old_model].evidence == ("update to 18.3 failed 1x: iPadOS 18.3 is not available for iPad6,11 "
                                             "(install state failed)")
    assert {results[s].status for s in w.serials[school] if s != w.old_model} == {"pass"}
    assert all(s not in results for s in w.serials[other])  # no DDM status: the rule does not apply


def test_group_sets_apply_a_moved_ipad_changes_set_and_an_unknown_type_is_rejected(ddm_world: DDMWorld) -> None:
    from ipad.ddm.group_sets import apply_group_sets, map_enrolment
    from ipad.ddm.status import read_ddm_status
    from ipad.payloads.declarations import Declaration, build_activation, load_declaration_groups

    w = ddm_world
    school, other = SCHOOLS
    ctx = w.context()
    report = apply_group_sets(ctx)
    assert sorted(report.sets) == [f"werne-{school}-pupil", f"werne-{other}-pupil"]
    assert len(report.mapped) == len(w.serials[school]) + len(w.serials[other])
    w.wait("every iPad to apply its group's passcode declaration", lambda: all(
        any(i.endswith(".passcode") and st.get("active") for i, st in w.device(s).ddm.declaration_status.items())
        for sc in SCHOOLS for s in w.serials[sc]))
    client = w.kmfddm()
    moved = w.serials[other][0]
    eid = ctx.registry.devices_by_serial()[moved].enrollment_id
    assert map_enrolment(client, eid, school, "pupil") is True  # moved to the other school
    assert client.enrollment_sets(eid) == [f"werne-{school}-pupil"]

    # A declaration type the iPad does not understand: rejected, with the reason, in the report.
    unknown = Declaration("test", "com.apple.configuration.screensharing.host.settings",
                          "de.werne.ddm.test.screensharing", "t1", {"PortNumber": 5900})
    groups = load_declaration_groups()
    activation = build_activation(groups, "werne-test-unknown", [unknown])
    for d in (unknown, activation):
        client.put_declaration(d.to_dict(), notify=False)
        client.add_to_set("werne-test-unknown", d.identifier, notify=False)
    client.map_enrollment(eid, "werne-test-unknown")
    w.wait("the rejection to be reported", lambda: w.device(moved).ddm.declaration_status.get(
        "de.werne.ddm.test.screensharing", {}).get("valid") == "invalid")
    decls = {d["identifier"]: d for d in read_ddm_status(client, [eid])[eid].to_facts()["declarations"]}
    bad = decls["de.werne.ddm.test.screensharing"]
    assert (bad["active"], bad["valid"]) == (False, "invalid")
    assert bad["reasons"].startswith("Error.UnknownDeclarationType: The declaration type "
                                     "com.apple.configuration.screensharing.host.settings is not supported")
