"""Renewal of the iPads' device identities before they expire (`werne mdm renew`, issue 20).

Each iPad signs its MDM messages with the identity scepserver issued when it enrolled, valid for
scep.cert_valid_days; NanoMDM refuses an expired one and the iPad falls silent. The renewal that
Apple and NanoMDM support: send the installed enrolment profile again by InstallProfile (the same
identifier; Topic, ServerURL and CheckInURL unchanged, as Apple's com.apple.mdm payload requires of
an update). The iPad makes a new key, gets a new identity from the profile's SCEP server, and checks
in with it (Authenticate, TokenUpdate): NanoMDM's certificate authorization (service/certauth)
associates a new certificate with an enrollment on Authenticate, and only there. A renewal that
fails leaves the installed profile and the old identity as they were.

NanoMDM clears an enrollment's command queue on every Authenticate, so an iPad with other commands
still queued is left for a later day (deferred): no command is dropped by a renewal.

`plan_renewals` says who is due when: renew_days_before the identity expires (at once when a
previous SCEP CA issued it, after a rotation), at most renew_daily_budget a day, soonest expiry
first. `renew_identities` sends today's share, waits for the answers, asks each renewed iPad for its
CertificateList (the new expiry), and records every attempt (table mdm_identity_renewals; audit
`mdm.renew`). An Error answer is tried again after renew_retry_h hours, renew_max_attempts times in
a row; an iPad that does not answer keeps its command queued and is woken again on each run; both
are reported. The identity each iPad holds is read from its newest CertificateList answer.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from core import audit
from core.findings import Findings
from core.inventory import normalise_serial
from ipad.commands import certificate_list, install_profile
from ipad.dispatch import IPadContext, Job, Target, check_blast_radius, send_and_wait, target_text
from ipad.errors import UnknownDevicesError
from ipad.golive.scep_ca import trusted_cas
from ipad.models import MDMCommand, MDMIdentityRenewal
from ipad.payloads.enrolment_profile import signed_enrolment_profile
from ipad.results import error_chain_text
from ipad.store.devices import Device
from ipad.store.events import FINAL
from ipad.store.facts import pick_identity

ACTION = "renew"
# Outcomes of one run that are findings (exit 1): the iPad did not get its new identity.
NOT_RENEWED = frozenset({"failed", "given up", "no answer", "woken again"})


@dataclass(frozen=True)
class Identity:
    """An iPad's MDM identity as its newest CertificateList answer shows it."""

    sha256: str
    subject: str
    issuer: str
    not_after: datetime
    reported_at: datetime | None


def mdm_identity(device: Device, issuers: set[str]) -> Identity | None:
    """The MDM identity (pick_identity) as the device's newest CertificateList answer lists it."""
    fact = device.facts.get("CertificateList")
    best = pick_identity(fact.get("value"), issuers) if fact is not None else None
    if fact is None or best is None:
        return None
    return Identity(str(best["sha256"]), str(best.get("subject") or ""), str(best["issuer"]),
                    datetime.fromisoformat(str(best["not_after"])).astimezone(UTC), fact.get("at"))


@dataclass
class PlannedRenewal:
    """Where one enrolled iPad's identity stands, and when it is renewed.

    state: due (goes out on the next run), planned (a later day), sent (waiting for the iPad),
    renewed (acknowledged; its new expiry not reported yet), retry (answered Error; again from
    retry_at), given up (renew_max_attempts errors in a row: `werne mdm renew SERIAL`), unknown
    (no CertificateList answer with an identity from werne's SCEP CA yet).
    """

    serial: str
    school: str | None
    enrollment_id: str
    state: str
    expires: datetime | None = None
    issuer: str = ""
    due_on: date | None = None
    planned_on: date | None = None
    attempts: int = 0
    detail: str = ""
    identity_sha256: str = ""
    days_left: int | None = None  # at the plan's time

    @property
    def late(self) -> bool:
        """Planned for the day it expires or later (the daily budget is too small), or expired."""
        return self.expires is not None and self.planned_on is not None and self.planned_on >= self.expires.date()

    def to_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, "school": self.school, "enrollment_id": self.enrollment_id,
                "state": self.state, "expires": self.expires.isoformat() if self.expires else None,
                "days_left": self.days_left,
                "issuer": self.issuer, "due_on": _iso(self.due_on), "planned_on": _iso(self.planned_on),
                "attempts": self.attempts, "late": self.late, "detail": self.detail}


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


