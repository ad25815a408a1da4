"""How a result tells the CLI that it has findings: every such result says `ok`, and this one
mixin turns that into the documented exit code (0 clean, 1 findings), so no caller decides it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import EXIT_FINDINGS, EXIT_OK


class Findings:
    """Mixin for a result that can carry findings: the class defines `ok`, `exit_code` follows."""

    # No `ok` at run time here: pydantic would take an annotation for a field and shadow the
    # model's own `ok` property, and warn of a property here shadowed by a model's `ok` field. The
    # class that mixes this in defines `ok` (a field or a property); the type checker is told so.
    if TYPE_CHECKING:

        @property
        def ok(self) -> bool: ...

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FINDINGS
