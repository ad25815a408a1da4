"""Every CLI command has --help with an example (walks the whole command tree, the lazily loaded
groups included), the tree holds exactly the commands it should, and `werne --help` lists every
group without importing its module."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator

import click
from click.testing import CliRunner

import cli
import commands
from cli import main
from tests.fixtures.site import REPO

# Adding a command changes these numbers: give it help with an `Example:` and count it here.
COMMANDS = 100
GROUPS = 27


def walk(group: click.Group, ctx: click.Context, prefix: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    """Every command under `group`, found the way click finds them when they run."""
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"{' '.join([*prefix, name])} is listed but does not load"
        yield [*prefix, name], cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, click.Context(cmd, parent=ctx, info_name=name), [*prefix, name])


def tree() -> list[tuple[list[str], click.Command]]:
    return list(walk(main, click.Context(main, info_name="werne"), []))


def test_every_command_has_help_with_an_example() -> None:
    missing = []
    for path, _cmd in tree():
        r = CliRunner().invoke(main, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        if "Example:" not in r.output or "werne " not in r.output.split("Example:", 1)[1]:
            missing.append(" ".join(path))
    assert missing == []


def test_the_tree_holds_every_command_exactly() -> None:
    paths = tree()
    leaves = [" ".join(p) for p, c in paths if not isinstance(c, click.Group)]
    groups = [" ".join(p) for p, c in paths if isinstance(c, click.Group)]
    assert (len(leaves), len(groups)) == (COMMANDS, GROUPS), (leaves, groups)
    assert {"inventory check", "ipad update", "apps apply", "report", "audit", "demo", "vpn gateway apply"} <= set(
        leaves)


def test_no_command_of_the_command_modules_is_left_out() -> None:
    # A group whose module is missing from cli.COMMANDS would never load: nothing could reach it.
    reachable = {id(c) for _, c in tree()}
    defined = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"commands.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, click.Command) and getattr(obj.callback, "__module__", None) == module.__name__:
                defined.append((f"{module.__name__}.{name}", id(obj)))
    assert len(defined) == COMMANDS + GROUPS
    assert [name for name, ident in defined if ident not in reachable] == []


def test_the_table_lists_each_group_with_its_own_help() -> None:
    for name, entry in cli.COMMANDS.items():
        cmd = getattr(importlib.import_module(entry.module), entry.attr)
        assert cmd.name == name
        first_paragraph = " ".join((cmd.help or "").split("\n\n")[0].split())
        assert entry.summary == first_paragraph, name
    r = CliRunner().invoke(main, ["--help"])
    listed = r.output.split("Commands:\n", 1)[1]
    assert [line.split()[0] for line in listed.splitlines()] == sorted(cli.COMMANDS)
    # click pads the names to the longest one and cuts the help to the terminal's width.
    assert re.search(r"^  web +The coordinators' web page\.$", listed, re.M)
    assert re.search(r"^  apps +App Store apps on the school iPads: licences \(Apple's\S*\.\.\.$", listed, re.M)


def modules_loaded_by(*args: str) -> set[str]:
    """The command modules a real `werne ARGS` imports (a fresh interpreter)."""
    code = ("import sys\nfrom cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('commands.'))), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "Usage:" in r.stdout, r.stdout + r.stderr
    return set(r.stderr.split())


def test_help_imports_no_command_module_and_a_group_only_its_own() -> None:
    shared = {"commands.context", "commands.render"}
    assert modules_loaded_by("--help") == shared
    assert modules_loaded_by("vpn", "--help") == shared | {"commands.vpn", "commands.options"}