@dataclass
class RenewalPlan(Findings):
    """Who is due when (every enrolled iPad); a finding when one is planned too late or given up."""

    today: date
    renew_days: int
    budget: int
    sent_today: int
    current_ca: str
    items: list[PlannedRenewal] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(i.late or i.state == "given up" for i in self.items)

    def due(self) -> list[PlannedRenewal]:
        return [i for i in self.items if i.state == "due"]

    def holding_old_identities(self) -> list[str]:
        """Serials of enrolled iPads whose identity is not from the current CA, or not known."""
        return [i.serial for i in self.items if i.state == "unknown" or (i.issuer and i.issuer != self.current_ca)]

    def counts(self) -> dict[str, int]:
        return dict(Counter(i.state for i in self.items))

    def to_dict(self) -> dict[str, Any]:
        return {"today": self.today.isoformat(), "renew_days_before": self.renew_days, "daily_budget": self.budget,
                "sent_today": self.sent_today, "current_ca": self.current_ca, "counts": self.counts(),
                "late": [i.serial for i in self.items if i.late], "items": [i.to_dict() for i in self.items]}


def _renewal_rows(ctx: IPadContext) -> dict[str, MDMIdentityRenewal]:
    with ctx.db.session() as s:
        rows = list(s.scalars(select(MDMIdentityRenewal)))
        s.expunge_all()
    return {r.enrollment_id: r for r in rows}


def _slot(items: list[tuple[date, PlannedRenewal]], today: date, budget: int, sent_today: int) -> None:
    """Give each item the first day from its earliest that has room, soonest expiry first."""
    room: dict[date, int] = {today: max(0, budget - sent_today)}
    for earliest, item in sorted(items, key=lambda x: (x[0], x[1].expires or datetime.max.replace(tzinfo=UTC),
                                                       x[1].serial)):
        day = max(earliest, today)
        while room.setdefault(day, budget) <= 0:
            day += timedelta(days=1)
        room[day] -= 1
        item.planned_on = day
        if day <= today:
            item.state = "due"
        elif item.state != "retry":
            item.state = "planned"


