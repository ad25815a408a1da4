"""`werne audit`: the audit trail (who did what, to which devices, when), and `werne processing-record`:
what personal data werne keeps (DSGVO Art. 30)."""

from __future__ import annotations

import json
from datetime import datetime

import click

from commands import render
from commands.context import AppContext, pass_app
from commands.options import json_option

AUDIT_COLUMNS = (render.Col(gap="  "), render.Col(12), render.Col(24), render.Col(gap="  "), render.Col())


@click.command("audit")
@click.option("--since", type=click.DateTime(), help="Only events at or after this time (UTC).")
@json_option("the events")
@pass_app
def audit(app: AppContext, since: datetime | None, as_json: bool) -> None:
    """Show the audit trail: who did what, to which devices, when.

    Example:

        werne audit --since 2026-11-01
    """
    from datetime import UTC

    from core.audit import list_events

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    events = list_events(app.db, since)
    rows = [{"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "target": e.target,
             "detail": e.detail} for e in events]
    if as_json:
        render.json_out(rows)
        return
    if not rows:
        render.line("no audit events" + (f" since {since.isoformat()}" if since is not None else ""))
        return
    render.table(AUDIT_COLUMNS, ((r["at"], r["actor"], r["action"], r["target"],
                                  json.dumps(r["detail"], sort_keys=True)) for r in rows))


@click.command("processing-record")
@pass_app
def processing_record(app: AppContext) -> None:
    """Print the record of processing (DSGVO Art. 30) of what werne stores, as Markdown.

    Built from werne's own table definitions and the configured retention settings: each column
    holding personal data, its purpose, retention and readers; the legal basis is the city's to fill in.

    Example:

        werne processing-record > verarbeitungsverzeichnis.md
    """
    from core.processing_record import render_record

    render.block(render_record(app.config))
