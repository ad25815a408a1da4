"""The options and arguments that many commands share, each defined once (sqlite-utils does the
same with its `output_options`): `--json`, `--school`, the serials, `--deadline`, `--max-devices`,
the hosts, and the id of a stored request or run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# Ids of requests and runs are 64-bit integers in the database: a longer number is bad input (exit 2).
ID = click.IntRange(1, 2**63 - 1)


def json_option(what: str = "the result") -> Callable[[F], F]:
    """`--json`: print `what` as JSON instead of lines (the command gets `as_json`)."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")


def school_option(help: str = "All iPads of this school.") -> Callable[[F], F]:
    """`--school ID`: the iPads (or sets) of one school (the command gets `school`)."""
    return click.option("--school", default=None, help=help)


def serials_argument(required: bool = False) -> Callable[[F], F]:
    """The iPads' serial numbers, as many as given (the command gets `serials`)."""
    return click.argument("serials", nargs=-1, required=required)


def hosts_argument(required: bool = False) -> Callable[[F], F]:
    """The laptops' inventory names, as many as given (the command gets `hosts`)."""
    return click.argument("hosts", nargs=-1, required=required)


deadline_option = click.option(
    "--deadline", "deadline", type=float, default=None,
    help="Seconds to wait for the iPads' answers (default: mdm.query_deadline_s; "
         "30 for lock/lost-mode/clear-passcode/wipe).")

max_devices_option = click.option(
    "--max-devices", type=click.IntRange(0, None), default=None,
    help="Confirm an action on more iPads than mdm.blast_radius (must cover the count).")
