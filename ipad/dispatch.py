"""Sending commands to iPads and waiting for their answers: what every `werne ipad` action shares.

An action runs in an `IPadContext` (config, state database, inventory, NanoMDM client, actor). It
picks its `Target`s (`select_targets`), passes the blast-radius gate (`check_blast_radius`), sends
its `Job`s and waits (`send_and_wait`), inside `audited`, which writes one audit record with the
outcome per device. Answers come back through the webhook receiver into the registry, so waiting
is polling the registry until every answer is in or the deadline passed.

Exit codes of the reports: 0 every device answered as hoped, 1 some did not (failed, NotNow,
no answer yet: listed per device), 2 bad input (unknown serials, missing confirmation), 3 NanoMDM
unreachable (what was queued before is recorded, so nothing is lost).
"""

from __future__ import annotations

import logging
import time
import uuid as uuid_module
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core import audit
from core.config import Config
from core.db import Database
from core.errors import InputError
from core.findings import Findings
from core.inventory import Inventory, normalise_serial
from core.text import one_line
from core.timing import StepTimes, timed
from ipad.commands import READ_ONLY, Command
from ipad.errors import IPadError, SafetyError, UnknownDevicesError
from ipad.results import error_chain_text
from ipad.store.devices import Device
from ipad.store.events import FINAL
from ipad.store.messages import Placement
from ipad.store.observers import Observer
from ipad.store.registry import Registry
from mdm_client.errors import MDMError, NanoMDMError
from mdm_client.factory import nanomdm_client
from mdm_client.nanomdm import PUSH_PENDING, NanoMDMClient

log = logging.getLogger("werne.ipad")

POLL_S = 0.2
# A query's answer counts as lost when the device went on (answered a command queued after it, or
# was heard from) this long after werne last saw it answer, with no answer to the query (see
# `lost_answers`).
LOST_AFTER_S = 10.0
# ... and only while the webhook receiver keeps up: when the events it stores come this much later
# than NanoMDM made them (Registry.receiver_lag), answers are late, not lost, and asking again
# would only add to its load.
RECEIVER_BEHIND_S = 2.0
# How often the wait looks for lost answers: it reads the devices' last-seen times, which for a
# sweep with many switched-off iPads is one read of hundreds of rows, not worth every POLL_S.
LOST_CHECK_S = 1.0
# Target lists longer than this are cut in the audit record's target text.
TARGET_TEXT_SERIALS = 20


APPLETV_GROUP = "appletv"


def placement_of(inventory: Inventory, serial: str) -> tuple[str, str] | None:
    """(school, group) of a serial as the inventory says: an iPad's group, or "appletv" for an
    Apple TV; None for a serial it does not list."""
    ipad = inventory.ipads.get(serial)
    if ipad is not None:
        return ipad.school, ipad.group
    tv = inventory.appletvs.get(serial)
    return (tv.school, APPLETV_GROUP) if tv is not None else None


def placements(inventory: Inventory) -> Placement:
    """serial -> (school, group) as the inventory says, None for a serial it does not list."""

    def school_of(serial: str) -> tuple[str, str] | None:
        return placement_of(inventory, serial)

    return school_of


def open_registry(db: Database, inventory: Inventory, observers: Sequence[Observer] = ()) -> Registry:
    """The registry of this database, which places each serial in its school and group by the inventory."""
    return Registry(db, school_of=placements(inventory), observers=observers)


class IPadContext:
    """Config, database, inventory and (lazily) the NanoMDM client of one CLI call."""

    def __init__(
        self,
        config: Config,
        db: Database,
        inventory: Inventory,
        client: NanoMDMClient | None = None,
        actor: str | None = None,
        extra_profiles: Callable[[str], list[Any]] | None = None,
    ):
        self.config = config
        self.db = db
        self.inventory = inventory
        self._client = client
        self.actor = actor or audit.current_actor()
        self.registry = Registry(db, school_of=self.school_of)
        # serial -> profiles a device has beyond its group's set (its class's Education
        # configuration); None: none (ipad.classroom gives one).
        self.extra_profiles = extra_profiles

    def school_of(self, serial: str) -> tuple[str, str] | None:
        return placement_of(self.inventory, serial)

    @property
    def client(self) -> NanoMDMClient:
        if self._client is None:
            self._client = nanomdm_client(self.config)
        return self._client

    def with_inventory(self, inventory: Inventory) -> IPadContext:
        """The same call (config, database, client, actor) over another inventory, e.g. one after a move."""
        return IPadContext(self.config, self.db, inventory, client=self._client, actor=self.actor,
                           extra_profiles=self.extra_profiles)


