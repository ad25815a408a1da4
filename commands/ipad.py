"""`werne ipad`: the school iPads through NanoMDM (list, query, configure, lock, lost mode, clear
passcode, wipe, move, retire), their Activation Lock bypass codes, iPadOS updates and the
declarations of their groups (KMFDDM), and Apple's catalogue of iPadOS versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from commands import render
from commands.context import AppContext, finish, ipad_context, pass_app
from commands.options import deadline_option, json_option, max_devices_option, school_option, serials_argument

if TYPE_CHECKING:
    from ipad.actions.moves import MoveReport
    from ipad.ddm.update import UpdateReport
    from ipad.dispatch import ActionReport

LIST_COLUMNS = (render.Col(13), render.Col(12), render.Col(8), render.Col(13), render.Col(17), render.Col(8),
                render.Col(4, right=True), render.Col(6, right=True), render.Col(10, gap="  "), render.Col())
LIST_HEADER = ("SERIAL", "SCHOOL", "GROUP", "STATE", "LAST SEEN", "OS", "PEND", "NOTNOW", "CERT UNTIL", "PROBLEMS")
MOVE_COLUMNS = (render.Col(13), render.Col(gap="  "), render.Col(gap="  "), render.Col())
UPDATE_COLUMNS = (render.Col(13), render.Col(12), render.Col(12), render.Col(8), render.Col(12), render.Col())
MAPPED_COLUMNS = (render.Col(13), render.Col())


@click.group()
def ipad() -> None:
    """School iPads through NanoMDM: list, query, configure, lock, lost mode, clear passcode, wipe.

    Example:

        werne ipad list --school gs-demo
    """


def print_action(report: ActionReport, as_json: bool) -> None:
    if as_json:
        render.json_out(report.to_dict())
    else:
        if report.plan is not None:
            render.plan(report.plan, "Plan only: nothing was sent.")
            return
        render.device_lines((d.serial, d.school, d.ok, d.summary()) for d in report.devices)
        counts = report.counts()
        render.line(f"{report.action}: {counts.get('ok', 0)} ok, {counts.get('not ok', 0)} not ok"
                    + (f"; no answer from: {', '.join(report.not_answered)}" if report.not_answered else ""))
    finish(report)


@ipad.command("list")
@school_option("Only this school's iPads.")
@json_option()
@pass_app
def ipad_list(app: AppContext, school: str | None, as_json: bool) -> None:
    """List iPads: enrolment state, last seen, pending/NotNow commands, identity cert expiry, problems.

    Example:

        werne ipad list --school gs-demo --json
    """
    from ipad.actions.listing import list_ipads

    rows = list_ipads(ipad_context(app), school)
    if as_json:
        render.json_out([r.to_dict() for r in rows])
        return
    lines: list[tuple[object, ...]] = [LIST_HEADER]
    for r in rows:
        seen = r.last_seen.strftime("%Y-%m-%d %H:%M") if r.last_seen else "-"
        cert = r.identity_cert_not_after.strftime("%Y-%m-%d") if r.identity_cert_not_after else "-"
        lines.append((r.serial, r.school or "-", r.group or "-", r.state, seen, r.os_version or "-", r.pending,
                      r.not_now, cert, "; ".join(r.problems)))
    render.table(LIST_COLUMNS, lines)
    render.line(f"{len(rows)} iPads, {sum(1 for r in rows if r.problems)} with problems")


@ipad.command("query")
@school_option()
@serials_argument()
@deadline_option
@json_option()
@pass_app
def ipad_query(app: AppContext, school: str | None, serials: tuple[str, ...], deadline: float | None,
               as_json: bool) -> None:
    """Ask iPads for device info, security info, profiles and certificates; store the answers.

    Without serials, the enrolled classroom Apple TVs of the selection are asked for their
    certificates too (their MDM identities, for `werne mdm renew`). Waits up to the deadline and
    names the devices that did not answer (exit 1 if any).

    Example:

        werne ipad query --school gs-demo --deadline 60
    """
    from ipad.actions.queries import query

    print_action(query(ipad_context(app), school, serials, deadline, with_appletvs=True), as_json)


@ipad.command("configure")
@school_option()
@serials_argument()
@click.option("--plan", is_flag=True, help="Only show per school how many iPads get which change.")
@max_devices_option
@deadline_option
@json_option()
@pass_app
def ipad_configure(app: AppContext, school: str | None, serials: tuple[str, ...], plan: bool,
                   max_devices: int | None, deadline: float | None, as_json: bool) -> None:
    """Install or remove profiles so each iPad has exactly its group's profile set.

    Example:

        werne ipad configure --school gs-demo --plan
    """
    from ipad.actions.configure import configure

    print_action(configure(ipad_context(app), school, serials, plan, max_devices, deadline), as_json)


@ipad.command("lock")
@serials_argument(required=True)
@click.option("--message", default=None, help="Text on the lock screen.")
@click.option("--phone", default=None, help="Phone number on the lock screen.")
@max_devices_option
@deadline_option
@json_option()
@pass_app
def ipad_lock(app: AppContext, serials: tuple[str, ...], message: str | None, phone: str | None,
              max_devices: int | None, deadline: float | None, as_json: bool) -> None:
    """Lock iPads now (DeviceLock).

    Example:

        werne ipad lock ZDWK1DEGZD --message "Bitte im Sekretariat abgeben"
    """
    from ipad.actions.lock import lock

    print_action(lock(ipad_context(app), serials, message, phone, max_devices, deadline), as_json)


@ipad.command("lost-mode")
@serials_argument(required=True)
@click.option("--message", default=None, help="Lost-mode message (default: names the school).")
@click.option("--phone", default=None, help="Phone number to call (default: the school's support phone).")
@click.option("--footnote", default=None, help="Footnote on the lost-mode screen.")
@click.option("--off", "disable", is_flag=True, help="Leave lost mode (DisableLostMode); deletes the stored location.")
@click.option("--sound", is_flag=True, help="Play a sound on iPads already in lost mode (PlayLostModeSound).")
@max_devices_option
@deadline_option
@json_option()
@pass_app
def ipad_lost_mode(app: AppContext, serials: tuple[str, ...], message: str | None, phone: str | None,
                   footnote: str | None, disable: bool, sound: bool, max_devices: int | None,
                   deadline: float | None, as_json: bool) -> None:
    """Put supervised iPads into lost mode (or take them out with --off, or play a sound with --sound).

    Example:

        werne ipad lost-mode ZDWK1DEGZD --phone "+49 2389 0000"
    """
    from core.errors import InputError
    from ipad.actions.lost_mode import lost_mode

    if sound:
        from ipad.actions.lost_mode import play_sound

        if disable or message or phone or footnote:
            raise InputError("--sound plays a sound on an iPad already in lost mode; give it alone")
        print_action(play_sound(ipad_context(app), serials, deadline), as_json)
        return
    print_action(lost_mode(ipad_context(app), serials, message, phone, footnote, disable, max_devices, deadline),
                  as_json)


@ipad.command("locate")
@serials_argument(required=True)
@deadline_option
@json_option()
@pass_app
def ipad_locate(app: AppContext, serials: tuple[str, ...], deadline: float | None, as_json: bool) -> None:
    """Ask iPads in lost mode where they are (DeviceLocation); refused for any iPad not in lost mode.

    Audited (who asked, never where); the location is deleted when lost mode ends.

    Example:

        werne ipad locate ZDWK1DEGZD
    """
    from ipad.actions.lost_mode import locate

    print_action(locate(ipad_context(app), serials, deadline), as_json)


@ipad.command("clear-passcode")
@serials_argument(required=True)
@max_devices_option
@deadline_option
@json_option()
@pass_app
def ipad_clear_passcode(app: AppContext, serials: tuple[str, ...], max_devices: int | None,
                        deadline: float | None, as_json: bool) -> None:
    """Remove the passcode of iPads (ClearPasscode with the device's UnlockToken).

    Example:

        werne ipad clear-passcode ZDWK1DEGZD
    """
    from ipad.actions.lock import clear_passcode

    print_action(clear_passcode(ipad_context(app), serials, max_devices, deadline), as_json)


@ipad.command("wipe")
@serials_argument(required=True)
@click.option("--yes", is_flag=True, help="Do not ask; needs --max-devices equal to the number of serials.")
@click.option("--return-to-service", is_flag=True,
              help="The iPad enrols again by itself and gets its group's profiles and apps (iPadOS 17+).")
@max_devices_option
@deadline_option
@json_option()
@pass_app
def ipad_wipe(app: AppContext, serials: tuple[str, ...], yes: bool, return_to_service: bool,
              max_devices: int | None, deadline: float | None, as_json: bool) -> None:
    """Erase iPads (EraseDevice). Asks you to type the serials again, unless --yes --max-devices N.

    Example:

        werne ipad wipe ZDWK1DEGZD
    """
    from ipad.actions.wipe import wipe as wipe_and_release
    from ipad.dispatch import select_targets

    ctx = ipad_context(app)
    typed = None
    if not yes:
        select_targets(ctx, serials=serials, require_serials=True)  # unknown serials: exit 2 before asking
        typed = click.prompt(f"This ERASES {len(serials)} iPad(s). Type the serial(s) again to confirm",
                             default="", show_default=False)
    print_action(wipe_and_release(ctx, serials, typed, yes, max_devices, deadline, return_to_service), as_json)


def _print_moves(report: MoveReport, as_json: bool) -> None:
    if as_json:
        render.json_out(report.to_dict())
    else:
        render.table(MOVE_COLUMNS, ((m.serial, f"{m.old_school}/{m.old_group} -> {m.school}/{m.group}",
                                     render.ok_mark(m.ok), "; ".join(m.lines)) for m in report.moves))
        if report.unchanged:
            render.line(f"already there: {', '.join(report.unchanged)}")
        if report.planned:
            render.line("Plan only: nothing was changed.")
        elif report.backup is not None:
            render.line(f"ipads.csv changed; the previous version is {report.backup}")
    finish(report)


@ipad.command("move")
@serials_argument()
@school_option("The new school (default: the iPad's own).")
@click.option("--group", default=None, help="The new group: pupil, teacher or shared (default: the iPad's own).")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A class list: a serial column, optional school and group columns.")
@click.option("--plan", is_flag=True, help="Only show what would change.")
@max_devices_option
@deadline_option
@json_option()
@pass_app
def ipad_move(app: AppContext, serials: tuple[str, ...], school: str | None, group: str | None,
              csv_file: Path | None, plan: bool, max_devices: int | None, deadline: float | None,
              as_json: bool) -> None:
    """Move iPads to another school or group: ipads.csv, profiles, app licences and DDM sets follow.

    Example:

        werne ipad move --csv klasse-5b.csv --school gs-demo --group pupil --plan
    """
    from ipad.actions.moves import move

    _print_moves(move(ipad_context(app), serials, school, group, csv_file, plan, max_devices, deadline), as_json)


@ipad.command("retire")
@serials_argument(required=True)
@json_option()
@pass_app
def ipad_retire(app: AppContext, serials: tuple[str, ...], as_json: bool) -> None:
    """Take iPads out of use: app licences back, rows out of ipads.csv (a backup is kept). Wipe first.

    Example:

        werne ipad retire ZDWK1DEGZD
    """
    from ipad.actions.moves import retire

    _print_moves(retire(ipad_context(app), serials), as_json)


# ---------------------------------------------------------------- activation lock ----------
# (issue 14: Activation Lock escrow)

@ipad.group("activation-lock")
def ipad_activation_lock() -> None:
    """Activation Lock bypass codes: escrow them (encrypted) and show one to IT staff.

    Example:

        werne ipad activation-lock show ZDWK1DEGZD
    """


@ipad_activation_lock.command("escrow")
@school_option()
@serials_argument()
@max_devices_option
@deadline_option
@json_option()
@pass_app
def ipad_activation_lock_escrow(app: AppContext, school: str | None, serials: tuple[str, ...],
                                max_devices: int | None, deadline: float | None, as_json: bool) -> None:
    """Ask iPads for their bypass code (ActivationLockBypassCode); the webhook stores it encrypted.

    Example:

        werne ipad activation-lock escrow --school gs-demo
    """
    from ipad.actions.activation_lock import request_codes

    print_action(request_codes(ipad_context(app), school, serials, max_devices, deadline), as_json)


@ipad_activation_lock.command("show")
@click.argument("serial")
@pass_app
def ipad_activation_lock_show(app: AppContext, serial: str) -> None:
    """Print one iPad's escrowed bypass code (users in activation_lock.allowed_users; audited).

    Example:

        werne ipad activation-lock show ZDWK1DEGZD
    """
    from ipad.actions.activation_lock import show_code

    render.line(show_code(app.config, app.db, serial))


@ipad_activation_lock.command("key")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Write a new escrow key to this file (mode 0600); name it in activation_lock.key_file.")
@pass_app
def ipad_activation_lock_key(app: AppContext, out_path: str) -> None:
    """Make a new escrow key file (refuses to overwrite one).

    Example:

        werne ipad activation-lock key --out /etc/werne/activation-lock.key
    """
    from core.files import write_output
    from ipad.actions.activation_lock import new_key

    # An escrow key is never overwritten: codes escrowed with it could not be read any more.
    write_output(out_path, (new_key() + "\n").encode(), mode=0o600, exclusive=True)
    render.line(f"wrote {out_path}; set activation_lock.key_file to it")


# ---------------------------------------------------------------- updates, declarations -----

def _print_update(report: UpdateReport, plan: bool) -> None:
    if plan:
        render.plan(report.plan(), "Plan only: nothing was sent.")
        return
    rows = []
    for r in report.rows:
        what = report.mapped.get(r.serial) or r.detail or r.outcome
        rows.append((r.serial, r.school or "-", r.model or "-", r.os_version or "-", r.outcome, what))
    render.table(UPDATE_COLUMNS, rows)
    c = report.counts()
    render.line(f"update to {report.target} by {report.deadline}: {c.get('update', 0)} to update, "
                f"{c.get('already', 0)} already there, {c.get('cannot', 0)} cannot take it, "
                f"{c.get('not enrolled', 0)} not enrolled")


@ipad.command("update")
@serials_argument()
@click.option("--to", "version", required=True, help="The iPadOS version to install, e.g. 18.3.")
@click.option("--by", "deadline", required=True,
              help="Deadline, local time at the school (schools.yml time_zone), e.g. '2027-01-15 18:00'.")
@school_option()
@click.option("--group", type=click.Choice(["pupil", "teacher", "shared"]), default=None,
              help="Only iPads of this group.")
@click.option("--plan", is_flag=True,
              help="Only show per model how many iPads get the target, have it, cannot take it.")
@max_devices_option
@json_option()
@pass_app
def ipad_update(app: AppContext, serials: tuple[str, ...], version: str, deadline: str, school: str | None,
                group: str | None, plan: bool, max_devices: int | None, as_json: bool) -> None:
    """Enforce an iPadOS version by a deadline (declarative device management through KMFDDM).

    Which models can take the version comes from Apple's catalogue (werne ipad catalogue import).

    Example:

        werne ipad update --school gs-demo --to 18.3 --by "2027-01-15 18:00" --plan
    """
    from ipad.ddm.update import update

    report = update(ipad_context(app), version, deadline, school, group, serials, plan, max_devices)
    if as_json:
        render.json_out(report.to_dict())
    else:
        _print_update(report, plan)
    if not plan:  # a plan only shows; it has no findings of its own
        finish(report)


@ipad.group("declarations")
def ipad_declarations() -> None:
    """The group sets of declarations in KMFDDM (declarative device management).

    Example:

        werne ipad declarations apply --school gs-demo
    """


@ipad_declarations.command("apply")
@school_option("Only this school's sets and iPads.")
@max_devices_option
@json_option()
@pass_app
def ipad_declarations_apply(app: AppContext, school: str | None, max_devices: int | None, as_json: bool) -> None:
    """Put each group's declarations into its KMFDDM set and every enrolled iPad into its group's set.

    Example:

        werne ipad declarations apply --school gs-demo
    """
    from ipad.ddm.group_sets import apply_group_sets

    report = apply_group_sets(ipad_context(app), school, max_devices)
    if as_json:
        render.json_out(report.to_dict())
    else:
        for name, idents in sorted(report.sets.items()):
            render.line(f"{name}: {len(idents)} declarations")
        render.table(MAPPED_COLUMNS, sorted(report.mapped.items()))
        render.line(f"{len(report.sets)} sets, {len(report.mapped)} iPads mapped, "
                    f"{len(report.not_enrolled)} not enrolled")
    finish(report)


@ipad.group("catalogue")
def ipad_catalogue() -> None:
    """Apple's catalogue of iPadOS versions per model (a saved gdmf.apple.com/v2/pmv answer).

    Example:

        werne ipad catalogue import pmv.json
    """


@ipad_catalogue.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@pass_app
def ipad_catalogue_import(app: AppContext, file: str) -> None:
    """Check a saved pmv answer and store it for `werne ipad update` (ddm.catalogue_file).

    Example:

        werne ipad catalogue import pmv.json
    """
    from ipad.ddm.os_catalogue import import_catalogue

    path, catalogue = import_catalogue(app.config, Path(file))
    versions = catalogue.offered_versions(catalogue.taken_at.date())
    render.line(f"stored {path}: {len(catalogue.releases)} iOS releases, offered now: {', '.join(versions[-5:])}")
