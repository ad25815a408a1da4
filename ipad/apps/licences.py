"""The library behind `werne apps ...`: plan which iPads get or lose which app licence, apply it
(Apps and Books licences first, then InstallApplication / RemoveApplication through NanoMDM), the
licence report per school and app, and releasing a device's licences (wipe, retirement).

Licences are device-based (serial numbers). Apple answers an associate or disassociate with an
event id and works asynchronously; werne records a licence in `app_licences` only after the event
status says COMPLETE for that serial (a FAILED event names the serials it failed for), and forgets
one only after Apple confirms it took it back. The licence calls are batched: one call carries up
to service-config `maxAssets` apps and `maxSerialNumbers` serials; `AppsApplyReport.api_calls`
counts every Apps and Books request.

Which licences werne manages: those of the apps in the app list, and those it recorded itself;
licences someone else assigned for other apps are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from core import audit
from core.csvio import write_csv
from core.db import in_chunks
from core.errors import ConfigError
from core.findings import Findings
from ipad.apps.catalogue import App, AppCatalogue, load_apps
from ipad.dispatch import ActionReport, IPadContext, Job, Target, check_blast_radius, select_targets, send_and_wait
from ipad.errors import AppsError, SafetyError
from ipad.models import AppLicence
from mdm_client.appsbooks import AppsBooksClient, Asset, EventStatus
from mdm_client.factory import appsbooks_client

Pair = tuple[str, str]  # (adam_id, serial)


# --- planning -------------------------------------------------------------------------------------


@dataclass
class LicenceCheck:
    """Whether one location has enough licences of one app for the plan."""

    location: str
    app: str
    adam_id: str
    bought: int
    assigned: int
    free: int
    needed_new: int
    freed: int

    @property
    def enough(self) -> bool:
        return self.needed_new <= self.free + self.freed

    def problem(self) -> str:
        return (f"too few licences of {self.app} (adam_id {self.adam_id}) at location {self.location}: "
                f"{self.needed_new} more needed, {self.free} free"
                + (f" (+{self.freed} freed by this plan)" if self.freed else ""))


@dataclass
class LocationPlan:
    """What the plan does at one Apps and Books location."""

    name: str
    client: AppsBooksClient
    assets: dict[str, Asset]
    held: dict[str, set[str]]  # adam_id -> serials holding a licence (Apple's assignments)
    assign: dict[str, list[str]] = field(default_factory=dict)  # adam_id -> serials
    revoke: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class AppsPlan(Findings):
    """Per school which iPads get or lose which app, and whether the licences suffice."""

    catalogue: AppCatalogue
    locations: dict[str, LocationPlan]
    school_of: dict[str, str | None]  # serial -> school
    checks: list[LicenceCheck]
    wanted: dict[str, set[str]]  # serial -> adam_ids its group wants
    skipped_schools: list[str] = field(default_factory=list)  # schools without an apps location

    @property
    def ok(self) -> bool:
        """Nothing stands in the way (an unknown app, too few licences...): a problem is a finding."""
        return not self.problems

    @property
    def problems(self) -> list[str]:
        return [c.problem() for c in self.checks if not c.enough]

    @property
    def api_calls(self) -> int:
        return sum(lp.client.calls for lp in self.locations.values())

    def app_name(self, adam_id: str) -> str:
        app = self.catalogue.by_adam_id().get(adam_id)
        return app.name if app else f"adam_id {adam_id}"

    def serials_changed(self) -> set[str]:
        return {s for lp in self.locations.values() for d in (lp.assign, lp.revoke) for ss in d.values() for s in ss}

    def summary(self) -> dict[str, dict[str, int]]:
        """school -> "get <app>" / "lose <app>" -> number of iPads (the `ipad configure --plan` shape)."""
        out: dict[str, dict[str, int]] = {}
        for lp in self.locations.values():
            for verb, changes in (("get", lp.assign), ("lose", lp.revoke)):
                for adam, serials in changes.items():
                    for s in serials:
                        per = out.setdefault(self.school_of.get(s) or "(not in the inventory)", {})
                        key = f"{verb} {self.app_name(adam)}"
                        per[key] = per.get(key, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": self.summary(),
            "licences": [{**c.__dict__, "enough": c.enough} for c in self.checks],
            "problems": self.problems,
            "skipped_schools": self.skipped_schools,
            "api_calls": self.api_calls,
        }


ClientFactory = Callable[[str], AppsBooksClient]


def _recorded(ctx: IPadContext) -> list[AppLicence]:
    with ctx.db.session() as s:
        return list(s.scalars(select(AppLicence)))


def _location_of_school(ctx: IPadContext, school: str) -> str | None:
    sc = ctx.inventory.schools.get(school)
    loc = sc.apps_location if sc else ""
    if not loc:
        return None
    if loc not in ctx.config.apps.locations:
        known = ", ".join(sorted(ctx.config.apps.locations)) or "none configured"
        raise ConfigError(f"school {school} names apps_location '{loc}', which is not in apps.locations ({known})")
    return loc


def _serial_locations(ctx: IPadContext) -> dict[str, str | None]:
    """serial -> its school's Apps and Books location (None: the school has none), for every iPad;
    every school's location must exist, not only the targeted ones (ConfigError otherwise)."""
    for sid in ctx.inventory.schools:
        _location_of_school(ctx, sid)
    return {ipad.serial: _location_of_school(ctx, ipad.school) for ipad in ctx.inventory.ipads.values()}


