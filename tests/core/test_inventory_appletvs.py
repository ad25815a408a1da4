"""appletvs.csv: the classroom Apple TVs, every bad row named with file:line, and an Apple TV serial
in the iPad list refused (at its line there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InventoryError
from core.inventory import load_inventory


def test_the_demo_has_four_apple_tvs_in_rooms(inventory_copy: Path) -> None:
    inv = load_inventory(inventory_copy)
    assert sorted((t.school, t.room, t.device_name) for t in inv.appletvs.values()) == [
        ("gs-demo", "R101", "gs-demo-R101"), ("gs-demo", "R102", "gs-demo-R102"),
        ("gym-demo", "A12", "gym-demo-A12"), ("gym-demo", "A13", "gym-demo-A13")]
    assert [t.serial for t in inv.appletvs_in_room("gs-demo", "r 101")] == ["DYTVGS1010"]
    assert inv.ipads["ZDWK1DEGZD"].room == "R101"


def test_every_bad_apple_tv_row_is_named(inventory_copy: Path) -> None:
    (inventory_copy / "appletvs.csv").write_text(
        "serial;model;school;room;name;airplay_id\n"
        "DYTVGS1010;Apple TV 4K;gs-demo;R101;;\n"
        "DYTVGS1010;Apple TV 4K;gs-demo;R102;;\n"        # duplicate serial
        "dy-bad;Apple TV 4K;gs-demo;R103;;\n"            # bad serial
        "DYTVGS1030;Apple TV 4K;nowhere;R103;;\n"        # unknown school
        "DYTVGS1040;Apple TV 4K;gs-demo;;;\n"            # no room
        "DYTVGS1050;Apple TV 4K;gs-demo;R105;;zz:zz\n"   # bad AirPlay id
        "DYTVGS1060;Apple TV 4K;gs-demo;R101;gs-demo-R101;\n",  # the name of line 2 again
        encoding="utf-8")
    with pytest.raises(InventoryError) as e:
        load_inventory(inventory_copy)
    where = [p.split(": ", 1)[0].rsplit(":", 1)[1] for p in e.value.problems]
    assert where == ["3", "4", "5", "6", "7", "8"], e.value.problems
    assert "duplicate serial DYTVGS1010 (first at line 2)" in e.value.problems[0]
    assert "unknown school 'nowhere'" in e.value.problems[2]
    assert "name 'gs-demo-R101' is taken (line 2)" in e.value.problems[5]


def test_an_apple_tv_in_the_ipad_list_is_refused(inventory_copy: Path) -> None:
    path = inventory_copy / "ipads.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*lines, "DYTVGS1010;iPad (10th generation);gs-demo;pupil;x;R101",
                               "ZZTVMODEL1;Apple TV 4K (3rd generation);gs-demo;pupil;y;R101"]) + "\n",
                    encoding="utf-8")
    with pytest.raises(InventoryError) as e:
        load_inventory(inventory_copy)
    assert e.value.problems == [
        f"{path}:15: ZZTVMODEL1: 'Apple TV 4K (3rd generation)' is an Apple TV, not an iPad (Apple TVs go into "
        "appletvs.csv)",
        f"{path}:14: serial DYTVGS1010 is an Apple TV (in appletvs.csv), not an iPad: remove it from ipads.csv",
    ]
