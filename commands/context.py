"""What every command of one invocation shares: the config, the state database and the inventory,
each loaded on first use, and the way a command ends with its result's exit code.

It lives here, not in cli.py, so that the command modules never import cli.py: run as a script
(`python cli.py`), cli.py is `__main__`, and a second copy imported as `cli` would have its own
AppContext class that `pass_app` could not find.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click

from core.config import Config, load_config
from core.findings import Findings

if TYPE_CHECKING:
    from core.db import Database
    from core.inventory import Inventory
    from ipad.dispatch import IPadContext


class AppContext:
    """Lazily loaded config, database and inventory, shared by the commands of one invocation."""

    def __init__(self, config_path: str | None, state_dir: str | None):
        self._config_path = config_path
        self._state_dir = state_dir
        self._config: Config | None = None
        self._db: Database | None = None
        self._inventory: Inventory | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self._config_path, self._state_dir)
        return self._config

    @property
    def db(self) -> Database:
        if self._db is None:
            from core.db import Database

            self._db = Database(self.config.database_url)
        return self._db

    def close(self) -> None:
        """Return pooled database connections (PostgreSQL logs an unexpected EOF otherwise)."""
        if self._db is not None:
            self._db.dispose()
            self._db = None

    @property
    def inventory(self) -> Inventory:
        if self._inventory is None:
            from core.inventory import load_inventory
            from provisioning.home.reach import inventory_in_use

            # Home-office laptops at their tunnel address once enrolled (the DB is read only if
            # the inventory marks a laptop `home_office: true`). _LazyDB stands in for a Database.
            self._inventory = inventory_in_use(self.config, cast("Database", _LazyDB(self)),
                                               load_inventory(self.config.inventory_dir))
        return self._inventory

    def fresh_inventory(self) -> Inventory:
        """The inventory as it is now, read again (the watcher runs for days: enrolments change
        tunnel addresses)."""
        self._inventory = None
        return self.inventory


class _LazyDB:
    """The app's database, opened on first use (so commands on an office-only inventory never open it)."""

    def __init__(self, app: AppContext):
        self._app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app.db, name)


pass_app = click.make_pass_decorator(AppContext)


def ipad_context(app: AppContext) -> IPadContext:
    """What the iPad use cases need: config, database and inventory (`werne ipad`, `werne apps`),
    with the classes' Education configurations and running lessons as the devices' extra profiles."""
    from ipad.classroom.context import classroom_context
    from ipad.dispatch import IPadContext

    return classroom_context(IPadContext(app.config, app.db, app.inventory))


def finish(result: Findings) -> NoReturn:
    """End a command with its result's exit code (0 clean, 1 findings; core.findings decides)."""
    sys.exit(result.exit_code)