def _leaving(ctx: IPadContext, recorded: list[AppLicence], serial_location: dict[str, str | None],
             targeted: set[str], whole_fleet: bool, serials: set[str] | None,
             school_of: dict[str, str | None]) -> dict[str, dict[str, list[str]]]:
    """location -> adam_id -> serials: licences werne recorded for serials that left that location
    (another school, or retired: only when the whole fleet is planned). Adds their schools to `school_of`."""
    leaving: dict[str, dict[str, list[str]]] = {}
    for r in recorded:
        gone = r.serial not in ctx.inventory.ipads
        retired = gone and whole_fleet and (serials is None or r.serial in serials)
        moved = not gone and serial_location.get(r.serial) != r.location and r.serial in targeted
        if retired or moved:
            leaving.setdefault(r.location, {}).setdefault(r.adam_id, []).append(r.serial)
            school_of.setdefault(r.serial, ctx.inventory.ipads[r.serial].school if not gone else None)
    return leaving


def _plan_location(ctx: IPadContext, lp: LocationPlan, catalogue: AppCatalogue, here: list[str],
                   recorded: list[AppLicence], leaving: dict[str, list[str]],
                   wanted: dict[str, set[str]]) -> list[LicenceCheck]:
    """Fill in one location's assignments and revocations (and `wanted` of its serials); its licence checks.

    Raises AppsError for an app of the list that the location does not own or cannot assign to devices.
    """
    needed_apps: dict[str, App] = {}
    for s in here:
        apps = catalogue.apps_for(ctx.inventory.ipads[s].group)
        wanted[s] = {a.adam_id for a in apps}
        for app in apps:
            needed_apps[app.adam_id] = app
    for adam, app in sorted(needed_apps.items()):
        asset = lp.assets.get(adam)
        if asset is None:
            raise AppsError(f"app {app.name!r} (adam_id {adam}) is not among the apps of Apps and Books "
                            f"location {lp.name}: buy licences in Apple School Manager or fix {catalogue.path}")
        if not asset.device_assignable:
            raise AppsError(f"app {app.name!r} (adam_id {adam}) at location {lp.name} cannot be assigned to "
                            "devices (Apple: deviceAssignable false)")
    managed = {a.adam_id for a in catalogue.apps.values()} | {r.adam_id for r in recorded if r.location == lp.name}
    for s in here:
        have = {adam for adam in managed if s in lp.held.get(adam, set())}
        for adam in sorted(wanted[s] - have):
            lp.assign.setdefault(adam, []).append(s)
        for adam in sorted(have - wanted[s]):
            lp.revoke.setdefault(adam, []).append(s)
    for adam, leavers in leaving.items():
        for s in leavers:
            if s in lp.held.get(adam, set()) and s not in lp.revoke.get(adam, []):
                lp.revoke.setdefault(adam, []).append(s)
    by_adam = catalogue.by_adam_id()
    checks = []
    for adam in sorted(set(lp.assign) | set(lp.revoke)):
        asset = lp.assets.get(adam)
        checks.append(LicenceCheck(
            lp.name, by_adam[adam].name if adam in by_adam else f"adam_id {adam}",
            adam, asset.total if asset else 0, asset.assigned if asset else 0, asset.available if asset else 0,
            len(lp.assign.get(adam, [])), len(lp.revoke.get(adam, []))))
    return checks


