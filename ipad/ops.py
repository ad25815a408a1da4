"""The library behind `werne ipad ...`: list, query, configure (and plan), lock, lost mode,
clear passcode and wipe, with the blast-radius and wipe confirmations and an audit record each.

Every function takes an `IPadContext` (config, state database, inventory, NanoMDM client) and
returns data; `cli.py` prints it. Results come back through the webhook receiver into the state
database, so the functions that wait for answers poll the registry until a deadline.

Exit codes of the reports: 0 every device answered as hoped, 1 some did not (failed, NotNow,
no answer yet: listed per device), 2 bad input (unknown serials, missing confirmation), 3 NanoMDM
unreachable (what was queued before is recorded, so nothing is lost).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core import audit
from core.config import Config
from core.db import Database
from core.errors import InputError
from core.findings import Findings
from core.inventory import Inventory, normalise_serial
from ipad import commands
from ipad.commands import Command
from ipad.models import MDMDevice
from ipad.store import FINAL, Registry, UnknownDevicesError
from mdm_client.errors import MDMError
from mdm_client.factory import nanomdm_client
from mdm_client.nanomdm import NanoMDMClient, NanoMDMError

POLL_S = 0.25


class SafetyError(MDMError, InputError):
    """An action was refused by a safety rule (blast radius, wipe confirmation); nothing was sent."""

    exit_code = 2


def certificate_list() -> Command:
    """CertificateList: the device's certificates, to read its identity certificate's expiry."""
    # Not (yet) among ipad.commands' builders; same shape: fresh CommandUUID, no keys.
    return Command(uuid=str(uuid.uuid4()).upper(), request_type="CertificateList")


def query_commands() -> list[Command]:
    """What `werne ipad query` asks each device (4 commands)."""
    return [
        commands.device_information(),
        commands.security_info(),
        commands.profile_list(),
        certificate_list(),
    ]


def open_store(db: Database, inventory: Inventory) -> Registry:
    """The iPad store of this database, which knows each serial's school and group from the inventory."""

    def school_of(serial: str) -> tuple[str, str] | None:
        ipad = inventory.ipads.get(serial)
        return (ipad.school, ipad.group) if ipad else None

    return Registry(db, school_of=school_of)


class IPadContext:
    """Config, database, inventory and (lazily) the NanoMDM client of one CLI call."""

    def __init__(
        self,
        config: Config,
        db: Database,
        inventory: Inventory,
        client: NanoMDMClient | None = None,
        actor: str | None = None,
    ):
        self.config = config
        self.db = db
        self.inventory = inventory
        self._client = client
        self.actor = actor or audit.current_actor()
        self.registry = Registry(db, school_of=self.school_of)

    def school_of(self, serial: str) -> tuple[str, str] | None:
        ipad = self.inventory.ipads.get(serial)
        return (ipad.school, ipad.group) if ipad else None

    @property
    def client(self) -> NanoMDMClient:
        if self._client is None:
            self._client = nanomdm_client(self.config)
        return self._client


# --- list ------------------------------------------------------------------------------------------


@dataclass
class IPadRow:
    """One iPad as `werne ipad list` shows it."""

    serial: str
    school: str | None
    group: str | None
    state: str  # enrolled | authenticated | checked_out | not_enrolled
    enrollment_id: str | None = None
    last_seen: datetime | None = None
    os_version: str | None = None
    pending: int = 0
    not_now: int = 0
    identity_cert_not_after: datetime | None = None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "school": self.school,
            "group": self.group,
            "state": self.state,
            "enrollment_id": self.enrollment_id,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "os_version": self.os_version,
            "pending": self.pending,
            "not_now": self.not_now,
            "identity_cert_not_after": self.identity_cert_not_after.isoformat()
            if self.identity_cert_not_after
            else None,
            "problems": self.problems,
        }


def _version_tuple(v: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in (v or "").split("."))
    except ValueError:
        return ()


