"""OSCAL assessment results for Grundschutz++ (`werne report --format oscal`), signed with the city's key.

`render_oscal` builds the document of a stored run; `write_oscal` writes it atomically and, when
`compliance.signing_key_file` is set, signs the run's hash-chain head (embedded in the document)
and the document itself (`<out>.sig`, detached). A signing key that is missing or unusable leaves
the report written, marked unsigned, and the problem in the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from compliance.errors import SigningError, WaiverError
from compliance.history import StoredRun, load_run
from compliance.oscal.assessment import HeadSignature, Signing, build_assessment_results
from compliance.oscal.catalogue import load_catalogue
from core.config import Config
from core.db import Database
from core.files import write_output


def _justifications(config: Config | None, run: StoredRun) -> dict[str, str]:
    """Waiver name -> justification, from the waivers file if it is still the one the run used."""
    if config is None or config.compliance.waivers_file is None:
        return {}
    from compliance.waivers import load_waivers

    try:
        waivers = load_waivers(config.compliance.waivers_file, set(run.rules))
    except WaiverError:
        return {}
    if waivers.digest != run.waivers_hash:
        return {}
    return {w.name: w.justification for w in waivers.waivers}


def render_oscal(db: Database, run_id: int | None, config: Config | None = None,
                 signing: Signing | None = None) -> bytes:
    """The OSCAL assessment-results JSON of run `run_id` (the latest complete run when None)."""
    run = load_run(db, run_id)
    doc = build_assessment_results(run, load_catalogue(), config.site.name if config else "demo", signing,
                                   _justifications(config, run))
    return (json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


@dataclass
class OscalWritten:
    """The written report: its path, its detached signature (None when unsigned) and why not."""

    path: Path
    signature: Path | None
    problem: str | None = None


def write_oscal(config: Config, db: Database, run_id: int | None, out_path: str | Path) -> OscalWritten:
    """Write the OSCAL report of a run, signed when a signing key is configured."""
    from compliance.signing import load_signer, sign_file, sign_head

    out = Path(out_path)
    key_file = config.compliance.signing_key_file
    if key_file is None:
        write_output(out, render_oscal(db, run_id, config), parents=True)
        return OscalWritten(out, None)
    run = load_run(db, run_id, with_results=False)
    try:
        signer = load_signer(key_file)
        head = sign_head(db, signer, run.id)
    except SigningError as e:
        write_output(out, render_oscal(db, run.id, config, Signing("unsigned", f"signing failed: {e}")), parents=True)
        return OscalWritten(out, None, f"cannot sign: {e}; {out} written unsigned")
    signing = Signing("detached", f"{out.name}.sig, key sha256:{signer.key_id}",
                      HeadSignature(head.statement, head.signature, head.key_id))
    write_output(out, render_oscal(db, run.id, config, signing), parents=True)
    return OscalWritten(out, sign_file(signer, out))