def make_plan(ctx: IPadContext, school: str | None = None, catalogue: AppCatalogue | None = None,
              client_for: ClientFactory | None = None, serials: set[str] | None = None) -> AppsPlan:
    """Read the app list, each location's assets and assignments (Apple), and compute the changes.

    Raises AppsError (exit 2) for an app the location does not own or cannot assign to devices,
    ConfigError (exit 2) for a school naming an unknown location, AppsBooksTokenError (exit 3) when
    Apple refuses a location's token. Nothing is changed.
    """
    catalogue = catalogue or load_apps(ctx.config)
    client_for = client_for or (lambda loc: appsbooks_client(ctx.config, loc))
    ipads = [i for i in ctx.inventory.ipads_of_school(school) if serials is None or i.serial in serials]
    recorded = _recorded(ctx)
    serial_location = _serial_locations(ctx)
    by_location: dict[str, list[str]] = {}
    school_of: dict[str, str | None] = {}
    skipped: set[str] = set()
    for ipad in ipads:
        school_of[ipad.serial] = ipad.school
        loc = serial_location[ipad.serial]
        if loc is None:
            skipped.add(ipad.school)
            continue
        by_location.setdefault(loc, []).append(ipad.serial)
    leaving = _leaving(ctx, recorded, serial_location, {i.serial for i in ipads}, school is None, serials, school_of)
    wanted: dict[str, set[str]] = {}
    locations: dict[str, LocationPlan] = {}
    checks: list[LicenceCheck] = []
    for loc in sorted(set(by_location) | set(leaving)):
        client = client_for(loc)
        assets = {a.adam_id: a for a in client.assets()}
        held: dict[str, set[str]] = {}
        for assignment in client.assignments():
            if assignment.serial_number:
                held.setdefault(assignment.adam_id, set()).add(assignment.serial_number)
        lp = locations[loc] = LocationPlan(loc, client, assets, held)
        checks += _plan_location(ctx, lp, catalogue, by_location.get(loc, []), recorded, leaving.get(loc, {}), wanted)
    return AppsPlan(catalogue, locations, school_of, checks, wanted, sorted(skipped))


def plan(ctx: IPadContext, school: str | None = None, client_for: ClientFactory | None = None) -> AppsPlan:
    """`werne apps plan`: the plan, audited as a read."""
    p = make_plan(ctx, school, client_for=client_for)
    audit.record(ctx.db, "apps.plan", school or "all", {"plan": p.summary(), "problems": p.problems,
                                                        "api_calls": p.api_calls}, actor=ctx.actor)
    return p


# --- batching and Apple's events ------------------------------------------------------------------


def batches(changes: dict[str, list[str]], max_assets: int, max_serials: int) -> list[tuple[list[str], list[str]]]:
    """Few manage calls: apps wanted by the same serials share a call; serials and apps are cut to
    Apple's limits. Returns (adam_ids, serials) per call."""
    by_serials: dict[tuple[str, ...], list[str]] = {}
    for adam, serials in sorted(changes.items()):
        by_serials.setdefault(tuple(sorted(set(serials))), []).append(adam)
    out: list[tuple[list[str], list[str]]] = []
    for together, adams in by_serials.items():
        for i in range(0, len(together), max_serials):
            for j in range(0, len(adams), max_assets):
                out.append((adams[j:j + max_assets], list(together[i:i + max_serials])))
    return out


@dataclass
class EventOutcome:
    """What one batched licence call did, per (adam_id, serial) pair."""

    done: set[Pair] = field(default_factory=set)
    failed: dict[Pair, str] = field(default_factory=dict)
    event_of: dict[Pair, str] = field(default_factory=dict)


