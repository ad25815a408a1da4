"""`werne user`: the web page's local accounts (IT admins and school coordinators)."""

from __future__ import annotations

import sys

import click

from commands import render
from commands.context import AppContext, pass_app
from commands.options import json_option

USER_COLUMNS = (render.Col(24), render.Col(12), render.Col(9), render.Col())


def _read_new_password(from_stdin: bool) -> str:
    """A new password from one line of stdin, or an interactive hidden prompt; never from argv."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group()
def user() -> None:
    """Manage web accounts: IT admins and school coordinators.

    Example:

        werne user add anna.schmidt --role coordinator --school gs-demo
    """


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "coordinator", "teacher"]), required=True,
              help="admin, coordinator (a school's iPads and classes) or teacher (their classes' lessons).")
@click.option("--school", "schools", multiple=True, help="School id the coordinator may see (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
@pass_app
def user_add(app: AppContext, username: str, role: str, schools: tuple[str, ...], password_stdin: bool) -> None:
    """Create a local web account; the password is prompted for (or read from stdin), never an argument.

    Example:

        printf '%s\\n' "$PW" | werne user add anna.schmidt --role coordinator --school gs-demo --password-stdin
    """
    from core.audit import current_actor
    from enrolment.accounts import add_user

    password = _read_new_password(password_stdin)
    p = add_user(app.db, username, password, role, list(schools), set(app.inventory.schools), current_actor())
    render.line(f"user {p.username} added ({p.role}{': ' + ', '.join(sorted(p.schools)) if p.schools else ''})")


@user.command("disable")
@click.argument("username")
@pass_app
def user_disable(app: AppContext, username: str) -> None:
    """Disable an account; its sessions stop working at their next request.

    Example:

        werne user disable anna.schmidt
    """
    from core.audit import current_actor
    from enrolment.accounts import set_active

    set_active(app.db, username, False, current_actor())
    render.line(f"user {username} disabled")


@user.command("reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
@pass_app
def user_reset_password(app: AppContext, username: str, password_stdin: bool) -> None:
    """Set a new password (prompted, or from stdin) and clear failed-login counters.

    Example:

        werne user reset-password anna.schmidt
    """
    from core.audit import current_actor
    from enrolment.accounts import reset_password

    reset_password(app.db, username, _read_new_password(password_stdin), current_actor())
    render.line(f"password of {username} reset")


@user.command("unlock")
@click.argument("username")
@pass_app
def user_unlock(app: AppContext, username: str) -> None:
    """End an account's login backoff: forget its failed logins from every address (audited).

    Example:

        werne user unlock anna.schmidt
    """
    from core.audit import current_actor
    from enrolment.accounts import unlock

    n = unlock(app.db, username, current_actor())
    render.line(f"user {username}: {n} failed login(s) forgotten; the backoff is over")


@user.command("list")
@json_option("the users")
@pass_app
def user_list(app: AppContext, as_json: bool) -> None:
    """List web accounts with role and schools.

    Example:

        werne user list
    """
    from enrolment.accounts import list_users

    users = list_users(app.db)
    if as_json:
        render.json_out(users)
        return
    if not users:
        render.line("no web accounts (werne user add NAME --role admin|coordinator)")
        return
    render.table(USER_COLUMNS, ((u["username"], u["role"], "active" if u["active"] else "disabled",
                                 _schools(u["schools"])) for u in users))


def _schools(value: object) -> str:
    # list_users gives plain dicts (they are the --json output too): the schools are a list of ids.
    return ", ".join(str(s) for s in value) if isinstance(value, list) else str(value)