# --- targets ---------------------------------------------------------------------------------------


@dataclass
class Target:
    """One iPad an action is for."""

    serial: str
    school: str | None
    group: str | None
    device: Device | None

    @property
    def enrollment_id(self) -> str | None:
        return self.device.enrollment_id if self.device is not None and self.device.state == "enrolled" else None


def select_targets(
    ctx: IPadContext,
    school: str | None = None,
    serials: Sequence[str] = (),
    require_serials: bool = False,
    kind: str = "ipad",
    by_serial: dict[str, Device] | None = None,
) -> list[Target]:
    """The iPads (kind "appletv": the Apple TVs) named by serial, or of one school, or all; unknown
    serials raise (exit 2). `by_serial`: the registry's devices as the caller just read them (else
    they are read here)."""
    if school and serials:
        raise InputError("give either --school or serials, not both")
    if require_serials and not serials:
        raise InputError("name the iPads by serial")
    if by_serial is None:
        by_serial = ctx.registry.devices_by_serial()
    if serials:
        wanted = list(dict.fromkeys(normalise_serial(s) for s in serials))
        known = ctx.inventory.appletvs if kind == APPLETV_GROUP else ctx.inventory.ipads
        unknown = [s for s in wanted if s not in known and (s not in by_serial or kind == APPLETV_GROUP)]
        other = ctx.inventory.ipads if kind == APPLETV_GROUP else ctx.inventory.appletvs
        wrong = [s for s in wanted if s in other]
        if wrong:
            what = "an iPad" if kind == APPLETV_GROUP else "an Apple TV"
            raise UnknownDevicesError(f"{', '.join(wrong)}: {what}; use `werne "
                                      f"{'ipad' if kind == APPLETV_GROUP else 'appletv'} ...` for it", wrong)
        if unknown:
            where = "appletvs.csv" if kind == APPLETV_GROUP else "ipads.csv and never enrolled"
            raise UnknownDevicesError(
                f"unknown serial{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} (not in {where})",
                unknown,
            )
    elif kind == APPLETV_GROUP:
        wanted = [t.serial for t in ctx.inventory.appletvs_of_school(school)]
    else:
        wanted = [i.serial for i in ctx.inventory.ipads_of_school(school)]
    out = []
    for s in wanted:
        placed = placement_of(ctx.inventory, s)
        dev = by_serial.get(s)
        out.append(
            Target(
                s,
                placed[0] if placed else (dev.school if dev else None),
                placed[1] if placed else (dev.group if dev else None),
                dev,
            )
        )
    return out


def check_blast_radius(ctx: IPadContext, count: int, max_devices: int | None, action: str) -> None:
    """Refuse (SafetyError, exit 2) an action on more iPads than --max-devices, or than
    mdm.blast_radius without --max-devices; nothing is sent then."""
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


def target_text(targets: Sequence[Target]) -> str:
    """The audit record's target: the serials, cut after TARGET_TEXT_SERIALS with the count."""
    s = ",".join(t.serial for t in targets[:TARGET_TEXT_SERIALS])
    return s + (f",… ({len(targets)} iPads)" if len(targets) > TARGET_TEXT_SERIALS else "")


# --- the reports -----------------------------------------------------------------------------------


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


# --- sending and waiting ----------------------------------------------------------------------------


@dataclass
class Job:
    """One command for some targets: `label` names it in the report, `detail` goes into its stored rows."""

    command: Command
    targets: list[Target]
    label: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def send_and_wait(
    ctx: IPadContext,
    action: str,
    jobs: Sequence[Job],
    all_targets: Sequence[Target],
    deadline_s: float,
    sleep: Callable[[float], None] = time.sleep,
    times: StepTimes | None = None,
) -> ActionReport:
    """Enqueue every job (recording each as it is queued), then wait for the answers. `times` gets
    the steps mdm.record, mdm.enqueue and mdm.wait (core.timing)."""
    reports = {t.serial: DeviceReport(t.serial, t.school, t.enrollment_id) for t in all_targets}
    expect = _enqueue(ctx, action, jobs, reports, times)
    uuids = list({k[0] for k in expect})
    with timed(times, "mdm.wait") as detail:
        detail["answers"] = len(expect)
        asked_again = _wait_for_answers(ctx, action, expect, deadline_s, sleep)
        detail["unanswered"] = len(expect)
        detail["asked_again"] = len(asked_again)
        uuids += asked_again
    if times is not None:
        span = ctx.registry.answer_span(uuids)
        if span is not None:
            # The receiver is another process: its CPU is not this one's (bench/nightly.py reads it).
            first, last = times.offset(span[0]), times.offset(span[1])
            times.add("mdm.ingest", last - first, None, "", start=first, end=last, answers=span[2])
    for e in expect.values():
        o = e.outcome
        if o.status == "queued":
            o.detail = f"no answer within {deadline_s:g} s; stays queued, {o.detail or 'picked up at next check-in'}"
    return ActionReport(action, [reports[t.serial] for t in all_targets], deadline_s)