def _run_manage(lp: LocationPlan, op: str, changes: dict[str, list[str]], timeout_s: float, poll_s: float,
                sleep: Callable[[float], None]) -> EventOutcome:
    """Send the batched associate/disassociate calls, wait for every event, sort out each pair."""
    limits = lp.client.limits()
    send = lp.client.associate if op == "associate" else lp.client.disassociate
    sent: dict[str, list[Pair]] = {}
    out = EventOutcome()
    for adams, serials in batches(changes, limits["maxAssets"], limits["maxSerialNumbers"]):
        assets = [(a, lp.assets[a].pricing_param if a in lp.assets else "STDQ") for a in adams]
        event_id = send(assets, serials)
        sent[event_id] = [(a, s) for a in adams for s in serials]
        out.event_of.update(dict.fromkeys(sent[event_id], event_id))
    statuses = lp.client.wait_for_events(list(sent), timeout_s, poll_s, sleep) if sent else {}
    for event_id, pairs in sent.items():
        st: EventStatus = statuses[event_id]
        if st.status == "COMPLETE":
            out.done.update(pairs)
        elif st.status == "PENDING":
            for p in pairs:
                out.failed[p] = f"Apple still working on event {event_id} after {timeout_s:g} s: run apply again"
        else:
            named = st.failed_serials()
            if st.failures_all_named:
                for p in pairs:
                    if p[1] in named:
                        out.failed[p] = named[p[1]]
                    else:
                        out.done.add(p)
            else:
                why = "; ".join(f"Apple error {f.get('errorNumber')}: {f.get('errorMessage', '')}"
                                for f in st.failures)[:200] or "no reason given"
                for p in pairs:
                    out.failed[p] = f"event {event_id} FAILED ({why}); not recorded"
    return out


# --- applying -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppsNote:
    """One thing `werne apps apply` did to an iPad, and whether it went as hoped."""

    text: str
    ok: bool


@dataclass
class DeviceApps:
    """What `werne apps apply` did to one iPad."""

    serial: str
    school: str | None
    notes: list[AppsNote] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return [n.text for n in self.notes]

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.notes)

    def note(self, text: str, ok: bool = True) -> None:
        self.notes.append(AppsNote(text, ok))


@dataclass
class AppsApplyReport(Findings):
    """The result of `werne apps apply`: per device, the Apps and Books calls made and the events."""

    devices: list[DeviceApps]
    api_calls: int  # every Apps and Books request (assets, assignments, service config, status polls)
    licence_calls: int  # of those, associate and disassociate calls (one event each)
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [d.serial for d in self.devices if not d.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "api_calls": self.api_calls,
            "licence_calls": self.licence_calls,
            "seconds": round(self.seconds, 3),
            "failed": self.failed,
            "devices": [{"serial": d.serial, "school": d.school, "ok": d.ok, "summary": "; ".join(d.lines)}
                        for d in self.devices],
        }


def _record(ctx: IPadContext, location: str, pairs: set[Pair], pricing: dict[str, str], event_ids: dict[Pair, str]
            ) -> None:
    if not pairs:
        return
    now = datetime.now(UTC)
    _forget(ctx, location, pairs)  # a stale record of a licence Apple no longer had
    with ctx.db.session() as s:
        s.add_all(AppLicence(location=location, adam_id=a, pricing_param=pricing.get(a, "STDQ"), serial=ser,
                             event_id=event_ids.get((a, ser), ""), assigned_at=now, actor=ctx.actor)
                  for a, ser in sorted(pairs))


def _forget(ctx: IPadContext, location: str, pairs: set[Pair]) -> None:
    """Delete the records of these (app, serial) pairs: one statement per app and 500 serials (a
    school's 500 iPads and five apps are five statements, not 2,500)."""
    if not pairs:
        return
    serials_of: dict[str, list[str]] = {}
    for a, ser in sorted(pairs):
        serials_of.setdefault(a, []).append(ser)
    with ctx.db.session() as s:
        for a, serials in serials_of.items():
            for chunk in in_chunks(serials):
                s.execute(delete(AppLicence).where(AppLicence.location == location, AppLicence.adam_id == a,
                                                   AppLicence.serial.in_(chunk)))


