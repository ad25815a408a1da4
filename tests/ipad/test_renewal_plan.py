"""Who is due when (`werne mdm renew --plan`), computed from the registry: identities are due
scep.renew_days_before they expire, at most scep.renew_daily_budget a day (soonest expiry first,
what was sent today counts), an Error answer waits scep.renew_retry_h, a previous CA's identity is
due at once; one planned for its expiry day or later is late (a finding). Also the SCEP CA rotation
(trust bundle, retirement refused while iPads hold old identities) and the expiry view's counts."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from core.audit import list_events
from core.config import Config, load_config
from core.db import Database
from core.inventory import load_inventory
from ipad.dispatch import IPadContext
from ipad.errors import SCEPSetupError
from ipad.golive.renewal import plan_renewals
from ipad.golive.scep_ca import current_ca, init_scep_ca, retire_old_cas, rotate_scep_ca, trust_bundle_file, trusted_cas
from ipad.models import MDMDevice, MDMDeviceFact, MDMIdentityRenewal
from tests.fixtures.site import write_config

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2027, 5, 3, 2, 0, tzinfo=dt.UTC)  # a nightly run
TODAY = NOW.date()


@pytest.fixture(scope="module")
def ca_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One SCEP CA for the module's sites (a 3072-bit key takes a while), imported into each as
    `werne mdm scep init --import-ca-cert/--import-ca-key` does."""
    from lab.certs import make_scep_ca

    return make_scep_ca(tmp_path_factory.mktemp("scep"))


@pytest.fixture
def site(tmp_path: Path, ca_files: tuple[Path, Path]):  # type: ignore[no-untyped-def]
    cfg = load_config(write_config(tmp_path / "werne.toml", REPO / "inventories" / "demo", tmp_path / "state",
                                   "[scep]\nrenew_days_before = 60\nrenew_daily_budget = 2\n[dep]\nenabled = false\n"))
    init_scep_ca(cfg, *ca_files)
    db = Database(cfg.database_url)
    yield cfg, db, IPadContext(cfg, db, load_inventory(cfg.inventory_dir), actor="pytest")
    db.dispose()


def enrol(db: Database, serial: str, expires_in_days: float | None, issuer: str | None = None,
          state: str = "enrolled", now: dt.datetime = NOW) -> str:
    """An enrolled iPad in the registry whose CertificateList shows an identity expiring that many
    days after `now`."""
    eid = "00008120-" + hashlib.sha256(serial.encode()).hexdigest()[:16].upper()
    with db.session() as s:
        s.add(MDMDevice(enrollment_id=eid, udid=eid, serial=serial, school="gs-demo", state=state))
        if expires_in_days is not None:
            s.add(MDMDeviceFact(enrollment_id=eid, kind="CertificateList", at=now - dt.timedelta(hours=5), value=[
                {"CommonName": f"werne iPad {serial}", "IsIdentity": True, "issuer": issuer, "subject": "",
                 "sha256": hashlib.sha256(serial.encode()).hexdigest(),
                 "not_after": (now + dt.timedelta(days=expires_in_days)).isoformat()}]))
    return eid


def ca_subject(cfg: Config) -> str:
    return current_ca(cfg).subject.rfc4514_string()


def states(ctx: IPadContext) -> dict[str, tuple[str, str | None]]:
    return {i.serial: (i.state, i.planned_on.isoformat() if i.planned_on else None)
            for i in plan_renewals(ctx, NOW).items}


def test_due_identities_are_spread_over_days_soonest_first(site) -> None:  # type: ignore[no-untyped-def]
    cfg, db, ctx = site
    ca = ca_subject(cfg)
    for serial, days in (("S5", 45), ("S1", 20), ("S3", 30), ("S2", 25), ("S4", 40), ("LATER", 100)):
        enrol(db, serial, days, ca)
    enrol(db, "NOCERT", None)
    enrol(db, "GONE", 10, ca, state="checked_out")
    plan = plan_renewals(ctx, NOW)
    day = [(TODAY + dt.timedelta(days=n)).isoformat() for n in range(3)]
    assert states(ctx) == {"S1": ("due", day[0]), "S2": ("due", day[0]), "S3": ("planned", day[1]),
                           "S4": ("planned", day[1]), "S5": ("planned", day[2]),
                           "LATER": ("planned", (TODAY + dt.timedelta(days=40)).isoformat()),
                           "NOCERT": ("unknown", None)}
    assert [i.serial for i in plan.due()] == ["S1", "S2"]
    assert plan.ok and plan.counts() == {"due": 2, "planned": 4, "unknown": 1}
    later = next(i for i in plan.items if i.serial == "LATER")
    assert later.due_on == later.planned_on and later.to_dict()["days_left"] == 100


