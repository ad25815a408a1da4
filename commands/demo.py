"""`werne demo`: the README's first command (the nightly job on the built-in demo fleet)."""

from __future__ import annotations

import click

from commands import render
from commands.context import AppContext, pass_app

STEP_COLUMNS = (render.Col(16), render.Col())


@click.command("demo")
@click.option("--laptops", type=click.IntRange(1, 70), default=3, show_default=True,
              help="How many lab laptops to boot.")
@click.option("--ipads", type=click.IntRange(1, 600), default=12, show_default=True,
              help="How many simulated iPads to enrol.")
@pass_app
def demo(app: AppContext, laptops: int, ipads: int) -> None:
    """Run the nightly job on the built-in demo fleet, from nothing, and write the HTML report.

    Boots the lab (laptops, VPN gateway, NanoMDM and simulated iPads), pins host keys, applies
    the VPN gateway, provisions the laptops (which enrols them in the VPN), installs the iPads'
    profiles, runs the compliance check over both fleets and writes the report. Needs root. Some simulated
    iPads are faulty on purpose (offline, no passcode, old iPadOS), so the report has findings.
    Stop the lab afterwards with `werne lab down`.

    Example:

        werne demo --laptops 3 --ipads 12
    """
    from lab.demo import run_demo

    result = run_demo(app.config, laptops=laptops, ipads=ipads, say=render.to_stderr)
    render.line("")
    render.table(STEP_COLUMNS, result.steps)
    render.line("")
    render.line(f"Report: {result.report_path}")
    render.line("Stop the lab with: werne lab down")