def plan_renewals(ctx: IPadContext, now: datetime | None = None) -> RenewalPlan:
    """Every enrolled iPad's identity and the day its renewal goes out (module docstring)."""
    now = now or datetime.now(UTC)
    cfg = ctx.config.scep
    today = now.date()
    cas = trusted_cas(ctx.config)
    current = cas[0].subject.rfc4514_string()
    issuers = {c.subject.rfc4514_string() for c in cas}
    rows = _renewal_rows(ctx)
    sent_today = len([r for r in rows.values() if r.sent_at is not None and r.sent_at.date() == today])
    plan = RenewalPlan(today, cfg.renew_days_before, cfg.renew_daily_budget, sent_today, current)
    to_slot: list[tuple[date, PlannedRenewal]] = []
    for dev in ctx.registry.list_devices():
        if dev.state != "enrolled":
            continue
        ident = mdm_identity(dev, issuers)
        row = rows.get(dev.enrollment_id)
        item = PlannedRenewal(dev.serial or dev.enrollment_id, dev.school, dev.enrollment_id, "unknown",
                              attempts=row.attempts if row else 0)
        plan.items.append(item)
        if ident is not None:
            item.expires, item.issuer, item.identity_sha256 = ident.not_after, ident.issuer, ident.sha256
            item.days_left = int((ident.not_after - now).total_seconds() // 86400)
        if row is not None and row.state == "sent":
            item.state, item.detail = "sent", f"sent {row.sent_at:%Y-%m-%d %H:%M} UTC, no answer yet"
            continue
        if row is not None and row.state == "given up":
            item.state, item.detail = "given up", f"{row.attempts} errors in a row: {row.reason}"
            continue
        renewed_after_report = (row is not None and row.state == "renewed" and row.answered_at is not None
                                and (ident is None or ident.reported_at is None or ident.reported_at < row.answered_at))
        if renewed_after_report:
            item.state, item.detail = "renewed", "renewed; its new identity is not reported yet (CertificateList)"
            continue
        if ident is None:
            item.detail = "no CertificateList answer with an identity from werne's SCEP CA yet"
            continue
        item.due_on = (ident.not_after - timedelta(days=cfg.renew_days_before)).date()
        if ident.issuer != current:
            item.due_on, item.detail = min(item.due_on, today), "issued by the previous SCEP CA"
        earliest = item.due_on
        if row is not None and row.state == "failed" and row.next_attempt_at is not None:
            item.state = "retry"
            item.detail = f"answered Error ({row.reason}); tried again from {row.next_attempt_at:%Y-%m-%d %H:%M} UTC"
            if row.next_attempt_at > now:  # not today's run: the next one at or after that time
                earliest = max(earliest, row.next_attempt_at.date(), today + timedelta(days=1))
        to_slot.append((earliest, item))
    _slot(to_slot, today, plan.budget, sent_today)
    order = {"sent": 0, "given up": 1, "retry": 2, "due": 3, "renewed": 4, "unknown": 5, "planned": 6}
    plan.items.sort(key=lambda i: (i.planned_on or date.max, order.get(i.state, 9), i.serial))
    return plan


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class RenewalOutcome:
    """What one run did for one iPad.

    status: renewed, failed (answered Error: retried later), given up, no answer (its command stays
    queued), woken again (an earlier run's command still unanswered: pushed again), deferred (other
    commands still queued: NanoMDM would drop them), not sent (not enrolled or NanoMDM refused it).
    """

    serial: str
    school: str | None
    status: str
    detail: str = ""
    old_not_after: datetime | None = None
    new_not_after: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status not in NOT_RENEWED

    def summary(self) -> str:
        text = self.status
        if self.new_not_after is not None:
            text += f": new identity valid until {self.new_not_after:%Y-%m-%d}"
        elif self.old_not_after is not None:
            text += f": identity valid until {self.old_not_after:%Y-%m-%d}"
        return text + (f" ({self.detail})" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, "school": self.school, "status": self.status, "ok": self.ok,
                "detail": self.detail, "old_not_after": self.old_not_after.isoformat() if self.old_not_after else None,
                "new_not_after": self.new_not_after.isoformat() if self.new_not_after else None}


@dataclass
class RenewalReport(Findings):
    """One `werne mdm renew`: the outcome per iPad it touched, and the plan it worked from."""

    outcomes: list[RenewalOutcome]
    due: int
    budget: int
    sent_today_before: int
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        return dict(Counter(o.status for o in self.outcomes))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "due": self.due, "daily_budget": self.budget,
                "sent_today_before": self.sent_today_before,
                "counts": self.counts(), "seconds": round(self.seconds, 1),
                "devices": [o.to_dict() for o in self.outcomes]}


def _reconcile(ctx: IPadContext, now: datetime) -> None:
    """Answers that arrived after an earlier run's deadline: sent rows become renewed or failed."""
    rows = [r for r in _renewal_rows(ctx).values() if r.state == "sent"]
    states = {(c.command_uuid, c.enrollment_id): c for c in ctx.registry.command_states(r.command_uuid for r in rows)}
    for r in rows:
        c = states.get((r.command_uuid, r.enrollment_id))
        if c is None or c.status == "enqueue_failed":  # a run stopped by NanoMDM going away
            _answered(ctx, r.enrollment_id, "not sent", "NanoMDM did not queue it", now)
        elif c.status in FINAL:
            _answered(ctx, r.enrollment_id, c.status, error_chain_text(c.error_chain), now)


def _answered(ctx: IPadContext, enrollment_id: str, status: str, reason: str, now: datetime) -> str:
    """Record an iPad's answer to its renewal; the row's new state."""
    cfg = ctx.config.scep
    with ctx.db.session() as s:
        row = s.scalars(select(MDMIdentityRenewal)
                        .where(MDMIdentityRenewal.enrollment_id == enrollment_id)).one_or_none()
        if row is None:
            return ""
        row.answered_at = now
        if status == "Acknowledged":
            row.state, row.attempts, row.renewals, row.reason, row.next_attempt_at = (
                "renewed", 0, row.renewals + 1, "", None)
        else:
            row.reason = reason or status
            row.next_attempt_at = now + timedelta(hours=cfg.renew_retry_h)
            row.state = "given up" if row.attempts >= cfg.renew_max_attempts else "failed"
        return row.state


