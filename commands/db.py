"""`werne db`: the databases' schemas, shown and upgraded as explicit steps (docs/operations.md,
"Upgrading"). No other command migrates: a werne newer than its database refuses to run."""

from __future__ import annotations

from pathlib import Path

import click

from commands import render
from commands.context import AppContext, pass_app
from commands.options import json_option


@click.group()
def db() -> None:
    """The databases' schemas: show them and upgrade them (werne's revisions, NanoMDM's version).

    Example:

        werne db status
    """


def _nanomdm_dsn(app: AppContext) -> str | None:
    """NanoMDM's DSN when this host has one configured (mdm.storage_dsn_file or its variable)."""
    from ipad.golive.nanomdm_db import configured_storage_dsn

    return configured_storage_dsn(app.config)


@db.command("status")
@json_option()
@pass_app
def db_status(app: AppContext, as_json: bool) -> None:
    """Show each database's schema version, this werne's and what `werne db upgrade` would apply.

    Exit 0 also when an upgrade is due (`upgrade_needed` in --json); 3 when a database is newer
    than this werne or cannot be opened.

    Example:

        werne db status --json
    """
    from core.db import inspect_schema
    from ipad.golive.nanomdm_db import schema_state

    status = inspect_schema(app.config.database_url)
    dsn = _nanomdm_dsn(app)
    nano = schema_state(dsn) if dsn else None
    if as_json:
        render.json_out({"werne": status.to_dict(), "nanomdm": nano.to_dict() if nano else None,
                         "upgrade_needed": status.upgrade_needed or bool(nano and nano.upgrade_needed)})
    else:
        pending = ", ".join(status.pending) or "nothing"
        render.line(f"werne:   at {status.current or '(new database)'}, this werne's newest {status.head}; "
                    f"to apply: {pending}")
        if nano:
            render.line(f"NanoMDM: at {nano.version or '(no schema)'}, pinned {nano.pinned}; "
                        f"{'upgrade needed' if nano.upgrade_needed else 'up to date'}")
        else:
            render.line("NanoMDM: no storage DSN on this host (mdm.storage_dsn_file, $NANOMDM_STORAGE_DSN)")
    if not status.known:
        status.raise_if_unusable()


@db.command("upgrade")
@click.option("--nanomdm-schema", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="NanoMDM's schema.sql for the pinned version (default: from the installed NanoMDM module).")
@json_option()
@pass_app
def db_upgrade(app: AppContext, nanomdm_schema: Path | None, as_json: bool) -> None:
    """Bring werne's database to this werne's newest revision, and NanoMDM's (when this host has its
    DSN) to the pinned NanoMDM version's schema. Each database in one transaction: an upgrade that
    is interrupted leaves the old schema, and running it again completes it. Stop the services
    first (`werne server install` does: it stops, upgrades, then starts them in order).

    Example:

        sudo -u werne werne db upgrade
    """
    from core.db import upgrade_schema
    from ipad.golive.nanomdm_db import load_schema

    result = upgrade_schema(app.config.database_url)
    dsn = _nanomdm_dsn(app)
    nano = load_schema(dsn, nanomdm_schema) if dsn else None
    if as_json:
        render.json_out({"werne": result.to_dict(), "nanomdm": nano.to_dict() if nano else None})
        return
    render.line(f"werne:   {result.before or '(new database)'} -> {result.after}"
                + (f" (applied {', '.join(result.applied)})" if result.applied else " (nothing to do)"))
    if nano:
        render.line(f"NanoMDM: {nano.before or '(no schema)'} -> {nano.version}"
                    + (" (schema created)" if nano.created else f" (applied {', '.join(nano.applied) or 'nothing'})"))
