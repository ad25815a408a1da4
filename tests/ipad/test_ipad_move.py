"""`werne ipad move` and `retire`: ipads.csv is rewritten in place (only the moved cells, atomically,
with a backup, never losing a row), app licences follow (fake Apps and Books service); every bad
input is one line and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from core.inventory import load_inventory
from core.inventory_write import InventoryWriteError, Placement, rewrite_ipads
from ipad.apps.licences import apply
from ipad.models import AppLicence
from tests.fakes.fake_appsbooks import FakeAppsBooks
from tests.fixtures.apps import CITY, GARAGEBAND, IMOVIE, City, wanted_counts


@pytest.fixture
def city(tmp_path: Path) -> Iterator[City]:
    with FakeAppsBooks(pending_polls=0) as fake:
        need = wanted_counts(CITY)
        c = City(tmp_path, fake, {loc: {a: n + 10 for a, n in apps.items()} for loc, apps in need.items()})
        yield c
        c.db.dispose()


def pupils(c: City, school: str = "gs-sonnenhof", n: int = 5) -> list[str]:
    inv = load_inventory(c.inventory)
    return sorted(i.serial for i in inv.ipads_of_school(school) if i.group == "pupil")[:n]


def held(c: City, serial: str) -> set[str]:
    with c.db.session() as s:
        return set(s.scalars(select(AppLicence.adam_id).where(AppLicence.serial == serial)))


def test_move_five_pupils_to_teachers_rewrites_five_rows_and_licences_follow(city: City) -> None:
    assert apply(city.ctx(), school="gs-sonnenhof", max_devices=200).failed == []
    five = pupils(city)
    assert all(GARAGEBAND in held(city, s) and IMOVIE not in held(city, s) for s in five)
    before = (city.inventory / "ipads.csv").read_bytes()
    plan = city.cli("ipad", "move", *five, "--group", "teacher", "--plan")
    assert plan.exit_code == 0, plan.output
    assert plan.output.count("lose app garageband (grundschulen)") == 5
    assert plan.output.count("get app imovie (grundschulen)") == 5 and "Plan only" in plan.output
    assert (city.inventory / "ipads.csv").read_bytes() == before and all(GARAGEBAND in held(city, s) for s in five)

    r = city.cli("ipad", "move", *five, "--group", "teacher")
    assert r.exit_code == 0, r.output
    after = (city.inventory / "ipads.csv").read_bytes()
    old_lines, new_lines = before.decode().splitlines(), after.decode().splitlines()
    assert len(old_lines) == len(new_lines) == 524
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert len(changed) == 5 and all(a.replace(";pupil;", ";teacher;") == b for a, b in changed)
    backups = list(city.inventory.glob("ipads.csv.*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == before
    inv = load_inventory(city.inventory)
    assert all(inv.ipads[s].group == "teacher" for s in five)
    for s in five:
        assert IMOVIE in held(city, s) and GARAGEBAND not in held(city, s)
    assert "licence garageband taken back (grundschulen)" in r.output and "licence imovie assigned" in r.output


@pytest.mark.parametrize("args, message", [
    (["--school", "gs-nirgendwo"], "Error: unknown school 'gs-nirgendwo' (schools: "),
    (["--group", "lehrer"], "Error: unknown group 'lehrer' (groups: pupil, teacher, shared); nothing was moved"),
    ([], "Error: say where to: --school and/or --group"),
])
def test_a_move_to_nowhere_is_one_line_and_changes_nothing(city: City, args: list[str], message: str) -> None:
    before = (city.inventory / "ipads.csv").read_bytes()
    r = city.cli("ipad", "move", *pupils(city, n=2), *args)
    assert r.exit_code == 2 and r.output.startswith(message) and r.output.count("\n") == 1, r.output
    assert (city.inventory / "ipads.csv").read_bytes() == before
    assert not list(city.inventory.glob("ipads.csv.*.bak"))


def test_a_class_list_with_a_bad_row_moves_nobody(city: City, tmp_path: Path) -> None:
    good = pupils(city, n=3)
    klasse = tmp_path / "klasse-5b.csv"
    klasse.write_text("Seriennummer;Gruppe\n" + f"{good[0]};teacher\n" + "NICHT-GUT!;teacher\n" + f"{good[1]};\n",
                      encoding="utf-8")
    before = (city.inventory / "ipads.csv").read_bytes()
    r = city.cli("ipad", "move", "--csv", str(klasse), "--group", "shared")
    assert r.exit_code == 2 and r.output == f"Error: {klasse}:3: bad serial 'NICHT-GUT!'; nothing was moved\n"
    unknown = tmp_path / "fremd.csv"
    unknown.write_text("serial\nZZZZZZZZZZ99\n", encoding="utf-8")
    r = city.cli("ipad", "move", "--csv", str(unknown), "--group", "shared")
    assert r.exit_code == 2 and r.output == "Error: not in ipads.csv: ZZZZZZZZZZ99; nothing was moved\n"
    excel = tmp_path / "klasse.xlsx"
    excel.write_bytes(b"PK\x03\x04rest")
    r = city.cli("ipad", "move", "--csv", str(excel), "--group", "shared")
    assert r.exit_code == 2 and "Excel workbook" in r.output and r.output.count("\n") == 1
    assert (city.inventory / "ipads.csv").read_bytes() == before
    # A good class list: each row its own group, the empty cell takes --group.
    klasse.write_text(f"serial,group\n{good[0]},teacher\n{good[1]},\n", encoding="utf-8")
    r = city.cli("ipad", "move", "--csv", str(klasse), "--group", "shared", "--plan")
    assert r.exit_code == 0 and f"{good[0]}" in r.output and "pupil -> gs-sonnenhof/shared" in r.output


def test_too_few_licences_for_the_new_group_refuses_the_move(tmp_path: Path) -> None:
    with FakeAppsBooks(pending_polls=0) as fake:
        need = wanted_counts(CITY)
        licences = {loc: dict(apps) for loc, apps in need.items()}
        licences["grundschulen"][IMOVIE] = 2  # five new teachers need five
        c = City(tmp_path, fake, licences)
        five = pupils(c)
        before = (c.inventory / "ipads.csv").read_bytes()
        r = c.cli("ipad", "move", *five, "--group", "teacher")
        assert r.exit_code == 2 and r.output.startswith("Error: too few licences of imovie")
        assert r.output.rstrip().endswith("nothing was moved") and r.output.count("\n") == 1
        assert (c.inventory / "ipads.csv").read_bytes() == before
        c.db.dispose()


def test_rewrite_keeps_every_other_byte(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(CITY, tmp_path / "inv", ignore=shutil.ignore_patterns("ipads.csv"))
    root = tmp_path / "inv"
    rows = ['\ufeffSerial Number,Device Model,Location,Rolle,Device Name',
            'ZXAAAAAAAA01,"iPad (10th generation)",gs-sonnenhof,pupil,"Klasse 5b; Platz 1"',
            'ZXAAAAAAAA02,iPad,gs-sonnenhof,pupil,Müller',
            'ZXAAAAAAAA03,iPad,gs-am-markt,teacher,']
    (root / "ipads.csv").write_bytes("\r\n".join(rows).encode("utf-8") + b"\r\n")
    before = (root / "ipads.csv").read_bytes()
    rewrite_ipads(root, {"ZXAAAAAAAA02": Placement("gs-am-markt", "shared")})
    after = (root / "ipads.csv").read_bytes()
    assert after == before.replace(b"ZXAAAAAAAA02,iPad,gs-sonnenhof,pupil,", b"ZXAAAAAAAA02,iPad,gs-am-markt,shared,")
    with pytest.raises(InventoryWriteError, match="not in .*ipads.csv: ZXAAAAAAAA09"):
        rewrite_ipads(root, {"ZXAAAAAAAA09": Placement("gs-am-markt", "shared")})
    with pytest.raises(InventoryWriteError, match="unknown group 'lehrer'"):
        rewrite_ipads(root, {"ZXAAAAAAAA01": Placement("gs-am-markt", "lehrer")})
    assert (root / "ipads.csv").read_bytes() == after
    rewrite_ipads(root, remove={"ZXAAAAAAAA01"})
    assert list(load_inventory(root).ipads) == ["ZXAAAAAAAA02", "ZXAAAAAAAA03"]


def test_retire_takes_licences_back_and_removes_the_row(city: City) -> None:
    assert apply(city.ctx(), school="gs-sonnenhof", max_devices=200).failed == []
    one = pupils(city, n=1)[0]
    r = city.cli("ipad", "retire", one)
    assert r.exit_code == 0, r.output
    assert held(city, one) == set() and one not in load_inventory(city.inventory).ipads
    assert len((city.inventory / "ipads.csv").read_text().splitlines()) == 523
