"""`werne inventory check DIR`: a folder is checked before any config points at it (the config is
not even read); without DIR the configured inventory is."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from cli import main
from tests.fixtures.site import write_config


def check(tmp_path: Path, *args: str) -> Result:
    # A config file that does not exist: reading it would be an error (exit 2) of its own.
    return CliRunner().invoke(main, ["--config", str(tmp_path / "no-such.toml"), "inventory", "check", *args])


def test_a_good_folder_is_ok_without_any_config(tmp_path: Path, inventory_copy: Path) -> None:
    r = check(tmp_path, str(inventory_copy))
    assert (r.exit_code, r.stdout, r.stderr) == (
        0, f"{inventory_copy}: ok: 3 laptops, 1 VPN gateway(s), 2 schools, 12 iPads, 4 Apple TVs\n", "")


def test_a_bad_folder_lists_every_problem_with_file_and_line(tmp_path: Path, inventory_copy: Path) -> None:
    hosts = inventory_copy / "hosts.yml"
    text = hosts.read_text(encoding="utf-8")
    lines = [text[: text.index(f"{h}:")].count("\n") + 1 for h in ("lap02", "lap03")]  # each host's line
    for address in ("10.200.0.12", "10.200.0.13"):
        text = text.replace(f"ansible_host: {address}", "ansible_host: [not, an, address]", 1)
    hosts.write_text(text, encoding="utf-8")
    r = check(tmp_path, str(inventory_copy))
    assert (r.exit_code, r.stdout, r.stderr) == (2, "", "".join(
        f"Error: {hosts}:{line}: host '{h}': ansible_host: Input should be a valid string\n"
        for h, line in zip(("lap02", "lap03"), lines, strict=True)))


def test_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    r = check(tmp_path, str(tmp_path / "nowhere"))
    missing = tmp_path / "nowhere"
    assert (r.exit_code, r.stdout, r.stderr) == (2, "", f"Error: inventory directory {missing} does not exist\n")


def test_without_a_folder_the_configured_inventory_is_checked(tmp_path: Path, inventory_copy: Path,
                                                              state_dir: Path) -> None:
    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir)
    r = CliRunner().invoke(main, ["--config", str(cfg), "inventory", "check", "--json"])
    assert r.exit_code == 0 and f'"inventory": "{inventory_copy}"' in r.stdout
    r = check(tmp_path)  # and that needs the config
    assert r.exit_code == 2 and "no-such.toml" in r.stderr
