"""Golden DEP profile for a demo school, and the German wording of every message a coordinator can
cause (the UI must never fall back to the library's English for those)."""

from __future__ import annotations

import json

import pytest

from core.inventory import load_inventory
from enrolment import dep
from enrolment.models import REQUEST_STATES, SERIAL_STATES
from enrolment.web.i18n import STATUS_DE, translate
from tests.fixtures.enrolment import DEMO_INVENTORY
from tests.golden import GOLDEN_DIR

GOLDEN = GOLDEN_DIR / "enrolment"


def test_dep_profile_golden() -> None:
    inv = load_inventory(DEMO_INVENTORY)
    body = dep.build_profile(dep.load_profile_template(), inv.schools["gs-demo"])
    assert body == json.loads((GOLDEN / "dep_profile_gs-demo.json").read_text(encoding="utf-8"))
    override = dep.build_profile(
        dep.load_profile_template(), inv.schools["gs-demo"], "https://mdm.x.invalid/e"
    )
    assert override["url"] == "https://mdm.x.invalid/e"


@pytest.mark.parametrize(
    "message,german",
    [
        (
            "bad serial format 'AB!' (10-12 letters and digits)",
            "Ungültige Seriennummer „AB!“ (10 bis 12 Buchstaben und Ziffern)",
        ),
        (
            "asm.csv:3: bad serial format 'X' (10-12 letters and digits)",
            "„asm.csv“, Zeile 3: Ungültige Seriennummer „X“ (10 bis 12 Buchstaben und Ziffern)",
        ),
        (
            "duplicate serial ABCDEFGHJK in this request",
            "Seriennummer ABCDEFGHJK kommt im Antrag doppelt vor",
        ),
        ("serial ABCDEFGHJK is already enrolled", "Seriennummer ABCDEFGHJK ist bereits angemeldet"),
        ("serial ABCDEFGHJK is already in request #4", "Seriennummer ABCDEFGHJK steht schon in Antrag Nr. 4"),
        (
            "serial ABCDEFGHJK is already requested by another school",
            "Seriennummer ABCDEFGHJK wurde bereits von einer anderen Schule beantragt",
        ),
        ("a.csv: the file is empty", "Die Datei „a.csv“ ist leer"),
        ("a.csv: the file is larger than 5 MB", "Die Datei „a.csv“ ist größer als 5 MB"),
        (
            "a.csv: this is an Excel workbook, not CSV; save it as 'CSV UTF-8' first",
            "„a.csv“ ist eine Excel-Arbeitsmappe, keine CSV-Datei. "
            "Bitte in Excel „Speichern unter → CSV UTF-8“ wählen",
        ),
        ("a.csv: this is not a text file", "„a.csv“ ist keine Textdatei (CSV)"),
        (
            "a.csv:1: missing column(s): serial",
            "In „a.csv“ fehlt die Spalte mit den Seriennummern (z. B. „Serial Number“ oder „Seriennummer“)",
        ),
        ("a.csv: the file has a header but no serial numbers", "„a.csv“ enthält keine Seriennummern"),
        (
            "no serial numbers: paste them or upload an Apple School Manager CSV export",
            "Keine Seriennummern: bitte einfügen oder eine CSV-Datei aus Apple School Manager hochladen",
        ),
        ("purpose or class is missing", "Bitte Zweck oder Klasse angeben"),
        ("unknown school: gym-demo", "Unbekannte Schule"),
    ],
)
def test_coordinator_messages_are_german(message: str, german: str) -> None:
    assert translate(message) == german


def test_every_status_has_a_german_label() -> None:
    assert set(REQUEST_STATES) | set(SERIAL_STATES) <= set(STATUS_DE)
