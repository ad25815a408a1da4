"""The BSI reference documents A.1 (Strukturanalyse) and A.4 (IT-Grundschutz-Check) for the example city,
read back with openpyxl and the csv module: every requirement a rule covers appears once with a status,
nothing no rule judges is marked as met, the figures are the run's, and outside text stays text."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook

from compliance.engine import DeviceFacts
from compliance.evidence_docs import NOT_JUDGED, a4_rows
from compliance.history import load_run
from core.inventory import load_inventory
from tests.fixtures.compliance import NOW, ipad_facts, laptop_facts, store_run
from tests.fixtures.site import REPO

EXAMPLE_CITY = REPO / "inventories" / "example-city"
STATUSES = {"ja", "teilweise", "nein", "entbehrlich", NOT_JUDGED}


@pytest.fixture
def city_run(compliance_db, compliance_config):  # type: ignore[no-untyped-def]
    """A run over the example city's laptops and iPads: a few drifted, one iPad unreachable."""
    inv = load_inventory(EXAMPLE_CITY)
    devs = [DeviceFacts(lap.name, "laptops", laptop_facts(), name=lap.name) for lap in inv.laptops.values()]
    devs[0].facts = laptop_facts(sshd__permitrootlogin="yes")
    for i, ipad in enumerate(inv.ipads.values()):
        devs.append(DeviceFacts(ipad.serial, "ipads", ipad_facts(), school=ipad.school, group=ipad.group,
                                name=ipad.name, last_seen=NOW - timedelta(hours=1)))
        if i == 3:
            devs[-1].facts = ipad_facts(security__passcode_present=False, security__passcode_compliant=False)
        if i == 5:
            devs[-1].reachable, devs[-1].facts = False, {}
    devs[1].name = '=HYPERLINK("http://x","y")'
    return inv, store_run(compliance_db, compliance_config, devs)


def _sheet(path: Path) -> list[list[object]]:
    wb = load_workbook(path, read_only=True)
    try:
        ws = wb.active
        assert ws is not None
        return [list(r) for r in ws.iter_rows(values_only=True)]
    finally:
        wb.close()


def test_a4_lists_each_covered_requirement_once_and_never_marks_unjudged_as_met(
        run_cli, compliance_db, compliance_config, city_run, tmp_path):
    _, run_id = city_run
    cfg = Path(compliance_config.source)
    cfg.write_text(cfg.read_text() + f'inventory = "{EXAMPLE_CITY}"\n', encoding="utf-8")
    res = run_cli("compliance", "bsi-documents", "--out", str(tmp_path / "docs"), config=cfg)
    assert res.exit_code == 0, res.output
    rows = _sheet(tmp_path / "docs" / "A4-Grundschutz-Check.xlsx")
    header, body = rows[0], rows[1:]
    assert header[:6] == ["Baustein", "Anforderung", "Stufe", "Grundschutz++", "Umsetzung", "Begründung"]
    run = load_run(compliance_db, run_id)
    covered = {req for meta in run.rules.values() for req in meta["references"]["grundschutz"]}
    reqs = [r[1] for r in body]
    assert len(reqs) == len(set(reqs))  # each requirement once
    judged = [r for r in body if r[6]]
    assert {r[1] for r in judged} == covered
    assert all(r[4] in STATUSES - {NOT_JUDGED} for r in judged)
    unjudged = [r for r in body if not r[6]]
    assert unjudged and all(r[4] == NOT_JUDGED for r in unjudged)  # never "ja"
    # The figures are the run's: SYS.2.3.A1 is judged by the SSH rules, one laptop of 70 allows root.
    sys23 = next(r for r in body if r[1] == "SYS.2.3.A1")
    assert sys23[4] == "teilweise" and sys23[8] == 1
    assert f"Lauf {run_id} vom 2026-11-20" in str(sys23[5])
    # A requirement passes only if every result of its rules passed.
    for r in judged:
        assert (r[4] == "ja") == (r[7] > 0 and r[8] == r[9] == r[10] == 0)
    # The CSV says the same (German Excel: BOM, ';').
    text = (tmp_path / "docs" / "A4-Grundschutz-Check.csv").read_bytes().decode("utf-8-sig")
    csv_rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert [r[1] for r in csv_rows[1:]] == reqs and [r[4] for r in csv_rows[1:]] == [r[4] for r in body]


def test_a1_counts_target_objects_and_keeps_outside_text_as_text(run_cli, compliance_config, city_run, tmp_path):
    inv, _ = city_run
    cfg = Path(compliance_config.source)
    cfg.write_text(cfg.read_text() + f'inventory = "{EXAMPLE_CITY}"\n', encoding="utf-8")
    assert run_cli("compliance", "bsi-documents", "--out", str(tmp_path), config=cfg).exit_code == 0
    rows = _sheet(tmp_path / "A1-Strukturanalyse.xlsx")
    body = rows[1:]
    ipad_groups = [r for r in body if r[2] == "Tablet (iPad), SYS.3.2.2"]
    assert sum(int(r[4]) for r in ipad_groups) == len(inv.ipads)  # type: ignore[arg-type]
    assert sum(int(r[4]) for r in body if r[2] == "Client (Laptop), SYS.2.3") == len(inv.laptops)  # type: ignore[arg-type]
    schools = {r[5]: r for r in body if r[2] == "Standort (Schule)"}
    assert set(schools) == {i.school for i in inv.ipads.values()}
    assert schools["gs-am-markt"][1] == inv.schools["gs-am-markt"].name
    assert any(r[0] == "SRV-MDM" for r in body)
    wb = load_workbook(tmp_path / "A4-Grundschutz-Check.xlsx")
    ws = wb.active
    assert ws is not None
    assert all(c.data_type != "f" for row in ws.iter_rows() for c in row)  # no formula anywhere


def test_xlsx_never_turns_outside_text_into_a_formula(tmp_path):
    from compliance.evidence_docs import xlsx_bytes

    path = tmp_path / "x.xlsx"
    path.write_bytes(xlsx_bytes([["a"], ['=HYPERLINK("http://x","y")'], ["bell\x07"]], "t"))
    ws = load_workbook(path).active
    assert ws is not None
    assert [(c.value, c.data_type) for c in ws["A"]] == [("a", "s"), ('=HYPERLINK("http://x","y")', "s"), ("bell", "s")]


def test_a4_of_an_empty_run_marks_nothing_as_met(compliance_db, compliance_config):
    rid = store_run(compliance_db, compliance_config, [])
    rows, judged = a4_rows(load_run(compliance_db, rid))
    assert judged == len([r for r in rows[1:] if r[6]])
    assert not [r for r in rows[1:] if r[4] == "ja"]
    assert {r[4] for r in rows[1:]} <= {"entbehrlich", NOT_JUDGED}
    assert json.loads((REPO / "data" / "bsi-ids.json").read_text(encoding="utf-8"))["itgs_levels"]
