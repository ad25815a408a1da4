"""Fixtures for the declarative-management tests: a real KMFDDM server per test (lab.kmfddm)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.secrets import Secret
from tests.parts import require_file

KMFDDM_KEY = "kmfddm-test-key"


@pytest.fixture
def kmfddm(tmp_path: Path) -> Iterator[str]:
    """The URL of a real KMFDDM (file storage in tmp_path, API key KMFDDM_KEY, no NanoMDM behind it)."""
    from lab import kmfddm as lab_kmfddm

    require_file("KMFDDM", lab_kmfddm.KMFDDM_BIN, marker="kmfddm", hint="run scripts/setup.sh")
    state = tmp_path / "ddm-state"
    server = lab_kmfddm.up(state, Secret(KMFDDM_KEY, source="test"))
    try:
        yield server.url
    finally:
        lab_kmfddm.down(state)
