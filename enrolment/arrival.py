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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from core import audit
from core.config import Config
from core.db import Database
from core.errors import WerneError
from enrolment.errors import ArrivalError
from enrolment.models import EnrolmentRequest, RequestSerial
from enrolment.requests import recompute_status

log = logging.getLogger("werne.enrolment.arrival")

ARRIVAL_ACTOR = "werne-arrival"
_FAILED_RESULTS = ("Error", "CommandFormatError", "enqueue_failed")
_lock = threading.Lock()


@dataclass
class ArrivalReport:
    """What one sweep did: serials newly enrolled, configured, failed, and profiles sent."""

    enrolled: list[str] = field(default_factory=list)
    configured: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    commands_sent: int = 0


def _mdm_models() -> tuple[Any, Any]:
    from mdm_client.models import MDMCommand, MDMDevice

    return MDMDevice, MDMCommand


def _default_installer(cfg: Config) -> Any:
    """Returns install(group, enrollment_id) -> list of (command_uuid, profile identifier)."""
    from core.secrets import read_secret
    from mdm_client.client import NanoMDMClient
    from mdm_client.commands import install_profile
    from mdm_client.profiles import profile_payload_for_install, profile_set_for

    key = read_secret(file=cfg.mdm.api_key_file, env=cfg.mdm.api_key_env, what="NanoMDM API key")
    client = NanoMDMClient(cfg.mdm.url, key, timeout=cfg.mdm.timeout)

    def install(group: str, enrollment_id: str) -> list[tuple[str, str]]:
        sent = []
        for profile in profile_set_for(group, cfg):
            cmd = install_profile(profile_payload_for_install(profile, cfg))
            result = client.enqueue(cmd, [enrollment_id])
            if enrollment_id in result.failed:
                raise ArrivalError(f"InstallProfile {profile.identifier}: {result.failed[enrollment_id]}")
            sent.append((cmd.uuid, profile.identifier))
        return sent

    return install


def process_arrivals(db: Database, cfg: Config, installer: Any = None) -> ArrivalReport:
    """One sweep over assigned and enrolled serials; safe to call concurrently and repeatedly."""
    with _lock:
        return _sweep(db, cfg, installer)


def _sweep(db: Database, cfg: Config, installer: Any) -> ArrivalReport:
    mdm_device, mdm_command = _mdm_models()
    report = ArrivalReport()
    now = datetime.now(UTC)
    active = ("approved", "assigned", "enrolled")
    with db.session() as s:
        rows = s.execute(
            select(RequestSerial.id, RequestSerial.serial, RequestSerial.status, EnrolmentRequest.device_group)
            .join(EnrolmentRequest, RequestSerial.request_id == EnrolmentRequest.id)
            .where(EnrolmentRequest.status.in_(active), RequestSerial.status.in_(("assigned", "enrolled")))).all()
        serials = [r.serial for r in rows]
        devices = {}
        if serials:
            for d in s.scalars(select(mdm_device).where(mdm_device.serial.in_(serials),
                                                        mdm_device.state == "enrolled")):
                devices[d.serial] = d.enrollment_id
    # 1. Newly enrolled: send the group's profiles (outside any transaction: network).
    for r in rows:
        if r.status != "assigned" or r.serial not in devices:
            continue
        enrollment_id = devices[r.serial]
        installer = installer or _default_installer(cfg)
        try:
            sent = installer(r.device_group, enrollment_id)
            error = None
        except WerneError as e:
            sent, error = [], str(e)
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
        audit.record(db, "mdm.install_profiles", f"serial:{r.serial}",
                     {"request": request_id, "enrollment_id": enrollment_id, "group": r.device_group,
                      "commands": [{"command_uuid": u, "profile": p} for u, p in sent], "error": error},
                     actor=ARRIVAL_ACTOR)
    # 2. Enrolled with commands outstanding: read the acknowledgements from the MDM registry.
    with db.session() as s:
        pending = list(s.scalars(
            select(RequestSerial).join(EnrolmentRequest, RequestSerial.request_id == EnrolmentRequest.id)
            .where(EnrolmentRequest.status.in_(active), RequestSerial.status == "enrolled")))
        touched: set[int] = set()
        for x in pending:
            waiting = list(x.pending_commands or [])
            if not waiting or not x.enrollment_id:
                continue
            results = {c.command_uuid: c for c in s.scalars(select(mdm_command).where(
                mdm_command.command_uuid.in_(waiting), mdm_command.enrollment_id == x.enrollment_id))}
            still = []
            for uuid in waiting:
                c = results.get(uuid)
                if c is None or c.status not in ("Acknowledged", *_FAILED_RESULTS):
                    still.append(uuid)
                elif c.status in _FAILED_RESULTS:
                    chain = c.error_chain or []
                    why = "; ".join(str(e.get("USEnglishDescription") or e.get("LocalizedDescription") or
                                        e.get("ErrorCode", "")) for e in chain) or c.status
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


def on_mdm_event(db: Database, cfg: Config, topic: str = "", **_: Any) -> None:
    """Hook for the webhook receiver: after Authenticate, TokenUpdate or an acknowledgement, sweep."""
    if topic and topic not in ("mdm.Authenticate", "mdm.TokenUpdate", "mdm.Connect"):
        return
    try:
        process_arrivals(db, cfg)
    except WerneError as e:  # never break the webhook; the periodic sweep retries
        log.warning("arrival sweep failed: %s", e)


class ArrivalWatcher:
    """A background thread that sweeps every `interval` seconds until stopped."""

    def __init__(self, db: Database, cfg: Config, interval: float = 5.0, installer: Any = None):
        self.db, self.cfg, self.interval, self.installer = db, cfg, interval, installer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="werne-arrival", daemon=True)

    def start(self) -> ArrivalWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                process_arrivals(self.db, self.cfg, self.installer)
            except WerneError as e:
                log.warning("arrival sweep failed: %s", e)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
