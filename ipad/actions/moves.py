"""Moving iPads between schools and groups, and retiring them (the school year's end).

The inventory (ipads.csv) says where each iPad belongs; a move rewrites its school and group cells
there (core.inventory_write: atomic, with a backup, never losing a row) and then makes the iPad
follow: the old group's profiles removed and the new group's installed (`ipad.actions.configure`), app
licences taken back and assigned (`ipad.apps.licences.apply` for the moved serials, which also
removes and installs the apps), and the declarative-management set changed (KMFDDM enrolment ->
`werne-<school>-<group>` set) where the site uses DDM.

Everything that can refuse is checked before ipads.csv changes: unknown serials, schools or groups,
bad CSV rows, the blast radius, and whether the Apps and Books locations have enough licences for
the new groups. After the rewrite, a follow-up that fails (an iPad offline, NanoMDM down) is shown
per iPad; the move stands and `werne ipad configure` / `werne apps apply` finish it later.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import update

from core import audit
from core.csvio import CSVFormatError, decode_csv_bytes, read_rows
from core.errors import WerneError
from core.files import read_regular_file
from core.findings import Findings
from core.inventory import IPAD_CSV_ALIASES, IPAD_GROUPS, SERIAL_RE, Inventory, load_inventory, normalise_serial
from core.inventory_write import Placement, rewrite_ipads
from ipad.actions.configure import configure
from ipad.apps.licences import ClientFactory, apply, make_plan, release_licences
from ipad.ddm.group_sets import ddm_configured
from ipad.dispatch import IPadContext, check_blast_radius
from ipad.errors import MoveError, UnknownDevicesError
from ipad.models import MDMDevice
from ipad.payloads.declarations import load_declaration_groups, set_name
from ipad.payloads.profiles import profile_identifiers_for
from mdm_client.factory import kmfddm_client


@dataclass
class DeviceMove:
    """One iPad's move, and what followed it."""

    serial: str
    old_school: str
    old_group: str
    school: str
    group: str
    lines: list[str] = field(default_factory=list)
    ok: bool = True

    def note(self, text: str, ok: bool = True) -> None:
        self.lines.append(text)
        self.ok = self.ok and ok


@dataclass
class MoveReport(Findings):
    """What `werne ipad move` planned or did, per iPad."""

    moves: list[DeviceMove]
    planned: bool
    backup: Path | None = None
    unchanged: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.moves)

    def to_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "backup": str(self.backup) if self.backup else None,
            "unchanged": self.unchanged,
            "moves": [{"serial": m.serial, "from": f"{m.old_school}/{m.old_group}", "to": f"{m.school}/{m.group}",
                       "ok": m.ok, "summary": "; ".join(m.lines)} for m in self.moves],
        }


def read_move_csv(path: Path, school: str | None, group: str | None) -> list[tuple[str, str | None, str | None]]:
    """Rows (serial, school, group) of a class list: a `serial` column (Apple School Manager's names
    work too) and optional `school` and `group` columns; --school/--group fill empty cells. Any bad
    row refuses the whole file, named with its line."""
    try:
        raw = read_regular_file(path)
        rows = read_rows(decode_csv_bytes(raw, str(path)), str(path), IPAD_CSV_ALIASES, {"serial"})
    except CSVFormatError:
        raise
    except OSError as e:
        raise MoveError(f"{path}: cannot read: {e.strerror}") from None
    out: list[tuple[str, str | None, str | None]] = []
    problems: list[str] = []
    for line, row in rows:
        serial = normalise_serial(row.get("serial", ""))
        if not SERIAL_RE.match(serial):
            problems.append(f"{path}:{line}: bad serial '{serial[:20]}'")
            continue
        out.append((serial, row.get("school") or school, (row.get("group") or group or "").lower() or None))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MoveError(f"{problems[0]}{more}; nothing was moved")
    if not out:
        raise MoveError(f"{path}: no iPads listed; nothing was moved")
    return out


