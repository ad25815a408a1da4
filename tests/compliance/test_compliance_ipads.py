"""The iPad fleet through real NanoMDM, the real webhook receiver and simulated iPads: the query
sweep with a deadline, a simulated iPad without a passcode fails, an offline iPad is unreachable
with its last-seen time and, N days later, out of contact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from compliance.history import load_run
from compliance.run import run_compliance
from tests.fixtures.mdm import werne_sees_enrolled

pytestmark = pytest.mark.mdm


@pytest.mark.slow  # ~15 s: waits for simulated iPads to enrol and to fall out of contact
def test_ipad_sweep_passcode_offline_and_out_of_contact(ipad_world):
    from ipad.actions.configure import configure
    from ipad.dispatch import IPadContext
    from ipad.store.registry import Registry

    w = ipad_world
    assert w.sim.wait_enrolled(60)
    # The webhook receiver commits in small batches: wait until the registry has every enrolment.
    assert werne_sees_enrolled(Registry(w.db), w.serials, 30), "the registry did not record every enrolment"
    cfg, inv = w.config(), w.inventory()
    # The city's profiles on every iPad, as `werne ipad configure` does it.
    report = configure(IPadContext(cfg, w.db, inv, actor="pytest"))
    assert report.failed == [], [d.summary() for d in report.devices]
    no_passcode, offline = w.serials[0], w.serials[1]
    w.sim.by_serial[no_passcode].passcode_present = False
    w.take_offline(offline)

    summary = run_compliance(cfg, w.db, inv, ("ipads",))
    run = load_run(w.db, summary.run_id)
    bad = {(d, r): res.status for (d, r), res in run.results.items() if res.status != "pass"}
    assert bad == {
        (no_passcode, "ios-passcode"): "fail",
        **{
            (offline, r): "unreachable"
            for r in (
                "ios-supervised",
                "ios-passcode",
                "ios-hardware-encryption",
                "ios-os-version",
                "ios-profiles",
            )
        },
    }
    assert summary.exit_code == 1
    ev = run.results[(offline, "ios-passcode")].evidence
    assert ev.startswith("no answer within 6s; last seen 20")
    assert run.devices[offline]["last_seen"] is not None
    assert run.results[(offline, "ios-in-contact")].status == "pass"

    # 15 days later (clock injection), the silent iPad is out of contact (BSI MST MDM.2.8.03).
    later = datetime.now(UTC) + timedelta(days=15)
    summary2 = run_compliance(cfg, w.db, inv, ("ipads",), now=later)
    run2 = load_run(w.db, summary2.run_id)
    contact = run2.results[(offline, "ios-in-contact")]
    assert contact.status == "fail"
    assert contact.evidence.startswith("out of contact: last seen ")
    assert "(limit 14)" in contact.evidence
    others = {d for (d, r), res in run2.results.items() if r == "ios-in-contact" and res.status == "pass"}
    assert others == set(w.serials) - {offline}
