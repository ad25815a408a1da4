"""werne: provision and check a town's laptops and school iPads.

The entry point of the CLI: the root group, the one error boundary, and the table of command
groups. Each group lives in its own module under `commands/` and is imported only when it runs
(pip's `commands/__init__.py` does the same); `werne --help` lists them from the table without
importing any. Library errors (core.errors.WerneError) become `Error: ...` and a documented exit
code here; anything else is a bug and keeps its traceback.

Exit codes: 0 ok, 1 findings or failed hosts, 2 bad input or config, 3 could not run, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from commands import render
from commands.context import AppContext
from core import logs
from core.errors import EXIT_INTERRUPTED, WerneError
from core.signals import exit_code_for, signal_name, termination_handlers

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass(frozen=True)
class Lazy:
    """Where a top-level command or group lives, and the first paragraph of its help (so that
    `werne --help` lists it without importing its module; tests/commands/test_cli_help.py keeps them equal)."""

    module: str
    attr: str
    summary: str


COMMANDS: dict[str, Lazy] = {
    "alert": Lazy("commands.alert", "alert",
                  "Alerts to IT staff by mail ([alerts] SMTP) and an optional JSON webhook."),
    "appletv": Lazy("commands.appletv", "appletv",
                    "Classroom Apple TVs: list, enrol through ADE (tvOS DEP profile), configure, update tvOS."),
    "apps": Lazy("commands.apps", "apps",
                 "App Store apps on the school iPads: licences (Apple's Apps and Books) and installs."),
    "audit": Lazy("commands.audit", "audit", "Show the audit trail: who did what, to which devices, when."),
    "backup": Lazy("commands.backup", "backup",
                   "Backups of the MDM server: create, verify and restore one encrypted archive."),
    "class": Lazy("commands.classroom", "classroom",
                  "Classes for Apple Classroom (no Managed Apple IDs) and lesson or exam mode."),
    "compliance": Lazy("commands.compliance", "compliance",
                       "Run the compliance checks, verify the stored history, compare runs."),
    "demo": Lazy("commands.demo", "demo",
                 "Run the nightly job on the built-in demo fleet, from nothing, and write the HTML report."),
    "db": Lazy("commands.db", "db",
               "The databases' schemas: show them and upgrade them (werne's revisions, NanoMDM's version)."),
    "deploy": Lazy("commands.deploy", "deploy",
                   "The production deployment of the iPad side: systemd units and the nginx HTTPS front."),
    "enrol": Lazy("commands.enrol", "enrol",
                  "Enrolment requests from schools: list, show, approve (DEP assignment), reject, close."),
    "inventory": Lazy("commands.inventory", "inventory", "Validate and show the site inventory."),
    "ipad": Lazy("commands.ipad", "ipad",
                 "School iPads through NanoMDM: list, query, configure, lock, lost mode, clear passcode, wipe."),
    "lab": Lazy("commands.lab", "lab",
                "Start and stop the lab: real Linux laptops (systemd-nspawn) on this machine. Needs root."),
    "laptop": Lazy("commands.laptop", "laptop",
                   "Check and provision the home-office laptops over SSH (pre-flight, then Ansible)."),
    "mdm": Lazy("commands.mdm", "mdm",
                "The NanoMDM side: webhook receiver, push certificate, SCEP, enrolment profile."),
    "prune": Lazy("commands.retention", "prune",
                  "Delete webhook events, command answers and artifact folders older than their [retention] periods."),
    "processing-record": Lazy("commands.audit", "processing_record",
                              "Print the record of processing (DSGVO Art. 30) of what werne stores, as Markdown."),
    "report": Lazy("commands.compliance", "report",
                   "Write the report of a compliance run: HTML, CSV (German Excel), JSON, JUnit XML or OSCAL."),
    "server": Lazy("commands.server", "server",
                   "The MDM server: install or update it from the config (Ansible, idempotent)."),
    "user": Lazy("commands.user", "user", "Manage web accounts: IT admins and school coordinators."),
    "vpn": Lazy("commands.vpn", "vpn",
                "The WireGuard VPN of the home-office laptops: gateway, keys, revocation, evidence."),
    "web": Lazy("commands.web", "web", "The coordinators' web page."),
}


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name, each imported from its module on first lookup.

    Names and membership come from the table alone; only getting a command imports its module.
    """

    def __init__(self, table: Mapping[str, Lazy]):
        self._table = table
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            entry = self._table[name]
            command = getattr(importlib.import_module(entry.module), entry.attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{entry.module}.{entry.attr} is not a click command")
            self._loaded[name] = command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("the commands of werne are fixed by its table")

    def __contains__(self, name: object) -> bool:
        return name in self._table or name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._table, *self._loaded]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*self._table, *self._loaded]))

    def summary(self, name: str) -> click.Command:
        """A stand-in that knows only the command's help (for listing it without importing it)."""
        if name in self._table:
            return click.Command(name, help=self._table[name].summary)
        return self._loaded[name]


def fail(message: str, code: int) -> NoReturn:
    """Print `Error: message` on stderr and exit with `code`."""
    render.error(message)
    sys.exit(code)


def error_boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn project errors into one line and an exit code; let real bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WerneError as e:
            problems = getattr(e, "problems", None)
            if problems and len(problems) > 1:
                for p in problems:
                    render.error(p)
                sys.exit(e.exit_code)
            fail(str(e), e.exit_code)
        except KeyboardInterrupt as e:
            # Ctrl-C, or SIGTERM/SIGHUP (core.signals.Terminated): the cleanup ran on the way here.
            code = exit_code_for(e)
            fail("interrupted" if code == EXIT_INTERRUPTED else f"terminated by {signal_name(e)}", code)

    return wrapper


class WerneGroup(click.Group):
    """The root group: its commands load lazily from COMMANDS, and all run inside the error boundary."""

    def __init__(self, name: str | None = None, **kwargs: Any):
        self.lazy_commands = LazyCommands(COMMANDS)
        super().__init__(name, commands=self.lazy_commands, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        return error_boundary(super().invoke)(ctx)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing, with each command's help taken from the table, not its module.
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, self.lazy_commands.summary(name).get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=WerneGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="WERNE_CONFIG",
              help="Site config file (TOML). Default: $WERNE_CONFIG, ./werne.toml, or built-in demo defaults.")
@click.option("--state-dir", type=click.Path(file_okay=False), envvar="WERNE_STATE_DIR",
              help="State directory (database, known_hosts, artifacts). Default: ~/.local/state/werne.")
@click.version_option(package_name="werne")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, state_dir: str | None) -> None:
    """Provision and check the city's laptops and school iPads.

    Example:

        werne inventory check
    """
    logs.install()  # every log line of this process one terminal-safe line (core.logs)
    app = AppContext(config_path, state_dir)
    ctx.obj = app
    ctx.call_on_close(app.close)
    ctx.with_resource(termination_handlers())


if __name__ == "__main__":  # pragma: no cover
    main()
