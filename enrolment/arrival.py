"""On arrival: when a serial of an approved request enrols in NanoMDM, install its group's
profile set, and mark it configured once every InstallProfile command is acknowledged.

The MDM side (mdm_client) records enrolments and command results from NanoMDM's webhook in its
registry tables (`mdm_devices`, `mdm_commands`). `process_arrivals` reads them, so it works
both as a hook the webhook receiver calls after each Authenticate / TokenUpdate / acknowledge,
and as a periodic sweep (`werne web serve` runs one), which also catches events that arrived
while nothing was listening.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from core import audit, clock
from core.config import Config
from core.db import Database
from core.errors import WerneError
from core.findings import Findings
from core.inventory import IPad, load_inventory
from enrolment.errors import ArrivalError
from enrolment.models import EnrolmentRequest, RequestSerial
from enrolment.requests import recompute_status
from ipad.actions.activation_lock import escrow_configured
from ipad.actions.configure import wanted_profiles
from ipad.actions.returns import process_returns
from ipad.appletv.setup import set_up_appletvs
from ipad.classroom.context import classroom_context
from ipad.classroom.lessons import LESSON_ACTOR, has_open_lessons
from ipad.classroom.lessons import tick as lesson_tick
from ipad.commands import activation_lock_bypass_code, install_profile
from ipad.ddm.group_sets import join_group_set
from ipad.dispatch import IPadContext, Target
from ipad.payloads.profiles import Profile, profile_payload_for_install
from ipad.store.events import EnrolmentEvent, EnrolmentHook
from ipad.store.registry import Registry
from mdm_client.factory import nanomdm_client
from mdm_client.nanomdm import NanoMDMClient

log = logging.getLogger("werne.enrolment.arrival")

ARRIVAL_ACTOR = "werne-arrival"
_FAILED_RESULTS = ("Error", "CommandFormatError", "enqueue_failed")
_lock = threading.Lock()


@dataclass
class ArrivalReport(Findings):
    """What one sweep did: serials newly enrolled, configured, failed, and profiles sent."""

    enrolled: list[str] = field(default_factory=list)
    configured: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    # Serials whose profiles could not be sent for a reason outside the iPad; retried next sweep.
    deferred: dict[str, str] = field(default_factory=dict)
    commands_sent: int = 0

    @property
    def ok(self) -> bool:
        """Every arrival went through (a failed or deferred serial is a finding)."""
        return not (self.failed or self.deferred)


# install(serial, group, enrollment_id, request_id) -> list of (command_uuid, profile identifier)
Installer = Callable[[str, str, str, int], list[tuple[str, str]]]


def _device_profiles(cfg: Config, db: Database, serial: str, group: str, request_id: int) -> list[Profile]:
    """The profiles this iPad must have: its group's, built for it (its room's Apple TVs in the
    AirPlay list), and its class's Education configuration (ipad.classroom)."""
    inventory = load_inventory(cfg.inventory_dir)
    if serial not in inventory.ipads:
        # Requested but not yet in ipads.csv: placed by its request (school, group), in no room.
        with db.session() as s:
            req = s.get(EnrolmentRequest, request_id)
            school = req.school_id if req is not None else ""
        inventory.ipads[serial] = IPad.model_validate({"serial": serial, "school": school, "group": group})
    ctx = classroom_context(IPadContext(cfg, db, inventory, actor=ARRIVAL_ACTOR))
    target = Target(serial, inventory.ipads[serial].school, group, None)
    return wanted_profiles(ctx, [target])[serial]


def _default_installer(cfg: Config, db: Database) -> Installer:
    """Returns install(serial, group, enrollment_id, request_id) -> list of (command_uuid, profile identifier).

    Each InstallProfile is recorded in the MDM registry as planned *before* it is enqueued, so
    its acknowledgement cannot arrive first, and is marked not queued if NanoMDM refuses it.
    """
    client = nanomdm_client(cfg)
    registry = Registry(db)

    def install(serial: str, group: str, enrollment_id: str, request_id: int) -> list[tuple[str, str]]:
        sent = []
        for profile in _device_profiles(cfg, db, serial, group, request_id):
            cmd = install_profile(profile_payload_for_install(profile, cfg))
            registry.record_planned(
                cmd.uuid,
                cmd.request_type,
                [enrollment_id],
                ARRIVAL_ACTOR,
                {"profile": profile.identifier, "enrolment_request": request_id},
            )
            result = client.enqueue(cmd, [enrollment_id], answered=registry.answered_any)
            if enrollment_id in result.failed:
                registry.mark_not_queued(cmd.uuid, result.failed)
                raise ArrivalError(f"InstallProfile {profile.identifier}: {result.failed[enrollment_id]}")
            sent.append((cmd.uuid, profile.identifier))
        _join_group_set(cfg, db, group, enrollment_id, request_id)
        _request_bypass_code(cfg, client, registry, enrollment_id, request_id)
        return sent

    return install


