"""`werne laptop lock|erase|unlock` without a lab: the blast-radius gate, the typed confirmation,
laptops werne cannot identify, and a laptop that is off queued with its identity (the pinned host
key), all audited; the CLI's exit codes and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.audit import list_events
from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from provisioning.errors import LostLaptopError
from provisioning.home.pending import list_items


def pubkey() -> str:
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture
def site(tmp_path: Path, inventory_copy: Path):  # type: ignore[no-untyped-def]
    state = tmp_path / "state"
    state.mkdir()
    cfg = tmp_path / "werne.toml"
    cfg.write_text(f'[site]\ninventory = "{inventory_copy}"\nstate_dir = "{state}"\n', encoding="utf-8")
    config = load_config(cfg)
    inv = load_inventory(config.inventory_dir)
    # lap01 and lap02 pinned (as pre-flight pins them); lap03 never was.
    lines = [f"{inv.laptops[h].ansible_host} {pubkey()}" for h in ("lap01", "lap02")]
    (state / "known_hosts").write_text("\n".join(lines) + "\n")
    db = Database(config.database_url)
    yield cfg, config, db, inv
    db.dispose()


def off(config, db, inventory, action, wanted):  # type: ignore[no-untyped-def]
    return {h: ("unreachable", "connection timed out") for h in wanted}


def test_gate_confirmation_and_identity(site):  # type: ignore[no-untyped-def]
    from provisioning.disk.lost import order

    _, config, db, inv = site
    with pytest.raises(LostLaptopError, match="more than provisioning.blast_radius 1; add --max-hosts 2"):
        order(config, db, inv, "lock", ["lap01", "lap02"], typed="lap01 lap02", apply=off)
    with pytest.raises(LostLaptopError, match="typed did not match"):
        order(config, db, inv, "erase", ["lap01"], typed="lap02", apply=off)
    with pytest.raises(LostLaptopError, match="--yes needs --max-hosts 1"):
        order(config, db, inv, "erase", ["lap01"], yes=True, apply=off)
    with pytest.raises(LostLaptopError, match="no host key pinned for lap03"):
        order(config, db, inv, "erase", ["lap03"], typed="lap03", apply=off)
    with pytest.raises(LostLaptopError, match="--revoke-vpn goes with erase only"):
        order(config, db, inv, "lock", ["lap01"], typed="lap01", revoke_vpn=True, apply=off)
    assert list_items(db) == []
    report = order(config, db, inv, "erase", ["lap01", "lap02"], yes=True, max_hosts=2, reason="stolen",
                   revoke_vpn=True, actor="it-lead", apply=off)
    assert [(h.host, h.outcome) for h in report.hosts] == [("lap01", "queued"), ("lap02", "queued")] and report.ok
    items = list_items(db)
    assert [(i.host, i.kind, i.created_by) for i in items] == [
        ("lap01", "erase", "it-lead"), ("lap02", "erase", "it-lead")]
    assert all(i.identity and i.identity.startswith("SHA256:") for i in items)
    assert items[0].identity != items[1].identity
    assert all("[then revoke the VPN peer]" in i.reason for i in items)
    refused = [e.detail["result"] for e in list_events(db) if e.action == "laptop.erase"]
    assert refused[0].startswith("refused: the laptop names typed did not match") and refused[-1] == "ordered"


def test_cli_exit_codes(site):  # type: ignore[no-untyped-def]
    from cli import main

    cfg, _, db, _ = site
    r = CliRunner().invoke(main, ["--config", str(cfg), "laptop", "erase", "lap01"], input="lap02\n")
    assert r.exit_code == 2 and r.output.splitlines()[-1] == (
        "Error: the laptop names typed did not match; nothing was done (erase)")
    r = CliRunner().invoke(main, ["--config", str(cfg), "laptop", "lock", "lap09", "--yes", "--max-hosts", "1"])
    assert r.exit_code == 2 and "lap09" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["--config", str(cfg), "laptop", "unlock", "lap01", "lap02", "--json"])
    assert r.exit_code == 2 and "add --max-hosts 2" in r.output
    assert list_items(db) == []


def test_the_lock_records_what_unlock_restores(tmp_path):  # type: ignore[no-untyped-def]
    """werne_lost's record of each account before the lock: its expiry date and whether its password
    was already locked (unlock restores those; the lab test does it on a real laptop)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "werne_lost_record", Path(__file__).resolve().parents[2] / "playbooks/library/werne_lost.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shadow = tmp_path / "shadow"
    shadow.write_text("anna:$y$j9T$abc:20000:0:99999:7:::\nbert:!$y$j9T$def:20000:0:99999:7::21915:\nshort:x\n")
    assert mod.shadow_entries(str(shadow)) == {"anna": ("", False), "bert": ("21915", True)}
    assert [mod.expire_argument(d) for d in ("", "21915", "0", "junk")] == ["", "2030-01-01", "1970-01-01", ""]
