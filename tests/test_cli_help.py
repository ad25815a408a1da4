"""Every CLI command has --help with an example (walks the whole command tree)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from cli import main


def walk(group: click.Group, prefix: list[str]):
    for name, cmd in sorted(group.commands.items()):
        yield [*prefix, name], cmd
        if isinstance(cmd, click.Group):
            yield from walk(cmd, [*prefix, name])


def test_every_command_has_help_with_an_example():
    commands = list(walk(main, []))
    assert len(commands) >= 3
    missing = []
    for path, _cmd in commands:
        r = CliRunner().invoke(main, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        if "Example:" not in r.output or "werne " not in r.output.split("Example:", 1)[1]:
            missing.append(" ".join(path))
    assert missing == []