def _mark_sent(ctx: IPadContext, t: Target, uuid: str, item: PlannedRenewal | None, now: datetime) -> None:
    assert t.device is not None
    with ctx.db.session() as s:
        row = s.scalars(select(MDMIdentityRenewal)
                        .where(MDMIdentityRenewal.enrollment_id == t.device.enrollment_id)).one_or_none()
        if row is None:
            row = MDMIdentityRenewal(enrollment_id=t.device.enrollment_id, serial=t.serial, attempts=0, renewals=0)
            s.add(row)
        row.state, row.command_uuid, row.sent_at, row.answered_at = "sent", uuid, now, None
        row.attempts = (row.attempts or 0) + 1
        row.old_not_after = item.expires if item else None
        row.old_fingerprint = item.identity_sha256 if item else ""
        row.reason = ""


def _targets(ctx: IPadContext, items: Sequence[PlannedRenewal]) -> list[Target]:
    by_id = {d.enrollment_id: d for d in ctx.registry.list_devices()}
    return [Target(i.serial, i.school, None, by_id.get(i.enrollment_id)) for i in items]


def _pick(ctx: IPadContext, plan: RenewalPlan, serials: Sequence[str], max_devices: int | None) -> list[PlannedRenewal]:
    if serials:
        wanted = [normalise_serial(s) for s in serials]
        by_serial = {i.serial: i for i in plan.items}
        unknown = [s for s in wanted if s not in by_serial]
        if unknown:
            raise UnknownDevicesError(f"not enrolled: {', '.join(unknown)}", unknown)
        picked = [by_serial[s] for s in dict.fromkeys(wanted)]
        check_blast_radius(ctx, len(picked), max_devices, "mdm renew")
        return [i for i in picked if i.state != "sent"]
    room = max(0, plan.budget - plan.sent_today)
    if max_devices is not None:
        room = min(room, max_devices)
    return plan.due()[:room]


def _ask_certificates(ctx: IPadContext, devices: Iterable[Device], deadline_s: float,
                      sleep: Callable[[float], None]) -> None:
    """CertificateList to these iPads (their identities' expiry lands in the registry)."""
    targets = [Target(d.serial or d.enrollment_id, d.school, d.group, d) for d in devices]
    if targets:
        send_and_wait(ctx, "renew-certificate-list", [Job(certificate_list(), targets)], targets, deadline_s, sleep)


def still_queued(pending: Sequence[MDMCommand], answered_up_to: datetime | None) -> list[str]:
    """The request types of a device's pending commands that NanoMDM still holds: not those still
    queued in werne that the device passed over (it answered a command werne queued after them;
    their answers' events were lost, see Registry.last_answered_enqueue). A NotNow stays pending."""
    return [c.request_type for c in pending
            if not (answered_up_to is not None and c.status == "queued" and c.enqueued_at is not None
                    and c.enqueued_at < answered_up_to)]


