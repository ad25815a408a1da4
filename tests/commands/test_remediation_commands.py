"""Every remediation that names a werne command names a real one, with arguments the CLI accepts.

Commands are written in backticks (`werne ...`); each is resolved through click's command tree
and its arguments parsed with make_context, without running anything. A `werne ` outside
backticks fails too, so no remediation can name a command this test does not check.
"""

from __future__ import annotations

import re
import shlex

import click
import pytest
import yaml

from cli import main
from tests.fixtures.site import REPO

BASELINES = sorted((REPO / "compliance" / "baselines").glob("*.yaml"))
COMMAND_RE = re.compile(r"`(werne [^`]*)`")
FILE_PLACEHOLDER = re.compile(r"^([A-Z]+_)*FILE$")


def remediation_texts() -> list[tuple[str, str]]:
    out = []
    for path in BASELINES:
        for rule in yaml.safe_load(path.read_text(encoding="utf-8"))["rules"]:
            for value in (rule.get("remediation") or {}).values():
                out.append((f"{path.name}:{rule['id']}", str(value)))
    return out


def check_command(text: str) -> str | None:
    """None when `text` (e.g. 'werne ipad update --to 18.3') is a real command with valid arguments."""
    words = shlex.split(text)[1:]
    cmd: click.Command = main
    path = ["werne"]
    while isinstance(cmd, click.Group) and words and not words[0].startswith("-"):
        sub = cmd.commands.get(words[0])
        if sub is None:
            return f"{' '.join(path)} has no command {words[0]!r}"
        cmd, path = sub, [*path, words.pop(0)]
    if isinstance(cmd, click.Group):
        return f"{' '.join(path)} is a group, not a command"
    # A placeholder for a file (FILE, CERT_FILE) stands for one that exists: click checks that.
    words = [__file__ if FILE_PLACEHOLDER.match(w) else w for w in words]
    try:
        cmd.make_context(" ".join(path), words)
    except click.UsageError as e:
        return f"{' '.join(path)}: {e.format_message()}"
    return None


def commands_named() -> list[tuple[str, str]]:
    return [(where, m) for where, text in remediation_texts() for m in COMMAND_RE.findall(text)]


@pytest.mark.parametrize(("where", "command"), commands_named())
def test_remediation_names_a_real_command(where, command):
    assert check_command(command) is None, f"{where}: `{command}`: {check_command(command)}"


def test_every_werne_in_a_remediation_is_in_backticks():
    for where, text in remediation_texts():
        bare = COMMAND_RE.sub("", text)
        assert "werne " not in bare, f"{where}: write the command in backticks: {text}"


def test_the_checker_fails_for_what_does_not_exist():
    assert check_command("werne ipad profiles apply") == "werne ipad has no command 'profiles'"
    assert check_command("werne ipad lock --lost-mode") == "werne ipad lock: No such option '--lost-mode'."
    assert check_command("werne ipad update") == "werne ipad update: Missing option '--to'."
    assert check_command("werne ipad") == "werne ipad is a group, not a command"
    assert check_command("werne vpn rotate HOST") is None
    assert check_command("werne mdm push-cert install") == "werne mdm push-cert install: Missing argument 'CERT_FILE'."
    assert len(commands_named()) >= 4
