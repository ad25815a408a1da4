"""Retention: werne deletes what it keeps only for a while, after the periods in [retention]
(docs/operations.md, "Retention"): the webhook's raw events, the answers of MDM commands, and the
Ansible artifact folders of provisioning runs; and, where NanoMDM keeps its data in PostgreSQL, the
command rows NanoMDM leaves behind when two devices answer one command at once
(ipad.golive.nanomdm_db.prune_orphaned_commands). The compliance history and the audit trail are
hash-chained evidence: this module never touches them, so `werne compliance verify` holds after
any prune. Rows go in batches, each its own transaction: an interrupted prune leaves whole rows,
and the next one continues.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select

from core.config import Config
from core.db import Database
from ipad.golive.nanomdm_db import configured_storage_dsn, prune_orphaned_commands
from ipad.models import MDMCommand, MDMWebhookEvent

BATCH = 5000


@dataclass(frozen=True)
class PruneResult:
    """What `prune` deleted (or, with dry_run, would delete), per kind, and the cut-off dates."""

    webhook_events: int
    command_results: int
    artifact_dirs: int
    cutoffs: dict[str, str]
    dry_run: bool
    nanomdm_commands: int | None = None  # None: this host names no NanoMDM database

    def to_dict(self) -> dict[str, Any]:
        return {"webhook_events": self.webhook_events, "command_results": self.command_results,
                "artifact_dirs": self.artifact_dirs, "nanomdm_commands": self.nanomdm_commands,
                "cutoffs": self.cutoffs, "dry_run": self.dry_run}


def _delete_in_batches(db: Database, model: Any, where: Any, dry_run: bool) -> int:
    if dry_run:
        with db.transaction() as conn:
            return int(conn.scalar(select(func.count()).select_from(model).where(where)) or 0)
    total = 0
    while True:
        with db.transaction() as conn:
            ids = list(conn.scalars(select(model.id).where(where).limit(BATCH)))
            if not ids:
                return total
            conn.execute(delete(model).where(model.id.in_(ids)))
        total += len(ids)


def artifact_dirs(config: Config) -> Path:
    """Where provisioning runs keep their Ansible artifacts, one folder per run."""
    return config.state_dir / "artifacts"


def prune(config: Config, db: Database, now: datetime | None = None, dry_run: bool = False) -> PruneResult:
    """Delete what is older than its period in [retention]; the chained evidence stays whole."""
    r = config.retention
    now = now or datetime.now(UTC)
    events_before = now - timedelta(days=r.webhook_events_days)
    commands_before = now - timedelta(days=r.command_results_days)
    artifacts_before = now - timedelta(days=r.run_artifacts_days)
    events = _delete_in_batches(db, MDMWebhookEvent, MDMWebhookEvent.received_at < events_before, dry_run)
    # A command still waiting for its device keeps its row, however old: it is not a result yet.
    commands = _delete_in_batches(db, MDMCommand, (MDMCommand.updated_at < commands_before)
                                  & (MDMCommand.status != "queued"), dry_run)
    dirs = 0
    folder = artifact_dirs(config)
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.is_symlink() and \
                    datetime.fromtimestamp(entry.stat().st_mtime, UTC) < artifacts_before:
                if not dry_run:
                    # Renamed first: an interrupted removal leaves a folder the next prune finishes.
                    doomed = entry.with_name(f".pruned-{entry.name}")
                    os.replace(entry, doomed)
                    shutil.rmtree(doomed)
                dirs += 1
        for leftover in folder.glob(".pruned-*"):
            if not dry_run:
                shutil.rmtree(leftover, ignore_errors=True)
    # Last: werne's own part is done even when NanoMDM's database cannot be reached (exit 3).
    dsn = configured_storage_dsn(config)
    orphans = prune_orphaned_commands(dsn, dry_run) if dsn is not None else None
    cutoffs = {"webhook_events": events_before.isoformat(timespec="seconds"),
               "command_results": commands_before.isoformat(timespec="seconds"),
               "artifact_dirs": artifacts_before.isoformat(timespec="seconds")}
    return PruneResult(events, commands, dirs, cutoffs, dry_run, orphans)
