"""`werne backup`: one encrypted archive of everything the MDM server needs, checked and restored."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from commands import render
from commands.context import AppContext, pass_app
from commands.options import json_option

_password_option = click.option(
    "--password-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The archive's password from this file (default: [backup] password_file or $WERNE_BACKUP_PASSWORD).")


@click.group()
def backup() -> None:
    """Backups of the MDM server: create, verify and restore one encrypted archive.

    Example:

        werne backup create && werne backup verify /var/backups/werne/werne-city-20261206T013000Z.wbk
    """


@backup.command("create")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the archive goes (default: [backup] dir).")
@click.option("--keep", type=click.IntRange(1, 3650), default=None,
              help="Keep this many newest archives of the site in the folder (default: [backup] keep).")
@_password_option
@json_option("the archive's details")
@pass_app
def backup_create(app: AppContext, out_dir: Path | None, keep: int | None, password_file: Path | None,
                  as_json: bool) -> None:
    """Write one encrypted archive of the server while its services run: werne's and NanoMDM's
    databases, KMFDDM's and NanoDEP's stores, the SCEP depot and challenge, the push certificate
    and key, the signing certificate, tokens, the Activation Lock key, the config and the
    inventory, with a manifest of SHA-256 checksums. Run it as root (it reads the root-only keys).

    Exit 0 written, 2 bad config or password, 3 could not run (a file unreadable, a dump failed).

    Example:

        werne backup create --keep 14
    """
    from server.backup import archive_password, create_backup

    cfg = app.config
    result = create_backup(cfg, archive_password(cfg, password_file), out_dir, keep)
    if as_json:
        render.json_out(result.to_dict())
        return
    render.line(f"{render.ok_mark(True)} {result.archive}: {result.entries} files, "
                f"{result.size / 1e6:.1f} MB, {result.duration_s:.1f} s")
    render.line(f"   databases: {', '.join(result.databases) or 'none'}")
    for item in result.left_out:
        render.line(f"   not in the archive: {item}")
    for old in result.pruned:
        render.line(f"   deleted (older than the newest {keep or cfg.backup.keep}): {old.name}")


@backup.command("verify")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@_password_option
@json_option("the archive's manifest summary")
@pass_app
def backup_verify(app: AppContext, archive: Path, password_file: Path | None, as_json: bool) -> None:
    """Decrypt an archive and check its manifest and every checksum, restoring nothing.

    Exit 0 whole and this site's, 2 refused (truncated, altered, another site's, wrong password).

    Example:

        werne backup verify /var/backups/werne/werne-city-20261206T013000Z.wbk
    """
    from server.backup import archive_password, verify_backup

    cfg = app.config
    result = verify_backup(cfg, archive, archive_password(cfg, password_file))
    info = result.to_dict()
    if as_json:
        render.json_out(info)
        return
    render.line(f"{render.ok_mark(True)} {archive}: site {info['site']}, made {info['created']} on {info['host']} "
                f"by werne {info['werne_version']}; {info['entries']} files, checksums match")
    render.line(f"   databases: {', '.join(info['databases']) or 'none'}; schema: "
                + ", ".join(f"{k} {v}" for k, v in info["schema"].items()))


@backup.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a server that already holds data (enrolled iPads, runs).")
@_password_option
@json_option("what was restored")
@pass_app
def backup_restore(app: AppContext, archive: Path, force: bool, password_file: Path | None, as_json: bool) -> None:
    """Put an archive back onto a freshly installed server (as root): check it whole, stop the
    services, load the databases, put the files back with their owners and modes, start and check.

    A refused archive, or a server that holds data without --force, changes nothing.
    Exit 0 restored and every service running, 1 restored but a service did not start,
    2 refused, 3 could not run.

    Example:

        werne --config /etc/werne/werne.toml backup restore /root/werne-city-20261206T013000Z.wbk
    """
    from server.backup import archive_password, restore_backup

    cfg = app.config
    result = restore_backup(cfg, archive, archive_password(cfg, password_file), force=force)
    if as_json:
        render.json_out(result.to_dict())
    else:
        render.line(f"{render.ok_mark(result.ok)} {archive}: site {result.site} as of {result.created}; "
                    f"{result.files} files, {result.duration_s:.1f} s")
        render.line(f"   databases: {', '.join(result.databases) or 'none'}")
        for aside in result.kept_aside:
            render.line(f"   kept aside: {aside}")
        for unit, state in result.services.items():
            if state != "active":
                render.line(f"   {unit}: {state or 'unknown'}")
    sys.exit(0 if result.ok else 1)