def list_ipads(ctx: IPadContext, school: str | None = None, now: datetime | None = None) -> list[IPadRow]:
    """Every iPad of the inventory (or one school) and every enrolled device, with its problems."""
    now = now or datetime.now(UTC)
    cfg = ctx.config.mdm
    inv_ipads = ctx.inventory.ipads_of_school(school)
    by_serial = ctx.registry.devices_by_serial()
    pending = ctx.registry.pending_commands()
    errors = ctx.registry.last_errors()
    rows: list[IPadRow] = []
    seen: set[str] = set()
    min_os = _version_tuple(ctx.config.compliance.min_ipados)

    def row_for(dev: MDMDevice, serial: str, school_: str | None, group: str | None) -> IPadRow:
        cmds = pending.get(dev.enrollment_id, [])
        r = IPadRow(
            serial=serial,
            school=school_,
            group=group,
            state=dev.state,
            enrollment_id=dev.enrollment_id,
            last_seen=dev.last_seen_at,
            os_version=dev.os_version,
            pending=len(cmds),
            not_now=max((c.not_now_count for c in cmds), default=0),
            identity_cert_not_after=dev.identity_cert_not_after,
        )
        if dev.state == "checked_out":
            r.problems.append("checked out (MDM profile removed): re-enrol")
        elif dev.state == "authenticated":
            r.problems.append("enrolment incomplete (no TokenUpdate)")
        if dev.awaiting_configuration:
            r.problems.append("stuck in Setup Assistant (awaiting configuration)")
        if dev.last_seen_at is None or now - dev.last_seen_at > timedelta(days=cfg.stale_after_days):
            r.problems.append(f"not seen for more than {cfg.stale_after_days} days")
        if r.not_now >= 3:
            r.problems.append(f"NotNow {r.not_now} times (locked? the queue waits)")
        oldest = min((c.enqueued_at or c.updated_at for c in cmds), default=None)
        if oldest is not None and now - oldest > timedelta(days=1):
            r.problems.append(f"queue blocked: {len(cmds)} command(s) unanswered since {oldest:%Y-%m-%d}")
        if dev.identity_cert_not_after is not None:
            left = dev.identity_cert_not_after - now
            if left.total_seconds() <= 0:
                r.problems.append(f"identity certificate expired {dev.identity_cert_not_after:%Y-%m-%d}")
            elif left < timedelta(days=cfg.cert_warn_days):
                r.problems.append(f"identity certificate expires {dev.identity_cert_not_after:%Y-%m-%d}")
        if min_os and dev.os_version and _version_tuple(dev.os_version) < min_os:
            r.problems.append(f"iPadOS {dev.os_version} older than {ctx.config.compliance.min_ipados}")
        sec = (dev.facts or {}).get("SecurityInfo", {}).get("value") or {}
        if sec.get("PasscodePresent") is False:
            r.problems.append("no passcode")
        err = errors.get(dev.enrollment_id)
        if err is not None:
            chain = "; ".join(
                f"{e.get('ErrorDomain', '?')} {e.get('ErrorCode', '?')}: "
                f"{e.get('USEnglishDescription') or e.get('LocalizedDescription') or ''}".strip()
                for e in err.error_chain or []
            )
            what = err.request_type + (f" {err.detail.get('profile')}" if err.detail.get("profile") else "")
            r.problems.append(f"{what} failed: {chain or err.status}")
        return r

    for ipad in inv_ipads:
        seen.add(ipad.serial)
        dev = by_serial.get(ipad.serial)
        if dev is None:
            rows.append(
                IPadRow(
                    serial=ipad.serial,
                    school=ipad.school,
                    group=ipad.group,
                    state="not_enrolled",
                    problems=["not enrolled in MDM"],
                )
            )
        else:
            rows.append(row_for(dev, ipad.serial, ipad.school, ipad.group))
    if school is None:
        for serial, dev in by_serial.items():
            if serial not in seen:
                r = row_for(dev, serial, dev.school, dev.group)
                r.problems.insert(0, "not in the inventory (ipads.csv)")
                rows.append(r)
    return sorted(rows, key=lambda r: (r.school or "~", r.serial))


