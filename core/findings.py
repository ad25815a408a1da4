"""How a result tells the CLI that it has findings: every such result says `ok`, and this one
mixin turns that into the documented exit code (0 clean, 1 findings), so no caller decides it."""

from __future__ import annotations

from core.errors import EXIT_FINDINGS, EXIT_OK


class Findings:
    """Mixin for a result that can carry findings: the class defines `ok`, `exit_code` follows."""

    # No `ok: bool` annotation here: pydantic would take it for a field and shadow the model's
    # own `ok` property. The class that mixes this in defines `ok` (a field or a property).

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FINDINGS  # type: ignore[attr-defined]
