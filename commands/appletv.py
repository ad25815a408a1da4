"""`werne appletv`: the classroom Apple TVs (appletvs.csv): list, ADE assignment (tvOS DEP profile),
configure (profiles and the name from the room), tvOS updates."""

from __future__ import annotations

import click

from commands import render
from commands.context import AppContext, finish, ipad_context, pass_app
from commands.options import deadline_option, json_option, max_devices_option, school_option, serials_argument

APPLETV_COLUMNS = (render.Col(12), render.Col(10), render.Col(8), render.Col(18), render.Col(10), render.Col(8),
                   render.Col(17), render.Col())
APPLETV_HEADER = ("SERIAL", "SCHOOL", "ROOM", "NAME", "STATE", "TVOS", "LAST SEEN", "AIRPLAY ID")


@click.group()
def appletv() -> None:
    """Classroom Apple TVs: list, enrol through ADE (tvOS DEP profile), configure, update tvOS.

    Example:

        werne appletv list --school gs-demo
    """


@appletv.command("list")
@school_option("Only this school's Apple TVs.")
@json_option()
@pass_app
def appletv_list(app: AppContext, school: str | None, as_json: bool) -> None:
    """List the Apple TVs: school, room, the name werne gives them, MDM state, tvOS, AirPlay id.

    Example:

        werne appletv list --json
    """
    from ipad.appletv.airplay import learned_airplay_ids

    ctx = ipad_context(app)
    devices = ctx.registry.devices_by_serial()
    learned = learned_airplay_ids(devices)
    rows = []
    for tv in app.inventory.appletvs_of_school(school):
        d = devices.get(tv.serial)
        rows.append({"serial": tv.serial, "school": tv.school, "room": tv.room, "name": tv.device_name,
                     "state": d.state if d else "not enrolled", "os_version": d.os_version if d else None,
                     "last_seen": d.last_seen_at.isoformat() if d and d.last_seen_at else None,
                     "airplay_id": tv.airplay_id or learned.get(tv.serial, "")})
    if as_json:
        render.json_out(rows)
        return
    render.table(APPLETV_COLUMNS, [APPLETV_HEADER, *[
        (r["serial"], r["school"], r["room"], r["name"], r["state"], r["os_version"] or "-",
         (r["last_seen"] or "-")[:16].replace("T", " "), r["airplay_id"] or "-") for r in rows]])
    render.line(f"{len(rows)} Apple TVs")


@appletv.command("assign")
@school_option("Only this school's Apple TVs.")
@json_option()
@pass_app
def appletv_assign(app: AppContext, school: str | None, as_json: bool) -> None:
    """Assign the Apple TVs their school's tvOS DEP profile through NanoDEP (Automated Device Enrolment).

    Example:

        werne appletv assign --school gs-demo
    """
    from core.audit import current_actor
    from enrolment.appletv import assign_appletvs

    result = assign_appletvs(app.db, app.config, app.inventory, school, current_actor())
    if as_json:
        render.json_out(result.to_dict())
    else:
        render.device_lines((s, None, st == "SUCCESS", st) for s, st in sorted(result.outcomes.items()))
    finish(result)


@appletv.command("configure")
@school_option("All Apple TVs of this school.")
@serials_argument()
@click.option("--plan", is_flag=True, help="Only count what would change; send nothing.")
@max_devices_option
@deadline_option
@json_option()
@pass_app
def appletv_configure(app: AppContext, school: str | None, serials: tuple[str, ...], plan: bool,
                      max_devices: int | None, deadline: float | None, as_json: bool) -> None:
    """Install and remove profiles so each Apple TV has exactly its set (AirPlay security, restrictions,
    Wi-Fi, its school's own, e.g. Conference Room Display).

    Example:

        werne appletv configure --school gs-demo --plan
    """
    from commands.ipad import print_action
    from ipad.actions.configure import configure

    report = configure(ipad_context(app), school, serials, plan, max_devices, deadline, kind="appletv")
    print_action(report, as_json)


@appletv.command("update")
@click.option("--to", "version", required=True, help="The tvOS version to install, e.g. 18.2.")
@school_option("All Apple TVs of this school.")
@serials_argument()
@max_devices_option
@deadline_option
@json_option()
@pass_app
def appletv_update(app: AppContext, version: str, school: str | None, serials: tuple[str, ...],
                   max_devices: int | None, deadline: float | None, as_json: bool) -> None:
    """Install a tvOS version now (ScheduleOSUpdate, InstallASAP): tvOS has no declarative update enforcement.

    Example:

        werne appletv update --to 18.2 --school gs-demo
    """
    from commands.ipad import print_action
    from ipad.appletv.update import update_appletvs

    print_action(update_appletvs(ipad_context(app), version, school, serials, max_devices, deadline), as_json)
