"""Inventory validation: every problem is reported with file and line; good files load."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InventoryError
from core.inventory import load_inventory
from tests.fixtures.site import REPO, write_config


def problems_of(root: Path) -> list[str]:
    with pytest.raises(InventoryError) as ei:
        load_inventory(root)
    return ei.value.problems


def test_demo_and_example_city_load():
    demo = load_inventory(REPO / "inventories" / "demo")
    assert sorted(demo.laptops) == ["lap01", "lap02", "lap03"]
    assert list(demo.gateways) == ["vpngw"]
    city = load_inventory(REPO / "inventories" / "example-city")
    assert len(city.laptops) == 70
    assert len(city.ipads) == 523
    assert {i.group for i in city.ipads.values()} == {"pupil", "teacher", "shared"}
    assert all(i.serial.startswith("ZX") for i in city.ipads.values())


def test_broken_yaml_names_file_and_line(inventory_copy: Path):
    hosts = inventory_copy / "hosts.yml"
    hosts.write_text("all:\n  children:\n    laptops:\n      hosts:\n        lap01: [\n", encoding="utf-8")
    (p,) = problems_of(inventory_copy)
    assert p.startswith(f"{hosts}:") and "broken YAML" in p


def test_every_problem_is_reported_not_only_the_first(inventory_copy: Path):
    hosts = inventory_copy / "hosts.yml"
    text = hosts.read_text(encoding="utf-8")
    text = text.replace("    vpn_gateway:", "    printers:\n      hosts: {}\n    vpn_gateway:")
    text = text.replace("vpn_address: 10.77.0.12", "vpn_address: 10.77.0.11")
    text = text.replace("        lap03:\n", "        lap01:\n")  # duplicate key
    hosts.write_text(text, encoding="utf-8")
    probs = problems_of(inventory_copy)
    joined = "\n".join(probs)
    assert "unknown group 'printers'" in joined
    assert "duplicate VPN address 10.77.0.11" in joined
    assert "duplicate host key 'lap01'" in joined
    assert all(p.startswith(f"{hosts}:") for p in probs)
    assert len(probs) == 3


def test_duplicate_address_and_bad_host_vars(inventory_copy: Path):
    hosts = inventory_copy / "hosts.yml"
    text = hosts.read_text(encoding="utf-8").replace("10.200.0.12", "10.200.0.11")
    text = text.replace("asset_tag: DEMO-NB-0003", "asset_tag: x")
    hosts.write_text(text, encoding="utf-8")
    joined = "\n".join(problems_of(inventory_copy))
    assert "duplicate address 10.200.0.11:22" in joined
    assert "host 'lap03': asset_tag" in joined


def test_csv_with_bom_and_semicolons_is_read(inventory_copy: Path):
    csv = inventory_copy / "ipads.csv"
    # German Excel: BOM, ';', CRLF, Apple School Manager header names, lower-case serial.
    csv.write_bytes("\ufeffSeriennummer;Modell;Standort;Gruppe\r\nzd23456789;iPad;gs-demo;Teacher\r\n".encode())
    inv = load_inventory(inventory_copy)
    assert list(inv.ipads) == ["ZD23456789"]
    assert inv.ipads["ZD23456789"].group == "teacher"


def test_duplicate_serial_bad_serial_unknown_school(inventory_copy: Path):
    csv = inventory_copy / "ipads.csv"
    csv.write_text("serial,model,school,group\nZD23456789,iPad,gs-demo,pupil\n"
                   "ZD23456789,iPad,gs-demo,pupil\nBAD!,iPad,gs-demo,pupil\n"
                   "ZD98765432,iPad,nowhere,pupil\nZD98765433,iPad,gs-demo,janitor\n", encoding="utf-8")
    probs = problems_of(inventory_copy)
    joined = "\n".join(probs)
    assert f"{csv}:3: duplicate serial ZD23456789 (first at line 2)" in joined
    assert f"{csv}:4: bad serial format 'BAD!'" in joined
    assert f"{csv}:5: ZD98765432: unknown school 'nowhere'" in joined
    assert f"{csv}:6: ZD98765433: group" in joined
    assert len(probs) == 4


def test_excel_workbook_renamed_to_csv(inventory_copy: Path):
    (inventory_copy / "ipads.csv").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    (p,) = problems_of(inventory_copy)
    assert "Excel workbook" in p


def test_cli_check_prints_every_error_and_exits_2(run_cli, inventory_copy: Path, tmp_path: Path, state_dir):
    hosts = inventory_copy / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("    vpn_gateway:", "    kiosk:\n      hosts: {}\n    vpn_gateway:")
                     .replace("10.77.0.13", "10.77.0.12"), encoding="utf-8")
    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir)
    r = run_cli("inventory", "check", config=cfg)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"Error: {hosts}:") for line in lines)
    assert "Traceback" not in r.output


def test_cli_check_ok(run_cli, tmp_path: Path, state_dir):
    cfg = write_config(tmp_path / "werne.toml", REPO / "inventories" / "example-city", state_dir)
    r = run_cli("inventory", "check", config=cfg)
    assert r.exit_code == 0
    assert r.stdout.endswith("ok: 70 laptops, 1 VPN gateway(s), 5 schools, 523 iPads, 82 Apple TVs\n")