def _wanted(ctx: IPadContext, items: list[tuple[str, str | None, str | None]]
            ) -> tuple[dict[str, Placement], list[str]]:
    inv = ctx.inventory
    unknown = sorted({s for s, _, _ in items if s not in inv.ipads})
    if unknown:
        raise UnknownDevicesError(f"not in ipads.csv: {', '.join(unknown)}; nothing was moved", unknown)
    moves: dict[str, Placement] = {}
    unchanged: list[str] = []
    problems: list[str] = []
    for serial, school, group in items:
        cur = inv.ipads[serial]
        place = Placement(school or cur.school, group or cur.group)
        if place.school not in inv.schools:
            problems.append(f"unknown school '{place.school}' (schools: {', '.join(sorted(inv.schools))})")
        elif place.group not in IPAD_GROUPS:
            problems.append(f"unknown group '{place.group}' (groups: {', '.join(IPAD_GROUPS)})")
        elif serial in moves and moves[serial] != place:
            problems.append(f"{serial} is listed twice with different places")
        elif (cur.school, cur.group) == (place.school, place.group):
            unchanged.append(serial)
        else:
            moves[serial] = place
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MoveError(f"{problems[0]}{more}; nothing was moved")
    return moves, sorted(set(unchanged))


def _moved_inventory(inv: Inventory, moves: dict[str, Placement]) -> Inventory:
    ipads = {s: (i.model_copy(update={"school": moves[s].school, "group": moves[s].group}) if s in moves else i)
             for s, i in inv.ipads.items()}
    return dataclasses.replace(inv, ipads=ipads)


def _plan_lines(ctx: IPadContext, m: DeviceMove) -> None:
    old = set(profile_identifiers_for(m.old_group, ctx.config))
    new = set(profile_identifiers_for(m.group, ctx.config))
    for p in sorted(old - new):
        m.note(f"remove profile {p}")
    for p in sorted(new - old):
        m.note(f"install profile {p}")


def move(ctx: IPadContext, serials: tuple[str, ...] = (), school: str | None = None, group: str | None = None,
         csv_file: Path | None = None, plan: bool = False, max_devices: int | None = None,
         deadline_s: float | None = None, client_for: ClientFactory | None = None) -> MoveReport:
    """Move iPads to another school and/or group; `plan` shows what would change and changes nothing."""
    if bool(serials) == bool(csv_file):
        raise MoveError("name the iPads by serial or with --csv FILE (one of them)")
    if not csv_file and school is None and group is None:
        raise MoveError("say where to: --school and/or --group")
    if group is not None and group.lower() not in IPAD_GROUPS:
        raise MoveError(f"unknown group '{group}' (groups: {', '.join(IPAD_GROUPS)}); nothing was moved")
    items = (read_move_csv(csv_file, school, group) if csv_file
             else [(normalise_serial(s), school, group.lower() if group else None) for s in serials])
    moves, unchanged = _wanted(ctx, items)
    inv = ctx.inventory
    report = MoveReport([DeviceMove(s, inv.ipads[s].school, inv.ipads[s].group, p.school, p.group)
                         for s, p in sorted(moves.items())], plan, unchanged=unchanged)
    after = ctx.with_inventory(_moved_inventory(inv, moves))
    # Licences first: too few for the new groups refuses the move before anything changes.
    apps_plan = None
    if moves and ctx.config.apps.locations:
        apps_plan = make_plan(after, client_for=client_for, serials=set(moves))
        if apps_plan.problems:
            more = f" (and {len(apps_plan.problems) - 1} more)" if len(apps_plan.problems) > 1 else ""
            audit.record(ctx.db, "ipad.move", ",".join(sorted(moves)),
                         {"result": "refused", "problems": apps_plan.problems}, actor=ctx.actor)
            raise MoveError(f"{apps_plan.problems[0]}{more}; nothing was moved")
    by = {m.serial: m for m in report.moves}
    if plan:
        for m in report.moves:
            _plan_lines(ctx, m)
        if apps_plan is not None:
            for lp in apps_plan.locations.values():
                for verb, changes in (("get", lp.assign), ("lose", lp.revoke)):
                    for adam, ss in sorted(changes.items()):
                        for s in ss:
                            if s in by:
                                by[s].note(f"{verb} app {apps_plan.app_name(adam)} ({lp.name})")
        audit.record(ctx.db, "ipad.move.plan", ",".join(sorted(moves)), report.to_dict(), actor=ctx.actor)
        return report
    if not moves:
        return report
    check_blast_radius(ctx, len(moves), max_devices, "move")
    report.backup = rewrite_ipads(ctx.config.inventory_dir, moves)
    ctx.inventory = load_inventory(ctx.config.inventory_dir)
    with ctx.db.session() as session:  # the registry's copy of school and group (set at enrolment)
        for serial, p in moves.items():
            session.execute(update(MDMDevice).where(MDMDevice.serial == serial).values(school=p.school, group=p.group))
    for m in report.moves:
        m.note(f"ipads.csv: {m.old_school}/{m.old_group} -> {m.school}/{m.group}")
    _follow(ctx, report, set(moves), max_devices, deadline_s, client_for)
    audit.record(ctx.db, "ipad.move", ",".join(sorted(moves)), {**report.to_dict(), "backup": str(report.backup)},
                 actor=ctx.actor)
    return report