# --- targets ---------------------------------------------------------------------------------------


@dataclass
class Target:
    """One iPad an action is for."""

    serial: str
    school: str | None
    group: str | None
    device: MDMDevice | None

    @property
    def enrollment_id(self) -> str | None:
        return self.device.enrollment_id if self.device is not None and self.device.state == "enrolled" else None


def select_targets(
    ctx: IPadContext,
    school: str | None = None,
    serials: list[str] | tuple[str, ...] = (),
    require_serials: bool = False,
) -> list[Target]:
    """The iPads named by serial, or of one school, or all; unknown serials raise (exit 2)."""
    if school and serials:
        raise InputError("give either --school or serials, not both")
    if require_serials and not serials:
        raise InputError("name the iPads by serial")
    by_serial = ctx.registry.devices_by_serial()
    if serials:
        wanted = list(dict.fromkeys(normalise_serial(s) for s in serials))
        unknown = [s for s in wanted if s not in ctx.inventory.ipads and s not in by_serial]
        if unknown:
            raise UnknownDevicesError(
                f"unknown serial{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                "(not in ipads.csv and never enrolled)",
                unknown,
            )
    else:
        wanted = [i.serial for i in ctx.inventory.ipads_of_school(school)]
    out = []
    for s in wanted:
        ipad = ctx.inventory.ipads.get(s)
        dev = by_serial.get(s)
        out.append(
            Target(
                s,
                ipad.school if ipad else (dev.school if dev else None),
                ipad.group if ipad else (dev.group if dev else None),
                dev,
            )
        )
    return out


def check_blast_radius(ctx: IPadContext, count: int, max_devices: int | None, action: str) -> None:
    limit = ctx.config.mdm.blast_radius
    if max_devices is not None and count > max_devices:
        raise SafetyError(
            f"{action} would touch {count} iPads, more than --max-devices {max_devices}; nothing was sent"
        )
    if count > limit and max_devices is None:
        raise SafetyError(
            f"{action} would touch {count} iPads, more than mdm.blast_radius {limit}; "
            f"add --max-devices {count} to confirm; nothing was sent"
        )


# --- sending and waiting ----------------------------------------------------------------------------


@dataclass
class CommandOutcome:
    """One command to one device, as it stands at the end of the wait."""

    request_type: str
    status: str  # Acknowledged | Error | CommandFormatError | NotNow | queued | not sent
    detail: str = ""
    label: str = ""  # e.g. the profile identifier


@dataclass
class DeviceReport:
    """Everything one action did to one iPad."""

    serial: str
    school: str | None
    enrollment_id: str | None
    outcomes: list[CommandOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            bool(self.outcomes)
            and all(o.status == "Acknowledged" for o in self.outcomes)
            or (not self.outcomes and self.enrollment_id is not None)
        )

    @property
    def answered(self) -> bool:
        return all(o.status in FINAL for o in self.outcomes)

    def summary(self) -> str:
        if not self.outcomes:
            return "nothing to do" if self.enrollment_id else "not enrolled"
        parts = []
        for o in self.outcomes:
            s = f"{o.request_type}{' ' + o.label if o.label else ''}: {o.status}"
            parts.append(s + (f" ({o.detail})" if o.detail else ""))
        return "; ".join(parts)


@dataclass
class ActionReport(Findings):
    """The result of one ipad action, per device."""

    action: str
    devices: list[DeviceReport]
    deadline_s: float = 0.0
    plan: dict[str, dict[str, int]] | None = None

    @property
    def not_answered(self) -> list[str]:
        return [d.serial for d in self.devices if any(o.status in ("queued", "NotNow") for o in d.outcomes)]

    @property
    def failed(self) -> list[str]:
        return [d.serial for d in self.devices if not d.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for d in self.devices:
            c["ok" if d.ok else "not ok"] += 1
        return dict(c)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "counts": self.counts(),
            "not_answered": self.not_answered,
            "plan": self.plan,
            "devices": [
                {
                    "serial": d.serial,
                    "school": d.school,
                    "enrollment_id": d.enrollment_id,
                    "ok": d.ok,
                    "summary": d.summary(),
                }
                for d in self.devices
            ],
        }


