"""`werne web`: the coordinators' web page."""

from __future__ import annotations

import click

from commands.context import AppContext, pass_app


@click.group()
def web() -> None:
    """The coordinators' web page.

    Example:

        werne web serve
    """


@web.command("serve")
@click.option("--host", help="Listen address (default: web.listen).")
@click.option("--port", type=click.IntRange(1, 65535), help="Listen port (default: web.listen).")
@pass_app
def web_serve(app: AppContext, host: str | None, port: int | None) -> None:
    """Serve the web page and sweep for arriving iPads until interrupted.

    Example:

        werne web serve --port 8080
    """
    from core.signals import default_termination
    from enrolment.web.app import serve

    default_termination()  # uvicorn stops cleanly on SIGTERM by itself (systemd's stop)
    serve(app.config, host, port)
