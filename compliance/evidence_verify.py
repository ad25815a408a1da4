"""`werne compliance verify`: every piece of stored evidence checked offline, in one result.

The runs' hash chain (compliance.history), the laptops' evidence chain, the audit trail's chain
(core.audit_chain), the signed chain heads (compliance.signing) and, when named, signed documents
(`<file>` with `<file>.sig`). Signatures are checked with `compliance.verify_key_file`, else with the
public half of `compliance.signing_key_file`; with neither, the signed heads' statements are still
checked against the database and the result says that signatures were not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compliance.history import verify_chain
from compliance.signing import PublicKey, key_id, load_public_key, verify_file, verify_heads
from core.audit_chain import verify_audit_chain
from core.config import Config
from core.db import Database
from core.findings import Findings


@dataclass
class EvidenceReport(Findings):
    """The outcome of `werne compliance verify`."""

    runs_checked: int
    head: str | None
    audit_checked: int
    audit_unchained: int
    audit_head: str | None
    heads_signed: int
    key: str | None  # sha256 of the key signatures were checked with; None: not checked
    documents: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "runs": self.runs_checked, "head": self.head, "audit_events": self.audit_checked,
                "audit_unchained": self.audit_unchained, "audit_head": self.audit_head,
                "signed_heads": self.heads_signed, "key": self.key, "documents": self.documents,
                "problems": self.problems}


def _verification_key(config: Config) -> PublicKey | None:
    path = config.compliance.verify_key_file or config.compliance.signing_key_file
    return load_public_key(path) if path is not None else None


def verify_evidence(db: Database, config: Config, documents: list[Path] | None = None) -> EvidenceReport:
    """Check every chain, signed head and named document; raises SigningError only when the
    configured verification key itself is unusable."""
    public = _verification_key(config)
    runs = verify_chain(db)
    audit = verify_audit_chain(db)
    n_heads, head_problems = verify_heads(db, public)
    problems = [*runs.problems, *audit.problems, *head_problems]
    checked_docs = []
    for doc in documents or []:
        if public is None:
            problems.append(f"{doc}: no key to check its signature with (compliance.verify_key_file)")
            continue
        problem = verify_file(public, doc)
        if problem:
            problems.append(problem)
        else:
            checked_docs.append(str(doc))
    return EvidenceReport(
        runs_checked=runs.runs_checked, head=runs.head, audit_checked=audit.checked,
        audit_unchained=audit.unchained, audit_head=audit.head, heads_signed=n_heads,
        key=key_id(public) if public is not None else None, documents=checked_docs, problems=problems,
    )
