"""Issue 22, the smaller CLI cases: a typo in `enrol list --status` is a usage error (exit 2), not an
empty list; an empty listing says so in a line; an SSH key others can read gets the warning every
secret file gets, on every command that uses it (here the nightly run, through Ansible)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fixtures.cli import werne
from tests.fixtures.site import DEMO_INVENTORY, write_config


@pytest.fixture
def cfg(tmp_path: Path, state_dir: Path) -> Path:
    return write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state_dir)


def test_a_status_typo_is_a_usage_error(run_cli, cfg: Path) -> None:
    r = run_cli("enrol", "list", "--status", "submited", config=cfg)
    assert r.exit_code == 2 and r.stdout == ""
    assert "Invalid value for '--status': 'submited' is not one of 'submitted', 'approved'," in r.stderr


@pytest.mark.parametrize(("args", "line"), [
    (["enrol", "list"], "no enrolment requests\n"),
    (["enrol", "list", "--status", "rejected"], "no enrolment requests with status rejected\n"),
    (["user", "list"], "no web accounts (werne user add NAME --role admin|coordinator)\n"),
    (["audit", "--since", "2099-01-01"], "no audit events since 2099-01-01T00:00:00+00:00\n"),
])
def test_an_empty_listing_says_so(run_cli, cfg: Path, args: list[str], line: str) -> None:
    r = run_cli(*args, config=cfg)
    assert (r.exit_code, r.stdout) == (0, line), r.stderr
    assert run_cli(*args, "--json", config=cfg).stdout == "[]\n"  # the JSON stays a plain empty list


def test_an_ssh_key_others_can_read_gets_the_warning_in_the_nightly_run(tmp_path: Path, state_dir: Path) -> None:
    """One laptop on a closed loopback port: the run does not get far, but it used the key."""
    inv = tmp_path / "inv"
    inv.mkdir()
    for name in ("schools.yml", "ipads.csv"):
        (inv / name).write_bytes((DEMO_INVENTORY / name).read_bytes())
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    laptops:\n      hosts:\n        lap01:\n          ansible_host: 127.0.0.1\n"
        "          ansible_port: 9\n          owner: Erika Beispiel\n          asset_tag: DEMO-NB-0001\n"
        "          vpn_address: 10.77.0.11\n",
        encoding="utf-8")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key.chmod(0o644)
    cfg = write_config(tmp_path / "werne.toml", inv, state_dir,
                       f'[ssh]\nprivate_key_file = "{key}"\nconnect_timeout = 2\nconnect_attempts = 1\n')
    r = werne(cfg, "compliance", "run", "--laptops")
    assert "Traceback" not in r.stderr, r.stderr
    warning = (f"warning: SSH key: secret file {key} is readable by every user on this machine (mode 0o644); "
               "chmod o-r it")
    assert r.stderr.count(warning) == 1, r.stderr