def renew_identities(
    ctx: IPadContext,
    serials: Sequence[str] = (),
    now: datetime | None = None,
    max_devices: int | None = None,
    deadline_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RenewalReport:
    """Renew today's share of due identities (or the named iPads, due or not); see the module
    docstring. Raises IPadError (exit 2: no SCEP CA, no push certificate for the profile, unknown
    serials, blast radius) or MDMError (exit 3: NanoMDM unreachable; what was queued is recorded)."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    deadline = ctx.config.scep.renew_deadline_s if deadline_s is None else deadline_s
    _reconcile(ctx, now)
    issuers = {c.subject.rfc4514_string() for c in trusted_cas(ctx.config)}
    # iPads whose identity is not known (or not since their renewal): ask, unless a CertificateList
    # is still queued for them (a silent iPad would collect one a night).
    before = plan_renewals(ctx, now)
    asking = {i.enrollment_id for i in before.items if i.state in ("unknown", "renewed")}
    pending = ctx.registry.pending_commands()
    ask = [d for d in ctx.registry.list_devices() if d.enrollment_id in asking
           and not any(c.request_type == "CertificateList" for c in pending.get(d.enrollment_id, []))]
    _ask_certificates(ctx, ask, min(deadline, 30.0), sleep)
    plan = plan_renewals(ctx, now)
    picked = _pick(ctx, plan, serials, max_devices)
    outcomes: list[RenewalOutcome] = []
    pending = ctx.registry.pending_commands()
    answered_up_to = ctx.registry.last_answered_enqueue()
    sendable: list[PlannedRenewal] = []
    for item in picked:
        busy = still_queued(pending.get(item.enrollment_id, []), answered_up_to.get(item.enrollment_id))
        if busy:
            outcomes.append(RenewalOutcome(item.serial, item.school, "deferred",
                                           f"{len(busy)} command(s) still queued ({', '.join(sorted(set(busy)))}): "
                                           "NanoMDM drops them when the iPad checks in with a new identity",
                                           item.expires))
        else:
            sendable.append(item)
    targets = _targets(ctx, sendable)
    jobs = []
    for item, t in zip(sendable, targets, strict=True):
        if t.enrollment_id is None:
            continue
        cmd = install_profile(signed_enrolment_profile(ctx.config, ctx.db, device=t.serial))
        _mark_sent(ctx, t, cmd.uuid, item, now)
        jobs.append(Job(cmd, [t], label="enrolment profile", detail={"renewal": True}))
    report = send_and_wait(ctx, ACTION, jobs, targets, deadline, sleep)
    renewed: list[Device] = []
    for item, t, dev_report in zip(sendable, targets, report.devices, strict=True):
        o = dev_report.outcomes[0] if dev_report.outcomes else None
        if o is None or o.status == "not sent" or t.device is None:
            if o is not None and t.device is not None:
                _answered(ctx, t.device.enrollment_id, "not sent", o.detail, now)
            outcomes.append(RenewalOutcome(item.serial, item.school, "not sent", o.detail if o else "not enrolled",
                                           item.expires))
            continue
        if o.status in FINAL:
            state = _answered(ctx, t.device.enrollment_id, o.status, o.detail, datetime.now(UTC))
            status = {"renewed": "renewed", "failed": "failed", "given up": "given up"}[state]
            if state == "renewed":
                renewed.append(t.device)
            outcomes.append(RenewalOutcome(item.serial, item.school, status, "" if state == "renewed" else o.detail,
                                           item.expires))
        else:
            outcomes.append(RenewalOutcome(item.serial, item.school, "no answer", o.detail, item.expires))
    _ask_certificates(ctx, renewed, min(deadline, 60.0), sleep)
    _new_expiry(ctx, outcomes, issuers)
    outcomes += _wake_silent(ctx, plan, {i.enrollment_id for i in sendable})
    result = RenewalReport(outcomes, len(plan.due()), plan.budget, plan.sent_today, time.monotonic() - started)
    audit.record(ctx.db, "mdm.renew", target_text([Target(o.serial, o.school, None, None) for o in outcomes]),
                 {"result": result.counts(), "due": result.due, "daily_budget": result.budget,
                  "per_device": {o.serial: o.summary()[:300] for o in outcomes}}, actor=ctx.actor)
    return result


def _new_expiry(ctx: IPadContext, outcomes: list[RenewalOutcome], issuers: set[str]) -> None:
    by_serial = ctx.registry.devices_by_serial()
    for o in outcomes:
        dev = by_serial.get(o.serial)
        ident = mdm_identity(dev, issuers) if (dev is not None and o.status == "renewed") else None
        if ident is not None and (o.old_not_after is None or ident.not_after != o.old_not_after):
            o.new_not_after = ident.not_after


def _wake_silent(ctx: IPadContext, plan: RenewalPlan, sent_now: set[str]) -> list[RenewalOutcome]:
    """Earlier runs' renewals still unanswered: the command stays queued (NanoMDM offers it at the
    iPad's next check-in); push again, the retry of an iPad that did not answer."""
    silent = [i for i in plan.items if i.state == "sent" and i.enrollment_id not in sent_now]
    if not silent:
        return []
    pushed = ctx.client.push([i.enrollment_id for i in silent])
    out = []
    for i in silent:
        how = pushed.pending.get(i.enrollment_id) or "pushed"
        out.append(RenewalOutcome(i.serial, i.school, "woken again", f"{i.detail}; {how}", i.expires))
    return out
