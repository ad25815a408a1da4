"""Everything the CLI prints goes through here: messages, tables, plans, per-device lines, JSON.

Device answers, SSH output, CSV rows and coordinators' text end up in these lines, so this is the
one place that makes them safe for IT staff's terminal: every message and every cell passes
`core.text.line_safe` on its way out (an ESC arrives as the four characters `\\x1b`, a line feed as
`\\n`), so what a single-line field holds can neither drive the terminal nor start a row of its
own. `line` prints one line; only `block` prints several (a PEM, a Markdown document werne wrote),
and it still escapes every control character but the line feed. Command
modules never call click.echo themselves (tests/commands/test_cli_help.py checks that). Column widths come
from the rows, after escaping (pyinfra's prints.py does the same): each column has the width it
has always had as its floor, and a longer cell widens its column instead of pushing the rest of
its line out of step.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import click

from core.text import line_safe, terminal_safe

if TYPE_CHECKING:
    from rich.console import Console


def line(text: object = "", *, err: bool = False) -> None:
    """Print one message as one line (stdout, or stderr with `err`): a line feed in it shows as `\\n`."""
    click.echo(line_safe(text), err=err)


def block(text: str, *, err: bool = False) -> None:
    """Print text of several lines that werne made (a PEM, a Markdown document) as it is, each line
    terminal-safe; a final line feed is added when it has none."""
    click.echo(terminal_safe(text), err=err, nl=not text.endswith("\n"))


def to_stderr(text: object) -> None:
    """Print a progress message on stderr (a callback for the library's `progress=`/`say=`)."""
    line(text, err=True)


def error(message: object) -> None:
    """Print `Error: message` on stderr."""
    line(f"Error: {message}", err=True)


def data(content: bytes) -> None:
    """Write a document werne made (a report with `--out -`) to stdout as it is, byte for byte."""
    sys.stdout.flush()
    sys.stdout.buffer.write(content)
    sys.stdout.buffer.flush()


def json_out(data: Any) -> None:
    """Print a command's result as JSON (the one format of every `--json`)."""
    # JSON escapes control characters itself (ensure_ascii), so it is terminal-safe as it is.
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def document(text: str) -> None:
    """Print a whole file-format document (CSV) as it is: its cells were made safe where it was
    written (core.csvio neutralises them) and its CRLF line ends belong to the format."""
    click.echo(text, nl=False)


# ---------------------------------------------------------------- tables --------------------


@dataclass(frozen=True)
class Col:
    """One column of a text table: `width` is its least width (None: never padded, for the last
    column and for cells that flow on), `gap` what follows it on the line."""

    width: int | None = None
    right: bool = False
    gap: str = " "


def format_rows(columns: Sequence[Col], rows: Iterable[Sequence[object]], indent: str = "") -> list[str]:
    """The rows as lines: each cell escaped, then padded to its column's width over all rows."""
    cells = [[line_safe(c) for c in row] for row in rows]
    widths = [
        None if col.width is None else max([col.width, *(len(r[i]) for r in cells)])
        for i, col in enumerate(columns)
    ]
    out = []
    for row in cells:
        parts = []
        for i, (col, width, cell) in enumerate(zip(columns, widths, row, strict=True)):
            text = cell if width is None else cell.rjust(width) if col.right else cell.ljust(width)
            parts.append(text if i == len(columns) - 1 else text + col.gap)
        out.append(indent + "".join(parts))
    return out


def table(columns: Sequence[Col], rows: Iterable[Sequence[object]], *, indent: str = "",
          rstrip: bool = False, err: bool = False) -> None:
    """Print rows as a table (a header, when there is one, is the first row)."""
    for text in format_rows(columns, rows, indent):
        click.echo(text.rstrip() if rstrip else text, err=err)


TIMING_COLUMNS = (Col(52), Col(7, right=True), Col(7, right=True), Col(16), Col(12), Col())


def timings(rows: Sequence[Sequence[object]]) -> None:
    """Where a run's time went (compliance.timings.table_rows: a header, the steps, the total)."""
    table(TIMING_COLUMNS, rows, rstrip=True)


def ok_mark(ok: bool) -> str:
    """The word a per-device line shows for its outcome."""
    return "ok" if ok else "NOT OK"


DEVICE_COLUMNS = (Col(13), Col(12), Col(7), Col())


def device_lines(devices: Iterable[tuple[str, str | None, bool, str]]) -> None:
    """One line per device: serial, school, ok or NOT OK, what happened to it."""
    table(DEVICE_COLUMNS, ((serial, school or "-", ok_mark(ok), detail) for serial, school, ok, detail in devices))


_PLAN_COLUMNS = (Col(4, right=True), Col(5, gap="  "), Col())


def plan(groups: Mapping[str, Mapping[str, int]], footer: str, notes: Iterable[str] = ()) -> None:
    """A plan: per school (or model) how many iPads get which change, then notes, then the footer."""
    rows = [(n, "iPads" if n != 1 else "iPad", change)
            for _, changes in sorted(groups.items()) for change, n in sorted(changes.items())]
    formatted = iter(format_rows(_PLAN_COLUMNS, rows, indent="  "))
    for name, changes in sorted(groups.items()):
        line(f"{name}:")
        for _ in changes:
            click.echo(next(formatted))
    for note in notes:
        line(note)
    line(footer)


# ---------------------------------------------------------------- rich tables, progress ------


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    # Made per call, on the current sys stream (CliRunner swaps them), never at import time.
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 120, highlight=False, soft_wrap=True)


def rich_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A table laid out by rich (wide tables of checks); cells are plain text, never rich markup."""
    from rich.table import Table
    from rich.text import Text

    t = Table(*headers, box=None, pad_edge=False)
    for row in rows:
        t.add_row(*(Text(line_safe(c)) for c in row))
    _console().print(t)


@contextmanager
def live_status() -> Iterator[Callable[[object], None]]:
    """A status line on stderr that each call rewrites (left behind when stderr is not a terminal)."""
    from rich.live import Live
    from rich.text import Text

    console = _console(stderr=True)
    with Live(Text(""), console=console, transient=console.is_terminal, refresh_per_second=4) as live:
        yield lambda text: live.update(Text(line_safe(text)))


class ProgressLine:
    """One line of progress on stderr rewritten in place; silent unless stderr is a terminal."""

    WIDTH = 78

    def __init__(self, enabled: bool = True):
        self._stream: TextIO = sys.stderr
        self.live = enabled and self._stream.isatty()

    def show(self, text: object) -> None:
        if self.live:
            self._stream.write(f"\r{line_safe(text)}".ljust(self.WIDTH)[: self.WIDTH])
            self._stream.flush()

    def close(self) -> None:
        if self.live:
            self._stream.write("\n")