def _targets_by_serial(ctx: IPadContext, serials: set[str]) -> dict[str, Target]:
    known = [s for s in serials if s in ctx.inventory.ipads or s in ctx.registry.devices_by_serial()]
    return {t.serial: t for t in select_targets(ctx, serials=tuple(sorted(known)))} if known else {}


def apply(ctx: IPadContext, school: str | None = None, max_devices: int | None = None,
          deadline_s: float = 0.0, client_for: ClientFactory | None = None,
          sleep: Callable[[float], None] = time.sleep, serials: set[str] | None = None) -> AppsApplyReport:
    """Assign or take back licences so each iPad holds its group's apps, then install or remove the apps.

    Refused before any change (exit 2): unknown App Store id, too few licences, a bad app list, more
    iPads than mdm.blast_radius without --max-devices. Apple refusing a token: exit 3, nothing changed.
    """
    started = time.monotonic()
    p = make_plan(ctx, school, client_for=client_for, serials=serials)
    if p.problems:
        audit.record(ctx.db, "apps.apply", school or "all", {"result": "refused", "problems": p.problems},
                     actor=ctx.actor)
        more = f" (and {len(p.problems) - 1} more)" if len(p.problems) > 1 else ""
        raise AppsError(f"{p.problems[0]}{more}; nothing was changed")
    changed = p.serials_changed()
    try:
        check_blast_radius(ctx, len(changed), max_devices, "apps apply")
    except SafetyError:
        audit.record(ctx.db, "apps.apply", school or "all", {"result": "refused: blast radius",
                                                             "devices": len(changed)}, actor=ctx.actor)
        raise
    run = _Applying(ctx, p, {s: DeviceApps(s, p.school_of.get(s)) for s in sorted(changed)},
                    _targets_by_serial(ctx, changed), deadline_s, sleep)
    try:
        for lp in p.locations.values():
            if lp.revoke:
                run.take_back(lp)
            if lp.assign:
                run.assign(lp)
    finally:
        report = AppsApplyReport(list(run.reports.values()), p.api_calls, run.licence_calls,
                                 time.monotonic() - started)
        audit.record(ctx.db, "apps.apply", school or "all", {
            "devices": len(changed), "failed": report.failed, "api_calls": report.api_calls,
            "per_device": {d.serial: "; ".join(d.lines)[:300] for d in report.devices}}, actor=ctx.actor)
    return report


