"""What an iPad's App Store apps look like next to what its group should have: the `apps` compliance
fact, built from the device's ManagedApplicationList answer, the group's app list and the newest
failed InstallApplication per app (its ErrorChain is the reason Apple's status list does not give).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.db import Database
from ipad.apps.catalogue import AppCatalogue
from ipad.models import MDMCommand, MDMDevice
from ipad.results import APP_FAILED_STATUSES, error_chain_text


def install_errors_by_serial(db: Database) -> dict[str, dict[str, str]]:
    """serial -> adam_id -> why the newest InstallApplication of that app failed (only where the
    newest one failed; a later success clears it)."""
    newest: dict[tuple[str, str], MDMCommand] = {}
    with db.session() as s:
        serial_of = {d.enrollment_id: d.serial for d in s.scalars(select(MDMDevice)) if d.serial}
        rows = s.scalars(
            select(MDMCommand)
            .where(MDMCommand.request_type == "InstallApplication")
            .order_by(MDMCommand.updated_at, MDMCommand.id)
        )
        for c in rows:
            adam = str((c.detail or {}).get("adam_id") or "")
            if adam and c.status not in ("queued", "NotNow"):
                newest[(c.enrollment_id, adam)] = c
        out: dict[str, dict[str, str]] = {}
        for (eid, adam), c in newest.items():
            serial = serial_of.get(eid)
            if serial and c.status in ("Error", "CommandFormatError", "enqueue_failed"):
                reason = error_chain_text(c.error_chain) or str((c.result or {}).get("reason") or c.status)
                out.setdefault(serial, {})[adam] = reason[:300]
    return out


def app_facts(catalogue: AppCatalogue, group: str | None, managed: dict[str, Any],
              install_errors: dict[str, str] | None = None) -> dict[str, Any]:
    """The `apps` fact: the group's required apps, what the iPad manages (bundle id -> status), and
    per required bundle id the reason its install failed (status or ErrorChain)."""
    required = catalogue.apps_for(group)
    statuses = {str(b): str((v or {}).get("Status", "Unknown")) if isinstance(v, dict) else str(v)
                for b, v in (managed or {}).items()}
    errors: dict[str, str] = {}
    for app in required:
        st = statuses.get(app.bundle_id)
        chain = (install_errors or {}).get(app.adam_id)
        if st in APP_FAILED_STATUSES:
            errors[app.bundle_id] = f"status {st}" + (f" ({chain})" if chain else "")
        elif st is None and chain:
            errors[app.bundle_id] = chain
    return {
        "required": {a.bundle_id: a.name for a in required},
        "allowed": sorted(a.bundle_id for a in required),
        "managed": statuses,
        "install_errors": errors,
    }
