"""`werne ipad configure` (and `werne appletv configure`): install and remove profiles so each device
has exactly its own set: its group's profiles, built for the device (the AirPlay allow list of its
room), plus a school's own Apple TV profiles and the Education configuration of an iPad's class."""

from __future__ import annotations

from dataclasses import dataclass

from core import audit
from ipad import commands
from ipad.appletv.airplay import device_context, learned_airplay_ids
from ipad.dispatch import (
    ActionReport,
    DeviceReport,
    IPadContext,
    Job,
    Target,
    audited,
    check_blast_radius,
    select_targets,
    send_and_wait,
    target_text,
)
from ipad.payloads.enrolment_profile import PROFILE_NAME as ENROLMENT_PROFILE
from ipad.payloads.profiles import (
    DeviceContext,
    Profile,
    load_group_assignment,
    profile_payload_for_install,
    profile_set_for,
)


@dataclass
class ProfileChange:
    """What one iPad needs to have its group's profiles: installs, removals (by identifier)."""

    install: list[Profile]
    remove: list[str]
    known: bool  # False when the device never sent a ProfileList


def wanted_profiles(ctx: IPadContext, targets: list[Target]) -> dict[str, list[Profile]]:
    """serial -> the profiles the device must have (built once per distinct device context)."""
    learned = learned_airplay_ids(ctx.registry.devices_by_serial()) if ctx.inventory.appletvs else {}
    sets: dict[tuple[str, DeviceContext | None, tuple[str, ...]], list[Profile]] = {}
    out: dict[str, list[Profile]] = {}
    for t in targets:
        if t.group is None:
            continue
        dev = device_context(ctx.inventory, t.serial, learned)
        # Equal contexts but for the serial give equal profiles: key them without it.
        key_dev = DeviceContext("", dev.group, dev.airplay, dev.airplay_school) if dev else None
        tv = ctx.inventory.appletvs.get(t.serial)
        school = ctx.inventory.schools.get(tv.school) if tv is not None else None
        extra = tuple(school.appletv_profiles) if school is not None else ()
        key = (t.group, key_dev, extra)
        if key not in sets:
            sets[key] = profile_set_for(t.group, ctx.config, device=dev, extra=extra)
        out[t.serial] = list(sets[key]) + (ctx.extra_profiles(t.serial) if ctx.extra_profiles else [])
    return out


def profile_changes(ctx: IPadContext, targets: list[Target]) -> dict[str, ProfileChange]:
    """serial -> the changes to its profiles, from its newest ProfileList; werne's own profiles
    (the group assignment's identifier prefix) that the device should not have are removed; never the
    enrolment profile (it carries the MDM payload: werne must not end an iPad's enrolment this way)."""
    prefix = load_group_assignment(ctx.config).identifier_prefix + "."
    keep = {prefix + ENROLMENT_PROFILE}
    wanted = wanted_profiles(ctx, targets)
    out: dict[str, ProfileChange] = {}
    for t in targets:
        if t.serial not in wanted:
            continue
        want = wanted[t.serial]
        installed = t.device.installed_profiles() if t.device is not None else None
        if installed is None:
            out[t.serial] = ProfileChange(list(want), [], False)
            continue
        have = {p.get("PayloadIdentifier"): p.get("PayloadUUID") for p in installed}
        install = [p for p in want if have.get(p.identifier) != p.uuid]
        wanted_ids = {p.identifier for p in want} | keep
        remove = sorted(i for i in have if i and i.startswith(prefix) and i not in wanted_ids)
        out[t.serial] = ProfileChange(install, remove, True)
    return out


def _plan(ctx: IPadContext, targets: list[Target]) -> ActionReport:
    """school -> change -> number of iPads; nothing is sent. Audited as `ipad.configure.plan`."""
    changes = profile_changes(ctx, targets)
    summary: dict[str, dict[str, int]] = {}

    def count(per: dict[str, int], key: str) -> None:
        per[key] = per.get(key, 0) + 1

    for t in targets:
        ch = changes.get(t.serial)
        per = summary.setdefault(t.school or "(no school)", {})
        if t.enrollment_id is None:
            count(per, "not enrolled: nothing sent")
            continue
        if ch is None or (not ch.install and not ch.remove):
            count(per, "no change")
            continue
        suffix = "" if ch.known else " (no ProfileList yet: assumed missing)"
        for p in ch.install:
            count(per, f"install {p.identifier}{suffix}")
        for identifier in ch.remove:
            count(per, f"remove {identifier}")
    report = ActionReport("configure --plan", [DeviceReport(t.serial, t.school, t.enrollment_id) for t in targets], 0,
                          plan=summary)
    audit.record(ctx.db, "ipad.configure.plan", target_text(targets),
                 {"devices": [t.serial for t in targets], "plan": summary}, actor=ctx.actor)
    return report


def _with_profile_lists(ctx: IPadContext, targets: list[Target], deadline: float) -> list[Target]:
    """The targets, those that never sent a ProfileList asked for one first (and read again)."""
    unknown = [t for t in targets if t.enrollment_id and t.device is not None and t.device.installed_profiles() is None]
    if not unknown:
        return targets
    send_and_wait(ctx, "configure", [Job(commands.profile_list(), unknown)], unknown, deadline)
    fresh = {t.serial: t for t in select_targets(ctx, serials=tuple(t.serial for t in unknown))}
    return [fresh.get(t.serial, t) for t in targets]


def configure(
    ctx: IPadContext,
    school: str | None = None,
    serials: tuple[str, ...] = (),
    plan: bool = False,
    max_devices: int | None = None,
    deadline_s: float | None = None,
    kind: str = "ipad",
) -> ActionReport:
    """Install/remove profiles so each device has exactly its set; `plan` only counts changes.

    The current profiles come from the newest ProfileList answer; iPads that never sent one are
    asked first (ProfileList, waiting up to the deadline).
    """
    targets = select_targets(ctx, school, serials, kind=kind)
    deadline = ctx.config.mdm.query_deadline_s if deadline_s is None else deadline_s
    if plan:
        return _plan(ctx, targets)
    check_blast_radius(ctx, sum(1 for t in targets if t.enrollment_id), max_devices, "configure")

    def run() -> ActionReport:
        current = _with_profile_lists(ctx, targets, deadline)
        changes = profile_changes(ctx, current)
        installs: dict[str, tuple[Profile, list[Target]]] = {}
        removes: dict[str, list[Target]] = {}
        for t in current:
            ch = changes.get(t.serial)
            if ch is None or not t.enrollment_id:
                continue
            for p in ch.install:
                installs.setdefault(p.identifier + p.uuid, (p, []))[1].append(t)
            for identifier in ch.remove:
                removes.setdefault(identifier, []).append(t)
        jobs = [Job(commands.install_profile(profile_payload_for_install(p, ctx.config)), ts, p.identifier,
                    {"profile": p.identifier, "payload_uuid": p.uuid}) for p, ts in installs.values()]
        jobs += [Job(commands.remove_profile(i), ts, i, {"profile": i}) for i, ts in removes.items()]
        report = send_and_wait(ctx, "configure", jobs, current, deadline)
        # Read back what is installed now, so the registry (and `ipad list`) shows the result.
        touched = {t.serial for _, ts in installs.values() for t in ts}
        touched |= {t.serial for ts in removes.values() for t in ts}
        changed = [t for t in current if t.serial in touched]
        if changed:
            send_and_wait(ctx, "configure", [Job(commands.profile_list(), changed)], changed, deadline)
        return report

    return audited(ctx, "configure", targets, run)
