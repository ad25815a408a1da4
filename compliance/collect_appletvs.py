"""Collect the classroom Apple TVs' facts: DeviceInformation (tvOS's queries), ProfileList and
CertificateList (their MDM identities, which `werne mdm renew` plans from the registry) through
NanoMDM, with the nightly's deadline; silent or never-enrolled Apple TVs are unreachable, with their
last-seen time (the in-contact rule still judges them).

The facts beside the answers: the AirPlay security profile werne builds for the Apple TV (its
identifier, PayloadUUID and SecurityType), so the rule tv-airplay-passcode can check that the
profile the Apple TV has installed is that one: its PayloadUUID derives from its content.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from compliance.collect_laptops import Progress, ProgressCallback
from compliance.errors import CollectionError
from compliance.facts import DeviceFacts
from core.config import Config
from core.errors import InputError, WerneError
from core.inventory import Inventory

AIRPLAY_SECURITY_PROFILE = "tv-airplay-security"

# serial -> {"answers": {kind: value}, "status": answered|unreachable|not_enrolled, "last_seen": dt}
AppleTVSweep = Callable[[float], dict[str, dict[str, Any]]]


def mdm_appletv_sweep(config: Config, db: Any, inventory: Inventory) -> AppleTVSweep:
    """The real sweep: DeviceInformation, ProfileList and CertificateList to every enrolled Apple TV,
    answers stored by the webhook receiver."""
    from ipad import commands
    from ipad.dispatch import IPadContext, Job, audited, select_targets, send_and_wait

    ctx = IPadContext(config, db, inventory, actor="compliance")
    ctx.client  # noqa: B018 - a missing API key is bad config (exit 2) before the run starts

    def sweep(deadline_s: float) -> dict[str, dict[str, Any]]:
        targets = select_targets(ctx, kind="appletv")
        jobs = [Job(commands.device_information(commands.APPLETV_DEVICE_QUERIES), targets),
                Job(commands.profile_list(), targets), Job(commands.certificate_list(), targets)]
        try:
            report = audited(ctx, "query", targets, lambda: send_and_wait(ctx, "query", jobs, targets, deadline_s))
        except InputError:
            raise
        except WerneError as e:
            raise CollectionError(f"MDM query sweep (Apple TVs): {e}") from None
        devices = ctx.registry.devices_by_serial()
        out: dict[str, dict[str, Any]] = {}
        for d in report.devices:
            dev = devices.get(d.serial)
            seen = dev.last_seen_at if dev else None
            if d.enrollment_id is None or dev is None:
                out[d.serial] = {"status": "not_enrolled", "last_seen": seen}
            elif all(o.status == "Acknowledged" for o in d.outcomes) and d.outcomes:
                out[d.serial] = {"status": "answered", "last_seen": seen,
                                 "answers": {"DeviceInformation": dev.device_information(),
                                             "ProfileList": dev.installed_profiles() or []}}
            else:
                out[d.serial] = {"status": "unreachable", "last_seen": seen}
        return out

    return sweep


def expected_airplay_security(config: Config) -> dict[str, Any]:
    """The AirPlay security profile werne builds for the Apple TVs: identifier, UUID, SecurityType."""
    from ipad.payloads.profiles import build_named_profile

    p = build_named_profile(AIRPLAY_SECURITY_PROFILE, config)
    return {"identifier": p.identifier, "uuid": p.uuid,
            "security_type": p.content["PayloadContent"][0].get("SecurityType")}


def appletv_facts(answers: dict[str, Any], airplay: dict[str, Any]) -> dict[str, Any]:
    info = answers.get("DeviceInformation") or {}
    plist = [p for p in answers.get("ProfileList") or [] if isinstance(p, dict)]
    return {
        "device": {"os_version": info.get("OSVersion"), "is_supervised": info.get("IsSupervised"),
                   "name": info.get("DeviceName"), "product": info.get("ProductName"),
                   "airplay_id": info.get("DeviceID")},
        "profiles": {"identifiers": sorted(str(p["PayloadIdentifier"]) for p in plist if p.get("PayloadIdentifier")),
                     "uuids": {str(p.get("PayloadIdentifier")): str(p.get("PayloadUUID")) for p in plist}},
        "airplay_security": airplay,
    }


def collect_appletvs(config: Config, inventory: Inventory, db: Any, progress: ProgressCallback | None = None,
                     sweep: AppleTVSweep | None = None, now: datetime | None = None) -> list[DeviceFacts]:
    """Facts for every Apple TV of the inventory; silent or never-enrolled ones are unreachable."""
    if not inventory.appletvs:
        return []
    now = now or datetime.now(UTC)
    deadline = config.compliance.query_deadline_s
    if progress is not None:
        progress(Progress("appletvs", 0, len(inventory.appletvs), message=f"MDM query sweep, deadline {deadline:g}s"))
    swept = (sweep or mdm_appletv_sweep(config, db, inventory))(deadline)
    airplay = expected_airplay_security(config)
    out = []
    for serial, tv in sorted(inventory.appletvs.items()):
        common: dict[str, Any] = {"device": serial, "fleet": "appletvs", "school": tv.school, "group": "appletv",
                                  "name": tv.device_name}
        s = swept.get(serial) or {"status": "not_enrolled", "last_seen": None}
        seen = s.get("last_seen")
        seen = seen.replace(tzinfo=UTC) if seen is not None and seen.tzinfo is None else seen
        if s["status"] == "answered":
            out.append(DeviceFacts(**common, facts=appletv_facts(s["answers"], airplay), last_seen=now))
        else:
            when = seen.strftime("%Y-%m-%d %H:%M UTC") if seen else "never"
            why = "not enrolled in the MDM" if s["status"] == "not_enrolled" else f"no answer within {deadline:g}s"
            out.append(DeviceFacts(**common, reachable=False, last_seen=seen, reason=f"{why}; last seen {when}"))
    if progress is not None:
        progress(Progress("appletvs", len(out), len(out), message="sweep done"))
    return out
