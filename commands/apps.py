"""`werne apps`: App Store apps on the school iPads (licences through Apple's Apps and Books, then
installs and removals through NanoMDM)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from commands import render
from commands.context import AppContext, finish, ipad_context, pass_app
from commands.options import json_option, max_devices_option, school_option

if TYPE_CHECKING:
    from ipad.apps.licences import AppsPlan


@click.group()
def apps() -> None:
    """App Store apps on the school iPads: licences (Apple's Apps and Books) and installs.

    Example:

        werne apps plan --school gs-demo
    """


def _print_apps_plan(p: AppsPlan) -> None:
    notes = [f"licences {c.location} {c.app}: {c.needed_new} new, {c.freed} freed, {c.free} free of "
             f"{c.bought}: {'enough' if c.enough else 'TOO FEW'}" for c in p.checks]
    notes += [f"{sid}: no apps_location in schools.yml, no apps" for sid in p.skipped_schools]
    render.plan(p.summary(), f"Plan only: nothing was changed ({p.api_calls} Apps and Books calls).", notes)


@apps.command("plan")
@school_option("Only this school's iPads.")
@json_option()
@pass_app
def apps_plan(app: AppContext, school: str | None, as_json: bool) -> None:
    """Show per school which iPads get or lose which app, and whether the licences suffice.

    Exit 1 when a location has too few licences for the plan.

    Example:

        werne apps plan --school gs-demo
    """
    from ipad.apps.licences import plan

    p = plan(ipad_context(app), school)
    if as_json:
        render.json_out(p.to_dict())
    else:
        _print_apps_plan(p)
    finish(p)


@apps.command("apply")
@school_option("Only this school's iPads.")
@max_devices_option
@click.option("--deadline", type=float, default=0.0, show_default=True,
              help="Seconds to wait for the iPads to answer Install/RemoveApplication (0: queue and go).")
@json_option()
@pass_app
def apps_apply(app: AppContext, school: str | None, max_devices: int | None, deadline: float,
               as_json: bool) -> None:
    """Assign or take back app licences (Apps and Books), then install or remove the apps.

    Exit 0 all done, 1 some iPads not (listed), 2 bad input (unknown app, too few licences,
    blast radius), 3 Apple refused a location token or could not be reached.

    Example:

        werne apps apply --school gs-demo --max-devices 120
    """
    from ipad.apps.licences import apply

    report = apply(ipad_context(app), school, max_devices, deadline)
    if as_json:
        render.json_out(report.to_dict())
    else:
        render.device_lines((d.serial, d.school, d.ok, "; ".join(d.lines)) for d in report.devices)
        render.line(f"apps apply: {len(report.devices) - len(report.failed)} ok, {len(report.failed)} not ok; "
                    f"{report.api_calls} Apps and Books calls ({report.licence_calls} licence calls)")
    finish(report)


@apps.command("licences")
@click.option("--format", "fmt", type=click.Choice(["csv", "html"]), default="csv", show_default=True,
              help="Report format.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="Write the report here.")
@pass_app
def apps_licences(app: AppContext, fmt: str, out_path: str) -> None:
    """Licence report per school and app: bought, assigned, free, what the plan needs.

    Example:

        werne apps licences --format html --out lizenzen.html
    """
    from pathlib import Path

    from ipad.apps.licences import licence_report, render_licences_csv, render_licences_html

    rows = licence_report(ipad_context(app))
    text = render_licences_csv(rows) if fmt == "csv" else render_licences_html(rows)
    Path(out_path).write_text(text, encoding="utf-8")
    short = sum(1 for r in rows if not r.enough)
    render.line(f"wrote {out_path}: {len(rows)} rows" + (f", {short} with too few licences" if short else ""))
