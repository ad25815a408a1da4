"""Fixtures of every folder: a fresh state dir per test, a copy of the demo inventory, and a CLI
runner that uses them."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

# pytest rewrites asserts in test modules, conftests and plugins by itself; the fixture and helper
# modules that conftests import need this, before anything imports them.
pytest.register_assert_rewrite(
    "tests.parts", "tests.golden",
    *(f"tests.{d.name}" for d in sorted(Path(__file__).parent.iterdir()) if (d / "__init__.py").is_file()),
)

from tests.fixtures.postgres import postgres_cluster  # noqa: E402,F401 - session-wide: tests/core/ and tests/ipad/
from tests.fixtures.site import DEMO_INVENTORY  # noqa: E402


@pytest.fixture(autouse=True)
def _no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A server's /etc/werne/werne.toml on the test machine must not leak into the tests' configs."""
    import core.config

    monkeypatch.setattr(core.config, "SYSTEM_CONFIG", tmp_path_factory.getbasetemp() / "no-system-werne.toml")


# argon2id at its lowest cost (RFC 9106 allows t=1; 1 MiB, one lane) for the accounts tests make in
# their own process. Each hash names its parameters, so a login checks it the same way, in a
# millisecond instead of 0.1 s; a successful login rehashes it at werne's cost, as it does any hash
# made with other parameters (tests/enrolment/test_accounts_cost.py checks both). Web servers a
# test starts as processes of their own hash at werne's cost.
@functools.cache
def _quick_hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def _quick_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    import enrolment.accounts

    monkeypatch.setattr(enrolment.accounts, "_hasher", _quick_hasher())


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def migrated_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite state database migrated to the newest revision, once per session (per worker)."""
    from core.db import Database

    path = tmp_path_factory.mktemp("migrated-db") / "werne.db"
    db = Database(f"sqlite:///{path}")
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture
def migrated_db(migrated_db_template: Path) -> Callable[[Path], str]:
    """migrated_db(path) -> the sqlite URL of a state database at `path`, copied from the migrated
    template unless one is there already. For tests whose subject is not the migration: migrating
    a new database costs each test CPU and fsyncs, and tests/core/test_db_migrate.py and
    test_postgres.py test the migrations themselves."""

    def make(path: Path) -> str:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(migrated_db_template, path)
        return f"sqlite:///{path}"

    return make


@pytest.fixture
def inventory_copy(tmp_path: Path) -> Path:
    """A writable copy of the demo inventory, to break on purpose."""
    dst = tmp_path / "inv"
    shutil.copytree(DEMO_INVENTORY, dst)
    return dst


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


# Only what every folder needs is loaded here: pytester, tests/parts.py (markers follow fixtures,
# missing parts fail under CI=true) and the session-wide servers that several folders share, so a
# session starts each of them once. Each folder's conftest.py imports the fixtures its tests use
# from tests/fixtures/ (or from modules beside its tests).
pytest_plugins = ["pytester", "tests.parts", "tests.ordering"]