class _Applying:
    """One `werne apps apply` under way: the per-iPad notes and the licence calls made so far."""

    def __init__(self, ctx: IPadContext, plan: AppsPlan, reports: dict[str, DeviceApps], targets: dict[str, Target],
                 deadline_s: float, sleep: Callable[[float], None]):
        self.ctx, self.plan, self.reports, self.targets = ctx, plan, reports, targets
        self.deadline_s, self.sleep = deadline_s, sleep
        self.licence_calls = 0

    def _enrolled(self, serials: list[str]) -> list[Target]:
        return [self.targets[s] for s in serials if s in self.targets and self.targets[s].enrollment_id]

    def _send(self, jobs: list[Job]) -> None:
        if jobs:
            _report_commands(self.reports, send_and_wait(self.ctx, "apps.apply", jobs, _uniq(jobs), self.deadline_s))

    def _manage(self, lp: LocationPlan, op: str, changes: dict[str, list[str]]) -> EventOutcome:
        cfg = self.ctx.config.apps
        out = _run_manage(lp, op, changes, cfg.event_timeout_s, cfg.event_poll_s, self.sleep)
        self.licence_calls += len(batches(changes, *_limits(lp)))
        return out

    def take_back(self, lp: LocationPlan) -> None:
        """Remove the apps, then take the licences back."""
        jobs = []
        for adam, serials in sorted(lp.revoke.items()):
            app = self.plan.catalogue.by_adam_id().get(adam)
            ts = self._enrolled(serials)
            if app is not None and ts:
                jobs.append(Job(app.remove_command(), ts, app.name, {"app": app.name, "adam_id": adam}))
        self._send(jobs)
        out = self._manage(lp, "disassociate", lp.revoke)
        _forget(self.ctx, lp.name, out.done)
        for (adam, s) in sorted(out.done):
            self.reports[s].note(f"licence {self.plan.app_name(adam)} taken back ({lp.name})")
        for (adam, s), why in sorted(out.failed.items()):
            self.reports[s].note(f"licence {self.plan.app_name(adam)} NOT taken back: {why}", ok=False)

    def assign(self, lp: LocationPlan) -> None:
        """Assign licences; record what Apple confirmed; install only those apps."""
        out = self._manage(lp, "associate", lp.assign)
        _record(self.ctx, lp.name, out.done, {a: x.pricing_param for a, x in lp.assets.items()}, out.event_of)
        for (adam, s), why in sorted(out.failed.items()):
            self.reports[s].note(f"licence {self.plan.app_name(adam)} NOT assigned: {why}", ok=False)
        jobs = []
        for adam in sorted(lp.assign):
            app = self.plan.catalogue.by_adam_id()[adam]
            serials = sorted(s for a, s in out.done if a == adam)
            for s in serials:
                self.reports[s].note(f"licence {app.name} assigned ({lp.name})")
            for s in serials:
                if s not in self.targets or not self.targets[s].enrollment_id:
                    self.reports[s].note(f"InstallApplication {app.name}: not sent (not enrolled; "
                                         "sent by the next apply after enrolment)")
            ts = self._enrolled(serials)
            if ts:
                jobs.append(Job(app.install_command(), ts, app.name, {"app": app.name, "adam_id": adam}))
        self._send(jobs)


def _limits(lp: LocationPlan) -> tuple[int, int]:
    lim = lp.client.limits()
    return lim["maxAssets"], lim["maxSerialNumbers"]


def _uniq(jobs: list[Job]) -> list[Target]:
    seen: dict[str, Target] = {}
    for j in jobs:
        for t in j.targets:
            seen.setdefault(t.serial, t)
    return list(seen.values())


def _report_commands(reports: dict[str, DeviceApps], action: ActionReport) -> None:
    for d in action.devices:
        if d.serial not in reports:
            continue
        for o in d.outcomes:
            bad = o.status in ("Error", "CommandFormatError", "not sent")
            text = f"{o.request_type} {o.label}: {o.status}" + (f" ({o.detail})" if o.detail else "")
            reports[d.serial].note(text, ok=not bad)


# --- releasing licences (wipe, retirement) -------------------------------------------------------


class LicenceRelease(str):
    """One licence werne asked Apple to take back: its report line, which also carries whether Apple
    confirmed it (`taken_back`), so callers decide from that and never from the wording."""

    adam_id: str
    location: str
    taken_back: bool

    def __new__(cls, adam_id: str, location: str, taken_back: bool, why: str = "") -> LicenceRelease:
        text = (f"licence {adam_id} taken back ({location})" if taken_back
                else f"licence {adam_id} NOT taken back ({location}): {why}")
        line = super().__new__(cls, text)
        line.adam_id, line.location, line.taken_back = adam_id, location, taken_back
        return line


