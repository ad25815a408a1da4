"""The laptops' package lists: the facts carry the full list; it is stored once per distinct list in
`laptop_packages`, and the evidence keeps only its SHA-256 and count (so 70 laptops' nightly
evidence does not grow by some 100 KB each). The vulnerability views and the CSV export read it back.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select

from compliance.models import LaptopPackageList
from core.db import Database
from core.models import utcnow

CSV_COLUMNS = ("package", "version", "source", "source_version", "architecture")


def list_digest(rows: list[list[Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def keep_package_lists(db: Database, collected: dict[str, dict[str, Any]]) -> None:
    """Take each laptop's package list out of its facts (in place) into laptop_packages; the facts
    keep {"count", "sha256"} (or the collector's error)."""
    now = utcnow()
    with db.session() as s:
        for host, facts in collected.items():
            pk = facts.get("packages")
            if not isinstance(pk, dict) or not isinstance(pk.get("list"), list):
                continue
            rows = pk.pop("list")
            digest = list_digest(rows)
            pk.update({"count": len(rows), "sha256": digest})
            row = s.scalars(select(LaptopPackageList).where(LaptopPackageList.host == host,
                                                            LaptopPackageList.sha256 == digest)).first()
            if row is None:
                s.add(LaptopPackageList(host=host, sha256=digest, packages=rows, first_seen=now, last_seen=now))
            else:
                row.last_seen = now


def package_list(db: Database, host: str, sha256: str) -> list[list[Any]] | None:
    """The stored list a laptop's evidence names by its digest, or None."""
    with db.session() as s:
        row = s.scalars(select(LaptopPackageList).where(LaptopPackageList.host == host,
                                                        LaptopPackageList.sha256 == sha256)).first()
        return list(row.packages) if row is not None else None
