"""German wording for the coordinator UI: status labels and the library's one-line messages.

The library speaks English (logs, CLI, docs); the page translates the messages a coordinator
can cause. Unknown messages are shown as they are, which is still one clear line.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

STATUS_DE = {
    "submitted": "eingereicht",
    "approved": "genehmigt",
    "assigned": "bei Apple zugewiesen",
    "enrolled": "angemeldet",
    "configured": "konfiguriert",
    "done": "abgeschlossen",
    "rejected": "abgelehnt",
    "failed": "fehlgeschlagen",
    "requested": "beantragt",
}

GROUP_DE = {"pupil": "Schüler/innen", "teacher": "Lehrkräfte", "shared": "Geteiltes iPad"}

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"^(?:(.+?):(\d+): )?bad serial format '(.*)' \(10-12 letters and digits\)$"),
        "{loc}Ungültige Seriennummer „{2}“ (10 bis 12 Buchstaben und Ziffern)",
    ),
    (re.compile(r"^duplicate serial (\S+) in this request$"), "Seriennummer {0} kommt im Antrag doppelt vor"),
    (re.compile(r"^serial (\S+) is already enrolled$"), "Seriennummer {0} ist bereits angemeldet"),
    (
        re.compile(r"^serial (\S+) is already in request #(\d+)$"),
        "Seriennummer {0} steht schon in Antrag Nr. {1}",
    ),
    (
        re.compile(r"^serial (\S+) is already requested by another school$"),
        "Seriennummer {0} wurde bereits von einer anderen Schule beantragt",
    ),
    (re.compile(r"^(.+?): the file is empty$"), "Die Datei „{0}“ ist leer"),
    (re.compile(r"^(.+?): the file is larger than (\d+) MB$"), "Die Datei „{0}“ ist größer als {1} MB"),
    (
        re.compile(r"^(.+?): this is an Excel workbook, not CSV.*$"),
        "„{0}“ ist eine Excel-Arbeitsmappe, keine CSV-Datei. Bitte in Excel „Speichern unter → CSV UTF-8“ wählen",
    ),
    (re.compile(r"^(.+?): this is not a text file$"), "„{0}“ ist keine Textdatei (CSV)"),
    (
        re.compile(r"^(.+?):1: missing column\(s\): (.+)$"),
        "In „{0}“ fehlt die Spalte mit den Seriennummern (z. B. „Serial Number“ oder „Seriennummer“)",
    ),
    (
        re.compile(r"^(.+?): the file has a header but no serial numbers$"),
        "„{0}“ enthält keine Seriennummern",
    ),
    (
        re.compile(r"^(.+?):(\d+): (\S+): the location column does not name this school$"),
        "„{0}“, Zeile {1}: {2} gehört laut Standort-Spalte nicht zu dieser Schule",
    ),
    (
        re.compile(r"^no serial numbers: .*$"),
        "Keine Seriennummern: bitte einfügen oder eine CSV-Datei aus Apple School Manager hochladen",
    ),
    (re.compile(r"^purpose or class is missing$"), "Bitte Zweck oder Klasse angeben"),
    (re.compile(r"^purpose is longer than (\d+) characters$"), "Der Zweck ist länger als {0} Zeichen"),
    (re.compile(r"^purpose must be one line of text"), "Der Zweck muss eine Zeile Text sein (ohne Zeilenumbrüche "
     "und Steuerzeichen)"),
    (re.compile(r"^the pasted serial numbers are longer than (\d+) characters"),
     "Im Feld „Seriennummern“ steht zu viel Text (höchstens {0} Zeichen, also höchstens 2000 Seriennummern): "
     "bitte die Liste prüfen, aufteilen oder als CSV-Datei hochladen. Die übrigen Angaben sind erhalten."),
    (re.compile(r"^unknown group .*$"), "Bitte eine Gruppe wählen (Schüler/innen, Lehrkräfte, geteilt)"),
    (re.compile(r"^more than (\d+) serials in one request$"), "Mehr als {0} Seriennummern in einem Antrag"),
    (re.compile(r"^unknown school: .*$"), "Unbekannte Schule"),
    (re.compile(r"^(.+?):(\d+): (.+)$"), "„{0}“, Zeile {1}: {2}"),
]


def translate(message: str) -> str:
    for pattern, template in _PATTERNS:
        m = pattern.match(message)
        if m:
            groups = m.groups()
            loc = ""
            if "{loc}" in template:
                loc = f"„{groups[0]}“, Zeile {groups[1]}: " if groups[0] else ""
            return template.format(*[g or "" for g in groups], loc=loc)
    return message


def serial_reason_de(reason: str | None) -> str:
    if not reason:
        return ""
    if reason.startswith("NOT_ACCESSIBLE"):
        return "Apple: Gerät ist dem MDM-Server der Stadt nicht zugeordnet (in Apple School Manager prüfen)"
    if reason.startswith("FAILED"):
        return "Apple: Zuweisung des Anmeldeprofils fehlgeschlagen"
    if reason.startswith("THROTTLED"):
        return "Apple: zu viele Anfragen – die IT versucht es später erneut"
    return reason


def wait_de(wait: timedelta) -> str:
    """A wait as the login page says it: "15 Sekunden", "2 Minuten" (rounded up)."""
    seconds = max(1, math.ceil(wait.total_seconds()))
    if seconds < 60:
        return f"{seconds} Sekunde" if seconds == 1 else f"{seconds} Sekunden"
    minutes = math.ceil(seconds / 60)
    return "1 Minute" if minutes == 1 else f"{minutes} Minuten"