@dataclass
class Pending:
    """One queued (command, device) the wait expects an answer to."""

    outcome: CommandOutcome  # what the wait updates (a command asked again shares its original's)
    command: Command
    target: Target
    rank: int  # the command's place in the device's queue: jobs are queued in order
    queued_at: datetime
    asked_again: bool = False


# (CommandUUID, enrollment id) -> what is pending
Expected = dict[tuple[str, str], Pending]


def _enqueue(ctx: IPadContext, action: str, jobs: Sequence[Job], reports: dict[str, DeviceReport],
             times: StepTimes | None = None) -> Expected:
    """Record and enqueue each job, chunked as the client's URL length allows, without a push; then
    one push per device (`_push`). What is queued is expected."""
    expect: Expected = {}
    for rank, job in enumerate(jobs):
        ids = {t.enrollment_id: t for t in job.targets if t.enrollment_id}
        for t in job.targets:
            if not t.enrollment_id:
                reports[t.serial].outcomes.append(
                    CommandOutcome(job.command.request_type, "not sent", "not enrolled", job.label)
                )
        if not ids:
            continue
        for cmd, chunk in ctx.client.chunks(job.command, list(ids)):
            with timed(times, "mdm.record"):
                ctx.registry.record_planned(cmd.uuid, cmd.request_type, chunk, ctx.actor,
                                            {**job.detail, "action": action})
            try:
                with timed(times, "mdm.enqueue") as detail:
                    detail["commands"] = len(chunk)
                    res = ctx.client.enqueue_chunk(cmd, chunk, push=False, answered=ctx.registry.answered_any)
            except NanoMDMError:
                ctx.registry.mark_not_queued(cmd.uuid, dict.fromkeys(chunk, "not queued: NanoMDM unreachable"))
                raise
            with timed(times, "mdm.record"):
                ctx.registry.mark_not_queued(cmd.uuid, res.failed)
            queued_at = datetime.now(UTC)
            for eid in chunk:
                t = ids[eid]
                if eid in res.failed:
                    o = CommandOutcome(cmd.request_type, "not sent", res.failed[eid], job.label)
                else:
                    o = CommandOutcome(cmd.request_type, "queued", "", job.label)
                    expect[(cmd.uuid, eid)] = Pending(o, cmd, t, rank, queued_at)
                reports[t.serial].outcomes.append(o)
    _push(ctx, expect, times)
    return expect


def _push(ctx: IPadContext, expect: Expected, times: StepTimes | None) -> None:
    """Wake each device once, after all its commands are queued: one APNs push per device instead
    of one per command, and a device that wakes finds all of them in one check-in. A push that
    fails leaves the commands queued for the next check-in (the outcome says so); a device NanoMDM
    has no push token for never fetches them, so they count as not sent."""
    ids = sorted({eid for _, eid in expect})
    if not ids:
        return
    with timed(times, "mdm.push") as detail:
        detail["devices"] = len(ids)
        try:
            res = ctx.client.push(ids)
            pending, no_token = res.pending, res.no_token
        except NanoMDMError as e:
            pending, no_token = dict.fromkeys(ids, f"{PUSH_PENDING} (push failed: {one_line(str(e), 120)})"), {}
    unreachable: dict[str, dict[str, str]] = {}
    for key, p in list(expect.items()):
        uuid, eid = key
        o = p.outcome
        if eid in no_token:
            o.status, o.detail = "not sent", no_token[eid]
            unreachable.setdefault(uuid, {})[eid] = no_token[eid]
            del expect[key]
        else:
            o.detail = pending.get(eid, "")
    for uuid, reasons in unreachable.items():
        ctx.registry.mark_not_queued(uuid, reasons)


# How far back the wait re-reads rows by their update time: a batch stamps its rows when it starts,
# and commits a few milliseconds later; a receiver on another host may have its clock this far off.
RECHECK_S = 5.0