def release_licences(ctx: IPadContext, serials: list[str], reason: str,
                     client_for: ClientFactory | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> dict[str, list[LicenceRelease]]:
    """Take back every licence werne recorded for these serials (all locations); forget a licence
    only when Apple confirms. Returns serial -> what happened to each licence. Audited."""
    client_for = client_for or (lambda loc: appsbooks_client(ctx.config, loc))
    wanted = set(serials)
    rows = [r for r in _recorded(ctx) if r.serial in wanted]
    out: dict[str, list[LicenceRelease]] = {s: [] for s in serials}
    by_loc: dict[str, dict[str, list[str]]] = {}
    for r in rows:
        by_loc.setdefault(r.location, {}).setdefault(r.adam_id, []).append(r.serial)
    for loc, changes in by_loc.items():
        client = client_for(loc)
        lp = LocationPlan(loc, client, {}, {})
        lp.assets = {a: Asset(a, next(r.pricing_param for r in rows if r.adam_id == a), "App", 0, 0, 0, 0, True, True)
                     for a in changes}
        res = _run_manage(lp, "disassociate", changes, ctx.config.apps.event_timeout_s, ctx.config.apps.event_poll_s,
                          sleep)
        _forget(ctx, loc, res.done)
        for a, s in sorted(res.done):
            out[s].append(LicenceRelease(a, loc, True))
        for (a, s), why in sorted(res.failed.items()):
            out[s].append(LicenceRelease(a, loc, False, why))
    audit.record(ctx.db, "apps.release", ",".join(serials[:20]),
                 {"reason": reason, "result": {s: [str(r) for r in rs] for s, rs in out.items()}}, actor=ctx.actor)
    return out


# --- licence report -------------------------------------------------------------------------------


@dataclass
class LicenceRow:
    """One school and app: what the school's iPads need and hold, and the location's counts."""

    school: str
    location: str
    app: str
    adam_id: str
    needed: int  # iPads of this school whose group gets the app
    assigned_here: int  # of those, holding a licence now
    location_bought: int
    location_assigned: int
    location_free: int
    location_more_needed: int  # the plan's new licences at this location (all schools)

    @property
    def enough(self) -> bool:
        return self.location_more_needed <= self.location_free

    def cells(self) -> list[object]:
        return [self.school, self.location, self.app, self.adam_id, self.needed, self.assigned_here,
                self.location_bought, self.location_assigned, self.location_free, self.location_more_needed,
                "yes" if self.enough else "NO"]


HEADER = ["school", "location", "app", "adam_id", "needed", "assigned", "location_bought", "location_assigned",
          "location_free", "location_more_needed", "enough"]


def licence_report(ctx: IPadContext, client_for: ClientFactory | None = None) -> list[LicenceRow]:
    """Per school and app: bought, assigned, free (the location's), what the plan needs."""
    p = make_plan(ctx, client_for=client_for)
    rows: list[LicenceRow] = []
    for sid in sorted(ctx.inventory.schools):
        loc = _location_of_school(ctx, sid)
        if loc is None or loc not in p.locations:
            continue
        lp = p.locations[loc]
        serials = [i.serial for i in ctx.inventory.ipads_of_school(sid)]
        for app in sorted(p.catalogue.apps.values(), key=lambda a: a.name):
            needing = [s for s in serials if app.adam_id in p.wanted.get(s, set())]
            if not needing:
                continue
            asset = lp.assets[app.adam_id]
            holders = lp.held.get(app.adam_id, set())
            rows.append(LicenceRow(sid, loc, app.name, app.adam_id, len(needing),
                                   sum(1 for s in needing if s in holders), asset.total, asset.assigned,
                                   asset.available, len(lp.assign.get(app.adam_id, []))))
    audit.record(ctx.db, "apps.licences", "all", {"rows": len(rows), "api_calls": p.api_calls}, actor=ctx.actor)
    return rows


def render_licences_csv(rows: list[LicenceRow]) -> str:
    table: list[list[object]] = [[*HEADER], *(r.cells() for r in rows)]
    return write_csv(table)


def render_licences_html(rows: list[LicenceRow], generated: datetime | None = None) -> str:
    """The licence report as an HTML page (German, as the schools read it)."""
    # Imported here: only this report renders a template, and jinja2 costs ~45 ms to import.
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=True)
    tpl = env.from_string(_HTML)
    return tpl.render(rows=rows, header=HEADER, generated=(generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M"))


_HTML = """<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>App-Lizenzen je Schule</title>
<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}
td.n{text-align:right}tr.short td{background:#fdd}</style></head>
<body><h1>App-Lizenzen je Schule und App</h1><p>Stand {{ generated }} UTC. Gekauft, zugewiesen und frei
gelten je Apps-and-Books-Standort (mehrere Schulen können sich einen Standort teilen).</p>
<table><thead><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for r in rows %}<tr{% if not r.enough %} class="short"{% endif %}>
{%- for c in r.cells() %}<td{% if c is number %} class="n"{% endif %}>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></body></html>
"""
