"""Shared test fixtures: a fresh state dir per test and a CLI runner that uses it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
DEMO_INVENTORY = REPO / "inventories" / "demo"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def inventory_copy(tmp_path: Path) -> Path:
    """A writable copy of the demo inventory, to break on purpose."""
    dst = tmp_path / "inv"
    shutil.copytree(DEMO_INVENTORY, dst)
    return dst


def write_secret(path: Path, text: str) -> Path:
    """A secret file as an installation keeps one: readable by its owner only (werne warns otherwise)."""
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def write_config(path: Path, inventory: Path, state_dir: Path, extra: str = "") -> Path:
    path.write_text(f'[site]\ninventory = "{inventory}"\nstate_dir = "{state_dir}"\n{extra}', encoding="utf-8")
    return path


@pytest.fixture
def run_cli(state_dir: Path):
    """Invoke the real CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from cli import main

    def invoke(*args: str, config: Path | None = None, input: str | None = None, env: dict | None = None):
        argv = ["--state-dir", str(state_dir)]
        if config is not None:
            argv += ["--config", str(config)]
        return CliRunner().invoke(main, [*argv, *args], input=input, env=env, catch_exceptions=False)

    return invoke


# Each area keeps its fixtures in its own module, so parallel work does not collide here.
pytest_plugins = [
    "pytester",
    "tests.parts",
    "tests.fixtures_lab",
    "tests.fixtures_provisioning",
    "tests.fixtures_vpn",
    "tests.fixtures_mdm",
    "tests.fixtures_compliance",
    "tests.fixtures_enrolment",
    "tests.fixtures_postgres",
    "tests.fixtures_kmfddm",
    "tests.fixtures_ddm",
]
