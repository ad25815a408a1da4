"""`werne prune`: delete what is older than its period in [retention] (the nightly unit runs it)."""

from __future__ import annotations

import click

from commands import render
from commands.context import AppContext, pass_app
from commands.options import json_option


@click.command("prune")
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
@json_option()
@pass_app
def prune(app: AppContext, dry_run: bool, as_json: bool) -> None:
    """Delete webhook events, command answers and artifact folders older than their [retention] periods.

    Where NanoMDM keeps its data in PostgreSQL (mdm.storage_dsn_file or $NANOMDM_STORAGE_DSN), also
    the answered commands NanoMDM left in it (two devices answering one command at once).

    The compliance history and the audit trail (hash-chained evidence) are never pruned, so
    `werne compliance verify` holds. Interrupted, it leaves whole rows and folders; the next run
    continues.

    Example:

        sudo -u werne werne prune --dry-run
    """
    from server.retention import prune as prune_history

    result = prune_history(app.config, app.db, dry_run=dry_run)
    if as_json:
        render.json_out(result.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    nanomdm = "" if result.nanomdm_commands is None else \
        f", {result.nanomdm_commands} of NanoMDM's answered commands it left behind"
    render.line(f"{verb}: {result.webhook_events} webhook events (before {result.cutoffs['webhook_events']}), "
                f"{result.command_results} command answers (before {result.cutoffs['command_results']}), "
                f"{result.artifact_dirs} artifact folders (before {result.cutoffs['artifact_dirs']}){nanomdm}")
