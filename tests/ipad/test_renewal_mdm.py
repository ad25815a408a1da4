"""werne's renewal of device identities (`werne mdm renew`) against a real NanoMDM and scepserver
and simulated iPads: it learns each identity's expiry (CertificateList), renews the due ones by
re-sending the enrolment profile, records and audits every attempt; an Error answer is retried
after scep.renew_retry_h while the old identity keeps working, an iPad that never answers stays
queued and is woken again on each run, an iPad with other commands queued is left for later."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.fixtures.enrolment_profile import install_topic, signing_identity
from tests.lab.renewal_world import TOPIC, RenewalWorld, open_world

pytestmark = pytest.mark.mdm

FAULTS = [{}, {}, {"renewal_failures": 1}, {"renewal_never_answers": True}, {}]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RenewalWorld]:
    root = tmp_path_factory.mktemp("werne-renewal")
    cert, key = signing_identity(root)
    key.chmod(0o600)
    # Identities valid 100 days, renewed 200 days ahead: every one is due; a renewed one (365 days
    # from scepserver) is not.
    with open_world(root, FAULTS, identity_days=100, cert_valid_days=365,
                    extra=f'signing_cert_file = "{cert}"\nsigning_key_file = "{key}"\n') as w:
        install_topic(w.cfg, TOPIC)
        yield w


def by_serial(report) -> dict:  # type: ignore[no-untyped-def]
    return {o.serial: o for o in report.outcomes}


def test_due_identities_are_renewed_and_the_rest_reported(world: RenewalWorld) -> None:
    from core.audit import list_events
    from ipad.golive.renewal import plan_renewals, renew_identities
    from ipad.models import MDMIdentityRenewal

    ok, ok2, failing, silent, busy = list(world.devices)
    # Another command still pending for `busy` (it answered NotNow: NanoMDM keeps it queued): a
    # renewal now would make NanoMDM drop it. (A command werne shows queued that the iPad has since
    # passed over would not count: its answer's event was lost; tests/ipad/test_renewal_plan.py.)
    from sqlalchemy import update

    from ipad.models import MDMCommand

    busy_id = world.devices[busy].udid
    world.ctx.registry.record_planned("PENDING-1", "DeviceLock", [busy_id], "pytest", {})
    with world.db.session() as s:
        s.execute(update(MDMCommand).where(MDMCommand.command_uuid == "PENDING-1").values(status="NotNow"))
    plan = plan_renewals(world.ctx)
    assert {i.serial: i.state for i in plan.items} == dict.fromkeys(world.devices, "unknown")

    # `silent` never answers: the renewal waits out the deadline, so it is short.
    report = renew_identities(world.ctx, deadline_s=6)
    got = by_serial(report)
    assert {s: o.status for s, o in got.items()} == {ok: "renewed", ok2: "renewed", failing: "failed",
                                                     silent: "no answer", busy: "deferred"}
    assert not report.ok and report.exit_code == 1
    for s in (ok, ok2):
        dev = world.devices[s]
        assert dev.renewals == 1 and got[s].new_not_after is not None
        assert got[s].new_not_after > got[s].old_not_after  # type: ignore[operator]
        assert got[s].new_not_after.date() == (datetime.now(UTC) + timedelta(days=365)).date()
    assert "Profile Installation Failed" in got[failing].detail
    assert world.devices[failing].identities[:1] == world.devices[failing].identities  # the old one, still
    assert "1 command(s) still queued (DeviceLock)" in got[busy].detail
    with world.db.session() as s:
        rows = {r.serial: r for r in s.scalars(select(MDMIdentityRenewal))}
    assert {s: r.state for s, r in rows.items()} == {ok: "renewed", ok2: "renewed", failing: "failed", silent: "sent"}
    assert rows[failing].next_attempt_at is not None and rows[failing].attempts == 1
    event = [e for e in list_events(world.db) if e.action == "mdm.renew"][-1]
    assert event.detail["result"] == {"renewed": 2, "failed": 1, "no answer": 1, "deferred": 1}
    assert event.detail["per_device"][ok].startswith("renewed: new identity valid until ")

    # The failed iPad still works with its old identity.
    from ipad.commands import device_information
    from ipad.dispatch import Job, select_targets, send_and_wait

    t = select_targets(world.ctx, serials=[failing])
    world.sim.wake([failing])
    assert send_and_wait(world.ctx, "t", [Job(device_information(["OSVersion"]), t)], t, 20).ok


def test_the_next_runs_retry_and_wake(world: RenewalWorld) -> None:
    from ipad.golive.renewal import plan_renewals, renew_identities

    ok, ok2, failing, silent, busy = list(world.devices)
    plan = {i.serial: i for i in plan_renewals(world.ctx).items}
    assert plan[ok].state == "planned" and plan[ok].planned_on == plan[ok].due_on
    assert plan[failing].state == "retry" and plan[failing].planned_on > datetime.now(UTC).date()  # type: ignore[operator]
    assert plan[silent].state == "sent" and plan[busy].state == "due"

    # Right away: the failed one waits (renew_retry_h), the silent one is woken again, busy still busy.
    again = by_serial(renew_identities(world.ctx, deadline_s=5))
    assert {s: o.status for s, o in again.items()} == {silent: "woken again", busy: "deferred"}
    # A day later the failed iPad is tried again and renewed.
    later = by_serial(renew_identities(world.ctx, now=datetime.now(UTC) + timedelta(hours=25), deadline_s=20))
    assert later[failing].status == "renewed" and world.devices[failing].renewals == 1
    assert later[silent].status == "woken again"
