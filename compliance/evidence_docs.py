"""The BSI reference documents a certification audit asks for, from the newest run, as XLSX and CSV:
A.1 (Strukturanalyse: the target objects with counts) and A.4 (IT-Grundschutz-Check: per requirement,
implemented ja / teilweise / nein / entbehrlich with a justification).

A.4 lists every IT-Grundschutz requirement that a rule covers, once, with the figures and date of the
run behind its status; a requirement is "ja" only when every result of its rules passed. The other
requirements of the same modules (Bausteine), which no rule judges, are listed as "nicht geprüft"
(the ISB's to assess), never as met. Text from devices and files is written as text: a cell is never
a formula (XLSX as CSV).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from compliance.collect_fleet import APPS_TOKEN_DEVICE, PUSH_CERT_DEVICE
from compliance.history import StoredRun, load_run
from compliance.oscal.catalogue import load_catalogue
from core.config import Config
from core.csvio import write_csv
from core.db import Database
from core.files import write_output
from core.inventory import Inventory

BSI_IDS = Path(__file__).resolve().parent.parent / "data" / "bsi-ids.json"
A1_HEADER = ["Kürzel", "Bezeichnung", "Zielobjekt-Typ", "Plattform", "Anzahl", "Standort / Schule", "Gruppe",
             "Quelle"]
A4_HEADER = ["Baustein", "Anforderung", "Stufe", "Grundschutz++", "Umsetzung", "Begründung", "Prüfregeln (werne)",
             "bestanden", "nicht bestanden", "nicht prüfbar", "Ausnahme", "nicht anwendbar", "Datum der Prüfung",
             "Lauf"]
PLATFORM = {"laptops": "Debian GNU/Linux (Telearbeit)", "ipads": "iPadOS (MDM)"}
NOT_JUDGED = "nicht geprüft"


@dataclass
class ReferenceDocuments:
    """The files written: A.1 and A.4, each as XLSX and CSV."""

    run_id: int
    files: list[Path]
    a4_rows: int
    judged: int


def _fleet_entry(device: str) -> bool:
    return device == PUSH_CERT_DEVICE or device.startswith(APPS_TOKEN_DEVICE.split("{", 1)[0])


def a1_rows(run: StoredRun, config: Config, inventory: Inventory | None) -> list[list[object]]:
    """Target objects: device groups (fleet, school, group) with counts, schools, servers."""
    groups: Counter[tuple[str, str, str]] = Counter()
    schools: Counter[str] = Counter()
    for device, info in run.devices.items():
        if _fleet_entry(device):
            continue
        groups[(info["fleet"], info.get("school") or "", info.get("group") or "")] += 1
        if info.get("school"):
            schools[info["school"]] += 1
    rows: list[list[object]] = [list(A1_HEADER)]
    for (fleet, school, group), n in sorted(groups.items()):
        kind = "Client (Laptop), SYS.2.3" if fleet == "laptops" else "Tablet (iPad), SYS.3.2.2"
        code = "-".join(x for x in ("NB" if fleet == "laptops" else "IPAD", school, group) if x).upper()
        rows.append([code, f"{'Laptops' if fleet == 'laptops' else 'iPads'} {school} {group}".strip(), kind,
                     PLATFORM.get(fleet, fleet), n, school, group, f"Lauf {run.id}"])
    names = {s.id: s.name for s in inventory.schools.values()} if inventory is not None else {}
    for school, n in sorted(schools.items()):
        rows.append([f"SCHULE-{school}".upper(), names.get(school, school), "Standort (Schule)", "", n, school, "",
                     f"Lauf {run.id}: Geräte der Schule"])
    for code, name, url in _servers(config, inventory):
        rows.append([code, name, "Server / Dienst", url, 1, "", "", "Konfiguration"])
    return rows


def _servers(config: Config, inventory: Inventory | None) -> list[tuple[str, str, str]]:
    def host(url: str) -> str:
        return urlsplit(url).netloc or url

    out = [("SRV-MDM", "MDM-Server (NanoMDM)", host(config.mdm.server_url)),
           ("SRV-SCEP", "SCEP-Server (Geräteidentitäten)", host(config.scep.url)),
           ("SRV-DDM", "Declarative Device Management (KMFDDM)", host(config.ddm.url)),
           ("SRV-DEP", "Automated Device Enrollment (NanoDEP)", host(config.dep.url)),
           ("SRV-WEB", "Webseite der Schulkoordinatoren", config.web.listen),
           ("SRV-DB", "Zustandsdatenbank werne", config.database_url.split("://", 1)[0])]
    for gw in sorted(inventory.gateways.values() if inventory is not None else [], key=lambda g: g.name):
        out.append((f"SRV-VPN-{gw.name}".upper(), "VPN-Gateway (WireGuard)", gw.name))
    return out


def _status(counts: Counter[str]) -> tuple[str, str]:
    judged = counts["pass"] + counts["fail"] + counts["waived"]
    unjudged = counts["error"] + counts["unreachable"]
    if not judged and not unjudged:
        return "entbehrlich", "auf kein Gerät anwendbar"
    if counts["pass"] and not (counts["fail"] or counts["waived"] or unjudged):
        return "ja", "alle Ergebnisse bestanden"
    if counts["pass"]:
        return "teilweise", "nicht alle Geräte erfüllen die Anforderung oder konnten geprüft werden"
    if judged:
        return "nein", "kein geprüftes Gerät erfüllt die Anforderung"
    return NOT_JUDGED, "kein Gerät konnte geprüft werden"


def a4_rows(run: StoredRun) -> tuple[list[list[object]], int]:
    """(rows, requirements judged): each covered requirement once, then the uncovered ones."""
    bsi = json.loads(BSI_IDS.read_text(encoding="utf-8"))
    catalogue = load_catalogue()
    by_req: dict[str, list[str]] = {}
    for rule_id, meta in sorted(run.rules.items()):
        for req in meta.get("references", {}).get("grundschutz", []):
            by_req.setdefault(req, []).append(rule_id)
    per_rule: dict[str, Counter[str]] = {}
    for (_, rule_id), r in run.results.items():
        per_rule.setdefault(rule_id, Counter())[r.status] += 1
    day = (run.finished_at or run.started_at).date().isoformat()
    rows: list[list[object]] = [list(A4_HEADER)]
    for req in sorted(by_req, key=_req_key):
        counts: Counter[str] = sum((per_rule.get(r, Counter()) for r in by_req[req]), Counter())
        status, why = _status(counts)
        gspp = sorted({c.control for r in by_req[req] for c in catalogue.cite(run.rules[r]["references"])})
        figures = (f"Lauf {run.id} vom {day}: {counts['pass']} bestanden, {counts['fail']} nicht bestanden, "
                   f"{counts['error'] + counts['unreachable']} nicht prüfbar, {counts['waived']} Ausnahme(n)")
        rows.append([_module(req), req, bsi["itgs_levels"].get(req, ""), ", ".join(gspp), status,
                     f"{why}. {figures}", ", ".join(by_req[req]), counts["pass"], counts["fail"],
                     counts["error"] + counts["unreachable"], counts["waived"], counts["not_applicable"], day, run.id])
    judged = len(rows) - 1
    modules = {_module(r) for r in by_req}
    for req in sorted((r for r in bsi["itgs"] if _module(r) in modules and r not in by_req), key=_req_key):
        rows.append([_module(req), req, bsi["itgs_levels"].get(req, ""), "", NOT_JUDGED,
                     "Keine Prüfregel von werne beurteilt diese Anforderung; durch den ISB zu prüfen.",
                     "", "", "", "", "", "", "", run.id])
    return rows, judged


def _module(req: str) -> str:
    return req.rsplit(".A", 1)[0]


def _req_key(req: str) -> tuple[str, int]:
    module, _, num = req.rpartition(".A")
    return (module, int(num) if num.isdigit() else 0)


def xlsx_bytes(rows: list[list[object]], title: str) -> bytes:
    """One sheet with a bold, frozen, filterable header; every text cell stored as text."""
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = title[:31]
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row, start=1):
            cell = ws.cell(row=r, column=c)
            if isinstance(value, str):
                # data_type "s" keeps "=..." a string, never a formula; control characters XML
                # cannot hold are dropped.
                cell.value = ILLEGAL_CHARACTERS_RE.sub("", value)
                cell.data_type = "s"
            elif isinstance(value, int | float) or value is None:
                cell.value = value
            else:
                cell.value = str(value)
                cell.data_type = "s"
            if r == 1:
                cell.font = Font(bold=True)
    ws.freeze_panes = "A2"
    ws.auto_filter.ref = ws.dimensions
    for c in range(1, len(rows[0]) + 1):
        width = max(len(str(row[c - 1])) for row in rows if len(row) >= c)
        ws.column_dimensions[get_column_letter(c)].width = min(max(width, 8) + 2, 80)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def write_reference_documents(config: Config, db: Database, inventory: Inventory | None, out_dir: str | Path,
                              run_id: int | None = None) -> ReferenceDocuments:
    """Write A1-Strukturanalyse and A4-Grundschutz-Check (.xlsx, .csv) of the newest (or given) run."""
    run = load_run(db, run_id)
    out = Path(out_dir)
    a1 = a1_rows(run, config, inventory)
    a4, judged = a4_rows(run)
    files = []
    for name, rows, sheet in (("A1-Strukturanalyse", a1, "A.1 Strukturanalyse"),
                              ("A4-Grundschutz-Check", a4, "A.4 IT-Grundschutz-Check")):
        files.append(write_output(out / f"{name}.xlsx", xlsx_bytes(rows, sheet), parents=True))
        files.append(write_output(out / f"{name}.csv", write_csv(rows, excel=True).encode("utf-8"), parents=True))
    return ReferenceDocuments(run.id, files, len(a4) - 1, judged)