def _request_bypass_code(cfg: Config, client: NanoMDMClient, registry: Registry, enrollment_id: str,
                         request_id: int) -> None:
    """Where the site escrows Activation Lock bypass codes, ask the new iPad for its code at once (the
    webhook escrows the answer, encrypted). Not part of "configured": a failure here is logged, and
    the nightly rule ios-activation-lock-escrowed names the iPad until `werne ipad activation-lock
    escrow` got its code."""
    if not escrow_configured(cfg):
        return
    cmd = activation_lock_bypass_code()
    registry.record_planned(cmd.uuid, cmd.request_type, [enrollment_id], ARRIVAL_ACTOR,
                            {"enrolment_request": request_id, "why": "escrow at arrival"})
    try:
        failed = client.enqueue(cmd, [enrollment_id], answered=registry.answered_any).failed
    except WerneError as e:  # the profiles are queued already: this must not make them go again
        failed = {enrollment_id: str(e)}
    if enrollment_id in failed:
        registry.mark_not_queued(cmd.uuid, failed)
        log.warning("ActivationLockBypassCode for %s not queued: %s", enrollment_id, failed[enrollment_id])


def process_arrivals(db: Database, cfg: Config, installer: Installer | None = None) -> ArrivalReport:
    """One sweep over assigned and enrolled serials; safe to call concurrently and repeatedly."""
    with _lock:
        report = _sweep(db, cfg, installer)
        _returns(db, cfg, report)
        _appletvs(db, cfg, report)
        _lessons(db, cfg, report)
        return report


def _lessons(db: Database, cfg: Config, report: ArrivalReport) -> None:
    """One step of the lesson loop: lessons whose window opened are applied, those that ended lifted
    (also those that ended while nothing ran: the first sweep after a start catches up)."""
    try:
        if not has_open_lessons(db):
            return
        ctx = IPadContext(cfg, db, load_inventory(cfg.inventory_dir), actor=LESSON_ACTOR)
        done = lesson_tick(ctx, clock.now())
    except WerneError as e:
        report.deferred["lessons"] = str(e)
        return
    for lesson, why in done.problems.items():
        report.deferred[f"lesson {lesson}"] = why


def _appletvs(db: Database, cfg: Config, report: ArrivalReport) -> None:
    """Enrolled Apple TVs get their profiles and name (ipad.appletv.setup)."""
    if not (cfg.inventory_dir / "appletvs.csv").is_file():
        return
    try:
        ctx = IPadContext(cfg, db, load_inventory(cfg.inventory_dir), actor=ARRIVAL_ACTOR)
        sweep = set_up_appletvs(ctx)
    except WerneError as e:
        report.deferred["appletvs"] = str(e)
        return
    report.enrolled += sweep.set_up
    for serial, why in sweep.problems.items():
        report.deferred[serial] = why


def _returns(db: Database, cfg: Config, report: ArrivalReport) -> None:
    """iPads erased with Return to Service that enrolled again go back to their group (ipad.returns)."""
    try:
        for serial, status in process_returns(db, cfg).items():
            if status == "failed":
                report.failed[serial] = "return to service failed (see `werne audit`)"
    except WerneError as e:
        report.deferred["return-to-service"] = str(e)


def _join_group_set(cfg: Config, db: Database, group: str, enrollment_id: str, request_id: int) -> None:
    """Put a new iPad into its group's declaration set (declarative management), where KMFDDM is
    set up. A KMFDDM problem does not hold the arrival up: the profiles are on their way, and
    `werne ipad declarations apply` maps whatever was missed; it is logged."""
    with db.session() as s:
        req = s.get(EnrolmentRequest, request_id)
        school = req.school_id if req is not None else None
    if school is None:
        return
    try:
        name = join_group_set(cfg, enrollment_id, school, group)
    except WerneError as e:
        log.warning("declaration set for %s not joined: %s", enrollment_id, e)
        return
    if name is not None:
        log.info("%s joined the declaration set %s", enrollment_id, name)