def test_what_went_out_today_counts_and_a_late_one_is_a_finding(site) -> None:  # type: ignore[no-untyped-def]
    cfg, db, ctx = site
    ca = ca_subject(cfg)
    enrol(db, "A", 1.5, ca)
    enrol(db, "B", 1.6, ca)
    with db.session() as s:  # one renewal went out an hour ago (another iPad): one slot left today
        s.add(MDMIdentityRenewal(enrollment_id="other", serial="OTHER", state="renewed", attempts=0, renewals=1,
                                 command_uuid="X", sent_at=NOW - dt.timedelta(hours=1), old_fingerprint="",
                                 reason=""))
    plan = plan_renewals(ctx, NOW)
    assert plan.sent_today == 1
    got = {i.serial: i for i in plan.items}
    assert (got["A"].state, got["A"].late) == ("due", False)
    assert got["B"].planned_on == TODAY + dt.timedelta(days=1) and got["B"].late
    assert not plan.ok and plan.exit_code == 1


def test_errors_wait_for_the_retry_and_give_up_after_the_limit(site) -> None:  # type: ignore[no-untyped-def]
    cfg, db, ctx = site
    ca = ca_subject(cfg)
    failed, given_up, sent = enrol(db, "F", 20, ca), enrol(db, "G", 20, ca), enrol(db, "Q", 20, ca)
    with db.session() as s:
        base = {"attempts": 1, "renewals": 0, "command_uuid": "C", "old_fingerprint": "", "reason": "SCEP refused",
                "sent_at": NOW - dt.timedelta(days=1), "answered_at": NOW - dt.timedelta(hours=23)}
        s.add(MDMIdentityRenewal(enrollment_id=failed, serial="F", state="failed",
                                 next_attempt_at=NOW + dt.timedelta(hours=1), **base))
        s.add(MDMIdentityRenewal(enrollment_id=given_up, serial="G", state="given up", **{**base, "attempts": 5}))
        s.add(MDMIdentityRenewal(enrollment_id=sent, serial="Q", state="sent", **{**base, "answered_at": None}))
    plan = {i.serial: i for i in plan_renewals(ctx, NOW).items}
    assert (plan["F"].state, plan["F"].planned_on) == ("retry", TODAY + dt.timedelta(days=1))
    assert "SCEP refused" in plan["F"].detail
    assert plan["G"].state == "given up" and "5 errors in a row" in plan["G"].detail
    assert plan["Q"].state == "sent" and plan["Q"].planned_on is None
    # A day later the failed one is due again.
    assert {i.serial: i.state for i in plan_renewals(ctx, NOW + dt.timedelta(days=1)).items}["F"] == "due"


def test_a_rotated_ca_makes_its_identities_due_at_once_and_retires_only_when_none_is_left(site) -> None:  # type: ignore[no-untyped-def]
    cfg, db, ctx = site
    old = current_ca(cfg)
    enrol(db, "OLD1", 300, old.subject.rfc4514_string())
    enrol(db, "OLD2", 300, old.subject.rfc4514_string())
    assert [c.subject for c in trusted_cas(cfg)] == [old.subject]
    rotation = rotate_scep_ca(cfg, db, actor="pytest", now=NOW)
    new = current_ca(cfg)
    assert new.subject != old.subject and new.subject.rfc4514_string().endswith("iPad device CA 2027-05-03")
    # scepserver signs with the new CA; NanoMDM's bundle trusts both, the new one first.
    assert [c.subject for c in trusted_cas(cfg)] == [new.subject, old.subject]
    assert trust_bundle_file(cfg).read_bytes().count(b"BEGIN CERTIFICATE") == 2
    kept = next((cfg.state_dir / "scep" / "depot" / "retired").iterdir())
    assert (kept / "ca.pem").is_file() and os.stat(kept / "ca.key").st_mode & 0o777 == 0o600
    assert rotation.retired == [old.subject.rfc4514_string()]
    with pytest.raises(SCEPSetupError, match="rotation is not finished"):
        rotate_scep_ca(cfg, db)
    plan = plan_renewals(ctx, NOW)
    assert {i.serial: (i.state, i.detail) for i in plan.items} == {
        "OLD1": ("due", "issued by the previous SCEP CA"), "OLD2": ("due", "issued by the previous SCEP CA")}
    assert plan.holding_old_identities() == ["OLD1", "OLD2"]
    with pytest.raises(SCEPSetupError, match="2 enrolled iPad"):
        retire_old_cas(cfg, db, plan.holding_old_identities())
    assert len(trusted_cas(cfg)) == 2  # refused: nothing changed
    # Both renewed (their CertificateList now shows the new CA's identities): retiring goes through.
    with db.session() as s:
        for f in s.scalars(select(MDMDeviceFact)):
            f.value = [{**f.value[0], "issuer": new.subject.rfc4514_string()}]
    assert plan_renewals(ctx, NOW).holding_old_identities() == []
    done = retire_old_cas(cfg, db, [])
    assert done.retired == [old.subject.rfc4514_string()] and [c.subject for c in trusted_cas(cfg)] == [new.subject]
    actions = [e.action for e in list_events(db)]
    assert actions.count("mdm.scep.rotated") == 1 and actions.count("mdm.scep.retired") == 1


