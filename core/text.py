"""Text from other people made safe for IT staff's terminal, and kept to one line.

Coordinators type request purposes on the web page, devices send their names, CSV files carry any
bytes: printed raw, an ESC or OSC sequence in them would drive the terminal of whoever runs
`werne enrol list` (retitle it, hide text, write to the clipboard, fake a prompt). Every CLI print
of such text goes through `terminal_safe`.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), the Unicode line
# and paragraph separators, and the bidi overrides and isolates that make text display in another
# order than it is stored.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# The same, and tab and newline too: what may not stand in one line (a table cell, a log record).
_UNSAFE_IN_A_LINE = re.compile(f"[\t\n{_UNSAFE.pattern[1:-1]}]")
_SHORT = {"\n": "\\n", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c in _SHORT:
        return _SHORT[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def terminal_safe(text: object) -> str:
    """`text` with every control character that could drive a terminal shown as a visible escape.

    Newlines and tabs stay (the CLI prints multi-line messages); ESC becomes the four characters
    `\\x1b`, so nothing reaches the terminal as a control sequence and the reader still sees that
    something odd was there.
    """
    s = "" if text is None else str(text)
    return _UNSAFE.sub(_escape, s)


def line_safe(text: object) -> str:
    """`text` as one terminal-safe line: as `terminal_safe`, and a line feed, carriage return or tab
    shows as `\\n`, `\\x0d`, `\\t`. What a single-line field from outside (a request's purpose, a
    device name, a MachineInfo serial) holds can then never start a line of its own, in a table, a
    message or a log record."""
    s = "" if text is None else str(text)
    return _UNSAFE_IN_A_LINE.sub(_escape, s)


def is_one_line(text: str) -> bool:
    """Whether `text` is one line without control characters (what single-line fields accept)."""
    return _UNSAFE_IN_A_LINE.search(text) is None


def one_line_problem(text: str, what: str) -> str | None:
    """The refusal for a single-line field (`what`) that holds a line break or control character."""
    if is_one_line(text):
        return None
    return f"{what} must be one line of text (no line breaks or control characters)"


def one_line(text: object, limit: int = 300) -> str:
    """A message (a server's answer, Ansible's reason) as one terminal-safe line: whitespace runs,
    newlines included, become one space; cut to `limit` characters with an ellipsis."""
    return truncate(" ".join(terminal_safe(text).split()), limit)


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, the last one an ellipsis when anything was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
