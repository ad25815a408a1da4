"""`werne deploy`: the production deployment of the iPad side, as files (systemd units, the nginx front)."""

from __future__ import annotations

import click

from commands import render
from commands.context import AppContext, pass_app
from commands.options import json_option


@click.group()
def deploy() -> None:
    """The production deployment of the iPad side: systemd units and the nginx HTTPS front.

    Example:

        werne deploy write --out deploy-out
    """


@deploy.command("write")
@click.option("--host", default=None,
              help="The public host name; must be mdm.server_url's (the default), or nothing is written.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder to write systemd/ and nginx/ into.")
@json_option()
@pass_app
def deploy_write(app: AppContext, host: str | None, out_dir: str, as_json: bool) -> None:
    """Write the units and both nginx sites (HTTPS, and port 80 alone until a certificate exists),
    with the paths, ports and account of the config's [server] section, for copying by hand.
    `werne server install` installs the same files.

    Example:

        werne --config /etc/werne/werne.toml deploy write --out deploy-out
    """
    from pathlib import Path

    from server.deploy import write_deployment

    result = write_deployment(app.config, Path(out_dir), host)
    if as_json:
        render.json_out(result.to_dict())
        return
    for f in result.files:
        render.line(f"{f.path}  ->  {f.install_to}")
