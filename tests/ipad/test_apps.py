"""`werne apps`: the app list, the plan, apply (licences through the fake Apps and Books service)
and the licence report, with the example city (523 iPads, five schools, two locations)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.inventory import load_inventory
from ipad.apps.catalogue import load_apps
from ipad.apps.licences import apply, batches, licence_report, make_plan, release_licences
from ipad.errors import AppsError
from ipad.models import AppLicence
from tests.fakes.fake_appsbooks import FakeAppsBooks
from tests.fixtures.apps import CITY, GARAGEBAND, IMOVIE, KEYNOTE, City, wanted_counts


@pytest.fixture
def fake() -> Iterator[FakeAppsBooks]:
    with FakeAppsBooks(page_size=500, pending_polls=1) as f:
        yield f


@pytest.fixture
def city(tmp_path: Path, fake: FakeAppsBooks) -> Iterator[City]:
    need = wanted_counts(CITY)
    c = City(tmp_path, fake, {loc: {a: n + 10 for a, n in apps.items()} for loc, apps in need.items()})
    yield c
    c.db.dispose()


# --- the app list ---------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "apps.yaml"
    p.write_text(text, encoding="utf-8")
    return p


GOOD = """apps:
  keynote: {adam_id: 361285480, bundle_id: com.apple.Keynote, removable: false,
            configuration: {Schule: gs-demo, Stufen: [3, 4]}}
  pages: {adam_id: 361309726, bundle_id: com.apple.Pages}
groups:
  pupil: [keynote, pages]
  teacher: [keynote]