def _wait_for_answers(ctx: IPadContext, action: str, expect: Expected, deadline_s: float,
                      sleep: Callable[[float], None]) -> list[str]:
    """Poll the registry until every expected answer is final or the deadline passed (`expect` shrinks).

    Each poll reads only the rows updated since shortly before the previous one (RECHECK_S), so it
    costs what arrived, not the whole sweep: it can poll every POLL_S and end right after the last
    answer. At the deadline, one full read catches anything a clock could have hidden. A query whose
    answer was lost on its way to werne is asked again, once (`lost_answers`); the CommandUUIDs asked
    again are returned."""
    end = time.monotonic() + deadline_s
    since: datetime | None = None
    answered: dict[str, tuple[int, datetime]] = {}  # enrollment id -> (highest rank answered, seen at)
    next_lost_check = 0.0  # lost answers are looked for every LOST_CHECK_S, not on every poll
    asked_again: list[str] = []
    while expect:
        uuids = list({k[0] for k in expect})
        polled_at = datetime.now(UTC)
        last = time.monotonic() >= end
        for row in ctx.registry.command_states(uuids, None if last else since):
            key = (row.command_uuid, row.enrollment_id)
            e = expect.get(key)
            if e is None:
                continue
            o = e.outcome
            o.status = row.status
            if row.status in FINAL:
                o.detail = error_chain_text(row.error_chain)
                del expect[key]
                rank = max(e.rank, answered.get(row.enrollment_id, (-1, polled_at))[0])
                answered[row.enrollment_id] = (rank, polled_at)
            elif row.status == "NotNow":
                o.detail = f"device said NotNow {row.not_now_count}x; offered again at its next check-in"
        if not expect or last:
            break
        if time.monotonic() >= next_lost_check:
            next_lost_check = time.monotonic() + LOST_CHECK_S
            lost = lost_answers(expect, answered, polled_at, ctx.registry.last_seen, ctx.registry.receiver_lag)
            if lost:
                asked_again += _ask_again(ctx, action, expect, lost)
        since = polled_at - timedelta(seconds=RECHECK_S)
        sleep(max(0.0, min(POLL_S, end - time.monotonic())))
    return asked_again


def lost_answers(expect: Expected, answered: dict[str, tuple[int, datetime]], now: datetime,
                 last_seen: Callable[[list[str]], dict[str, datetime]],
                 receiver_lag: Callable[[], float | None]) -> list[tuple[str, str]]:
    """The pending queries whose answers were lost on their way to werne: NanoMDM answers the device
    first and posts the event afterwards, best effort, so a replica killed (or the receiver down) in
    between loses it, while the device goes on. A device is handed its queue oldest first, and
    answers a command in the same session it is handed it, so a query still queued in werne (not
    NotNow), not asked again before, is lost when, LOST_AFTER_S ago or earlier, werne
    - saw the device answer a command this action queued after it (it was passed over), or
    - heard from the device (an answer or an Idle poll) after the query was queued and after its
      last answer werne saw: it has been handed its queue since.
    None is lost while the receiver is behind (`receiver_lag()` over RECEIVER_BEHIND_S): under a
    burst NanoMDM's posts queue up and arrive out of order, late rather than lost. A device that is
    slow, or whose one event is late by more than LOST_AFTER_S, is asked once more for nothing:
    harmless for a query, and never for a command that changes the device (READ_ONLY).
    `answered`: enrollment id -> (the highest rank of its answers in this action, when werne saw it);
    `last_seen(ids)`: when the receiver last heard from each (Registry.last_seen)."""
    grace = timedelta(seconds=LOST_AFTER_S)
    candidates = [(key, e) for key, e in expect.items()
                  if e.outcome.status == "queued" and not e.asked_again and e.command.request_type in READ_ONLY
                  and e.queued_at <= now - grace]
    if not candidates:
        return []
    out: list[tuple[str, str]] = []
    unsure: list[tuple[tuple[str, str], Pending]] = []
    for key, e in candidates:
        rank, seen = answered.get(key[1], (-1, None))
        if rank > e.rank and seen is not None and seen <= now - grace:
            out.append(key)
        else:
            unsure.append((key, e))
    if unsure:
        heard = last_seen(sorted({key[1] for key, _ in unsure}))
        for key, e in unsure:
            seen = answered.get(key[1], (-1, e.queued_at))[1]
            at = heard.get(key[1])
            if at is not None and at >= max(e.queued_at, seen) + grace:
                out.append(key)
    if out:
        lag = receiver_lag()
        if lag is not None and lag > RECEIVER_BEHIND_S:
            return []
    return out


