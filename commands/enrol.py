"""`werne enrol`: the schools' enrolment requests (list, show, approve through NanoDEP, reject,
close), the DEP account's status, and one sweep for arriving iPads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from commands import render
from commands.context import AppContext, finish, pass_app
from commands.options import ID, json_option
from enrolment.models import REQUEST_STATES

if TYPE_CHECKING:
    from enrolment.requests import RequestView

LIST_COLUMNS = (render.Col(5, right=True, gap="  "), render.Col(10), render.Col(12), render.Col(8),
                render.Col(gap="  "), render.Col())
SERIAL_COLUMNS = (render.Col(13), render.Col(11), render.Col())


@click.group()
def enrol() -> None:
    """Enrolment requests from schools: list, show, approve (DEP assignment), reject, close.

    Example:

        werne enrol list
    """


def _print_request(view: RequestView) -> None:
    render.line(f"request {view.id}: {view.school_id} {view.group} '{view.purpose}' {view.status} "
                f"({view.enrolled} of {view.total} enrolled, {view.configured} configured) by {view.created_by}")
    if view.reason:
        render.line(f"  reason: {view.reason}")
    render.table(SERIAL_COLUMNS, ((s.serial, s.status, s.reason or "") for s in view.serials), indent="  ",
                 rstrip=True)


@enrol.command("list")
@click.option("--status", type=click.Choice(REQUEST_STATES), help="Only requests in this state.")
@json_option("the requests")
@pass_app
def enrol_list(app: AppContext, status: str | None, as_json: bool) -> None:
    """List enrolment requests of every school, newest first.

    Example:

        werne enrol list --status submitted
    """
    from core.audit import current_actor
    from enrolment.accounts import cli_principal
    from enrolment.requests import list_requests

    items = list_requests(app.db, cli_principal(current_actor()), status=status)
    if as_json:
        render.json_out([i.as_dict() for i in items])
        return
    if not items:
        render.line(f"no enrolment requests{f' with status {status}' if status else ''}")
        return
    render.table(LIST_COLUMNS, ((v.id, v.status, v.school_id, v.group, f"{v.enrolled}/{v.total}", v.purpose)
                                for v in items))


@enrol.command("show")
@click.argument("request_id", type=ID)
@json_option("the request")
@pass_app
def enrol_show(app: AppContext, request_id: int, as_json: bool) -> None:
    """Show one request with the status of each serial.

    Example:

        werne enrol show 12
    """
    from core.audit import current_actor
    from enrolment.accounts import cli_principal
    from enrolment.requests import get_request

    view = get_request(app.db, cli_principal(current_actor()), request_id)
    if as_json:
        render.json_out(view.as_dict())
    else:
        _print_request(view)


@enrol.command("approve")
@click.argument("request_id", type=ID)
@pass_app
def enrol_approve(app: AppContext, request_id: int) -> None:
    """Approve a request: assign its serials to the school's DEP profile through NanoDEP.

    Run it again to retry serials Apple answered THROTTLED. Exit 1 if any serial failed.

    Example:

        werne enrol approve 12
    """
    from core.audit import current_actor
    from enrolment.accounts import cli_principal
    from enrolment.requests import approve_request

    view = approve_request(app.db, app.config, app.inventory, cli_principal(current_actor()), request_id)
    _print_request(view)
    finish(view)


@enrol.command("reject")
@click.argument("request_id", type=ID)
@click.option("--reason", required=True, help="Why; the coordinator sees it.")
@pass_app
def enrol_reject(app: AppContext, request_id: int, reason: str) -> None:
    """Reject a submitted request, with a reason the coordinator sees.

    Example:

        werne enrol reject 12 --reason "Geräte gehören nicht der Stadt"
    """
    from core.audit import current_actor
    from enrolment.accounts import cli_principal
    from enrolment.requests import reject_request

    _print_request(reject_request(app.db, cli_principal(current_actor()), request_id, reason))


@enrol.command("close")
@click.argument("request_id", type=ID)
@pass_app
def enrol_close(app: AppContext, request_id: int) -> None:
    """Mark a configured request done.

    Example:

        werne enrol close 12
    """
    from core.audit import current_actor
    from enrolment.accounts import cli_principal
    from enrolment.requests import close_request

    _print_request(close_request(app.db, cli_principal(current_actor()), request_id))


@enrol.command("dep-status")
@pass_app
def enrol_dep_status(app: AppContext) -> None:
    """Check NanoDEP and the Apple DEP account behind dep.name (tokens valid, terms accepted).

    Example:

        werne enrol dep-status
    """
    from enrolment.dep import dep_status

    st = dep_status(app.config)
    render.line(f"NanoDEP {st.nanodep_version or '?'} at {st.nanodep_url}, DEP name {st.dep_name}: "
                f"server '{st.server_name}' of '{st.org_name}' (admin {st.admin_id or '?'})")


@enrol.command("sync")
@pass_app
def enrol_sync(app: AppContext) -> None:
    """Install profiles on newly enrolled iPads of approved requests, and record acknowledgements.

    `werne web serve` does this every few seconds; this runs one sweep.

    Example:

        werne enrol sync
    """
    from enrolment.arrival import process_arrivals

    r = process_arrivals(app.db, app.config)
    render.line(f"enrolled {len(r.enrolled)}, configured {len(r.configured)}, failed {len(r.failed)}, "
                f"deferred {len(r.deferred)}, commands sent {r.commands_sent}")
    for serial, why in {**r.failed, **r.deferred}.items():
        render.line(f"  {serial}: {why}")
    finish(r)