def test_the_expiry_view_counts_identities_by_month(site) -> None:  # type: ignore[no-untyped-def]
    from ipad.golive.expiry import expiry_items

    cfg, db, _ctx = site
    ca = ca_subject(cfg)
    now = dt.datetime.now(dt.UTC)
    for serial, days in (("A", 10), ("B", 200), ("C", 201), ("X", -2)):
        eid = enrol(db, serial, None)
        with db.session() as s:
            not_after = (now + dt.timedelta(days=days)).isoformat()
            s.add(MDMDeviceFact(enrollment_id=eid, kind="CertificateList", at=now, value=[
                {"IsIdentity": True, "issuer": ca, "sha256": serial, "not_after": not_after}]))
    enrol(db, "U", None)
    items = {i.item: i for i in expiry_items(cfg, db, tls=False)}
    ids = items["identities"]
    months = {f"{now + dt.timedelta(days=d):%Y-%m}" for d in (10, 200, 201, -2)}
    assert set(ids.by_month) == months and sum(ids.by_month.values()) == 4
    assert (ids.within_limit, ids.expired, ids.unknown) == (2, 1, 1) and not ids.ok
    d = ids.to_dict()
    assert d["days_left"] < -1.9 and d["limit_days"] == 30 and d["within_limit"] == 2
    assert not items["push-cert"].ok and "no push certificate installed" in items["push-cert"].error
    assert items["scep-ca"].ok and items["scep-ca"].limit_days == 400
    assert not items["signing-cert"].ok and "mdm.signing_cert_file is not set" in items["signing-cert"].error
    assert "dep-token" not in items  # [dep] enabled = false: no Apple School Manager
    cfg.dep.enabled, cfg.dep.url, cfg.dep.timeout = True, "http://127.0.0.1:1", 2.0
    dep = {i.item: i for i in expiry_items(cfg, db, tls=False)}["dep-token"]
    assert not dep.ok and dep.error  # with it, NanoDEP's token is an item; unreachable, it fails


def test_a_command_the_ipad_passed_over_does_not_keep_its_renewal_waiting(site) -> None:  # type: ignore[no-untyped-def]
    """An iPad with commands still queued is deferred (NanoMDM clears its queue when it checks in
    with a new identity). A command werne shows queued, though the iPad answered one werne queued
    after it, was passed over: NanoMDM hands out a device's queue oldest first, so its answer's event
    was lost (a NanoMDM restart during the renewal drill lost one, and the Apple TV was deferred
    for good). It no longer counts; a NotNow and a command queued after the last answer still do."""
    from ipad.golive.renewal import still_queued
    from ipad.models import MDMCommand

    cfg, db, ctx = site
    eid = enrol(db, "TV1", 20, ca_subject(cfg))
    other = enrol(db, "TV2", 20, ca_subject(cfg))
    t = NOW - dt.timedelta(hours=1)

    def command(uuid: str, enrollment_id: str, request_type: str, status: str, minutes: int) -> MDMCommand:
        return MDMCommand(command_uuid=uuid, enrollment_id=enrollment_id, request_type=request_type, status=status,
                          actor="pytest", enqueued_at=t + dt.timedelta(minutes=minutes),
                          updated_at=t + dt.timedelta(minutes=minutes))

    with db.session() as s:
        s.add_all([command("C1", eid, "ProfileList", "queued", 0),  # passed over: its event was lost
                   command("C2", eid, "ProfileList", "Acknowledged", 1),
                   command("C3", eid, "Settings", "NotNow", 0),  # NanoMDM keeps a NotNow queued
                   command("C4", eid, "DeviceInformation", "queued", 2),  # queued after the last answer
                   command("C5", other, "ProfileList", "queued", 0)])  # nothing answered after it
    answered = ctx.registry.last_answered_enqueue()
    assert answered == {eid: t + dt.timedelta(minutes=1)}
    pending = ctx.registry.pending_commands()
    assert sorted(still_queued(pending[eid], answered.get(eid))) == ["DeviceInformation", "Settings"]
    assert still_queued(pending[other], answered.get(other)) == ["ProfileList"]