"""


def test_the_shipped_app_list_loads() -> None:
    cat = load_apps()
    assert set(cat.groups) == {"pupil", "teacher", "shared"}
    assert cat.apps["keynote"].adam_id == KEYNOTE and not cat.apps["keynote"].removable


def test_an_app_becomes_install_and_remove_commands(tmp_path: Path) -> None:
    from ipad.payloads.mdm_schema import validate_command

    cat = load_apps(path=write(tmp_path, GOOD))
    cmd = cat.apps["keynote"].install_command()
    assert cmd.payload == {"iTunesStoreID": 361285480, "ManagementFlags": 1, "Options": {"PurchaseMethod": 1},
                           "Configuration": {"Schule": "gs-demo", "Stufen": [3, 4]}, "Attributes": {"Removable": False}}
    assert validate_command(cmd.to_plist()) == []
    assert cat.apps["pages"].install_command().payload.get("Attributes") is None  # removable: no attribute
    rm = cat.apps["pages"].remove_command()
    assert rm.payload == {"Identifier": "com.apple.Pages"} and validate_command(rm.to_plist()) == []


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("  teacher:", "  lehrer:"), "unknown group 'lehrer' (groups: pupil, teacher, shared)"),
        (GOOD.replace("adam_id: 361309726", "adam_id: 361285480"),
         "apps 'keynote' and 'pages' have the same adam_id 361285480"),
        (GOOD.replace("com.apple.Pages", "com.apple.Keynote"),
         "apps 'keynote' and 'pages' have the same bundle_id com.apple.Keynote"),
        (GOOD.replace("adam_id: 361309726", 'adam_id: "361309726"'), "apps.pages.adam_id: Input should be a valid "
                                                                      "integer"),
        (GOOD.replace("removable: false", "removable: nein"), "apps.keynote.removable: Input should be a valid "
                                                               "boolean"),
        (GOOD.replace("[keynote, pages]", "[keynote, pagez]"), "group 'pupil' names unknown app 'pagez'"),
        (GOOD + "  pupil: [pages]\n", "duplicate key 'pupil'"),
        (GOOD.replace("bundle_id: com.apple.Pages}", "bundle_id: com.apple.Pages, colour: red}"),
         "apps.pages.colour: unknown key"),
    ],
)
def test_a_broken_app_list_is_one_line_exit_2(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(AppsError) as e:
        load_apps(path=path)
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_cli_names_a_missing_group_and_changes_nothing(city: City, tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace("  teacher:", "  klasse-3b:"))
    text = city.config_path.read_text().replace("[apps]\n", f'[apps]\napps_file = "{bad}"\n')
    city.config_path.write_text(text)
    r = city.cli("apps", "apply", "--max-devices", "600")
    assert r.exit_code == 2
    assert r.output == f"Error: app list {bad}: unknown group 'klasse-3b' (groups: pupil, teacher, shared)\n"
    assert city.recorded() == 0 and city.fake.count("POST") == 0


# --- batching ---------------------------------------------------------------------------------------


def test_batches_share_calls_and_respect_apples_limits() -> None:
    serials = [f"S{i:04d}" for i in range(2500)]
    changes = {"1": serials, "2": serials, "3": serials[:10]}
    got = batches(changes, max_assets=25, max_serials=1000)
    assert [(a, len(s)) for a, s in got] == [(["1", "2"], 1000), (["1", "2"], 1000), (["1", "2"], 500),
                                             (["3"], 10)]
    many = batches({str(i): ["S1"] for i in range(30)}, max_assets=25, max_serials=1000)
    assert [len(a) for a, _ in many] == [25, 5]


# --- plan and apply with the example city -------------------------------------------------------------


def test_plan_counts_per_school_and_licences_without_changing_anything(city: City) -> None:
    r = city.cli("apps", "plan", "--json")
    assert r.exit_code == 0, r.output
    import json

    data = json.loads(r.output)
    assert data["problems"] == []
    # gs-am-markt: 96 iPads, every 8th a teacher, the next a shared one: 72 pupils, 12 teachers, 12 shared.
    assert data["changes"]["gs-am-markt"] == {"get keynote": 96, "get pages": 96, "get numbers": 84,
                                              "get garageband": 72, "get imovie": 12}
    assert sum(sum(v.values()) for v in data["changes"].values()) == sum(
        sum(v.values()) for v in wanted_counts(CITY).values())
    assert city.fake.count("POST") == 0 and city.recorded() == 0
    assert data["api_calls"] == 4  # assets + assignments, per location


def test_apply_assigns_in_few_calls_records_everything_and_is_idempotent(city: City) -> None:
    ctx = city.ctx()
    with pytest.raises(AppsError.__mro__[1]) as e:  # SafetyError: 523 iPads > blast radius 25
        apply(ctx)
    assert "--max-devices 523" in str(e.value) and city.fake.count("POST") == 0
    before = city.fake.count()
    report = apply(ctx, max_devices=523)
    assert report.failed == [] and len(report.devices) == 523
    total = sum(sum(v.values()) for v in wanted_counts(CITY).values())
    assert city.recorded() == total
    # One associate call per location and set of serials sharing apps (keynote+pages, numbers,
    # garageband, imovie): 8 calls for 1,958 licences, instead of one per device and app.
    assert city.fake.count("POST", "/assets/associate") == report.licence_calls == 8
    assert report.api_calls == city.fake.count() - before < 40
    d = next(d for d in report.devices if d.school == "gym-am-fluss")
    assert any(line.startswith("licence keynote assigned (weiterfuehrende)") for line in d.lines)
    assert any("InstallApplication keynote: not sent (not enrolled" in line for line in d.lines)
    again = apply(city.ctx(), max_devices=523)
    assert again.devices == [] and city.fake.count("POST", "/assets/associate") == 8


def test_too_few_licences_is_exit_2_before_any_change(tmp_path: Path, fake: FakeAppsBooks) -> None:
    need = wanted_counts(CITY)
    licences = {loc: {a: n + 5 for a, n in apps.items()} for loc, apps in need.items()}
    licences["grundschulen"][KEYNOTE] = 200  # 251 primary-school iPads want Keynote
    c = City(tmp_path, fake, licences)
    r = c.cli("apps", "apply", "--max-devices", "600")
    assert r.exit_code == 2
    assert r.output == ("Error: too few licences of keynote (adam_id 361285480) at location grundschulen: "
                        "251 more needed, 200 free; nothing was changed\n")
    assert c.recorded() == 0 and fake.count("POST") == 0
    p = c.cli("apps", "plan")
    assert p.exit_code == 1 and "licences grundschulen keynote: 251 new, 0 freed, 200 free of 200: TOO FEW" in p.output


def test_an_app_the_location_does_not_own_is_exit_2(tmp_path: Path, fake: FakeAppsBooks) -> None:
    need = wanted_counts(CITY)
    licences = {loc: {a: n for a, n in apps.items()} for loc, apps in need.items()}
    del licences["weiterfuehrende"][IMOVIE]
    c = City(tmp_path, fake, licences)
    r = c.cli("apps", "apply", "--max-devices", "600")
    assert r.exit_code == 2
    assert r.output.startswith("Error: app 'imovie' (adam_id 377298193) is not among the apps of Apps and Books "
                               "location weiterfuehrende: buy licences in Apple School Manager or fix ")
    assert c.recorded() == 0 and fake.count("POST") == 0


def test_a_token_apple_refuses_is_exit_3_and_never_printed(city: City) -> None:
    city.fake.location("weiterfuehrende").revoked = True
    r = city.cli("apps", "apply", "--max-devices", "600")
    assert r.exit_code == 3
    assert "Apple error 9625" in r.output and "location weiterfuehrende" in r.output
    assert city.tokens["weiterfuehrende"] not in r.output and r.output.count("\n") == 1
    assert city.recorded() == 0 and city.fake.count("POST") == 0


def test_an_expired_token_is_exit_3(tmp_path: Path, fake: FakeAppsBooks) -> None:
    c = City(tmp_path, fake, {"grundschulen": {KEYNOTE: 1}, "weiterfuehrende": {KEYNOTE: 1}},
             expires=datetime.now(UTC) - timedelta(days=2))
    r = c.cli("apps", "plan")
    assert r.exit_code == 3 and "Apple error 9621" in r.output and "token has expired" in r.output


def test_partly_failed_assignment_records_only_what_apple_completed(city: City) -> None:
    """Someone else takes licences while Apple works on our event: Apple fails the rest with 9709."""
    loc = city.fake.location("grundschulen")

    def meanwhile(_s: float) -> None:
        loc.assets[GARAGEBAND].total = 100  # 187 primary pupils want it; only 100 left

    report = apply(city.ctx(), school=None, max_devices=523, sleep=meanwhile)
    failed = set(report.failed)
    assert wanted_counts(CITY)["grundschulen"][GARAGEBAND] == 187
    assert len(failed) == 87
    bad = next(d for d in report.devices if d.serial in failed)
    assert any("licence garageband NOT assigned: Apple error 9709" in line for line in bad.lines)
    assert not any(line.startswith("InstallApplication garageband") for line in bad.lines)
    with city.db.session() as s:
        held = set(s.scalars(select(AppLicence.serial).where(AppLicence.adam_id == GARAGEBAND,
                                                             AppLicence.location == "grundschulen")))
    assert len(held) == 100 and not held & failed
    assert held == {s for a, s in loc.assignments if a == GARAGEBAND}
    r = city.cli("apps", "apply", "--max-devices", "600")  # nothing to do but the 87: still too few
    assert r.exit_code == 2 and "too few licences of garageband" in r.output


def test_leaving_a_group_or_the_inventory_takes_licences_back(city: City) -> None:
    apply(city.ctx(), max_devices=523)
    csv = city.inventory / "ipads.csv"
    lines = csv.read_text().splitlines()
    pupil = next(i for i, line in enumerate(lines) if ";gs-am-markt;pupil;" in line)
    moved = lines[pupil].split(";")[0]
    lines[pupil] = lines[pupil].replace(";pupil;", ";teacher;")
    gone = lines.pop(pupil + 1).split(";")[0]
    csv.write_text("\n".join(lines) + "\n")
    p = make_plan(city.ctx())
    assert p.summary()["gs-am-markt"] == {"get imovie": 1, "lose garageband": 1}
    assert {s for ss in p.locations["grundschulen"].revoke.values() for s in ss} == {moved, gone}
    report = apply(city.ctx(), max_devices=10)
    assert report.failed == []
    loc = city.fake.location("grundschulen")
    assert not any(s == gone for _, s in loc.assignments)
    assert (GARAGEBAND, moved) not in loc.assignments and (IMOVIE, moved) in loc.assignments
    with city.db.session() as s:
        assert not list(s.scalars(select(AppLicence).where(AppLicence.serial == gone)))
        # werne's records are Apple's assignments, the licences `moved` kept included.
        recorded = {(r.adam_id, r.serial) for r in s.scalars(select(AppLicence).where(
            AppLicence.location == "grundschulen"))}
    assert recorded == set(loc.assignments) and any(s == moved for _, s in recorded)


def test_release_licences_after_a_wipe(city: City) -> None:
    apply(city.ctx(), max_devices=523)
    serial = sorted(load_inventory(city.inventory).ipads)[0]
    out = release_licences(city.ctx(), [serial], "wiped")
    assert out[serial] and all("taken back" in line and "NOT" not in line for line in out[serial])
    assert not any(s == serial for loc in city.fake.locations.values() for _, s in loc.assignments)
    with city.db.session() as s:
        assert not list(s.scalars(select(AppLicence).where(AppLicence.serial == serial)))


# --- the licence report -------------------------------------------------------------------------------


def test_licence_report_per_school_and_app_csv_and_html(city: City) -> None:
    apply(city.ctx(), max_devices=523, school="gs-am-markt")
    rows = licence_report(city.ctx())
    assert len(rows) == 5 * 5  # every school has pupils, teachers and shared iPads: all five apps
    markt = {r.app: r for r in rows if r.school == "gs-am-markt"}
    assert (markt["keynote"].needed, markt["keynote"].assigned_here) == (96, 96)
    linden = {r.app: r for r in rows if r.school == "gs-lindenweg"}
    need = wanted_counts(CITY)["grundschulen"][KEYNOTE]
    assert (linden["keynote"].needed, linden["keynote"].assigned_here, linden["keynote"].location_bought,
            linden["keynote"].location_assigned, linden["keynote"].location_free,
            linden["keynote"].location_more_needed) == (84, 0, need + 10, 96, need + 10 - 96, need - 96)
    out = city.root / "lizenzen.csv"
    r = city.cli("apps", "licences", "--format", "csv", "--out", str(out))
    assert r.exit_code == 0 and r.output == f"wrote {out}: {len(rows)} rows\n"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("\ufeffschool;location;app;adam_id;needed;assigned;location_bought;")
    assert f"gs-lindenweg;grundschulen;keynote;{KEYNOTE};84;0;{need + 10};96;{need + 10 - 96};{need - 96};yes" in text
    html = city.root / "lizenzen.html"
    assert city.cli("apps", "licences", "--format", "html", "--out", str(html)).exit_code == 0
    page = html.read_text()
    assert "<td>gym-am-fluss</td>" in page and page.count("<tr") == len(rows) + 1