def _follow(ctx: IPadContext, report: MoveReport, moved: set[str], max_devices: int | None,
            deadline_s: float | None, client_for: ClientFactory | None) -> None:
    """Profiles, apps and DDM sets follow the moved iPads; a failure is noted per iPad, never raised."""
    by = {m.serial: m for m in report.moves}
    devices = ctx.registry.devices_by_serial()
    enrolled = tuple(sorted(s for s in moved if s in devices and devices[s].state == "enrolled"))
    n = max(len(moved), max_devices or 0)
    for s in sorted(moved - set(enrolled)):
        by[s].note("profiles: not enrolled; the new group's set is installed on enrolment")
    try:
        if enrolled:
            prof = configure(ctx, serials=enrolled, max_devices=n, deadline_s=deadline_s)
            for d in prof.devices:
                by[d.serial].note(f"profiles: {d.summary()}", ok=d.ok)
    except WerneError as e:
        for s in enrolled:
            by[s].note(f"profiles: not changed ({e}); run `werne ipad configure`", ok=False)
    if ctx.config.apps.locations:
        try:
            apps = apply(ctx, max_devices=n, deadline_s=deadline_s or 0.0, client_for=client_for, serials=moved)
            for device_apps in apps.devices:
                for note in device_apps.notes if device_apps.serial in by else []:
                    by[device_apps.serial].note(f"apps: {note.text}", ok=note.ok)
        except WerneError as e:
            for m in report.moves:
                m.note(f"apps: not changed ({e}); run `werne apps apply`", ok=False)
    _follow_ddm(ctx, report)


def _follow_ddm(ctx: IPadContext, report: MoveReport) -> None:
    """Hook for declarative management (issue 13): move each enrolled iPad from the KMFDDM set of its
    old school/group to the new one's (ipad.payloads.declarations.set_name), where the site uses KMFDDM."""
    if not ddm_configured(ctx.config):
        return
    try:
        groups = load_declaration_groups()
        client = kmfddm_client(ctx.config)
    except WerneError as e:
        for m in report.moves:
            m.note(f"declarations: not changed ({e})", ok=False)
        return
    devices = ctx.registry.devices_by_serial()
    for m in report.moves:
        dev = devices.get(m.serial)
        if dev is None or dev.state != "enrolled":
            continue
        old, new = set_name(groups, m.old_school, m.old_group), set_name(groups, m.school, m.group)
        try:
            client.unmap_enrollment(dev.enrollment_id, old)
            client.map_enrollment(dev.enrollment_id, new)
            m.note(f"declarations: set {old} -> {new}")
        except WerneError as e:
            m.note(f"declarations: not changed ({e})", ok=False)


def retire(ctx: IPadContext, serials: tuple[str, ...], client_for: ClientFactory | None = None) -> MoveReport:
    """Take iPads out of use: their app licences back, their rows out of ipads.csv (backup kept)."""
    wanted = sorted({normalise_serial(s) for s in serials})
    if not wanted:
        raise MoveError("name the iPads to retire by serial")
    unknown = [s for s in wanted if s not in ctx.inventory.ipads]
    if unknown:
        raise UnknownDevicesError(f"not in ipads.csv: {', '.join(unknown)}; nothing was retired", unknown)
    inv = ctx.inventory
    report = MoveReport([DeviceMove(s, inv.ipads[s].school, inv.ipads[s].group, "-", "-") for s in wanted], False)
    released = release_licences(ctx, wanted, "retired", client_for=client_for) if ctx.config.apps.locations else {}
    report.backup = rewrite_ipads(ctx.config.inventory_dir, remove=set(wanted))
    ctx.inventory = load_inventory(ctx.config.inventory_dir)
    for m in report.moves:
        for r in released.get(m.serial, []):
            m.note(str(r), ok=r.taken_back)
        m.note("removed from ipads.csv")
    audit.record(ctx.db, "ipad.retire", ",".join(wanted), {**report.to_dict(), "backup": str(report.backup)},
                 actor=ctx.actor)
    return report