def _ask_again(ctx: IPadContext, action: str, expect: Expected, lost: list[tuple[str, str]]) -> list[str]:
    """Queue the lost queries again (new CommandUUIDs) and push those iPads; the new commands share
    their originals' outcomes and are never asked again. Where NanoMDM refuses one or cannot be
    reached, the original stays expected (reported not answered at the deadline). Returns the new
    CommandUUIDs."""
    by_command: dict[str, list[Pending]] = {}
    for key in lost:
        p = expect[key]
        p.asked_again = True
        by_command.setdefault(key[0], []).append(p)
    groups = list(by_command.values())
    jobs = [Job(g[0].command.with_uuid(str(uuid_module.uuid4()).upper()), [p.target for p in g], g[0].outcome.label,
                {"asked_again_for": g[0].command.uuid}) for g in groups]
    scratch = {expect[k].target.serial: DeviceReport(expect[k].target.serial, None, k[1]) for k in lost}
    try:
        fresh = _enqueue(ctx, action, jobs, scratch)
    except NanoMDMError as e:
        log.warning("%s: answers lost on their way to werne not asked again: %s", action, one_line(str(e), 200))
        return []
    for key, p in fresh.items():
        # _enqueue ranks by job: the group the new command was made for.
        original = next(o for o in groups[p.rank] if o.target.enrollment_id == key[1])
        p.outcome, p.rank, p.asked_again = original.outcome, original.rank, True
        original.outcome.detail = "answer lost on its way to werne; asked again"
        expect.pop((original.command.uuid, key[1]), None)
    expect.update(fresh)
    log.info("%s: %d answer(s) lost on their way to werne, asked again", action, len(fresh))
    return sorted({k[0] for k in fresh})


def audited(
    ctx: IPadContext,
    action: str,
    targets: Sequence[Target],
    run: Callable[[], ActionReport],
    extra: dict[str, Any] | None = None,
    times: StepTimes | None = None,
) -> ActionReport:
    """Run an action and write its audit record `ipad.<action>`: the devices, and the outcome per
    device, or the error that stopped it (which is raised again)."""
    detail: dict[str, Any] = {"devices": [t.serial for t in targets], **(extra or {})}
    try:
        report = run()
    except (IPadError, MDMError) as e:
        audit.record(ctx.db, f"ipad.{action}", target_text(targets), {**detail, "result": f"error: {e}"},
                     actor=ctx.actor)
        raise
    with timed(times, "mdm.audit"):
        audit.record(
            ctx.db,
            f"ipad.{action}",
            target_text(targets),
            {
                **detail,
                "result": report.counts(),
                "not_answered": report.not_answered,
                "per_device": {d.serial: d.summary()[:300] for d in report.devices},
            },
            actor=ctx.actor,
        )
    return report


# A command for one target, or the reason it gets none (shown as "not sent").
CommandOrRefusal = Command | str


def send_to_serials(
    ctx: IPadContext,
    action: str,
    serials: Sequence[str],
    make: Callable[[Target], CommandOrRefusal],
    max_devices: int | None,
    deadline_s: float | None,
    extra: dict[str, Any] | None = None,
) -> ActionReport:
    """The named iPads (all must be known), behind the blast radius, each sent what `make` gives it
    (iPads given the same command share one enqueue); audited. Default deadline: 30 s."""
    targets = select_targets(ctx, serials=serials, require_serials=True)
    check_blast_radius(ctx, len(targets), max_devices, action)
    deadline = 30.0 if deadline_s is None else deadline_s

    def run() -> ActionReport:
        jobs: dict[str, Job] = {}
        refused: dict[str, str] = {}
        for t in targets:
            if not t.enrollment_id:
                continue
            cmd = make(t)
            if isinstance(cmd, str):
                refused[t.serial] = cmd
                continue
            # One enqueue for a shared command; ClearPasscode has one per device (its UnlockToken).
            jobs.setdefault(cmd.uuid, Job(cmd, [])).targets.append(t)
        report = send_and_wait(ctx, action, list(jobs.values()), targets, deadline)
        for d in report.devices:
            if d.serial in refused:
                d.outcomes.append(CommandOutcome(action, "not sent", refused[d.serial]))
            elif d.enrollment_id is None:
                d.outcomes.append(CommandOutcome(action, "not sent", "not enrolled"))
        return report

    return audited(ctx, action, targets, run, extra)

