"""Golden files: one switch for every golden test, and a rewrite never passes unseen.

With WERNE_UPDATE_GOLDEN=1 a golden file that differs is rewritten and its test FAILS, naming
the file to review (`git diff`); a golden file that is already right passes, since then the
comparison was against the committed bytes. So a run with the switch on can never go green by
comparing a new file with itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

UPDATE_ENV = "WERNE_UPDATE_GOLDEN"
# The golden files of every test folder, by area (compliance/, declarations/, enrolment/, profiles/).
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def updating() -> bool:
    return os.environ.get(UPDATE_ENV) == "1"


def assert_golden(path: Path, actual: bytes) -> None:
    """`actual` equals the golden file at `path` (see the module docstring for the switch)."""
    old = path.read_bytes() if path.is_file() else None
    if updating() and old != actual:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
        pytest.fail(f"{path} was {'rewritten' if old is not None else 'created'} ({UPDATE_ENV}=1): review "
                    f"`git diff {path}`, then run again without {UPDATE_ENV}", pytrace=False)
    assert old is not None, f"no golden file {path}; make it with {UPDATE_ENV}=1 and review it"
    assert actual == old, f"{path.name} differs from the golden file ({UPDATE_ENV}=1 rewrites it for review)"