def _sweep(db: Database, cfg: Config, installer: Installer | None) -> ArrivalReport:
    registry = Registry(db)
    report = ArrivalReport()
    now = datetime.now(UTC)
    active = ("approved", "assigned", "enrolled")
    with db.session() as s:
        rows = s.execute(
            select(
                RequestSerial.id,
                RequestSerial.serial,
                RequestSerial.status,
                RequestSerial.request_id,
                EnrolmentRequest.device_group,
            )
            .join(EnrolmentRequest, RequestSerial.request_id == EnrolmentRequest.id)
            .where(EnrolmentRequest.status.in_(active), RequestSerial.status.in_(("assigned", "enrolled")))
        ).all()
    if not rows:
        return report
    # Enrolled = Authenticate and TokenUpdate stored by the webhook (state "enrolled").
    wanted = {r.serial for r in rows if r.status == "assigned"}
    devices = {
        serial: d.enrollment_id
        for serial, d in registry.devices_by_serial().items()
        if serial in wanted and d.state == "enrolled"
    }
    # 1. Newly enrolled: send the group's profiles (outside any transaction: network).
    for r in rows:
        if r.status != "assigned" or r.serial not in devices:
            continue
        enrollment_id = devices[r.serial]
        installer = installer or _default_installer(cfg, db)
        try:
            sent = installer(r.serial, r.device_group, enrollment_id, r.request_id)
            error = None
        except ArrivalError as e:  # NanoMDM refused the command for this device: a per-serial failure
            sent, error = [], str(e)
        except WerneError as e:
            # NanoMDM unreachable, a missing secret, a broken profile file: a site problem, not
            # this iPad's. Leave it "assigned" so the next sweep retries, and say why.
            report.deferred[r.serial] = str(e)
            log.warning("arrival of %s deferred: %s", r.serial, e)
            continue
        with db.session() as s:
            x = s.get(RequestSerial, r.id)
            if x is None or x.status != "assigned":
                continue
            x.enrollment_id, x.updated_at = enrollment_id, now
            if error:
                x.status, x.reason = "failed", f"profiles could not be sent: {error}"
                report.failed[r.serial] = x.reason
            else:
                x.status, x.pending_commands = "enrolled", [u for u, _ in sent]
                report.enrolled.append(r.serial)
                report.commands_sent += len(sent)
            req = s.get(EnrolmentRequest, x.request_id)
            assert req is not None
            req.status, req.updated_at = recompute_status(req), now
            request_id = req.id
        audit.record(
            db,
            "mdm.install_profiles",
            f"serial:{r.serial}",
            {
                "request": request_id,
                "enrollment_id": enrollment_id,
                "group": r.device_group,
                "commands": [{"command_uuid": u, "profile": p} for u, p in sent],
                "error": error,
            },
            actor=ARRIVAL_ACTOR,
        )
    # 2. Enrolled with commands outstanding: read the acknowledgements from the MDM registry.
    with db.session() as s:
        pending = list(
            s.scalars(
                select(RequestSerial)
                .join(EnrolmentRequest, RequestSerial.request_id == EnrolmentRequest.id)
                .where(EnrolmentRequest.status.in_(active), RequestSerial.status == "enrolled")
            )
        )
        touched: set[int] = set()
        for x in pending:
            waiting = list(x.pending_commands or [])
            if not waiting or not x.enrollment_id:
                continue
            results = {
                c.command_uuid: c for c in registry.command_statuses(waiting) if c.enrollment_id == x.enrollment_id
            }
            still = []
            for uuid in waiting:
                c = results.get(uuid)
                if c is None or c.status not in ("Acknowledged", *_FAILED_RESULTS):
                    still.append(uuid)
                elif c.status in _FAILED_RESULTS:
                    chain = c.error_chain or []
                    why = (
                        "; ".join(
                            str(
                                e.get("USEnglishDescription") or e.get("LocalizedDescription") or e.get("ErrorCode", "")
                            )
                            for e in chain
                        )
                        or c.status
                    )
                    x.status, x.reason = "failed", f"InstallProfile failed: {why}"[:500]
                    report.failed[x.serial] = x.reason
                    break
            if x.status == "failed":
                x.pending_commands, x.updated_at = [], now
                touched.add(x.request_id)
                continue
            if still != waiting:
                x.pending_commands, x.updated_at = still, now
            if not still:
                x.status, x.reason, x.updated_at = "configured", None, now
                report.configured.append(x.serial)
                touched.add(x.request_id)
        for rid in touched:
            req = s.get(EnrolmentRequest, rid)
            if req is not None:
                req.status, req.updated_at = recompute_status(req), now
    for serial in report.configured:
        audit.record(db, "enrol.configured", f"serial:{serial}", {}, actor=ARRIVAL_ACTOR)
    for serial, why in report.failed.items():
        audit.record(db, "enrol.serial_failed", f"serial:{serial}", {"reason": why}, actor=ARRIVAL_ACTOR)
    return report


def enrolment_hook(watcher: ArrivalWatcher) -> EnrolmentHook:
    """A callback for ipad.webhook.on_enrolled, for a process that runs both the webhook
    receiver and an ArrivalWatcher: a stored TokenUpdate wakes the watcher at once. The sweep
    itself runs in the watcher's thread, never in the webhook's writer thread."""

    def hook(event: EnrolmentEvent) -> None:
        if event.topic == "mdm.TokenUpdate":
            watcher.wake()

    return hook


class ArrivalWatcher:
    """A background thread that sweeps every `interval` seconds, or at once when woken, until stopped."""

    def __init__(self, db: Database, cfg: Config, interval: float = 5.0, installer: Installer | None = None):
        self.db, self.cfg, self.interval, self.installer = db, cfg, interval, installer
        self.sweeps = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="werne-arrival", daemon=True)

    def start(self) -> ArrivalWatcher:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                process_arrivals(self.db, self.cfg, self.installer)
            except WerneError as e:
                log.warning("arrival sweep failed: %s", e)
            except Exception:  # a bug: log it with its traceback, keep the web page serving
                log.exception("arrival sweep crashed")
            self.sweeps += 1
            self._wake.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