@dataclass
class _Sent:
    command: Command
    targets: list[Target]
    label: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def _send_and_wait(
    ctx: IPadContext,
    action: str,
    jobs: list[_Sent],
    all_targets: list[Target],
    deadline_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> ActionReport:
    """Enqueue every job (recording each as it is queued), then wait for the answers."""
    reports = {t.serial: DeviceReport(t.serial, t.school, t.enrollment_id) for t in all_targets}
    expect: dict[tuple[str, str], tuple[str, CommandOutcome]] = {}
    for job in jobs:
        ids = {t.enrollment_id: t for t in job.targets if t.enrollment_id}
        for t in job.targets:
            if not t.enrollment_id:
                reports[t.serial].outcomes.append(
                    CommandOutcome(job.command.request_type, "not sent", "not enrolled", job.label)
                )
        if not ids:
            continue
        for cmd, chunk in ctx.client.chunks(job.command, list(ids)):
            ctx.registry.record_planned(cmd.uuid, cmd.request_type, chunk, ctx.actor, {**job.detail, "action": action})
            try:
                res = ctx.client.enqueue_chunk(cmd, chunk)
            except NanoMDMError:
                ctx.registry.mark_not_queued(cmd.uuid, dict.fromkeys(chunk, "not queued: NanoMDM unreachable"))
                raise
            ctx.registry.mark_not_queued(cmd.uuid, res.failed)
            for eid in chunk:
                t = ids[eid]
                if eid in res.failed:
                    o = CommandOutcome(cmd.request_type, "not sent", res.failed[eid], job.label)
                else:
                    o = CommandOutcome(cmd.request_type, "queued", res.push_pending.get(eid, ""), job.label)
                    expect[(cmd.uuid, eid)] = (t.serial, o)
                reports[t.serial].outcomes.append(o)
    end = time.monotonic() + deadline_s
    uuids = list({k[0] for k in expect})
    while expect and uuids:
        uuids = list({k[0] for k in expect})
        for row in ctx.registry.command_states(uuids):
            key = (row.command_uuid, row.enrollment_id)
            if key not in expect:
                continue
            _, o = expect[key]
            o.status = row.status
            if row.status in FINAL:
                o.detail = "; ".join(
                    f"{e.get('ErrorDomain', '?')} {e.get('ErrorCode', '?')}: "
                    f"{e.get('USEnglishDescription') or e.get('LocalizedDescription') or ''}".strip()
                    for e in row.error_chain or []
                )
                del expect[key]
            elif row.status == "NotNow":
                o.detail = f"device said NotNow {row.not_now_count}x; offered again at its next check-in"
        if not expect or time.monotonic() >= end:
            break
        # Poll gently when thousands of answers are due: the webhook needs the CPU more.
        sleep(min(2.0, max(POLL_S, len(expect) / 1000)))
    for _, o in expect.values():
        if o.status == "queued":
            o.detail = f"no answer within {deadline_s:g} s; stays queued, {o.detail or 'picked up at next check-in'}"
    return ActionReport(action, [reports[t.serial] for t in all_targets], deadline_s)


def _audited(
    ctx: IPadContext,
    action: str,
    targets: list[Target],
    run: Callable[[], ActionReport],
    extra: dict[str, Any] | None = None,
) -> ActionReport:
    detail: dict[str, Any] = {"devices": [t.serial for t in targets], **(extra or {})}
    try:
        report = run()
    except MDMError as e:
        audit.record(
            ctx.db,
            f"ipad.{action}",
            _target_text(targets),
            {**detail, "result": f"error: {e}"},
            actor=ctx.actor,
        )
        raise
    audit.record(
        ctx.db,
        f"ipad.{action}",
        _target_text(targets),
        {
            **detail,
            "result": report.counts(),
            "not_answered": report.not_answered,
            "per_device": {d.serial: d.summary()[:300] for d in report.devices},
        },
        actor=ctx.actor,
    )
    return report


def _target_text(targets: list[Target]) -> str:
    s = ",".join(t.serial for t in targets[:20])
    return s + (f",… ({len(targets)} iPads)" if len(targets) > 20 else "")


# --- actions ---------------------------------------------------------------------------------------


def query(
    ctx: IPadContext,
    school: str | None = None,
    serials: tuple[str, ...] = (),
    deadline_s: float | None = None,
    with_apps: bool = False,
) -> ActionReport:
    """DeviceInformation + SecurityInfo + ProfileList + CertificateList (+ ManagedApplicationList
    `with_apps`, as the compliance sweep asks); waits, stores, reports."""
    targets = select_targets(ctx, school, serials)
    deadline = ctx.config.mdm.query_deadline_s if deadline_s is None else deadline_s
    cmds = query_commands() + ([commands.managed_application_list()] if with_apps else [])
    jobs = [_Sent(c, targets) for c in cmds]
    return _audited(ctx, "query", targets, lambda: _send_and_wait(ctx, "query", jobs, targets, deadline))


@dataclass
class ProfileChange:
    install: list[Any]  # ipad.profiles.Profile
    remove: list[str]
    known: bool  # False when the device never sent a ProfileList


def _profile_changes(ctx: IPadContext, targets: list[Target]) -> dict[str, ProfileChange]:
    from ipad.profiles import load_group_assignment, profile_set_for

    prefix = load_group_assignment(ctx.config).identifier_prefix + "."
    sets: dict[str, list[Any]] = {}
    out: dict[str, ProfileChange] = {}
    for t in targets:
        if t.group is None:
            continue
        if t.group not in sets:
            sets[t.group] = profile_set_for(t.group, ctx.config)
        want = sets[t.group]
        facts = (t.device.facts or {}).get("ProfileList") if t.device is not None else None
        if facts is None:
            out[t.serial] = ProfileChange(list(want), [], False)
            continue
        have = {p.get("PayloadIdentifier"): p.get("PayloadUUID") for p in facts.get("value") or []}
        install = [p for p in want if have.get(p.identifier) != p.uuid]
        wanted_ids = {p.identifier for p in want}
        remove = sorted(i for i in have if i and i.startswith(prefix) and i not in wanted_ids)
        out[t.serial] = ProfileChange(install, remove, True)
    return out


def configure(
    ctx: IPadContext,
    school: str | None = None,
    serials: tuple[str, ...] = (),
    plan: bool = False,
    max_devices: int | None = None,
    deadline_s: float | None = None,
) -> ActionReport:
    """Install/remove profiles so each iPad has exactly its group's set; `plan` only counts changes.

    The current profiles come from the newest ProfileList answer; iPads that never sent one are
    asked first (ProfileList, waiting up to the deadline).
    """
    from ipad.profiles import profile_payload_for_install

    targets = select_targets(ctx, school, serials)
    deadline = ctx.config.mdm.query_deadline_s if deadline_s is None else deadline_s
    if plan:
        changes = _profile_changes(ctx, targets)
        summary: dict[str, dict[str, int]] = {}
        for t in targets:
            ch = changes.get(t.serial)
            per = summary.setdefault(t.school or "(no school)", {})
            if t.enrollment_id is None:
                per["not enrolled: nothing sent"] = per.get("not enrolled: nothing sent", 0) + 1
                continue
            if ch is None or (not ch.install and not ch.remove):
                per["no change"] = per.get("no change", 0) + 1
                continue
            suffix = "" if ch.known else " (no ProfileList yet: assumed missing)"
            for p in ch.install:
                k = f"install {p.identifier}{suffix}"
                per[k] = per.get(k, 0) + 1
            for i in ch.remove:
                per[f"remove {i}"] = per.get(f"remove {i}", 0) + 1
        report = ActionReport(
            "configure --plan",
            [DeviceReport(t.serial, t.school, t.enrollment_id) for t in targets],
            0,
            plan=summary,
        )
        audit.record(
            ctx.db,
            "ipad.configure.plan",
            _target_text(targets),
            {"devices": [t.serial for t in targets], "plan": summary},
            actor=ctx.actor,
        )
        return report
    check_blast_radius(ctx, sum(1 for t in targets if t.enrollment_id), max_devices, "configure")

    def run() -> ActionReport:
        unknown = [t for t in targets if t.enrollment_id and not (t.device.facts or {}).get("ProfileList")]
        if unknown:
            _send_and_wait(ctx, "configure", [_Sent(commands.profile_list(), unknown)], unknown, deadline)
            fresh = {t.serial: t for t in select_targets(ctx, serials=tuple(t.serial for t in unknown))}
            for i, t in enumerate(targets):
                if t.serial in fresh:
                    targets[i] = fresh[t.serial]
        changes = _profile_changes(ctx, targets)
        jobs: list[_Sent] = []
        installs: dict[str, tuple[Any, list[Target]]] = {}
        removes: dict[str, list[Target]] = {}
        for t in targets:
            ch = changes.get(t.serial)
            if ch is None or not t.enrollment_id:
                continue
            for p in ch.install:
                installs.setdefault(p.identifier + p.uuid, (p, []))[1].append(t)
            for i in ch.remove:
                removes.setdefault(i, []).append(t)
        for p, ts in installs.values():
            jobs.append(
                _Sent(
                    commands.install_profile(profile_payload_for_install(p, ctx.config)),
                    ts,
                    p.identifier,
                    {"profile": p.identifier, "payload_uuid": p.uuid},
                )
            )
        for i, ts in removes.items():
            jobs.append(_Sent(commands.remove_profile(i), ts, i, {"profile": i}))
        report = _send_and_wait(ctx, "configure", jobs, targets, deadline)
        # Read back what is installed now, so the registry (and `ipad list`) shows the result.
        touched = {t.serial for _, ts in installs.values() for t in ts} | {
            t.serial for ts in removes.values() for t in ts
        }
        changed = [t for t in targets if t.serial in touched]
        if changed:
            _send_and_wait(ctx, "configure", [_Sent(commands.profile_list(), changed)], changed, deadline)
        return report

    return _audited(ctx, "configure", targets, run)


def _simple_action(
    ctx: IPadContext,
    action: str,
    serials: tuple[str, ...],
    make: Callable[[Target], Command | str],
    max_devices: int | None,
    deadline_s: float | None,
    extra: dict[str, Any] | None = None,
) -> ActionReport:
    targets = select_targets(ctx, serials=serials, require_serials=True)
    check_blast_radius(ctx, len(targets), max_devices, action)
    deadline = 30.0 if deadline_s is None else deadline_s

    def run() -> ActionReport:
        jobs: dict[str, _Sent] = {}
        reports_extra: dict[str, str] = {}
        for t in targets:
            if not t.enrollment_id:
                continue
            cmd = make(t)
            if isinstance(cmd, str):
                reports_extra[t.serial] = cmd
                continue
            # One enqueue for a shared command; ClearPasscode has one per device (its UnlockToken).
            jobs.setdefault(cmd.uuid, _Sent(cmd, [])).targets.append(t)
        report = _send_and_wait(ctx, action, list(jobs.values()), targets, deadline)
        for d in report.devices:
            if d.serial in reports_extra:
                d.outcomes.append(CommandOutcome(action, "not sent", reports_extra[d.serial]))
            elif d.enrollment_id is None:
                d.outcomes.append(CommandOutcome(action, "not sent", "not enrolled"))
        return report

    return _audited(ctx, action, targets, run, extra)


def lock(
    ctx: IPadContext,
    serials: tuple[str, ...],
    message: str | None = None,
    phone: str | None = None,
    max_devices: int | None = None,
    deadline_s: float | None = None,
) -> ActionReport:
    """DeviceLock on the named iPads."""
    cmd = commands.device_lock(message, phone)
    return _simple_action(ctx, "lock", serials, lambda _t: cmd, max_devices, deadline_s)


def lost_mode(
    ctx: IPadContext,
    serials: tuple[str, ...],
    message: str | None = None,
    phone: str | None = None,
    footnote: str | None = None,
    disable: bool = False,
    max_devices: int | None = None,
    deadline_s: float | None = None,
) -> ActionReport:
    """EnableLostMode (message or phone needed; default: the school's support phone) or DisableLostMode."""
    if disable:
        cmd = commands.disable_lost_mode()
        return _simple_action(ctx, "lost-mode", serials, lambda _t: cmd, max_devices, deadline_s, {"disable": True})
    if message is None and phone is None:

        def make(t: Target) -> Command | str:
            school = ctx.inventory.schools.get(t.school or "")
            if school is None or not school.support_phone:
                return "lost mode needs --message or --phone (the school has no support phone)"
            return commands.enable_lost_mode(f"Dieses iPad gehört der {school.name}.", school.support_phone, footnote)

        return _simple_action(ctx, "lost-mode", serials, make, max_devices, deadline_s)
    cmd = commands.enable_lost_mode(message, phone, footnote)
    return _simple_action(ctx, "lost-mode", serials, lambda _t: cmd, max_devices, deadline_s)


def clear_passcode(
    ctx: IPadContext,
    serials: tuple[str, ...],
    max_devices: int | None = None,
    deadline_s: float | None = None,
) -> ActionReport:
    """ClearPasscode with each iPad's UnlockToken (from its TokenUpdate)."""

    def make(t: Target) -> Command | str:
        token = t.device.unlock_token if t.device is not None else None
        if not token:
            return "no UnlockToken stored for this iPad (it sent none at enrolment)"
        return commands.clear_passcode(token)

    return _simple_action(ctx, "clear-passcode", serials, make, max_devices, deadline_s)


def wipe(
    ctx: IPadContext,
    serials: tuple[str, ...],
    typed_confirmation: str | None = None,
    yes: bool = False,
    max_devices: int | None = None,
    deadline_s: float | None = None,
    return_to_service: bool = False,
) -> ActionReport:
    """EraseDevice. Needs the serials typed again, or `yes` with `max_devices` equal to the count.

    `return_to_service`: the iPad re-enrols by itself after the erase (iPadOS 17+; older ones are
    not sent the erase, with the reason) and ipad.returns brings it back into its group.
    """
    wanted = list(dict.fromkeys(normalise_serial(s) for s in serials))
    if not wanted:
        raise InputError("name the iPads to wipe by serial")
    if yes:
        if max_devices != len(wanted):
            raise SafetyError(f"wipe --yes needs --max-devices {len(wanted)} (the number of serials); nothing was sent")
    else:
        typed = sorted(normalise_serial(s) for s in (typed_confirmation or "").replace(",", " ").split())
        if typed != sorted(wanted):
            audit.record(
                ctx.db,
                "ipad.wipe",
                ",".join(wanted),
                {"devices": wanted, "result": "not confirmed"},
                actor=ctx.actor,
            )
            raise SafetyError("the serials typed did not match; nothing was wiped")
        max_devices = max_devices if max_devices is not None else len(wanted)
    if not return_to_service:
        cmd = commands.erase_device()
        return _simple_action(ctx, "wipe", tuple(wanted), lambda _t: cmd, max_devices, deadline_s)
    from ipad.returns import record_returns, return_to_service_command, rts_refusal

    cmd = return_to_service_command(ctx)  # builds the Wi-Fi (and enrolment) profile first: may refuse
    report = _simple_action(ctx, "wipe", tuple(wanted), lambda t: rts_refusal(t) or cmd, max_devices, deadline_s,
                            {"return_to_service": True})
    record_returns(ctx, report, cmd)
    return report
