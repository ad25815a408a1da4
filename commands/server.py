"""`werne server`: the MDM server installed or updated from the config by one command."""

from __future__ import annotations

from pathlib import Path

import click

from commands import render
from commands.context import AppContext, finish, pass_app
from commands.options import json_option


@click.group()
def server() -> None:
    """The MDM server: install or update it from the config (Ansible, idempotent).

    Example:

        werne --config werne.toml server install --host mdm.example-city.de --accept-new
    """


@server.command("check-tls")
@json_option("the certificate's subject and end date")
@pass_app
def server_check_tls(app: AppContext, as_json: bool) -> None:
    """Check the HTTPS certificate and key the config names (server.tls_cert_file and tls_key_file,
    or certbot's for acme) on this machine: readable, the key the certificate's, the certificate
    valid now, the key not readable by every user. The install runs it on the server before nginx
    serves them. Exit 0 usable, 2 not (the reason names the setting).

    Example:

        werne --config /etc/werne/werne.toml server check-tls
    """
    from server.deploy import check_server_tls

    tls = check_server_tls(app.config)
    if as_json:
        render.json_out({"cert": str(tls.cert), "key": str(tls.key), "subject": tls.subject,
                         "not_after": tls.not_after.isoformat()})
        return
    render.line(f"{render.ok_mark(True)} {tls.cert}: {tls.subject}, valid until {tls.not_after:%Y-%m-%d}")


@server.command("install")
@click.option("--host", "address", default=None,
              help="The server's address for SSH (as [ssh] user, with [ssh] private_key_file and sudo).")
@click.option("--local", is_flag=True, help="Install on this machine (as root), without SSH.")
@click.option("--port", type=click.IntRange(1, 65535), default=22, show_default=True, help="SSH port.")
@click.option("--accept-new", is_flag=True, help="Pin the server's SSH host key on first contact.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the controller keeps the wheels, rendered files, artifacts and the pinned host key "
                   "(default: <your state dir>/server-install).")
@json_option("the result")
@pass_app
def server_install(app: AppContext, address: str | None, local: bool, port: int, accept_new: bool,
                   work_dir: Path | None, as_json: bool) -> None:
    """Install or update the server side from the config: service account, folders, werne (a venv),
    NanoMDM, NanoDEP, KMFDDM, scepserver, PostgreSQL, nginx, the units; then start everything.

    Running it again changes nothing unless the config or this checkout changed. Exit 0 done,
    1 the playbook failed on the server (the reason names the task), 2 bad config, 3 could not run.

    Example:

        werne --config /etc/werne/werne.toml server install --local
    """
    from server.errors import ServerInputError
    from server.install import InstallTarget, install_server

    if bool(address) == local:
        raise ServerInputError("name the server with --host ADDRESS, or install here with --local")
    cfg = app.config
    target = InstallTarget() if local else InstallTarget(address=address, port=port, user=cfg.ssh.user)
    progress = None if as_json else (lambda text: render.line(f"... {text}", err=True))
    result = install_server(cfg, target, work_dir, accept_new=accept_new, progress=progress)
    if as_json:
        render.json_out(result.to_dict())
    else:
        render.line(f"{render.ok_mark(result.ok)} {result.host}: {result.outcome}, "
                    f"changed={result.changed}, {result.duration_s:.0f} s"
                    + (f", TLS: {result.tls}" if result.tls else ""))
        if result.host_key_pinned:
            render.line(f"   host key of {result.host} pinned")
        if result.tls == "bootstrap":
            render.line("   nginx serves port 80 only until the certificate is there; run the install again then")
        if result.reason:
            render.line(f"   {result.reason}")
    if result.outcome == "interrupted":
        raise KeyboardInterrupt  # the error boundary: "Error: interrupted", exit 130
    finish(result)
